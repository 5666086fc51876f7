// The coordinator: keeps the cluster view (workers, jobs, tasks), leases queued tasks to idle workers,
// re-leases the tasks of workers whose heartbeats stop, collects results (chunked transfers), persists job
// state in a StateStore (a directory, or JetStream) so a restarted coordinator resumes, and combines a
// finished ensemble job.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, taskLeaseSubject, jobProgressSubject, jobDoneSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, parseJsonField, jsonField, Device, type BodyKind, type BodyMap } from '../bus/codec.ts';
import { Reassembler } from '../bus/chunking.ts';
import { ensembleTasks, combineEnsemble, checkEnsemble, ENSEMBLE_KINDS, type EnsembleOptions } from '../engine/ensemble/train-ensemble.ts';
import { DATASETS } from '../engine/data/datasets.ts';
import { ensembleOutputs, memberFiles, memberModelPath } from '../engine/ensemble/outputs.ts';
import { encodeMemberResult, decodeMemberResult } from '../engine/ensemble/result-codec.ts';
import type { MemberTask, MemberResult } from '../engine/ensemble/tasks.ts';
import { writeFileAtomic, writeFileAtomicAsync } from '../engine/util/atomic.ts';
import { DataParallelJobs, isDataParallelSpec, type DataParallelOptions } from './data-parallel-job.ts';
import { DirStateStore, type StateStore } from './state-store.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { meteredTransport } from '../bus/metered-transport.ts';
import { ClusterMonitor } from './monitor.ts';
import { specChecker } from '../engine/util/spec-check.ts';


/** What a client submits: the ensemble to train (runtime settings are the workers'). */
export type JobSpec = Omit<EnsembleOptions, 'runtime' | 'workers' | 'out' | 'onBatch' | 'onEpoch' | 'log'>;

type TaskState = 'queued' | 'leased' | 'done' | 'failed';
interface TaskRecord { task: MemberTask; state: TaskState; attempts: number; worker?: string; leasedAt?: number; error?: string; transferId?: string }
export interface JobRecord {
  id: string; spec: JobSpec; state: 'running' | 'done' | 'failed'; submittedAt: number; finishedAt?: number;
  tasks: TaskRecord[]; error?: string; summary?: Record<string, unknown>;
}
interface WorkerRecord {
  id: string; device: 'cpu' | 'cuda'; gpu: string; threads: number; version: string; lastSeen: number; running: string[]; state: 'idle' | 'busy' | 'lost';
  /** Training images the worker reports having processed (from its heartbeats). */
  samplesProcessed?: number;
}

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
  /** Called once a job's outputs are written to outDir (e.g. to publish its model for serving). */
  onJobDone?: (jobId: string, outDir: string) => void;
}

export class Coordinator {
  readonly workers = new Map<string, WorkerRecord>();
  readonly jobs = new Map<string, JobRecord>();
  readonly stats = { malformed: 0, reassemblyFailures: 0, leases: 0, releases: 0, results: 0, stateWriteFailures: 0 };
  readonly store: StateStore;
  private readonly subs: { unsubscribe(): void }[] = [];
  /** Results whose TaskResult message has not arrived yet, with the time they completed. */
  private readonly pending = new Map<string, { result: MemberResult; at: number }>();
  private readonly reassembler: Reassembler;
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
  private writes: Promise<unknown> = Promise.resolve();
  /** Tasks whose result is being written to the store (a duplicate result meanwhile is ignored). */
  private readonly storing = new Set<TaskRecord>();
  /** Results stored during this run, by store key, so that combining a job need not read them back. */
  private readonly stored = new Map<string, MemberResult>();

  constructor(bus: Transport, readonly o: CoordinatorOptions) {
    this.log = o.log ?? (() => {});
    if (!o.store === !o.stateDir) throw new Error('coordinator: give a state store or a state directory (one of them)');
    this.store = o.store ?? new DirStateStore(o.stateDir!);
    const dir = this.store instanceof DirStateStore ? this.store.dir : null;
    if (!o.outputDir && !dir) throw new Error(`coordinator: state in ${this.store.description} needs a directory for job outputs`);
    this.outputDir = o.outputDir ?? (id => path.join(dir!, 'jobs', id, 'out'));
    this.metrics = o.metrics ?? createMetrics();
    this.bus = meteredTransport(bus, this.metrics);
    this.dataParallel = new DataParallelJobs({
      bus: this.bus, workers: this.workers, busyWithEnsemble: id => this.leasedTo(id).length > 0, store: this.store,
      write: (key, data) => this.write(key, data), outDir: id => this.outDir(id), log: this.log, metrics: this.metrics,
    }, o.dataParallel);
    this.reassembler = new Reassembler({
      onComplete: (transferId, payload) => this.onTransfer(transferId, payload),
      onError: (transferId, reason) => { this.stats.reassemblyFailures++; this.metrics.reassemblyFailures.inc(); this.log(`transfer ${transferId} failed: ${reason}`); },
    });
  }

