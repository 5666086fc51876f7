// The worker's half of data-parallel training: it receives parameter versions (broadcast on fleet.dp.params.<job>,
// or on its own subject when it missed one) and upstream gradients as chunked transfers, and DataParallelWork
// messages on fleet.dp.work.<id> (after their transfers), computes
// one shard at a time from its own copy of the data set, and sends each result back on fleet.dp.up.<job> as a
// chunked transfer followed by a DataParallelResult. A shard's inputs (images, augmentation, dropout masks)
// follow from (spec, step, shard), so any worker computes the same result for it.
import { randomBytes } from 'node:crypto';
import type { Transport } from '../bus/transport.ts';
import { SUBJECTS, dpWorkSubject, dpUpSubject } from '../bus/subjects.ts';
import {
  encodeEnvelope, parseJsonField, jsonField, tensorToBytes, bytesToTensor, DType, DataParallelPhase,
  type DataParallelWorkBody, type DataParallelResultBody,
} from '../bus/codec.ts';
import { sendChunked, Reassembler } from '../bus/chunking.ts';
import { countingTransport } from '../bus/counting-transport.ts';
import { receive, Rejections, type RejectCounters } from '../bus/receive.ts';
import {
  DataParallelPlan, validateDataParallelSpec, modelSpecs, shardInputs, flatten, unflatten, totalSize,
  buildCnnShardGraph, buildSimclrForwardGraph, buildSimclrBackwardGraph,
  type DataParallelSpec, type MaskSpec, type BuiltGraph, type ShardInputs,
} from '../engine/train/data-parallel.ts';
import { TensorSet } from '../engine/model/params.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { loadDatasetCached, type loadDataset } from '../engine/data/datasets.ts';
import { PROJECTION_DIM } from '../engine/model/simclr.ts';
import { ort, type RuntimeOptions } from '../engine/runtime.ts';
import { wallClock, type WorkerTimeline } from '../bus/dp-timeline.ts';

export interface DataParallelStats { work: number; failed: number; malformed: number; bytesSent: number }

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

const MAX_TRANSFERS = 6;

