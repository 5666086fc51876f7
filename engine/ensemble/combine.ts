// Combining the class-probability matrices of ensemble members, and scoring the result.
// Every matrix is a Float32Array of N*C values, row-major [N, C]; labels are N class indices.

/** Rows of a [N, classes] matrix, checking that the shape (and labels, when given) agree. */
export function rowCount(what: string, probs: Float32Array, classes: number, labels?: ArrayLike<number>): number {
  if (!Number.isInteger(classes) || classes < 1)
    throw new RangeError(`${what}: classes must be a positive integer, got ${classes}`);
  if (probs.length % classes !== 0)
    throw new RangeError(`${what}: ${probs.length} values is not a multiple of ${classes} classes`);
  const n = probs.length / classes;
  if (labels !== undefined) {
    if (labels.length !== n) throw new RangeError(`${what}: ${n} rows of probabilities but ${labels.length} labels`);
    for (let i = 0; i < n; i++) {
      const t = labels[i];
      if (!Number.isInteger(t) || t < 0 || t >= classes)
        throw new RangeError(`${what}: label ${t} at ${i} is not in 0..${classes - 1}`);
    }
  }
  return n;
}

/** Checks that there are members, all of one length; returns that length. */
export function memberLength(what: string, members: Float32Array[]): number {
  if (members.length === 0) throw new RangeError(`${what}: no members`);
  const len = members[0].length;
  for (let m = 1; m < members.length; m++) {
    if (members[m].length !== len)
      throw new RangeError(`${what}: member ${m} has ${members[m].length} values, member 0 has ${len}`);
  }
  return len;
}

/** Weights normalised to sum 1 (equal when omitted). */
export function normaliseWeights(what: string, count: number, weights?: number[]): number[] {
  if (weights === undefined) return new Array<number>(count).fill(1 / count);
  if (weights.length !== count) throw new RangeError(`${what}: ${weights.length} weights for ${count} members`);
  let total = 0;
  for (let m = 0; m < count; m++) {
    const w = weights[m];
    if (!Number.isFinite(w) || w < 0)
      throw new RangeError(`${what}: weight ${m} is ${w}; weights must be finite and >= 0`);
    total += w;
  }
  if (!(total > 0)) throw new RangeError(`${what}: weights sum to 0`);
  return weights.map(w => w / total);
}

/** Soft voting: the weighted mean of the members' probabilities. */
export function weightedAverage(members: Float32Array[], weights?: number[]): Float32Array {
  const len = memberLength('weightedAverage', members);
  const w = normaliseWeights('weightedAverage', members.length, weights);
  // accumulate in float64 so the result does not depend on member order beyond float32 rounding
  const acc = new Float64Array(len);
  for (let m = 0; m < members.length; m++) {
    const p = members[m],
      wm = w[m];
    if (wm === 0) continue;
    for (let j = 0; j < len; j++) acc[j] += wm * p[j];
  }
  return Float32Array.from(acc);
}

/** Index of the first largest value of row i. */
function argmaxRow(probs: ArrayLike<number>, i: number, classes: number): number {
  const base = i * classes;
  let best = 0,
    bestV = probs[base];
  for (let c = 1; c < classes; c++)
    if (probs[base + c] > bestV) {
      bestV = probs[base + c];
      best = c;
    }
  return best;
}

/**
 * Hard voting: each member votes, with its weight, for its argmax class. Classes tied on votes are
 * separated by the weighted mean probability, then by the lowest class index.
 */
export function hardVote(members: Float32Array[], classes: number, weights?: number[]): Int32Array {
  memberLength('hardVote', members);
  const n = rowCount('hardVote', members[0], classes);
  const w = normaliseWeights('hardVote', members.length, weights);
  // weighted sums of several weights can differ by rounding when they should tie (0.1 + 0.2 vs 0.3)
  const tol = 1e-9;
  const votes = new Float64Array(classes),
    mean = new Float64Array(classes);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    votes.fill(0);
    mean.fill(0);
    for (let m = 0; m < members.length; m++) {
      const p = members[m],
        wm = w[m],
        base = i * classes;
      votes[argmaxRow(p, i, classes)] += wm;
      for (let c = 0; c < classes; c++) mean[c] += wm * p[base + c];
    }
    let best = 0;
    for (let c = 1; c < classes; c++) {
      const dv = votes[c] - votes[best];
      if (dv > tol || (dv >= -tol && mean[c] > mean[best])) best = c;
    }
    out[i] = best;
  }
  return out;
}

/** Mean negative log-likelihood of the labels (cross-entropy of probabilities), clamping at eps. */
export function nll(probs: Float32Array, labels: ArrayLike<number>, classes: number, eps = 1e-12): number {
  const n = rowCount('nll', probs, classes, labels);
  if (n === 0) throw new RangeError('nll: no samples');
  let sum = 0;
  for (let i = 0; i < n; i++) sum -= Math.log(Math.max(probs[i * classes + labels[i]], eps));
  return sum / n;
}

/** Argmax class of each row (the first on ties). */
export function predictions(probs: Float32Array, classes: number): Int32Array {
  const n = rowCount('predictions', probs, classes);
  const out = new Int32Array(n);
  for (let i = 0; i < n; i++) out[i] = argmaxRow(probs, i, classes);
  return out;
}

/** Fraction of predictions equal to the labels. */
export function accuracyOfPredictions(pred: ArrayLike<number>, labels: ArrayLike<number>): number {
  if (pred.length !== labels.length)
    throw new RangeError(`accuracyOfPredictions: ${pred.length} predictions but ${labels.length} labels`);
  if (pred.length === 0) throw new RangeError('accuracyOfPredictions: no samples');
  let correct = 0;
  for (let i = 0; i < pred.length; i++) if (pred[i] === labels[i]) correct++;
  return correct / pred.length;
}

/** Fraction of rows whose argmax (first on ties) equals the label. */
export function accuracyOf(probs: Float32Array, labels: ArrayLike<number>, classes: number): number {
  rowCount('accuracyOf', probs, classes, labels);
  return accuracyOfPredictions(predictions(probs, classes), labels);
}
