// `fleet jobs list|status|watch|cancel|logs`: an operator's view of the cluster's jobs, asked of the coordinator
// over NATS request/reply (coordinator/jobs-api.ts). Human-readable by default, --json for scripts.
import * as os from 'node:os';
import { parse, intOption, UsageError } from '../util/args.ts';
import { isId } from '../util/ids.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli, natsSettings, checkNatsFiles } from './nats.ts';
import { redactUrl } from '../util/redact.ts';
import { listJobs, jobStatus, jobLogs, cancelJob, JOBS_REQUEST_MS } from '../coordinator/client.ts';
import { jobProgressSubject } from '../bus/subjects.ts';
import { receive, Rejections } from '../bus/receive.ts';
import { parseJsonField } from '../bus/codec.ts';
import type { Transport } from '../bus/transport.ts';

const HELP = `usage: fleet jobs list|status JOB|watch JOB|cancel JOB|logs JOB --nats URL [options]

Asks the cluster's coordinator about its jobs (NATS request/reply; the NATS user needs the submitter role):
  list          every job the coordinator owns, newest first (id, state, kind, members, tasks done)
  status JOB    one job: its state, progress and each task's state and worker
  watch JOB     follows the job's progress until it ends: exit 0 when it finished, 1 when it failed or
                was cancelled
  cancel JOB    cancels the job: its queued tasks are dropped and its running tasks stopped on the workers
  logs JOB      the job's recent events as the coordinator keeps them (the last 200)

options:
${NATS_HELP}  --timeout-ms N      how long to wait for the coordinator's answer (default ${JOBS_REQUEST_MS}, 100..600000)
  --json              print the answer as JSON (one object per line for watch)
  -h, --help          this text
`;

export const OPTIONS = {
  ...NATS_OPTIONS,
  'timeout-ms': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;
const ACTIONS = ['list', 'status', 'watch', 'cancel', 'logs'] as const;
type Action = (typeof ACTIONS)[number];

export default async function jobs(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help || positionals.length === 0) {
    process.stdout.write(HELP);
    return;
  }
  const action = positionals[0] as Action;
  if (!ACTIONS.includes(action))
    throw new UsageError(`jobs: unknown action "${positionals[0]}" (expected ${ACTIONS.join('|')})`);
  const jobId = positionals[1];
  if (action === 'list' ? positionals.length > 1 : positionals.length !== 2) {
    throw new UsageError(
      action === 'list' ? `jobs list: unexpected argument "${positionals[1]}"` : `jobs ${action}: needs one JOB id`,
    );
  }
  if (jobId !== undefined && (!isId(jobId) || jobId.includes('.')))
    throw new UsageError(`jobs ${action}: not a job id: ${JSON.stringify(jobId)}`);
  if (!values.nats) throw new UsageError('jobs: --nats URL is required');
  const timeoutMs = intOption(values, 'timeout-ms', JOBS_REQUEST_MS, 100, 600_000);
  const settings = natsSettings(values);
  checkNatsFiles(settings);
  const url = redactUrl(settings.url);
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const bus = await connectFromCli(values, 'fleet-jobs', log);
  const out = (text: string): void => {
    process.stdout.write(`${text}\n`);
  };
  // every failure names the NATS server asked
  const ask = <T>(p: Promise<T>) =>
    p.catch(e => {
      throw new Error(`${url}: ${(e as Error).message}`);
    });
  try {
    if (action === 'list') {
      const a = await ask(listJobs(bus, timeoutMs));
      if (values.json) return out(JSON.stringify(a));
      const rows = (a.jobs as Record<string, unknown>[]) ?? [];
      if (!rows.length) return out('no jobs');
      out(
        table([
          ['JOB', 'STATE', 'KIND', 'MEMBERS', 'TASKS', 'SUBMITTED'],
          ...rows.map(j => [
            String(j.id),
            String(j.state),
            String(j.kind ?? 'data-parallel'),
            String(j.members ?? ''),
            j.tasks === undefined ? '' : `${j.done}/${j.tasks}`,
            time(j.submittedAt),
          ]),
        ]),
      );
      if (Number(a.more) > 0) out(`... and ${a.more} older job(s)`);
      return;
    }
    if (action === 'status') {
      const a = answerOf(await ask(jobStatus(bus, jobId, timeoutMs)), jobId);
      return out(values.json ? JSON.stringify(a.job) : describe(a.job as Record<string, unknown>));
    }
    if (action === 'logs') {
      const a = answerOf(await ask(jobLogs(bus, jobId, timeoutMs)), jobId);
      if (values.json) return out(JSON.stringify(a));
      const events = a.events as { at: number; text: string }[];
      if (!events.length) out(`no events of job ${jobId} since the coordinator started`);
      for (const e of events) out(`${time(e.at)}  ${e.text}`);
      return;
    }
    if (action === 'cancel') {
      const a = answerOf(
        await ask(cancelJob(bus, jobId, `${os.userInfo().username} (fleet jobs cancel)`, timeoutMs)),
        jobId,
      );
      return out(values.json ? JSON.stringify(a) : `job ${jobId}: ${a.state}`);
    }
    await watch(bus, jobId, timeoutMs, !!values.json, out, ask);
  } finally {
    await bus.close();
  }
}

