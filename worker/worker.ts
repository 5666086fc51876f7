// A cluster worker: announces itself, heartbeats, trains the tasks the coordinator leases to it (one at a
// time), reports progress, and sends each result back as a chunked transfer followed by a TaskResult.
import * as os from 'node:os';
import { randomBytes, createHash } from 'node:crypto';
import type { Subscription, Transport } from '../bus/transport.ts';
import {
  SUBJECTS,
  workerHeartbeatSubject,
  taskLeaseSubject,
  taskCancelSubject,
  tensorSubject,
  subjectToken,
} from '../bus/subjects.ts';
import {
  encodeEnvelope,
  parseJsonField,
  jsonField,
  Device,
  DType,
  type TaskLeaseBody,
  type TaskProgressBody,
  type TaskResultBody,
} from '../bus/codec.ts';
import { receive, Rejections } from '../bus/receive.ts';
import { checkId, isId } from '../util/ids.ts';
import { sendChunked } from '../bus/chunking.ts';
import { runMemberTask, type BatchInfo, type MemberResult, type MemberTask } from '../engine/ensemble/tasks.ts';
import { encodeMemberResult } from '../engine/ensemble/result-codec.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';
import { DataParallelWorker, type DataParallelStats, type DataParallelOptions } from './data-parallel.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { meteredTransport } from '../bus/metered-transport.ts';

/** The version a worker announces. */
const FLEET_VERSION = '0.1.0';
/** How often a worker heartbeats, unless the options say otherwise (ms). */
const HEARTBEAT_MS = 1000;
/** A worker announces itself again every this many heartbeats, unless the options say otherwise. */
const ANNOUNCE_EVERY = 5;
/** Per-batch progress events go at most this often, unless the options say otherwise (ms). */
const BATCH_PROGRESS_MS = 500;
/** A task cancel message longer than this is dropped unread (bytes). */
const MAX_CANCEL_BYTES = 1024;

export interface WorkerOptions {
  id?: string;
  runtime: RuntimeOptions;
  /** How often the worker heartbeats (ms, default HEARTBEAT_MS). */
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

/** Starts a cluster worker on `bus`; it runs until stop(). */
export function startWorker(bus: Transport, o: WorkerOptions): WorkerHandle {
  return new ClusterWorker(bus, o);
}

/** The default id: the host name's first label (ids allow no dots in subjects), the pid and a random suffix. */
function defaultWorkerId(): string {
  const label = os.hostname().split('.')[0];
  const host = label.replace(/[^A-Za-z0-9_-]/g, '-').slice(0, 40) || 'worker';
  return `${host}-${process.pid}-${randomBytes(3).toString('hex')}`;
}

/** A task cancel message's JSON object (its fields still unchecked), or why it is none. */
function parseCancel(data: Uint8Array): { ok: true; value: Record<string, unknown> } | { ok: false; reason: string } {
  if (data.length > MAX_CANCEL_BYTES) return { ok: false, reason: 'too large' };
  const parsed = parseJsonField(data, 'cancel');
  if (!parsed.ok) return parsed;
  if (typeof parsed.value !== 'object' || parsed.value === null) return { ok: false, reason: 'not an object' };
  return { ok: true, value: parsed.value as Record<string, unknown> };
}

/** What a task's TaskResult says besides the lease it answers. */
type Outcome = Pick<TaskResultBody, 'ok' | 'error' | 'tensors' | 'resultSha256'>;

/** Thrown from the training callbacks when the task's job was cancelled. */
class TaskCancelled extends Error {
  constructor() {
    super('the job was cancelled');
  }
}

/** A worker's state: its subscriptions, the lease it runs (one at a time) and its data-parallel service. */
class ClusterWorker implements WorkerHandle {
  readonly id: string;
  readonly stats = { leases: 0, completed: 0, failed: 0, malformed: 0, samples: 0, cancelled: 0 };
  readonly metrics: Metrics;
  readonly dataParallel: DataParallelStats;
  /** The bus as this worker uses it, counting messages and bytes in the metrics. */
  private readonly bus: Transport;
  private readonly log: (line: string) => void;
  private readonly rejections: Rejections;
  private readonly dp: DataParallelWorker;
  private readonly subs: Subscription[];
  private readonly timer: ReturnType<typeof setInterval>;
  private readonly started = Date.now();
  private beats = 0;
  /** The lease this worker runs (one at a time), with its token. */
  private running: TaskLeaseBody | null = null;
  /** Set when the coordinator cancelled the running lease's job: training stops at the next batch. */
  private stopRequested: TaskLeaseBody | null = null;

