// A cluster worker: announces itself, heartbeats, trains the tasks the coordinator leases to it (one at a
// time), reports progress, and sends each result back as a chunked transfer followed by a TaskResult.
import * as os from 'node:os';
import { randomBytes } from 'node:crypto';
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, workerHeartbeatSubject, taskLeaseSubject, jobProgressSubject, tensorSubject, subjectToken } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, parseJsonField, jsonField, Device, DType } from '../bus/codec.ts';
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
  stats: { leases: number; completed: number; failed: number; malformed: number; samples: number };
  dataParallel: DataParallelStats;
  metrics: Metrics;
  stop(): Promise<void>;
}

export function startWorker(rawBus: Transport, o: WorkerOptions): WorkerHandle {
  const metrics = o.metrics ?? createMetrics();
  const bus = meteredTransport(rawBus, metrics);
  const id = subjectToken(o.id ?? `${os.hostname()}-${process.pid}-${randomBytes(3).toString('hex')}`);
  const log = o.log ?? (() => {});
  const started = Date.now();
  const stats = { leases: 0, completed: 0, failed: 0, malformed: 0, samples: 0 };
  let running: string | null = null;
  const send = (subject: string, body: Parameters<typeof encodeEnvelope>[0]) => bus.publish(subject, encodeEnvelope(body, id));
  const announce = () => send(SUBJECTS.workerAnnounce, { kind: 'announce', value: {
    workerId: id, device: o.runtime.device === 'cuda' ? Device.CUDA : Device.CPU, threads: o.runtime.threads ?? os.availableParallelism(),
    version: FLEET_VERSION, gpuName: o.gpuName ?? '' } });
  const dp = startDataParallel(bus, { id, runtime: o.runtime, log, beforeWork: o.beforeDataParallelWork });
  let beats = 0;
  const heartbeat = () => {
    if (++beats % (o.announceEvery ?? 5) === 0) announce();
    send(workerHeartbeatSubject(id), { kind: 'heartbeat', value: { workerId: id, uptimeMs: Date.now() - started,
      runningTaskIds: [...(running ? [running] : []), ...dp.running()], samplesProcessed: stats.samples } });
  };

  const run = async (taskId: string, jobId: string, attempt: number, task: MemberTask) => {
    running = taskId;
    log(`task ${taskId} of job ${jobId} (attempt ${attempt}): training`);
    // step time = the interval between per-batch callbacks (data preparation included); the interval that ends an
    // epoch's first batch also holds the evaluation of the previous epoch, and the task's first one session creation
    let lastBatch = 0, lastProgress = 0;
    const model = task.model === 'simclr' ? 'simclr' : 'cnn';
    try {
      const result = await runMemberTask({ ...task, dataDir: o.dataDir, checkpointDir: o.checkpointDir?.(jobId, taskId) }, o.runtime, {
        onBatch: (_t, b) => {
          const now = performance.now();
          if (b.batch > 1) metrics.trainingStep.observe({ model }, (now - lastBatch) / 1000);
          lastBatch = now;
          stats.samples += b.images;
          metrics.samples.inc({ model }, b.images);
          if (now - lastProgress >= (o.batchProgressMs ?? 500) && b.batch < b.batches) {
            lastProgress = now;
            send(jobProgressSubject(jobId), { kind: 'progress', value: {
              taskId, jobId, epoch: b.epoch, batch: b.batch, batches: b.batches, loss: b.loss, metricsJson: jsonField({ event: 'batch', images_per_second: b.imagesPerSecond }) } });
          }
        },
        onEpoch: (_t, m) => send(jobProgressSubject(jobId), { kind: 'progress', value: {
          taskId, jobId, epoch: m.epoch, batch: 0, batches: 0, loss: m.train_loss, metricsJson: jsonField(m) } }),
        log: line => log(line),
      });
      const transferId = `${taskId}-${attempt}-${randomBytes(4).toString('hex')}`;
      await sendChunked(bus, tensorSubject(transferId), encodeMemberResult(result), { transferId, sender: id });
      send(SUBJECTS.taskResult, { kind: 'result', value: { taskId, jobId, workerId: id, ok: true, error: '', resultJson: jsonField({ attempt }),
        tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId }] } });
      stats.completed++;
      log(`task ${taskId}: done`);
    } catch (e) {
      stats.failed++;
      log(`task ${taskId}: failed: ${(e as Error).message}`);
      send(SUBJECTS.taskResult, { kind: 'result', value: { taskId, jobId, workerId: id, ok: false, error: (e as Error).message, resultJson: jsonField({ attempt }), tensors: [] } });
    } finally {
      running = null;
      heartbeat(); // tell the coordinator at once that this worker is free
    }
  };

  const sub = bus.subscribe(taskLeaseSubject(id), msg => {
    const d = decodeEnvelope(msg.data);
    if (!d.ok || d.envelope.body.kind !== 'lease') { stats.malformed++; metrics.malformed.inc({ kind: 'lease' }); log(`dropped a malformed lease message: ${d.ok ? d.envelope.body.kind : d.reason}`); return; }
    const lease = d.envelope.body.value;
    const task = parseJsonField(lease.taskJson, 'task_json');
    if (!task.ok || typeof task.value !== 'object' || task.value === null) { stats.malformed++; metrics.malformed.inc({ kind: 'lease' }); log(`dropped lease ${lease.taskId}: ${task.ok ? 'empty task' : task.reason}`); return; }
    if (running) {
      // the coordinator leases one task per worker; a second one means it lost track of us: refuse, it re-leases
      send(SUBJECTS.taskResult, { kind: 'result', value: { taskId: lease.taskId, jobId: lease.jobId, workerId: id, ok: false,
        error: `worker ${id} is busy with ${running}`, resultJson: jsonField({ attempt: lease.attempt, busy: true }), tensors: [] } });
      return;
    }
    stats.leases++;
    void run(lease.taskId, lease.jobId, lease.attempt, task.value as MemberTask);
  });

  announce();
  heartbeat();
  const timer = setInterval(heartbeat, o.heartbeatMs ?? 1000);
  return {
    id, stats, metrics, dataParallel: dp.stats,
    async stop() {
      clearInterval(timer);
      sub.unsubscribe();
      await dp.stop();
      await bus.flush().catch(() => {});
    },
  };
}
