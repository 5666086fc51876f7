// Training steps and evaluation of a classifier on batches of 28x28 images.
import { ort, type RuntimeOptions } from '../runtime.ts';
import { buildTrainGraph, buildEvalGraph, type ClassifierDef } from './classifier-graphs.ts';
import { ModelRunner } from './model-runner.ts';
import type { TensorSet } from '../model/params.ts';

export interface StepResult {
  loss: number;
  correct: number;
  grads: Float32Array[];
}
export interface EvalResult {
  lossSum: number;
  correct: number;
  probabilities: Float32Array;
}

const batchInputs = (x: Float32Array, labels: BigInt64Array, n: number) => ({
  x: new ort.Tensor('float32', x.subarray(0, n * 784), [n, 1, 28, 28]),
  labels: new ort.Tensor('int64', labels.subarray(0, n), [n]),
});

export class ClassifierRunner extends ModelRunner {
  constructor(
    readonly def: ClassifierDef,
    params: TensorSet,
    buffers: TensorSet,
    runtime: RuntimeOptions = {},
    seed = 0,
  ) {
    super(params, buffers, runtime, seed);
  }

  /** Forward and backward on n images; updates the BatchNorm running statistics, returns the gradients. */
  async step(x: Float32Array, labels: BigInt64Array, n: number): Promise<StepResult> {
    const out = await this.run(
      `train/${n}`,
      seed => buildTrainGraph(this.def, n, { seed }),
      batchInputs(x, labels, n),
      { updateBuffers: true },
    );
    return {
      loss: (out.loss.data as Float32Array)[0],
      correct: (out.correct.data as Float32Array)[0],
      grads: this.grads(out),
    };
  }

  /** Eval-mode forward on n images (running statistics, no dropout). */
  async eval(x: Float32Array, labels: BigInt64Array, n: number): Promise<EvalResult> {
    const out = await this.run(`eval/${n}`, () => buildEvalGraph(this.def, n), batchInputs(x, labels, n));
    return {
      lossSum: (out.loss_sum.data as Float32Array)[0],
      correct: (out.correct.data as Float32Array)[0],
      probabilities: out.probabilities.data as Float32Array,
    };
  }
}
