// The worker's half of data-parallel training: it receives parameter versions (broadcast on fleet.dp.params.<job>,
// or on its own subject when it missed one) and upstream gradients as chunked transfers, and DataParallelWork
// messages on fleet.dp.work.<id> (after their transfers), computes
// one shard at a time from its own copy of the data set, and sends each result back on fleet.dp.up.<job> as a
// chunked transfer followed by a DataParallelResult. A shard's inputs (images, augmentation, dropout masks)
// follow from (spec, step, shard), so any worker computes the same result for it.
import { randomBytes } from 'node:crypto';
import type { Subscription, Transport } from '../bus/transport.ts';
import { SUBJECTS, dpWorkSubject, dpUpSubject } from '../bus/subjects.ts';
import {
  encodeEnvelope,
  parseJsonField,
  jsonField,
  tensorToBytes,
  bytesToTensor,
  DType,
  DataParallelPhase,
  type DataParallelWorkBody,
  type DataParallelResultBody,
  type Envelope,
  type TensorChunkBody,
} from '../bus/codec.ts';
import { sendChunked, Reassembler } from '../bus/chunking.ts';
import { countingTransport } from '../bus/counting-transport.ts';
import { receive, Rejections, type RejectCounters } from '../bus/receive.ts';
import {
  DataParallelPlan,
  validateDataParallelSpec,
  modelSpecs,
  shardInputs,
  flatten,
  unflatten,
  totalSize,
  buildCnnShardGraph,
  buildSimclrForwardGraph,
  buildSimclrBackwardGraph,
  type DataParallelSpec,
  type MaskSpec,
  type BuiltGraph,
  type ShardInputs,
} from '../engine/train/data-parallel.ts';
import { TensorSet } from '../engine/model/params.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { loadDatasetCached, type loadDataset } from '../engine/data/datasets.ts';
import { PROJECTION_DIM } from '../engine/model/simclr.ts';
import { ort, type RuntimeOptions } from '../engine/runtime.ts';
import { wallClock, type WorkerTimeline } from '../bus/dp-timeline.ts';

/** How long a work item waits for its parameter or upstream transfer, unless the options say otherwise (ms). */
const TRANSFER_WAIT_MS = 30_000;
/** Completed transfers kept for the work items still to come (the oldest go first). */
const MAX_TRANSFERS = 6;
/** Shard inputs kept per job (a SimCLR shard's BACKWARD phase reuses its FORWARD inputs). */
const MAX_CACHED_INPUTS = 4;
/** How often unfinished transfers are swept (ms). */
const SWEEP_MS = 10_000;

export interface DataParallelStats {
  work: number;
  failed: number;
  malformed: number;
  bytesSent: number;
}

export interface DataParallelOptions {
  id: string;
  runtime: RuntimeOptions;
  log: (line: string) => void;
  /** How long a work item waits for its parameter or upstream transfer (default 30 s). */
  transferWaitMs?: number;
  /** Test hook: called before a work item is computed (e.g. to make the worker vanish mid-step). */
  beforeWork?: (w: DataParallelWorkBody) => void | Promise<void>;
  /** Where dropped messages are counted (fleet_bus_rejected_total); the worker's metrics. */
  counters?: RejectCounters;
}

/** One job's model on this worker: the sessions, the loaded parameter version, the plan and data. */
interface JobContext {
  spec: DataParallelSpec;
  plan: DataParallelPlan;
  data: ReturnType<typeof loadDataset>['train'];
  runner: ModelRunner;
  masks: Map<string, MaskSpec[]>;
  version: string | null;
  inputs: Map<string, ShardInputs>;
}

/** What a shard computed: one flat vector (gradients, projections, new BatchNorm statistics), loss, correct. */
interface ShardResult {
  flat: Float32Array;
  loss: number;
  correct: number;
}

/** Completed chunked transfers by id (the latest few), and the work item waiting for one. */
class Transfers {
  readonly reassembler: Reassembler;
  private readonly done = new Map<string, Uint8Array>();
  private readonly waiters = new Map<string, () => void>();

  constructor(
    rejections: Rejections,
    private readonly waitMs: number,
  ) {
    this.reassembler = new Reassembler({
      onComplete: (id, payload) => {
        this.done.set(id, payload);
        if (this.done.size > MAX_TRANSFERS) this.done.delete(this.done.keys().next().value!);
        this.waiters.get(id)?.();
      },
      onError: (id, reason, kind) =>
        rejections.reject(
          'chunk',
          kind === 'over_capacity' ? 'over_capacity' : 'bad_transfer',
          `transfer ${id}: ${reason}`,
        ),
    });
  }

