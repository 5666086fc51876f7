// The model repository: a directory with one folder per model. A model folder holds numbered version folders,
// each with one .onnx file (`1/model.onnx`, `2/model.onnx`), or is itself a `fleet train --out` run directory
// (model.onnx at its top: version 1), or holds only a config with `ensemble:` (a fan-out ensemble, version 1);
// an optional config.yaml applies to every version (see model-config.ts).
//
// The directory is polled: new models and versions load without a restart, changed files reload, removed
// ones unload. A file modified less than settleMs ago is left for the next poll (it may still be copying); a
// truncated or otherwise broken model fails to load, is reported (log, ModelReady false, UNAVAILABLE with the
// reason) and is retried when its files change. Requests without a version get the highest ready version.
//
// Model control (Triton's --model-control-mode): "poll" (the default) as above; "explicit": every model is loaded
// at the start, then the directory is read only when a client asks (loadModel, unloadModel: Triton's
// RepositoryModelLoad / RepositoryModelUnload), so that an operator decides when files go live.
import { EventEmitter } from 'node:events';
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { RuntimeOptions } from '../engine/runtime.ts';
import { ServeError, Status, notFound, quote, unavailable } from './errors.ts';
import { readModelConfig, configFile, type ModelConfig } from './model-config.ts';
import { loadOnnxModel } from './onnx-models.ts';
import type { ServedModel, ServingHooks } from './served-model.ts';
import { FanOutEnsemble, type EnsembleDeps } from './ensemble.ts';

/** Model names become bus subject tokens and metric labels: keep them to a safe alphabet. */
export const MODEL_NAME = /^[A-Za-z0-9_-]{1,128}$/;
/** Version folders are 1 to MAX_VERSION (at most 9 digits): larger numbers are never served. */
export const MAX_VERSION = 999_999_999;
export const VERSION_FOLDER = /^[1-9]\d{0,8}$/;

export const MODEL_CONTROL = ['poll', 'explicit'] as const;
export type ModelControl = (typeof MODEL_CONTROL)[number];

export interface RepositoryOptions {
  pollMs?: number;
  modelControl?: ModelControl;
  settleMs?: number;
  runtime?: RuntimeOptions;
  hooks?: ServingHooks & {
    onMemberUnavailable?: (model: string, member: string) => void;
    onLoadFailure?: (model: string) => void;
    onUnload?: (model: string) => void;
  };
  bus?: EnsembleDeps['bus'];
  log?: (line: string) => void;
}

type VersionState = 'waiting' | 'loading' | 'ready' | 'failed';
interface VersionEntry {
  version: string;
  fingerprint: string;
  state: VersionState;
  error?: string;
  model?: ServedModel;
}

export interface VersionStatus {
  model: string;
  version: string;
  state: VersionState;
  error?: string;
  kind?: string;
  platform?: string;
}

/** What a version folder is made of: the files that decide its fingerprint, and how to load it. */
interface VersionSource {
  version: string;
  files: string[];
  onnx?: string;
  problem?: string;
}

export class ModelRepository extends EventEmitter {
  private readonly models = new Map<string, Map<string, VersionEntry>>();
  private readonly configs = new Map<string, { config?: ModelConfig; error?: string }>();
  private timer?: NodeJS.Timeout;
  private scanning?: Promise<void>;
  private scanned = false;
  private closed = false;
  private readonly warned = new Set<string>();
  /** Models unloaded by a client (explicit model control): not loaded again until a client asks. */
  private readonly unloaded = new Set<string>();
  private control: Promise<unknown> = Promise.resolve();
  private readonly log: (line: string) => void;

  constructor(
    readonly root: string,
    private readonly o: RepositoryOptions = {},
  ) {
    super();
    this.log = o.log ?? (() => {});
  }

  /**
   * The first scan (its loads included), then polling. Files written just before the start (`fleet models add`
   * and then `fleet serve`, a benchmark) are waited for until they settle, a few settle times at most, so that
   * the models are ready when the server says it is serving rather than at the next poll.
   */
  async start(): Promise<void> {
    if (!fs.existsSync(this.root) || !fs.statSync(this.root).isDirectory())
      throw new Error(`model repository ${this.root}: not a directory`);
    await this.scan();
    const settleMs = this.o.settleMs ?? 500;
    for (let i = 0; i < 5 && !this.closed && this.status().some(v => v.state === 'waiting'); i++) {
      await new Promise(resolve => setTimeout(resolve, settleMs));
      await this.scan();
    }
    if (this.modelControl === 'poll')
      this.timer = setInterval(() => {
        void this.scan();
      }, this.o.pollMs ?? 1000);
  }

