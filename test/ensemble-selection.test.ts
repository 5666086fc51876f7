import { strict as assert } from 'node:assert';
import {
  accuracyOf,
  accuracyOfPredictions,
  hardVote,
  nll,
  predictions,
  weightedAverage,
} from '../engine/ensemble/combine.ts';
import { caruanaSelection } from '../engine/ensemble/selection.ts';

const close = (a: number, b: number, tol = 1e-6, msg?: string) =>
  assert.ok(Math.abs(a - b) <= tol, msg ?? `${a} vs ${b}`);
const closeAll = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-6) => {
  assert.equal(a.length, b.length);
  for (let i = 0; i < a.length; i++) close(a[i], b[i], tol, `[${i}] ${a[i]} vs ${b[i]}`);
};

// Two classes, every label 1, so a member is given by q = p(class 1) per sample and the NLL of an
// average is mean_i(-ln q_i). Values are multiples of 1/16, exact in float32, so sums are exact.
// A model is correct on a sample when q > 1/2 (q = 1/2 is a tie, argmax picks class 0: wrong).
const two = (q: number[]) => Float32Array.from(q.flatMap(v => [1 - v, v]));
const labels = [1, 1, 1, 1];
const M0 = two([7 / 8, 7 / 8, 7 / 8, 1 / 4]); // sharp, but misses sample 3
const M1 = two([5 / 8, 5 / 8, 5 / 8, 5 / 8]); // right everywhere, never confident
const M2 = two([15 / 16, 15 / 16, 3 / 4, 1 / 4]); // like M0: good alone, adds nothing next to it
const members = [M0, M1, M2];
// ln(8/7) = 0.133531, ln 4 = 1.386294, ln(8/5) = 0.470004, ln(16/15) = 0.064539, ln(4/3) = 0.287682
// Alone:  M0: (3 * 0.133531 + 1.386294) / 4 = 0.446722   accuracy 3/4
//         M1: 0.470004                                     accuracy 1
//         M2: (2 * 0.064539 + 0.287682 + 1.386294) / 4 = 0.450763   accuracy 3/4

