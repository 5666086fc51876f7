// Runs a classifier's training and evaluation graphs: one session per (mode, batch size), created on
// first use and reused; parameters and buffers are fed from the TensorSets without copying.
import { createSession, ort, type RuntimeOptions } from '../runtime.ts';
import { buildTrainGraph, buildEvalGraph, type ClassifierDef } from './classifier-graphs.ts';
import type { TensorSet } from '../model/params.ts';

export interface StepResult { loss: number; correct: number; grads: Float32Array[] }
export interface EvalResult { lossSum: number; correct: number; probabilities: Float32Array }

export class ClassifierRunner {
  private readonly train = new Map<number, Promise<ort.InferenceSession>>();
  private readonly evaluate = new Map<number, Promise<ort.InferenceSession>>();

  constructor(readonly def: ClassifierDef, readonly params: TensorSet, readonly buffers: TensorSet,
    readonly runtime: RuntimeOptions = {}, private seed = 0) {}

  /**
   * Reseeds the in-graph dropout generators. ONNX Runtime keeps a generator's state inside its session,
   * so the training sessions are rebuilt: the trainer reseeds once per epoch, which makes the masks a
   * function of (seed, epoch) and a resumed run identical to an uninterrupted one.
   */
  async reseed(seed: number): Promise<void> {
    if (seed === this.seed) return;
    this.seed = seed;
    for (const s of this.train.values()) await (await s).release();
    this.train.clear();
  }

  private session(cache: Map<number, Promise<ort.InferenceSession>>, batch: number, build: () => Uint8Array) {
    let s = cache.get(batch);
    if (!s) { s = createSession(build(), this.runtime); cache.set(batch, s); }
    return s;
  }

  private feeds(x: Float32Array, labels: BigInt64Array, n: number): Record<string, ort.Tensor> {
    const feeds: Record<string, ort.Tensor> = {
      x: new ort.Tensor('float32', x.subarray(0, n * 784), [n, 1, 28, 28]),
      labels: new ort.Tensor('int64', labels.subarray(0, n), [n]),
    };
    this.params.names.forEach((name, i) => { feeds[name] = new ort.Tensor('float32', this.params.data[i], this.params.shapes[i]); });
    this.buffers.names.forEach((name, i) => { feeds[name] = new ort.Tensor('float32', this.buffers.data[i], this.buffers.shapes[i]); });
    return feeds;
  }

  /** Forward and backward on n images; updates the BatchNorm running statistics, returns the gradients. */
  async step(x: Float32Array, labels: BigInt64Array, n: number): Promise<StepResult> {
    const sess = await this.session(this.train, n, () => buildTrainGraph(this.def, n, { seed: this.seed }));
    const out = await sess.run(this.feeds(x, labels, n));
    this.buffers.names.forEach((name, i) => this.buffers.data[i].set(out[`new.${name}`].data as Float32Array));
    return {
      loss: (out.loss.data as Float32Array)[0],
      correct: (out.correct.data as Float32Array)[0],
      grads: this.params.names.map(name => out[`grad.${name}`].data as Float32Array),
    };
  }

  /** Eval-mode forward on n images (running statistics, no dropout). */
  async eval(x: Float32Array, labels: BigInt64Array, n: number): Promise<EvalResult> {
    const sess = await this.session(this.evaluate, n, () => buildEvalGraph(this.def, n));
    const out = await sess.run(this.feeds(x, labels, n));
    return {
      lossSum: (out.loss_sum.data as Float32Array)[0],
      correct: (out.correct.data as Float32Array)[0],
      probabilities: out.probabilities.data as Float32Array,
    };
  }

  async release(): Promise<void> {
    for (const cache of [this.train, this.evaluate]) {
      for (const s of cache.values()) await (await s).release();
      cache.clear();
    }
  }
}
