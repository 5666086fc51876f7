// The coordinator: keeps the cluster view (workers, jobs, tasks), leases queued tasks to idle workers,
// re-leases the tasks of workers whose heartbeats stop, collects results (chunked transfers), persists job
// state in a StateStore (a directory, or JetStream) so a restarted coordinator resumes, and combines a
// finished ensemble job. Its parts: workers.ts (registry), leases.ts (lease table, tokens), write-queue.ts
// (ordered store writes), job-lifecycle.ts (job ends, outcomes, history; shared with data-parallel-job.ts),
// ensemble-jobs.ts (specs, records, store format, outputs); this class wires them to the bus.
import * as path from 'node:path';
import type { BusMessage, Transport } from '../bus/transport.ts';
import {
  SUBJECTS,
  COORDINATOR_QUEUE,
  taskLeaseSubject,
  taskCancelSubject,
  jobProgressSubject,
} from '../bus/subjects.ts';
import { serveJobsApi } from './jobs-api.ts';
import { encodeEnvelope, parseJsonField, jsonField, type BodyKind, type BodyMap } from '../bus/codec.ts';
import { receive, Rejections, type RejectReason } from '../bus/receive.ts';
import { checkId } from '../util/ids.ts';
import { checkMemberResult, expectedRows } from '../engine/ensemble/result-check.ts';
import * as D from './defaults.ts';
import { Reassembler } from '../bus/chunking.ts';
import { encodeMemberResult, decodeMemberResult } from '../engine/ensemble/result-codec.ts';
import type { MemberResult } from '../engine/ensemble/tasks.ts';
import { DataParallelJobs, isDataParallelSpec, type DataParallelOptions } from './data-parallel-job.ts';
import { DirStateStore, type StateStore } from './state-store.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { meteredTransport } from '../bus/metered-transport.ts';
import { ClusterMonitor } from './monitor.ts';
import { WriteQueue } from './write-queue.ts';
import {
  jobKey,
  jobView,
  newEnsembleJob,
  readJobRecords,
  resultKey,
  writeJobOutputs,
  writeMemberFiles,
  type JobRecord,
  type JobSpec,
} from './ensemble-jobs.ts';
import {
  grantLease,
  leaseExpiry,
  leaseMismatch,
  missedBeat,
  readoptLease,
  refusedAsBusy,
  unlease,
  type TaskRecord,
} from './leases.ts';
import { WorkerRegistry, type WorkerRecord } from './workers.ts';
import { JobEvents, endJob, jobOutcome, publishJobEnd, type JobOutcome } from './job-lifecycle.ts';

export type { JobEvent } from './job-lifecycle.ts';
export { validateJobSpec, type JobSpec, type JobRecord, type JobState } from './ensemble-jobs.ts';

export interface CoordinatorOptions {
  /** Where job records and task results are kept (give this or stateDir). */
  store?: StateStore;
  /** Shorthand for a directory store (what --state DIR gives); job outputs then go to <stateDir>/jobs/<id>/out. */
  stateDir?: string;
  /** Directory for a job's outputs (model.onnx, plots, metrics.json); required unless the store is a directory. */
  outputDir?: (jobId: string) => string;
  /** Where this coordinator reads the data sets whose labels score a finished ensemble (default: the built-in ones). */
  dataDir?: string;
  /** A worker silent for this long is lost and its task re-leased (default 10 s). */
  workerTimeoutMs?: number;
  /** A task that failed on this many attempts fails its job (default 3). */
  maxAttempts?: number;
  tickMs?: number;
  log?: (line: string) => void;
  /** The coordinator's metrics registry (default: a new one), served at /metrics by coordinator/http.ts. */
  metrics?: Metrics;
  /** Data-parallel jobs (coordinator/data-parallel-job.ts): persistence interval, timeouts, test hooks. */
  dataParallel?: DataParallelOptions;
  /** Bounds on chunked transfers (defaults in coordinator/defaults.ts). */
  transfers?: { maxBytesPerSender?: number; maxBytesTotal?: number; idleMs?: number; maxUnclaimedBytes?: number };
  /** Workers tracked at once (default 1000). */
  maxWorkers?: number;
  /** Called once a job's outputs are written to outDir (e.g. to publish its model for serving). */
  onJobDone?: (jobId: string, outDir: string) => void;
  /** False while this coordinator may not act (its leader lease lapsed: coordinator/leader.ts); default always true. */
  leading?: () => boolean;
}

/** A completed transfer whose TaskResult has not arrived yet (subjects are not ordered with each other). */
interface Unclaimed {
  result: MemberResult;
  payload: Uint8Array;
  sha256: string;
  at: number;
}