describe('ensemble selection (Caruana)', () => {
  it('loss: greedy with replacement picks M0, M1, M0 again, and returns the best prefix', () => {
    const r = caruanaSelection(members, labels, 2, { maxIter: 4 });
    // step 1: best alone is M0 (0.446722 < 0.450763 < 0.470004)
    // step 2: {M0,M0} = 0.446722
    //         {M0,M1}: q = [3/4, 3/4, 3/4, 7/16]: (3 ln(4/3) + ln(16/7)) / 4 = (0.863046 + 0.826679) / 4 = 0.422431
    //         {M0,M2}: q = [29/32, 29/32, 13/16, 1/4]: (2 * 0.098440 + 0.207639 + 1.386294) / 4 = 0.447703
    //         -> M1
    // step 3: {M0,M0,M1}: q = [19/24 x3, 3/8]: (3 ln(24/19) + ln(8/3)) / 4 = (0.700845 + 0.980829) / 4 = 0.420419
    //         {M0,M1,M1}: q = [17/24 x3, 1/2]: (3 * 0.344840 + 0.693147) / 4 = 0.431917
    //         {M0,M1,M2}: q = [13/16, 13/16, 3/4, 3/8]: (2 * 0.207639 + 0.287682 + 0.980829) / 4 = 0.420948
    //         -> M0 a second time (selection with replacement)
    // step 4: {M0 x3, M1}: q = [13/16 x3, 11/32]: (3 * 0.207639 + 1.067841) / 4 = 0.422690
    //         {M0 x2, M1 x2} = {M0,M1} = 0.422431
    //         {M0 x2, M1, M2}: q = [53/64, 53/64, 25/32, 11/32]: (2 * 0.188591 + 0.246860 + 1.067841) / 4 = 0.422971
    //         -> M1, but 0.422431 is worse than step 3's 0.420419: the best prefix is step 3
    assert.deepEqual(
      r.steps.map(s => s.picked),
      [0, 1, 0, 1],
    );
    assert.deepEqual(
      r.steps.map(s => s.step),
      [1, 2, 3, 4],
    );
    closeAll(
      r.steps.map(s => s.score),
      [0.446722, 0.422431, 0.420419, 0.422431],
    );
    assert.deepEqual(
      r.steps.map(s => s.weights),
      [
        [1, 0, 0],
        [1 / 2, 1 / 2, 0],
        [2 / 3, 1 / 3, 0],
        [1 / 2, 1 / 2, 0],
      ],
    );
    assert.deepEqual(r.counts, [2, 1, 0]);
    assert.deepEqual(r.weights, [2 / 3, 1 / 3, 0]);
    assert.deepEqual(r.bestSteps, [2]);
    // a step's score is the NLL of the weighted average it describes
    for (const s of r.steps) close(s.score, nll(weightedAverage(members, s.weights), labels, 2));
    // stopping after 2 steps, the best prefix is the last one
    assert.deepEqual(caruanaSelection(members, labels, 2, { maxIter: 2 }).weights, [1 / 2, 1 / 2, 0]);
  });

  it('sorted initialisation changes the result', () => {
    const r = caruanaSelection(members, labels, 2, { initSize: 2, maxIter: 1 });
    // init: the two best alone by loss, M0 (0.446722) and M2 (0.450763), each once;
    //   {M0,M2} = 0.447703 (computed above)
    // step 3: {M0,M2,M0}: q = [43/48, 43/48, 5/6, 1/4]: 0.447154; {M0,M2,M2}: 0.448483;
    //         {M0,M2,M1} = 0.420948 -> M1, and it beats the initial ensemble
    assert.deepEqual(
      r.steps.map(s => s.picked),
      [0, 2, 1],
    );
    closeAll(
      r.steps.map(s => s.score),
      [0.446722, 0.447703, 0.420948],
    );
    assert.deepEqual(r.counts, [1, 1, 1]);
    assert.deepEqual(r.weights, [1 / 3, 1 / 3, 1 / 3]);
    // without initialisation, three members are {M0,M0,M1} (0.420419): a different ensemble
    const plain = caruanaSelection(members, labels, 2, { maxIter: 3 });
    assert.deepEqual(plain.counts, [2, 1, 0]);
  });

  it('the initial ensemble is kept when no addition improves on it', () => {
    // initSize 3 starts from {M0,M1,M2} = 0.420948, and every addition is worse:
    // +M0 = 0.422971 (above), +M1: q = [49/64, 49/64, 23/32, 7/16] -> 0.422761,
    // +M2: q = [27/32, 27/32, 3/4, 11/32] -> 0.423830; so the initial ensemble is the one returned
    const r = caruanaSelection(members, labels, 2, { initSize: 3, maxIter: 1 });
    // initial members in order of their own scores: M0, M2, M1
    assert.deepEqual(
      r.steps.map(s => s.picked),
      [0, 2, 1, 1],
    );
    closeAll(
      r.steps.slice(2).map(s => s.score),
      [0.420948, 0.422761],
    );
    assert.deepEqual(r.bestSteps, [2]);
    assert.deepEqual(r.counts, [1, 1, 1]);
  });

  it('accuracy and loss pick differently; accuracy ties go to the lower NLL', () => {
    const r = caruanaSelection(members, labels, 2, { maxIter: 4, objective: 'accuracy' });
    // step 1: M1 is the only member right on all 4 samples (loss picked M0)
    // step 2: {M1,M1}: accuracy 1; {M1,M0}: sample 3 q = 7/16, wrong (3/4); {M1,M2}: same (3/4) -> M1
    // step 3: {M1 x3}: 1; {M1,M1,M0} and {M1,M1,M2}: sample 3 q = 1/2, a tie, wrong (3/4) -> M1
    // step 4: {M1 x3, M0}: q = [11/16 x3, 17/32], accuracy 1, NLL (3 * 0.374693 + 0.632523) / 4 = 0.439151
    //         {M1 x4}: accuracy 1, NLL 0.470004
    //         {M1 x3, M2}: q = [45/64, 45/64, 21/32, 17/32], accuracy 1, NLL 0.439544
    //         -> M0 (lowest NLL among the accurate)
    assert.deepEqual(
      r.steps.map(s => s.picked),
      [1, 1, 1, 0],
    );
    assert.deepEqual(
      r.steps.map(s => s.score),
      [1, 1, 1, 1],
    );
    // all prefixes have accuracy 1; the best prefix is the one with the lowest NLL: step 4
    assert.deepEqual(r.counts, [1, 3, 0]);
    assert.deepEqual(r.weights, [1 / 4, 3 / 4, 0]);

    // equal accuracy, lower NLL wins even against a lower index
    const weak = two([5 / 8, 5 / 8, 5 / 8, 5 / 8]),
      strong = two([7 / 8, 7 / 8, 7 / 8, 7 / 8]);
    assert.equal(caruanaSelection([weak, strong], labels, 2, { maxIter: 1, objective: 'accuracy' }).steps[0].picked, 1);
  });

  it('ties in the objective go to the lowest member index', () => {
    const r = caruanaSelection([M1, M0, M0, M1], labels, 2, { maxIter: 3 });
    // same numbers as above with M0 at index 1 (and a copy at 2), M1 at 0 (copy at 3)
    assert.deepEqual(
      r.steps.map(s => s.picked),
      [1, 0, 1],
    );
  });

  it('weights sum to 1 and equal counts / total', () => {
    for (const opts of [
      { maxIter: 7 },
      { maxIter: 5, initSize: 2 },
      { maxIter: 6, objective: 'accuracy' as const },
      { maxIter: 4, bags: 5, seed: 3 },
    ]) {
      const r = caruanaSelection(members, labels, 2, opts);
      const total = r.counts.reduce((a, c) => a + c, 0);
      close(
        r.weights.reduce((a, w) => a + w, 0),
        1,
        1e-12,
      );
      assert.deepEqual(
        r.weights,
        r.counts.map(c => c / total),
      );
      for (const s of r.steps)
        close(
          s.weights.reduce((a, w) => a + w, 0),
          1,
          1e-12,
        );
    }
  });

  it('bagged selection is seeded and draws a subset per bag', () => {
    const opts = { maxIter: 3, bags: 6, bagFraction: 0.5, seed: 11 };
    const a = caruanaSelection(members, labels, 2, opts),
      b = caruanaSelection(members, labels, 2, opts);
    assert.deepEqual(a.weights, b.weights);
    assert.deepEqual(a.steps, b.steps);
    close(
      a.weights.reduce((s, w) => s + w, 0),
      1,
      1e-12,
    );
    assert.equal(a.bestSteps.length, 6);
    assert.equal(a.steps.length, 6 * 3);
    for (let bag = 0; bag < 6; bag++) {
      // round(0.5 * 3) = 2 members available per bag
      const picked = new Set(a.steps.filter(s => s.bag === bag).map(s => s.picked));
      assert.ok(picked.size <= 2, `bag ${bag} used ${[...picked]}`);
    }
    // summed counts are the bags' best prefixes
    const total = a.bestSteps.reduce((s, i) => s + a.steps[i].step, 0);
    assert.equal(
      a.counts.reduce((s, c) => s + c, 0),
      total,
    );
    // with every member in every bag, each bag repeats the unbagged run
    const full = caruanaSelection(members, labels, 2, { maxIter: 4, bags: 3, bagFraction: 1 });
    assert.deepEqual(full.counts, [6, 3, 0]);
    assert.deepEqual(full.weights, [2 / 3, 1 / 3, 0]);
    // a bag never has fewer than one member
    const one = caruanaSelection(members, labels, 2, { maxIter: 2, bags: 2, bagFraction: 0.01, seed: 1 });
    for (let bag = 0; bag < 2; bag++)
      assert.equal(new Set(one.steps.filter(s => s.bag === bag).map(s => s.picked)).size, 1);
  });

  it('rejects bad options and shapes with clear errors', () => {
    const bad = (opts: object, re: RegExp) => assert.throws(() => caruanaSelection(members, labels, 2, opts), re);
    bad({ maxIter: 0 }, /maxIter must be an integer >= 1, got 0/);
    bad({ maxIter: 1.5 }, /maxIter must be an integer >= 1/);
    bad({ initSize: 4 }, /initSize 4 exceeds the 3 members/);
    bad({ initSize: -1 }, /initSize must be an integer >= 0/);
    bad({ bags: 0 }, /bags must be an integer >= 1/);
    bad({ bags: 2, bagFraction: 0 }, /bagFraction must be in \(0, 1\], got 0/);
    bad({ bags: 2, bagFraction: 1.5 }, /bagFraction must be in \(0, 1\]/);
    bad({ bags: 2, initSize: 3 }, /initSize 3 exceeds the 2 members in each bag/);
    bad({ objective: 'f1' }, /objective must be 'loss' or 'accuracy'/);
    assert.throws(() => caruanaSelection([], labels, 2), /no members/);
    assert.throws(() => caruanaSelection([M0, M1.subarray(2)], labels, 2), /member 1 has 6 values, member 0 has 8/);
    assert.throws(() => caruanaSelection(members, [1, 1, 1], 2), /4 rows of probabilities but 3 labels/);
    assert.throws(() => caruanaSelection(members, [1, 1, 2, 1], 2), /label 2 at 2 is not in 0..1/);
  });
});

