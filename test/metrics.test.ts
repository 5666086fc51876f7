import { strict as assert } from 'node:assert';
import { accuracy, binaryAccuracy, confusionMatrix, rocAuc, testErrors } from '../engine/metrics.ts';
import { Rng } from '../engine/util/random.ts';

/** AUC by counting all (positive, negative) pairs: 1 if the positive scores higher, 1/2 on a tie. */
function bruteAuc(s: ArrayLike<number>, y: ArrayLike<number>): number {
  let wins = 0,
    pairs = 0;
  for (let i = 0; i < s.length; i++) {
    if (y[i] !== 1) continue;
    for (let j = 0; j < s.length; j++) {
      if (y[j] !== 0) continue;
      pairs++;
      wins += s[i] > s[j] ? 1 : s[i] === s[j] ? 0.5 : 0;
    }
  }
  return wins / pairs;
}

describe('metrics', () => {
  it('rocAuc on hand-computed examples', () => {
    assert.equal(rocAuc([0.1, 0.2, 0.8, 0.9], [0, 0, 1, 1]), 1);
    assert.equal(rocAuc([0.9, 0.8, 0.2, 0.1], [0, 0, 1, 1]), 0);
    assert.equal(rocAuc([0.5, 0.5, 0.5, 0.5, 0.5], [0, 1, 0, 1, 1]), 0.5);
    // pos {0.4, 0.8} vs neg {0.1, 0.4}: 1 + 0.5 + 1 + 1 = 3.5 of 4
    assert.equal(rocAuc([0.1, 0.4, 0.4, 0.8], [0, 0, 1, 1]), 0.875);
    // pos {0.5, 0.2} vs neg {0.5, 0.9, 0.2}: (0.5 + 0 + 1) + (0 + 0 + 0.5) = 2 of 6
    assert.ok(
      Math.abs(rocAuc(new Float32Array([0.5, 0.5, 0.2, 0.9, 0.2]), Uint8Array.from([1, 0, 1, 0, 0])) - 1 / 3) < 1e-12,
    );
  });

  it('rocAuc matches a brute-force pairwise count on random data (with ties)', () => {
    const rng = new Rng(21);
    for (const n of [2, 7, 50, 400]) {
      const s = Array.from({ length: n }, () => (rng.next() < 0.3 ? rng.int(5) / 4 : rng.next()));
      const y = Array.from({ length: n }, () => rng.int(2));
      y[0] = 0;
      y[n - 1] = 1;
      assert.ok(Math.abs(rocAuc(s, y) - bruteAuc(s, y)) < 1e-12, `n=${n}`);
    }
  });

  it('rocAuc errors: one class, mismatched lengths, bad labels', () => {
    assert.throws(() => rocAuc([0.1, 0.2], [1, 1]), /needs both classes, got 2 positive and 0 negative/);
    assert.throws(() => rocAuc([0.1, 0.2], [0, 0]), /needs both classes/);
    assert.throws(() => rocAuc([0.1], [0, 1]), /1 predictions but 2 labels/);
    assert.throws(() => rocAuc([], []), /no samples/);
    assert.throws(() => rocAuc([0.1, 0.2], [0, 2]), /labels must be 0 or 1/);
    assert.throws(() => rocAuc([NaN, 0.2], [0, 1]), /NaN/);
  });

  it('accuracy and confusionMatrix on a small hand example', () => {
    // 4 samples, 3 classes; predictions (argmax) 1, 0, 2, 0 (tie 0/2 -> first)
    const p = new Float32Array([0.1, 0.7, 0.2, 0.6, 0.3, 0.1, 0.2, 0.2, 0.6, 0.4, 0.2, 0.4]);
    const y = [1, 1, 2, 0];
    assert.equal(accuracy(p, y, 3), 0.75);
    assert.equal(accuracy(p, Uint8Array.from([1, 0, 2, 0]), 3), 1);
    assert.deepEqual(confusionMatrix(p, y, 3), [
      [1, 0, 0],
      [1, 1, 0],
      [0, 0, 1],
    ]);
    assert.throws(() => accuracy(p, y, 5), /not a multiple of 5 classes/);
    assert.throws(() => accuracy(p, [1, 2], 3), /4 predictions but 2 labels/);
    assert.throws(() => confusionMatrix(p, [1, 1, 3, 0], 3), /label 3 at 2 is not in 0..2/);
  });

  it('binaryAccuracy with the default and a custom threshold', () => {
    const probs = [0.1, 0.5, 0.7, 0.4];
    const y = [0, 1, 1, 1];
    assert.equal(binaryAccuracy(probs, y), 0.75); // 0.5 counts as positive
    assert.equal(binaryAccuracy(new Float32Array(probs), y, 0.3), 1);
    assert.equal(binaryAccuracy(probs, y, 0.8), 0.25);
    assert.throws(() => binaryAccuracy([0.1], [0, 1]), /1 predictions but 2 labels/);
  });

  it('testErrors: the confusion matrix and the mistakes, most confident first, capped', () => {
    const p = new Float32Array([
      0.1,
      0.7,
      0.2, // label 1: right
      0.6,
      0.3,
      0.1, // label 1: wrong (0, 0.6)
      0.1,
      0.1,
      0.8, // label 0: wrong (2, 0.8)
      0.4,
      0.2,
      0.4, // label 2: wrong (0 on the tie, 0.4)
    ]);
    const r = testErrors(p, [1, 1, 0, 2], 3);
    assert.deepEqual(r.confusion, confusionMatrix(p, [1, 1, 0, 2], 3));
    assert.equal(r.errors, 3);
    assert.deepEqual(r.misclassified, [
      { index: 2, label: 0, predicted: 2, confidence: 0.8 },
      { index: 1, label: 1, predicted: 0, confidence: 0.6 },
      { index: 3, label: 2, predicted: 0, confidence: 0.4 },
    ]);
    const capped = testErrors(p, [1, 1, 0, 2], 3, 1);
    assert.equal(capped.errors, 3);
    assert.deepEqual(
      capped.misclassified.map(m => m.index),
      [2],
    );
    assert.throws(() => testErrors(p, [1, 1, 0], 3), /4 predictions but 3 labels/);
  });
});