export class Coordinator {
  readonly workers: Map<string, WorkerRecord>;
  /** Announcements, heartbeats and lost workers (its map is `workers`). */
  private readonly registry: WorkerRegistry;
  readonly jobs = new Map<string, JobRecord>();
  readonly stats = {
    malformed: 0,
    rejected: 0,
    reassemblyFailures: 0,
    leases: 0,
    releases: 0,
    results: 0,
    stateWriteFailures: 0,
  };
  readonly store: StateStore;
  /** Every dropped message, counted by kind and reason (also in fleet_bus_rejected_total). */
  readonly rejections: Rejections;
  private readonly subs: { unsubscribe(): void }[] = [];
  /** Completed transfers waiting for their TaskResult, by sender and transfer id. */
  private readonly unclaimed = new Map<string, Unclaimed>();
  private unclaimedBytes = 0;
  readonly reassembler: Reassembler;
  private timer?: NodeJS.Timeout;
  private readonly log: (line: string) => void;
  readonly dataParallel: DataParallelJobs;
  readonly bus: Transport;
  readonly metrics: Metrics;
  /** Live view for /metrics and the dashboard (curves, progress, events); exists once started. */
  monitor?: ClusterMonitor;
  private readonly outputDir: (jobId: string) => string;
  private loaded?: Promise<void>;
  /** Store writes, in the order they were made (a job record never overtakes the result it refers to). */
  private readonly writes: WriteQueue;
  /** Tasks whose result is being written to the store (a duplicate result meanwhile is ignored). */
  private readonly storing = new Set<TaskRecord>();
  /** Results stored during this run, by store key, so that combining a job need not read them back. */
  private readonly stored = new Map<string, MemberResult>();
  /** Probability rows a member result of each job must have (from the job's data sets, computed once). */
  private readonly rows = new Map<string, { val: number; test: number }>();
  /** Fair scheduling: the job that got the last lease (the next one goes to the job after it). */
  private lastLeasedJob = '';
  private lastTick = Date.now();
  /** Each job's recent events (bounded per job, and in the number of jobs kept), for `fleet jobs logs`. */
  private readonly events = new JobEvents();

  constructor(
    bus: Transport,
    readonly o: CoordinatorOptions,
  ) {
    this.log = o.log ?? (() => {});
    if (!o.store === !o.stateDir) throw new Error('coordinator: give a state store or a state directory (one of them)');
    this.store = o.store ?? new DirStateStore(o.stateDir!);
    const dir = this.store instanceof DirStateStore ? this.store.dir : null;
    if (!o.outputDir && !dir)
      throw new Error(`coordinator: state in ${this.store.description} needs a directory for job outputs`);
    this.outputDir = o.outputDir ?? (id => path.join(dir!, 'jobs', id, 'out'));
    this.metrics = o.metrics ?? createMetrics();
    this.writes = new WriteQueue(this.store, this.log, () => {
      this.stats.stateWriteFailures++;
      this.metrics.stateWriteFailures.inc();
    });
    this.bus = meteredTransport(bus, this.metrics);
    this.rejections = new Rejections({
      counters: this.metrics,
      log: this.log,
      onReject: reason => {
        this.stats.rejected++;
        if (reason === 'malformed' || reason === 'wrong_kind') this.stats.malformed++;
      },
    });
    this.registry = new WorkerRegistry({
      rejections: this.rejections,
      log: this.log,
      maxWorkers: o.maxWorkers ?? D.MAX_WORKERS,
    });
    this.workers = this.registry.map;
    this.dataParallel = new DataParallelJobs(
      {
        bus: this.bus,
        workers: this.workers,
        busyWithEnsemble: id => this.leasedTo(id).length > 0,
        store: this.store,
        write: (key, data) => this.write(key, data),
        outDir: id => this.outDir(id),
        log: this.log,
        metrics: this.metrics,
      },
      o.dataParallel,
    );
    this.reassembler = this.newReassembler(o.transfers ?? {});
  }

  /** Reassembles the workers' result transfers (bounded); a complete one goes to onTransfer. */
  private newReassembler(t: NonNullable<CoordinatorOptions['transfers']>): Reassembler {
    return new Reassembler({
      maxBytesPerSender: t.maxBytesPerSender ?? D.TRANSFER_BYTES_PER_SENDER,
      maxBytesTotal: t.maxBytesTotal ?? D.TRANSFER_BYTES_TOTAL,
      timeoutMs: t.idleMs ?? D.TRANSFER_IDLE_MS,
      onComplete: (transferId, payload, info) => this.onTransfer(transferId, payload, info.sender, info.sha256),
      onError: (transferId, reason, kind) => {
        if (kind === 'over_capacity')
          return this.rejections.reject('chunk', 'over_capacity', `transfer ${transferId}: ${reason}`);
        this.stats.reassemblyFailures++;
        this.metrics.reassemblyFailures.inc();
        this.rejections.reject('chunk', 'bad_transfer', `transfer ${transferId} failed: ${reason}`);
      },
    });
  }

