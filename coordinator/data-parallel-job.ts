// Data-parallel jobs on the coordinator: synchronous steps around a parameter server.
//
// Each step t: the parameters of version t are broadcast to the workers (chunked, on fleet.dp.params.<job>;
// a worker that did not get them gets them on its fleet.dp.work.<id> subject), each shard is assigned to a
// live worker, the shard results come back on fleet.dp.up.<job>, and once every shard is in the optimizer
// steps once. CNN: one GRADIENT phase, the gradients are summed. SimCLR: a FORWARD phase returns every shard's
// projections, the coordinator computes the NT-Xent loss over all 2B projections (global negatives) and its
// gradient, and a BACKWARD phase sends each shard its slice to back-propagate through the encoder and head.
//
// Elastic: a shard whose worker is lost (no heartbeat for the coordinator's worker timeout), times out or
// fails is assigned to another worker; a shard's result is the same on any worker, the first result for
// (step, phase, shard) is taken and later duplicates are ignored, so no step is applied twice or skipped.
// Job state (parameters, optimizer state, step, history) is persisted through a StateStore.
import { randomBytes } from 'node:crypto';
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, dpWorkSubject, dpParamsSubject, jobProgressSubject } from '../bus/subjects.ts';
import {
  encodeEnvelope,
  jsonField,
  parseJsonField,
  tensorToBytes,
  bytesToTensor,
  DType,
  DataParallelPhase,
  type DataParallelResultBody,
  type DataParallelWorkBody,
} from '../bus/codec.ts';
import { sendChunked, Reassembler } from '../bus/chunking.ts';
import { countingTransport } from '../bus/counting-transport.ts';
import { receive, Rejections } from '../bus/receive.ts';
import { ParameterServer } from './parameter-server.ts';
import { evaluateCnn, runOutputs, writeOutputs } from './data-parallel-outputs.ts';
import * as D from './defaults.ts';
import { endJob, newJobId, publishJobEnd } from './job-lifecycle.ts';
import type { StateStore } from './state-store.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import {
  DataParallelPlan,
  validateDataParallelSpec,
  viewRows,
  contrastiveOptions,
  type DataParallelSpec,
} from '../engine/train/data-parallel.ts';
import { buildContrastiveLossGraph, type SimclrEpoch } from '../engine/train/train-simclr.ts';
import type { EpochMetrics } from '../engine/train/train-classifier.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { TensorSet } from '../engine/model/params.ts';
import { PROJECTION_DIM } from '../engine/model/simclr.ts';
import { loadDatasetCached, type loadDataset } from '../engine/data/datasets.ts';
import { gatherLabels } from '../engine/data/split.ts';
import { ort, type RuntimeOptions } from '../engine/runtime.ts';
import {
  wallClock,
  summariseStep,
  type StepTimeline,
  type PhaseTimeline,
  type WorkerTimeline,
} from '../bus/dp-timeline.ts';

/** One finished step, for progress, the tests (exactness) and `fleet bench scale` (where the time goes). */
export interface StepInfo {
  job: string;
  step: number;
  epoch: number;
  loss: number;
  lr: number;
  /** The summed gradient the optimizer stepped with (valid only during the callback). */
  gradient: Float32Array;
  /** The parameters after the step (valid only during the callback). */
  params: Float32Array[];
  workers: string[];
  wallMs: number;
  /** Critical path of compute: slowest shard of each phase (+ the coordinator's loss graph for SimCLR). */
  computeMs: number;
  /** Summing gradients + averaging BatchNorm statistics + the optimizer step. */
  aggregationMs: number;
  bytesOut: number;
  bytesIn: number;
  reassigned: number;
  /** The step's critical path in ms (summariseStep): intervals that add up to wallMs, and bus handler times. */
  timeline: ReturnType<typeof summariseStep>;
}

/** A data-parallel job's persisted record (job.json). */
export interface DataParallelRecord {
  id: string;
  spec: DataParallelSpec;
  state: 'running' | 'done' | 'failed';
  submittedAt: number;
  finishedAt?: number;
  step: number;
  totalSteps: number;
  error?: string;
  summary?: Record<string, unknown>;
}

