// Ensemble jobs: what a client submits (the spec, checked as untrusted JSON), the job record and its tasks, the
// store keys and format (a restarted coordinator resumes the records it finds), and a finished job's outputs
// (member models as their results arrive, then the combined ensemble). coordinator.ts leases the tasks.
import * as fs from 'node:fs';
import {
  ensembleTasks,
  combineEnsemble,
  checkEnsemble,
  ENSEMBLE_KINDS,
  type EnsembleOptions,
} from '../engine/ensemble/train-ensemble.ts';
import { DATASETS } from '../engine/data/datasets.ts';
import { ensembleOutputs, memberFiles, memberModelPath, outputPath } from '../engine/ensemble/outputs.ts';
import type { MemberResult } from '../engine/ensemble/tasks.ts';
import { writeFileAtomic, writeFileAtomicAsync } from '../engine/util/atomic.ts';
import { specChecker } from '../engine/util/spec-check.ts';
import { checkId } from '../util/ids.ts';
import type { StateStore } from './state-store.ts';
import { newJobId } from './job-lifecycle.ts';
import { unlease, type TaskRecord, type TaskState } from './leases.ts';

/** What a client submits: the ensemble to train (runtime settings are the workers'). */
export type JobSpec = Omit<EnsembleOptions, 'runtime' | 'workers' | 'out' | 'onBatch' | 'onEpoch' | 'log'>;

export interface JobRecord {
  id: string;
  spec: JobSpec;
  state: JobState;
  submittedAt: number;
  finishedAt?: number;
  tasks: TaskRecord[];
  error?: string;
  summary?: Record<string, unknown>;
}
export type JobState = 'running' | 'done' | 'failed' | 'cancelled';

export const jobKey = (jobId: string) => `jobs/${jobId}/job.json`;
export const resultKey = (jobId: string, taskId: string) => `jobs/${jobId}/results/${taskId}.result`;

/** A new running job of a submitted spec (untrusted JSON): checked, and split into queued tasks. */
export function newEnsembleJob(spec: JobSpec): JobRecord {
  validateJobSpec(spec);
  checkEnsemble({ ...spec, runtime: {} });
  const tasks = ensembleTasks({ ...spec, runtime: {} }).map(t => ({
    task: { ...t, checkpointDir: undefined },
    state: 'queued' as TaskState,
    attempts: 0,
  }));
  return { id: newJobId(), spec, state: 'running', submittedAt: Date.now(), tasks };
}

/** A job as /api/jobs lists it. */
export function jobView(j: JobRecord): Record<string, unknown> {
  return {
    id: j.id,
    state: j.state,
    kind: j.spec?.kind,
    members: j.spec?.members,
    submittedAt: j.submittedAt,
    finishedAt: j.finishedAt,
    done: j.tasks.filter(t => t.state === 'done').length,
    tasks: j.tasks.length,
    error: j.error,
    summary: j.summary,
  };
}

/**
 * Reads the job records of the store: finished tasks stay finished (if their result is there), leased ones go
 * back to the queue (keeping their token); a record that is not valid is logged and skipped.
 */
export async function readJobRecords(store: StateStore, log: (line: string) => void): Promise<JobRecord[]> {
  const keys = await store.list('jobs/');
  const present = new Set(keys);
  const jobs: JobRecord[] = [];
  for (const key of keys) {
    const id = /^jobs\/([^/]+)\/job\.json$/.exec(key)?.[1];
    if (!id) continue;
    let job: JobRecord | null;
    try {
      job = await readJobRecord(store, key, id);
    } catch (e) {
      log(`${store.description}: ${key}: skipped, not a valid job record: ${(e as Error).message}`);
      continue;
    }
    if (!job) continue;
    for (const t of job.tasks) {
      // a task is only done if its result is in the store (a store write is atomic: there means whole)
      if (t.state === 'done' && !present.has(resultKey(id, t.task.id))) t.state = 'queued';
      if (t.state === 'leased') unlease(t, true); // keeping its token: its holder may still run it
    }
    jobs.push(job);
  }
  return jobs;
}

