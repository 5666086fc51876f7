// The embedded default (`fleet train ... --members K --workers N` without --nats): a Coordinator and N
// workers in one process on the in-process bus, the workers on worker_threads so members train in parallel.
// It is the cluster code path, not a separate one: same leases, results and combination as on NATS. Job
// state is kept in <out>/state (a directory store), member checkpoints in <out>/members/<id>/checkpoints,
// and the outputs are written to <out> itself, so an interrupted run continues with --resume.
import * as os from 'node:os';
import * as path from 'node:path';
import type * as http from 'node:http';
import { Worker } from 'node:worker_threads';
import { InprocHub } from '../bus/inproc-transport.ts';
import { jobProgressSubject, jobDoneSubject } from '../bus/subjects.ts';
import { decodeEnvelope, parseJsonField } from '../bus/codec.ts';
import { Coordinator, type JobSpec, type JobRecord } from '../coordinator/coordinator.ts';
import { DirStateStore } from '../coordinator/state-store.ts';
import { serveHttp } from '../coordinator/http.ts';
import type { ThreadWorkerData } from '../worker/thread-main.ts';
import type { BatchInfo } from '../engine/ensemble/tasks.ts';
import type { EpochMetrics } from '../engine/train/train-classifier.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';

export interface EmbeddedOptions {
  spec: JobSpec;
  /** Worker threads; each gets an equal share of runtime.threads (at least 1). */
  workers: number;
  runtime: RuntimeOptions;
  /** The run's directory: outputs, state/ and members/<id>/checkpoints. */
  out: string;
  /** Where the workers and the coordinator read the data set (default: the built-in one). */
  dataDir?: string;
  /** Continue the unfinished job in <out>/state instead of starting one. */
  resume?: boolean;
  /** Serve the coordinator's HTTP port (the dashboard, /metrics, /api/*) while the run lasts. */
  http?: { host: string; port: number };
  onBatch?: (taskId: string, b: Omit<BatchInfo, 'images'>) => void;
  onEpoch?: (taskId: string, m: EpochMetrics) => void;
  log?: (line: string) => void;
}

export interface EmbeddedResult {
  jobId: string;
  summary: Record<string, unknown>;
  resumed: boolean;
}

export async function runEmbedded(o: EmbeddedOptions): Promise<EmbeddedResult> {
  const log = o.log ?? (() => {});
  const stateDir = path.join(o.out, 'state');
  const hub = new InprocHub();
  const bus = hub.transport();
  const c = new Coordinator(bus, {
    store: new DirStateStore(stateDir),
    outputDir: () => o.out,
    dataDir: o.dataDir,
    log,
  });
  const threads: Worker[] = [];
  let stopping = false;
  let server: http.Server | null = null;
  try {
    await c.load();
    const job = pickJob(c, o, stateDir);
    if (job.state === 'done' && job.summary) return { jobId: job.id, summary: job.summary, resumed: true };
    const resumed = !!o.resume;
    if (o.http) {
      server = await serveHttp(c, o.http.host, o.http.port);
      log(
        `embedded coordinator: http://${o.http.host}:${(server.address() as { port: number }).port}/ (dashboard, /metrics, /api/cluster, /api/jobs)`,
      );
    }
    // subscribed before anything runs, so that no progress and not the end are missed
    const lastBatch = new Map<string, Omit<BatchInfo, 'images'>>();
    const finished = new Promise<Record<string, unknown>>((resolve, reject) => {
      // the done message only says "look": the outcome is the coordinator's job record
      bus.subscribe(jobDoneSubject(job.id), () => {
        const r = c.outcome(job.id);
        if (r?.state === 'done' && r.summary) resolve(r.summary);
        else if (r?.state === 'failed') reject(new Error(`job ${job.id} failed: ${r.error}`));
      });
      bus.subscribe(jobProgressSubject(job.id), msg => {
        const d = decodeEnvelope(msg.data);
        if (!d.ok || d.envelope.body.kind !== 'progress') return;
        const p = d.envelope.body.value;
        const m = parseJsonField(p.metricsJson, 'metrics_json');
        const e = (m.ok ? m.value : {}) as { event?: string; images_per_second?: number };
        if (e.event === 'batch') {
          const b = {
            epoch: p.epoch,
            batch: p.batch,
            batches: p.batches,
            loss: p.loss,
            imagesPerSecond: e.images_per_second ?? 0,
          };
          lastBatch.set(p.taskId, b);
          o.onBatch?.(p.taskId, b);
        } else if (e.event === undefined) {
          // workers report batches a few times a second, not the last one: the epoch's end completes the bar
          const b = lastBatch.get(p.taskId);
          if (b && b.epoch === p.epoch) o.onBatch?.(p.taskId, { ...b, batch: b.batches, loss: p.loss });
          o.onEpoch?.(p.taskId, e as unknown as EpochMetrics);
        }
      });
      // a worker thread that dies would leave its task to the others, or the job waiting forever: stop the run
      const share = Math.max(1, Math.floor((o.runtime.threads ?? os.availableParallelism()) / o.workers));
      for (let i = 0; i < o.workers; i++) {
        const hubPort = hub.port();
        const data: ThreadWorkerData = {
          port: hubPort,
          id: `embedded-${i + 1}`,
          runtime: { ...o.runtime, threads: share },
          dataDir: o.dataDir,
          checkpointRoot: o.out,
          heartbeatMs: 1000,
        };
        const w = new Worker(new URL('../worker/thread.js', import.meta.url), {
          workerData: data,
          transferList: [hubPort],
        });
        w.on('message', (m: { kind?: string; line?: string }) => {
          if (m.kind === 'log' && m.line) log(m.line);
        });
        w.on('error', e => reject(new Error(`worker thread ${data.id} failed: ${e.message}`)));
        w.on('exit', code => {
          if (!stopping) reject(new Error(`worker thread ${data.id} exited (code ${code}) before the job finished`));
        });
        threads.push(w);
      }
    });
    finished.catch(() => {}); // handled below; never an unhandled rejection meanwhile
    await c.start();
    return { jobId: job.id, summary: await finished, resumed };
  } finally {
    stopping = true;
    await Promise.all(threads.map(stopThread));
    server?.close();
    await c.stop();
    hub.close();
  }
}

