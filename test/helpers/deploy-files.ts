// Reading deploy/ for the deployment tests: YAML documents, Dockerfiles, kustomize overlays (rendered by
// `kubectl kustomize` when kubectl is installed, else base + strategic-merge patches applied here), the
// .dockerignore rules, and `fleet ...` command lines parsed against the CLI's own option tables.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parseArgs } from 'node:util';
import { parseAllDocuments } from 'yaml';
import { REPO_ROOT } from './cli.ts';
import type { OptionSpec } from '../../util/args.ts';

export const repo = (...p: string[]) => path.join(REPO_ROOT, ...p);
export const read = (...p: string[]) => fs.readFileSync(repo(...p), 'utf8');

export type Obj = any;

/** Every document of a YAML file; throws naming the file and the first parse error. */
export function yamlDocs(rel: string): Obj[] {
  const docs = parseAllDocuments(read(rel), { merge: true }); // compose uses << merge keys
  const out: Obj[] = [];
  for (const d of docs) {
    if (d.errors.length) throw new Error(`${rel}: ${d.errors[0].message}`);
    const v = d.toJS();
    if (v !== null && v !== undefined) out.push(v);
  }
  return out;
}

/** Every file under dir (relative to the repository), recursively. */
export function filesUnder(rel: string): string[] {
  if (!fs.existsSync(repo(rel))) return [];
  return (fs.readdirSync(repo(rel), { recursive: true }) as string[])
    .map(f => path.join(rel, f))
    .filter(f => fs.statSync(repo(f)).isFile())
    .sort();
}

// ---- Dockerfiles

export interface DockerInstr {
  op: string;
  args: string;
  stage: number;
}

