// Submitting a job to a coordinator and following it to the end (used by fleet train ... --nats URL).
// The outcome comes by request/reply from the coordinator that owns the job (fleet.job.result.<id>), never from
// the content of a message anyone could publish: a done message on fleet.job.done.<id> only says "ask now".
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, jobProgressSubject, jobDoneSubject, jobResultSubject } from '../bus/subjects.ts';
import { jobsStatusSubject, jobsLogsSubject, jobsCancelSubject } from '../bus/subjects.ts';
import { parseJsonField, type TaskProgressBody } from '../bus/codec.ts';
import { receive, Rejections } from '../bus/receive.ts';
import type { JobSpec } from './coordinator.ts';
import type { DataParallelSpec } from '../engine/train/data-parallel.ts';

export interface JobDone {
  jobId: string;
  summary: Record<string, unknown> & { out?: string };
}

export interface FollowOptions {
  /** Ask the coordinator for the outcome this often, besides when a done message arrives (ms, default 2000). */
  pollMs?: number;
  /** One question's deadline (ms, default 5000). */
  requestMs?: number;
  /** Give up when the owning coordinator has not answered for this long (ms, default 60 s: a restart fits in it). */
  goneMs?: number;
}

/** Submits a job; progress is logged, or given to onProgress (with its parsed metrics) when there is one. */
export async function submitJob(
  bus: Transport,
  spec: JobSpec | DataParallelSpec,
  log: (line: string) => void,
  submitTimeoutMs = 10_000,
  onProgress?: (p: TaskProgressBody, metrics: Record<string, unknown>) => void,
  follow: FollowOptions = {},
): Promise<JobDone> {
  const jobId = await submitOnly(bus, spec, submitTimeoutMs);
  log(`submitted job ${jobId}`);
  return followJob(bus, jobId, log, onProgress, follow);
}

/** Submits a job and returns its id (the coordinator has stored it by then). */
export async function submitOnly(
  bus: Transport,
  spec: JobSpec | DataParallelSpec,
  submitTimeoutMs = 10_000,
): Promise<string> {
  const reply = await bus
    .request(SUBJECTS.jobSubmit, new TextEncoder().encode(JSON.stringify(spec)), submitTimeoutMs)
    .catch(e => {
      throw new Error(`no coordinator answered on ${SUBJECTS.jobSubmit}: ${(e as Error).message}`);
    });
  const parsed = parseJsonField(reply.data, "the coordinator's answer");
  const answer = (parsed.ok ? parsed.value : null) as { ok?: boolean; jobId?: unknown; error?: string } | null;
  if (!answer?.ok || typeof answer.jobId !== 'string')
    throw new Error(`the coordinator refused the job: ${answer?.error ?? (parsed.ok ? 'no job id' : parsed.reason)}`);
  return answer.jobId;
}

/** Follows a submitted job's progress until it ends: its summary, or an error if it failed or was cancelled. */
export async function followJob(
  bus: Transport,
  jobId: string,
  log: (line: string) => void,
  onProgress?: (p: TaskProgressBody, metrics: Record<string, unknown>) => void,
  follow: FollowOptions = {},
): Promise<JobDone> {
  const rejections = new Rejections(); // progress is informative: what does not decode is skipped
  const progress = receive(bus, jobProgressSubject(jobId), ['progress'], rejections, ({ value: p }) => {
    const m = parseJsonField(p.metricsJson, 'metrics_json');
    const e = (m.ok && typeof m.value === 'object' && m.value ? m.value : {}) as {
      event?: string;
      worker?: string;
      attempt?: number;
      test_accuracy?: number;
    };
    if (e.event === 'batch') return; // per-batch events feed the dashboard's live curves
    if (onProgress) onProgress(p, e);
    else if (e.event === 'leased') log(`${p.taskId}: leased to ${e.worker} (attempt ${e.attempt})`);
    else {
      const acc = typeof e.test_accuracy === 'number' ? `, test accuracy ${(100 * e.test_accuracy).toFixed(2)}%` : '';
      log(`${p.taskId}: epoch ${p.epoch}, train loss ${p.loss.toFixed(4)}${acc}`);
    }
  });
  let wake: () => void = () => {};
  const done = bus.subscribe(jobDoneSubject(jobId), () => wake());
  try {
    return await awaitOutcome(bus, jobId, follow, w => {
      wake = w;
    });
  } finally {
    progress.unsubscribe();
    done.unsubscribe();
  }
}

