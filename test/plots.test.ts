import { strict as assert } from 'node:assert';
import {
  lineChart,
  barChart,
  stackedBarChart,
  trainingCurves,
  niceTicks,
  formatTick,
  escapeXml,
  seriesColor,
} from '../engine/report/plots.ts';

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

describe('plots: helpers', () => {
  it('niceTicks gives round steps covering the range', () => {
    const t = niceTicks(0.03, 0.97, 6);
    assert.deepEqual(t.values, [0, 0.2, 0.4, 0.6, 0.8, 1]);
    const e = niceTicks(1, 10, 7, true);
    assert.ok(e.values.every(Number.isInteger));
    assert.ok(e.min <= 1 && e.max >= 10);
    const flat = niceTicks(5, 5);
    assert.ok(flat.max > flat.min && flat.min <= 5 && flat.max >= 5);
    const zero = niceTicks(0, 0);
    assert.ok(zero.max > zero.min);
    const bad = niceTicks(NaN, Infinity);
    assert.ok(bad.values.every(Number.isFinite) && bad.max > bad.min);
  });

  it('formatTick uses the decimals the step needs', () => {
    assert.equal(formatTick(0.2, 0.2), '0.2');
    assert.equal(formatTick(0.25, 0.25), '0.25');
    assert.equal(formatTick(10, 5), '10');
    assert.equal(formatTick(-0.0000000001, 0.1), '0.0');
  });

  it('escapes XML special characters', () => {
    assert.equal(escapeXml(`a<b & "c" 'd'>`), 'a&lt;b &amp; &quot;c&quot; &apos;d&apos;&gt;');
  });

  it('gives distinct colours to many series', () => {
    const colors = Array.from({ length: 30 }, (_, i) => seriesColor(i));
    assert.equal(new Set(colors).size, 30);
  });
});