  /** The transfer's payload once it has arrived; rejects when it has not within waitMs. */
  get(id: string): Promise<Uint8Array> {
    const have = this.done.get(id);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => {
        this.waiters.delete(id);
        reject(new Error(`transfer ${id} did not arrive within ${this.waitMs} ms`));
      }, this.waitMs);
      this.waiters.set(id, () => {
        clearTimeout(timer);
        this.waiters.delete(id);
        resolve(this.done.get(id)!);
      });
    });
  }
}

function newContext(spec: DataParallelSpec, runtime: RuntimeOptions): JobContext {
  const data = loadDatasetCached(spec.dataset).train;
  const specs = modelSpecs(spec.model);
  return {
    spec,
    plan: new DataParallelPlan(spec, data.count),
    data,
    masks: new Map(),
    version: null,
    inputs: new Map(),
    runner: new ModelRunner(new TensorSet(specs.params), new TensorSet(specs.buffers), runtime),
  };
}

/** Loads the parameter version `bytes` ([parameters..., buffers...] as float32) into the context's runner. */
function loadParameters(c: JobContext, transferId: string, bytes: Uint8Array): void {
  const specs = modelSpecs(c.spec.model);
  const p = bytesToTensor(bytes, DType.FLOAT32, [totalSize(specs.params) + totalSize(specs.buffers)]);
  if (!p.ok) throw new Error(`parameters ${transferId}: ${p.reason}`);
  const targets = [...c.runner.params.data, ...c.runner.buffers.data];
  const parts = unflatten(
    p.tensor as Float32Array,
    targets.map(d => d.length),
  );
  targets.forEach((d, i) => d.set(parts[i]));
  c.version = transferId;
}

/** The shard's inputs for these masks, cached for the phases that follow. */
function inputsOf(c: JobContext, w: DataParallelWorkBody, masks: MaskSpec[]): ShardInputs {
  const key = `${w.step}/${w.shard}`;
  let inp = c.inputs.get(key);
  if (!inp) {
    inp = shardInputs(c.plan, c.data, w.step, w.shard, masks);
    c.inputs.set(key, inp);
    if (c.inputs.size > MAX_CACHED_INPUTS) c.inputs.delete(c.inputs.keys().next().value!);
  }
  return inp;
}

/** The image and mask feeds of a graph over `views` images. */
function imageFeeds(inp: ShardInputs, masks: MaskSpec[], views: number): Record<string, ort.Tensor> {
  const f: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', inp.x, [views, 1, 28, 28]) };
  masks.forEach((m, i) => {
    f[m.name] = new ort.Tensor('float32', inp.masks[i], m.shape);
  });
  return f;
}

type Outputs = Record<string, ort.Tensor>;

/** Runs graph `key` (built on first use) with the feeds made for its masks; returns the outputs. */
async function runGraph(
  c: JobContext,
  key: string,
  build: () => BuiltGraph,
  feeds: (masks: MaskSpec[]) => Record<string, ort.Tensor>,
): Promise<Outputs> {
  let built: BuiltGraph | null = null;
  if (!c.masks.has(key)) {
    built = build();
    c.masks.set(key, built.masks);
  }
  return c.runner.run(key, () => built?.model ?? build().model, feeds(c.masks.get(key)!));
}

const floats = (out: Outputs, names: string[], prefix: string) =>
  names.map(n => out[`${prefix}.${n}`].data as Float32Array);

/** CNN: the shard's gradient and new BatchNorm statistics, its loss share and correct count. */
async function computeGradient(w: DataParallelWorkBody, c: JobContext, n: number): Promise<ShardResult> {
  const { plan, runner } = c;
  const B = plan.batch(w.step).indices.length;
  const out = await runGraph(
    c,
    `cnn/${n}/${B}`,
    () => buildCnnShardGraph(n, B),
    masks => {
      const inp = inputsOf(c, w, masks);
      return { ...imageFeeds(inp, masks, n), labels: new ort.Tensor('int64', inp.labels, [n]) };
    },
  );
  const parts = [...floats(out, runner.params.names, 'grad'), ...floats(out, runner.buffers.names, 'new')];
  return {
    flat: flatten(parts),
    loss: (out.loss.data as Float32Array)[0],
    correct: (out.correct.data as Float32Array)[0],
  };
}

/** SimCLR FORWARD: the shard's projections of both views and new BatchNorm statistics. */
async function computeForward(w: DataParallelWorkBody, c: JobContext, n: number): Promise<ShardResult> {
  const out = await runGraph(
    c,
    `fwd/${n}`,
    () => buildSimclrForwardGraph(n),
    masks => imageFeeds(inputsOf(c, w, masks), masks, 2 * n),
  );
  const flat = flatten([out.z.data as Float32Array, ...floats(out, c.runner.buffers.names, 'new')]);
  return { flat, loss: 0, correct: 0 };
}

