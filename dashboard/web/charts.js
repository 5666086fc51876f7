// Drawing helpers for the dashboard: line charts on uPlot (loaded as the global `uPlot` from
// /vendor/uPlot.iife.min.js), small bar charts on a canvas, and digits from 28x28 grey pixels.

export const COLORS = [
  '#2f6fde',
  '#e07b00',
  '#1f9d55',
  '#c0392b',
  '#8e44ad',
  '#16a3b8',
  '#7f8c1d',
  '#d35400',
  '#34495e',
  '#b8860b',
];
export const color = i => COLORS[i % COLORS.length];

/**
 * A line chart of series that each have their own x values: xs are merged and gaps spanned.
 * series: [{ label, points: [[x, y], ...], dash?, width?, points?: boolean }]
 */
export function lineData(series) {
  const xs = [...new Set(series.flatMap(s => s.points.map(p => p[0])))].sort((a, b) => a - b);
  const index = new Map(xs.map((x, i) => [x, i]));
  return [
    xs,
    ...series.map(s => {
      const ys = new Array(xs.length).fill(null);
      for (const [x, y] of s.points) ys[index.get(x)] = y;
      return ys;
    }),
  ];
}

export class LineChart {
  constructor(el, { title, xLabel, yLabel, yRange }) {
    this.el = el;
    this.opts = { title, xLabel, yLabel, yRange };
    this.plot = null;
    this.key = '';
  }

  /** Redraws with new series; rebuilds the plot only when the set of series changes. */
  update(series) {
    const key = series.map(s => s.label).join('|');
    const data = lineData(series);
    if (!this.plot || key !== this.key) {
      this.plot?.destroy();
      this.key = key;
      const width = Math.max(320, this.el.clientWidth || 480);
      this.plot = new uPlot(
        {
          title: this.opts.title,
          width,
          height: 260,
          scales: { x: { time: false }, y: this.opts.yRange ? { range: this.opts.yRange } : {} },
          axes: [
            { label: this.opts.xLabel, stroke: '#6b7385', grid: { stroke: '#eef0f4' } },
            { label: this.opts.yLabel, stroke: '#6b7385', grid: { stroke: '#eef0f4' }, size: 56 },
          ],
          legend: { live: false },
          series: [
            { label: this.opts.xLabel },
            ...series.map(s => ({
              label: s.label,
              stroke: s.color,
              width: s.width ?? 1.5,
              dash: s.dash,
              spanGaps: true,
              points: { show: s.showPoints ?? false, size: 6, fill: s.color },
            })),
          ],
        },
        data,
        this.el,
      );
    } else {
      this.plot.setData(data);
    }
  }

  /** Points drawn (non-null values), for the tests and the empty-state text. */
  get pointCount() {
    return this.plot ? this.plot.data.slice(1).reduce((n, ys) => n + ys.filter(y => y !== null).length, 0) : 0;
  }
}

function setupCanvas(canvas) {
  const ratio = window.devicePixelRatio || 1;
  const w = canvas.clientWidth || canvas.width,
    h = canvas.clientHeight || canvas.height;
  canvas.width = w * ratio;
  canvas.height = h * ratio;
  const ctx = canvas.getContext('2d');
  ctx.scale(ratio, ratio);
  ctx.clearRect(0, 0, w, h);
  ctx.font = '12px system-ui, sans-serif';
  return { ctx, w, h };
}

function niceStep(span, target) {
  const raw = span / target,
    mag = 10 ** Math.floor(Math.log10(raw)),
    r = raw / mag;
  return (r < 1.5 ? 1 : r < 3 ? 2 : r < 7 ? 5 : 10) * mag;
}

/**
 * Bars with a value axis: bars = [{ label, value, color }]; the axis zooms to the values' range
 * (accuracies of an ensemble differ in the third digit), with the values printed on the bars.
 */
