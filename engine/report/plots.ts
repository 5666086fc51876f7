// Dependency-free SVG charts for training reports: line charts (training curves), grouped bars
// (per-ensemble-member metrics) and stacked bars (member weights per selection step).
//
// Every chart is a standalone <svg> document string with a title, axes, nice tick values, axis labels
// and a legend (one entry per series, distinct colours). Non-finite input values are skipped and every
// emitted coordinate is finite: the output never contains "NaN" or "Infinity".
//
// Markup hooks (stable, used by tests and for styling):
//   text.title, g.axis.x-axis / g.axis.y-axis, line.axis-line, text.tick-label, text.axis-label,
//   g.series[data-series=i] containing path.series-line (+ circle.point) or rect.bar,
//   g.legend > g.legend-entry[data-series=i].
import type { EpochMetrics } from '../train/train-classifier.ts';

export interface LineSeries {
  name: string;
  points: Array<[number, number]>;
}

export interface LineChartOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  series: LineSeries[];
  width?: number;
  height?: number;
}

export interface BarSeries {
  name: string;
  values: number[];
}

export interface BarChartOptions {
  title: string;
  xLabel?: string;
  yLabel: string;
  categories: string[];
  series: BarSeries[];
  width?: number;
  height?: number;
}

export interface StackedBarChartOptions {
  title: string;
  xLabel: string;
  yLabel?: string;
  categories: string[];
  series: BarSeries[];
  width?: number;
  height?: number;
}

/** One row of a training history (the trainers' per-epoch metrics). */
export type EpochRecord = Omit<EpochMetrics, 'lr' | 'seconds'>;

// ---------------------------------------------------------------------------------------------- helpers

