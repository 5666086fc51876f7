// `fleet bench results`: runs the experiments of bench/experiments.ts one command line at a time, each as a child
// process from the repository root, and keeps every finished run in its experiment's results file (written
// atomically after each run). Resumable: a run whose exact command is already in the file is skipped; a run
// whose command changed is run again. A failed or killed run writes nothing; the next experiment still runs.
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { lastJsonObject } from './compare.ts';
import type { Experiment, RunSpec } from './experiments.ts';
import {
  provenance,
  readResultsFile,
  resultsPath,
  isObject,
  pick,
  NAME_PATTERN,
  RESULTS_FORMAT,
  type Mode,
  type Provenance,
  type ResultsFile,
  type RunRecord,
  type Json,
} from './results-file.ts';

export const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
/** Defaults, relative to the repository root: results files (committed) and the runs' own outputs (ignored by git). */
export const RESULTS_DIR = path.join('bench', 'results', 'experiments');
export const RUNS_DIR = path.join('runs', 'results');
/** A child's stdout beyond this is dropped from the front (its JSON summary is the last line). */
const MAX_STDOUT_CHARS = 8 * 2 ** 20;

export interface RunnerOptions {
  experiments: readonly Experiment[];
  mode: Mode;
  /** Results files (default bench/results/experiments) and run outputs (default runs/results), from root. */
  outDir?: string;
  runsDir?: string;
  /** Where the commands run (default the repository root). */
  root?: string;
  log?: (line: string) => void;
  /** The children's stderr (their progress); default: passed through to this process's stderr. */
  childStderr?: (text: string) => void;
  /** Called with each child as it starts (tests interrupt runs through it). */
  onSpawn?: (child: ChildProcess, run: RunSpec) => void;
}

export interface ExperimentOutcome {
  name: string;
  file: string;
  trained: number;
  skipped: number;
  error?: string;
}

/** The runs of an experiment in a mode, checked: names usable as paths, outputs inside the runs folder. */
export function experimentRuns(e: Experiment, mode: Mode, runsDir: string): RunSpec[] {
  if (!NAME_PATTERN.test(e.name)) throw new Error(`experiment "${e.name}": not a valid name`);
  const dir = path.join(runsDir, mode, e.name);
  const specs = e.runs(mode, dir);
  const ids = new Set<string>();
  for (const s of specs) {
    if (!NAME_PATTERN.test(s.id) || ids.has(s.id))
      throw new Error(`experiment ${e.name}: run "${s.id}" is not a valid, unique name`);
    ids.add(s.id);
    if (s.outDir !== undefined && !inside(s.outDir, dir))
      throw new Error(`experiment ${e.name}: run ${s.id} writes outside ${dir}`);
  }
  return specs;
}

const inside = (p: string, dir: string) => {
  const rel = path.relative(path.resolve(dir), path.resolve(p));
  return rel !== '' && !rel.startsWith('..') && !path.isAbsolute(rel);
};

export const commandOf = (s: RunSpec) => ['node', ...s.args];
const sameCommand = (a: string[], b: string[]) => a.length === b.length && a.every((x, i) => x === b[i]);

/** Runs every experiment's missing runs; returns what each experiment did (error set when it failed). */
export async function runExperiments(o: RunnerOptions): Promise<ExperimentOutcome[]> {
  const root = o.root ?? ROOT;
  const outDir = path.resolve(root, o.outDir ?? RESULTS_DIR);
  const runsDir = o.runsDir ?? RUNS_DIR;
  const log = o.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  // the code being measured: the tree as it is now, leaving out what this command writes
  const code = provenance(root, [outDir, path.resolve(root, runsDir)]);
  const commit = `${code.commit?.slice(0, 12) ?? 'unknown'}${code.dirty ? ' (tree modified)' : ''}`;
  log(`fleet bench results --${o.mode}: ${o.experiments.length} experiment(s), commit ${commit}, results in ${outDir}`);
  const outcomes: ExperimentOutcome[] = [];
  for (const e of o.experiments) {
    const file = resultsPath(outDir, e.name, o.mode);
    const outcome: ExperimentOutcome = { name: e.name, file, trained: 0, skipped: 0 };
    outcomes.push(outcome);
    try {
      await runExperiment(e, file, code, runsDir, root, o, log, outcome);
    } catch (err) {
      outcome.error = (err as Error).message;
      log(`[${e.name}] FAILED: ${outcome.error}`);
    }
  }
  return outcomes;
}