  constructor(
    rawBus: Transport,
    private readonly o: WorkerOptions,
  ) {
    this.metrics = o.metrics ?? createMetrics();
    this.bus = meteredTransport(rawBus, this.metrics);
    this.id = subjectToken(checkId('worker id', o.id ?? defaultWorkerId()));
    this.log = o.log ?? (() => {});
    this.rejections = new Rejections({
      counters: this.metrics,
      log: this.log,
      onReject: () => {
        this.stats.malformed++;
      },
    });
    this.dp = new DataParallelWorker(this.bus, {
      id: this.id,
      runtime: o.runtime,
      log: this.log,
      beforeWork: o.beforeDataParallelWork,
      counters: this.metrics,
    });
    this.dataParallel = this.dp.stats;
    this.subs = this.subscribe();
    this.announce();
    this.heartbeat();
    this.timer = setInterval(() => this.heartbeat(), o.heartbeatMs ?? HEARTBEAT_MS);
  }

  private subscribe(): Subscription[] {
    const onLease = (b: { value: TaskLeaseBody }) => this.onLease(b.value);
    const leases = receive(this.bus, taskLeaseSubject(this.id), ['lease'], this.rejections, onLease, {
      label: 'lease',
    });
    // JSON, not an envelope: only the coordinator may publish here (nats.conf)
    const cancels = this.bus.subscribe(taskCancelSubject(this.id), msg => this.onCancel(msg.data));
    return [leases, cancels];
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    for (const sub of this.subs) sub.unsubscribe();
    await this.dp.stop();
    await this.bus.flush().catch(() => {});
  }

  private send(subject: string, body: Parameters<typeof encodeEnvelope>[0]): void {
    this.bus.publish(subject, encodeEnvelope(body, this.id));
  }

  private announce(): void {
    const { id, o } = this;
    const device = o.runtime.device === 'cuda' ? Device.CUDA : Device.CPU;
    const threads = o.runtime.threads ?? os.availableParallelism();
    const value = { workerId: id, device, threads, version: FLEET_VERSION, gpuName: o.gpuName ?? '' };
    this.send(SUBJECTS.workerAnnounce, { kind: 'announce', value });
  }

  private heartbeat(): void {
    if (++this.beats % (this.o.announceEvery ?? ANNOUNCE_EVERY) === 0) this.announce();
    const r = this.running;
    this.send(workerHeartbeatSubject(this.id), {
      kind: 'heartbeat',
      value: {
        workerId: this.id,
        uptimeMs: Date.now() - this.started,
        runningTaskIds: [...(r ? [`${r.jobId}/${r.taskId}`] : []), ...this.dp.running()],
        samplesProcessed: this.stats.samples,
        running: r ? [{ jobId: r.jobId, taskId: r.taskId, attempt: r.attempt, leaseToken: r.leaseToken }] : [],
      },
    });
  }

  /** A lease from the coordinator: checked, then trained unless this worker is busy. */
  private onLease(lease: TaskLeaseBody): void {
    // ids reach this worker's checkpoint paths and its subjects: checked before anything else
    if (!isId(lease.jobId) || !isId(lease.taskId)) {
      const detail = `job ${JSON.stringify(lease.jobId)}, task ${JSON.stringify(lease.taskId)}`;
      return this.rejections.reject('lease', 'bad_id', detail);
    }
    const task = parseJsonField(lease.taskJson, 'task_json');
    if (!task.ok || typeof task.value !== 'object' || task.value === null) {
      const detail = `lease ${lease.taskId}: ${task.ok ? 'empty task' : task.reason}`;
      return this.rejections.reject('lease', 'malformed', detail);
    }
    if (this.running) {
      // the coordinator leases one task per worker; a second one means it lost track of us: refuse, it re-leases
      const error = `worker ${this.id} is busy with ${this.running.jobId}/${this.running.taskId}`;
      return this.answer(lease, { ok: false, error, tensors: [], resultSha256: new Uint8Array(0) }, { busy: true });
    }
    this.stats.leases++;
    void this.run(lease, { ...(task.value as MemberTask), id: lease.taskId });
  }

  /** A cancelled job's task: the message must name the lease this worker runs, with its attempt and token. */
  private onCancel(data: Uint8Array): void {
    const c = parseCancel(data);
    if (!c.ok) return this.rejections.reject('cancel', 'malformed', c.reason);
    const { jobId, taskId, attempt, leaseToken } = c.value;
    const lease = this.running;
    if (!lease || jobId !== lease.jobId || taskId !== lease.taskId) {
      return this.rejections.reject('cancel', 'not_leased', `${String(jobId)}/${String(taskId)} is not running here`);
    }
    const name = `${lease.jobId}/${lease.taskId}`;
    if (attempt !== lease.attempt) return this.rejections.reject('cancel', 'stale_attempt', name);
    if (typeof leaseToken !== 'string' || leaseToken !== lease.leaseToken) {
      return this.rejections.reject('cancel', 'wrong_token', name);
    }
    this.log(`task ${lease.taskId} of job ${lease.jobId}: the job was cancelled, stopping at the next batch`);
    this.stopRequested = lease;
  }

