// Combining ensemble members' class probabilities into one answer (engine/ensemble/combine.ts does the maths):
// soft = equal-weight mean, weighted = weighted mean (selection weights), hard = weighted votes for each
// member's argmax class (probabilities are the vote shares; the class is the most votes, ties broken by the
// weighted mean probability).
import { weightedAverage, hardVote, predictions } from '../engine/ensemble/combine.ts';
import { CLASSES } from '../engine/model/cnn.ts';
import type { Aggregation } from './model-config.ts';

export interface Aggregated {
  probabilities: Float32Array;
  predicted: Int32Array;
}

export function aggregate(members: Float32Array[], weights: number[], how: Aggregation): Aggregated {
  if (how === 'soft' || how === 'weighted') {
    const probabilities = weightedAverage(members, how === 'soft' ? undefined : weights);
    return { probabilities, predicted: predictions(probabilities, CLASSES) };
  }
  const predicted = hardVote(members, CLASSES, weights);
  const total = weights.reduce((a, b) => a + b, 0);
  const n = members[0].length / CLASSES;
  const shares = new Float32Array(n * CLASSES);
  members.forEach((p, m) => {
    const w = weights[m] / total;
    for (const row of predictions(p, CLASSES).entries()) shares[row[0] * CLASSES + row[1]] += w;
  });
  return { probabilities: shares, predicted };
}
