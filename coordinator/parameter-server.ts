// The parameter server of a data-parallel job: it owns the parameters, the BatchNorm running statistics and
// the optimizer state (engine/optim, PyTorch semantics), hands out each version as one flat float32 vector,
// sums the shards' gradients (in shard order, whatever order they arrived in), averages the shards' running
// statistics and steps the optimizer once per step. Persisted through a StateStore so that a restarted
// coordinator resumes from the last persisted step.
import { TrainState, type OptimizerMeta } from '../engine/train/train-state.ts';
import { modelSpecs, flatten, unflatten, totalSize, type DataParallelSpec } from '../engine/train/data-parallel.ts';
import { encodeCheckpoint, decodeCheckpoint } from '../engine/checkpoint.ts';
import type { StateStore } from './state-store.ts';
import type { Metrics } from '../telemetry/metrics.ts';

interface SavedMeta<M> {
  format: 'fleet-parameter-server-1';
  step: number;
  optimizer: OptimizerMeta;
  job: M;
}

export class ParameterServer {
  readonly state: TrainState<unknown>;
  readonly paramSizes: number[];
  readonly bufferSizes: number[];
  readonly paramCount: number;
  readonly bufferCount: number;
  /** Optimizer steps applied so far (= the version of the current parameters). */
  step = 0;
  private readonly payload: Float32Array;
  private readonly sum: Float32Array;
  /** Where the last apply() spent its time (ms), for the step timeline. */
  readonly lastApply = { sumMs: 0, buffersMs: 0, optimizerMs: 0 };

  constructor(
    spec: DataParallelSpec,
    private readonly metrics?: Metrics,
  ) {
    const specs = modelSpecs(spec.model);
    this.state = new TrainState(`dp-${spec.model}`, specs.params, specs.buffers, spec.recipe, spec.seed);
    this.paramSizes = this.state.params.data.map(d => d.length);
    this.bufferSizes = this.state.buffers.data.map(d => d.length);
    this.paramCount = totalSize(specs.params);
    this.bufferCount = totalSize(specs.buffers);
    this.payload = new Float32Array(this.paramCount + this.bufferCount);
    this.sum = new Float32Array(this.paramCount);
  }

  /** The current version as [parameters..., buffers...] (a buffer reused by the next call). */
  versionPayload(): Float32Array {
    flatten([...this.state.params.data, ...this.state.buffers.data], this.payload);
    return this.payload;
  }

  /**
   * One synchronous step: grads[s] is shard s's flat gradient (its share of the global loss), buffers[s] its
   * flat new running statistics. Returns the summed gradient (valid until the next step).
   */
  apply(grads: Float32Array[], buffers: Float32Array[], lr: number): Float32Array {
    const t0 = performance.now();
    if (grads.some(g => g.length !== this.paramCount)) {
      throw new Error(`parameter server: a gradient does not have ${this.paramCount} values`);
    }
    if (buffers.some(b => b.length !== this.bufferCount)) {
      throw new Error(`parameter server: a buffer update does not have ${this.bufferCount} values`);
    }
    const sum = this.sumGradients(grads);
    const t1 = performance.now();
    this.averageBuffers(buffers);
    const t2 = performance.now();
    this.state.optimizer.step(this.state.params.data, unflatten(sum, this.paramSizes), lr);
    this.step++;
    const t3 = performance.now();
    Object.assign(this.lastApply, { sumMs: t1 - t0, buffersMs: t2 - t1, optimizerMs: t3 - t2 });
    this.metrics?.gradientAggregation.observe((t3 - t0) / 1000);
    return sum;
  }

  /** The shards' gradients summed in shard order (so the sum does not depend on the order they arrived in). */
  private sumGradients(grads: Float32Array[]): Float32Array {
    const sum = this.sum;
    sum.set(grads[0]);
    for (let s = 1; s < grads.length; s++) {
      const g = grads[s];
      for (let i = 0; i < sum.length; i++) sum[i] += g[i];
    }
    return sum;
  }

  /** Sets the running statistics to the mean of the shards' updates (they are linear in the batch statistics). */
  private averageBuffers(buffers: Float32Array[]): void {
    const bufs = flatten(this.state.buffers.data).fill(0);
    for (const b of buffers) for (let i = 0; i < bufs.length; i++) bufs[i] += b[i] / buffers.length;
    unflatten(bufs, this.bufferSizes).forEach((v, i) => this.state.buffers.data[i].set(v));
  }

  /** Parameters, buffers, optimizer state and step with `job` (the caller's metadata), encoded now (a copy). */
  encodeState<M>(job: M): Uint8Array {
    const { tensors, optimizer } = this.state.snapshot();
    const meta: SavedMeta<M> = { format: 'fleet-parameter-server-1', step: this.step, optimizer, job };
    return encodeCheckpoint(meta, tensors);
  }

  /** Restores a save(); returns its job metadata, or null when the key holds nothing. Throws on a corrupt value. */
  async load<M>(store: StateStore, key: string): Promise<M | null> {
    const bytes = await store.get(key);
    if (!bytes) return null;
    const what = `${store.description}: ${key}`;
    const ck = decodeCheckpoint<SavedMeta<M>>(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), what);
    if (ck.meta?.format !== 'fleet-parameter-server-1' || !Number.isSafeInteger(ck.meta.step)) {
      throw new Error(`${what}: not a parameter server state`);
    }
    this.state.restoreSnapshot(what, ck.tensors, ck.meta.optimizer);
    this.step = ck.meta.step;
    return ck.meta.job;
  }
}