/** Escapes text for XML character data and attribute values. */
export function escapeXml(s: string): string {
  return (
    String(s)
      // characters not allowed in XML 1.0 at all
      // eslint-disable-next-line no-control-regex
      .replace(/[\u0000-\u0008\u000B\u000C\u000E-\u001F\uFFFE\uFFFF]/g, '')
      .replace(/&/g, '&amp;')
      .replace(/</g, '&lt;')
      .replace(/>/g, '&gt;')
      .replace(/"/g, '&quot;')
      .replace(/'/g, '&apos;')
  );
}

/** A coordinate for the output: rounded to 0.01, never NaN/Infinity, never "-0". */
function num(v: number): string {
  if (!Number.isFinite(v)) return '0';
  const r = Math.round(v * 100) / 100;
  return String(r === 0 ? 0 : r);
}

const PALETTE = [
  '#4e79a7',
  '#f28e2b',
  '#e15759',
  '#76b7b2',
  '#59a14f',
  '#edc948',
  '#b07aa1',
  '#ff9da7',
  '#9c755f',
  '#bab0ac',
];

/** Distinct colour for series i: Tableau 10, then golden-angle hues. */
export function seriesColor(i: number): string {
  if (i < PALETTE.length) return PALETTE[i];
  const hue = Math.round(((i - PALETTE.length) * 137.508 + 15) % 360);
  const light = 35 + ((i - PALETTE.length) % 3) * 12;
  return `hsl(${hue},65%,${light}%)`;
}

export interface Ticks {
  min: number;
  max: number;
  step: number;
  values: number[];
}

/**
 * "Nice" axis ticks (steps of 1, 2, 2.5 or 5 times a power of ten) covering [min, max].
 * A flat or empty range is widened so the scale never divides by zero. With `integer`, steps are whole numbers.
 */
export function niceTicks(min: number, max: number, target = 6, integer = false): Ticks {
  if (!Number.isFinite(min) || !Number.isFinite(max)) {
    min = 0;
    max = 1;
  }
  if (min > max) [min, max] = [max, min];
  const span = max - min;
  if (!(span > Math.max(Math.abs(min), Math.abs(max)) * 1e-12) || !Number.isFinite(span)) {
    if (!Number.isFinite(span)) {
      // finite ends too far apart to subtract: just the two ends
      return { min, max, step: max / 2 - min / 2, values: [min, max] };
    }
    const pad = Math.abs(min) * 0.1 || 1;
    min -= pad;
    max += pad;
    if (integer) {
      min = Math.floor(min);
      max = Math.ceil(max);
    }
  }
  const raw = (max - min) / Math.max(1, target - 1);
  const mag = 10 ** Math.floor(Math.log10(raw));
  const steps = integer ? [1, 2, 5, 10] : [1, 2, 2.5, 5, 10];
  let step = steps[steps.length - 1] * mag;
  for (const s of steps) {
    if (s * mag >= raw) {
      step = s * mag;
      break;
    }
  }
  if (integer) step = Math.max(1, Math.round(step));
  const lo = Math.floor(min / step + 1e-9) * step;
  const hi = Math.ceil(max / step - 1e-9) * step;
  const values: number[] = [];
  const n = Math.min(100, Math.round((hi - lo) / step));
  for (let i = 0; i <= n; i++) values.push(Number((lo + i * step).toPrecision(12)));
  if (!values.every(Number.isFinite) || values.length < 2) return { min, max, step: max - min, values: [min, max] };
  return { min: values[0], max: values[values.length - 1], step, values };
}

/** A tick label with just enough decimals for the step. */
export function formatTick(v: number, step: number): string {
  if (!Number.isFinite(v)) return '';
  if (step > 0 && Math.abs(v) < step * 1e-6) v = 0; // floating-point noise around zero
  const a = Math.abs(v);
  if (a !== 0 && (a >= 1e7 || a < 1e-5)) return v.toExponential(1).replace('e+', 'e');
  let decimals = 0;
  if (step > 0 && Number.isFinite(step)) {
    while (
      decimals < 10 &&
      Math.abs(Math.round(step * 10 ** decimals) - step * 10 ** decimals) > 1e-6 * 10 ** decimals * step
    )
      decimals++;
  }
  const s = v.toFixed(decimals);
  return /^-0(\.0*)?$/.test(s) ? s.slice(1) : s;
}

function textWidth(s: string, fontSize = 12): number {
  return s.length * fontSize * 0.6;
}

function truncate(s: string, max: number): string {
  return s.length > max ? s.slice(0, max - 1) + '…' : s;
}

function size(v: number | undefined, def: number, min: number): number {
  return v !== undefined && Number.isFinite(v) && v >= min ? Math.round(v) : def;
}

interface Frame {
  width: number;
  height: number;
  left: number;
  top: number;
  right: number; // x of the plot's right edge
  bottom: number; // y of the plot's bottom edge
}

interface AxisSpec {
  /** Tick positions in pixels with their labels. */
  ticks: Array<{ pos: number; label: string }>;
  label: string;
  /** Rotate x tick labels (long category names). */
  rotate?: boolean;
}

interface LegendItem {
  name: string;
  color: string;
  kind: 'line' | 'box';
}

const LEGEND_MAX_CHARS = 28;

/** Computes the plot rectangle for the given margins' contents. */
function layout(
  width: number,
  height: number,
  yTickLabels: string[],
  legend: LegendItem[],
  xLabelRotatedChars: number,
  hasXLabel: boolean,
): Frame {
  const yTickWidth = Math.max(0, ...yTickLabels.map(l => textWidth(l)));
  const left = Math.max(48, Math.ceil(yTickWidth + 34));
  const legendWidth = legend.length
    ? Math.ceil(Math.max(...legend.map(l => textWidth(truncate(l.name, LEGEND_MAX_CHARS)))) + 40)
    : 0;
  const rightMargin = 16 + Math.min(legendWidth, Math.floor(width * 0.4));
  const bottomMargin =
    (xLabelRotatedChars > 0 ? Math.min(120, 14 + xLabelRotatedChars * 5) : 26) + (hasXLabel ? 22 : 4);
  const top = 40;
  return {
    width,
    height,
    left,
    top,
    right: Math.max(left + 20, width - rightMargin),
    bottom: Math.max(top + 20, height - bottomMargin),
  };
}

function renderFrame(
  f: Frame,
  title: string,
  x: AxisSpec,
  y: AxisSpec,
  body: string[],
  legend: LegendItem[],
  extraDefs = '',
): string {
  const out: string[] = [];
  out.push(
    `<svg xmlns="http://www.w3.org/2000/svg" width="${f.width}" height="${f.height}" viewBox="0 0 ${f.width} ${f.height}" ` +
      `role="img" font-family="sans-serif" font-size="12">`,
  );
  out.push(`<title>${escapeXml(title)}</title>`);
  if (extraDefs) out.push(extraDefs);
  out.push(`<rect class="background" x="0" y="0" width="${f.width}" height="${f.height}" fill="#ffffff"/>`);
  out.push(
    `<text class="title" x="${num(f.width / 2)}" y="24" text-anchor="middle" font-size="16" font-weight="bold">${escapeXml(title)}</text>`,
  );

  // grid lines behind the data
  out.push('<g class="grid" stroke="#e5e5e5" stroke-width="1">');
  for (const t of y.ticks)
    out.push(`<line x1="${num(f.left)}" y1="${num(t.pos)}" x2="${num(f.right)}" y2="${num(t.pos)}"/>`);
  out.push('</g>');

  out.push(...body);

  // y axis
  out.push('<g class="axis y-axis">');
  out.push(
    `<line class="axis-line" x1="${num(f.left)}" y1="${num(f.top)}" x2="${num(f.left)}" y2="${num(f.bottom)}" stroke="#333333"/>`,
  );
  for (const t of y.ticks) {
    out.push(
      `<line class="tick" x1="${num(f.left - 5)}" y1="${num(t.pos)}" x2="${num(f.left)}" y2="${num(t.pos)}" stroke="#333333"/>`,
    );
    out.push(
      `<text class="tick-label" x="${num(f.left - 8)}" y="${num(t.pos + 4)}" text-anchor="end">${escapeXml(t.label)}</text>`,
    );
  }
  if (y.label) {
    const cy = (f.top + f.bottom) / 2;
    out.push(
      `<text class="axis-label" x="14" y="${num(cy)}" text-anchor="middle" transform="rotate(-90 14 ${num(cy)})">${escapeXml(y.label)}</text>`,
    );
  }
  out.push('</g>');

  // x axis
  out.push('<g class="axis x-axis">');
  out.push(
    `<line class="axis-line" x1="${num(f.left)}" y1="${num(f.bottom)}" x2="${num(f.right)}" y2="${num(f.bottom)}" stroke="#333333"/>`,
  );
  for (const t of x.ticks) {
    out.push(
      `<line class="tick" x1="${num(t.pos)}" y1="${num(f.bottom)}" x2="${num(t.pos)}" y2="${num(f.bottom + 5)}" stroke="#333333"/>`,
    );
    if (x.rotate) {
      const ty = f.bottom + 12;
      out.push(
        `<text class="tick-label" x="${num(t.pos)}" y="${num(ty)}" text-anchor="end" transform="rotate(-45 ${num(t.pos)} ${num(ty)})">${escapeXml(t.label)}</text>`,
      );
    } else {
      out.push(
        `<text class="tick-label" x="${num(t.pos)}" y="${num(f.bottom + 18)}" text-anchor="middle">${escapeXml(t.label)}</text>`,
      );
    }
  }
  if (x.label) {
    out.push(
      `<text class="axis-label" x="${num((f.left + f.right) / 2)}" y="${num(f.height - 8)}" text-anchor="middle">${escapeXml(x.label)}</text>`,
    );
  }
  out.push('</g>');

  // legend, to the right of the plot
  out.push('<g class="legend">');
  const lx = f.right + 14;
  legend.forEach((item, i) => {
    const ly = f.top + 6 + i * 18;
    out.push(`<g class="legend-entry" data-series="${i}">`);
    if (item.kind === 'line') {
      out.push(
        `<line class="swatch" x1="${num(lx)}" y1="${num(ly)}" x2="${num(lx + 18)}" y2="${num(ly)}" stroke="${item.color}" stroke-width="2.5"/>`,
      );
    } else {
      out.push(`<rect class="swatch" x="${num(lx)}" y="${num(ly - 6)}" width="14" height="12" fill="${item.color}"/>`);
    }
    const shown = truncate(item.name, LEGEND_MAX_CHARS);
    const tip = shown !== item.name ? `<title>${escapeXml(item.name)}</title>` : '';
    out.push(`<text x="${num(lx + 24)}" y="${num(ly + 4)}">${tip}${escapeXml(shown)}</text>`);
    out.push('</g>');
  });
  out.push('</g>');

  out.push('</svg>');
  return out.join('\n') + '\n';
}

function linear(d0: number, d1: number, r0: number, r1: number): (v: number) => number {
  const span = d1 - d0;
  if (!(Number.isFinite(span) && span !== 0)) return () => (r0 + r1) / 2;
  return v => r0 + ((v - d0) / span) * (r1 - r0);
}

// ---------------------------------------------------------------------------------------------- charts

/** Line chart; non-finite points are skipped (the line joins their neighbours), a single point is drawn as a dot. */
export function lineChart(opts: LineChartOptions): string {
  const width = size(opts.width, 640, 120);
  const height = size(opts.height, 400, 100);
  const series = opts.series.map(s => ({
    name: String(s.name),
    points: (s.points ?? []).map(([x, y]) => [x, y] as [number, number]),
  }));
  const finite = series.flatMap(s => s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y)));
  const xs = finite.map(p => p[0]);
  const ys = finite.map(p => p[1]);
  const integerX = xs.length > 0 && xs.every(v => Number.isInteger(v));
  const xt = xs.length ? niceTicks(Math.min(...xs), Math.max(...xs), 7, integerX) : niceTicks(0, 1, 7, false);
  const yt = ys.length ? niceTicks(Math.min(...ys), Math.max(...ys), 6) : niceTicks(0, 1, 6);
  const yLabels = yt.values.map(v => formatTick(v, yt.step));
  const legend: LegendItem[] = series.map((s, i) => ({ name: s.name, color: seriesColor(i), kind: 'line' }));
  const f = layout(width, height, yLabels, legend, 0, Boolean(opts.xLabel));
  const sx = linear(xt.min, xt.max, f.left, f.right);
  const sy = linear(yt.min, yt.max, f.bottom, f.top);

  const body: string[] = [];
  series.forEach((s, i) => {
    const color = seriesColor(i);
    // non-finite points are dropped; the line joins the remaining ones in input order
    const pts = s.points
      .filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y))
      .map(([x, y]) => [sx(x), sy(y)] as [number, number]);
    const d = pts.length > 1 ? pts.map(([x, y], k) => `${k === 0 ? 'M' : 'L'}${num(x)} ${num(y)}`).join(' ') : '';
    body.push(`<g class="series" data-series="${i}" data-name="${escapeXml(s.name)}">`);
    body.push(
      `<path class="series-line" d="${d}" fill="none" stroke="${color}" stroke-width="2" stroke-linejoin="round" stroke-linecap="round"/>`,
    );
    // dots: a lone point always, every point when there are few
    if (pts.length <= 40) {
      for (const [x, y] of pts)
        body.push(
          `<circle class="point" cx="${num(x)}" cy="${num(y)}" r="${pts.length === 1 ? 3.5 : 2.5}" fill="${color}"/>`,
        );
    }
    body.push('</g>');
  });

  return renderFrame(
    f,
    opts.title,
    { ticks: xt.values.map(v => ({ pos: sx(v), label: formatTick(v, xt.step) })), label: opts.xLabel },
    { ticks: yt.values.map((v, k) => ({ pos: sy(v), label: yLabels[k] })), label: opts.yLabel },
    body,
    legend,
  );
}