  get modelControl(): ModelControl {
    return this.o.modelControl ?? 'poll';
  }

  /** Loads (or reloads) one model folder now; explicit model control only. Rejects when no version is ready. */
  loadModel(name: string): Promise<void> {
    return this.oneAtATime(() => this.load1(name));
  }

  /** Unloads every version of a model (their queues drain first); explicit model control only. */
  unloadModel(name: string): Promise<void> {
    return this.oneAtATime(() => this.unload1(name));
  }

  /** Load and unload requests run one after another (two loads of one folder must not interleave). */
  private oneAtATime(fn: () => Promise<void>): Promise<void> {
    const next = this.control.then(fn);
    this.control = next.catch(() => {});
    return next;
  }

  private async load1(name: string): Promise<void> {
    this.explicitOnly('load');
    if (!MODEL_NAME.test(name)) {
      throw notFound(`no model folder ${quote(name)}: model names use letters, digits, _ and - only`);
    }
    const dir = path.join(this.root, name);
    if (!isRealDirectory(dir)) throw notFound(`no model folder ${quote(name)} in the repository`);
    await this.scanning;
    this.unloaded.delete(name);
    if (await this.scanModel(name)) this.emit('change');
    this.get(name); // UNAVAILABLE with the reason when nothing loaded
  }

  private async unload1(name: string): Promise<void> {
    this.explicitOnly('unload');
    const versions = this.models.get(name);
    if (!versions) throw notFound(`unknown model ${quote(name)}`);
    await this.scanning;
    this.models.delete(name);
    this.configs.delete(name);
    this.unloaded.add(name);
    for (const v of versions.values()) await this.unload(name, v, 'a client asked');
    this.o.hooks?.onUnload?.(name);
    this.emit('change');
  }

  /** Every model folder's state for RepositoryIndex: its versions, or one row with no version when unloaded. */
  index(): { name: string; version: string; state: string; reason: string }[] {
    const STATES = { ready: 'READY', failed: 'UNAVAILABLE', loading: 'LOADING', waiting: 'LOADING' };
    const rows = this.status().map(v => ({
      name: v.model,
      version: v.version,
      state: STATES[v.state],
      reason: v.state === 'failed' ? (v.error ?? '') : v.state === 'waiting' ? 'its files are still being written' : '',
    }));
    for (const name of this.unloaded) rows.push({ name, version: '', state: 'UNAVAILABLE', reason: 'unloaded' });
    return rows.sort((a, b) => a.name.localeCompare(b.name) || Number(a.version) - Number(b.version));
  }

  private explicitOnly(what: string): void {
    if (this.modelControl !== 'explicit') {
      throw new ServeError(
        Status.FAILED_PRECONDITION,
        `explicit model ${what} is not allowed while the repository is polled (start the server with --model-control explicit)`,
      );
    }
  }

  /** True once the first scan has finished. */
  get ready(): boolean {
    return this.scanned && !this.closed;
  }

  /** Scans now (or waits for the scan in progress). */
  scan(): Promise<void> {
    if (this.closed) return Promise.resolve();
    this.scanning ??= this.scanOnce()
      .catch(e => this.log(`model repository: scan failed: ${(e as Error).message}`))
      .finally(() => {
        this.scanning = undefined;
      });
    return this.scanning;
  }

  /** The model (version) a request names; NOT_FOUND or UNAVAILABLE (with the reason) otherwise. */
  get(name: string, version = ''): ServedModel {
    const versions = this.models.get(name);
    // the message names no other models: which models a server has is not every client's business
    if (!versions) throw notFound(`unknown model ${quote(name)}`);
    if (version) {
      const v = versions.get(version);
      if (!v)
        throw notFound(
          `model "${name}" has no version ${quote(version)} (versions: ${[...versions.keys()].join(', ') || 'none'})`,
        );
      if (v.state !== 'ready' || !v.model)
        throw unavailable(`model "${name}" version ${version} is not ready: ${describe(v)}`);
      return v.model;
    }
    const ready = [...versions.values()]
      .filter(v => v.state === 'ready' && v.model)
      .sort((a, b) => Number(b.version) - Number(a.version));
    if (ready.length) return ready[0].model!;
    const why = [...versions.values()].map(v => `version ${v.version}: ${describe(v)}`).join('; ');
    throw unavailable(`model "${name}" has no ready version (${why || 'no versions'})`);
  }

