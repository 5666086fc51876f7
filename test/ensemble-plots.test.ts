import { strict as assert } from 'node:assert';
import { memberBars, selectionCurve, selectionWeights } from '../dashboard/ensemble-plots.ts';

// The structural checks mirror test/plots.test.ts (its helpers are not exported, so they are repeated here).

// ------------------------------------------------------------------------ a tiny XML parser for the checks

interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string; // decoded character data directly inside this element
}

function decode(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (e in named) return named[e];
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

/** Parses well-formed XML (elements, attributes, text, entities); throws on anything malformed. */
function parseXml(src: string): XmlNode {
  const root: XmlNode = { name: '#document', attrs: {}, children: [], text: '' };
  const stack: XmlNode[] = [root];
  const re = /<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(src))) {
    const [, close, name, attrText, selfClose, text, stray] = m;
    if (stray) throw new Error(`malformed markup at ${m.index}: ${src.slice(m.index, m.index + 40)}`);
    const top = stack[stack.length - 1];
    if (text !== undefined) {
      if (text.includes('&') && /&(?!(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);)/i.test(text)) throw new Error(`bare & in text: ${text}`);
      if (text.includes('>') ) throw new Error(`bare > in text: ${text}`);
      if (stack.length === 1 && text.trim() !== '') throw new Error(`text outside the root: ${text}`);
      top.text += decode(text);
      continue;
    }
    if (close) {
      if (top.name !== name) throw new Error(`</${name}> closes <${top.name}>`);
      stack.pop();
      continue;
    }
    const attrs: Record<string, string> = {};
    const ar = /([\w:.-]+)\s*=\s*(?:"([^"]*)"|'([^']*)')/g;
    let a: RegExpExecArray | null;
    while ((a = ar.exec(attrText))) {
      if (a[1] in attrs) throw new Error(`duplicate attribute ${a[1]}`);
      const raw = a[2] ?? a[3];
      if (/&(?!(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);)/i.test(raw)) throw new Error(`bare & in attribute ${a[1]}`);
      attrs[a[1]] = decode(raw);
    }
    const node: XmlNode = { name, attrs, children: [], text: '' };
    top.children.push(node);
    if (!selfClose) stack.push(node);
  }
  if (stack.length !== 1) throw new Error(`unclosed <${stack[stack.length - 1].name}>`);
  if (root.children.length !== 1) throw new Error(`expected one root element, got ${root.children.length}`);
  return root.children[0];
}

function all(node: XmlNode, pred: (n: XmlNode) => boolean, out: XmlNode[] = []): XmlNode[] {
  if (pred(node)) out.push(node);
  for (const c of node.children) all(c, pred, out);
  return out;
}

const hasClass = (cls: string) => (n: XmlNode) => (n.attrs.class ?? '').split(/\s+/).includes(cls);
/** All text inside a node, including descendants. */
const textOf = (n: XmlNode): string => n.text + n.children.filter((c) => c.name !== 'title').map(textOf).join('');

const NUMERIC_ATTRS = ['x', 'y', 'x1', 'y1', 'x2', 'y2', 'cx', 'cy', 'r', 'width', 'height'];

/** The structural checks every chart must pass; returns the parsed tree. */
function checkSvg(svg: string, title: string): XmlNode {
  assert.ok(!/NaN|Infinity|undefined/.test(svg), 'no NaN / Infinity / undefined in the output');
  const root = parseXml(svg);
  assert.equal(root.name, 'svg');
  assert.equal(root.attrs.xmlns, 'http://www.w3.org/2000/svg');
  const w = Number(root.attrs.width);
  const h = Number(root.attrs.height);
  assert.ok(w > 0 && h > 0, 'width and height');
  assert.equal(root.attrs.viewBox, `0 0 ${w} ${h}`);
  const titles = all(root, hasClass('title'));
  assert.equal(titles.length, 1);
  assert.equal(textOf(titles[0]), title);
  // axis lines: one per axis
  const axes = all(root, hasClass('axis'));
  assert.equal(axes.length, 2);
  for (const ax of axes) assert.equal(all(ax, hasClass('axis-line')).length, 1);
  assert.ok(all(root, hasClass('tick-label')).length >= 2, 'tick labels');
  // every numeric attribute is a finite number; path data contains only numbers and commands
  for (const n of all(root, () => true)) {
    for (const a of NUMERIC_ATTRS) {
      if (a in n.attrs && n.name !== 'svg') assert.ok(Number.isFinite(Number(n.attrs[a])), `<${n.name} ${a}="${n.attrs[a]}">`);
    }
    if (n.name === 'path') assert.match(n.attrs.d, /^([ML]-?\d+(\.\d+)? -?\d+(\.\d+)?( |$))*$/, `path d: ${n.attrs.d}`);
  }
  return root;
}