interface BandLayout {
  f: Frame;
  band: number;
  xTicks: Array<{ pos: number; label: string }>;
  rotate: boolean;
}

function bandLayout(
  width: number,
  height: number,
  categories: string[],
  yLabels: string[],
  legend: LegendItem[],
  hasXLabel: boolean,
): BandLayout {
  const labels = categories.map(c => truncate(String(c), 24));
  // first pass without rotation to learn the band width
  let f = layout(width, height, yLabels, legend, 0, hasXLabel);
  let band = (f.right - f.left) / Math.max(1, categories.length);
  const widest = Math.max(0, ...labels.map(l => textWidth(l)));
  const rotate = widest > band - 4;
  if (rotate) {
    f = layout(width, height, yLabels, legend, Math.max(...labels.map(l => l.length)), hasXLabel);
    band = (f.right - f.left) / Math.max(1, categories.length);
  }
  const xTicks = labels.map((label, k) => ({ pos: f.left + band * (k + 0.5), label }));
  return { f, band, xTicks, rotate };
}

/** Grouped bars: one group per category, one bar per series in each group. Non-finite values get no bar. */
export function barChart(opts: BarChartOptions): string {
  const width = size(opts.width, 640, 120);
  const height = size(opts.height, 400, 100);
  const categories = opts.categories.map(String);
  const series = opts.series.map(s => ({ name: String(s.name), values: s.values ?? [] }));
  const vals = series.flatMap(s => s.values.slice(0, categories.length).filter(Number.isFinite));
  let lo = Math.min(0, ...vals);
  let hi = Math.max(0, ...vals);
  const { yt, yLabels, legend, f, band, xTicks, rotate, sy } = barFrame(
    lo,
    hi,
    series,
    width,
    height,
    categories,
    Boolean(opts.xLabel),
  );
  const y0 = sy(0);
  const groupPad = band * 0.15;
  const barW = (band - 2 * groupPad) / Math.max(1, series.length);

  const body: string[] = [];
  series.forEach((s, i) => {
    body.push(`<g class="series" data-series="${i}" data-name="${escapeXml(s.name)}" fill="${seriesColor(i)}">`);
    categories.forEach((cat, k) => {
      const v = s.values[k];
      if (!Number.isFinite(v)) return;
      const x = f.left + band * k + groupPad + barW * i;
      const y = sy(v);
      body.push(barRect(x, y, y0, barW - 1, `${s.name} / ${cat}: ${v}`));
    });
    body.push('</g>');
  });
  if (yt.min < 0)
    body.push(
      `<line class="zero-line" x1="${num(f.left)}" y1="${num(y0)}" x2="${num(f.right)}" y2="${num(y0)}" stroke="#333333"/>`,
    );

  return renderFrame(
    f,
    opts.title,
    { ticks: xTicks, label: opts.xLabel ?? '', rotate },
    { ticks: yt.values.map((v, k) => ({ pos: sy(v), label: yLabels[k] })), label: opts.yLabel },
    body,
    legend,
  );
}