describe('plots: lineChart', () => {
  const base = { title: 'Loss', xLabel: 'epoch', yLabel: 'loss' };

  it('renders axes, ticks, title, one path and legend entry per series', () => {
    const svg = lineChart({
      ...base,
      series: [
        {
          name: 'train',
          points: [
            [1, 0.9],
            [2, 0.5],
            [3, 0.3],
          ],
        },
        {
          name: 'validation',
          points: [
            [1, 1.0],
            [2, 0.6],
            [3, 0.45],
          ],
        },
        {
          name: 'test',
          points: [
            [1, 1.1],
            [3, 0.5],
          ],
        },
      ],
    });
    const root = checkSvg(svg, 'Loss');
    const groups = seriesGroups(root);
    assert.equal(groups.length, 3);
    assert.equal(all(root, hasClass('series-line')).length, 3);
    for (const g of groups) assert.equal(all(g, hasClass('series-line')).length, 1);
    assert.deepEqual(legendEntries(root), ['train', 'validation', 'test']);
    assert.equal(new Set(seriesColors(root)).size, 3, 'distinct colours');
    // the legend swatch colour matches the series colour
    const swatches = all(root, hasClass('legend-entry')).map(e => all(e, hasClass('swatch'))[0].attrs.stroke);
    assert.deepEqual(swatches, seriesColors(root));
    // axis labels
    assert.deepEqual(all(root, hasClass('axis-label')).map(textOf).sort(), ['epoch', 'loss']);
    // integer x (epochs) gives integer x tick labels
    const xAxis = all(root, hasClass('x-axis'))[0];
    for (const t of all(xAxis, hasClass('tick-label'))) assert.match(textOf(t), /^-?\d+$/);
    // <title> element for accessibility
    assert.equal(root.children.find(c => c.name === 'title')?.text, 'Loss');
  });

  it('keeps every point inside the plot area', () => {
    const svg = lineChart({
      ...base,
      series: [
        {
          name: 'a',
          points: [
            [0, -3],
            [10, 7],
            [20, 100],
          ],
        },
      ],
    });
    const root = checkSvg(svg, 'Loss');
    const yAxisLine = all(all(root, hasClass('y-axis'))[0], hasClass('axis-line'))[0];
    const xAxisLine = all(all(root, hasClass('x-axis'))[0], hasClass('axis-line'))[0];
    const [left, top, bottom] = [Number(yAxisLine.attrs.x1), Number(yAxisLine.attrs.y1), Number(yAxisLine.attrs.y2)];
    const right = Number(xAxisLine.attrs.x2);
    const d = all(root, hasClass('series-line'))[0].attrs.d;
    const nums = d.match(/-?\d+(\.\d+)?/g)!.map(Number);
    for (let i = 0; i < nums.length; i += 2) {
      assert.ok(nums[i] >= left - 0.01 && nums[i] <= right + 0.01, `x ${nums[i]}`);
      assert.ok(nums[i + 1] >= top - 0.01 && nums[i + 1] <= bottom + 0.01, `y ${nums[i + 1]}`);
    }
  });

  it('skips non-finite points', () => {
    const svg = lineChart({
      ...base,
      series: [
        {
          name: 'gappy',
          points: [
            [1, 1],
            [2, NaN],
            [3, 0.5],
            [Infinity, 2],
            [4, 0.25],
            [5, -Infinity],
            [6, 0.1],
          ],
        },
        {
          name: 'ok',
          points: [
            [1, 2],
            [6, 1],
          ],
        },
      ],
    });
    const root = checkSvg(svg, 'Loss');
    const [gappy] = seriesGroups(root);
    // 4 finite points of the first series: (1,1) (3,.5) (4,.25) (6,.1) -> dots for each, none for the skipped ones
    assert.equal(all(gappy, hasClass('point')).length, 4);
    const d = all(gappy, hasClass('series-line'))[0].attrs.d;
    assert.equal((d.match(/[ML]/g) ?? []).length, 4, 'the line joins the 4 finite points');
    assert.equal(seriesGroups(root).length, 2);
  });

  it('renders a single point', () => {
    const svg = lineChart({ ...base, series: [{ name: 'one', points: [[1, 0.5]] }] });
    const root = checkSvg(svg, 'Loss');
    const g = seriesGroups(root);
    assert.equal(g.length, 1);
    assert.equal(all(g[0], hasClass('point')).length, 1);
    assert.ok(all(root, hasClass('tick-label')).length >= 4);
  });

  it('renders a constant series', () => {
    const svg = lineChart({
      ...base,
      series: [
        {
          name: 'flat',
          points: [
            [1, 0.3],
            [2, 0.3],
            [3, 0.3],
          ],
        },
      ],
    });
    const root = checkSvg(svg, 'Loss');
    const d = all(root, hasClass('series-line'))[0].attrs.d;
    const ys = [...d.matchAll(/[ML]-?[\d.]+ (-?[\d.]+)/g)].map(m => Number(m[1]));
    assert.equal(ys.length, 3);
    assert.ok(
      ys.every(y => y === ys[0]),
      'a horizontal line',
    );
    // the y range was widened around the value
    const labels = all(all(root, hasClass('y-axis'))[0], hasClass('tick-label')).map(t => Number(textOf(t)));
    assert.ok(Math.min(...labels) < 0.3 && Math.max(...labels) > 0.3);
  });

  it('renders with no data and with all points non-finite', () => {
    checkSvg(lineChart({ ...base, series: [] }), 'Loss');
    const root = checkSvg(
      lineChart({
        ...base,
        series: [
          {
            name: 'nan',
            points: [
              [NaN, NaN],
              [1, Infinity],
            ],
          },
        ],
      }),
      'Loss',
    );
    assert.equal(seriesGroups(root).length, 1);
    assert.deepEqual(legendEntries(root), ['nan']);
  });

  it('escapes text', () => {
    const svg = lineChart({
      title: 'a < b & "c"',
      xLabel: '<x>',
      yLabel: "y'",
      series: [
        {
          name: 'm&m <1>',
          points: [
            [0, 1],
            [1, 2],
          ],
        },
      ],
    });
    const root = checkSvg(svg, 'a < b & "c"');
    assert.deepEqual(legendEntries(root), ['m&m <1>']);
    assert.ok(!svg.includes('m&m'));
  });

  it('honours width and height; rejects silly sizes', () => {
    const root = checkSvg(lineChart({ ...base, series: [], width: 800, height: 300 }), 'Loss');
    assert.equal(root.attrs.width, '800');
    assert.equal(root.attrs.height, '300');
    const r2 = checkSvg(lineChart({ ...base, series: [], width: NaN, height: -1 }), 'Loss');
    assert.ok(Number(r2.attrs.width) > 0 && Number(r2.attrs.height) > 0);
  });

  it('survives extreme values', () => {
    for (const pts of [
      [
        [0, 1e-12],
        [1, 2e-12],
      ],
      [
        [0, -1e300],
        [1, 1e300],
      ],
      [
        [0, Number.MAX_VALUE],
        [1, Number.MAX_VALUE],
      ],
      [
        [1e15, 1],
        [1e15 + 1, 2],
      ],
      [
        [-5, 0],
        [-5, 0],
      ],
    ] as Array<Array<[number, number]>>) {
      checkSvg(lineChart({ ...base, series: [{ name: 's', points: pts }] }), 'Loss');
    }
  });
});

