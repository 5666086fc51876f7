import { strict as assert } from 'node:assert';
import { batches, bootstrap, epochOrder, gatherImages, gatherLabels, validationSplit } from '../engine/data/split.ts';
import type { Split } from '../engine/data/datasets.ts';

const isPermutationOf = (a: Uint32Array, b: Uint32Array) => {
  const sa = a.slice().sort(),
    sb = b.slice().sort();
  return sa.length === sb.length && sa.every((v, i) => v === sb[i]);
};

describe('data: splits and batches', () => {
  it('validationSplit is seeded, disjoint, covers everything, 15% by default', () => {
    const a = validationSplit(1000, undefined, 42);
    const b = validationSplit(1000, 0.15, 42);
    const c = validationSplit(1000, 0.15, 43);
    assert.deepEqual(a, b);
    assert.notDeepEqual(a.val, c.val);
    assert.equal(a.val.length, 150);
    assert.equal(a.train.length, 850);
    const all = new Set([...a.train, ...a.val]);
    assert.equal(all.size, 1000); // disjoint and complete
    assert.ok(Math.max(...all) === 999 && Math.min(...all) === 0);
    for (const s of [a.train, a.val]) for (let i = 1; i < s.length; i++) assert.ok(s[i - 1] < s[i], 'sorted ascending');
    assert.equal(validationSplit(7, 0.15, 1).val.length, 1); // round(1.05)
    assert.equal(validationSplit(10, 0, 1).val.length, 0);
    assert.throws(() => validationSplit(10, 1, 1), RangeError);
  });

  it('epochOrder is a reproducible permutation that changes per epoch', () => {
    const idx = validationSplit(500, 0.2, 7).train;
    const e0 = epochOrder(idx, 1, 0);
    const e1 = epochOrder(idx, 1, 1);
    assert.ok(isPermutationOf(e0, idx));
    assert.ok(isPermutationOf(e1, idx));
    assert.notDeepEqual(e0, e1);
    assert.notDeepEqual(e0, idx);
    assert.deepEqual(epochOrder(idx, 1, 1), e1);
    assert.notDeepEqual(epochOrder(idx, 2, 1), e1);
    assert.deepEqual(idx, validationSplit(500, 0.2, 7).train, 'input not modified');
  });

  it('batches keeps the last partial batch', () => {
    const order = Uint32Array.from({ length: 10 }, (_, i) => i);
    const bs = batches(order, 4);
    assert.deepEqual(
      bs.map(b => Array.from(b)),
      [
        [0, 1, 2, 3],
        [4, 5, 6, 7],
        [8, 9],
      ],
    );
    assert.equal(batches(order, 5).length, 2);
    assert.equal(batches(new Uint32Array(0), 5).length, 0);
    assert.throws(() => batches(order, 0), RangeError);
  });

  it('bootstrap is seeded and samples with replacement', () => {
    const idx = Uint32Array.from({ length: 1000 }, (_, i) => i * 3);
    const a = bootstrap(idx, 5);
    assert.equal(a.length, idx.length);
    assert.deepEqual(bootstrap(idx, 5), a);
    assert.notDeepEqual(bootstrap(idx, 6), a);
    const allowed = new Set(idx);
    assert.ok(a.every(v => allowed.has(v)));
    const distinct = new Set(a).size;
    assert.ok(distinct < 800 && distinct > 500, `about 63% distinct expected, got ${distinct}`); // duplicates => replacement
  });

  it('gatherImages/gatherLabels copy rows by index', () => {
    const count = 4;
    const images = new Uint8Array(count * 784);
    for (let k = 0; k < count; k++) images.fill(10 + k, k * 784, (k + 1) * 784);
    const split: Split = { images, labels: Uint8Array.of(5, 6, 7, 8), count };
    const idx = Uint32Array.of(3, 0, 3);
    const out = gatherImages(split, idx, new Uint8Array(3 * 784));
    assert.deepEqual([out[0], out[783], out[784], out[1567], out[1568], out[2351]], [13, 13, 10, 10, 13, 13]);
    assert.deepEqual(Array.from(gatherLabels(split, idx)), [8, 5, 8]);
    assert.throws(() => gatherImages(split, Uint32Array.of(4), new Uint8Array(784)), RangeError);
    assert.throws(() => gatherImages(split, idx, new Uint8Array(784)), RangeError);
  });
});