async function runExperiment(
  e: Experiment,
  file: string,
  code: Provenance,
  runsDir: string,
  root: string,
  o: RunnerOptions,
  log: (line: string) => void,
  outcome: ExperimentOutcome,
): Promise<void> {
  const specs = experimentRuns(e, o.mode, runsDir);
  const prev = readResultsFile(file);
  if (prev && (prev.experiment !== e.name || prev.mode !== o.mode)) {
    throw new Error(`${file} holds ${prev.experiment} (${prev.mode}), not ${e.name} (${o.mode})`);
  }
  // finished runs are kept only while their command is unchanged
  const done = new Map<string, RunRecord>();
  for (const r of prev?.runs ?? []) {
    const spec = specs.find(s => s.id === r.id);
    if (spec && sameCommand(r.command, commandOf(spec))) done.set(r.id, r);
  }
  let changed = !prev || done.size !== prev.runs.length;
  const total = specs.length;
  for (const [i, spec] of specs.entries()) {
    const tag = `[${e.name} ${i + 1}/${total} ${spec.id}]`;
    if (done.has(spec.id)) {
      outcome.skipped++;
      log(`${tag} done already (${file}): ${commandOf(spec).join(' ')}`);
      continue;
    }
    log(`${tag} ~${formatMinutes(spec.minutes)}: ${commandOf(spec).join(' ')}`);
    const record = await runOne(spec, code, root, o);
    log(`${tag} finished in ${record.seconds.toFixed(0)} s`);
    done.set(spec.id, record);
    outcome.trained++;
    changed = true;
    writeResults(file, e, o.mode, specs, done, code);
  }
  // only dropped runs (their command changed) and nothing trained: the file still has to lose them
  if (changed && outcome.trained === 0) writeResults(file, e, o.mode, specs, done, code);
}

function writeResults(
  file: string,
  e: Experiment,
  mode: Mode,
  specs: RunSpec[],
  done: Map<string, RunRecord>,
  code: Provenance,
): void {
  const runs = specs.filter(s => done.has(s.id)).map(s => done.get(s.id)!);
  const results: ResultsFile = {
    format: RESULTS_FORMAT,
    experiment: e.name,
    title: e.title,
    mode,
    complete: runs.length === specs.length,
    ...code,
    date: new Date().toISOString(),
    runs,
  };
  writeFileAtomic(file, JSON.stringify(results, null, 2) + '\n');
}

/** Runs one command line as a child process; its last stdout line must be a JSON object. */
async function runOne(spec: RunSpec, code: Provenance, root: string, o: RunnerOptions): Promise<RunRecord> {
  // a run starts from an empty output folder (an interrupted earlier try may have left files there)
  if (spec.outDir !== undefined) fs.rmSync(path.resolve(root, spec.outDir), { recursive: true, force: true });
  const command = commandOf(spec);
  const started = performance.now();
  const output = await new Promise<Json>((resolve, reject) => {
    const child = spawn(process.execPath, spec.args, { cwd: root, stdio: ['ignore', 'pipe', 'pipe'] });
    o.onSpawn?.(child, spec);
    let out = '';
    let errTail = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      out = (out + d).slice(-MAX_STDOUT_CHARS);
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      (o.childStderr ?? (t => process.stderr.write(t)))(d);
      errTail = (errTail + d).slice(-2000);
    });
    child.on('error', err => reject(new Error(`could not start "${command.join(' ')}": ${err.message}`)));
    child.on('close', (status, signal) => {
      if (status !== 0) {
        const why = signal ? `was killed by ${signal}` : `exited with code ${status}`;
        const tail = errTail.trim().split('\n').slice(-5).join('\n');
        reject(new Error(`"${command.join(' ')}" ${why}${tail ? `:\n${tail}` : ''}`));
        return;
      }
      const obj = lastJsonObject(out);
      if (obj) resolve(obj);
      else reject(new Error(`"${command.join(' ')}" printed no JSON object on its last stdout lines`));
    });
  });
  const seconds = Math.round((performance.now() - started) / 10) / 100;
  const record: RunRecord = { id: spec.id, command, ...code, date: new Date().toISOString(), seconds, output };
  if (spec.keep) record.metrics = keptFields(path.resolve(root, spec.keep.file), spec.keep.fields);
  return record;
}

/** The named fields (dotted paths) of a JSON file a run wrote, nested as in the file; absent fields are left out. */
function keptFields(file: string, fields: string[]): Json {
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: the run finished but its output could not be read (${(e as Error).message})`);
  }
  const kept: Json = {};
  for (const f of fields) {
    const value = pick(v, f);
    if (value === undefined) continue;
    const keys = f.split('.');
    let at = kept;
    for (const k of keys.slice(0, -1)) at = (isObject(at[k]) ? at[k] : (at[k] = {})) as Json;
    at[keys[keys.length - 1]] = value;
  }
  return kept;
}

/** `--list`: each experiment's runs in a mode with the estimated minutes, and the total. */
export function listExperiments(experiments: readonly Experiment[], mode: Mode, runsDir = RUNS_DIR): string {
  const lines: string[] = [];
  let total = 0;
  for (const e of experiments) {
    const specs = experimentRuns(e, mode, runsDir);
    const minutes = specs.reduce((a, s) => a + s.minutes, 0);
    total += minutes;
    lines.push(
      `${e.name} (${specs.length} run${specs.length === 1 ? '' : 's'}, ~${formatMinutes(minutes)}): ${e.title}`,
    );
    if (e.needs) lines.push(`  needs ${e.needs}`);
    for (const s of specs) lines.push(`  ${s.id} (~${formatMinutes(s.minutes)}): ${commandOf(s).join(' ')}`);
  }
  lines.push(`total (--${mode}): ~${formatMinutes(total)} on 2 cores when the machine is quiet`);
  return lines.join('\n') + '\n';
}

const formatMinutes = (m: number) => (m < 90 ? `${Math.round(m)} min` : `${(m / 60).toFixed(1)} h`);