  /** Reads the ensemble jobs of the store (start() does it first too; call it to look at them before starting). */
  load(): Promise<void> {
    return (this.loaded ??= this.loadJobs());
  }

  /** Restores the jobs of the store (ensemble-jobs.ts readJobRecords). */
  private async loadJobs() {
    for (const job of await readJobRecords(this.store, this.log)) {
      this.jobs.set(job.id, job);
      const done = job.tasks.filter(t => t.state === 'done').length;
      if (job.state === 'running') this.log(`job ${job.id}: resumed (${done}/${job.tasks.length} tasks done)`);
    }
  }

  /** Loads the jobs, then starts listening; resolves once persisted data-parallel jobs are loaded too. */
  async start(): Promise<void> {
    await this.load(); // before listening: a result for a job not loaded yet would be dropped
    this.listen();
    this.timer = setInterval(() => this.tick(), this.o.tickMs ?? D.TICK_MS);
    this.monitor = new ClusterMonitor(this);
    this.monitor.start();
    this.tick();
    // a job whose last result was stored just before a crash has nothing left to lease: combine it now
    for (const job of this.jobs.values())
      if (job.state === 'running' && job.tasks.every(t => t.state === 'done')) void this.complete(job);
    for (const job of this.jobs.values()) if (job.state === 'running') this.warm(job);
    await this.dataParallel.start();
    this.tick();
  }

  /** Subscribes to the workers' messages, job submissions, outcome questions and the operators' jobs API. */
  private listen() {
    // every message is decoded and checked (bus/receive.ts); a malformed one, or one of the wrong kind, is counted and dropped
    const on = <K extends BodyKind>(subject: string, kind: K, handle: (body: BodyMap[K], sender: string) => void) =>
      this.subs.push(
        receive(this.bus, subject, [kind], this.rejections, (b, env) => handle(b.value as BodyMap[K], env.sender)),
      );
    on(SUBJECTS.workerAnnounce, 'announce', (a, sender) => this.onAnnounce(a, sender));
    on(SUBJECTS.workerHeartbeatAll, 'heartbeat', (h, sender) => this.onHeartbeat(h, sender));
    on(SUBJECTS.taskResult, 'result', (r, sender) => this.onResult(r, sender));
    on(SUBJECTS.taskProgress, 'progress', (p, sender) => this.onProgress(p, sender));
    this.subs.push(
      receive(this.bus, `${SUBJECTS.tensorPrefix}.>`, ['chunk'], this.rejections, (b, env) =>
        this.reassembler.accept(b.value, env.sender),
      ),
    );
    this.subs.push(this.bus.subscribe(SUBJECTS.jobSubmit, msg => this.onSubmit(msg), { queue: COORDINATOR_QUEUE }));
    // the submitter asks the coordinator that owns a job for its outcome; the others stay silent
    this.subs.push(
      this.bus.subscribe(`${SUBJECTS.jobResultPrefix}.*`, msg => {
        if (!this.leads()) return;
        const outcome = this.outcome(msg.subject.slice(SUBJECTS.jobResultPrefix.length + 1));
        if (outcome && msg.reply) this.bus.respond(msg, jsonField(outcome));
      }),
    );
    this.subs.push(...serveJobsApi(this));
  }

  /** A client's job spec (untrusted JSON): an ensemble or a data-parallel job; answered with its id or the error. */
  private async onSubmit(msg: BusMessage) {
    let answer: object;
    // a coordinator whose leader lease lapsed takes no job and leases nothing until it is renewed (another one may
    // lead by then); worker messages still count (its store writes are refused meanwhile: coordinator/leader.ts)
    if (!this.leads()) answer = { ok: false, error: 'this coordinator does not hold the leader lease now: try again' };
    else
      try {
        const spec = JSON.parse(new TextDecoder().decode(msg.data));
        answer = {
          ok: true,
          jobId: isDataParallelSpec(spec) ? this.dataParallel.submit(spec).id : this.submit(spec).id,
        };
        await this.persisted(); // an ensemble job is in the store before the client hears of it
      } catch (e) {
        this.rejections.reject('submit', 'malformed', (e as Error).message);
        answer = { ok: false, error: (e as Error).message };
      }
    if (msg.reply) this.bus.respond(msg, jsonField(answer));
  }

  async stop(): Promise<void> {
    clearInterval(this.timer);
    this.monitor?.stop();
    for (const s of this.subs) s.unsubscribe();
    await this.dataParallel.stop();
    await this.persisted();
    await this.bus.flush().catch(() => {});
  }

  /** Resolves when every store write made so far (ensemble and data-parallel jobs) has finished (or failed, logged and counted). */
  async persisted(): Promise<void> {
    await this.writes.settled();
  }