/**
 * Stacked bars: one bar per category, series stacked on top of each other (e.g. ensemble member weights per
 * selection step). Positive values stack upwards from 0, negative ones downwards; non-finite values are skipped.
 */
export function stackedBarChart(opts: StackedBarChartOptions): string {
  const width = size(opts.width, 640, 120);
  const height = size(opts.height, 400, 100);
  const categories = opts.categories.map(String);
  const series = opts.series.map(s => ({ name: String(s.name), values: s.values ?? [] }));
  const at = (s: { values: number[] }, k: number) => (Number.isFinite(s.values[k]) ? s.values[k] : 0);
  let lo = 0;
  let hi = 0;
  categories.forEach((_, k) => {
    let pos = 0;
    let neg = 0;
    for (const s of series) {
      const v = at(s, k);
      if (v > 0) pos += v;
      else neg += v;
    }
    hi = Math.max(hi, pos);
    lo = Math.min(lo, neg);
  });
  const { yt, yLabels, legend, f, band, xTicks, rotate, sy } = barFrame(
    lo,
    hi,
    series,
    width,
    height,
    categories,
    Boolean(opts.xLabel),
  );
  const pad = band * 0.15;
  const posTop = categories.map(() => 0);
  const negBottom = categories.map(() => 0);

  const body: string[] = [];
  series.forEach((s, i) => {
    body.push(`<g class="series" data-series="${i}" data-name="${escapeXml(s.name)}" fill="${seriesColor(i)}">`);
    categories.forEach((cat, k) => {
      const v = s.values[k];
      if (!Number.isFinite(v) || v === 0) return;
      let a: number;
      let b: number;
      if (v > 0) {
        a = posTop[k];
        b = a + v;
        posTop[k] = b;
      } else {
        a = negBottom[k];
        b = a + v;
        negBottom[k] = b;
      }
      const ya = sy(a);
      const yb = sy(b);
      body.push(barRect(f.left + band * k + pad, ya, yb, band - 2 * pad, `${s.name} / ${cat}: ${v}`));
    });
    body.push('</g>');
  });
  if (yt.min < 0)
    body.push(
      `<line class="zero-line" x1="${num(f.left)}" y1="${num(sy(0))}" x2="${num(f.right)}" y2="${num(sy(0))}" stroke="#333333"/>`,
    );

  return renderFrame(
    f,
    opts.title,
    { ticks: xTicks, label: opts.xLabel, rotate },
    { ticks: yt.values.map((v, k) => ({ pos: sy(v), label: yLabels[k] })), label: opts.yLabel ?? '' },
    body,
    legend,
  );
}