/** The job this run follows: the unfinished one with --resume (same settings), else a new one. */
function pickJob(c: Coordinator, o: EmbeddedOptions, stateDir: string): JobRecord {
  const jobs = [...c.jobs.values()];
  const unfinished = jobs.filter(j => j.state === 'running');
  if (!o.resume) {
    if (unfinished.length)
      throw new Error(
        `${o.out} holds an unfinished ensemble run (job ${unfinished[0].id}): continue it with --resume, or use another --out`,
      );
    return c.submit(o.spec);
  }
  const same = jobs.filter(j => canonical(j.spec) === canonical(o.spec)).sort((a, b) => b.submittedAt - a.submittedAt);
  const pick = same.find(j => j.state === 'running') ?? same.find(j => j.state === 'done');
  if (pick) return pick;
  if (same.length)
    throw new Error(
      `--resume: the run in ${o.out} failed (job ${same[0].id}: ${same[0].error}); run it again with --overwrite`,
    );
  const other = unfinished[0] ?? jobs[0];
  if (!other) throw new Error(`--resume: no ensemble run to continue in ${stateDir}`);
  const field = Object.keys({ ...other.spec, ...o.spec }).find(
    k => canonical((other.spec as Record<string, unknown>)[k]) !== canonical((o.spec as Record<string, unknown>)[k]),
  );
  throw new Error(
    `--resume: the run in ${o.out} (job ${other.id}) has other settings (${field}: ${canonical((other.spec as Record<string, unknown>)[field!])} there, ${canonical((o.spec as Record<string, unknown>)[field!])} now)`,
  );
}

/** JSON with sorted keys and without undefined fields: equal settings give equal strings. */
function canonical(v: unknown): string {
  return (
    JSON.stringify(v, (_k, x) =>
      x && typeof x === 'object' && !Array.isArray(x)
        ? Object.fromEntries(Object.entries(x).sort(([a], [b]) => a.localeCompare(b)))
        : x,
    ) ?? 'undefined'
  );
}

/** Asks a worker thread to stop and waits for it to end (terminated if it does not within 10 s). */
async function stopThread(w: Worker): Promise<void> {
  if (w.threadId < 0) return; // already gone
  const exited = new Promise<void>(resolve => w.once('exit', () => resolve()));
  w.postMessage('stop');
  const timer = setTimeout(() => void w.terminate(), 10_000);
  await exited;
  clearTimeout(timer);
}