  private leads(): boolean {
    return this.o.leading?.() ?? true;
  }

  /** A job's state as the submitter sees it (null for a job this coordinator does not own). */
  outcome(jobId: string): JobOutcome | null {
    const j = this.jobs.get(jobId) ?? this.dataParallel.view().find(x => x.id === jobId);
    return j ? jobOutcome(j) : null;
  }

  /**
   * Cancels a running ensemble job: the job record says cancelled (persisted), its queued tasks are dropped, and
   * each lease holder is told to stop (the message names the lease and its token; the worker checks them).
   */
  cancel(jobId: string, by: string): { ok: true; state: 'cancelled' } | { ok: false; error: string } {
    const job = this.jobs.get(jobId);
    if (!job) {
      const dp = this.dataParallel.view().find(x => x.id === jobId);
      return {
        ok: false,
        error: dp ? `job ${jobId} is data-parallel: cancelling it is not supported` : `no such job: ${jobId}`,
      };
    }
    if (job.state === 'cancelled') return { ok: true, state: 'cancelled' };
    if (job.state !== 'running') return { ok: false, error: `job ${jobId} is already ${job.state}` };
    endJob(job, 'cancelled', `cancelled by ${by}`);
    for (const t of job.tasks) {
      if (t.state === 'leased' && t.worker && t.token) {
        this.bus.publish(
          taskCancelSubject(t.worker),
          jsonField({ jobId, taskId: t.task.id, attempt: t.attempts, leaseToken: t.token }),
        );
        this.jobEvent(jobId, `${t.task.id}: stop sent to ${t.worker}`);
      }
      if (t.state === 'queued' || t.state === 'leased') t.state = 'cancelled';
      this.stored.delete(resultKey(job.id, t.task.id));
    }
    this.rows.delete(job.id);
    this.save(job);
    this.log(`job ${jobId}: cancelled by ${by}`);
    this.jobEvent(jobId, `cancelled by ${by}`);
    publishJobEnd(this.bus, job);
    return { ok: true, state: 'cancelled' };
  }

  /** Adds a line to a job's history (the oldest lines, and the oldest jobs' histories, go first). */
  jobEvent(jobId: string, text: string): void {
    this.events.add(jobId, text);
  }

  /** A job's recent events (empty for a job this coordinator saw nothing of since it started). */
  jobEvents(jobId: string) {
    return this.events.of(jobId);
  }

  /** Validates a submitted spec (untrusted JSON) and queues its tasks; throws naming the first bad field. */
  submit(spec: JobSpec): JobRecord {
    const job = newEnsembleJob(spec);
    const { id, tasks } = job;
    this.jobs.set(id, job);
    this.save(job);
    this.log(`job ${id}: ${spec.kind} ensemble of ${spec.members}, ${tasks.length} task(s)`);
    this.jobEvent(
      id,
      `submitted: ${spec.model ?? 'cnn'} ${spec.kind} ensemble of ${spec.members}, ${spec.epochs} epoch(s), ${tasks.length} task(s)`,
    );
    this.tick();
    this.warm(job);
    return job;
  }

  /** The cluster view served at /api/cluster. */
  clusterView() {
    const now = Date.now();
    return {
      workers: [...this.workers.values()].map(w => ({ ...w, heartbeatAgeMs: now - w.lastSeen })),
      tasks: [...this.jobs.values()].flatMap(j =>
        j.tasks.map(t => ({ job: j.id, task: t.task.id, state: t.state, worker: t.worker, attempts: t.attempts })),
      ),
      stats: this.stats,
      rejections: Object.fromEntries(this.rejections.counts),
    };
  }

  /** The jobs served at /api/jobs. */
  jobsView() {
    return [...this.jobs.values()].map(j => jobView(j)).concat(this.dataParallel.view());
  }

  /** One job as /api/jobs/<id> and `fleet jobs status` show it (null when this coordinator does not own it). */
  jobStatus(jobId: string): Record<string, unknown> | null {
    const j = this.jobs.get(jobId);
    if (j) {
      const tasks = j.tasks.map(t => ({ task: t.task.id, state: t.state, worker: t.worker, attempts: t.attempts }));
      return {
        ...jobView(j),
        epochs: j.spec?.epochs,
        model: j.spec?.model ?? 'cnn',
        progress: this.monitor?.progressOf(j.id),
        taskStates: tasks,
      };
    }
    return this.dataParallel.view().find(x => x.id === jobId) ?? null;
  }

  private onAnnounce(a: BodyMap['announce'], sender: string) {
    if (this.registry.announce(a, sender)) this.tick();
  }

