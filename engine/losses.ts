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
  return g.neg(g.reduceMean(ll, probs.shape.map((_, i) => i), false));
}

/** Number of rows whose argmax equals the label, as a float scalar. */
export function correctCount(g: Graph, logits: Value, labels: Value): Value {
  const hit = g.cast(g.equal(g.argMax(logits, 1, false), labels), 'float32');
  return g.reduceSum(hit, [0], false);
}