/** The value axis, legend and category bands shared by the bar charts. */
function barFrame(
  lo: number,
  hi: number,
  series: { name: string }[],
  width: number,
  height: number,
  categories: string[],
  hasXLabel: boolean,
) {
  if (lo === 0 && hi === 0) hi = 1;
  const yt = niceTicks(lo, hi, 6);
  const yLabels = yt.values.map(v => formatTick(v, yt.step));
  const legend: LegendItem[] = series.map((s, i) => ({ name: s.name, color: seriesColor(i), kind: 'box' }));
  const layout = bandLayout(width, height, categories, yLabels, legend, hasXLabel);
  return { yt, yLabels, legend, ...layout, sy: linear(yt.min, yt.max, layout.f.bottom, layout.f.top) };
}

/** A bar between the y coordinates a and b, with a tooltip. */
function barRect(x: number, a: number, b: number, width: number, title: string): string {
  return (
    `<rect class="bar" x="${num(x)}" y="${num(Math.min(a, b))}" width="${num(Math.max(0.5, width))}" height="${num(Math.abs(a - b))}">` +
    `<title>${escapeXml(title)}</title></rect>`
  );
}

/** Loss and accuracy curves per epoch: one series per metric present in the history (train always). */
export function trainingCurves(history: EpochRecord[]): { 'loss.svg': string; 'accuracy.svg': string } {
  const rows = [...history].sort((a, b) => a.epoch - b.epoch);
  const splits = [
    ['train', 'train'],
    ['val', 'validation'],
    ['test', 'test'],
  ] as const;
  const build = (metric: 'loss' | 'accuracy'): LineSeries[] => {
    const out: LineSeries[] = [];
    for (const [prefix, name] of splits) {
      const key = `${prefix}_${metric}` as keyof EpochRecord;
      const points: Array<[number, number]> = [];
      for (const r of rows) {
        const v = r[key];
        if (typeof v === 'number' && Number.isFinite(v) && Number.isFinite(r.epoch)) points.push([r.epoch, v]);
      }
      if (prefix === 'train' || points.length > 0) out.push({ name, points });
    }
    return out;
  };
  return {
    'loss.svg': lineChart({ title: 'Loss per epoch', xLabel: 'epoch', yLabel: 'loss', series: build('loss') }),
    'accuracy.svg': lineChart({
      title: 'Accuracy per epoch',
      xLabel: 'epoch',
      yLabel: 'accuracy',
      series: build('accuracy'),
    }),
  };
}

