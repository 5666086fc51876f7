// Multiple-instance-learning bags from MNIST, as in Ilse et al. 2018 ("MNIST-bags", AttentionDeepMIL's dataloader):
// each bag draws a length ~ Normal(mean, std) truncated to an integer (at least 1), then that many image indices
// uniformly at random, with replacement, from the whole split. A bag is positive if any instance is the target digit.
import { IMAGE_SIZE, type Split } from './datasets.ts';
import { Rng } from '../util/random.ts';

export type Bag = {
  /** Image indices into the split. */
  indices: Uint32Array;
  /** 1 if any instance's digit equals the target. */
  label: 0 | 1;
  /** 1 where the instance is the target digit. */
  instanceLabels: Uint8Array;
};

export type BagOptions = { count: number; meanLength?: number; stdLength?: number; target?: number; seed: number };

export function makeBags(split: Split, opts: BagOptions): Bag[] {
  const { count, meanLength = 10, stdLength = 2, target = 9, seed } = opts;
  if (!Number.isInteger(count) || count < 1) throw new RangeError(`bag count must be an integer >= 1, got ${count}`);
  if (!Number.isInteger(target) || target < 0 || target > 9)
    throw new RangeError(`target digit must be 0-9, got ${target}`);
  if (!(meanLength > 0) || !Number.isFinite(meanLength))
    throw new RangeError(`meanLength must be > 0, got ${meanLength}`);
  if (!(stdLength >= 0) || !Number.isFinite(stdLength))
    throw new RangeError(`stdLength must be >= 0, got ${stdLength}`);
  if (!(split.count >= 1)) throw new RangeError('cannot make bags from an empty split');

  const rng = new Rng(seed);
  const bags: Bag[] = [];
  for (let b = 0; b < count; b++) {
    const length = Math.max(1, Math.floor(meanLength + stdLength * rng.normal()));
    const indices = new Uint32Array(length);
    const instanceLabels = new Uint8Array(length);
    let label: 0 | 1 = 0;
    for (let i = 0; i < length; i++) {
      const idx = rng.int(split.count);
      indices[i] = idx;
      if (split.labels[idx] === target) {
        instanceLabels[i] = 1;
        label = 1;
      }
    }
    bags.push({ indices, label, instanceLabels });
  }
  return bags;
}

/** The longest bag's length (0 for no bags). */
export function maxLength(bags: readonly Bag[]): number {
  let m = 0;
  for (const b of bags) if (b.indices.length > m) m = b.indices.length;
  return m;
}

/**
 * Copy each bag's images into a padded [bags, maxLen, 784] uint8 array and write a [bags, maxLen] mask
 * (1 for real instances, 0 for padding). Padding slots are set to zero bytes.
 */
export function packBags(
  split: Split,
  bags: readonly Bag[],
  maxLen: number,
  outImagesU8: Uint8Array,
  outMask: Float32Array,
): void {
  if (!Number.isInteger(maxLen) || maxLen < 1) throw new RangeError(`maxLen must be an integer >= 1, got ${maxLen}`);
  const slots = bags.length * maxLen;
  if (outImagesU8.length < slots * IMAGE_SIZE)
    throw new RangeError(`packBags: image output holds ${outImagesU8.length} bytes, need ${slots * IMAGE_SIZE}`);
  if (outMask.length < slots)
    throw new RangeError(`packBags: mask output holds ${outMask.length} values, need ${slots}`);
  bags.forEach((bag, b) => {
    const n = bag.indices.length;
    if (n === 0) throw new RangeError(`bag ${b} is empty`);
    if (n > maxLen) throw new RangeError(`bag ${b} has ${n} instances, more than maxLen ${maxLen}`);
    for (let i = 0; i < maxLen; i++) {
      const slot = b * maxLen + i;
      const dst = slot * IMAGE_SIZE;
      if (i < n) {
        const idx = bag.indices[i];
        if (idx >= split.count)
          throw new RangeError(`bag ${b}: index ${idx} out of range for a split of ${split.count}`);
        outImagesU8.set(split.images.subarray(idx * IMAGE_SIZE, (idx + 1) * IMAGE_SIZE), dst);
        outMask[slot] = 1;
      } else {
        outImagesU8.fill(0, dst, dst + IMAGE_SIZE);
        outMask[slot] = 0;
      }
    }
  });
}