  /** Reads the ensemble jobs of the store (start() does it first too; call it to look at them before starting). */
  load(): Promise<void> {
    return (this.loaded ??= this.loadJobs());
  }

  /** Loads the jobs, then starts listening; resolves once persisted data-parallel jobs are loaded too. */
  async start(): Promise<void> {
    await this.load(); // before listening: a result for a job not loaded yet would be dropped
    // every message is decoded and checked; a malformed one, or one of the wrong kind, is counted and dropped
    const on = <K extends BodyKind>(subject: string, kind: K, handle: (body: BodyMap[K]) => void) =>
      this.subs.push(this.bus.subscribe(subject, msg => {
        const d = decodeEnvelope(msg.data);
        const reason = !d.ok ? d.reason : d.envelope.body.kind !== kind ? `a ${d.envelope.body.kind} message where ${kind} was expected` : null;
        if (reason || !d.ok) { this.stats.malformed++; this.metrics.malformed.inc({ kind }); this.log(`dropped a malformed message on ${msg.subject}: ${reason}`); return; }
        handle(d.envelope.body.value as BodyMap[K]);
      }));
    on(SUBJECTS.workerAnnounce, 'announce', a => this.onAnnounce(a));
    on(SUBJECTS.workerHeartbeatAll, 'heartbeat', h => this.onHeartbeat(h));
    on(SUBJECTS.taskResult, 'result', r => this.onResult(r));
    on(`${SUBJECTS.tensorPrefix}.>`, 'chunk', c => this.reassembler.accept(c));
    this.subs.push(this.bus.subscribe(SUBJECTS.jobSubmit, async msg => {
      let answer: object;
      try {
        const spec = JSON.parse(new TextDecoder().decode(msg.data));
        answer = { ok: true, jobId: isDataParallelSpec(spec) ? this.dataParallel.submit(spec).id : this.submit(spec).id };
        await this.persisted(); // an ensemble job is in the store before the client hears of it
      } catch (e) {
        this.stats.malformed++;
        this.metrics.malformed.inc({ kind: 'submit' });
        answer = { ok: false, error: (e as Error).message };
      }
      if (msg.reply) this.bus.respond(msg, jsonField(answer));
    }));
    this.timer = setInterval(() => this.tick(), this.o.tickMs ?? 250);
    this.monitor = new ClusterMonitor(this);
    this.monitor.start();
    this.tick();
    // a job whose last result was stored just before a crash has nothing left to lease: combine it now
    for (const job of this.jobs.values()) if (job.state === 'running' && job.tasks.every(t => t.state === 'done')) void this.complete(job);
    await this.dataParallel.start();
    this.tick();
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
    await this.writes;
  }

  /** Validates a submitted spec (untrusted JSON) and queues its tasks; throws naming the first bad field. */
  submit(spec: JobSpec): JobRecord {
    validateJobSpec(spec);
    checkEnsemble({ ...spec, runtime: {} });
    const id = `job-${Date.now().toString(36)}-${Math.random().toString(36).slice(2, 6)}`;
    const tasks = ensembleTasks({ ...spec, runtime: {} }).map(t => ({ task: { ...t, checkpointDir: undefined }, state: 'queued' as TaskState, attempts: 0 }));
    const job: JobRecord = { id, spec, state: 'running', submittedAt: Date.now(), tasks };
    this.jobs.set(id, job);
    this.save(job);
    this.log(`job ${id}: ${spec.kind} ensemble of ${spec.members}, ${tasks.length} task(s)`);
    this.tick();
    return job;
  }

