import { strict as assert } from 'node:assert';
import { memberBars, selectionCurve, selectionWeights } from '../engine/report/ensemble-plots.ts';

import {
  NUMERIC_ATTRS,
  XmlNode,
  all,
  checkSvg,
  decode,
  hasClass,
  legendEntries,
  parseXml,
  seriesColors,
  seriesGroups,
  textOf,
} from './helpers/svg.ts';

// ------------------------------------------------------------------------------------------------ tests

const xTickLabels = (root: XmlNode) => all(all(root, hasClass('x-axis'))[0], hasClass('tick-label')).map(textOf);
const axisLabels = (root: XmlNode) => all(root, hasClass('axis-label')).map(textOf).sort();
const bars = (g: XmlNode) => all(g, hasClass('bar'));
/** The (x, y) pairs of a series' path. */
function pathPoints(g: XmlNode): Array<[number, number]> {
  const d = all(g, hasClass('series-line'))[0].attrs.d;
  return [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map(m => [Number(m[1]), Number(m[2])]);
}

describe('ensemble plots: memberBars', () => {
  const members = [
    { name: 'cnn-s1', val_loss: 0.05, test_loss: 0.06, val_accuracy: 0.985, test_accuracy: 0.982 },
    { name: 'cnn-s2', val_loss: NaN, test_loss: 0.07, val_accuracy: 0.98, test_accuracy: 0.979 },
    { name: 'simclr-a', val_loss: 0.09, test_loss: 0.1, val_accuracy: 0.97, test_accuracy: 0.968 },
  ];

  it('draws loss and accuracy charts: one group per member, a validation and a test series', () => {
    const out = memberBars(members);
    assert.deepEqual(Object.keys(out).sort(), ['members-accuracy.svg', 'members-loss.svg']);
    const loss = checkSvg(out['members-loss.svg'], 'Loss per member');
    const acc = checkSvg(out['members-accuracy.svg'], 'Accuracy per member');
    for (const [root, metric] of [
      [loss, 'loss'],
      [acc, 'accuracy'],
    ] as const) {
      assert.equal(seriesGroups(root).length, 2);
      assert.deepEqual(legendEntries(root), ['validation', 'test']);
      assert.equal(new Set(seriesColors(root)).size, 2);
      assert.deepEqual(xTickLabels(root), ['cnn-s1', 'cnn-s2', 'simclr-a']);
      assert.deepEqual(axisLabels(root), [metric, 'member'].sort());
    }
    // the NaN validation loss draws no bar; everything else does
    assert.deepEqual(
      seriesGroups(loss).map(g => bars(g).length),
      [2, 3],
    );
    assert.deepEqual(
      seriesGroups(acc).map(g => bars(g).length),
      [3, 3],
    );
    assert.equal(all(acc, hasClass('bar')).length, 6);
    // bars stand on the x axis, taller for larger values
    const bottom = Number(all(all(acc, hasClass('x-axis'))[0], hasClass('axis-line'))[0].attrs.y1);
    for (const r of all(acc, hasClass('bar')))
      assert.ok(Math.abs(Number(r.attrs.y) + Number(r.attrs.height) - bottom) < 0.02);
    const [v1, , v3] = bars(seriesGroups(acc)[0]).map(r => Number(r.attrs.height));
    assert.ok(v1 > v3, 'member 1 has the higher validation accuracy');
  });

  it('leaves out a split no member has, and renders no members', () => {
    const out = memberBars([
      { name: 'a', val_loss: 0.1, val_accuracy: 0.9 },
      { name: 'b', val_loss: 0.2 },
    ]);
    const loss = checkSvg(out['members-loss.svg'], 'Loss per member');
    assert.deepEqual(legendEntries(loss), ['validation']);
    assert.equal(all(loss, hasClass('bar')).length, 2);
    const acc = checkSvg(out['members-accuracy.svg'], 'Accuracy per member');
    assert.deepEqual(legendEntries(acc), ['validation']);
    assert.equal(all(acc, hasClass('bar')).length, 1);
    const none = memberBars([]);
    const root = checkSvg(none['members-loss.svg'], 'Loss per member');
    assert.equal(seriesGroups(root).length, 0);
    assert.deepEqual(legendEntries(root), []);
    checkSvg(none['members-accuracy.svg'], 'Accuracy per member');
  });

  it('escapes member names', () => {
    const out = memberBars([{ name: 'a<b> & "c"', val_accuracy: 0.5, test_accuracy: 0.6 }]);
    const root = checkSvg(out['members-accuracy.svg'], 'Accuracy per member');
    assert.deepEqual(xTickLabels(root), ['a<b> & "c"']);
  });
});

describe('ensemble plots: selectionCurve', () => {
  const steps = [
    { step: 3, score: 0.987 },
    { step: 1, score: 0.982 },
    { step: 2, score: 0.985 },
    { step: 4, score: NaN },
    { step: 5, score: 0.988 },
  ];

  it('draws the ensemble curve with the two baselines as horizontal reference lines', () => {
    const svg = selectionCurve(steps, { best_member: 0.984, average: 0.979 }, 'accuracy');
    const root = checkSvg(svg, 'Ensemble accuracy per selection step');
    const groups = seriesGroups(root);
    assert.equal(groups.length, 3);
    assert.deepEqual(legendEntries(root), ['ensemble', 'best member', 'average']);
    assert.equal(new Set(seriesColors(root)).size, 3);
    assert.deepEqual(axisLabels(root), ['accuracy', 'selection step']);
    // the ensemble curve: 4 finite points in step order
    const curve = pathPoints(groups[0]);
    assert.equal(curve.length, 4);
    for (let i = 1; i < curve.length; i++) assert.ok(curve[i][0] > curve[i - 1][0], 'sorted by step');
    assert.equal(all(groups[0], hasClass('point')).length, 4);
    // baselines: horizontal, spanning the steps, best member above average (smaller y)
    const [best, avg] = [pathPoints(groups[1]), pathPoints(groups[2])];
    for (const line of [best, avg]) {
      assert.equal(line.length, 2);
      assert.equal(line[0][1], line[1][1], 'horizontal');
      assert.equal(line[0][0], curve[0][0]);
      assert.equal(line[1][0], curve[curve.length - 1][0]);
    }
    assert.ok(best[0][1] < avg[0][1], 'best member is drawn above the average');
    // the best-member line lies between the curve's first (0.982) and last (0.988) points
    assert.ok(best[0][1] < curve[0][1] && best[0][1] > curve[3][1]);
    // integer steps give integer x ticks
    for (const t of xTickLabels(root)) assert.match(t, /^-?\d+$/);
  });

  it('handles one step, no steps and non-finite baselines', () => {
    let root = checkSvg(
      selectionCurve([{ step: 1, score: 0.5 }], { best_member: 0.6, average: 0.4 }, 'loss'),
      'Ensemble loss per selection step',
    );
    assert.equal(seriesGroups(root).length, 3);
    const [lo, hi] = pathPoints(seriesGroups(root)[1]);
    assert.ok(hi[0] > lo[0], 'the reference line has a length');
    root = checkSvg(selectionCurve([], { best_member: 0.6, average: 0.4 }, 'loss'), 'Ensemble loss per selection step');
    assert.deepEqual(legendEntries(root), ['ensemble', 'best member', 'average']);
    root = checkSvg(
      selectionCurve(steps, { best_member: NaN, average: 0.97 }, 'accuracy'),
      'Ensemble accuracy per selection step',
    );
    assert.deepEqual(legendEntries(root), ['ensemble', 'average']);
    assert.equal(seriesGroups(root).length, 2);
  });
});

describe('ensemble plots: selectionWeights', () => {
  const names = ['cnn-s1', 'cnn-s2', 'cnn-s3', 'simclr-a'];
  const steps = [
    { step: 2, weights: [0.5, 0, 0, 0.5] },
    { step: 1, weights: [1, 0, 0, 0] },
    { step: 3, weights: [1 / 3, 0, 1 / 3, 1 / 3] },
  ];

  it('stacks the weights of the selected members per step', () => {
    const root = checkSvg(selectionWeights(steps, names), 'Member weights per selection step');
    const groups = seriesGroups(root);
    assert.equal(groups.length, 3, 'cnn-s2 is never selected');
    assert.deepEqual(legendEntries(root), ['cnn-s1', 'cnn-s3', 'simclr-a']);
    assert.equal(new Set(seriesColors(root)).size, 3);
    assert.deepEqual(xTickLabels(root), ['1', '2', '3']);
    assert.deepEqual(axisLabels(root), ['selection step', 'weight']);
    // one bar per non-zero weight
    assert.deepEqual(
      groups.map(g => bars(g).length),
      [3, 1, 2],
    );
    assert.equal(all(root, hasClass('bar')).length, 6);
    // weights sum to 1 at every step: the stacks have the same height
    const heights = ['1', '2', '3'].map(step =>
      all(root, hasClass('bar'))
        .filter(b => (all(b, n => n.name === 'title')[0]?.text ?? '').includes(`/ ${step}:`))
        .reduce((s, b) => s + Number(b.attrs.height), 0),
    );
    assert.ok(
      heights.every(h => h > 0 && Math.abs(h - heights[0]) < 0.05),
      String(heights),
    );
  });

  it('renders no steps, and rejects weights that do not match the members', () => {
    const root = checkSvg(selectionWeights([], names), 'Member weights per selection step');
    assert.equal(seriesGroups(root).length, 0);
    assert.throws(() => selectionWeights([{ step: 1, weights: [1, 0] }], names), /step 1 has 2 weights for 4 members/);
  });
});
