// Runs the graphs of one model: sessions are created once per key (graph kind and batch shape) and reused;
// parameters and buffers are fed from their TensorSets without copying, and updated buffers are written back.
import { createSession, ort, type RuntimeOptions } from '../runtime.ts';
import type { TensorSet } from '../model/params.ts';

export type Outputs = ort.InferenceSession.OnnxValueMapType;

export class ModelRunner {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();

  constructor(
    readonly params: TensorSet,
    readonly buffers: TensorSet,
    readonly runtime: RuntimeOptions = {},
    protected seed = 0,
  ) {}

  /** Runs the graph `key` (built by `build(seed)` on first use) on `inputs` plus the parameters and buffers. */
  async run(
    key: string,
    build: (seed: number) => Uint8Array,
    inputs: Record<string, ort.Tensor>,
    opts: { updateBuffers?: boolean } = {},
  ): Promise<Outputs> {
    let s = this.sessions.get(key);
    if (!s) {
      s = createSession(build(this.seed), this.runtime);
      this.sessions.set(key, s);
    }
    const feeds: Record<string, ort.Tensor> = { ...inputs };
    this.params.names.forEach((name, i) => {
      feeds[name] = new ort.Tensor('float32', this.params.data[i], this.params.shapes[i]);
    });
    this.buffers.names.forEach((name, i) => {
      feeds[name] = new ort.Tensor('float32', this.buffers.data[i], this.buffers.shapes[i]);
    });
    const out = await (await s).run(feeds);
    if (opts.updateBuffers)
      this.buffers.names.forEach((name, i) => this.buffers.data[i].set(out[`new.${name}`].data as Float32Array));
    return out;
  }

  /** The gradients output by a training graph, in parameter order. */
  grads(out: Outputs): Float32Array[] {
    return this.params.names.map(name => out[`grad.${name}`].data as Float32Array);
  }

  /**
   * Reseeds the in-graph dropout generators. ONNX Runtime keeps a generator's state inside its session, so the
   * sessions whose key starts with `prefix` are rebuilt: trainers reseed once per epoch, which makes the masks a
   * function of (seed, epoch) and a resumed run identical to an uninterrupted one.
   */
  async reseed(seed: number, prefix = 'train'): Promise<void> {
    if (seed === this.seed) return;
    this.seed = seed;
    for (const [key, s] of this.sessions) {
      if (key.startsWith(prefix)) {
        await (await s).release();
        this.sessions.delete(key);
      }
    }
  }

  async release(): Promise<void> {
    for (const s of this.sessions.values()) await (await s).release();
    this.sessions.clear();
  }
}