/** Training progress that must survive a restart, saved with the parameters. */
interface Progress {
  history: (EpochMetrics | SimclrEpoch)[];
  epoch: { lossSum: number; correct: number; seen: number; seconds: number };
  trainSeconds: number;
  trainImages: number;
}

interface Slot {
  /** Work ids sent for this shard in this phase, with the worker each went to: only those results count. */
  issued?: Map<string, string>;
  shard: number;
  worker?: string;
  assignedAt?: number;
  failures: number;
  result?: Float32Array;
  loss: number;
  correct: number;
  computeMs: number;
  by?: string;
}

interface Active {
  record: DataParallelRecord;
  plan: DataParallelPlan;
  ps: ParameterServer;
  data: ReturnType<typeof loadDataset>;
  progress: Progress;
  phase: 'gradient' | 'forward' | 'backward';
  slots: Slot[];
  /** Per shard: projections and BatchNorm statistics from the FORWARD phase (SimCLR). */
  forward: { z: Float32Array; buffers: Float32Array; worker: string; computeMs: number }[];
  upstream: Float32Array[];
  version: { id: string; bytes: Uint8Array } | null;
  workerVersion: Map<string, string>;
  busy: boolean;
  /** SimCLR: this step's loss, from the FORWARD phase. */
  contrastiveLoss: number;
  stepStart: number;
  stepBytesOut: number;
  stepBytesIn: number;
  stepReassigned: number;
  lossMs: number;
  computeMs: number;
  loss?: ModelRunner;
  /** This step's timeline; the current phase is its last. */
  tl: StepTimeline;
  /** A state write still queued or running: the next persist is skipped rather than queue another copy. */
  persisting: boolean;
}

export interface DataParallelHost {
  bus: Transport;
  workers: ReadonlyMap<string, { id: string; state: 'idle' | 'busy' | 'lost' }>;
  /** The worker runs an ensemble task: data-parallel work waits for others. */
  busyWithEnsemble(workerId: string): boolean;
  store: StateStore;
  /** Queues a store write behind the earlier ones, retried; false (logged and counted) when it failed for good. */
  write(key: string, data: Uint8Array | string): Promise<boolean>;
  outDir(jobId: string): string;
  log(line: string): void;
  metrics?: Metrics;
}

export interface DataParallelOptions {
  /** Persist the parameter server every this many steps (default D.DP_PERSIST_EVERY_STEPS; always at epoch ends). */
  persistEverySteps?: number;
  /** A shard not answered within this time is assigned again (ms, default D.DP_SHARD_TIMEOUT_MS). */
  shardTimeoutMs?: number;
  /** A shard that failed on this many attempts fails its job (default D.MAX_ATTEMPTS). */
  maxAttempts?: number;
  /** ONNX Runtime options of the coordinator's own compute (the SimCLR loss, evaluation). */
  runtime?: RuntimeOptions;
  onStep?: (s: StepInfo) => void;
}

export const isDataParallelSpec = (spec: unknown): boolean =>
  (spec as { kind?: unknown } | null)?.kind === 'data-parallel';

const KEY = (id: string, name: string) => `data-parallel/${id}/${name}`;
const newPhase = (phase: PhaseTimeline['phase']): PhaseTimeline => ({ phase, sent: 0, shards: [], busMs: 0 });
const emptyTimeline = (): StepTimeline => {
  const now = wallClock();
  return {
    start: now,
    flattened: now,
    published: now,
    phases: [],
    lossMs: 0,
    sumMs: 0,
    buffersMs: 0,
    optimizerMs: 0,
    end: now,
  };
};

/** The wire code of each phase. */
const PHASE_CODE = {
  gradient: DataParallelPhase.GRADIENT,
  forward: DataParallelPhase.FORWARD,
  backward: DataParallelPhase.BACKWARD,
} as const;

function newActive(
  record: DataParallelRecord,
  plan: DataParallelPlan,
  data: Active['data'],
  ps: ParameterServer,
): Active {
  return {
    record,
    plan,
    ps,
    data,
    phase: 'gradient',
    slots: [],
    forward: [],
    upstream: [],
    progress: { history: [], epoch: { lossSum: 0, correct: 0, seen: 0, seconds: 0 }, trainSeconds: 0, trainImages: 0 },
    version: null,
    workerVersion: new Map(),
    busy: false,
    contrastiveLoss: NaN,
    stepStart: 0,
    stepBytesOut: 0,
    stepBytesIn: 0,
    stepReassigned: 0,
    lossMs: 0,
    computeMs: 0,
    tl: emptyTimeline(),
    persisting: false,
  };
}