  /** The cluster view served at /api/cluster. */
  clusterView() {
    const now = Date.now();
    return {
      workers: [...this.workers.values()].map(w => ({ ...w, heartbeatAgeMs: now - w.lastSeen })),
      tasks: [...this.jobs.values()].flatMap(j => j.tasks.map(t => ({ job: j.id, task: t.task.id, state: t.state, worker: t.worker, attempts: t.attempts }))),
      stats: this.stats,
    };
  }

  /** The jobs served at /api/jobs. */
  jobsView() {
    return [...this.jobs.values()].map(j => ({
      id: j.id, state: j.state, kind: j.spec?.kind, members: j.spec?.members, submittedAt: j.submittedAt, finishedAt: j.finishedAt,
      done: j.tasks.filter(t => t.state === 'done').length, tasks: j.tasks.length, error: j.error, summary: j.summary,
    } as Record<string, unknown>)).concat(this.dataParallel.view());
  }

  private onAnnounce(a: { workerId: string; device: number; threads: number; version: string; gpuName: string }) {
    const w = this.workers.get(a.workerId);
    const record: WorkerRecord = { id: a.workerId, device: a.device === Device.CUDA ? 'cuda' : 'cpu', gpu: a.gpuName, threads: a.threads, version: a.version,
      lastSeen: Date.now(), running: w?.running ?? [], state: w?.state === 'busy' ? 'busy' : 'idle' };
    if (!w) this.log(`worker ${a.workerId} joined (${record.device}${record.gpu ? ` on ${record.gpu}` : ''}, ${a.threads} threads, fleet ${a.version})`);
    this.workers.set(a.workerId, record);
    this.tick();
  }

  private onHeartbeat(h: { workerId: string; runningTaskIds: string[]; samplesProcessed?: number }) {
    const w = this.workers.get(h.workerId);
    if (!w) return; // announces come every few heartbeats: wait for one to learn the worker's capabilities
    if (w.state === 'lost') this.log(`worker ${w.id} is back`);
    w.lastSeen = Date.now();
    w.running = h.runningTaskIds;
    w.samplesProcessed = h.samplesProcessed ?? 0;
    // after a coordinator restart, a worker still training a requeued task keeps it
    for (const job of this.jobs.values()) {
      for (const t of job.tasks) {
        if (job.state === 'running' && t.state === 'queued' && h.runningTaskIds.includes(t.task.id)) {
          t.state = 'leased'; t.worker = w.id; t.leasedAt = Date.now();
          this.log(`job ${job.id}: ${t.task.id} is running on ${w.id}`);
        }
      }
    }
    // busy only while it runs one of our leases (a lease in flight counts as busy too)
    const leased = this.leasedTo(w.id);
    w.state = h.runningTaskIds.length || leased.some(t => Date.now() - (t.leasedAt ?? 0) < 2000) ? 'busy' : 'idle';
    // a lease the worker does not run (lost message, or the worker restarted) goes back to the queue
    for (const t of leased) {
      if (!h.runningTaskIds.includes(t.task.id) && Date.now() - (t.leasedAt ?? 0) > 5000 && !t.transferId) this.requeue(t, `worker ${w.id} is not running it`);
    }
    this.tick();
  }

  private onResult(r: { taskId: string; jobId: string; workerId: string; ok: boolean; error: string; resultJson: Uint8Array; tensors: { name: string; transferId: string }[] }) {
    this.stats.results++;
    const job = this.jobs.get(r.jobId);
    const t = job?.tasks.find(x => x.task.id === r.taskId);
    if (!job || !t || t.state === 'done' || this.storing.has(t) || job.state !== 'running') return; // unknown, finished, or a duplicate
    const w = this.workers.get(r.workerId);
    if (!r.ok) {
      const busy = parseJsonField(r.resultJson, 'result_json');
      if (busy.ok && (busy.value as { busy?: boolean } | null)?.busy) {
        // not a failure of the task: the worker still runs something else (e.g. from before a coordinator restart)
        t.attempts--;
        if (w) w.state = 'busy';
        this.requeue(t, r.error, false);
        return;
      }
      if (w) { w.running = []; w.state = 'idle'; }
      t.error = r.error;
      if (t.attempts >= (this.o.maxAttempts ?? 3)) this.fail(job, `task ${t.task.id} failed on ${t.attempts} attempts: ${r.error}`);
      else { this.metrics.taskRetries.inc(); this.requeue(t, r.error, false); }
      return;
    }
    if (w && r.ok) { w.running = []; w.state = 'idle'; }
    const ref = r.tensors.find(x => x.name === 'result');
    if (!ref) { this.stats.malformed++; this.metrics.malformed.inc({ kind: 'result' }); return; }
    t.transferId = ref.transferId;
    const ready = this.pending.get(ref.transferId);
    if (ready) void this.finishTask(job, t, ready.result);
    else this.save(job); // the chunks may still be arriving: onTransfer finishes it
    this.tick(); // the worker is idle: its next lease goes now, not at its next heartbeat or timer tick
  }

