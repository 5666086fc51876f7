// One results file per experiment and mode (bench/results/experiments/NAME.MODE.json): every finished run's
// exact command, its --json output and where it was measured (commit, date, machine, versions). Written by
// `fleet bench results` (bench/results.ts) after every finished run, read back by it to resume and by the
// README table generator (bench/readme-tables.ts). The file is untrusted input: its shape is checked on read.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { execFileSync } from 'node:child_process';
import { versions } from '../util/versions.ts';

export const MODES = ['quick', 'full'] as const;
export type Mode = (typeof MODES)[number];
export const RESULTS_FORMAT = 1;
/** Results files larger than this are refused (the largest holds a few hundred runs' summaries). */
const MAX_FILE_BYTES = 16 * 2 ** 20;
/** Experiment and run names: they become file and directory names. */
export const NAME_PATTERN = /^[a-z0-9][a-z0-9-]{0,62}$/;

export type Json = Record<string, unknown>;

/** Where and from what code a run was measured. */
export interface Provenance {
  /** git rev-parse HEAD (null outside a git checkout) and whether tracked or untracked files differed from it. */
  commit: string | null;
  dirty: boolean | null;
  date: string;
  machine: ReturnType<typeof versions>;
}

export interface RunRecord extends Provenance {
  id: string;
  /** The command as run from the repository root, `node` first. */
  command: string[];
  seconds: number;
  /** The command's --json object (its last stdout line). */
  output: Json;
  /** Fields of the run's metrics.json that the --json summary lacks (dotted paths), when the experiment asks. */
  metrics?: Json;
}

export interface ResultsFile extends Provenance {
  format: typeof RESULTS_FORMAT;
  experiment: string;
  title: string;
  mode: Mode;
  /** Every run of the experiment in this mode is in `runs`. */
  complete: boolean;
  /** Runs in the experiment's order; provenance above is that of the latest write. */
  runs: RunRecord[];
}

export const resultsPath = (dir: string, experiment: string, mode: Mode) =>
  path.join(dir, `${experiment}.${mode}.json`);

/** The commit of `root` and whether its tree differs from it, leaving out `exclude` (the results being written). */
export function provenance(root: string, exclude: string[] = []): Provenance {
  let commit: string | null = null;
  let dirty: boolean | null = null;
  try {
    commit = execFileSync('git', ['rev-parse', 'HEAD'], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    }).trim();
    const inside = exclude
      .map(p => path.relative(root, path.resolve(root, p)))
      .filter(p => p && !p.startsWith('..') && !path.isAbsolute(p));
    const status = execFileSync('git', ['status', '--porcelain', '--', '.', ...inside.map(p => `:(exclude)${p}`)], {
      cwd: root,
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    dirty = status.trim() !== '';
  } catch {
    // not a git checkout (or no git): recorded as unknown
  }
  return { commit, dirty, date: new Date().toISOString(), machine: versions() };
}

/** The results file of an experiment in a mode, or null when there is none; a malformed file is an error naming it. */
export function readResultsFile(file: string): ResultsFile | null {
  if (!fs.existsSync(file)) return null;
  const size = fs.statSync(file).size;
  if (size > MAX_FILE_BYTES)
    throw new Error(`${file}: ${size} bytes, more than a results file may hold (${MAX_FILE_BYTES})`);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not JSON (${(e as Error).message}); delete it to measure again`);
  }
  const bad = (what: string) => new Error(`${file}: ${what}; delete it to measure again`);
  if (!isObject(v)) throw bad('not a JSON object');
  if (v.format !== RESULTS_FORMAT) throw bad(`format ${JSON.stringify(v.format)}, expected ${RESULTS_FORMAT}`);
  if (typeof v.experiment !== 'string' || !NAME_PATTERN.test(v.experiment)) throw bad('no valid "experiment"');
  if (!(MODES as readonly unknown[]).includes(v.mode)) throw bad(`"mode" must be one of ${MODES.join('|')}`);
  if (typeof v.complete !== 'boolean' || typeof v.title !== 'string') throw bad('"complete" or "title" missing');
  checkProvenance(v, bad, 'the file');
  if (!Array.isArray(v.runs)) throw bad('"runs" is not a list');
  v.runs.forEach((r, i) => {
    const where = `runs[${i}]`;
    if (!isObject(r)) throw bad(`${where} is not an object`);
    if (typeof r.id !== 'string' || !NAME_PATTERN.test(r.id)) throw bad(`${where}.id is not a valid run name`);
    if (!Array.isArray(r.command) || r.command.length === 0 || !r.command.every(a => typeof a === 'string')) {
      throw bad(`${where}.command is not a list of strings`);
    }
    if (typeof r.seconds !== 'number' || !isObject(r.output)) throw bad(`${where}: "seconds" or "output" missing`);
    if (r.metrics !== undefined && !isObject(r.metrics)) throw bad(`${where}.metrics is not an object`);
    checkProvenance(r, bad, where);
  });
  return v as unknown as ResultsFile;
}

function checkProvenance(v: Json, bad: (what: string) => Error, where: string): void {
  if (!(v.commit === null || typeof v.commit === 'string') || !(v.dirty === null || typeof v.dirty === 'boolean')) {
    throw bad(`${where}: "commit" or "dirty" missing`);
  }
  if (typeof v.date !== 'string' || Number.isNaN(Date.parse(v.date))) throw bad(`${where}: "date" is not a date`);
  if (!isObject(v.machine)) throw bad(`${where}: "machine" missing`);
}

export const isObject = (v: unknown): v is Json => v !== null && typeof v === 'object' && !Array.isArray(v);

/** The value at a dotted path ("average.val_loss") of an object, or undefined. */
export function pick(obj: unknown, dotted: string): unknown {
  let v: unknown = obj;
  for (const key of dotted.split('.')) v = isObject(v) ? v[key] : undefined;
  return v;
}
