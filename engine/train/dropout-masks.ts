// Dropout masks as graph inputs, for data-parallel training: a shard's masks are a function of
// (seed, step, shard), so any worker computes the shard identically and the single-process reference sees
// the same masks. They are drawn by a WebAssembly SIMD kernel (xoshiro128++, engine/kernels/kernels.wat),
// four lanes at a time: about 1.6 ms for the CNN's 3.1M mask elements at batch 256, where the JavaScript
// generator took ~90 ms.
//
// Single-process training graphs keep ONNX Dropout nodes (engine/train/graph-context.ts): with these masks the
// CNN's step was 7% faster, but 2 of 5 MIL seeds failed to learn at 100 bags (test AUC 0.50 and 0.56, against
// 0.92-0.99 for all 5 seeds with Dropout nodes), and there was no time to find out whether that is chance.
import { size } from '../graph/graph.ts';
import { kernelInstance, alignedLength, type Kernels } from '../kernels/kernels.ts';
import { splitmix32, mixSeeds } from '../util/random.ts';

export interface MaskSpec {
  name: string;
  shape: number[];
  p: number;
}

/** The masks of one graph, drawn into the kernel's memory (reused by the next draw). */
export class DropoutMasks {
  readonly masks: Float32Array[];
  private readonly k: Kernels;
  private readonly state: Uint32Array;

  constructor(readonly specs: MaskSpec[]) {
    const { k, take } = kernelInstance(4 * (16 + specs.reduce((a, s) => a + alignedLength(size(s.shape)), 0)));
    this.k = k;
    const st = take(16);
    this.state = new Uint32Array(st.buffer, st.byteOffset, 16);
    this.masks = specs.map(s => take(size(s.shape)));
  }

  /** Draws every site's mask from key (site k uses the stream of mixSeeds(...key, k)); returns the masks. */
  draw(...key: number[]): Float32Array[] {
    this.specs.forEach((s, site) => {
      const next = splitmix32(mixSeeds(...key, site));
      for (let i = 0; i < 16; i++) this.state[i] = next();
      for (let lane = 0; lane < 4; lane++) {
        // xoshiro's state must not be all zero
        if (!(this.state[lane] | this.state[4 + lane] | this.state[8 + lane] | this.state[12 + lane]))
          this.state[lane] = 1;
      }
      const m = this.masks[site];
      const threshold = Math.min(2 ** 32 - 1, Math.round(s.p * 2 ** 32));
      this.k.dropout_mask(
        m.byteOffset,
        alignedLength(m.length) / 4,
        this.state.byteOffset,
        threshold | 0,
        1 / (1 - s.p),
      );
    });
    return this.masks;
  }
}