/** One job record of the store, checked (null when the key has gone). */
async function readJobRecord(store: StateStore, key: string, id: string): Promise<JobRecord | null> {
  checkId('job id', id);
  const bytes = await store.get(key);
  if (!bytes) return null;
  const job = JSON.parse(new TextDecoder().decode(bytes)) as JobRecord;
  validateJobSpec(job.spec);
  if (!Array.isArray(job.tasks)) throw new Error('no task list');
  for (const t of job.tasks) checkId('task id', t?.task?.id);
  return job;
}

/** A member's own model file(s), written as its result arrives, while the others still train: off the job's end. */
export function writeMemberFiles(job: JobRecord, result: MemberResult, out: string) {
  for (const m of result.members) {
    const files = Object.entries(memberFiles(job.spec, m));
    for (const [name, content] of files) writeFileAtomic(outputPath(out, name), content);
  }
}

/** Writes the member files of a result that are not there yet (without exporting those that are). */
function memberFileWrites(job: JobRecord, result: MemberResult, out: string): Promise<void>[] {
  return result.members
    .filter(m => !fs.existsSync(outputPath(out, memberModelPath(m.name))))
    .flatMap(m =>
      Object.entries(memberFiles(job.spec, m)).map(([name, content]) =>
        writeFileAtomicAsync(outputPath(out, name), content),
      ),
    );
}

/** Combines the members' results into the ensemble and writes every output to `out`; resolves to its summary. */
export async function writeJobOutputs(job: JobRecord, results: MemberResult[], out: string, dataDir?: string) {
  // the members that finished earlier are written already (not the last one, nor those of a job resumed
  // after a restart); their files sync while the one-graph model is built, and all outputs sync at once
  const writes = results.flatMap(res => memberFileWrites(job, res, out));
  const options: EnsembleOptions = { ...job.spec, dataDir, runtime: {} };
  const r = combineEnsemble(options, results, (Date.now() - job.submittedAt) / 1000);
  const { files, summary, details } = ensembleOutputs(options, r, { members: false });
  for (const [name, content] of Object.entries(files)) {
    writes.push(writeFileAtomicAsync(outputPath(out, name), content));
  }
  const metrics = JSON.stringify({ ...summary, ...details, job: job.id }, null, 2) + '\n';
  writes.push(writeFileAtomicAsync(outputPath(out, 'metrics.json'), metrics));
  await Promise.all(writes);
  return summary;
}

const LIMITS = { members: 1000, epochs: 10_000, batchSize: 65_536 };

/** A submitted job spec is untrusted JSON: check its shape before anything is created or saved. */
export function validateJobSpec(spec: unknown): asserts spec is JobSpec {
  const { o, bad, int } = specChecker('job spec', spec);
  if (!(ENSEMBLE_KINDS as readonly unknown[]).includes(o.kind)) {
    throw bad('kind', o.kind, `one of ${ENSEMBLE_KINDS.join('|')}`);
  }
  if (o.model !== undefined && o.model !== 'cnn' && o.model !== 'simclr') throw bad('model', o.model, 'cnn or simclr');
  int('members', 1, LIMITS.members);
  if (o.single !== undefined && (o.single !== true || o.members !== 1 || o.kind !== 'voting')) {
    throw bad('single', o.single, 'absent, or true for a voting job of 1 member');
  }
  int('epochs', 1, LIMITS.epochs);
  int('batchSize', 1, LIMITS.batchSize);
  int('seed', 0, 2 ** 31);
  int('limitTrain', 1, 10_000_000, true);
  int('limitTest', 1, 10_000_000, true);
  if (typeof o.valFraction !== 'number' || !(o.valFraction >= 0 && o.valFraction < 1)) {
    throw bad('valFraction', o.valFraction, 'a number in [0, 1)');
  }
  if (!(DATASETS as readonly unknown[]).includes(o.dataset)) {
    throw bad('dataset', o.dataset, `one of ${DATASETS.join('|')}`);
  }
  if (o.dataDir !== undefined) throw bad('dataDir', o.dataDir, 'absent (workers read their own data)');
  const r = o.recipe as Record<string, unknown> | null;
  const isRecipe =
    typeof r === 'object' &&
    r !== null &&
    typeof r.lr === 'number' &&
    r.lr > 0 &&
    typeof r.optimizer === 'string' &&
    typeof r.schedule === 'object';
  if (!isRecipe) {
    throw bad('recipe', o.recipe, 'a recipe object (optimizer, lr > 0, schedule...)');
  }
}
