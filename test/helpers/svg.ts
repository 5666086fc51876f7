// SVG structure checks shared by the plot tests: a tiny XML parser and queries over its tree.
import { strict as assert } from 'node:assert';

export interface XmlNode {
  name: string;
  attrs: Record<string, string>;
  children: XmlNode[];
  text: string; // decoded character data directly inside this element
}

export function decode(s: string): string {
  return s.replace(/&(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);/gi, (_, e: string) => {
    const named: Record<string, string> = { lt: '<', gt: '>', amp: '&', quot: '"', apos: "'" };
    if (e in named) return named[e];
    return String.fromCodePoint(e[1] === 'x' || e[1] === 'X' ? parseInt(e.slice(2), 16) : parseInt(e.slice(1), 10));
  });
}

/** Parses well-formed XML (elements, attributes, text, entities); throws on anything malformed. */
export function parseXml(src: string): XmlNode {
  const root: XmlNode = { name: '#document', attrs: {}, children: [], text: '' };
  const stack: XmlNode[] = [root];
  const re = /<(\/?)([A-Za-z_][\w:.-]*)((?:\s+[\w:.-]+\s*=\s*(?:"[^"<]*"|'[^'<]*'))*)\s*(\/?)>|([^<]+)|(<)/g;
  let m: RegExpExecArray | null;
  while ((m = re.exec(src))) {
    const [, close, name, attrText, selfClose, text, stray] = m;
    if (stray) throw new Error(`malformed markup at ${m.index}: ${src.slice(m.index, m.index + 40)}`);
    const top = stack[stack.length - 1];
    if (text !== undefined) {
      if (text.includes('&') && /&(?!(lt|gt|amp|quot|apos|#\d+|#x[0-9a-f]+);)/i.test(text))
        throw new Error(`bare & in text: ${text}`);
      if (text.includes('>')) throw new Error(`bare > in text: ${text}`);
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

export function all(node: XmlNode, pred: (n: XmlNode) => boolean, out: XmlNode[] = []): XmlNode[] {
  if (pred(node)) out.push(node);
  for (const c of node.children) all(c, pred, out);
  return out;
}

export const hasClass = (cls: string) => (n: XmlNode) => (n.attrs.class ?? '').split(/\s+/).includes(cls);
/** All text inside a node, including descendants. */
export const textOf = (n: XmlNode): string =>
  n.text +
  n.children
    .filter(c => c.name !== 'title')
    .map(textOf)
    .join('');

export const NUMERIC_ATTRS = ['x', 'y', 'x1', 'y1', 'x2', 'y2', 'cx', 'cy', 'r', 'width', 'height'];

/** The structural checks every chart must pass; returns the parsed tree. */
export function checkSvg(svg: string, title: string): XmlNode {
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
      if (a in n.attrs && n.name !== 'svg')
        assert.ok(Number.isFinite(Number(n.attrs[a])), `<${n.name} ${a}="${n.attrs[a]}">`);
    }
    if (n.name === 'path') assert.match(n.attrs.d, /^([ML]-?\d+(\.\d+)? -?\d+(\.\d+)?( |$))*$/, `path d: ${n.attrs.d}`);
  }
  return root;
}

export function seriesGroups(root: XmlNode): XmlNode[] {
  return all(root, n => n.name === 'g' && hasClass('series')(n));
}

export function legendEntries(root: XmlNode): string[] {
  return all(root, hasClass('legend-entry')).map(e => textOf(e).trim());
}

export function seriesColors(root: XmlNode): string[] {
  return seriesGroups(root).map(g => g.attrs.fill ?? all(g, n => n.name === 'path')[0]?.attrs.stroke);
}
