// The job-record lifecycle that ensemble jobs (coordinator.ts) and data-parallel jobs (data-parallel-job.ts)
// share: ids, the end states (done, failed, cancelled) with their record fields, the done message, the outcome a
// submitter sees, and each job's history for `fleet jobs logs`.
import type { Transport } from '../bus/transport.ts';
import { jobDoneSubject } from '../bus/subjects.ts';
import { jsonField } from '../bus/codec.ts';
import * as D from './defaults.ts';

/** The fields every job record has, whatever its kind. */
export interface JobLifecycleRecord {
  id: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  submittedAt: number;
  finishedAt?: number;
  error?: string;
  summary?: Record<string, unknown>;
}

/** A new job's id: time-ordered, with a random tail. */
export const newJobId = () => `job-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;

/** A job's end in its record: done with its summary, or failed / cancelled with why (the caller saves it). */
export function endJob(r: JobLifecycleRecord, state: 'done', summary: Record<string, unknown>): void;
export function endJob(r: JobLifecycleRecord, state: 'failed' | 'cancelled', error: string): void;
export function endJob(r: JobLifecycleRecord, state: 'done' | 'failed' | 'cancelled', about: unknown): void {
  if (state === 'done') r.summary = about as Record<string, unknown>;
  else r.error = about as string;
  r.state = state;
  r.finishedAt = Date.now();
}

/** Tells the submitter (on the job's done subject) how an ended job ended. */
export function publishJobEnd(bus: Transport, r: JobLifecycleRecord): void {
  const message = r.state === 'done' ? { ok: true, summary: r.summary } : { ok: false, error: r.error };
  bus.publish(jobDoneSubject(r.id), jsonField(message));
}

/** A job's state as the submitter sees it. */
export interface JobOutcome {
  state: string;
  ok?: boolean;
  summary?: Record<string, unknown>;
  error?: string;
}

export function jobOutcome(j: JobLifecycleRecord): JobOutcome {
  if (j.state === 'running') return { state: 'running' };
  if (j.state === 'done') return { state: 'done', ok: true, summary: j.summary };
  return { state: j.state === 'cancelled' ? 'cancelled' : 'failed', ok: false, error: j.error };
}

/** One line of a job's history, as `fleet jobs logs` shows it. */
export interface JobEvent {
  at: number;
  text: string;
}

/** Each job's recent events (bounded per job, and in the number of jobs kept). */
export class JobEvents {
  private readonly events = new Map<string, JobEvent[]>();

  /** Adds a line to a job's history (the oldest lines, and the oldest jobs' histories, go first). */
  add(jobId: string, text: string): void {
    let list = this.events.get(jobId);
    if (!list) {
      this.events.set(jobId, (list = []));
      if (this.events.size > D.JOB_EVENT_JOBS) this.events.delete(this.events.keys().next().value!);
    }
    list.push({ at: Date.now(), text });
    if (list.length > D.JOB_EVENTS) list.splice(0, list.length - D.JOB_EVENTS);
  }

  /** A job's recent events (empty for a job this coordinator saw nothing of since it started). */
  of(jobId: string): JobEvent[] {
    return this.events.get(jobId) ?? [];
  }
}