  /** The task (job, task id) of a running job, if there is one. */
  private taskOf(jobId: string, taskId: string): { job: JobRecord; t: TaskRecord } | null {
    const job = this.jobs.get(jobId);
    const t = job?.tasks.find(x => x.task.id === taskId);
    return job && t ? { job, t } : null;
  }

  private onHeartbeat(h: BodyMap['heartbeat'], sender: string) {
    const now = Date.now();
    const w = this.registry.heartbeat(h, sender, now);
    if (!w) return;
    // a lease stays alive only while its worker's heartbeats list it with its token; after a coordinator restart,
    // a worker still training a requeued task keeps it (the token was persisted with the job)
    const claimed = new Set<TaskRecord>();
    for (const c of h.running ?? []) {
      const found = this.taskOf(c.jobId, c.taskId);
      if (!found || found.job.state !== 'running') continue;
      const { job, t } = found;
      if (c.attempt !== t.attempts) {
        this.rejections.reject('heartbeat', 'stale_attempt', `${w.id}: ${job.id}/${t.task.id} attempt ${c.attempt}`);
        continue;
      }
      if (c.leaseToken !== t.token) {
        this.rejections.reject('heartbeat', 'wrong_token', `${w.id}: ${job.id}/${t.task.id}`);
        continue;
      }
      if (t.state === 'queued') this.readopt(job, t, w.id);
      if (t.state === 'leased' && t.worker === w.id) {
        t.confirmedAt = now;
        t.missed = 0;
        claimed.add(t);
      }
    }
    // busy only while it runs one of our leases (a lease in flight counts as busy too), or data-parallel work
    const leased = this.leasedTo(w.id);
    w.state =
      h.runningTaskIds.length || claimed.size || leased.some(t => now - (t.leasedAt ?? 0) < D.LEASE_IN_FLIGHT_MS)
        ? 'busy'
        : 'idle';
    // a lease the worker has not listed for a while (lost message, or the worker restarted) goes back to the queue
    // (several heartbeats in a row: one sent before the lease arrived may be read late, after a stall)
    for (const t of leased) {
      if (claimed.has(t) || t.transferId) continue;
      if (missedBeat(t, now)) this.requeue(t, `worker ${w.id} is not running it`);
    }
    this.tick();
  }

  /** A worker's progress: counted and passed on (to the job's progress subject and the monitor) only from the lease holder. */
  private onProgress(p: BodyMap['progress'], sender: string) {
    const bad = this.leaseCheck(p.jobId, p.taskId, sender, p.attempt, p.leaseToken);
    if (bad) return this.rejections.reject('progress', bad.reason, bad.detail);
    const checked = { ...p, attempt: undefined, leaseToken: undefined };
    if (p.batches === 0) this.jobEvent(p.jobId, `${p.taskId}: epoch ${p.epoch} done, train loss ${p.loss.toFixed(4)}`);
    this.monitor?.onProgress(checked);
    this.bus.publish(jobProgressSubject(p.jobId), encodeEnvelope({ kind: 'progress', value: checked }, 'coordinator'));
  }

  /**
   * A queued task whose last lease's holder shows it still runs that lease (its token): it keeps it. This is
   * how a worker silent for a while (a long synchronous step), or one still training across a coordinator
   * restart, keeps its task instead of training it twice.
   */
  private readopt(job: JobRecord, t: TaskRecord, workerId: string) {
    readoptLease(t, workerId);
    this.log(`job ${job.id}: ${t.task.id} is running on ${workerId} (attempt ${t.attempts})`);
  }

  /** Why a message about (job, task) from `sender` does not come from the current lease holder, or null when it does. */
  private leaseCheck(
    jobId: string,
    taskId: string,
    sender: string,
    attempt: number | undefined,
    token: string | undefined,
  ): { reason: RejectReason; detail: string; job?: JobRecord; t?: TaskRecord } | null {
    const what = `${jobId}/${taskId} from ${sender}`;
    const job = this.jobs.get(jobId);
    if (!job) return { reason: 'unknown_job', detail: what };
    const t = job.tasks.find(x => x.task.id === taskId);
    if (!t) return { reason: 'unknown_task', detail: what };
    if (job.state !== 'running' || t.state === 'done' || this.storing.has(t))
      return { reason: 'duplicate', detail: `${what}: already finished` };
    if (t.state === 'queued' && token && token === t.token && attempt === t.attempts) this.readopt(job, t, sender);
    return leaseMismatch(t, sender, attempt, token, what);
  }