describe('plots: barChart', () => {
  it('draws grouped bars: one group per series, one rect per finite value', () => {
    const svg = barChart({
      title: 'Member accuracy',
      yLabel: 'accuracy',
      categories: ['m0', 'm1', 'm2', 'm3'],
      series: [
        { name: 'validation', values: [0.98, 0.97, NaN, 0.99] },
        { name: 'test', values: [0.975, 0.969, 0.98, 0.985] },
      ],
    });
    const root = checkSvg(svg, 'Member accuracy');
    const groups = seriesGroups(root);
    assert.equal(groups.length, 2);
    assert.equal(all(groups[0], hasClass('bar')).length, 3, 'NaN skipped');
    assert.equal(all(groups[1], hasClass('bar')).length, 4);
    assert.deepEqual(legendEntries(root), ['validation', 'test']);
    assert.equal(new Set(seriesColors(root)).size, 2);
    const xLabels = all(all(root, hasClass('x-axis'))[0], hasClass('tick-label')).map(textOf);
    assert.deepEqual(xLabels, ['m0', 'm1', 'm2', 'm3']);
    // bars stand on the x axis (value axis starts at 0)
    const bottom = Number(all(all(root, hasClass('x-axis'))[0], hasClass('axis-line'))[0].attrs.y1);
    for (const r of all(root, hasClass('bar'))) {
      assert.ok(Math.abs(Number(r.attrs.y) + Number(r.attrs.height) - bottom) < 0.02);
      assert.ok(Number(r.attrs.height) > 0);
    }
  });

  it('handles negative values, all zeros, empty input and long category names', () => {
    let root = checkSvg(
      barChart({ title: 'n', yLabel: 'v', categories: ['a', 'b'], series: [{ name: 's', values: [-1, 2] }] }),
      'n',
    );
    assert.equal(all(root, hasClass('zero-line')).length, 1);
    root = checkSvg(
      barChart({ title: 'z', yLabel: 'v', categories: ['a'], series: [{ name: 's', values: [0] }] }),
      'z',
    );
    assert.equal(seriesGroups(root).length, 1);
    checkSvg(barChart({ title: 'e', yLabel: 'v', categories: [], series: [] }), 'e');
    const cats = Array.from({ length: 30 }, (_, i) => `ensemble-member-${i}`);
    root = checkSvg(
      barChart({
        title: 'long',
        yLabel: 'v',
        categories: cats,
        series: [{ name: 's', values: cats.map((_, i) => i) }],
      }),
      'long',
    );
    const rotated = all(all(root, hasClass('x-axis'))[0], hasClass('tick-label'));
    assert.ok(rotated.every(t => (t.attrs.transform ?? '').startsWith('rotate(')));
  });
});

