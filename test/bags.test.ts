import { strict as assert } from 'node:assert';
import { makeBags, maxLength, packBags, type Bag } from '../engine/data/bags.ts';
import { IMAGE_SIZE, loadDataset, type Split } from '../engine/data/datasets.ts';

const meanStd = (xs: number[]) => {
  const m = xs.reduce((a, b) => a + b, 0) / xs.length;
  return { mean: m, std: Math.sqrt(xs.reduce((a, b) => a + (b - m) ** 2, 0) / xs.length) };
};

/** A tiny fake split: image i has every pixel equal to i + 1, label i % 10. */
function fakeSplit(count: number): Split {
  const images = new Uint8Array(count * IMAGE_SIZE);
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) {
    images.fill(i + 1, i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE);
    labels[i] = i % 10;
  }
  return { images, labels, count };
}

describe('data: MNIST bags (multiple-instance learning)', () => {
  let train: Split;
  before(() => {
    train = loadDataset('mnist').train;
  });

  it('is reproducible for a seed and differs across seeds', () => {
    const a = makeBags(train, { count: 50, seed: 1 });
    const b = makeBags(train, { count: 50, seed: 1 });
    const c = makeBags(train, { count: 50, seed: 2 });
    assert.deepEqual(a, b);
    assert.notDeepEqual(
      a.map(x => x.indices),
      c.map(x => x.indices),
    );
  });

  it('lengths are >= 1 with mean/std close to floor(N(10, 2))', () => {
    const bags = makeBags(train, { count: 2000, seed: 7 });
    assert.equal(bags.length, 2000);
    const lens = bags.map(b => b.indices.length);
    assert.ok(lens.every(l => l >= 1 && Number.isInteger(l)));
    const { mean, std } = meanStd(lens);
    assert.ok(Math.abs(mean - 9.5) < 0.2, `mean length ${mean}`); // floor loses 0.5 on average
    assert.ok(Math.abs(std - 2.02) < 0.2, `std of length ${std}`); // sqrt(4 + 1/12)
    const wide = makeBags(train, { count: 1000, meanLength: 2, stdLength: 5, seed: 3 });
    assert.ok(
      wide.every(b => b.indices.length >= 1),
      'clamped to at least 1',
    );
    assert.ok(wide.some(b => b.indices.length === 1));
    const fixed = makeBags(train, { count: 20, meanLength: 4, stdLength: 0, seed: 3 });
    assert.ok(fixed.every(b => b.indices.length === 4));
    assert.equal(maxLength(fixed), 4);
    assert.equal(maxLength(bags), Math.max(...lens));
    assert.equal(maxLength([]), 0);
  });

  it('labels agree with instance digits; positive fraction is about 1-(1-p)^len', () => {
    for (const target of [9, 0]) {
      const bags = makeBags(train, { count: 2000, target, seed: 11 });
      let p = 0;
      for (let i = 0; i < train.count; i++) if (train.labels[i] === target) p++;
      p /= train.count;
      let expected = 0,
        positives = 0;
      for (const b of bags) {
        assert.equal(b.instanceLabels.length, b.indices.length);
        b.indices.forEach((idx, i) => {
          assert.ok(idx < train.count);
          assert.equal(b.instanceLabels[i], train.labels[idx] === target ? 1 : 0);
        });
        assert.equal(b.label, b.instanceLabels.some(v => v === 1) ? 1 : 0);
        expected += 1 - (1 - p) ** b.indices.length;
        positives += b.label;
      }
      const frac = positives / bags.length;
      assert.ok(
        Math.abs(frac - expected / bags.length) < 0.04,
        `target ${target}: positive fraction ${frac}, expected ${expected / bags.length}`,
      );
      assert.ok(frac > 0.5 && frac < 0.75, `target ${target}: positive fraction ${frac}`); // 1 - 0.9^~9.5 ~ 0.63
    }
  });

  it('draws indices from the whole split with replacement', () => {
    const split = fakeSplit(20);
    const bags = makeBags(split, { count: 300, seed: 5 });
    const seen = new Set<number>();
    let repeats = false;
    for (const b of bags) {
      b.indices.forEach(i => seen.add(i));
      if (new Set(b.indices).size < b.indices.length) repeats = true;
    }
    assert.equal(seen.size, 20);
    assert.ok(repeats, 'some bag repeats an image (with replacement)');
  });

  it('rejects bad options with named errors', () => {
    const s = fakeSplit(10);
    assert.throws(() => makeBags(s, { count: 0, seed: 1 }), /count must be an integer >= 1, got 0/);
    assert.throws(() => makeBags(s, { count: 2.5, seed: 1 }), /count/);
    assert.throws(() => makeBags(s, { count: 5, target: 12, seed: 1 }), /target digit must be 0-9, got 12/);
    assert.throws(() => makeBags(s, { count: 5, target: -1, seed: 1 }), /target digit must be 0-9, got -1/);
    assert.throws(() => makeBags(s, { count: 5, target: 1.5, seed: 1 }), /target digit must be 0-9, got 1.5/);
    assert.throws(() => makeBags(s, { count: 5, meanLength: 0, seed: 1 }), /meanLength must be > 0, got 0/);
    assert.throws(() => makeBags(s, { count: 5, meanLength: NaN, seed: 1 }), /meanLength/);
    assert.throws(() => makeBags(s, { count: 5, stdLength: -1, seed: 1 }), /stdLength must be >= 0, got -1/);
    assert.throws(
      () => makeBags({ images: new Uint8Array(0), labels: new Uint8Array(0), count: 0 }, { count: 5, seed: 1 }),
      /empty split/,
    );
  });

  it('packBags copies instances, pads with zeros and masks exactly the real instances', () => {
    const split = fakeSplit(30);
    const bags = makeBags(split, { count: 6, meanLength: 4, stdLength: 2, seed: 9 });
    const L = maxLength(bags);
    const images = new Uint8Array(bags.length * L * IMAGE_SIZE).fill(77); // dirty buffer: padding must be cleared
    const mask = new Float32Array(bags.length * L).fill(5);
    packBags(split, bags, L, images, mask);
    bags.forEach((bag, b) => {
      for (let i = 0; i < L; i++) {
        const slot = b * L + i;
        const img = images.subarray(slot * IMAGE_SIZE, (slot + 1) * IMAGE_SIZE);
        if (i < bag.indices.length) {
          assert.equal(mask[slot], 1);
          assert.deepEqual(img, split.images.subarray(bag.indices[i] * IMAGE_SIZE, (bag.indices[i] + 1) * IMAGE_SIZE));
        } else {
          assert.equal(mask[slot], 0);
          assert.ok(
            img.every(v => v === 0),
            `bag ${b} slot ${i} padded with zeros`,
          );
        }
      }
    });
    let real = 0;
    for (const m of mask) real += m;
    assert.equal(
      real,
      bags.reduce((a, b) => a + b.indices.length, 0),
    );
  });

  it('packBags rejects empty bags, overlong bags and small buffers', () => {
    const split = fakeSplit(5);
    const bag = (idx: number[]): Bag => ({
      indices: Uint32Array.from(idx),
      label: 0,
      instanceLabels: new Uint8Array(idx.length),
    });
    const out = (n: number, L: number) => [new Uint8Array(n * L * IMAGE_SIZE), new Float32Array(n * L)] as const;
    assert.throws(() => packBags(split, [bag([1]), bag([])], 2, ...out(2, 2)), /bag 1 is empty/);
    assert.throws(
      () => packBags(split, [bag([1, 2, 3])], 2, ...out(1, 2)),
      /bag 0 has 3 instances, more than maxLen 2/,
    );
    assert.throws(
      () => packBags(split, [bag([1, 2])], 2, new Uint8Array(IMAGE_SIZE), new Float32Array(2)),
      /image output/,
    );
    assert.throws(
      () => packBags(split, [bag([1, 2])], 2, new Uint8Array(2 * IMAGE_SIZE), new Float32Array(1)),
      /mask output/,
    );
    assert.throws(() => packBags(split, [bag([7])], 1, ...out(1, 1)), /out of range/);
  });
});