  private onTransfer(transferId: string, payload: Uint8Array) {
    let result: MemberResult;
    try { result = decodeMemberResult(payload, `transfer ${transferId}`); } catch (e) { this.stats.reassemblyFailures++; this.metrics.reassemblyFailures.inc(); this.log((e as Error).message); return; }
    for (const job of this.jobs.values()) {
      if (job.state !== 'running') continue;
      const t = job.tasks.find(x => x.transferId === transferId && x.state !== 'done');
      if (t) { if (!this.storing.has(t)) void this.finishTask(job, t, result, payload); return; }
    }
    // the TaskResult has not arrived yet (subjects are not ordered with each other)
    this.pending.set(transferId, { result, at: Date.now() });
  }

  /** A task is done only once its result is in the store; then the job record says so. */
  private async finishTask(job: JobRecord, t: TaskRecord, result: MemberResult, payload?: Uint8Array) {
    this.pending.delete(t.transferId!);
    this.storing.add(t);
    const stored = await this.write(resultKey(job.id, t.task.id), payload ?? encodeMemberResult(result));
    this.storing.delete(t);
    if (job.state !== 'running' || t.state === 'done') return;
    if (!stored) { this.requeue(t, 'its result could not be stored'); this.save(job); return; }
    t.state = 'done';
    this.stored.set(resultKey(job.id, t.task.id), result);
    this.save(job);
    this.log(`job ${job.id}: ${t.task.id} done (${job.tasks.filter(x => x.state === 'done').length}/${job.tasks.length})`);
    if (job.tasks.every(x => x.state === 'done')) await this.complete(job);
    else {
      try { this.writeMemberFiles(job, result); } catch (e) { this.log(`job ${job.id}: writing ${t.task.id}'s model failed (retried at the end): ${(e as Error).message}`); }
    }
  }

  /** A member's own model file(s), written as its result arrives, while the others still train: off the job's end. */
  private writeMemberFiles(job: JobRecord, result: MemberResult) {
    const out = this.outDir(job.id);
    for (const m of result.members) for (const [name, content] of Object.entries(memberFiles(job.spec, m))) writeFileAtomic(path.join(out, name), content);
  }

  /** Writes the member files of a result that are not there yet (without exporting those that are). */
  private memberFileWrites(job: JobRecord, result: MemberResult): Promise<void>[] {
    const out = this.outDir(job.id);
    return result.members.filter(m => !fs.existsSync(path.join(out, memberModelPath(m.name))))
      .flatMap(m => Object.entries(memberFiles(job.spec, m)).map(([name, content]) => writeFileAtomicAsync(path.join(out, name), content)));
  }

  private async complete(job: JobRecord) {
    try {
      const results: MemberResult[] = [];
      for (const t of job.tasks) {
        const key = resultKey(job.id, t.task.id);
        const kept = this.stored.get(key);
        this.stored.delete(key);
        if (kept) { results.push(kept); continue; }
        const bytes = await this.store.get(key); // stored before a restart
        if (!bytes) throw new Error(`${this.store.description}: ${key} is missing`);
        results.push(decodeMemberResult(bytes, `${this.store.description}: ${key}`));
      }
      if (job.state !== 'running') return;
      const out = this.outDir(job.id);
      // the members that finished earlier are written already (not the last one, nor those of a job resumed
      // after a restart); their files sync while the one-graph model is built, and all outputs sync at once
      const writes = results.flatMap(res => this.memberFileWrites(job, res));
      const options: EnsembleOptions = { ...job.spec, dataDir: this.o.dataDir, runtime: {} };
      const r = combineEnsemble(options, results, (Date.now() - job.submittedAt) / 1000);
      const { files, summary, details } = ensembleOutputs(options, r, { members: false });
      for (const [name, content] of Object.entries(files)) writes.push(writeFileAtomicAsync(path.join(out, name), content));
      writes.push(writeFileAtomicAsync(path.join(out, 'metrics.json'), JSON.stringify({ ...summary, ...details, job: job.id }, null, 2) + '\n'));
      await Promise.all(writes);
      job.summary = { ...summary, out };
      job.state = 'done';
      job.finishedAt = Date.now();
      this.save(job);
      this.log(`job ${job.id}: finished, test accuracy ${summary.test_accuracy}`);
      try { this.o.onJobDone?.(job.id, out); } catch (e) { this.log(`job ${job.id}: onJobDone failed: ${(e as Error).message}`); }
      this.bus.publish(jobDoneSubject(job.id), jsonField({ ok: true, summary: job.summary }));
    } catch (e) {
      this.fail(job, `combining the members failed: ${(e as Error).message}`);
    }
  }