describe('ensemble voting and scores', () => {
  it('weightedAverage by hand', () => {
    const a = Float32Array.from([0.2, 0.8, 0.6, 0.4]),
      b = Float32Array.from([0.6, 0.4, 1, 0]);
    // equal: (a + b) / 2
    closeAll(weightedAverage([a, b]), [0.4, 0.6, 0.8, 0.2]);
    closeAll(weightedAverage([a, b], [2, 2]), [0.4, 0.6, 0.8, 0.2]);
    // [1, 3] -> [1/4, 3/4]: 0.05 + 0.45, 0.2 + 0.3, 0.15 + 0.75, 0.1 + 0
    closeAll(weightedAverage([a, b], [1, 3]), [0.5, 0.5, 0.9, 0.1]);
    // a zero weight drops a member
    closeAll(weightedAverage([a, b], [0, 5]), b);
  });

  it('hardVote: majority, weighted majority, ties by mean probability then lowest class', () => {
    const m0 = Float32Array.from([0.5, 0.3, 0.2]); // votes 0
    const m1 = Float32Array.from([0.1, 0.6, 0.3]); // votes 1
    const m2 = Float32Array.from([0.4, 0.45, 0.15]); // votes 1
    assert.deepEqual([...hardVote([m0, m1, m2], 3)], [1]);
    // weights 3:1:1 -> class 0 has 3 votes, class 1 has 2
    assert.deepEqual([...hardVote([m0, m1, m2], 3, [3, 1, 1])], [0]);
    // m0 vs m1, one vote each: mean p = [0.3, 0.45, 0.25] -> class 1
    assert.deepEqual([...hardVote([m0, m1], 3)], [1]);
    // m0 vs [0.45, 0.5, 0.05], one vote each: mean p = [0.475, 0.4, 0.125] -> class 0
    assert.deepEqual([...hardVote([m0, Float32Array.from([0.45, 0.5, 0.05])], 3)], [0]);
    // tie on votes and on mean probability (1/2, 1/2) -> class 0
    assert.deepEqual([...hardVote([Float32Array.from([0.75, 0.25]), Float32Array.from([0.25, 0.75])], 2)], [0]);
    // weights 0.1 + 0.2 against 0.3 are a tie despite rounding: mean p(class 1) = (0.04 + 0.08 + 0.21) / 0.6 = 0.55 wins
    const x = Float32Array.from([0.6, 0.4]),
      y = Float32Array.from([0.3, 0.7]);
    assert.deepEqual([...hardVote([x, x, y], 2, [0.1, 0.2, 0.3])], [1]);
    // several rows at once
    assert.deepEqual(
      [...hardVote([Float32Array.from([0.9, 0.1, 0.2, 0.8]), Float32Array.from([0.6, 0.4, 0.3, 0.7])], 2)],
      [0, 1],
    );
  });

  it('nll, predictions and accuracy by hand', () => {
    const p = Float32Array.from([0.5, 0.5, 0.25, 0.75, 0.9, 0.1]);
    // labels [0, 1, 1]: (ln 2 + ln(4/3) + ln 10) / 3 = (0.693147 + 0.287682 + 2.302585) / 3
    close(nll(p, [0, 1, 1], 2), 1.094471);
    // a zero probability is clamped at eps: -ln(1e-12) = 27.631021, or ln(1000) with eps 1e-3
    close(nll(Float32Array.from([1, 0]), [1], 2), 27.631021);
    close(nll(Float32Array.from([1, 0]), [1], 2, 1e-3), 6.907755);
    // first max on ties
    assert.deepEqual([...predictions(p, 2)], [0, 1, 0]);
    close(accuracyOf(p, [0, 1, 1], 2), 2 / 3, 1e-12);
    close(accuracyOf(p, Uint8Array.from([1, 1, 0]), 2), 2 / 3, 1e-12);
    assert.equal(accuracyOfPredictions([0, 1, 2], [0, 1, 2]), 1);
    assert.equal(accuracyOfPredictions(Int32Array.from([0, 1, 2, 2]), [0, 1, 1, 0]), 0.5);
  });

  it('error messages', () => {
    const a = Float32Array.from([0.5, 0.5]);
    assert.throws(() => weightedAverage([]), /weightedAverage: no members/);
    assert.throws(() => weightedAverage([a, new Float32Array(4)]), /member 1 has 4 values, member 0 has 2/);
    assert.throws(() => weightedAverage([a, a], [1]), /1 weights for 2 members/);
    assert.throws(() => weightedAverage([a, a], [1, -1]), /weight 1 is -1; weights must be finite and >= 0/);
    assert.throws(() => weightedAverage([a, a], [0, 0]), /weights sum to 0/);
    assert.throws(() => weightedAverage([a, a], [1, NaN]), /weight 1 is NaN/);
    assert.throws(() => hardVote([a, a], 3), /hardVote: 2 values is not a multiple of 3 classes/);
    assert.throws(() => hardVote([a], 0), /classes must be a positive integer, got 0/);
    assert.throws(() => nll(a, [0, 1], 2), /nll: 1 rows of probabilities but 2 labels/);
    assert.throws(() => nll(a, [2], 2), /label 2 at 0 is not in 0..1/);
    assert.throws(() => accuracyOf(a, [-1], 2), /label -1 at 0/);
    assert.throws(() => accuracyOfPredictions([0], [0, 1]), /1 predictions but 2 labels/);
    assert.throws(() => accuracyOfPredictions([], []), /no samples/);
  });
});