describe('plots: stackedBarChart', () => {
  it('stacks series per category', () => {
    const svg = stackedBarChart({
      title: 'Member weights',
      xLabel: 'selection step',
      yLabel: 'weight',
      categories: ['1', '2', '3'],
      series: [
        { name: 'm0', values: [1, 0.5, 0.4] },
        { name: 'm1', values: [0, 0.5, 0.4] },
        { name: 'm2', values: [NaN, 0, 0.2] },
      ],
    });
    const root = checkSvg(svg, 'Member weights');
    const groups = seriesGroups(root);
    assert.equal(groups.length, 3);
    assert.deepEqual(legendEntries(root), ['m0', 'm1', 'm2']);
    assert.equal(new Set(seriesColors(root)).size, 3);
    // zeros and NaN draw nothing
    assert.deepEqual(
      groups.map(g => all(g, hasClass('bar')).length),
      [3, 2, 1],
    );
    // in category 3 the three segments touch: each starts where the previous ended
    const col3 = groups.map(g => all(g, hasClass('bar')).at(-1)!);
    for (let i = 1; i < col3.length; i++) {
      assert.ok(Math.abs(Number(col3[i].attrs.y) + Number(col3[i].attrs.height) - Number(col3[i - 1].attrs.y)) < 0.02);
    }
    // all stacks have the same total height (weights sum to 1)
    const heights = [0, 1, 2].map(k =>
      groups.reduce((acc, g) => {
        const bars = all(g, hasClass('bar')).filter(b =>
          (all(b, n => n.name === 'title')[0]?.text ?? '').includes(`/ ${k + 1}:`),
        );
        return acc + bars.reduce((s, b) => s + Number(b.attrs.height), 0);
      }, 0),
    );
    assert.ok(Math.abs(heights[0] - heights[1]) < 0.05 && Math.abs(heights[1] - heights[2]) < 0.05, String(heights));
  });

  it('renders empty and negative input', () => {
    checkSvg(stackedBarChart({ title: 's', xLabel: 'x', categories: [], series: [] }), 's');
    const root = checkSvg(
      stackedBarChart({
        title: 's',
        xLabel: 'x',
        categories: ['a'],
        series: [
          { name: 'p', values: [1] },
          { name: 'n', values: [-2] },
        ],
      }),
      's',
    );
    assert.equal(all(root, hasClass('zero-line')).length, 1);
  });
});

describe('plots: trainingCurves', () => {
  it('makes loss and accuracy charts with one series per available metric', () => {
    const history = [
      { epoch: 1, train_loss: 0.5, train_accuracy: 0.85, val_loss: 0.4, val_accuracy: 0.88 },
      { epoch: 2, train_loss: 0.3, train_accuracy: 0.9, val_loss: 0.35, val_accuracy: 0.9 },
      { epoch: 3, train_loss: 0.2, train_accuracy: 0.95, val_loss: NaN, val_accuracy: 0.91 },
    ];
    const out = trainingCurves(history);
    assert.deepEqual(Object.keys(out).sort(), ['accuracy.svg', 'loss.svg']);
    const loss = checkSvg(out['loss.svg'], 'Loss per epoch');
    const acc = checkSvg(out['accuracy.svg'], 'Accuracy per epoch');
    assert.deepEqual(legendEntries(loss), ['train', 'validation']);
    assert.deepEqual(legendEntries(acc), ['train', 'validation']);
    assert.equal(all(loss, hasClass('series-line')).length, 2);
  });

  it('includes test metrics when present and works for a single epoch or none', () => {
    const one = trainingCurves([
      { epoch: 1, train_loss: 0.5, train_accuracy: 0.8, test_loss: 0.6, test_accuracy: 0.79 },
    ]);
    const root = checkSvg(one['accuracy.svg'], 'Accuracy per epoch');
    assert.deepEqual(legendEntries(root), ['train', 'test']);
    assert.equal(all(root, hasClass('point')).length, 2);
    const none = trainingCurves([]);
    assert.deepEqual(legendEntries(checkSvg(none['loss.svg'], 'Loss per epoch')), ['train']);
  });
});