function seriesGroups(root: XmlNode): XmlNode[] {
  return all(root, (n) => n.name === 'g' && hasClass('series')(n));
}

function legendEntries(root: XmlNode): string[] {
  return all(root, hasClass('legend-entry')).map((e) => textOf(e).trim());
}

function seriesColors(root: XmlNode): string[] {
  return seriesGroups(root).map((g) => g.attrs.fill ?? all(g, (n) => n.name === 'path')[0]?.attrs.stroke);
}

// ------------------------------------------------------------------------------------------------ tests

const xTickLabels = (root: XmlNode) => all(all(root, hasClass('x-axis'))[0], hasClass('tick-label')).map(textOf);
const axisLabels = (root: XmlNode) => all(root, hasClass('axis-label')).map(textOf).sort();
const bars = (g: XmlNode) => all(g, hasClass('bar'));
/** The (x, y) pairs of a series' path. */
function pathPoints(g: XmlNode): Array<[number, number]> {
  const d = all(g, hasClass('series-line'))[0].attrs.d;
  return [...d.matchAll(/[ML](-?[\d.]+) (-?[\d.]+)/g)].map((m) => [Number(m[1]), Number(m[2])]);
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
    for (const [root, metric] of [[loss, 'loss'], [acc, 'accuracy']] as const) {
      assert.equal(seriesGroups(root).length, 2);
      assert.deepEqual(legendEntries(root), ['validation', 'test']);
      assert.equal(new Set(seriesColors(root)).size, 2);
      assert.deepEqual(xTickLabels(root), ['cnn-s1', 'cnn-s2', 'simclr-a']);
      assert.deepEqual(axisLabels(root), [metric, 'member'].sort());
    }
    // the NaN validation loss draws no bar; everything else does
    assert.deepEqual(seriesGroups(loss).map((g) => bars(g).length), [2, 3]);
    assert.deepEqual(seriesGroups(acc).map((g) => bars(g).length), [3, 3]);
    assert.equal(all(acc, hasClass('bar')).length, 6);
    // bars stand on the x axis, taller for larger values
    const bottom = Number(all(all(acc, hasClass('x-axis'))[0], hasClass('axis-line'))[0].attrs.y1);
    for (const r of all(acc, hasClass('bar'))) assert.ok(Math.abs(Number(r.attrs.y) + Number(r.attrs.height) - bottom) < 0.02);
    const [v1, , v3] = bars(seriesGroups(acc)[0]).map((r) => Number(r.attrs.height));
    assert.ok(v1 > v3, 'member 1 has the higher validation accuracy');
  });

  it('leaves out a split no member has, and renders no members', () => {
    const out = memberBars([{ name: 'a', val_loss: 0.1, val_accuracy: 0.9 }, { name: 'b', val_loss: 0.2 }]);
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
    let root = checkSvg(selectionCurve([{ step: 1, score: 0.5 }], { best_member: 0.6, average: 0.4 }, 'loss'), 'Ensemble loss per selection step');
    assert.equal(seriesGroups(root).length, 3);
    const [lo, hi] = pathPoints(seriesGroups(root)[1]);
    assert.ok(hi[0] > lo[0], 'the reference line has a length');
    root = checkSvg(selectionCurve([], { best_member: 0.6, average: 0.4 }, 'loss'), 'Ensemble loss per selection step');
    assert.deepEqual(legendEntries(root), ['ensemble', 'best member', 'average']);
    root = checkSvg(selectionCurve(steps, { best_member: NaN, average: 0.97 }, 'accuracy'), 'Ensemble accuracy per selection step');
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
    assert.deepEqual(groups.map((g) => bars(g).length), [3, 1, 2]);
    assert.equal(all(root, hasClass('bar')).length, 6);
    // weights sum to 1 at every step: the stacks have the same height
    const heights = ['1', '2', '3'].map((step) => all(root, hasClass('bar'))
      .filter((b) => (all(b, (n) => n.name === 'title')[0]?.text ?? '').includes(`/ ${step}:`))
      .reduce((s, b) => s + Number(b.attrs.height), 0));
    assert.ok(heights.every((h) => h > 0 && Math.abs(h - heights[0]) < 0.05), String(heights));
  });

  it('renders no steps, and rejects weights that do not match the members', () => {
    const root = checkSvg(selectionWeights([], names), 'Member weights per selection step');
    assert.equal(seriesGroups(root).length, 0);
    assert.throws(() => selectionWeights([{ step: 1, weights: [1, 0] }], names), /step 1 has 2 weights for 4 members/);
  });
});
