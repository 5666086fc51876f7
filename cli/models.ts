// `fleet models add|list|remove`: manages a model repository's folders (what fleet serve --models DIR serves).
// add copies atomically (a polling server never sees a half-copied file; with --members all or nothing);
// list reads the folders the way the server does; remove takes a model or one version out at once.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, UsageError } from '../util/args.ts';
import { addModelVersions, modelNameFor, removeModel, type ModelToAdd } from '../serving/publish.ts';
import { MAX_VERSION, MODEL_NAME, VERSION_FOLDER } from '../serving/repository.ts';
import { CONFIG_FILES } from '../serving/model-config.ts';

const HELP = `usage: fleet models add RUN_DIR|FILE.onnx --models DIR [--name NAME] [--version N] [--members]
       fleet models list --models DIR [--json]
       fleet models remove NAME --models DIR [--version N]

add      copies RUN_DIR/model.onnx (what fleet train --out writes; for an ensemble the one-graph model) into
         DIR/NAME/VERSION/model.onnx, where fleet serve --models DIR picks it up without a restart
list     the repository's models: their version folders (or a run directory's model.onnx as version 1, or an
         ensemble config), and folders the server skips (symbolic links, names outside the alphabet)
remove   deletes a model folder (or one version of it); a polling server unloads it within a poll

options:
  --models DIR   the model repository (required)
  --name NAME    add: the model name (default: the run directory's name)
  --version N    add: the version number, 1 to ${MAX_VERSION} (default: one more than the highest there);
                 remove: only this version
  --members      add: also add an ensemble run's members (RUN_DIR/members/M/model.onnx) as models NAME-M, e.g.
                 to host them on other servers as remote members of a fan-out ensemble; all or nothing
  --json         list: one JSON object per line
  -h, --help     this text
`;