  /** Every version's state, for ModelMetadata, logs and tests. */
  status(): VersionStatus[] {
    return [...this.models].flatMap(([model, versions]) =>
      [...versions.values()].map(v => ({
        model,
        version: v.version,
        state: v.state,
        error: v.error,
        kind: v.model?.kind,
        platform: v.model?.platform,
      })),
    );
  }

  versionsOf(name: string): string[] {
    return [...(this.models.get(name)?.keys() ?? [])].sort((a, b) => Number(a) - Number(b));
  }

  /** Names of models with at least one ready version. */
  readyModels(): string[] {
    return [...this.models]
      .filter(([, vs]) => [...vs.values()].some(v => v.state === 'ready'))
      .map(([n]) => n)
      .sort();
  }

  async close(): Promise<void> {
    this.closed = true;
    clearInterval(this.timer);
    await this.scanning;
    for (const versions of this.models.values())
      for (const v of versions.values()) await v.model?.close().catch(() => {});
    this.models.clear();
  }

  private async scanOnce(): Promise<void> {
    let changed = false;
    const seen = new Set<string>();
    let entries: fs.Dirent[] = [];
    try {
      entries = fs.readdirSync(this.root, { withFileTypes: true });
    } catch (e) {
      this.log(`model repository ${this.root}: ${(e as Error).message}`);
    }
    for (const d of entries) {
      if (d.isSymbolicLink() && !d.name.startsWith('.')) {
        // a link could point anywhere on the machine; only real folders of the repository are models
        this.warnOnce(
          `link:${d.name}`,
          `model repository: skipping ${JSON.stringify(d.name)}: it is a symbolic link ` +
            '(copy the model in, e.g. with fleet models add)',
        );
        continue;
      }
      if (!d.isDirectory() || d.name.startsWith('.')) continue;
      if (this.unloaded.has(d.name)) continue;
      if (!MODEL_NAME.test(d.name)) {
        this.warnOnce(
          `skip:${d.name}`,
          `model repository: skipping folder ${JSON.stringify(d.name)}: model names use letters, digits, _ and - only`,
        );
        continue;
      }
      seen.add(d.name);
      if (await this.scanModel(d.name)) changed = true;
    }
    // an unloaded model whose folder is gone is forgotten (a new folder of that name is a new model)
    for (const name of [...this.unloaded]) if (!isRealDirectory(path.join(this.root, name))) this.unloaded.delete(name);
    for (const name of [...this.models.keys()]) {
      if (seen.has(name)) continue;
      for (const v of this.models.get(name)!.values()) await this.unload(name, v, 'its folder was removed');
      this.models.delete(name);
      this.configs.delete(name);
      this.o.hooks?.onUnload?.(name);
      changed = true;
    }
    this.scanned = true;
    if (changed) this.emit('change');
  }

  /** Brings one model folder's versions up to date; true when anything changed. */
  private async scanModel(name: string): Promise<boolean> {
    const dir = path.join(this.root, name);
    const sources = this.sources(dir);
    const versions = this.models.get(name) ?? new Map<string, VersionEntry>();
    this.models.set(name, versions);
    let changed = false;
    const now = Date.now();
    for (const src of sources) {
      const fp = fingerprint(src.files);
      const old = versions.get(src.version);
      if (old && old.fingerprint === fp && old.state !== 'waiting') continue;
      const newest = Math.max(0, ...src.files.map(f => mtime(f)));
      if (now - newest < (this.o.settleMs ?? 500)) {
        // still being written (or just written): look again at the next poll
        if (!old) {
          versions.set(src.version, {
            version: src.version,
            fingerprint: fp,
            state: 'waiting',
            error: 'its files are still changing',
          });
          changed = true;
        }
        continue;
      }
      changed = true;
      const entry: VersionEntry = { version: src.version, fingerprint: fp, state: 'loading' };
      if (!old || old.state !== 'ready') versions.set(src.version, entry);
      try {
        if (src.problem) throw new Error(src.problem);
        const config = readModelConfig(dir);
        entry.model = await this.load(name, src, config);
        entry.state = 'ready';
        this.log(`model ${name} version ${src.version}: ready (${entry.model.platform}, ${entry.model.kind})`);
      } catch (e) {
        entry.state = 'failed';
        entry.error = (e as Error).message;
        this.o.hooks?.onLoadFailure?.(name);
        this.log(`model ${name} version ${src.version}: not loaded: ${entry.error}`);
      }
      if (this.closed) {
        await entry.model?.close();
        return changed;
      }
      // a reload replaces a ready version only when the new files loaded; otherwise the old one keeps serving
      if (old?.state === 'ready' && entry.state !== 'ready') {
        old.fingerprint = fp;
        old.error = `a newer copy failed to load: ${entry.error}`;
        continue;
      }
      versions.set(src.version, entry);
      if (old?.model && old.model !== entry.model) await old.model.close().catch(() => {});
    }
    for (const v of [...versions.values()]) {
      if (!sources.some(s => s.version === v.version)) {
        await this.unload(name, v, 'its files were removed');
        versions.delete(v.version);
        changed = true;
      }
    }
    return changed;
  }

