// Small numeric helpers shared by the SimCLR and MIL tests: running a graph once, and comparing arrays.
import { strict as assert } from 'node:assert';
import { createSession, ort } from '../../engine/runtime.ts';

/** Runs a serialised graph once on the given feeds (one thread: deterministic and light on a loaded machine). */
export async function runOnce(
  model: Uint8Array,
  feeds: Record<string, ort.Tensor>,
): Promise<ort.InferenceSession.OnnxValueMapType> {
  const session = await createSession(model, { threads: 1 });
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

export const f32 = (data: ArrayLike<number>, dims: number[]) =>
  new ort.Tensor('float32', Float32Array.from(data), dims);
export const i64 = (data: ArrayLike<number>, dims: number[]) =>
  new ort.Tensor('int64', BigInt64Array.from(Array.from(data, BigInt)), dims);

/** Asserts |a_i - b_i| <= atol + rtol * |b_i| elementwise (b is the reference), naming the first offending element. */
export function assertClose(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  what: string,
  { rtol = 1e-5, atol = 1e-6 } = {},
): void {
  assert.equal(a.length, b.length, `${what}: length ${a.length} vs ${b.length}`);
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= atol + rtol * Math.abs(b[i])))
      assert.fail(`${what}: element ${i} is ${a[i]}, expected ${b[i]} (difference ${d})`);
  }
}

/** Asserts two tensors agree to within `rel` of the larger one's largest magnitude (for gradients summed in a different order). */
export function assertCloseScaled(
  a: ArrayLike<number>,
  b: ArrayLike<number>,
  what: string,
  rel = 1e-4,
  floor = 1e-7,
): void {
  assert.equal(a.length, b.length, `${what}: length ${a.length} vs ${b.length}`);
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(a[i]), Math.abs(b[i]));
  const tol = rel * scale + floor;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - b[i]);
    if (!(d <= tol))
      assert.fail(`${what}: element ${i} is ${a[i]} vs ${b[i]} (difference ${d}, tolerance ${tol}, scale ${scale})`);
  }
}