  private onResult(r: BodyMap['result'], sender: string) {
    this.stats.results++;
    if (sender !== r.workerId)
      return this.rejections.reject('result', 'wrong_sender', `${sender} sent a result as ${r.workerId}`);
    const bad = this.leaseCheck(r.jobId, r.taskId, r.workerId, r.attempt, r.leaseToken);
    if (bad) return this.rejections.reject('result', bad.reason, bad.detail);
    const job = this.jobs.get(r.jobId)!,
      t = job.tasks.find(x => x.task.id === r.taskId)!;
    if (t.transferId)
      return this.rejections.reject('result', 'duplicate', `${job.id}/${t.task.id}: a result is already arriving`);
    const w = this.workers.get(r.workerId);
    if (!r.ok) {
      const busy = parseJsonField(r.resultJson, 'result_json');
      if (busy.ok && (busy.value as { busy?: boolean } | null)?.busy) {
        // not a failure of the task: the worker still runs something else (e.g. from before a coordinator restart);
        // the lease before this one, if it only lapsed, is the current one again (its holder may still reclaim it)
        refusedAsBusy(t);
        if (w) w.state = 'busy';
        this.requeue(t, r.error, false, true);
        return;
      }
      if (w) {
        w.running = [];
        w.state = 'idle';
      }
      return this.failAttempt(job, t, r.error);
    }
    const ref = r.tensors.find(x => x.name === 'result');
    if (!ref) return this.rejections.reject('result', 'malformed', `${job.id}/${t.task.id}: no result tensor`);
    if (w) {
      w.running = [];
      w.state = 'idle';
    }
    t.transferId = ref.transferId;
    t.resultSha256 = Buffer.from(r.resultSha256).toString('hex');
    t.resultAt = Date.now();
    const key = unclaimedKey(r.workerId, ref.transferId);
    const ready = this.unclaimed.get(key);
    if (ready) {
      this.dropUnclaimed(key);
      this.claim(job, t, ready);
    } else this.save(job); // the chunks may still be arriving
    this.tick(); // the worker is idle: its next lease goes now, not at its next heartbeat or timer tick
  }

  /** An attempt that ended without a usable result: the task goes back to the queue, or its job fails after maxAttempts. */
  private failAttempt(job: JobRecord, t: TaskRecord, error: string) {
    t.error = error;
    if (t.attempts >= (this.o.maxAttempts ?? D.MAX_ATTEMPTS))
      this.fail(job, `task ${t.task.id} failed on ${t.attempts} attempts: ${error}`);
    else {
      this.metrics.taskRetries.inc();
      this.requeue(t, error, false);
    }
  }

  private onTransfer(transferId: string, payload: Uint8Array, sender: string, sha256: Uint8Array) {
    let result: MemberResult;
    try {
      result = decodeMemberResult(payload, `transfer ${transferId}`);
    } catch (e) {
      this.stats.reassemblyFailures++;
      this.metrics.reassemblyFailures.inc();
      return this.rejections.reject('result', 'malformed', (e as Error).message);
    }
    const got: Unclaimed = { result, payload, sha256: Buffer.from(sha256).toString('hex'), at: Date.now() };
    for (const job of this.jobs.values()) {
      if (job.state !== 'running') continue;
      const t = job.tasks.find(x => x.transferId === transferId && x.state === 'leased' && x.worker === sender);
      if (t) {
        if (!this.storing.has(t)) this.claim(job, t, got);
        return;
      }
    }
    // the TaskResult has not arrived yet: kept a while, within a byte budget (oldest dropped first)
    const key = unclaimedKey(sender, transferId);
    this.dropUnclaimed(key);
    this.unclaimed.set(key, got);
    this.unclaimedBytes += payload.length;
    while (this.unclaimedBytes > (this.o.transfers?.maxUnclaimedBytes ?? D.UNCLAIMED_TRANSFER_BYTES)) {
      const oldest = this.unclaimed.keys().next().value!;
      this.dropUnclaimed(oldest);
      this.rejections.reject(
        'result',
        'over_capacity',
        `transfer ${oldest.replace('\u0000', '/')} dropped: no result claimed it`,
      );
    }
  }

  private dropUnclaimed(key: string) {
    const u = this.unclaimed.get(key);
    if (!u) return;
    this.unclaimed.delete(key);
    this.unclaimedBytes -= u.payload.length;
  }

  /** The lease holder's result transfer: it must be the one its TaskResult named and fit the job, or the attempt failed. */
  private claim(job: JobRecord, t: TaskRecord, got: Unclaimed) {
    if (got.sha256 !== t.resultSha256) {
      // another transfer under the same id: wait for the right one (or the transfer deadline)
      return this.rejections.reject(
        'result',
        'bad_transfer',
        `${job.id}/${t.task.id}: transfer ${t.transferId} is not the payload its result named`,
      );
    }
    let rows: { val: number; test: number };
    try {
      rows = this.rowsOf(job);
    } catch (e) {
      return this.fail(job, `reading the data sets that check its results failed: ${(e as Error).message}`);
    }
    const mismatch = checkMemberResult(t.task, got.result, rows);
    if (mismatch) {
      this.rejections.reject('result', 'spec_mismatch', `${job.id}/${t.task.id} from ${t.worker}: ${mismatch}`);
      return this.failAttempt(job, t, `its result does not fit the job: ${mismatch}`);
    }
    void this.finishTask(job, t, got.result, got.payload);
  }