type Outcome = { state?: unknown; summary?: unknown; error?: unknown };

/** Asks the job's coordinator for its outcome until it is finished; throws if it failed or the coordinator is gone. */
async function awaitOutcome(
  bus: Transport,
  jobId: string,
  o: FollowOptions,
  setWake: (wake: () => void) => void,
): Promise<JobDone> {
  const pollMs = o.pollMs ?? 2000,
    requestMs = o.requestMs ?? 5000,
    goneMs = o.goneMs ?? 60_000;
  let lastAnswer = Date.now(),
    lastError = '';
  for (;;) {
    await new Promise<void>(resolve => {
      const timer = setTimeout(resolve, pollMs);
      setWake(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    let r: Outcome | null = null;
    try {
      const msg = await bus.request(jobResultSubject(jobId), new Uint8Array(0), requestMs);
      const parsed = parseJsonField(msg.data, 'job outcome');
      r = parsed.ok && typeof parsed.value === 'object' ? (parsed.value as Outcome) : null;
      if (!r) lastError = parsed.ok ? 'an empty answer' : parsed.reason;
    } catch (e) {
      lastError = (e as Error).message;
    }
    if (r) lastAnswer = Date.now();
    if (r?.state === 'done' && typeof r.summary === 'object' && r.summary)
      return { jobId, summary: r.summary as JobDone['summary'] };
    if (r?.state === 'failed') throw new Error(`job ${jobId} failed: ${String(r.error)}`);
    if (r?.state === 'cancelled') throw new JobCancelled(jobId, String(r.error));
    if (Date.now() - lastAnswer > goneMs) {
      throw new Error(
        `the coordinator that owns job ${jobId} has not answered for ${Math.round(goneMs / 1000)} s (${lastError}); ` +
          `the job may still finish: its outputs are on the coordinator`,
      );
    }
  }
}

export class JobCancelled extends Error {
  constructor(
    readonly jobId: string,
    why: string,
  ) {
    super(`job ${jobId} was ${why}`);
  }
}

/** Deadline of an operator's question (ms). */
export const JOBS_REQUEST_MS = 5000;

/**
 * Asks the coordinators an operator's question (fleet.jobs.*): the parsed answer, or an error naming the subject
 * when none answered in time. The question carries its deadline, so a coordinator does not answer a late one.
 */
export async function askJobs(
  bus: Transport,
  subject: string,
  body: object = {},
  timeoutMs = JOBS_REQUEST_MS,
): Promise<Record<string, unknown>> {
  const q = new TextEncoder().encode(JSON.stringify({ ...body, deadline: Date.now() + timeoutMs }));
  const reply = await bus.request(subject, q, timeoutMs).catch(e => {
    throw new Error(`no coordinator answered on ${subject} within ${timeoutMs} ms (${(e as Error).message})`);
  });
  const parsed = parseJsonField(reply.data, `the answer on ${subject}`);
  if (!parsed.ok) throw new Error(parsed.reason);
  if (typeof parsed.value !== 'object' || parsed.value === null)
    throw new Error(`the answer on ${subject} is not an object`);
  return parsed.value as Record<string, unknown>;
}

export const listJobs = (bus: Transport, timeoutMs?: number) => askJobs(bus, SUBJECTS.jobsList, {}, timeoutMs);
export const jobStatus = (bus: Transport, jobId: string, timeoutMs?: number) =>
  askJobs(bus, jobsStatusSubject(jobId), {}, timeoutMs);
export const jobLogs = (bus: Transport, jobId: string, timeoutMs?: number) =>
  askJobs(bus, jobsLogsSubject(jobId), {}, timeoutMs);
export const cancelJob = (bus: Transport, jobId: string, by: string, timeoutMs?: number) =>
  askJobs(bus, jobsCancelSubject(jobId), { by }, timeoutMs);