/** SimCLR BACKWARD: the parameter gradient from the shard's slice of dloss/dz. */
async function computeBackward(w: DataParallelWorkBody, c: JobContext, n: number, upstream: Uint8Array) {
  const up = bytesToTensor(upstream, DType.FLOAT32, [2 * n, PROJECTION_DIM]);
  if (!up.ok) throw new Error(`upstream gradient ${w.upstreamTransferId}: ${up.reason}`);
  const out = await runGraph(
    c,
    `bwd/${n}`,
    () => buildSimclrBackwardGraph(n),
    masks => ({
      ...imageFeeds(inputsOf(c, w, masks), masks, 2 * n),
      upstream: new ort.Tensor('float32', up.tensor as Float32Array, [2 * n, PROJECTION_DIM]),
    }),
  );
  return { flat: flatten(floats(out, c.runner.params.names, 'grad')), loss: 0, correct: 0 };
}

/** The result message of work item `w`, before it is known whether it succeeded. */
const emptyResult = (w: DataParallelWorkBody, workerId: string): DataParallelResultBody => ({
  jobId: w.jobId,
  workId: w.workId,
  workerId,
  step: w.step,
  phase: w.phase,
  shard: w.shard,
  ok: false,
  error: '',
  tensors: null,
  loss: 0,
  correct: 0,
  computeMs: 0,
});

/** A worker's data-parallel service: its subscriptions, transfers, job contexts and queue of work items. */
export class DataParallelWorker {
  readonly stats: DataParallelStats = { work: 0, failed: 0, malformed: 0, bytesSent: 0 };
  private readonly rejections: Rejections;
  /** The bus as this worker sends on it, counting the bytes sent. */
  private readonly out: Transport;
  private readonly transfers: Transfers;
  /** At most one job's context: one job at a time keeps memory bounded. */
  private readonly jobs = new Map<string, JobContext>();
  private readonly subs: Subscription[];
  private readonly sweeper: ReturnType<typeof setInterval>;
  /** The job whose work item is being computed, if any. */
  private current: string | null = null;
  /** Work items run one at a time, in the order they came. */
  private queue: Promise<void> = Promise.resolve();
  /** Time in the bus handlers since the last result (ms, for the step timeline). */
  private busMs = 0;

  constructor(
    bus: Transport,
    private readonly o: DataParallelOptions,
  ) {
    this.rejections = new Rejections({
      counters: o.counters,
      log: line => o.log(`data-parallel: ${line}`),
      onReject: () => {
        this.stats.malformed++;
      },
    });
    this.out = countingTransport(bus, n => {
      this.stats.bytesSent += n;
    });
    this.transfers = new Transfers(this.rejections, o.transferWaitMs ?? TRANSFER_WAIT_MS);
    this.subs = this.subscribe(bus);
    this.sweeper = setInterval(() => this.transfers.reassembler.sweep(), SWEEP_MS);
  }

  /** The data-parallel job this worker is computing for (for its heartbeats), if any. */
  running(): string[] {
    return this.current ? [`dp-${this.current}`] : [];
  }

  async stop(): Promise<void> {
    clearInterval(this.sweeper);
    for (const sub of this.subs) sub.unsubscribe();
    await this.queue.catch(() => {});
    for (const c of this.jobs.values()) await c.runner.release();
    this.jobs.clear();
  }

  private subscribe(bus: Transport): Subscription[] {
    const work = receive(
      bus,
      dpWorkSubject(this.o.id),
      ['chunk', 'dpWork'],
      this.rejections,
      (body, env) =>
        this.timed(t0 => (body.kind === 'chunk' ? this.accept(body.value, env) : this.enqueue(body.value, t0))),
      { label: 'dpWork' },
    );
    // parameter versions broadcast to every worker (a worker that missed one gets it on its work subject)
    const params = receive(
      bus,
      SUBJECTS.dpParamsAll,
      ['chunk'],
      this.rejections,
      (body, env) => this.timed(() => this.accept(body.value, env)),
      { label: 'dpParams' },
    );
    return [work, params];
  }

  /** Runs a bus handler, adding its time to busMs; `t0` is when the message came. */
  private timed(handle: (t0: number) => void): void {
    const t0 = wallClock();
    try {
      handle(t0);
    } finally {
      this.busMs += wallClock() - t0;
    }
  }

