// Operators' questions to the coordinator over the bus (request/reply, JSON): `fleet jobs list|status|logs|cancel`.
// A question carries its deadline (a late one is not answered: its asker gave up); each answer is bounded in size.
// Status, logs and cancel are answered only by the coordinator that owns the job; the others stay silent.
import { SUBJECTS } from '../bus/subjects.ts';
import type { BusMessage, Subscription } from '../bus/transport.ts';
import type { Coordinator } from './coordinator.ts';
import * as D from './defaults.ts';

/** What every question may carry: its deadline (ms since the epoch), and who asks (for the log; free text, bounded). */
export interface JobsQuestion {
  deadline?: number;
  by?: string;
}

export function serveJobsApi(c: Coordinator): Subscription[] {
  const answer = (msg: BusMessage, what: (q: JobsQuestion) => object | null) => {
    if (!msg.reply) return;
    const q = question(msg.data);
    if (!q)
      return c.rejections.reject(
        'jobs',
        'malformed',
        `on ${msg.subject}: not a JSON object of at most ${D.JOBS_REQUEST_BYTES} bytes`,
      );
    if (typeof q.deadline === 'number' && Date.now() > q.deadline) return;
    const body = what(q);
    if (body) c.bus.respond(msg, bounded(body, Math.min(c.bus.maxPayload, D.JOBS_REPLY_BYTES)));
  };
  const jobOf = (msg: BusMessage, prefix: string) => msg.subject.slice(prefix.length + 1);
  const owned = (id: string) => c.jobs.has(id) || c.dataParallel.view().some(j => j.id === id);
  return [
    c.bus.subscribe(SUBJECTS.jobsList, msg =>
      answer(msg, () => {
        const jobs = c.jobsView().sort((a, b) => Number(b.submittedAt ?? 0) - Number(a.submittedAt ?? 0));
        return { ok: true, jobs: jobs.slice(0, D.JOBS_LISTED), more: Math.max(0, jobs.length - D.JOBS_LISTED) };
      }),
    ),
    c.bus.subscribe(`${SUBJECTS.jobsStatusPrefix}.*`, msg =>
      answer(msg, () => {
        const job = c.jobStatus(jobOf(msg, SUBJECTS.jobsStatusPrefix));
        return job && { ok: true, job };
      }),
    ),
    c.bus.subscribe(`${SUBJECTS.jobsLogsPrefix}.*`, msg =>
      answer(msg, () => {
        const id = jobOf(msg, SUBJECTS.jobsLogsPrefix);
        return owned(id) ? { ok: true, job: id, events: c.jobEvents(id) } : null;
      }),
    ),
    c.bus.subscribe(`${SUBJECTS.jobsCancelPrefix}.*`, msg =>
      answer(msg, q => {
        const id = jobOf(msg, SUBJECTS.jobsCancelPrefix);
        return owned(id) ? c.cancel(id, requester(q.by)) : null;
      }),
    ),
  ];
}

/** The asker's name as the log shows it: printable, short. */
export function requester(by: unknown): string {
  const s =
    typeof by === 'string'
      ? by
          .replace(/[^\w .@:/-]/g, '')
          .slice(0, 64)
          .trim()
      : '';
  return s || 'an operator';
}

function question(data: Uint8Array): JobsQuestion | null {
  if (data.length === 0) return {};
  if (data.length > D.JOBS_REQUEST_BYTES) return null;
  try {
    const q = JSON.parse(new TextDecoder().decode(data)) as unknown;
    return typeof q === 'object' && q !== null && !Array.isArray(q) ? (q as JobsQuestion) : null;
  } catch {
    return null;
  }
}

/** The answer as JSON, shortened to fit `max` bytes: the longest list in it loses entries (the oldest events). */
export function bounded(body: object, max: number): Uint8Array {
  const enc = (o: object) => new TextEncoder().encode(JSON.stringify(o));
  let bytes = enc(body);
  const o = { ...body } as Record<string, unknown>;
  const key = ['jobs', 'events', 'job'].find(k => Array.isArray(o[k]));
  while (bytes.length > max && key && (o[key] as unknown[]).length > 0) {
    const list = o[key] as unknown[];
    const keep = Math.floor(list.length / 2);
    o[key] = key === 'events' ? list.slice(list.length - keep) : list.slice(0, keep);
    o.truncated = true;
    bytes = enc(o);
  }
  return bytes.length <= max ? bytes : enc({ ok: false, error: `the answer is over ${max} bytes` });
}
