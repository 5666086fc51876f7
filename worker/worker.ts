// A cluster worker: announces itself, heartbeats, trains the tasks the coordinator leases to it (one at a
// time), reports progress, and sends each result back as a chunked transfer followed by a TaskResult.
import * as os from 'node:os';
import { randomBytes, createHash } from 'node:crypto';
import type { Transport } from '../bus/transport.ts';
import { taskCancelSubject } from '../bus/subjects.ts';
import { SUBJECTS, workerHeartbeatSubject, taskLeaseSubject, jobProgressSubject, tensorSubject, subjectToken } from '../bus/subjects.ts';
import { encodeEnvelope, parseJsonField, jsonField, Device, DType, type TaskLeaseBody } from '../bus/codec.ts';
import { receive, Rejections } from '../bus/receive.ts';
import { checkId, isId } from '../util/ids.ts';
import { sendChunked } from '../bus/chunking.ts';
import { runMemberTask, type MemberTask } from '../engine/ensemble/tasks.ts';
import { encodeMemberResult } from '../engine/ensemble/result-codec.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';
import { startDataParallel, type DataParallelStats, type DataParallelOptions } from './data-parallel.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { meteredTransport } from '../bus/metered-transport.ts';

export const FLEET_VERSION = '0.1.0';

export interface WorkerOptions {
  id?: string;
  runtime: RuntimeOptions;
  heartbeatMs?: number;
  /** Announce again every this many heartbeats, so a restarted coordinator learns about the worker. */
  announceEvery?: number;
  /** Where this worker reads the data sets (default: the built-in ones); tasks never choose the path. */
  dataDir?: string;
  /** Where this worker keeps a task's per-epoch checkpoints, so that an interrupted task resumes (default: none). */
  checkpointDir?: (jobId: string, taskId: string) => string;
  log?: (line: string) => void;
  /** The GPU this worker computes on (announced to the coordinator; '' on CPU). */
  gpuName?: string;
  /** Test hook of data-parallel work (see worker/data-parallel.ts). */
  beforeDataParallelWork?: DataParallelOptions['beforeWork'];
  /** This worker's metrics registry (default: a new one); serve it with telemetry/metrics-http.ts. */
  metrics?: Metrics;
  /** Per-batch progress events (live loss curves) at most this often; the epoch events always go (default 500). */
  batchProgressMs?: number;
}

export interface WorkerHandle {
  id: string;
  /** Counters of what the worker saw (malformed messages are dropped, never fatal). */
  stats: { leases: number; completed: number; failed: number; malformed: number; samples: number; cancelled: number };
  dataParallel: DataParallelStats;
  metrics: Metrics;
  stop(): Promise<void>;
}