/** Adds one step's loss, correct count, images and time to the epoch's running totals. */
function addToEpoch(e: Progress['epoch'], loss: number, correct: number, images: number, wallMs: number) {
  e.lossSum += loss * images;
  e.correct += correct;
  e.seen += images;
  e.seconds += wallMs / 1000;
}

/** Each shard's slice of dloss/dz over all 2B projections: its rows of both views, one after the other. */
function upstreamSlices(gz: Float32Array, sizes: number[]): Float32Array[] {
  const D = PROJECTION_DIM;
  return sizes.map((_, s) => {
    const { a, b, n } = viewRows(sizes, s),
      u = new Float32Array(2 * n * D);
    u.set(gz.subarray(a * D, (a + n) * D), 0);
    u.set(gz.subarray(b * D, (b + n) * D), n * D);
    return u;
  });
}

export class DataParallelJobs {
  private readonly jobs = new Map<string, Active>();
  private readonly finished = new Map<string, DataParallelRecord>();
  readonly stats = { malformed: 0, reassemblyFailures: 0, stale: 0, reassigned: 0, steps: 0, bytesOut: 0, bytesIn: 0 };
  private readonly out: Transport;
  private readonly transfers = new Map<string, { payload: Uint8Array; sender: string }>();
  private readonly reassembler: Reassembler;
  private readonly rejections: Rejections;
  private sub?: { unsubscribe(): void };
  private loaded = false;
  /** After stop() nothing is sent or persisted any more (a stopped coordinator must not overwrite its successor's). */
  private stopped = false;

  constructor(
    private readonly host: DataParallelHost,
    private readonly o: DataParallelOptions = {},
  ) {
    this.rejections = new Rejections({
      counters: host.metrics,
      log: line => host.log(`data-parallel: ${line}`),
      onReject: () => {
        this.stats.malformed++;
      },
    });
    this.out = countingTransport(host.bus, n => {
      this.stats.bytesOut += n;
      for (const j of this.jobs.values()) j.stepBytesOut += n;
    });
    this.reassembler = new Reassembler({
      onComplete: (id, payload, info) => {
        this.transfers.set(id, { payload, sender: info.sender });
        if (this.transfers.size > D.DP_RESULT_TRANSFERS) this.transfers.delete(this.transfers.keys().next().value!);
      },
      onError: (id, reason) => {
        this.stats.reassemblyFailures++;
        host.metrics?.reassemblyFailures.inc();
        host.log(`data-parallel: transfer ${id} failed: ${reason}`);
      },
    });
  }

  /** Subscribes to the workers' results and resumes the persisted running jobs. */
  async start(): Promise<void> {
    this.sub = receive(
      this.host.bus,
      SUBJECTS.dpUpAll,
      ['chunk', 'dpResult'],
      this.rejections,
      (body, env, msg) => {
        const t0 = wallClock();
        const job = this.jobs.get(msg.subject.slice(SUBJECTS.dpUpPrefix.length + 1));
        this.stats.bytesIn += msg.data.length;
        if (job) job.stepBytesIn += msg.data.length;
        try {
          if (body.kind === 'chunk') this.reassembler.accept(body.value, env.sender);
          else this.onResult(body.value);
        } finally {
          const p = job?.tl.phases.at(-1);
          if (p) p.busMs += wallClock() - t0;
        }
      },
      { label: 'dpResult' },
    );
    for (const key of await this.host.store.list('data-parallel/')) {
      if (key.endsWith('/job.json')) await this.resume(key);
    }
    this.loaded = true;
  }