export function startDataParallel(bus: Transport, o: DataParallelOptions) {
  const stats: DataParallelStats = { work: 0, failed: 0, malformed: 0, bytesSent: 0 };
  const rejections = new Rejections({ counters: o.counters, log: line => o.log(`data-parallel: ${line}`), onReject: () => { stats.malformed++; } });
  const out = countingTransport(bus, n => { stats.bytesSent += n; });
  const transfers = new Map<string, Uint8Array>();
  const waiters = new Map<string, () => void>();
  const jobs = new Map<string, JobContext>();
  let current: string | null = null;
  let queue: Promise<void> = Promise.resolve();
  let busMs = 0; // time in the bus handlers since the last result (for the step timeline)
  const reassembler = new Reassembler({
    onComplete: (id, payload) => {
      transfers.set(id, payload);
      if (transfers.size > MAX_TRANSFERS) transfers.delete(transfers.keys().next().value!);
      waiters.get(id)?.();
    },
    onError: (id, reason, kind) => rejections.reject('chunk', kind === 'over_capacity' ? 'over_capacity' : 'bad_transfer', `transfer ${id}: ${reason}`),
  });

  const transfer = (id: string): Promise<Uint8Array> => {
    const have = transfers.get(id);
    if (have) return Promise.resolve(have);
    return new Promise((resolve, reject) => {
      const timer = setTimeout(() => { waiters.delete(id); reject(new Error(`transfer ${id} did not arrive within ${o.transferWaitMs ?? 30_000} ms`)); }, o.transferWaitMs ?? 30_000);
      waiters.set(id, () => { clearTimeout(timer); waiters.delete(id); resolve(transfers.get(id)!); });
    });
  };

  const context = (jobId: string, spec: DataParallelSpec): JobContext => {
    let c = jobs.get(jobId);
    if (c) return c;
    for (const [id, old] of jobs) { void old.runner.release(); jobs.delete(id); } // one job at a time keeps memory bounded
    const data = loadDatasetCached(spec.dataset).train;
    const specs = modelSpecs(spec.model);
    c = {
      spec, plan: new DataParallelPlan(spec, data.count), data, masks: new Map(), version: null, inputs: new Map(),
      runner: new ModelRunner(new TensorSet(specs.params), new TensorSet(specs.buffers), o.runtime),
    };
    jobs.set(jobId, c);
    return c;
  };

  /** Runs graph `key` (built on first use) with the shard's inputs; returns the outputs. */
  const run = async (c: JobContext, key: string, build: () => BuiltGraph, feeds: (masks: MaskSpec[]) => Record<string, ort.Tensor>) => {
    let built: BuiltGraph | null = null;
    if (!c.masks.has(key)) { built = build(); c.masks.set(key, built.masks); }
    const masks = c.masks.get(key)!;
    return { out: await c.runner.run(key, () => built?.model ?? build().model, feeds(masks)), masks };
  };

  const compute = async (w: DataParallelWorkBody, c: JobContext): Promise<{ flat: Float32Array; loss: number; correct: number }> => {
    const { plan, spec, runner } = c;
    const inputsOf = (masks: MaskSpec[]) => {
      const key = `${w.step}/${w.shard}`;
      let inp = c.inputs.get(key);
      if (!inp) {
        inp = shardInputs(plan, c.data, w.step, w.shard, masks);
        c.inputs.set(key, inp);
        if (c.inputs.size > 4) c.inputs.delete(c.inputs.keys().next().value!);
      }
      return inp;
    };
    const feeds = (inp: ShardInputs, masks: MaskSpec[], views: number) => {
      const f: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', inp.x, [views, 1, 28, 28]) };
      masks.forEach((m, i) => { f[m.name] = new ort.Tensor('float32', inp.masks[i], m.shape); });
      return f;
    };
    const n = plan.shard(plan.batch(w.step).indices, w.shard).length;
    if (w.phase === DataParallelPhase.GRADIENT) {
      if (spec.model !== 'cnn') throw new Error(`a GRADIENT step is for the CNN, this job trains ${spec.model}`);
      const B = plan.batch(w.step).indices.length;
      const { out } = await run(c, `cnn/${n}/${B}`, () => buildCnnShardGraph(n, B), masks => {
        const inp = inputsOf(masks);
        return { ...feeds(inp, masks, n), labels: new ort.Tensor('int64', inp.labels, [n]) };
      });
      const parts = [...runner.params.names.map(p => out[`grad.${p}`].data as Float32Array), ...runner.buffers.names.map(b => out[`new.${b}`].data as Float32Array)];
      return { flat: flatten(parts), loss: (out.loss.data as Float32Array)[0], correct: (out.correct.data as Float32Array)[0] };
    }
    if (spec.model !== 'simclr') throw new Error(`FORWARD/BACKWARD steps are for SimCLR, this job trains ${spec.model}`);
    if (w.phase === DataParallelPhase.FORWARD) {
      const { out } = await run(c, `fwd/${n}`, () => buildSimclrForwardGraph(n), masks => feeds(inputsOf(masks), masks, 2 * n));
      return { flat: flatten([out.z.data as Float32Array, ...runner.buffers.names.map(b => out[`new.${b}`].data as Float32Array)]), loss: 0, correct: 0 };
    }
    const up = bytesToTensor(await transfer(w.upstreamTransferId), DType.FLOAT32, [2 * n, PROJECTION_DIM]);
    if (!up.ok) throw new Error(`upstream gradient ${w.upstreamTransferId}: ${up.reason}`);
    const { out } = await run(c, `bwd/${n}`, () => buildSimclrBackwardGraph(n), masks => ({
      ...feeds(inputsOf(masks), masks, 2 * n), upstream: new ort.Tensor('float32', up.tensor as Float32Array, [2 * n, PROJECTION_DIM]),
    }));
    return { flat: flatten(runner.params.names.map(p => out[`grad.${p}`].data as Float32Array)), loss: 0, correct: 0 };
  };

  const handle = async (w: DataParallelWorkBody, received: number) => {
    const tl: WorkerTimeline = { received, ready: 0, loaded: 0, computed: 0, published: 0, busMs: 0 };
    const result: DataParallelResultBody = {
      jobId: w.jobId, workId: w.workId, workerId: o.id, step: w.step, phase: w.phase, shard: w.shard, ok: false, error: '',
      tensors: null, loss: 0, correct: 0, computeMs: 0,
    };
    current = w.jobId;
    try {
      await o.beforeWork?.(w);
      const parsed = parseJsonField(w.specJson, 'spec_json');
      if (!parsed.ok) throw new Error(parsed.reason);
      validateDataParallelSpec(parsed.value);
      const c = context(w.jobId, parsed.value);
      if (w.shards !== c.spec.shards) throw new Error(`work says ${w.shards} shards, the job has ${c.spec.shards}`);
      if (w.step >= c.plan.totalSteps) throw new Error(`step ${w.step} is past the job's ${c.plan.totalSteps} steps`);
      if (w.upstreamTransferId) await transfer(w.upstreamTransferId);
      if (c.version !== w.paramsTransferId) {
        const bytes = await transfer(w.paramsTransferId);
        tl.ready = wallClock();
        const specs = modelSpecs(c.spec.model);
        const p = bytesToTensor(bytes, DType.FLOAT32, [totalSize(specs.params) + totalSize(specs.buffers)]);
        if (!p.ok) throw new Error(`parameters ${w.paramsTransferId}: ${p.reason}`);
        const parts = unflatten(p.tensor as Float32Array, [...c.runner.params.data, ...c.runner.buffers.data].map(d => d.length));
        [...c.runner.params.data, ...c.runner.buffers.data].forEach((d, i) => d.set(parts[i]));
        c.version = w.paramsTransferId;
      }
      tl.ready ||= wallClock();
      const tc = performance.now();
      tl.loaded = wallClock();
      const r = await compute(w, c);
      result.computeMs = performance.now() - tc;
      tl.computed = wallClock();
      const transferId = `${w.workId}-${randomBytes(4).toString('hex')}`;
      const payload = tensorToBytes(r.flat);
      const sent = sendChunked(out, dpUpSubject(w.jobId), payload, { transferId, sender: o.id });
      tl.published = wallClock();
      await sent;
      Object.assign(result, { ok: true, loss: r.loss, correct: r.correct, tensors: { name: 'result', shape: [r.flat.length], dtype: DType.FLOAT32, transferId } });
      stats.work++;
    } catch (e) {
      stats.failed++;
      result.error = (e as Error).message;
      o.log(`data-parallel ${w.jobId} step ${w.step} shard ${w.shard}: failed: ${result.error}`);
    } finally {
      current = null;
    }
    tl.busMs = busMs;
    busMs = 0;
    result.timelineJson = jsonField(tl);
    out.publish(dpUpSubject(w.jobId), encodeEnvelope({ kind: 'dpResult', value: result }, o.id));
  };

  const subs = [receive(bus, dpWorkSubject(o.id), ['chunk', 'dpWork'], rejections, (body, env) => {
    const t0 = wallClock();
    try {
      if (body.kind === 'chunk') reassembler.accept(body.value, env.sender);
      else {
        const w = body.value;
        queue = queue.then(() => handle(w, t0)).catch(e => o.log(`data-parallel ${w.jobId} step ${w.step} shard ${w.shard}: ${(e as Error).message}`));
      }
    } finally { busMs += wallClock() - t0; }
  }, { label: 'dpWork' }), receive(bus, SUBJECTS.dpParamsAll, ['chunk'], rejections, (body, env) => {
    // parameter versions broadcast to every worker (a worker that missed one gets it on its work subject)
    const t0 = wallClock();
    try { reassembler.accept(body.value, env.sender); } finally { busMs += wallClock() - t0; }
  }, { label: 'dpParams' })];
  const sweeper = setInterval(() => reassembler.sweep(), 10_000);

  return {
    stats,
    /** The data-parallel job this worker is computing for (for its heartbeats), if any. */
    running: (): string[] => (current ? [`dp-${current}`] : []),
    async stop() {
      clearInterval(sweeper);
      for (const sub of subs) sub.unsubscribe();
      await queue.catch(() => {});
      for (const c of jobs.values()) await c.runner.release();
      jobs.clear();
    },
  };
}
