// Ensemble selection (Caruana, Niculescu-Mizil, Crew & Ksikes, ICML 2004): greedy forward selection
// with replacement of members for an equal-weight average of their validation probabilities.
import { Rng } from '../util/random.ts';
import { memberLength, rowCount } from './combine.ts';

export type SelectionObjective = 'loss' | 'accuracy';

export interface CaruanaOptions {
  /** Greedy additions after the sorted initialisation (default 50). */
  maxIter?: number;
  /** Sorted initialisation: start from the best `initSize` distinct members by the objective (default 0). */
  initSize?: number;
  /** 'loss' minimises the NLL of the average; 'accuracy' maximises accuracy, ties broken by lower NLL (default 'loss'). */
  objective?: SelectionObjective;
  /** Bagged selection: number of runs on random subsets of the members (default 1 = no bagging, all members). */
  bags?: number;
  /** Share of the members available in each bag, in (0, 1] (default 0.5); only used when bags > 1. */
  bagFraction?: number;
  /** Seed of the member subsets (default 0). */
  seed?: number;
}

export interface SelectionStep {
  /** Bag the step belongs to (0 without bagging). */
  bag: number;
  /** Ensemble size after this addition (1-based, counting the sorted initialisation). */
  step: number;
  /** Member index added. */
  picked: number;
  /** Objective of the ensemble after the addition: NLL for 'loss', accuracy for 'accuracy'. */
  score: number;
  /** Weights of the ensemble after the addition, per member (counts / size). */
  weights: number[];
}

export interface CaruanaResult {
  /** Per member: counts / total. */
  weights: number[];
  /** Per member: how often it is in the chosen ensemble(s), summed over bags. */
  counts: number[];
  /** Every addition of every bag, in order, for plotting. */
  steps: SelectionStep[];
  /** Per bag: index into `steps` of the chosen (best-scoring) ensemble. */
  bestSteps: number[];
}

interface Score {
  loss: number;
  correct: number;
}

/** Strictly better: lower loss; for accuracy, more correct and then lower loss. */
function better(a: Score, b: Score, objective: SelectionObjective): boolean {
  if (objective === 'accuracy' && a.correct !== b.correct) return a.correct > b.correct;
  return a.loss < b.loss;
}

/**
 * Score of the average (sum + add) / k, where sum holds the current ensemble's summed probabilities.
 * Works on the sum so that trying a candidate allocates nothing.
 */
function scoreOf(
  sum: Float64Array,
  add: Float32Array | null,
  k: number,
  labels: ArrayLike<number>,
  classes: number,
  withAccuracy: boolean,
): Score {
  const n = labels.length,
    eps = 1e-12;
  let loss = 0,
    correct = 0;
  for (let i = 0; i < n; i++) {
    const base = i * classes,
      t = labels[i];
    const pt = (sum[base + t] + (add ? add[base + t] : 0)) / k;
    loss -= Math.log(Math.max(pt, eps));
    if (!withAccuracy) continue;
    // argmax of the sum is the argmax of the average (first max on ties, as in predictions())
    let best = 0,
      bestV = sum[base] + (add ? add[base] : 0);
    for (let c = 1; c < classes; c++) {
      const v = sum[base + c] + (add ? add[base + c] : 0);
      if (v > bestV) {
        bestV = v;
        best = c;
      }
    }
    if (best === t) correct++;
  }
  return { loss: loss / n, correct };
}

