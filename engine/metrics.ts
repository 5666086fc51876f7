// Evaluation metrics: ROC AUC (exact, Mann-Whitney U), accuracy, binary accuracy, confusion matrix.

function checkLengths(what: string, a: number, b: number): void {
  if (a !== b) throw new RangeError(`${what}: ${a} predictions but ${b} labels`);
  if (a === 0) throw new RangeError(`${what}: no samples`);
}

/**
 * Area under the ROC curve for binary labels (0/1), exact: rank all scores (ties get the average rank),
 * AUC = (sum of positive ranks - P(P+1)/2) / (P*N). Throws if only one class is present.
 */
export function rocAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number {
  const n = scores.length;
  checkLengths('rocAuc', n, labels.length);
  let pos = 0;
  for (let i = 0; i < n; i++) {
    const l = labels[i];
    if (l !== 0 && l !== 1) throw new RangeError(`rocAuc: labels must be 0 or 1, got ${l} at ${i}`);
    if (Number.isNaN(scores[i])) throw new RangeError(`rocAuc: score at ${i} is NaN`);
    pos += l;
  }
  const neg = n - pos;
  if (pos === 0 || neg === 0)
    throw new RangeError(`rocAuc: needs both classes, got ${pos} positive and ${neg} negative labels`);

  const order = Array.from({ length: n }, (_, i) => i).sort((a, b) => scores[a] - scores[b]);
  let rankSumPos = 0;
  for (let i = 0; i < n;) {
    let j = i;
    while (j + 1 < n && scores[order[j + 1]] === scores[order[i]]) j++;
    const rank = (i + j) / 2 + 1; // average of 1-based ranks i+1..j+1
    for (let k = i; k <= j; k++) if (labels[order[k]] === 1) rankSumPos += rank;
    i = j + 1;
  }
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

function argmaxRow(p: Float32Array, row: number, classes: number): number {
  let best = 0,
    bestV = p[row * classes];
  for (let c = 1; c < classes; c++)
    if (p[row * classes + c] > bestV) {
      bestV = p[row * classes + c];
      best = c;
    }
  return best;
}

function rows(what: string, probabilities: Float32Array, labels: ArrayLike<number>, classes: number): number {
  if (!Number.isInteger(classes) || classes < 1)
    throw new RangeError(`${what}: classes must be an integer >= 1, got ${classes}`);
  if (probabilities.length % classes !== 0)
    throw new RangeError(`${what}: ${probabilities.length} values is not a multiple of ${classes} classes`);
  const n = probabilities.length / classes;
  checkLengths(what, n, labels.length);
  return n;
}

/** Fraction of rows of the [N, classes] probabilities whose argmax (first on ties) equals the label. */
export function accuracy(probabilities: Float32Array, labels: ArrayLike<number>, classes: number): number {
  const n = rows('accuracy', probabilities, labels, classes);
  let correct = 0;
  for (let i = 0; i < n; i++) if (argmaxRow(probabilities, i, classes) === Number(labels[i])) correct++;
  return correct / n;
}

/** Fraction of samples where (prob >= threshold) matches the 0/1 label. */
export function binaryAccuracy(probs: ArrayLike<number>, labels: ArrayLike<number>, threshold = 0.5): number {
  checkLengths('binaryAccuracy', probs.length, labels.length);
  let correct = 0;
  for (let i = 0; i < probs.length; i++) if ((probs[i] >= threshold ? 1 : 0) === Number(labels[i])) correct++;
  return correct / probs.length;
}

/** counts[true label][predicted class] over the rows of the [N, classes] probabilities (argmax, first on ties). */
export function confusionMatrix(probabilities: Float32Array, labels: ArrayLike<number>, classes: number): number[][] {
  const n = rows('confusionMatrix', probabilities, labels, classes);
  const m = Array.from({ length: classes }, () => new Array<number>(classes).fill(0));
  for (let i = 0; i < n; i++) {
    const t = Number(labels[i]);
    if (!Number.isInteger(t) || t < 0 || t >= classes)
      throw new RangeError(`confusionMatrix: label ${t} at ${i} is not in 0..${classes - 1}`);
    m[t][argmaxRow(probabilities, i, classes)]++;
  }
  return m;
}

export interface Misclassified {
  index: number;
  label: number;
  predicted: number;
  confidence: number;
}

/**
 * The confusion matrix and the misclassified rows (test-set index, true and predicted class, the predicted
 * class's probability), most confident mistakes first, at most `max` of them: what the dashboard shows.
 */
export function testErrors(
  probabilities: Float32Array,
  labels: ArrayLike<number>,
  classes: number,
  max = 64,
): { confusion: number[][]; errors: number; misclassified: Misclassified[] } {
  const confusion = confusionMatrix(probabilities, labels, classes);
  const wrong: Misclassified[] = [];
  for (let i = 0; i < labels.length; i++) {
    const predicted = argmaxRow(probabilities, i, classes);
    const label = Number(labels[i]);
    if (predicted !== label)
      wrong.push({
        index: i,
        label,
        predicted,
        confidence: Math.round(probabilities[i * classes + predicted] * 1e4) / 1e4,
      });
  }
  wrong.sort((a, b) => b.confidence - a.confidence || a.index - b.index);
  return { confusion, errors: wrong.length, misclassified: wrong.slice(0, max) };
}
