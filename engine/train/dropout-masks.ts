// Dropout in training graphs is a multiplication by a mask input, drawn here for every run, instead of an
// ONNX Dropout node: ONNX Runtime's Dropout draws its numbers one at a time on one thread (7% of the CNN's
// training step), where the WebAssembly SIMD kernel (xoshiro128++, engine/kernels/kernels.wat) draws four at
// a time and the mask is read by a Mul that runs on all threads. Masks that are inputs are also a function
// of a key (seed, step, shard...) that any process can redraw: data-parallel shards, resumed runs.
//
// A graph lists its mask inputs (name, shape, rate) in its metadata, so whoever runs it can draw them.
import { size, type Graph, type Value } from '../graph/graph.ts';
import { ModelProto } from '../graph/onnx-proto.ts';
import { kernelInstance, alignedLength, type Kernels } from '../kernels/kernels.ts';
import { splitmix32, mixSeeds } from '../util/random.ts';

export interface MaskSpec { name: string; shape: number[]; p: number }

export const MASKS_METADATA = 'fleet.dropout_masks';

/** Inverted dropout at one site: x * the mask input `name` (keep / (1 - p) or 0), recorded in specs and g's metadata. */
export function maskedDropout(g: Graph, specs: MaskSpec[], x: Value, p: number, name: string): Value {
  if (!(p > 0 && p < 1)) throw new Error(`dropout ${name}: rate ${p} must be in (0, 1)`);
  specs.push({ name, shape: [...x.shape], p });
  g.metadata[MASKS_METADATA] = JSON.stringify(specs);
  return g.mul(x, g.input(name, x.shape));
}

/** The mask inputs a model lists in its metadata (none for graphs without dropout). */
export function readMaskSpecs(model: Uint8Array): MaskSpec[] {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const props = ((ModelProto.decode(model) as any).metadataProps ?? []) as { key: string; value: string }[];
  const json = props.find(p => p.key === MASKS_METADATA)?.value;
  return json ? JSON.parse(json) as MaskSpec[] : [];
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
      for (let lane = 0; lane < 4; lane++) { // xoshiro's state must not be all zero
        if (!(this.state[lane] | this.state[4 + lane] | this.state[8 + lane] | this.state[12 + lane])) this.state[lane] = 1;
      }
      const m = this.masks[site];
      const threshold = Math.min(2 ** 32 - 1, Math.round(s.p * 2 ** 32));
      this.k.dropout_mask(m.byteOffset, alignedLength(m.length) / 4, this.state.byteOffset, threshold | 0, 1 / (1 - s.p));
    });
    return this.masks;
  }
}