/** Follows a job until it ends; throws (exit 1) when it failed or was cancelled. */
async function watch(
  bus: Transport,
  jobId: string,
  timeoutMs: number,
  json: boolean,
  out: (s: string) => void,
  ask: <T>(p: Promise<T>) => Promise<T>,
): Promise<void> {
  const progress = receive(bus, jobProgressSubject(jobId), ['progress'], new Rejections(), ({ value: p }) => {
    const m = parseJsonField(p.metricsJson, 'metrics_json');
    const e = (m.ok && typeof m.value === 'object' && m.value ? m.value : {}) as Record<string, unknown>;
    if (e.event === 'batch') return;
    if (json)
      return out(JSON.stringify({ event: e.event ?? 'epoch', task: p.taskId, epoch: p.epoch, loss: p.loss, ...e }));
    if (e.event === 'leased') out(`${p.taskId}: leased to ${e.worker} (attempt ${e.attempt})`);
    else out(`${p.taskId}: epoch ${p.epoch}, train loss ${p.loss.toFixed(4)}`);
  });
  try {
    for (let last = ''; ;) {
      const job = answerOf(await ask(jobStatus(bus, jobId, timeoutMs)), jobId).job as Record<string, unknown>;
      const line = `job ${jobId}: ${job.state}${job.tasks === undefined ? '' : `, ${job.done}/${job.tasks} tasks done`}`;
      if (line !== last) {
        if (json) out(JSON.stringify({ event: 'status', job }));
        else out(line);
        last = line;
      }
      if (job.state === 'done') return;
      if (job.state !== 'running') throw new Error(`job ${jobId} ${job.state}${job.error ? `: ${job.error}` : ''}`);
      await new Promise(r => setTimeout(r, 1000));
    }
  } finally {
    progress.unsubscribe();
  }
}

/** A coordinator's answer; its refusal (ok false) becomes the error. */
function answerOf(a: Record<string, unknown>, jobId: string): Record<string, unknown> {
  if (a.ok !== true) throw new Error(`job ${jobId}: ${String(a.error ?? 'refused')}`);
  return a;
}

function describe(j: Record<string, unknown>): string {
  const lines = [`job ${j.id}: ${j.state}`];
  if (j.kind) lines.push(`  ${j.model ?? 'cnn'} ${j.kind} ensemble of ${j.members}, ${j.epochs} epoch(s)`);
  if (j.tasks !== undefined)
    lines.push(
      `  tasks: ${j.done}/${j.tasks} done${typeof j.progress === 'number' ? `, ${Math.round(100 * j.progress)}%` : ''}`,
    );
  lines.push(`  submitted ${time(j.submittedAt)}${j.finishedAt ? `, ended ${time(j.finishedAt)}` : ''}`);
  if (j.error) lines.push(`  ${j.state === 'cancelled' ? 'cancelled' : 'error'}: ${j.error}`);
  const s = j.summary as Record<string, unknown> | undefined;
  if (s?.test_accuracy !== undefined)
    lines.push(`  test accuracy ${(100 * Number(s.test_accuracy)).toFixed(2)}%, outputs ${s.out}`);
  for (const t of (j.taskStates as Record<string, unknown>[] | undefined) ?? []) {
    lines.push(`  ${t.task}: ${t.state}${t.worker ? ` on ${t.worker}` : ''} (attempts ${t.attempts})`);
  }
  return lines.join('\n');
}

const time = (ms: unknown) => (typeof ms === 'number' ? new Date(ms).toISOString().replace(/\.\d+Z$/, 'Z') : '');

function table(rows: string[][]): string {
  const widths = rows[0].map((_, i) => Math.max(...rows.map(r => r[i].length)));
  return rows
    .map(r =>
      r
        .map((c, i) => c.padEnd(widths[i]))
        .join('  ')
        .trimEnd(),
    )
    .join('\n');
}