export function barChart(canvas, { title, bars, format = v => v.toFixed(4), yLabel = '' }) {
  const { ctx, w, h } = setupCanvas(canvas);
  const left = 56,
    right = 12,
    top = 28,
    bottom = 46;
  ctx.fillStyle = '#1d2330';
  ctx.font = '600 13px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(title, w / 2, 16);
  ctx.font = '11px system-ui, sans-serif';
  const vals = bars.map(b => b.value).filter(Number.isFinite);
  if (!vals.length) return;
  let lo = Math.min(...vals),
    hi = Math.max(...vals);
  const pad = Math.max((hi - lo) * 0.6, hi * 0.002, 1e-4);
  lo = Math.max(0, lo - pad);
  hi = hi + pad * 0.5;
  const step = niceStep(hi - lo, 4);
  lo = Math.floor(lo / step) * step;
  const y = v => top + (h - top - bottom) * (1 - (v - lo) / (hi - lo));
  ctx.strokeStyle = '#eef0f4';
  ctx.fillStyle = '#6b7385';
  ctx.textAlign = 'right';
  for (let t = lo; t <= hi + 1e-12; t += step) {
    ctx.beginPath();
    ctx.moveTo(left, y(t));
    ctx.lineTo(w - right, y(t));
    ctx.stroke();
    ctx.fillText(format(t).replace(/0+$/, '').replace(/\.$/, ''), left - 6, y(t) + 4);
  }
  if (yLabel) {
    ctx.save();
    ctx.translate(12, (top + h - bottom) / 2);
    ctx.rotate(-Math.PI / 2);
    ctx.textAlign = 'center';
    ctx.fillText(yLabel, 0, 0);
    ctx.restore();
  }
  const slot = (w - left - right) / bars.length,
    bw = Math.min(56, slot * 0.7);
  bars.forEach((b, i) => {
    const x = left + slot * i + (slot - bw) / 2;
    if (Number.isFinite(b.value)) {
      ctx.fillStyle = b.color;
      ctx.fillRect(x, y(b.value), bw, y(lo) - y(b.value));
      ctx.fillStyle = '#1d2330';
      ctx.textAlign = 'center';
      ctx.fillText(format(b.value), x + bw / 2, y(b.value) - 4);
    }
    ctx.fillStyle = '#1d2330';
    ctx.textAlign = 'center';
    wrap(ctx, b.label, x + bw / 2, h - bottom + 14, slot - 4);
  });
  ctx.strokeStyle = '#6b7385';
  ctx.beginPath();
  ctx.moveTo(left, top);
  ctx.lineTo(left, y(lo));
  ctx.lineTo(w - right, y(lo));
  ctx.stroke();
}

function wrap(ctx, text, x, y, width) {
  const words = String(text).split(/\s+/);
  let line = '',
    dy = 0;
  for (const word of words) {
    const next = line ? `${line} ${word}` : word;
    if (ctx.measureText(next).width > width && line) {
      ctx.fillText(line, x, y + dy);
      line = word;
      dy += 13;
    } else line = next;
  }
  ctx.fillText(line, x, y + dy);
}

/** Stacked bars, one per step: steps = [{ label, parts: [share, ...] }] (shares sum to 1), names = legend. */
export function stackedChart(canvas, { title, steps, names, xLabel }) {
  const { ctx, w, h } = setupCanvas(canvas);
  const left = 44,
    right = 12,
    top = 28,
    bottom = 58;
  ctx.fillStyle = '#1d2330';
  ctx.font = '600 13px system-ui, sans-serif';
  ctx.textAlign = 'center';
  ctx.fillText(title, w / 2, 16);
  ctx.font = '11px system-ui, sans-serif';
  const y = v => top + (h - top - bottom) * (1 - v);
  ctx.fillStyle = '#6b7385';
  ctx.textAlign = 'right';
  ctx.strokeStyle = '#eef0f4';
  for (const t of [0, 0.25, 0.5, 0.75, 1]) {
    ctx.beginPath();
    ctx.moveTo(left, y(t));
    ctx.lineTo(w - right, y(t));
    ctx.stroke();
    ctx.fillText(t.toFixed(2), left - 6, y(t) + 4);
  }
  const slot = (w - left - right) / Math.max(steps.length, 1),
    bw = Math.max(2, Math.min(40, slot * 0.8));
  steps.forEach((s, i) => {
    let acc = 0;
    const x = left + slot * i + (slot - bw) / 2;
    s.parts.forEach((p, m) => {
      if (p > 0) {
        ctx.fillStyle = color(m);
        ctx.fillRect(x, y(acc + p), bw, y(acc) - y(acc + p));
        acc += p;
      }
    });
    if (steps.length <= 25 || i % Math.ceil(steps.length / 20) === 0) {
      ctx.fillStyle = '#6b7385';
      ctx.textAlign = 'center';
      ctx.fillText(s.label, x + bw / 2, h - bottom + 13);
    }
  });
  ctx.fillStyle = '#6b7385';
  ctx.textAlign = 'center';
  ctx.fillText(xLabel, (left + w - right) / 2, h - bottom + 27);
  let lx = left;
  names.forEach((n, m) => {
    ctx.fillStyle = color(m);
    ctx.fillRect(lx, h - 16, 10, 10);
    ctx.fillStyle = '#1d2330';
    ctx.textAlign = 'left';
    ctx.fillText(n, lx + 14, h - 7);
    lx += ctx.measureText(n).width + 30;
  });
}

/** A canvas with a 28x28 grey digit (base64 pixels, 0 = black background as in MNIST; drawn ink-dark on white). */
export function digitCanvas(base64) {
  const bytes = Uint8Array.from(atob(base64), c => c.charCodeAt(0));
  const canvas = document.createElement('canvas');
  canvas.width = 28;
  canvas.height = 28;
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = 255 - bytes[i];
    img.data[4 * i] = v;
    img.data[4 * i + 1] = v;
    img.data[4 * i + 2] = v;
    img.data[4 * i + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
  return canvas;
}