  /** Trains the lease's task and answers it (unless its job was cancelled); the worker is free again after. */
  private async run(lease: TaskLeaseBody, task: MemberTask): Promise<void> {
    const { taskId, jobId, attempt } = lease;
    this.running = lease;
    this.log(`task ${taskId} of job ${jobId} (attempt ${attempt}): training`);
    try {
      const r = await this.train(lease, task);
      await this.sendResult(lease, r);
      this.stats.completed++;
      this.log(`task ${taskId}: done`);
    } catch (e) {
      if (e instanceof TaskCancelled) {
        // its job is over: no result to send, the worker is free for other work
        this.stats.cancelled++;
        this.log(`task ${taskId} of job ${jobId}: stopped (the job was cancelled)`);
        return;
      }
      this.stats.failed++;
      this.log(`task ${taskId}: failed: ${(e as Error).message}`);
      this.answer(lease, { ok: false, error: (e as Error).message, tensors: [], resultSha256: new Uint8Array(0) });
    } finally {
      this.running = null;
      this.stopRequested = null;
      this.heartbeat(); // tell the coordinator at once that this worker is free
    }
  }

  private train(lease: TaskLeaseBody, task: MemberTask): Promise<MemberResult> {
    const { jobId, taskId } = lease;
    const checkpointDir = this.o.checkpointDir?.(jobId, taskId);
    return runMemberTask({ ...task, dataDir: this.o.dataDir, checkpointDir }, this.o.runtime, {
      onBatch: this.batchObserver(lease, task),
      onEpoch: (_t, m) => {
        this.throwIfCancelled(lease);
        this.progress(lease, { epoch: m.epoch, batch: 0, batches: 0, loss: m.train_loss, metricsJson: jsonField(m) });
      },
      log: line => this.log(line),
    });
  }

  /** The per-batch callback of a task: counts samples, observes step times, sends batch progress now and then. */
  private batchObserver(lease: TaskLeaseBody, task: MemberTask): (taskId: string, b: BatchInfo) => void {
    // step time = the interval between per-batch callbacks (data preparation included); the interval that ends an
    // epoch's first batch also holds the evaluation of the previous epoch, and the task's first one session creation
    let lastBatch = 0,
      lastProgress = 0;
    const model = task.model === 'simclr' ? 'simclr' : 'cnn';
    const every = this.o.batchProgressMs ?? BATCH_PROGRESS_MS;
    return (_t, b) => {
      this.throwIfCancelled(lease);
      const now = performance.now();
      if (b.batch > 1) this.metrics.trainingStep.observe({ model }, (now - lastBatch) / 1000);
      lastBatch = now;
      this.stats.samples += b.images;
      this.metrics.samples.inc({ model }, b.images);
      if (now - lastProgress >= every && b.batch < b.batches) {
        lastProgress = now;
        const metricsJson = jsonField({ event: 'batch', images_per_second: b.imagesPerSecond });
        this.progress(lease, { epoch: b.epoch, batch: b.batch, batches: b.batches, loss: b.loss, metricsJson });
      }
    };
  }

  private throwIfCancelled(lease: TaskLeaseBody): void {
    if (this.stopRequested === lease) throw new TaskCancelled();
  }

  /** Progress goes to the coordinator with the lease token; it republishes it on the job's progress subject. */
  private progress(
    lease: TaskLeaseBody,
    p: Pick<TaskProgressBody, 'epoch' | 'batch' | 'batches' | 'loss' | 'metricsJson'>,
  ) {
    const { taskId, jobId, attempt, leaseToken } = lease;
    this.send(SUBJECTS.taskProgress, { kind: 'progress', value: { taskId, jobId, ...p, attempt, leaseToken } });
  }

  /** Sends the trained result as a chunked transfer, then the TaskResult naming it with its SHA-256. */
  private async sendResult(lease: TaskLeaseBody, r: MemberResult): Promise<void> {
    const transferId = `${lease.taskId}-${lease.attempt}-${randomBytes(8).toString('hex')}`;
    const payload = encodeMemberResult(r);
    await sendChunked(this.bus, tensorSubject(transferId), payload, { transferId, sender: this.id });
    const resultSha256 = createHash('sha256').update(payload).digest();
    this.answer(lease, {
      ok: true,
      error: '',
      tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId }],
      resultSha256,
    });
  }

  /** The TaskResult of a lease, with its attempt and token; `extra` goes into its result JSON. */
  private answer(lease: TaskLeaseBody, outcome: Outcome, extra: object = {}): void {
    const { taskId, jobId, attempt, leaseToken } = lease;
    this.send(SUBJECTS.taskResult, {
      kind: 'result',
      value: {
        taskId,
        jobId,
        workerId: this.id,
        ...outcome,
        resultJson: jsonField({ attempt, ...extra }),
        attempt,
        leaseToken,
      },
    });
  }
}
