// The Adam / AdamW update as a WebAssembly SIMD kernel (engine/kernels/kernels.wat): the same float64
// arithmetic in the same order as a plain JavaScript loop, so the results are bit-identical to it, two lanes
// at a time (about a third of the loop's time on the CNN's 1.4M parameters: README, speed section).
//
// The moment estimates live in the kernel's memory for the optimizer's lifetime; each step copies a
// parameter and its gradient in and the parameter back out (those arrays belong to the caller and are fed
// to ONNX Runtime).
import { kernelInstance, alignedLength, type Kernels } from '../kernels/kernels.ts';

export interface AdamStepArgs {
  beta1: number;
  beta2: number;
  eps: number;
  stepSize: number;
  bc2Sqrt: number;
}

export class AdamKernel {
  /** First and second moment per parameter (views of the kernel's memory; PyTorch's exp_avg, exp_avg_sq). */
  readonly expAvg: Float32Array[] = [];
  readonly expAvgSq: Float32Array[] = [];
  private readonly p: Float32Array;
  private readonly g: Float32Array;
  private readonly k: Kernels;

  constructor(sizes: readonly number[]) {
    const largest = Math.max(0, ...sizes);
    const floats = 2 * sizes.reduce((a, n) => a + alignedLength(n), 0) + 2 * alignedLength(largest);
    const { k, take } = kernelInstance(4 * floats);
    this.k = k;
    for (const n of sizes) {
      this.expAvg.push(take(n));
      this.expAvgSq.push(take(n));
    }
    this.p = take(largest);
    this.g = take(largest);
  }

  /**
   * Updates parameter k in place: Adam's L2 penalty (g += decay * p) when coupled, else AdamW's decoupled
   * decay (p *= decay; 1 for none).
   */
  step(k: number, p: Float32Array, g: Float32Array, coupled: boolean, decay: number, a: AdamStepArgs): void {
    const n = p.length,
      P = this.p.subarray(0, n),
      G = this.g.subarray(0, n),
      m = this.expAvg[k],
      v = this.expAvgSq[k];
    P.set(p);
    G.set(g);
    this.k.adam(
      P.byteOffset,
      G.byteOffset,
      m.byteOffset,
      v.byteOffset,
      n,
      coupled ? 1 : 0,
      decay,
      a.beta1,
      a.beta2,
      1 - a.beta1,
      1 - a.beta2,
      a.stepSize,
      a.bc2Sqrt,
      a.eps,
    );
    p.set(P);
  }
}