/** The instructions of a Dockerfile (continuation lines joined, comments dropped), with their stage index. */
export function dockerfile(rel: string): DockerInstr[] {
  const joined = read(rel)
    .split('\n')
    .filter(l => !/^\s*#/.test(l))
    .join('\n')
    .replace(/\\\n/g, ' ');
  let stage = -1;
  return joined
    .split('\n')
    .map(l => l.trim())
    .filter(Boolean)
    .map(l => {
      const m = /^(\w+)\s+(.*)$/.exec(l);
      if (!m) throw new Error(`${rel}: cannot read "${l}"`);
      const op = m[1].toUpperCase();
      if (op === 'FROM') stage++;
      return { op, args: m[2], stage };
    });
}

/** The JSON-array form of CMD/ENTRYPOINT/HEALTHCHECK CMD (exec form), which is what the images use. */
export function execForm(args: string): string[] {
  const v = JSON.parse(args.replace(/^CMD\s+/, '')) as unknown;
  if (!Array.isArray(v) || !v.every(x => typeof x === 'string')) throw new Error(`not an exec-form array: ${args}`);
  return v;
}

/** Whether .dockerignore keeps a path out of the build context (patterns as prefixes, * and ** globs, ! exceptions). */
export function dockerIgnored(rules: string[], rel: string): boolean {
  let ignored = false;
  for (const raw of rules) {
    const neg = raw.startsWith('!');
    const pat = (neg ? raw.slice(1) : raw).replace(/^\/+|\/+$/g, '');
    const re = new RegExp(
      '^' +
        pat
          .split('**')
          .map(p =>
            p
              .split('*')
              .map(s => s.replace(/[.+?^${}()|[\]\\]/g, '\\$&'))
              .join('[^/]*'),
          )
          .join('.*') +
        '(/.*)?$',
    );
    if (re.test(rel)) ignored = !neg;
  }
  return ignored;
}

export const dockerignoreRules = () =>
  read('.dockerignore')
    .split('\n')
    .map(l => l.trim())
    .filter(l => l && !l.startsWith('#'));

// ---- kustomize

export function kubectlAvailable(): boolean {
  return spawnSync('kubectl', ['version', '--client'], { stdio: 'ignore' }).status === 0;
}

/** The objects an overlay produces: `kubectl kustomize DIR` when available, else our own (smaller) build. */
export function kustomize(dir: string, useKubectl: boolean): Obj[] {
  if (useKubectl) {
    const r = spawnSync('kubectl', ['kustomize', repo(dir)], { encoding: 'utf8' });
    if (r.status !== 0) throw new Error(`kubectl kustomize ${dir} failed: ${r.stderr}`);
    return parseAllDocuments(r.stdout).map(d => d.toJS());
  }
  return buildKustomization(dir);
}

/** resources (files or folders with a kustomization.yaml), then strategic-merge patches, then images. */
function buildKustomization(dir: string): Obj[] {
  const k = yamlDocs(path.join(dir, 'kustomization.yaml'))[0];
  let objs: Obj[] = [];
  for (const r of k.resources ?? []) {
    const p = path.join(dir, r);
    objs.push(...(fs.existsSync(repo(p, 'kustomization.yaml')) ? buildKustomization(p) : yamlDocs(p)));
  }
  for (const g of k.configMapGenerator ?? []) {
    objs.push({
      apiVersion: 'v1',
      kind: 'ConfigMap',
      metadata: { name: g.name },
      data: Object.fromEntries((g.files as string[]).map(f => [path.basename(f), read(dir, f)])),
    });
  }
  for (const p of k.patches ?? []) {
    const patch = yamlDocs(path.join(dir, p.path))[0];
    const target = objs.find(o => o.kind === patch.kind && o.metadata?.name === patch.metadata?.name);
    if (!target)
      throw new Error(
        `${dir}: patch ${p.path} targets ${patch.kind}/${patch.metadata?.name}, which no resource defines`,
      );
    strategicMerge(target, patch);
  }
  if (k.namespace)
    for (const o of objs) if (o.kind !== 'Namespace') o.metadata = { ...o.metadata, namespace: k.namespace };
  for (const img of k.images ?? []) {
    for (const c of objs.flatMap(podContainers)) {
      if (c.image === img.name) c.image = `${img.newName ?? img.name}${img.newTag ? `:${img.newTag}` : ''}`;
    }
  }
  return objs;
}

/** Maps merge; lists of objects with a name merge by name (containers, ports, env); other lists are replaced. */
function strategicMerge(target: Obj, patch: Obj): void {
  for (const [key, value] of Object.entries(patch)) {
    const cur = target[key];
    if (Array.isArray(value) && Array.isArray(cur) && value.every(v => v && typeof v === 'object' && 'name' in v)) {
      for (const item of value) {
        const match = cur.find((c: Obj) => c?.name === item.name);
        if (match) strategicMerge(match, item);
        else cur.push(item);
      }
    } else if (
      value &&
      typeof value === 'object' &&
      !Array.isArray(value) &&
      cur &&
      typeof cur === 'object' &&
      !Array.isArray(cur)
    ) {
      strategicMerge(cur, value);
    } else {
      target[key] = value;
    }
  }
}

/** The pod template of a workload (or undefined for other kinds). */
export const podSpec = (o: Obj): Obj | undefined => o?.spec?.template?.spec;
export const podContainers = (o: Obj): Obj[] => podSpec(o)?.containers ?? [];

// ---- fleet command lines

/** specs: each command's options; pending: contract flags the code lacks yet; used: those of them a file uses. */
export interface Cli {
  specs: Record<string, OptionSpec>;
  pending: Set<string>;
  used: Set<string>;
}

/** A `fleet ...` command line checked against the option table of its command; returns the parsed flags. */
export function parseFleet(
  cli: Cli,
  argv: string[],
  where: string,
): { command: string; values: Record<string, string | boolean | undefined> } {
  const command = argv[0] === 'train' ? `train ${argv[1]}` : argv[0];
  const rest = argv.slice(argv[0] === 'train' ? 2 : 1);
  const spec = cli.specs[command];
  if (!spec)
    throw new Error(`${where}: "fleet ${command}" is not a fleet command (${Object.keys(cli.specs).join(', ')})`);
  try {
    const { values, positionals } = parseArgs({ args: rest, options: spec, strict: true, allowPositionals: true });
    if (positionals.length) throw new Error(`unexpected argument "${positionals[0]}"`);
    for (const k of Object.keys(values))
      if (cli.pending.has(`fleet ${command} --${k}`)) cli.used.add(`fleet ${command} --${k}`);
    return { command, values: values as Record<string, string | boolean | undefined> };
  } catch (e) {
    throw new Error(`${where}: fleet ${argv.join(' ')}: ${(e as Error).message.split('\n')[0]}`);
  }
}