  /** The probability rows of the job's members (loading its data sets once: done soon after submission, not mid-job). */
  private rowsOf(job: JobRecord): { val: number; test: number } {
    let rows = this.rows.get(job.id);
    if (!rows) this.rows.set(job.id, (rows = expectedRows({ ...job.spec, dataDir: this.o.dataDir })));
    return rows;
  }

  /** Loads the data sets a running job's results are checked against, off the path of its first result. */
  private warm(job: JobRecord) {
    setImmediate(() => {
      if (job.state !== 'running') return;
      try {
        this.rowsOf(job);
      } catch (e) {
        this.log(`job ${job.id}: its data sets cannot be read: ${(e as Error).message}`);
      }
    });
  }

  /** A task is done only once its result is in the store; then the job record says so. */
  private async finishTask(job: JobRecord, t: TaskRecord, result: MemberResult, payload?: Uint8Array) {
    this.storing.add(t);
    const stored = await this.write(resultKey(job.id, t.task.id), payload ?? encodeMemberResult(result));
    this.storing.delete(t);
    if (job.state !== 'running' || t.state === 'done') return;
    if (!stored) {
      this.requeue(t, 'its result could not be stored');
      this.save(job);
      return;
    }
    t.state = 'done';
    this.stored.set(resultKey(job.id, t.task.id), result);
    this.save(job);
    const count = `${job.tasks.filter(x => x.state === 'done').length}/${job.tasks.length}`;
    this.log(`job ${job.id}: ${t.task.id} done (${count})`);
    this.jobEvent(job.id, `${t.task.id}: done (${count})`);
    if (job.tasks.every(x => x.state === 'done')) await this.complete(job);
    else {
      try {
        writeMemberFiles(job, result, this.outDir(job.id));
      } catch (e) {
        this.log(`job ${job.id}: writing ${t.task.id}'s model failed (retried at the end): ${(e as Error).message}`);
      }
    }
  }

  /** Every task's result: kept from this run, or read back from the store (stored before a restart). */
  private async memberResults(job: JobRecord): Promise<MemberResult[]> {
    const results: MemberResult[] = [];
    for (const t of job.tasks) {
      const key = resultKey(job.id, t.task.id);
      const kept = this.stored.get(key);
      this.stored.delete(key);
      if (kept) {
        results.push(kept);
        continue;
      }
      const bytes = await this.store.get(key);
      if (!bytes) throw new Error(`${this.store.description}: ${key} is missing`);
      results.push(decodeMemberResult(bytes, `${this.store.description}: ${key}`));
    }
    return results;
  }

  /** Every task is done: the members are combined, the outputs written, and the job is done. */
  private async complete(job: JobRecord) {
    try {
      const results = await this.memberResults(job);
      if (job.state !== 'running') return;
      const out = this.outDir(job.id);
      const summary = await writeJobOutputs(job, results, out, this.o.dataDir);
      if (job.state !== 'running') return; // cancelled while its outputs were written
      endJob(job, 'done', { ...summary, out });
      this.rows.delete(job.id);
      this.save(job);
      this.log(`job ${job.id}: finished, test accuracy ${summary.test_accuracy}`);
      this.jobEvent(job.id, `finished: test accuracy ${summary.test_accuracy}`);
      try {
        this.o.onJobDone?.(job.id, out);
      } catch (e) {
        this.log(`job ${job.id}: onJobDone failed: ${(e as Error).message}`);
      }
      publishJobEnd(this.bus, job);
    } catch (e) {
      this.fail(job, `combining the members failed: ${(e as Error).message}`);
    }
  }

  private fail(job: JobRecord, error: string) {
    for (const t of job.tasks) this.stored.delete(resultKey(job.id, t.task.id));
    this.rows.delete(job.id);
    endJob(job, 'failed', error);
    this.save(job);
    this.log(`job ${job.id}: failed: ${error}`);
    this.jobEvent(job.id, `failed: ${error}`);
    publishJobEnd(this.bus, job);
  }

  /** Back to the queue; a lease that only lapsed (no word from its worker) keeps its token, so its holder can reclaim it. */
  private requeue(t: TaskRecord, why: string, countsAsRelease = true, lapsed = false) {
    this.log(`task ${t.task.id}: back in the queue (${why})`);
    if (countsAsRelease) {
      this.stats.releases++;
      this.metrics.taskRetries.inc();
    }
    unlease(t, lapsed);
  }

