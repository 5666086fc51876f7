// Runs the graphs of one model: sessions are created once per key (graph kind and batch shape) and reused;
// parameters and buffers are fed from their TensorSets without copying, and updated buffers are written back.
// A training graph's dropout masks (engine/train/dropout-masks.ts) are drawn for every run from
// (seed, number of runs since the last reseed), so trainers that reseed once per epoch get masks that are a
// function of (seed, epoch, step): a run resumed at an epoch boundary draws what the uninterrupted run drew.
import { createSession, ort, type RuntimeOptions } from '../runtime.ts';
import type { TensorSet } from '../model/params.ts';
import { DropoutMasks, readMaskSpecs } from './dropout-masks.ts';

export type Outputs = ort.InferenceSession.OnnxValueMapType;

interface Entry { session: ort.InferenceSession; masks: DropoutMasks | null }

export class ModelRunner {
  private readonly sessions = new Map<string, Promise<Entry>>();
  private draws = 0;

  constructor(readonly params: TensorSet, readonly buffers: TensorSet, readonly runtime: RuntimeOptions = {}, protected seed = 0) {}

  /** Runs the graph `key` (built by `build()` on first use) on `inputs` plus the parameters, buffers and masks. */
  async run(key: string, build: () => Uint8Array, inputs: Record<string, ort.Tensor>, opts: { updateBuffers?: boolean } = {}): Promise<Outputs> {
    let s = this.sessions.get(key);
    if (!s) {
      const model = build(), specs = readMaskSpecs(model);
      s = createSession(model, this.runtime).then(session => ({ session, masks: specs.length ? new DropoutMasks(specs) : null }));
      this.sessions.set(key, s);
    }
    const { session, masks } = await s;
    const feeds: Record<string, ort.Tensor> = { ...inputs };
    this.params.names.forEach((name, i) => { feeds[name] = new ort.Tensor('float32', this.params.data[i], this.params.shapes[i]); });
    this.buffers.names.forEach((name, i) => { feeds[name] = new ort.Tensor('float32', this.buffers.data[i], this.buffers.shapes[i]); });
    // callers may bring their own masks (data-parallel shards draw theirs from (seed, step, shard))
    if (masks && !(masks.specs[0].name in inputs)) {
      masks.draw(this.seed, this.draws++).forEach((m, i) => { feeds[masks.specs[i].name] = new ort.Tensor('float32', m, masks.specs[i].shape); });
    }
    const out = await session.run(feeds);
    if (opts.updateBuffers) this.buffers.names.forEach((name, i) => this.buffers.data[i].set(out[`new.${name}`].data as Float32Array));
    return out;
  }

  /** The gradients output by a training graph, in parameter order. */
  grads(out: Outputs): Float32Array[] { return this.params.names.map(name => out[`grad.${name}`].data as Float32Array); }

  /** Restarts the dropout masks' streams from `seed` (trainers reseed once per epoch). */
  reseed(seed: number): void {
    this.seed = seed;
    this.draws = 0;
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).session.release();
    this.sessions.clear();
  }
}
