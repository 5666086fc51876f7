// The coordinator's live view for operators: follows the job progress events on the bus (per-member loss and
// accuracy curves, task progress), keeps the coordinator's gauges current (workers, tasks, jobs, job progress,
// the per-worker summary from heartbeats) and pushes events to the dashboard's server-sent event streams.
import { SUBJECTS } from '../bus/subjects.ts';
import { parseJsonField } from '../bus/codec.ts';
import type { Coordinator } from './coordinator.ts';

/** One point of a member's curves: x in epochs (1.5 = half-way through epoch 2). */
export interface BatchPoint {
  x: number;
  loss: number;
}
export interface EpochPoint {
  epoch: number;
  train_loss: number;
  train_accuracy?: number;
  val_loss?: number;
  val_accuracy?: number;
  test_loss?: number;
  test_accuracy?: number;
}
export interface MemberCurves {
  batches: BatchPoint[];
  epochs: EpochPoint[];
}

export type MonitorEvent =
  | { type: 'progress'; job: string; member: string; batch?: BatchPoint; epoch?: EpochPoint }
  | { type: 'cluster'; cluster: ClusterSnapshot }
  | { type: 'job'; job: string; ok: boolean };

export type ClusterSnapshot = ReturnType<ClusterMonitor['snapshot']>;

const SPLITS = ['train', 'val', 'test'] as const;
/** Finished jobs whose loss/accuracy series stay in /metrics (older ones are removed: bounded label values). */
const KEEP_FINISHED_JOBS = 5;
/** Lost workers stay in the per-worker summary this long (so "worker lost" alerts can fire), then go. */
const KEEP_LOST_WORKER_MS = 60 * 60_000;
/** Batch points kept per member; beyond it every other point is dropped (the curve keeps its shape). */
const MAX_BATCH_POINTS = 4000;

export class ClusterMonitor {
  private readonly curves = new Map<string, Map<string, MemberCurves>>();
  /** Latest fraction done of each task (0-1), by job. */
  private readonly taskProgress = new Map<string, Map<string, number>>();
  private readonly startedAt = new Map<string, number>();
  private readonly listeners = new Set<(e: MonitorEvent) => void>();
  private readonly subs: { unsubscribe(): void }[] = [];
  private timer?: NodeJS.Timeout;

  constructor(
    readonly c: Coordinator,
    readonly periodMs = 1000,
  ) {}

  start(): void {
    // progress comes from the coordinator (onProgress), checked against its lease; the end of a job is read from
    // the job's own state, not from the message (anyone on the bus can publish one)
    this.subs.push(
      this.c.bus.subscribe(`${SUBJECTS.jobDonePrefix}.*`, msg => {
        const job = msg.subject.slice(SUBJECTS.jobDonePrefix.length + 1);
        const state = this.c.outcome(job)?.state;
        if (state !== 'done' && state !== 'failed' && state !== 'cancelled') return;
        this.refresh();
        this.emit({ type: 'job', job, ok: state === 'done' });
        this.emit({ type: 'cluster', cluster: this.snapshot() });
      }),
    );
    this.timer = setInterval(() => {
      this.refresh();
      if (this.listeners.size) this.emit({ type: 'cluster', cluster: this.snapshot() });
    }, this.periodMs);
    this.timer.unref();
    this.refresh();
  }

  stop(): void {
    clearInterval(this.timer);
    for (const s of this.subs) s.unsubscribe();
    this.listeners.clear();
  }