/** One selection run over the members in `pool`; appends its steps and returns the counts of its best prefix. */
function selectOnce(
  members: Float32Array[],
  pool: number[],
  labels: ArrayLike<number>,
  classes: number,
  objective: SelectionObjective,
  initSize: number,
  maxIter: number,
  bag: number,
  steps: SelectionStep[],
): { counts: number[]; bestStep: number } {
  const n = labels.length,
    withAcc = objective === 'accuracy';
  const counts = new Array<number>(members.length).fill(0);
  const sum = new Float64Array(n * classes);
  let size = 0;
  let best: Score | null = null,
    bestCounts = counts.slice(),
    bestStep = -1;

  const add = (j: number, s: Score) => {
    const p = members[j];
    for (let x = 0; x < sum.length; x++) sum[x] += p[x];
    counts[j]++;
    size++;
    steps.push({
      bag,
      step: size,
      picked: j,
      score: withAcc ? s.correct / n : s.loss,
      weights: counts.map(c => c / size),
    });
  };

  if (initSize > 0) {
    // sorted initialisation: the initSize individually best members (ties: lower index), each once
    const solo = pool.map(j => ({ j, s: scoreOf(sum, members[j], 1, labels, classes, withAcc) }));
    solo.sort((a, b) => (better(a.s, b.s, objective) ? -1 : better(b.s, a.s, objective) ? 1 : a.j - b.j));
    for (let r = 0; r < initSize; r++)
      add(solo[r].j, scoreOf(sum, members[solo[r].j], size + 1, labels, classes, withAcc));
    // the initial ensemble is the first candidate for the final one; prefixes inside it are not
    best = scoreOf(sum, null, size, labels, classes, withAcc);
    bestCounts = counts.slice();
    bestStep = steps.length - 1;
  }

  for (let it = 0; it < maxIter; it++) {
    let pick = -1,
      pickScore: Score | null = null;
    for (const j of pool) {
      const s = scoreOf(sum, members[j], size + 1, labels, classes, withAcc);
      if (pickScore === null || better(s, pickScore, objective)) {
        pick = j;
        pickScore = s;
      } // ties: lowest index
    }
    add(pick, pickScore!);
    // Caruana keeps adding even when the score gets worse and returns the best-scoring prefix
    // (the earliest on ties), which guards against overfitting the validation set late in the run.
    if (best === null || better(pickScore!, best, objective)) {
      best = pickScore;
      bestCounts = counts.slice();
      bestStep = steps.length - 1;
    }
  }
  return { counts: bestCounts, bestStep };
}

function checkInt(name: string, v: number, min: number): void {
  if (!Number.isInteger(v) || v < min)
    throw new RangeError(`caruanaSelection: ${name} must be an integer >= ${min}, got ${v}`);
}

/**
 * Caruana ensemble selection on validation probabilities (one [N, classes] matrix per member).
 * Returns per-member weights (counts / total) of the best-scoring ensemble, summed over bags.
 */
export function caruanaSelection(
  members: Float32Array[],
  labels: ArrayLike<number>,
  classes: number,
  opts: CaruanaOptions = {},
): CaruanaResult {
  const { maxIter = 50, initSize = 0, objective = 'loss', bags = 1, bagFraction = 0.5, seed = 0 } = opts;
  const len = memberLength('caruanaSelection', members);
  const n = rowCount('caruanaSelection', members[0], classes, labels);
  if (n === 0 || len === 0) throw new RangeError('caruanaSelection: no samples');
  checkInt('maxIter', maxIter, 1);
  checkInt('initSize', initSize, 0);
  checkInt('bags', bags, 1);
  if (objective !== 'loss' && objective !== 'accuracy')
    throw new RangeError(`caruanaSelection: objective must be 'loss' or 'accuracy', got ${objective}`);
  if (!(bagFraction > 0 && bagFraction <= 1))
    throw new RangeError(`caruanaSelection: bagFraction must be in (0, 1], got ${bagFraction}`);
  const m = members.length;
  if (initSize > m) throw new RangeError(`caruanaSelection: initSize ${initSize} exceeds the ${m} members`);
  // round, not floor, so that e.g. 0.29 * 100 (= 28.999...) gives 29 members
  const bagSize = bags === 1 ? m : Math.max(1, Math.round(bagFraction * m));
  if (initSize > bagSize)
    throw new RangeError(
      `caruanaSelection: initSize ${initSize} exceeds the ${bagSize} members in each bag (bagFraction ${bagFraction} of ${m})`,
    );

  const all = Array.from({ length: m }, (_, j) => j);
  const rng = new Rng(seed);
  const counts = new Array<number>(m).fill(0);
  const steps: SelectionStep[] = [],
    bestSteps: number[] = [];
  for (let b = 0; b < bags; b++) {
    // sorted so that ties still go to the lowest member index
    const pool =
      bags === 1
        ? all
        : rng
            .shuffle(all.slice())
            .slice(0, bagSize)
            .sort((x, y) => x - y);
    const run = selectOnce(members, pool, labels, classes, objective, initSize, maxIter, b, steps);
    for (let j = 0; j < m; j++) counts[j] += run.counts[j];
    bestSteps.push(run.bestStep);
  }
  const total = counts.reduce((a, c) => a + c, 0);
  return { weights: counts.map(c => c / total), counts, steps, bestSteps };
}
