// Index bookkeeping for training: validation hold-out, per-epoch shuffles, batches, bootstrap samples.
// Everything works on Uint32Array index lists into a Split, so data is never copied until gathered.
import { Rng } from '../util/random.ts';
import { IMAGE_SIZE, type Split } from './datasets.ts';

// Distinct constants keep the streams of different uses of the same seed apart.
const SPLIT_SALT = 0x5a17c0de;
const EPOCH_SALT = 0x9e3779b1;
const BOOT_SALT = 0xb0075ab1;

function iota(n: number): Uint32Array {
  const a = new Uint32Array(n);
  for (let i = 0; i < n; i++) a[i] = i;
  return a;
}

/**
 * Hold out round(fraction*count) examples for validation, chosen by a seeded permutation of 0..count-1.
 * Both lists are returned sorted ascending (memory-friendly gathers; shuffling is epochOrder's job),
 * disjoint, and together cover every index exactly once.
 */
export function validationSplit(
  count: number,
  fraction: number = 0.15,
  seed: number,
): { train: Uint32Array; val: Uint32Array } {
  if (!Number.isInteger(count) || count < 0) throw new RangeError(`validationSplit: bad count ${count}`);
  if (!(fraction >= 0 && fraction < 1))
    throw new RangeError(`validationSplit: fraction must be in [0, 1), got ${fraction}`);
  const perm = new Rng((seed ^ SPLIT_SALT) >>> 0).shuffle(iota(count));
  const nVal = Math.round(fraction * count);
  return { val: perm.slice(0, nVal).sort(), train: perm.slice(nVal).sort() };
}

/** A shuffled copy of indices, reproducible for (seed, epoch) and different from epoch to epoch. */
export function epochOrder(indices: Uint32Array, seed: number, epoch: number): Uint32Array {
  const rng = new Rng((seed ^ Math.imul(epoch + 1, EPOCH_SALT)) >>> 0);
  return rng.shuffle(indices.slice());
}

/** Consecutive slices of order (views, not copies); the last one may be shorter, the caller drops or pads it. */
export function batches(order: Uint32Array, batchSize: number): Uint32Array[] {
  if (!Number.isInteger(batchSize) || batchSize < 1) throw new RangeError(`batches: bad batch size ${batchSize}`);
  const out: Uint32Array[] = [];
  for (let i = 0; i < order.length; i += batchSize) out.push(order.subarray(i, i + batchSize));
  return out;
}

/** Sample indices.length entries of indices with replacement (bagging), reproducible for seed. */
export function bootstrap(indices: Uint32Array, seed: number): Uint32Array {
  const rng = new Rng((seed ^ BOOT_SALT) >>> 0);
  const out = new Uint32Array(indices.length);
  for (let i = 0; i < out.length; i++) out[i] = indices[rng.int(indices.length)];
  return out;
}

/** Copy the 784-byte images at indices into out (at least indices.length*784 bytes); returns out. */
export function gatherImages(split: Split, indices: Uint32Array, out: Uint8Array): Uint8Array {
  if (out.length < indices.length * IMAGE_SIZE)
    throw new RangeError(`gatherImages: output holds ${out.length} bytes, need ${indices.length * IMAGE_SIZE}`);
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i];
    if (k >= split.count) throw new RangeError(`gatherImages: index ${k} out of range (count ${split.count})`);
    out.set(split.images.subarray(k * IMAGE_SIZE, (k + 1) * IMAGE_SIZE), i * IMAGE_SIZE);
  }
  return out;
}

/** The labels at indices, into out if given. */
export function gatherLabels(split: Split, indices: Uint32Array, out = new Uint8Array(indices.length)): Uint8Array {
  if (out.length < indices.length)
    throw new RangeError(`gatherLabels: output holds ${out.length} labels, need ${indices.length}`);
  for (let i = 0; i < indices.length; i++) {
    const k = indices[i];
    if (k >= split.count) throw new RangeError(`gatherLabels: index ${k} out of range (count ${split.count})`);
    out[i] = split.labels[k];
  }
  return out;
}