  private accept(chunk: TensorChunkBody, env: Envelope): void {
    this.transfers.reassembler.accept(chunk, env.sender);
  }

  private enqueue(w: DataParallelWorkBody, received: number): void {
    this.queue = this.queue
      .then(() => this.handle(w, received))
      .catch(e => this.o.log(`data-parallel ${w.jobId} step ${w.step} shard ${w.shard}: ${(e as Error).message}`));
  }

  /** Computes one work item and answers it with a DataParallelResult, ok or not. */
  private async handle(w: DataParallelWorkBody, received: number): Promise<void> {
    const tl: WorkerTimeline = { received, ready: 0, loaded: 0, computed: 0, published: 0, busMs: 0 };
    const result = emptyResult(w, this.o.id);
    this.current = w.jobId;
    try {
      await this.o.beforeWork?.(w);
      await this.computeAndSend(w, tl, result);
      this.stats.work++;
    } catch (e) {
      this.stats.failed++;
      result.error = (e as Error).message;
      this.o.log(`data-parallel ${w.jobId} step ${w.step} shard ${w.shard}: failed: ${result.error}`);
    } finally {
      this.current = null;
    }
    tl.busMs = this.busMs;
    this.busMs = 0;
    result.timelineJson = jsonField(tl);
    this.out.publish(dpUpSubject(w.jobId), encodeEnvelope({ kind: 'dpResult', value: result }, this.o.id));
  }

  /** Loads the work item's parameters, computes its shard and sends the values; fills in `result` and `tl`. */
  private async computeAndSend(w: DataParallelWorkBody, tl: WorkerTimeline, result: DataParallelResultBody) {
    const c = await this.prepare(w, tl);
    const tc = performance.now();
    tl.loaded = wallClock();
    const r = await this.compute(w, c);
    result.computeMs = performance.now() - tc;
    tl.computed = wallClock();
    const transferId = `${w.workId}-${randomBytes(4).toString('hex')}`;
    const sent = sendChunked(this.out, dpUpSubject(w.jobId), tensorToBytes(r.flat), { transferId, sender: this.o.id });
    tl.published = wallClock();
    await sent;
    const tensors = { name: 'result', shape: [r.flat.length], dtype: DType.FLOAT32, transferId };
    Object.assign(result, { ok: true, loss: r.loss, correct: r.correct, tensors });
  }

  /** Checks the work item against its job and loads the parameter version it names; returns the job's context. */
  private async prepare(w: DataParallelWorkBody, tl: WorkerTimeline): Promise<JobContext> {
    const parsed = parseJsonField(w.specJson, 'spec_json');
    if (!parsed.ok) throw new Error(parsed.reason);
    validateDataParallelSpec(parsed.value);
    const c = this.context(w.jobId, parsed.value);
    if (w.shards !== c.spec.shards) throw new Error(`work says ${w.shards} shards, the job has ${c.spec.shards}`);
    if (w.step >= c.plan.totalSteps) throw new Error(`step ${w.step} is past the job's ${c.plan.totalSteps} steps`);
    if (w.upstreamTransferId) await this.transfers.get(w.upstreamTransferId);
    if (c.version !== w.paramsTransferId) {
      const bytes = await this.transfers.get(w.paramsTransferId);
      tl.ready = wallClock();
      loadParameters(c, w.paramsTransferId, bytes);
    }
    tl.ready ||= wallClock();
    return c;
  }

  /** The job's context, made on its first work item (releasing any other job's). */
  private context(jobId: string, spec: DataParallelSpec): JobContext {
    const have = this.jobs.get(jobId);
    if (have) return have;
    for (const [id, old] of this.jobs) {
      void old.runner.release();
      this.jobs.delete(id);
    }
    const c = newContext(spec, this.o.runtime);
    this.jobs.set(jobId, c);
    return c;
  }

  private async compute(w: DataParallelWorkBody, c: JobContext): Promise<ShardResult> {
    const n = c.plan.shard(c.plan.batch(w.step).indices, w.shard).length;
    if (w.phase === DataParallelPhase.GRADIENT) {
      if (c.spec.model !== 'cnn') throw new Error(`a GRADIENT step is for the CNN, this job trains ${c.spec.model}`);
      return computeGradient(w, c, n);
    }
    if (c.spec.model !== 'simclr') {
      throw new Error(`FORWARD/BACKWARD steps are for SimCLR, this job trains ${c.spec.model}`);
    }
    if (w.phase === DataParallelPhase.FORWARD) return computeForward(w, c, n);
    return computeBackward(w, c, n, await this.transfers.get(w.upstreamTransferId));
  }
}
