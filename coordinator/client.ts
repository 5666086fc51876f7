// Submitting a job to a coordinator and following it to the end (used by fleet train ... --nats URL).
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, jobProgressSubject, jobDoneSubject } from '../bus/subjects.ts';
import { decodeEnvelope, parseJsonField, type TaskProgressBody } from '../bus/codec.ts';
import type { JobSpec } from './coordinator.ts';
import type { DataParallelSpec } from '../engine/train/data-parallel.ts';

export interface JobDone { jobId: string; summary: Record<string, unknown> & { out?: string } }

/** Submits a job; progress is logged, or given to onProgress (with its parsed metrics) when there is one. */
export async function submitJob(bus: Transport, spec: JobSpec | DataParallelSpec, log: (line: string) => void, submitTimeoutMs = 10_000,
  onProgress?: (p: TaskProgressBody, metrics: Record<string, unknown>) => void): Promise<JobDone> {
  const reply = await bus.request(SUBJECTS.jobSubmit, new TextEncoder().encode(JSON.stringify(spec)), submitTimeoutMs)
    .catch(e => { throw new Error(`no coordinator answered on ${SUBJECTS.jobSubmit}: ${(e as Error).message}`); });
  const answer = JSON.parse(new TextDecoder().decode(reply.data)) as { ok: boolean; jobId?: string; error?: string };
  if (!answer.ok || !answer.jobId) throw new Error(`the coordinator refused the job: ${answer.error}`);
  const jobId = answer.jobId;
  log(`submitted job ${jobId}`);
  return new Promise((resolve, reject) => {
    const progress = bus.subscribe(jobProgressSubject(jobId), msg => {
      const d = decodeEnvelope(msg.data);
      if (!d.ok || d.envelope.body.kind !== 'progress') return;
      const p = d.envelope.body.value;
      const m = parseJsonField(p.metricsJson, 'metrics_json');
      const e = (m.ok ? m.value : {}) as { event?: string; worker?: string; attempt?: number; test_accuracy?: number };
      if (e.event === 'batch') return; // per-batch events feed the dashboard's live curves
      if (onProgress) onProgress(p, e);
      else if (e.event === 'leased') log(`${p.taskId}: leased to ${e.worker} (attempt ${e.attempt})`);
      else log(`${p.taskId}: epoch ${p.epoch}, train loss ${p.loss.toFixed(4)}${e.test_accuracy !== undefined ? `, test accuracy ${(100 * e.test_accuracy).toFixed(2)}%` : ''}`);
    });
    const done = bus.subscribe(jobDoneSubject(jobId), msg => {
      progress.unsubscribe(); done.unsubscribe();
      const r = JSON.parse(new TextDecoder().decode(msg.data)) as { ok: boolean; summary?: JobDone['summary']; error?: string };
      if (r.ok && r.summary) resolve({ jobId, summary: r.summary }); else reject(new Error(`job ${jobId} failed: ${r.error}`));
    });
  });
}