  private load(name: string, src: VersionSource, config: ModelConfig): Promise<ServedModel> {
    if (config.ensemble) {
      return Promise.resolve(
        new FanOutEnsemble(name, src.version, config, {
          local: (member, version) => this.get(member, version),
          bus: this.o.bus,
          hooks: this.o.hooks,
        }),
      );
    }
    return loadOnnxModel(src.onnx!, name, src.version, config, this.o.runtime ?? {}, this.o.hooks);
  }

  /** The versions a model folder offers. */
  private sources(dir: string): VersionSource[] {
    const config = configFile(dir);
    const common = config ? [config] : [];
    let names: fs.Dirent[] = [];
    try {
      names = fs.readdirSync(dir, { withFileTypes: true });
    } catch {
      return [];
    }
    const versionDirs = names.filter(d => d.isDirectory() && VERSION_FOLDER.test(d.name));
    if (versionDirs.length)
      return versionDirs.map(d => ({ version: d.name, ...onnxIn(path.join(dir, d.name), common) }));
    // a run directory (model.onnx at the top), or a fan-out ensemble (a config, no graph)
    if (names.some(d => d.isFile() && d.name.endsWith('.onnx'))) return [{ version: '1', ...onnxIn(dir, common) }];
    if (config) {
      let isEnsemble = false;
      try {
        isEnsemble = !!readModelConfig(dir).ensemble;
      } catch (e) {
        return [{ version: '1', files: common, problem: (e as Error).message }];
      }
      if (isEnsemble) return [{ version: '1', files: common }];
    }
    this.warnOnce(`empty:${dir}`, `model repository: ${dir} has no version folders, .onnx file or ensemble config yet`);
    return [];
  }

  private async unload(name: string, v: VersionEntry, why: string) {
    this.log(`model ${name} version ${v.version}: unloaded (${why})`);
    await v.model?.close().catch(() => {});
  }

  private warnOnce(key: string, line: string) {
    if (this.warned.has(key)) return;
    this.warned.add(key);
    this.log(line);
  }
}

/** The .onnx file of a version folder: model.onnx, or the only .onnx there is. */
function onnxIn(dir: string, common: string[]): { files: string[]; onnx?: string; problem?: string } {
  const onnx = fs.readdirSync(dir).filter(f => f.endsWith('.onnx'));
  const pick = onnx.includes('model.onnx') ? 'model.onnx' : onnx.length === 1 ? onnx[0] : undefined;
  if (!pick) {
    return {
      files: [dir, ...common],
      problem: onnx.length
        ? `${dir} has ${onnx.length} .onnx files and none is model.onnx`
        : `${dir} has no .onnx file`,
    };
  }
  const file = path.join(dir, pick);
  return { files: [file, ...common], onnx: file };
}

function isRealDirectory(p: string): boolean {
  try {
    return fs.lstatSync(p).isDirectory();
  } catch {
    return false;
  }
}

function mtime(f: string): number {
  try {
    return fs.statSync(f).mtimeMs;
  } catch {
    return 0;
  }
}

function fingerprint(files: string[]): string {
  return files
    .map(f => {
      try {
        const s = fs.statSync(f);
        return `${f}:${s.size}:${s.mtimeMs}`;
      } catch {
        return `${f}:-`;
      }
    })
    .join('|');
}

function describe(v: VersionEntry): string {
  return v.state === 'failed'
    ? `failed to load: ${v.error}`
    : v.state === 'waiting'
      ? 'its files are still being written'
      : v.state;
}