  /** Calls listener for every event until the returned function is called. */
  listen(listener: (e: MonitorEvent) => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Every member's curves of a job (empty when the coordinator saw no progress for it, e.g. after a restart). */
  jobCurves(job: string): Record<string, MemberCurves> {
    return Object.fromEntries(this.curves.get(job) ?? []);
  }

  allCurves(): Record<string, Record<string, MemberCurves>> {
    return Object.fromEntries([...this.curves.keys()].map(j => [j, this.jobCurves(j)]));
  }

  /** Workers, jobs with progress and ETA, and task counts: what the dashboard's cluster and job panels show. */
  snapshot() {
    const now = Date.now();
    const view = this.c.clusterView();
    const jobs = [...this.c.jobs.values()].map(j => {
      const progress = this.progressOf(j.id);
      const since = this.startedAt.get(j.id) ?? j.submittedAt;
      const elapsed = (now - since) / 1000;
      const eta = j.state === 'running' && progress > 0.01 ? (elapsed * (1 - progress)) / progress : null;
      return {
        id: j.id,
        state: j.state,
        kind: j.spec?.kind,
        model: j.spec?.model ?? 'cnn',
        members: j.spec?.members,
        epochs: j.spec?.epochs,
        submittedAt: j.submittedAt,
        finishedAt: j.finishedAt ?? null,
        done: j.tasks.filter(t => t.state === 'done').length,
        tasks: j.tasks.length,
        progress,
        etaSeconds: eta === null ? null : Math.round(eta),
        error: j.error ?? null,
        summary: j.summary
          ? pick(j.summary, [
              'test_accuracy',
              'test_loss',
              'best_member_test_accuracy',
              'average_test_accuracy',
              'weights',
            ])
          : null,
      };
    });
    return {
      now,
      workers: view.workers.map(w => ({
        id: w.id,
        device: w.device,
        threads: w.threads,
        state: w.state,
        version: w.version,
        heartbeatAgeSeconds: Math.max(0, (now - w.lastSeen) / 1000),
        running: w.running,
        samplesProcessed: w.samplesProcessed ?? 0,
      })),
      jobs,
      tasks: countBy(
        view.tasks.map(t => t.state),
        ['queued', 'leased', 'done', 'failed'],
      ),
    };
  }

  /** Fraction of a job done: finished tasks count 1, running ones their latest progress. */
  progressOf(jobId: string): number {
    const j = this.c.jobs.get(jobId);
    if (!j || j.tasks.length === 0) return 0;
    if (j.state === 'done') return 1;
    const live = this.taskProgress.get(jobId);
    const sum = j.tasks.reduce(
      (s, t) => s + (t.state === 'done' ? 1 : t.state === 'leased' ? (live?.get(t.task.id) ?? 0) : 0),
      0,
    );
    return Math.min(1, sum / j.tasks.length);
  }

  /** Brings the coordinator's gauges up to date (on a timer, and before each scrape). */
  refresh(): void {
    const m = this.c.metrics,
      now = Date.now();
    const workers = [...this.c.workers.values()];
    m.workersConnected.reset();
    for (const device of ['cpu', 'cuda'])
      m.workersConnected.set({ device }, workers.filter(w => w.device === device && w.state !== 'lost').length);
    const jobs = [...this.c.jobs.values()];
    m.tasks.reset();
    const tasks = countBy(
      jobs.filter(j => j.state === 'running').flatMap(j => j.tasks.map(t => t.state)),
      ['queued', 'leased', 'done', 'failed'],
    );
    for (const [state, n] of Object.entries(tasks)) m.tasks.set({ state }, n);
    m.jobs.reset();
    for (const [state, n] of Object.entries(
      countBy(
        jobs.map(j => j.state),
        ['running', 'done', 'failed', 'cancelled'],
      ),
    ))
      m.jobs.set({ state }, n);
    m.jobProgress.reset();
    for (const j of jobs) if (j.state === 'running') m.jobProgress.set({ fleet_job: j.id }, this.progressOf(j.id));
    m.workerHeartbeatAge.reset();
    m.workerBusy.reset();
    m.workerSamples.reset();
    for (const w of workers) {
      const age = (now - w.lastSeen) / 1000;
      if (w.state === 'lost' && age * 1000 > KEEP_LOST_WORKER_MS) continue;
      const labels = { worker: w.id, device: w.device };
      m.workerHeartbeatAge.set(labels, age);
      m.workerBusy.set(labels, w.state === 'busy' ? 1 : 0);
      m.workerSamples.set(labels, w.samplesProcessed ?? 0);
    }
    // loss/accuracy series of long-finished jobs go away (and their curves with them)
    const finished = jobs.filter(j => j.state !== 'running').sort((a, b) => (b.finishedAt ?? 0) - (a.finishedAt ?? 0));
    for (const j of finished.slice(KEEP_FINISHED_JOBS)) {
      for (const member of this.curves.get(j.id)?.keys() ?? []) {
        for (const split of SPLITS) {
          m.loss.remove({ fleet_job: j.id, member, split });
          m.accuracy.remove({ fleet_job: j.id, member, split });
        }
      }
      this.curves.delete(j.id);
      this.taskProgress.delete(j.id);
      this.startedAt.delete(j.id);
    }
  }

  /** A progress event of a task's current lease (the coordinator checked it), or the coordinator's own 'leased' event. */
  onProgress(p: {
    taskId: string;
    jobId: string;
    epoch: number;
    batch: number;
    batches: number;
    loss: number;
    metricsJson: Uint8Array;
  }) {
    const job = this.c.jobs.get(p.jobId);
    if (!job) return;
    const parsed = parseJsonField(p.metricsJson, 'metrics_json');
    const info = (parsed.ok && typeof parsed.value === 'object' && parsed.value !== null ? parsed.value : {}) as Record<
      string,
      unknown
    >;
    if (info.event === 'leased') {
      if (!this.startedAt.has(p.jobId)) this.startedAt.set(p.jobId, Date.now());
      return;
    }
    const epochs = job.spec.epochs || 1;
    const member = p.taskId;
    const curves = this.curves.get(p.jobId) ?? this.curves.set(p.jobId, new Map()).get(p.jobId)!;
    const c = curves.get(member) ?? curves.set(member, { batches: [], epochs: [] }).get(member)!;
    const progress = this.taskProgress.get(p.jobId) ?? this.taskProgress.set(p.jobId, new Map()).get(p.jobId)!;
    const m = this.c.metrics,
      labels = (split: string) => ({ fleet_job: p.jobId, member, split });
    if (info.event === 'batch' && p.batches > 0) {
      const point = { x: p.epoch - 1 + p.batch / p.batches, loss: p.loss };
      if (!Number.isFinite(point.x) || !Number.isFinite(point.loss)) return;
      c.batches.push(point);
      if (c.batches.length > MAX_BATCH_POINTS) c.batches = c.batches.filter((_, i) => i % 2 === 1);
      progress.set(member, Math.min(1, point.x / epochs));
      m.loss.set(labels('train'), p.loss);
      this.emit({ type: 'progress', job: p.jobId, member, batch: point });
      return;
    }
    const e: EpochPoint = { epoch: p.epoch, train_loss: p.loss };
    for (const k of ['train_accuracy', 'val_loss', 'val_accuracy', 'test_loss', 'test_accuracy'] as const) {
      const v = info[k];
      if (typeof v === 'number' && Number.isFinite(v)) e[k] = v;
    }
    c.epochs = c.epochs.filter(x => x.epoch !== e.epoch); // a re-leased task trains its epochs again
    c.epochs.push(e);
    progress.set(member, Math.min(1, p.epoch / epochs));
    if (Number.isFinite(e.train_loss)) m.loss.set(labels('train'), e.train_loss);
    if (e.train_accuracy !== undefined) m.accuracy.set(labels('train'), e.train_accuracy);
    if (e.val_loss !== undefined) m.loss.set(labels('val'), e.val_loss);
    if (e.val_accuracy !== undefined) m.accuracy.set(labels('val'), e.val_accuracy);
    if (e.test_loss !== undefined) m.loss.set(labels('test'), e.test_loss);
    if (e.test_accuracy !== undefined) m.accuracy.set(labels('test'), e.test_accuracy);
    this.emit({ type: 'progress', job: p.jobId, member, epoch: e });
  }

  private emit(e: MonitorEvent): void {
    for (const l of this.listeners) {
      try {
        l(e);
      } catch {
        /* one broken stream must not stop the others */
      }
    }
  }
}

function countBy<K extends string>(values: string[], keys: readonly K[]): Record<K, number> {
  const out = Object.fromEntries(keys.map(k => [k, 0])) as Record<K, number>;
  for (const v of values) if (v in out) out[v as K]++;
  return out;
}

function pick(o: Record<string, unknown>, keys: string[]): Record<string, unknown> {
  return Object.fromEntries(keys.filter(k => o[k] !== undefined).map(k => [k, o[k]]));
}