  /** The tasks a worker is training for us (not those whose result it sent and that are being stored). */
  private leasedTo(workerId: string): TaskRecord[] {
    return [...this.jobs.values()]
      .filter(j => j.state === 'running')
      .flatMap(j => j.tasks.filter(t => t.state === 'leased' && t.worker === workerId && !this.storing.has(t)));
  }

  /** Expires leases and lost workers, and leases queued tasks to idle workers, taking the jobs in turn. */
  private tick() {
    if (!this.leads()) return; // no lease expires, nothing is leased, until the leader lease is renewed
    const now = Date.now(),
      timeout = this.o.workerTimeoutMs ?? D.WORKER_TIMEOUT_MS;
    // partial transfers and results nobody claimed are dropped after a while (a worker died while sending)
    this.reassembler.sweep(now);
    for (const [key, u] of this.unclaimed) if (now - u.at > D.UNCLAIMED_TRANSFER_MS) this.dropUnclaimed(key);
    this.registry.prune(now, timeout);
    // after this process stalled (a long synchronous step), heartbeats that did arrive wait behind this timer:
    // no lease expires on this tick
    const stalled = now - this.lastTick > Math.max(1000, 4 * (this.o.tickMs ?? D.TICK_MS));
    this.lastTick = now;
    for (const job of stalled ? [] : this.jobs.values()) {
      if (job.state !== 'running') continue;
      for (const t of job.tasks) {
        if (t.state !== 'leased' || this.storing.has(t)) continue;
        const expired = leaseExpiry(t, now, timeout);
        if (expired) this.requeue(t, expired.why, true, expired.lapsed);
      }
    }
    this.registry.exportInfo(this.metrics);
    this.dataParallel.tick(now);
    this.leaseQueued(now, timeout);
  }

  /**
   * Fair scheduling: each idle worker gets the first queued task of the next job, in submission order, after
   * the job that got the previous lease (round-robin over the jobs with queued tasks). A job submitted after a
   * large one therefore gets the next free worker, not the one after all of the large job's tasks.
   */
  private leaseQueued(now: number, timeout: number) {
    const idle = this.registry.idle(now, timeout);
    if (!idle.length) return;
    const running = [...this.jobs.values()]
      .filter(j => j.state === 'running')
      .sort((a, b) => a.submittedAt - b.submittedAt || (a.id < b.id ? -1 : 1));
    let i = Math.max(0, running.findIndex(j => j.id === this.lastLeasedJob) + 1);
    for (const w of idle) {
      let leased = false;
      for (let k = 0; k < running.length && !leased; k++) {
        const job = running[(i + k) % running.length];
        const t = job.tasks.find(x => x.state === 'queued');
        if (!t) continue;
        this.lease(job, t, w, now, timeout);
        this.lastLeasedJob = job.id;
        i = (i + k + 1) % running.length;
        leased = true;
      }
      if (!leased) return;
    }
  }

  private lease(job: JobRecord, t: TaskRecord, w: WorkerRecord, now: number, timeout: number) {
    const token = grantLease(t, w.id, now);
    w.state = 'busy';
    this.stats.leases++;
    this.save(job);
    this.log(`job ${job.id}: ${t.task.id} leased to ${w.id} (attempt ${t.attempts})`);
    this.jobEvent(job.id, `${t.task.id}: leased to ${w.id} (attempt ${t.attempts})`);
    this.bus.publish(
      taskLeaseSubject(w.id),
      encodeEnvelope(
        {
          kind: 'lease',
          value: {
            taskId: t.task.id,
            jobId: job.id,
            attempt: t.attempts,
            leaseMs: timeout,
            taskJson: jsonField(t.task),
            leaseToken: token,
          },
        },
        'coordinator',
      ),
    );
    const leased: BodyMap['progress'] = {
      taskId: t.task.id,
      jobId: job.id,
      epoch: 0,
      batch: 0,
      batches: 0,
      loss: 0,
      metricsJson: jsonField({ event: 'leased', worker: w.id, attempt: t.attempts }),
    };
    this.monitor?.onProgress(leased);
    this.bus.publish(jobProgressSubject(job.id), encodeEnvelope({ kind: 'progress', value: leased }, 'coordinator'));
  }

  outDir(jobId: string) {
    return this.outputDir(checkId('job id', jobId));
  }

  /** Queues a write behind the earlier ones; retried a few times (a store on NATS can be briefly unreachable). */
  private write(key: string, data: Uint8Array | string): Promise<boolean> {
    return this.writes.write(key, data);
  }

  /** Writes the job record as it is now (the snapshot is taken at once, the write happens in order). */
  private save(job: JobRecord): void {
    void this.write(jobKey(job.id), JSON.stringify(job, null, 2));
  }
}

const unclaimedKey = (sender: string, transferId: string) => `${sender}\u0000${transferId}`;