  /** Loads one persisted job record; a running job resumes from its last persisted state. */
  private async resume(key: string): Promise<void> {
    try {
      const record = JSON.parse(new TextDecoder().decode((await this.host.store.get(key))!)) as DataParallelRecord;
      validateDataParallelSpec(record.spec);
      if (record.state !== 'running') {
        this.finished.set(record.id, record);
        return;
      }
      const job = this.activate(record);
      const saved = await job.ps.load<Progress>(this.host.store, KEY(record.id, 'state.ckpt'));
      if (saved) {
        job.progress = saved;
        record.step = job.ps.step;
      }
      this.host.log(`data-parallel job ${record.id}: resumed at step ${job.ps.step}/${record.totalSteps}`);
    } catch (e) {
      this.host.log(`data-parallel: ${this.host.store.description}: ${key} skipped: ${(e as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    this.stopped = true;
    this.sub?.unsubscribe();
    for (const j of this.jobs.values()) await j.loss?.release();
  }

  /** Validates a submitted spec (untrusted JSON) and starts the job; throws naming the first bad field. */
  submit(spec: unknown): DataParallelRecord {
    validateDataParallelSpec(spec);
    const id = newJobId();
    const record: DataParallelRecord = { id, spec, state: 'running', submittedAt: Date.now(), step: 0, totalSteps: 0 };
    const job = this.activate(record);
    void this.saveRecord(record);
    this.host.log(
      `data-parallel job ${id}: ${spec.model}, ${job.plan.totalSteps} steps of ${spec.batchSize} images` +
        ` in ${spec.shards} shards`,
    );
    return record;
  }

  private activate(record: DataParallelRecord): Active {
    const spec = record.spec;
    const data = loadDatasetCached(spec.dataset);
    const plan = new DataParallelPlan(spec, data.train.count);
    record.totalSteps = plan.totalSteps;
    const job = newActive(record, plan, data, new ParameterServer(spec, this.host.metrics));
    this.jobs.set(record.id, job);
    return job;
  }

  /** The jobs for /api/jobs. */
  view() {
    return [...[...this.jobs.values()].map(j => j.record), ...this.finished.values()].map(r => ({
      id: r.id,
      state: r.state,
      kind: 'data-parallel',
      model: r.spec.model,
      shards: r.spec.shards,
      submittedAt: r.submittedAt,
      finishedAt: r.finishedAt,
      done: r.step,
      tasks: r.totalSteps,
      error: r.error,
      summary: r.summary,
    }));
  }

  /** Starts steps, and assigns shards that have no live worker. */
  tick(now = Date.now()): void {
    if (!this.loaded || this.stopped) return;
    this.reassembler.sweep(now);
    for (const job of this.jobs.values()) {
      if (job.busy) continue;
      if (!job.slots.length) this.startStep(job);
      this.assign(job, now);
    }
  }

  private startStep(job: Active) {
    const t = job.ps.step;
    job.stepStart = performance.now();
    job.stepBytesOut = job.stepBytesIn = job.stepReassigned = 0;
    job.lossMs = job.computeMs = 0;
    job.tl = emptyTimeline();
    job.version = {
      id: `${job.record.id}-v${t}-${randomBytes(3).toString('hex')}`,
      bytes: tensorToBytes(job.ps.versionPayload()),
    };
    job.tl.flattened = wallClock();
    // one broadcast for every live worker (the server fans it out); a worker that joins later gets it with its work
    const live = this.liveWorkers();
    if (live.length) {
      this.sendTransfer(dpParamsSubject(job.record.id), job.version.bytes, job.version.id);
      for (const w of live) job.workerVersion.set(w, job.version.id);
    }
    job.tl.published = wallClock();
    job.phase = job.record.spec.model === 'cnn' ? 'gradient' : 'forward';
    job.tl.phases.push(newPhase(job.phase));
    job.slots = this.freshSlots(job);
  }

  private freshSlots(job: Active): Slot[] {
    return Array.from({ length: job.record.spec.shards }, (_, shard) => ({
      shard,
      failures: 0,
      loss: 0,
      correct: 0,
      computeMs: 0,
    }));
  }

  private assign(job: Active, now: number) {
    const timeout = this.o.shardTimeoutMs ?? D.DP_SHARD_TIMEOUT_MS;
    const live = this.liveWorkers();
    // a worker back from lost may have restarted
    for (const id of job.workerVersion.keys()) if (!live.includes(id)) job.workerVersion.delete(id);
    for (const slot of job.slots) {
      if (slot.result) continue;
      if (slot.worker && (!live.includes(slot.worker) || now - slot.assignedAt! > timeout)) {
        this.moveOff(job, slot, live.includes(slot.worker) ? `no answer in ${timeout} ms` : 'worker lost');
      }
      if (slot.worker || !live.length) continue;
      this.send(job, slot, this.pickWorker(job, slot, live), now);
    }
  }

  /** Takes a shard off its worker (lost, or too slow) so that it is assigned again. */
  private moveOff(job: Active, slot: Slot, why: string) {
    this.host.log(
      `data-parallel job ${job.record.id}: step ${job.ps.step} shard ${slot.shard} (${job.phase})` +
        ` moves off ${slot.worker} (${why})`,
    );
    slot.worker = undefined;
    this.stats.reassigned++;
    job.stepReassigned++;
  }

  /** The least loaded live worker; for the backward pass, the one that ran the shard's forward pass if it is free. */
  private pickWorker(job: Active, slot: Slot, live: string[]): string {
    // the worker that ran this shard's forward pass keeps it for the backward pass (its inputs are cached)
    const preferred = job.phase === 'backward' ? job.forward[slot.shard]?.worker : undefined;
    const load = (id: string) => job.slots.filter(s => s.worker === id && !s.result).length;
    if (preferred && live.includes(preferred) && load(preferred) === 0) return preferred;
    return live.reduce((a, b) => (load(b) < load(a) ? b : a));
  }

  /** Workers that can take shards: heartbeating and not running an ensemble task. */
  private liveWorkers(): string[] {
    return [...this.host.workers.values()]
      .filter(w => w.state !== 'lost' && !this.host.busyWithEnsemble(w.id))
      .map(w => w.id)
      .sort();
  }

  private send(job: Active, slot: Slot, worker: string, now: number) {
    const subject = dpWorkSubject(worker),
      t = job.ps.step,
      phase = PHASE_CODE[job.phase],
      version = job.version!;
    // the chunks are published synchronously before the work message, on the same subject: they arrive first
    if (job.workerVersion.get(worker) !== version.id) {
      this.sendTransfer(subject, version.bytes, version.id);
      job.workerVersion.set(worker, version.id);
    }
    let upstreamTransferId = '';
    if (phase === DataParallelPhase.BACKWARD) {
      upstreamTransferId = `${job.record.id}-u${t}-${slot.shard}-${randomBytes(3).toString('hex')}`;
      this.sendTransfer(subject, tensorToBytes(job.upstream[slot.shard]), upstreamTransferId);
    }
    slot.worker = worker;
    slot.assignedAt = now;
    const workId = `${job.record.id}-${t}-${phase}-${slot.shard}-${randomBytes(8).toString('hex')}`;
    (slot.issued ??= new Map()).set(workId, worker);
    const work: DataParallelWorkBody = {
      jobId: job.record.id,
      workId,
      step: t,
      phase,
      shard: slot.shard,
      shards: job.record.spec.shards,
      paramsTransferId: version.id,
      upstreamTransferId,
      specJson: jsonField(job.record.spec),
    };
    this.out.publish(subject, encodeEnvelope({ kind: 'dpWork', value: work }, 'coordinator'));
    job.tl.phases.at(-1)!.sent = wallClock();
  }

  /** Sends one chunked transfer from the coordinator; its chunks are published before this returns. */
  private sendTransfer(subject: string, bytes: Uint8Array, transferId: string) {
    void sendChunked(this.out, subject, bytes, { transferId, sender: 'coordinator' }).catch(() => {});
  }

  private onResult(r: DataParallelResultBody) {
    const job = this.jobs.get(r.jobId);
    const slot = job?.slots[r.shard];
    if (!job || job.busy || r.step !== job.ps.step || r.phase !== PHASE_CODE[job.phase] || !slot || slot.result) {
      this.stats.stale++;
      return;
    }
    // only the worker this shard's work was sent to, answering that work id, counts (any of its assignments)
    if (slot.issued?.get(r.workId) !== r.workerId) {
      const what = `job ${job.record.id} step ${r.step} shard ${r.shard}: work ${r.workId} from ${r.workerId}`;
      return this.rejections.reject('dpResult', 'wrong_worker', what);
    }
    if (!r.ok) return this.shardFailed(job, slot, r, r.error);
    const values = this.resultValues(job, r);
    if (typeof values === 'string') return this.shardFailed(job, slot, r, values);
    Object.assign(slot, { result: values, loss: r.loss, correct: r.correct, computeMs: r.computeMs, by: r.workerId });
    const w = r.timelineJson?.length ? parseJsonField(r.timelineJson, 'timeline_json') : null;
    const arrived = wallClock();
    const timeline = w?.ok ? (w.value as WorkerTimeline) : undefined;
    job.tl.phases.at(-1)!.shards.push({ shard: r.shard, worker: r.workerId, arrived, w: timeline });
    if (job.slots.every(s => s.result)) void this.advance(job);
  }

  /** The values of an ok result, from its worker's transfer and of the phase's size; else why they are unusable. */
  private resultValues(job: Active, r: DataParallelResultBody): Float32Array | string {
    const id = r.tensors!.transferId;
    const got = this.transfers.get(id);
    const bytes = got?.sender === r.workerId ? got.payload : undefined;
    if (!bytes) return `its tensors (transfer ${id}) did not arrive whole`;
    this.transfers.delete(id);
    const n = job.plan.shardSizes(r.step)[r.shard],
      P = job.ps.paramCount,
      Bn = job.ps.bufferCount;
    const expected =
      r.phase === DataParallelPhase.GRADIENT
        ? P + Bn
        : r.phase === DataParallelPhase.FORWARD
          ? 2 * n * PROJECTION_DIM + Bn
          : P;
    const t = bytesToTensor(bytes, DType.FLOAT32, [expected]);
    return t.ok ? (t.tensor as Float32Array) : `wrong result size: ${t.reason}`;
  }

  /** A shard failed on a worker: it is assigned again, or its job fails after maxAttempts. */
  private shardFailed(job: Active, slot: Slot, r: DataParallelResultBody, error: string) {
    slot.failures++;
    job.workerVersion.delete(r.workerId); // it may have lost the parameters: send them again
    if (slot.worker === r.workerId) slot.worker = undefined;
    const where = `step ${r.step} shard ${r.shard}`;
    this.host.log(`data-parallel job ${job.record.id}: ${where} failed on ${r.workerId} (${slot.failures}): ${error}`);
    if (slot.failures >= (this.o.maxAttempts ?? D.MAX_ATTEMPTS)) {
      void this.fail(job, `${where} failed on ${slot.failures} attempts: ${error}`);
    } else this.assign(job, Date.now());
  }

  /** Every shard of the phase is in: the next phase, or the optimizer step. */
  private async advance(job: Active) {
    job.busy = true;
    try {
      job.computeMs += Math.max(...job.slots.map(s => s.computeMs));
      // the backward phase is assigned by the tick below at once, not by the next timer tick
      if (job.phase === 'forward') {
        await this.contrastiveLoss(job);
        return;
      }
      const P = job.ps.paramCount;
      const grads = job.slots.map(s => s.result!.subarray(0, P));
      const buffers =
        job.phase === 'gradient' ? job.slots.map(s => s.result!.subarray(P)) : job.forward.map(f => f.buffers);
      const loss = job.phase === 'gradient' ? job.slots.reduce((a, s) => a + s.loss, 0) : job.contrastiveLoss;
      const correct = job.slots.reduce((a, s) => a + s.correct, 0);
      const workers = [...new Set([...job.slots.map(s => s.by!), ...job.forward.map(f => f.worker)])].sort();
      await this.applyStep(job, grads, buffers, loss, correct, workers);
    } catch (e) {
      await this.fail(job, (e as Error).message);
    } finally {
      job.busy = false;
      this.tick();
    }
  }

  /** SimCLR: NT-Xent over all 2B projections, and each shard's slice of dloss/dz. */
  private async contrastiveLoss(job: Active) {
    const t0 = performance.now();
    const { spec } = job.record,
      t = job.ps.step,
      B = job.plan.shardSizes(t).reduce((a, b) => a + b, 0);
    const feeds = this.lossFeeds(job, this.gatherProjections(job));
    job.loss ??= new ModelRunner(new TensorSet([]), new TensorSet([]), this.o.runtime ?? {});
    const build = () => buildContrastiveLossGraph(2 * B, !!spec.supervised, contrastiveOptions(spec));
    const out = await job.loss.run(`loss/${2 * B}`, build, feeds);
    const loss = (out.loss.data as Float32Array)[0],
      gz = out['grad.z'].data as Float32Array;
    if (!Number.isFinite(loss)) throw new Error(`training diverged: the contrastive loss is ${loss} at step ${t}`);
    job.upstream = upstreamSlices(gz, job.plan.shardSizes(t));
    job.contrastiveLoss = loss;
    job.phase = 'backward';
    job.slots = this.freshSlots(job);
    job.lossMs = performance.now() - t0;
    job.tl.lossMs = job.lossMs;
    job.tl.phases.push(newPhase('backward'));
    job.computeMs += job.lossMs;
  }

  /** Keeps each shard's FORWARD result (projections, BatchNorm statistics) and returns all 2B projections. */
  private gatherProjections(job: Active): Float32Array {
    const sizes = job.plan.shardSizes(job.ps.step),
      B = sizes.reduce((a, b) => a + b, 0),
      D = PROJECTION_DIM;
    job.forward = job.slots.map(s => ({
      z: s.result!.subarray(0, 2 * sizes[s.shard] * D),
      buffers: s.result!.subarray(2 * sizes[s.shard] * D),
      worker: s.by!,
      computeMs: s.computeMs,
    }));
    const z = new Float32Array(2 * B * D);
    sizes.forEach((_, s) => {
      const { a, b, n } = viewRows(sizes, s),
        zs = job.forward[s].z;
      z.set(zs.subarray(0, n * D), a * D);
      z.set(zs.subarray(n * D), b * D);
    });
    return z;
  }

  /** The loss graph's feeds: the projections, and for supervised SimCLR the labels of both views. */
  private lossFeeds(job: Active, z: Float32Array): Record<string, ort.Tensor> {
    const t = job.ps.step,
      B = z.length / (2 * PROJECTION_DIM);
    const feeds: Record<string, ort.Tensor> = { z: new ort.Tensor('float32', z, [2 * B, PROJECTION_DIM]) };
    if (job.record.spec.supervised) {
      const l8 = gatherLabels(job.data.train, job.plan.batch(t).indices);
      feeds.labels = new ort.Tensor(
        'int64',
        BigInt64Array.from([...l8, ...l8], v => BigInt(v)),
        [2 * B],
      );
    }
    return feeds;
  }

  private async applyStep(
    job: Active,
    grads: Float32Array[],
    buffers: Float32Array[],
    loss: number,
    correct: number,
    workers: string[],
  ) {
    const { record, plan, ps } = job;
    const t = ps.step,
      { epoch, k, indices } = plan.batch(t),
      lr = plan.schedule(t);
    if (!Number.isFinite(loss)) throw new Error(`training diverged: loss is ${loss} at step ${t}`);
    const a0 = performance.now();
    const gradient = ps.apply(grads, buffers, lr);
    const aggregationMs = performance.now() - a0;
    this.stats.steps++;
    record.step = ps.step;
    const wallMs = performance.now() - job.stepStart;
    Object.assign(job.tl, ps.lastApply, { end: wallClock() });
    addToEpoch(job.progress.epoch, loss, correct, indices.length, wallMs);
    const step = { step: t, epoch, loss, lr, gradient, workers, wallMs, aggregationMs };
    this.o.onStep?.(this.stepInfo(job, step));
    const event = { event: 'step', step: t + 1, steps: plan.totalSteps, workers, wall_ms: Math.round(wallMs) };
    this.progressEvent(job, event, epoch, k + 1, loss);
    const endOfEpoch = k === plan.itersPerEpoch - 1;
    if (endOfEpoch) await this.endEpoch(job, epoch, lr);
    job.slots = [];
    job.forward = [];
    const persistEvery = this.o.persistEverySteps ?? D.DP_PERSIST_EVERY_STEPS;
    if (endOfEpoch || ps.step % persistEvery === 0 || ps.step === plan.totalSteps) this.persist(job);
    if (ps.step === plan.totalSteps && !this.stopped) await this.finish(job);
  }

  /** The finished step for onStep: `s` and the job's step counters, parameters and timeline. */
  private stepInfo(
    job: Active,
    s: Pick<StepInfo, 'step' | 'epoch' | 'loss' | 'lr' | 'gradient' | 'workers' | 'wallMs' | 'aggregationMs'>,
  ): StepInfo {
    return {
      job: job.record.id,
      ...s,
      params: job.ps.state.params.data,
      computeMs: job.computeMs,
      bytesOut: job.stepBytesOut,
      bytesIn: job.stepBytesIn,
      reassigned: job.stepReassigned,
      timeline: summariseStep(job.tl),
    };
  }

  private async endEpoch(job: Active, epoch: number, lr: number) {
    const e = job.progress.epoch;
    const m: EpochMetrics | SimclrEpoch =
      job.record.spec.model === 'cnn'
        ? {
            epoch,
            lr,
            seconds: e.seconds,
            train_loss: e.lossSum / e.seen,
            train_accuracy: e.correct / e.seen,
            ...(await evaluateCnn(job, this.o.runtime)),
          }
        : { epoch, lr, seconds: e.seconds, train_loss: e.lossSum / e.seen };
    job.progress.history.push(m);
    job.progress.trainSeconds += e.seconds;
    job.progress.trainImages += e.seen;
    job.progress.epoch = { lossSum: 0, correct: 0, seen: 0, seconds: 0 };
    this.progressEvent(job, { event: 'epoch', ...m }, epoch, job.plan.itersPerEpoch, m.train_loss);
  }

  /** Writes the model files and metrics, as a local run of the same model would. */
  private async finish(job: Active) {
    const { record } = job;
    const outputs = await runOutputs(job, this.o.runtime, line =>
      this.host.log(`data-parallel job ${record.id}: ${line}`),
    );
    const summary = writeOutputs(job, outputs, this.host.outDir(record.id));
    endJob(record, 'done', { ...summary, headline: outputs.headline });
    await this.saveRecord(record);
    this.retire(job);
    this.host.log(`data-parallel job ${record.id}: finished: ${outputs.headline}`);
    publishJobEnd(this.host.bus, record);
  }

  private async fail(job: Active, error: string) {
    if (job.record.state !== 'running' || this.stopped) return;
    endJob(job.record, 'failed', error);
    await this.saveRecord(job.record);
    this.retire(job);
    this.host.log(`data-parallel job ${job.record.id}: failed: ${error}`);
    publishJobEnd(this.host.bus, job.record);
  }

  private retire(job: Active) {
    this.jobs.delete(job.record.id);
    this.finished.set(job.record.id, job.record);
    void job.loss?.release();
  }

  /**
   * Snapshots the parameter server now and queues its write (then the record's) off the step's critical path;
   * a write that fails for good is logged and counted by the host, and the next persist writes a newer state.
   */
  private persist(job: Active) {
    if (this.stopped || job.persisting) return; // a slow store: a later persist writes a newer state
    job.persisting = true;
    void this.host.write(KEY(job.record.id, 'state.ckpt'), job.ps.encodeState(job.progress)).finally(() => {
      job.persisting = false;
    });
    void this.saveRecord(job.record);
  }

  /** Queues a write of the record as it is now. */
  private async saveRecord(r: DataParallelRecord): Promise<void> {
    if (!this.stopped) await this.host.write(KEY(r.id, 'job.json'), JSON.stringify(r, null, 2));
  }

  private progressEvent(job: Active, metrics: Record<string, unknown>, epoch: number, batch: number, loss: number) {
    this.host.bus.publish(
      jobProgressSubject(job.record.id),
      encodeEnvelope(
        {
          kind: 'progress',
          value: {
            taskId: 'data-parallel',
            jobId: job.record.id,
            epoch,
            batch,
            batches: job.plan.itersPerEpoch,
            loss: Number.isFinite(loss) ? loss : 0,
            metricsJson: jsonField(metrics),
          },
        },
        'coordinator',
      ),
    );
  }
}