  private fail(job: JobRecord, error: string) {
    for (const t of job.tasks) this.stored.delete(resultKey(job.id, t.task.id));
    job.state = 'failed';
    job.error = error;
    job.finishedAt = Date.now();
    this.save(job);
    this.log(`job ${job.id}: failed: ${error}`);
    this.bus.publish(jobDoneSubject(job.id), jsonField({ ok: false, error }));
  }

  private requeue(t: TaskRecord, why: string, countsAsRelease = true) {
    this.log(`task ${t.task.id}: back in the queue (${why})`);
    if (countsAsRelease) { this.stats.releases++; this.metrics.taskRetries.inc(); }
    t.state = 'queued';
    t.worker = undefined;
    t.transferId = undefined;
  }

  /** The tasks a worker is training for us (not those whose result it sent and that are being stored). */
  private leasedTo(workerId: string): TaskRecord[] {
    return [...this.jobs.values()].filter(j => j.state === 'running').flatMap(j => j.tasks.filter(t => t.state === 'leased' && t.worker === workerId && !this.storing.has(t)));
  }

  /** Expires lost workers and leases queued tasks to idle ones. */
  private tick() {
    const now = Date.now(), timeout = this.o.workerTimeoutMs ?? 10_000;
    // partial transfers and results nobody claimed are dropped after a while (a worker died while sending)
    this.reassembler.sweep(now);
    for (const [id, p] of this.pending) if (now - p.at > 5 * 60_000) this.pending.delete(id);
    for (const w of this.workers.values()) {
      if (w.state !== 'lost' && now - w.lastSeen > timeout) {
        w.state = 'lost';
        this.log(`worker ${w.id} lost (no heartbeat for ${Math.round((now - w.lastSeen) / 1000)} s)`);
        for (const t of this.leasedTo(w.id)) this.requeue(t, `worker ${w.id} lost`);
      }
    }
    this.exportWorkerInfo();
    this.dataParallel.tick(now);
    for (const job of this.jobs.values()) {
      if (job.state !== 'running') continue;
      for (const t of job.tasks) {
        if (t.state !== 'queued') continue;
        const w = [...this.workers.values()].find(x => x.state === 'idle');
        if (!w) return;
        t.state = 'leased'; t.worker = w.id; t.leasedAt = now; t.attempts++;
        w.state = 'busy';
        this.stats.leases++;
        this.save(job);
        this.log(`job ${job.id}: ${t.task.id} leased to ${w.id} (attempt ${t.attempts})`);
        this.bus.publish(taskLeaseSubject(w.id), encodeEnvelope({ kind: 'lease', value: {
          taskId: t.task.id, jobId: job.id, attempt: t.attempts, leaseMs: timeout, taskJson: jsonField(t.task) } }, 'coordinator'));
        this.bus.publish(jobProgressSubject(job.id), encodeEnvelope({ kind: 'progress', value: {
          taskId: t.task.id, jobId: job.id, epoch: 0, batch: 0, batches: 0, loss: 0, metricsJson: jsonField({ event: 'leased', worker: w.id, attempt: t.attempts }) } }, 'coordinator'));
      }
    }
  }

  /** fleet_worker_info: one series per connected worker; a lost worker's series goes away. */
  private exportWorkerInfo() {
    const info = this.metrics.workerInfo;
    info.reset();
    for (const w of this.workers.values()) if (w.state !== 'lost') info.set({ worker: w.id, device: w.device, gpu: w.gpu }, 1);
  }

  outDir(jobId: string) { return this.outputDir(jobId); }

