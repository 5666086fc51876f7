// The WebAssembly SIMD kernels of kernels.wat: one instance per user, each with its own memory, sized once
// (growing the memory would detach the typed-array views users keep into it).
import * as fs from 'node:fs';

const module = new WebAssembly.Module(fs.readFileSync(new URL('./kernels.wasm', import.meta.url)));
const PAGE = 65536;

export interface Kernels {
  memory: WebAssembly.Memory;
  adam(
    p: number,
    g: number,
    m: number,
    v: number,
    n: number,
    coupled: number,
    decay: number,
    beta1: number,
    beta2: number,
    oneMinusBeta1: number,
    oneMinusBeta2: number,
    stepSize: number,
    bc2Sqrt: number,
    eps: number,
  ): void;
  dropout_mask(out: number, groupsOf4: number, state: number, threshold: number, keep: number): void;
}

/** A kernel instance with at least `bytes` of memory, and an allocator of 16-byte aligned float32 views. */
export function kernelInstance(bytes: number): { k: Kernels; take: (n: number) => Float32Array } {
  const k = new WebAssembly.Instance(module, {}).exports as unknown as Kernels;
  const need = Math.ceil(bytes / PAGE) - k.memory.buffer.byteLength / PAGE;
  if (need > 0) k.memory.grow(need);
  let at = 0;
  const take = (n: number) => {
    if (at + 4 * alignedLength(n) > k.memory.buffer.byteLength)
      throw new Error(`kernel memory: ${n} floats do not fit (sized for ${bytes} bytes)`);
    const a = new Float32Array(k.memory.buffer, at, n);
    at += 4 * alignedLength(n);
    return a;
  };
  return { k, take };
}

/** n rounded up to whole 16-byte vectors of float32. */
export const alignedLength = (n: number) => Math.ceil(n / 4) * 4;