export const OPTIONS = {
  models: { type: 'string' },
  name: { type: 'string' },
  version: { type: 'string' },
  members: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Values = Record<string, unknown>;

/** --version as a served version number: 1 to MAX_VERSION (a larger folder would never be served). */
function versionOption(values: Values): number | undefined {
  const raw = values.version as string | undefined;
  if (raw === undefined) return undefined;
  if (!/^\d+$/.test(raw) || Number(raw) < 1 || Number(raw) > MAX_VERSION) {
    throw new UsageError(`--version ${raw}: versions are whole numbers from 1 to ${MAX_VERSION}`);
  }
  return Number(raw);
}

export default async function models(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const [sub, ...args] = positionals;
  const only = (allowed: string[]) => {
    for (const k of ['name', 'version', 'members', 'json']) {
      if ((values as Values)[k] !== undefined && !allowed.includes(k))
        throw new UsageError(`models ${sub}: --${k} does not apply here`);
    }
  };
  if (!['add', 'list', 'remove'].includes(sub)) {
    throw new UsageError(
      `models: expected add, list or remove, got ${sub ? `"${sub}"` : 'nothing'} (try: fleet models --help)`,
    );
  }
  if (!values.models) throw new UsageError(`models ${sub}: --models DIR is required`);
  const repo = values.models as string;
  if (sub === 'add') {
    only(['name', 'version', 'members']);
    return add(repo, args, values);
  }
  if (sub === 'list') {
    only(['json']);
    if (args.length) throw new UsageError(`models list: unexpected argument "${args[0]}"`);
    return list(repo, !!values.json);
  }
  only(['version']);
  const [name, ...extra] = args;
  if (!name) throw new UsageError('models remove: NAME is required');
  if (extra.length) throw new UsageError(`models remove: unexpected argument "${extra[0]}"`);
  if (!MODEL_NAME.test(name))
    throw new UsageError(`models remove: ${JSON.stringify(name)} is not a model name (letters, digits, _ and -)`);
  const removed = removeModel(repo, name, versionOption(values));
  process.stdout.write(`removed ${removed}\n`);
}

function add(repo: string, args: string[], values: Values): void {
  const [src, ...extra] = args;
  if (!src) throw new UsageError('models add: RUN_DIR or FILE.onnx is required');
  if (extra.length) throw new UsageError(`models add: unexpected argument "${extra[0]}"`);
  const isFile = src.endsWith('.onnx');
  const onnx = isFile ? src : path.join(src, 'model.onnx');
  if (!fs.existsSync(onnx))
    throw new Error(`${onnx}: no such file (expected a fleet train --out directory or an .onnx file)`);
  const name = (values.name as string | undefined) ?? modelNameFor(isFile ? path.dirname(src) : src);
  if (!MODEL_NAME.test(name))
    throw new UsageError(`model name ${JSON.stringify(name)}: use letters, digits, _ and - only (at most 128)`);
  const todo: ModelToAdd[] = [{ name, onnx, version: versionOption(values) }];
  if (values.members) {
    const dir = path.join(src, 'members');
    if (isFile || !fs.existsSync(dir)) throw new Error(`${dir}: no members (not an ensemble run?)`);
    for (const m of fs.readdirSync(dir).sort()) {
      const file = path.join(dir, m, 'model.onnx');
      if (!fs.existsSync(file)) continue;
      const memberName = `${name}-${m}`;
      if (!MODEL_NAME.test(memberName))
        throw new Error(`member ${JSON.stringify(m)}: ${JSON.stringify(memberName)} is not a model name`);
      todo.push({ name: memberName, onnx: file });
    }
    if (todo.length === 1) throw new Error(`${dir}: no member has a model.onnx`);
  }
  const versions = addModelVersions(repo, todo);
  todo.forEach((t, i) =>
    process.stdout.write(`added ${t.name} version ${versions[i]} (${path.join(repo, t.name, String(versions[i]))})\n`),
  );
}

interface Listed {
  name: string;
  versions: string[];
  kind: 'versions' | 'run directory' | 'ensemble' | 'empty';
  skipped?: string;
}

function list(repo: string, json: boolean): void {
  let entries: fs.Dirent[];
  try {
    entries = fs.readdirSync(repo, { withFileTypes: true });
  } catch (e) {
    throw new Error(`model repository ${repo}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  const rows: Listed[] = [];
  for (const d of entries.sort((a, b) => a.name.localeCompare(b.name))) {
    if (d.name.startsWith('.')) continue;
    if (d.isSymbolicLink()) {
      rows.push({ name: d.name, versions: [], kind: 'empty', skipped: 'a symbolic link: the server skips it' });
      continue;
    }
    if (!d.isDirectory()) continue;
    if (!MODEL_NAME.test(d.name)) {
      rows.push({ name: d.name, versions: [], kind: 'empty', skipped: 'not a model name: the server skips it' });
      continue;
    }
    const dir = path.join(repo, d.name);
    const files = fs.readdirSync(dir, { withFileTypes: true });
    const versions = files
      .filter(f => f.isDirectory() && VERSION_FOLDER.test(f.name))
      .map(f => f.name)
      .sort((a, b) => Number(a) - Number(b));
    const hasConfig = CONFIG_FILES.some(f => fs.existsSync(path.join(dir, f)));
    if (versions.length) rows.push({ name: d.name, versions, kind: 'versions' });
    else if (files.some(f => f.isFile() && f.name.endsWith('.onnx')))
      rows.push({ name: d.name, versions: ['1'], kind: 'run directory' });
    else if (hasConfig) rows.push({ name: d.name, versions: ['1'], kind: 'ensemble' });
    else rows.push({ name: d.name, versions: [], kind: 'empty' });
  }
  if (json) {
    for (const r of rows) process.stdout.write(`${JSON.stringify(r)}\n`);
    return;
  }
  if (!rows.length) {
    process.stdout.write(`${repo}: no models\n`);
    return;
  }
  for (const r of rows) {
    process.stdout.write(
      `${r.name}  ${r.skipped ? `(skipped: ${r.skipped})` : `${r.kind}${r.versions.length ? `: ${r.versions.join(', ')}` : ''}`}\n`,
    );
  }
}