export function startWorker(rawBus: Transport, o: WorkerOptions): WorkerHandle {
  const metrics = o.metrics ?? createMetrics();
  const bus = meteredTransport(rawBus, metrics);
  // the default id: the host name's first label (ids allow no dots in subjects), the pid and a random suffix
  const host = os.hostname().split('.')[0].replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40) || 'worker';
  const id = subjectToken(checkId('worker id', o.id ?? `${host}-${process.pid}-${randomBytes(3).toString('hex')}`));
  const log = o.log ?? (() => {});
  const started = Date.now();
  const stats = { leases: 0, completed: 0, failed: 0, malformed: 0, samples: 0, cancelled: 0 };
  // the lease this worker runs (one at a time), with its token
  let running: TaskLeaseBody | null = null;
  // set when the coordinator cancelled the running lease's job: training stops at the next batch
  let stopRequested: TaskLeaseBody | null = null;
  const rejections = new Rejections({ counters: metrics, log, onReject: () => { stats.malformed++; } });
  const send = (subject: string, body: Parameters<typeof encodeEnvelope>[0]) => bus.publish(subject, encodeEnvelope(body, id));
  const announce = () => send(SUBJECTS.workerAnnounce, { kind: 'announce', value: {
    workerId: id, device: o.runtime.device === 'cuda' ? Device.CUDA : Device.CPU, threads: o.runtime.threads ?? os.availableParallelism(),
    version: FLEET_VERSION, gpuName: o.gpuName ?? '' } });
  const dp = startDataParallel(bus, { id, runtime: o.runtime, log, beforeWork: o.beforeDataParallelWork, counters: metrics });
  let beats = 0;
  const heartbeat = () => {
    if (++beats % (o.announceEvery ?? 5) === 0) announce();
    send(workerHeartbeatSubject(id), { kind: 'heartbeat', value: { workerId: id, uptimeMs: Date.now() - started,
      runningTaskIds: [...(running ? [`${running.jobId}/${running.taskId}`] : []), ...dp.running()], samplesProcessed: stats.samples,
      running: running ? [{ jobId: running.jobId, taskId: running.taskId, attempt: running.attempt, leaseToken: running.leaseToken }] : [] } });
  };

  const run = async (lease: TaskLeaseBody, task: MemberTask) => {
    const { taskId, jobId, attempt, leaseToken } = lease;
    running = lease;
    log(`task ${taskId} of job ${jobId} (attempt ${attempt}): training`);
    // step time = the interval between per-batch callbacks (data preparation included); the interval that ends an
    // epoch's first batch also holds the evaluation of the previous epoch, and the task's first one session creation
    let lastBatch = 0, lastProgress = 0;
    const model = task.model === 'simclr' ? 'simclr' : 'cnn';
    // progress goes to the coordinator with the lease token; it republishes it on the job's progress subject
    const progress = (epoch: number, batch: number, batches: number, loss: number, metricsJson: Uint8Array) =>
      send(SUBJECTS.taskProgress, { kind: 'progress', value: { taskId, jobId, epoch, batch, batches, loss, metricsJson, attempt, leaseToken } });
    const result = (ok: boolean, error: string, sha: Uint8Array, tensors: { name: string; shape: number[]; dtype: DType; transferId: string }[]) =>
      send(SUBJECTS.taskResult, { kind: 'result', value: { taskId, jobId, workerId: id, ok, error, resultJson: jsonField({ attempt }), tensors,
        attempt, leaseToken, resultSha256: sha } });
    try {
      const r = await runMemberTask({ ...task, dataDir: o.dataDir, checkpointDir: o.checkpointDir?.(jobId, taskId) }, o.runtime, {
        onBatch: (_t, b) => {
          if (stopRequested === lease) throw new TaskCancelled();
          const now = performance.now();
          if (b.batch > 1) metrics.trainingStep.observe({ model }, (now - lastBatch) / 1000);
          lastBatch = now;
          stats.samples += b.images;
          metrics.samples.inc({ model }, b.images);
          if (now - lastProgress >= (o.batchProgressMs ?? 500) && b.batch < b.batches) {
            lastProgress = now;
            progress(b.epoch, b.batch, b.batches, b.loss, jsonField({ event: 'batch', images_per_second: b.imagesPerSecond }));
          }
        },
        onEpoch: (_t, m) => {
          if (stopRequested === lease) throw new TaskCancelled();
          progress(m.epoch, 0, 0, m.train_loss, jsonField(m));
        },
        log: line => log(line),
      });
      const transferId = `${taskId}-${attempt}-${randomBytes(8).toString('hex')}`;
      const payload = encodeMemberResult(r);
      await sendChunked(bus, tensorSubject(transferId), payload, { transferId, sender: id });
      result(true, '', createHash('sha256').update(payload).digest(), [{ name: 'result', shape: [], dtype: DType.UINT8, transferId }]);
      stats.completed++;
      log(`task ${taskId}: done`);
    } catch (e) {
      if (e instanceof TaskCancelled) {
        // its job is over: no result to send, the worker is free for other work
        stats.cancelled++;
        log(`task ${taskId} of job ${jobId}: stopped (the job was cancelled)`);
        return;
      }
      stats.failed++;
      log(`task ${taskId}: failed: ${(e as Error).message}`);
      result(false, (e as Error).message, new Uint8Array(0), []);
    } finally {
      running = null;
      stopRequested = null;
      heartbeat(); // tell the coordinator at once that this worker is free
    }
  };

  const sub = receive(bus, taskLeaseSubject(id), ['lease'], rejections, ({ value: lease }) => {
    // ids reach this worker's checkpoint paths and its subjects: checked before anything else
    if (!isId(lease.jobId) || !isId(lease.taskId)) {
      return rejections.reject('lease', 'bad_id', `job ${JSON.stringify(lease.jobId)}, task ${JSON.stringify(lease.taskId)}`);
    }
    const task = parseJsonField(lease.taskJson, 'task_json');
    if (!task.ok || typeof task.value !== 'object' || task.value === null) {
      return rejections.reject('lease', 'malformed', `lease ${lease.taskId}: ${task.ok ? 'empty task' : task.reason}`);
    }
    if (running) {
      // the coordinator leases one task per worker; a second one means it lost track of us: refuse, it re-leases
      send(SUBJECTS.taskResult, { kind: 'result', value: { taskId: lease.taskId, jobId: lease.jobId, workerId: id, ok: false,
        error: `worker ${id} is busy with ${running.jobId}/${running.taskId}`, resultJson: jsonField({ attempt: lease.attempt, busy: true }), tensors: [],
        attempt: lease.attempt, leaseToken: lease.leaseToken, resultSha256: new Uint8Array(0) } });
      return;
    }
    stats.leases++;
    void run(lease, { ...(task.value as MemberTask), id: lease.taskId });
  }, { label: 'lease' });

  // a cancelled job's task: only the coordinator may publish here (nats.conf), and the message must name the lease
  // this worker runs, with its token
  const cancelSub = bus.subscribe(taskCancelSubject(id), msg => {
    const parsed = msg.data.length <= 1024 ? parseJsonField(msg.data, 'cancel') : { ok: false as const, reason: 'too large' };
    const c = (parsed.ok && typeof parsed.value === 'object' && parsed.value ? parsed.value : null) as Record<string, unknown> | null;
    if (!c) return rejections.reject('cancel', 'malformed', parsed.ok ? 'not an object' : parsed.reason);
    const lease = running as TaskLeaseBody | null;
    if (!lease || c.jobId !== lease.jobId || c.taskId !== lease.taskId) {
      return rejections.reject('cancel', 'not_leased', `${String(c.jobId)}/${String(c.taskId)} is not running here`);
    }
    if (c.attempt !== lease.attempt) return rejections.reject('cancel', 'stale_attempt', `${lease.jobId}/${lease.taskId}`);
    if (typeof c.leaseToken !== 'string' || c.leaseToken !== lease.leaseToken) {
      return rejections.reject('cancel', 'wrong_token', `${lease.jobId}/${lease.taskId}`);
    }
    log(`task ${lease.taskId} of job ${lease.jobId}: the job was cancelled, stopping at the next batch`);
    stopRequested = lease;
  });

  announce();
  heartbeat();
  const timer = setInterval(heartbeat, o.heartbeatMs ?? 1000);
  return {
    id, stats, metrics, dataParallel: dp.stats,
    async stop() {
      clearInterval(timer);
      sub.unsubscribe();
      cancelSub.unsubscribe();
      await dp.stop();
      await bus.flush().catch(() => {});
    },
  };
}

/** Thrown from the training callbacks when the task's job was cancelled. */
class TaskCancelled extends Error {
  constructor() { super('the job was cancelled'); }
}