/** At most this many points per plotted step series (a long run is thinned to every k-th step). */
const MAX_STEP_POINTS = 2000;

/**
 * Curves per optimizer step (x in epochs: step k of n in epoch e is at e - 1 + k/n, so a 1-epoch run is a
 * curve, not a dot): loss.svg (training loss per step, validation and test loss at each epoch's end) and lr.svg
 * (the learning rate per step). Steps without a learning rate leave lr.svg out.
 */
export function stepCurves(
  steps: Array<{ epoch: number; batch: number; batches: number; loss: number; lr?: number }>,
  history: Array<{ epoch: number } & Record<string, unknown>>,
): Record<string, string> {
  const every = Math.max(1, Math.ceil(steps.length / MAX_STEP_POINTS));
  const kept = steps.filter((_, i) => i % every === 0 || i === steps.length - 1);
  const at = (s: { epoch: number; batch: number; batches: number }) => s.epoch - 1 + s.batch / Math.max(1, s.batches);
  const series: LineSeries[] = [{ name: 'train', points: kept.map(s => [at(s), s.loss]) }];
  for (const [key, name] of [
    ['val_loss', 'validation'],
    ['test_loss', 'test'],
  ] as const) {
    const points = history
      .filter(h => typeof h[key] === 'number')
      .map(h => [h.epoch, h[key] as number] as [number, number]);
    if (points.length) series.push({ name, points });
  }
  const out: Record<string, string> = {
    'loss.svg': lineChart({ title: 'Loss per step', xLabel: 'epoch', yLabel: 'loss', series }),
  };
  const lr = kept.filter(s => typeof s.lr === 'number');
  if (lr.length) {
    out['lr.svg'] = lineChart({
      title: 'Learning rate per step',
      xLabel: 'epoch',
      yLabel: 'learning rate',
      series: [{ name: 'lr', points: lr.map(s => [at(s), s.lr!]) }],
    });
  }
  return out;
}
