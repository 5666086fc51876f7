// Ensemble report charts, built on the generic SVG charts of engine/report/plots.ts:
// - memberBars: validation and test loss / accuracy of every library member (grouped bars);
// - selectionCurve: the ensemble's metric after each greedy selection step against two reference lines;
// - selectionWeights: how the ensemble's member weights evolve over the selection steps (stacked bars).
// Like every chart in plots.ts, the output is a standalone <svg> string and never contains NaN or Infinity.
import { barChart, lineChart, stackedBarChart, type BarSeries, type LineSeries } from './plots.ts';

export interface MemberMetrics {
  name: string;
  val_loss?: number;
  test_loss?: number;
  val_accuracy?: number;
  test_accuracy?: number;
}

export interface SelectionStep {
  step: number;
  score: number;
}

export interface SelectionBaselines {
  /** The best single member's score on the same metric. */
  best_member: number;
  /** The average reference (e.g. the mean of the members' scores, or the uniform-average ensemble's). */
  average: number;
}

export interface SelectionWeightsStep {
  step: number;
  weights: number[];
}

const finite = (v: unknown): v is number => typeof v === 'number' && Number.isFinite(v);

/**
 * Grouped bars per member (one group per member, in input order): a "validation" and a "test" series for loss
 * and for accuracy. A series is drawn only when at least one member has a finite value for it; a member
 * lacking a value gets no bar in that series.
 */
export function memberBars(members: MemberMetrics[]): { 'members-loss.svg': string; 'members-accuracy.svg': string } {
  const categories = members.map(m => String(m.name));
  const build = (metric: 'loss' | 'accuracy'): BarSeries[] => {
    const out: BarSeries[] = [];
    for (const [prefix, name] of [
      ['val', 'validation'],
      ['test', 'test'],
    ] as const) {
      const key = `${prefix}_${metric}` as const;
      const values = members.map(m => (finite(m[key]) ? m[key] : NaN));
      if (values.some(Number.isFinite)) out.push({ name, values });
    }
    return out;
  };
  return {
    'members-loss.svg': barChart({
      title: 'Loss per member',
      xLabel: 'member',
      yLabel: 'loss',
      categories,
      series: build('loss'),
    }),
    'members-accuracy.svg': barChart({
      title: 'Accuracy per member',
      xLabel: 'member',
      yLabel: 'accuracy',
      categories,
      series: build('accuracy'),
    }),
  };
}

/**
 * The ensemble's `metric` against the selection step ("ensemble" series, sorted by step, non-finite entries
 * skipped), with the baselines as horizontal series "best member" and "average" spanning the steps' range (a
 * single step, or none, gets a range around it so the lines stay visible). A non-finite baseline is left out.
 */
export function selectionCurve(steps: SelectionStep[], baselines: SelectionBaselines, metric: string): string {
  const points = steps
    .filter(s => finite(s.step) && finite(s.score))
    .map(s => [s.step, s.score] as [number, number])
    .sort((a, b) => a[0] - b[0]);
  let lo = points.length ? points[0][0] : 0;
  let hi = points.length ? points[points.length - 1][0] : 1;
  if (lo === hi) {
    lo -= 1;
    hi += 1;
  }
  const series: LineSeries[] = [{ name: 'ensemble', points }];
  for (const [key, name] of [
    ['best_member', 'best member'],
    ['average', 'average'],
  ] as const) {
    const v = baselines?.[key];
    if (finite(v))
      series.push({
        name,
        points: [
          [lo, v],
          [hi, v],
        ],
      });
  }
  return lineChart({
    title: `Ensemble ${metric} per selection step`,
    xLabel: 'selection step',
    yLabel: String(metric),
    series,
  });
}

/**
 * Stacked member weights per selection step: one bar per step (sorted by step), one series per member that has
 * a non-zero weight at some step (members never selected are left out to keep the legend readable; the
 * remaining ones keep the order of memberNames). Each step's weights must have one entry per member.
 */
export function selectionWeights(steps: SelectionWeightsStep[], memberNames: string[]): string {
  const sorted = [...steps].sort((a, b) => a.step - b.step);
  sorted.forEach(s => {
    if (s.weights.length !== memberNames.length) {
      throw new Error(
        `selectionWeights: step ${s.step} has ${s.weights.length} weights for ${memberNames.length} members`,
      );
    }
  });
  const series: BarSeries[] = [];
  memberNames.forEach((name, m) => {
    const values = sorted.map(s => s.weights[m]);
    if (values.some(v => Number.isFinite(v) && v !== 0)) series.push({ name: String(name), values });
  });
  return stackedBarChart({
    title: 'Member weights per selection step',
    xLabel: 'selection step',
    yLabel: 'weight',
    categories: sorted.map(s => String(s.step)),
    series,
  });
}
