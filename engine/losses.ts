// Losses built into training graphs.
import { Graph, type Value } from './graph/graph.ts';

/** Mean softmax cross-entropy on logits [N, C] with int64 labels [N] (no softmax before it). */
export function softmaxCrossEntropy(g: Graph, logits: Value, labels: Value): { loss: Value; logProbs: Value } {
  const [loss, logProbs] = g.softmaxCrossEntropy(logits, labels, 'mean');
  return { loss, logProbs };
}

export const BCE_CLAMP = 1e-5;

/**
 * Mean binary cross-entropy on probabilities, clamped to [1e-5, 1 - 1e-5] as the reference MIL model does
 * (the clamp's gradient is zero outside the range, like torch.clamp).
 */
export function binaryCrossEntropy(g: Graph, probs: Value, targets: Value): Value {
  const p = g.clip(probs, BCE_CLAMP, 1 - BCE_CLAMP);
  const one = g.scalar(1);
  const ll = g.add(g.mul(targets, g.log(p)), g.mul(g.sub(one, targets), g.log(g.sub(one, p))));
  return g.neg(
    g.reduceMean(
      ll,
      probs.shape.map((_, i) => i),
      false,
    ),
  );
}

/** Number of rows whose argmax equals the label, as a float scalar. */
export function correctCount(g: Graph, logits: Value, labels: Value): Value {
  const hit = g.cast(g.equal(g.argMax(logits, 1, false), labels), 'float32');
  return g.reduceSum(hit, [0], false);
}

export interface ContrastiveOptions {
  /** Softmax temperature (default 0.07). */
  temperature?: number;
  /** The loss is scaled by temperature / baseTemperature (default 0.07, i.e. no scaling at the defaults). */
  baseTemperature?: number;
}

/**
 * NT-Xent in the SupCon formulation (Khosla et al. 2020, contrast mode "all") over 2B L2-normalised
 * projections z [2B, D], ordered as all first views then all second views. Without labels each anchor's
 * only positive is its other view (SimCLR); with int64 labels [2B] every other projection of the same
 * class is a positive (SupCon). Self-similarity is masked out of numerator and denominator.
 * The logits are shifted by the constant 1/T (the largest possible cosine similarity over T), which keeps
 * exp() from overflowing at low temperatures without a data-dependent max.
 */
export function supConLoss(g: Graph, z: Value, labels: Value | null, opts: ContrastiveOptions = {}): Value {
  const T = opts.temperature ?? 0.07,
    baseT = opts.baseTemperature ?? 0.07;
  const n = z.shape[0];
  if (n < 4 || n % 2 !== 0) throw new Error(`contrastive loss needs 2B projections with B >= 2, got ${n}`);
  const B = n / 2;
  const notSelf = Array.from({ length: n * n }, (_, k) => (Math.floor(k / n) === k % n ? 0 : 1));
  const logitsMask = g.constant(notSelf, [n, n]);
  let positives: Value;
  if (labels) {
    const same = g.cast(g.equal(g.reshape(labels, [n, 1]), g.reshape(labels, [1, n])), 'float32');
    positives = g.mul(same, logitsMask);
  } else {
    positives = g.constant(
      Array.from({ length: n * n }, (_, k) => (k % n === (Math.floor(k / n) + B) % n ? 1 : 0)),
      [n, n],
    );
  }
  const zT = g.transpose(z, [1, 0]);
  const logits = g.mul(g.sub(g.matmul(z, zT), g.scalar(1)), g.scalar(1 / T));
  const denom = g.log(g.reduceSum(g.mul(g.exp(logits), logitsMask), [1], true));
  const logProb = g.sub(logits, denom);
  const meanLogProbPos = g.div(g.reduceSum(g.mul(positives, logProb), [1], false), g.reduceSum(positives, [1], false));
  return g.mul(g.reduceMean(meanLogProbPos, [0], false), g.scalar(-T / baseT));
}