  /** Queues a write behind the earlier ones; retried a few times (a store on NATS can be briefly unreachable). */
  private write(key: string, data: Uint8Array | string): Promise<boolean> {
    const attempt = async (): Promise<boolean> => {
      for (let i = 1; ; i++) {
        try {
          await this.store.put(key, data);
          return true;
        } catch (e) {
          if (i === WRITE_ATTEMPTS) {
            this.stats.stateWriteFailures++;
            this.metrics.stateWriteFailures.inc();
            this.log(`${this.store.description}: writing ${key} failed after ${i} attempts: ${(e as Error).message}`);
            return false;
          }
          await new Promise(r => setTimeout(r, 250 * 2 ** i));
        }
      }
    };
    const done = this.writes.then(attempt);
    this.writes = done;
    return done;
  }

  /** Writes the job record as it is now (the snapshot is taken at once, the write happens in order). */
  private save(job: JobRecord): void { void this.write(jobKey(job.id), JSON.stringify(job, null, 2)); }

  /** Restores jobs from the store: finished tasks stay finished, leased ones go back to the queue. */
  private async loadJobs() {
    const keys = await this.store.list('jobs/');
    const present = new Set(keys);
    for (const key of keys) {
      const id = /^jobs\/([^/]+)\/job\.json$/.exec(key)?.[1];
      if (!id) continue;
      let job: JobRecord;
      try {
        const bytes = await this.store.get(key);
        if (!bytes) continue;
        job = JSON.parse(new TextDecoder().decode(bytes)) as JobRecord;
        validateJobSpec(job.spec);
        if (!Array.isArray(job.tasks)) throw new Error('no task list');
      } catch (e) {
        this.log(`${this.store.description}: ${key}: skipped, not a valid job record: ${(e as Error).message}`);
        continue;
      }
      for (const t of job.tasks) {
        // a task is only done if its result is in the store (a store write is atomic: there means whole)
        if (t.state === 'done' && !present.has(resultKey(id, t.task.id))) t.state = 'queued';
        if (t.state === 'leased') { t.state = 'queued'; t.worker = undefined; t.transferId = undefined; }
      }
      this.jobs.set(id, job);
      if (job.state === 'running') this.log(`job ${id}: resumed (${job.tasks.filter(t => t.state === 'done').length}/${job.tasks.length} tasks done)`);
    }
  }
}

const WRITE_ATTEMPTS = 5;
const jobKey = (jobId: string) => `jobs/${jobId}/job.json`;
const resultKey = (jobId: string, taskId: string) => `jobs/${jobId}/results/${taskId}.result`;

const LIMITS = { members: 1000, epochs: 10_000, batchSize: 65_536 };

/** A submitted job spec is untrusted JSON: check its shape before anything is created or saved. */
export function validateJobSpec(spec: unknown): asserts spec is JobSpec {
  const { o, bad, int } = specChecker('job spec', spec);
  if (!(ENSEMBLE_KINDS as readonly unknown[]).includes(o.kind)) throw bad('kind', o.kind, `one of ${ENSEMBLE_KINDS.join('|')}`);
  if (o.model !== undefined && o.model !== 'cnn' && o.model !== 'simclr') throw bad('model', o.model, 'cnn or simclr');
  int('members', 1, LIMITS.members);
  int('epochs', 1, LIMITS.epochs);
  int('batchSize', 1, LIMITS.batchSize);
  int('seed', 0, 2 ** 31);
  int('limitTrain', 1, 10_000_000, true);
  int('limitTest', 1, 10_000_000, true);
  if (typeof o.valFraction !== 'number' || !(o.valFraction >= 0 && o.valFraction < 1)) throw bad('valFraction', o.valFraction, 'a number in [0, 1)');
  if (!(DATASETS as readonly unknown[]).includes(o.dataset)) throw bad('dataset', o.dataset, `one of ${DATASETS.join('|')}`);
  if (o.dataDir !== undefined) throw bad('dataDir', o.dataDir, 'absent (workers read their own data)');
  const r = o.recipe as Record<string, unknown> | null;
  if (typeof r !== 'object' || r === null || typeof r.lr !== 'number' || !(r.lr > 0) || typeof r.optimizer !== 'string' || typeof r.schedule !== 'object') {
    throw bad('recipe', o.recipe, 'a recipe object (optimizer, lr > 0, schedule...)');
  }
}
