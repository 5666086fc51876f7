// Progress reporting for long work (training epochs, evaluation, data loading).
//
// On a terminal (stream.isTTY) one line is redrawn in place with "\r", at most ~10 times a second:
//   train epoch 1/10: [#####---------------]  25% (58/235) 1234 img/s loss=0.1234 eta 42s
// Elsewhere (logs, CI, pipes) plain lines are printed, only when another 10% is reached or a few seconds
// have passed since the previous line, so logs stay readable:
//   train epoch 1/10: 25% (58/235) 1234 img/s loss=0.1234 eta 42s
// done() ends the line (terminal) or prints a final summary line (plain).

import { formatDuration } from '../util/format.ts';

export { formatDuration };

/** Where progress goes: process.stderr, or anything with write() (and optionally isTTY / columns). */
export interface ProgressStream {
  write(chunk: string): unknown;
  isTTY?: boolean;
  columns?: number;
}

export type ProgressInfo = Record<string, string | number>;

export interface ProgressOptions {
  label: string;
  total: number;
  /** Default process.stderr. */
  stream?: ProgressStream;
  /** Unit of the rate, e.g. 'img' gives "1234 img/s". Default 'it'. */
  unit?: string;
  /** Clock in milliseconds (injectable for tests). Default performance.now(). */
  now?: () => number;
  /** Force terminal (true) or plain (false) output; default stream.isTTY. */
  tty?: boolean;
  /** Minimum milliseconds between terminal redraws. Default 100 (10 per second). */
  ttyIntervalMs?: number;
  /** Plain mode: a line at least this often while work progresses. Default 5000. */
  plainIntervalMs?: number;
  /** Plain mode: a line whenever another this-much fraction of the total is done. Default 0.1. */
  plainStep?: number;
  /** Width of the terminal bar in characters. Default 20. */
  barWidth?: number;
}

/** A number for display: integers as they are, others with 4 significant digits, trailing zeros dropped. */
export function formatNumber(v: number): string {
  if (!Number.isFinite(v)) return String(v);
  if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
  const a = Math.abs(v);
  if (a !== 0 && (a < 1e-3 || a >= 1e6)) return v.toExponential(2);
  let s = v.toPrecision(4);
  if (s.includes('.') && !s.includes('e')) s = s.replace(/0+$/, '').replace(/\.$/, '');
  return s;
}

/** Throughput: whole numbers from 100 up, otherwise up to 3 significant digits. */
export function formatRate(r: number): string {
  if (!Number.isFinite(r) || r < 0) return '?';
  if (r >= 100) return String(Math.round(r));
  if (r >= 10) return r.toFixed(1).replace(/\.0$/, '');
  return r.toFixed(2).replace(/0+$/, '').replace(/\.$/, '');
}

export function formatInfo(info: ProgressInfo | undefined): string {
  if (!info) return '';
  return Object.entries(info)
    .map(([k, v]) => `${k}=${typeof v === 'number' ? formatNumber(v) : v}`)
    .join(' ');
}

export class Progress {
  readonly label: string;
  readonly total: number;
  private readonly stream: ProgressStream;
  private readonly unit: string;
  private readonly now: () => number;
  private readonly tty: boolean;
  private readonly ttyIntervalMs: number;
  private readonly plainIntervalMs: number;
  private readonly plainStep: number;
  private readonly barWidth: number;
  private readonly start: number;
  private count = 0;
  private info: ProgressInfo | undefined;
  private lastDraw = -Infinity;
  private lastLine = '';
  private lastBucket = 0;
  private finished = false;
  /** Terminal: a line is currently drawn (not yet ended with a newline). */
  private drawn = false;

  constructor(opts: ProgressOptions) {
    this.label = opts.label;
    this.total = Math.max(0, Number.isFinite(opts.total) ? opts.total : 0);
    this.stream = opts.stream ?? process.stderr;
    this.unit = opts.unit ?? 'it';
    this.now = opts.now ?? (() => performance.now());
    this.tty = opts.tty ?? Boolean(this.stream.isTTY);
    this.ttyIntervalMs = opts.ttyIntervalMs ?? 100;
    this.plainIntervalMs = opts.plainIntervalMs ?? 5000;
    this.plainStep = opts.plainStep ?? 0.1;
    this.barWidth = opts.barWidth ?? 20;
    this.start = this.now();
    // Terminal: draw on the first update. Plain: the first line waits for 10% or the interval.
    this.lastDraw = this.tty ? -Infinity : this.start;
  }

  /** Reports that `done` of `total` units are finished; `info` replaces the previous info fields. */
  update(done: number, info?: ProgressInfo): void {
    if (this.finished) return;
    this.count = Number.isFinite(done) ? Math.max(0, done) : this.count;
    if (info !== undefined) this.info = info;
    const t = this.now();
    if (this.tty) {
      const complete = this.total > 0 && this.count >= this.total;
      if (!complete && t - this.lastDraw < this.ttyIntervalMs) return;
      this.lastDraw = t;
      this.draw(this.ttyLine(t));
    } else {
      const bucket = this.bucket();
      if (bucket <= this.lastBucket && t - this.lastDraw < this.plainIntervalMs) return;
      this.lastBucket = Math.max(bucket, this.lastBucket);
      this.lastDraw = t;
      this.stream.write(this.plainLine(t) + '\n');
    }
  }

  /** Prints a message without garbling the bar (terminal: clears the bar, prints, redraws). */
  log(message: string): void {
    if (this.tty && this.drawn) {
      this.stream.write(`\r\x1b[K${message}\n${this.lastLine}`);
    } else {
      this.stream.write(message + '\n');
    }
  }

  /** Ends the progress: a final line with the elapsed time and rate, plus `summary` (fields or text). */
  done(summary?: ProgressInfo | string): void {
    if (this.finished) return;
    this.finished = true;
    const t = this.now();
    const elapsed = (t - this.start) / 1000;
    const parts = [`${this.label}: done`, this.countText(), `in ${formatDuration(elapsed)}`];
    const rate = this.rate(t);
    if (rate !== undefined) parts.push(`${formatRate(rate)} ${this.unit}/s`);
    const fields = typeof summary === 'object' ? { ...this.info, ...summary } : this.info;
    const infoText = formatInfo(fields);
    if (infoText) parts.push(infoText);
    if (typeof summary === 'string' && summary) parts.push(summary);
    const line = parts.join(' ');
    if (this.tty) {
      this.draw(line);
      this.stream.write('\n');
      this.drawn = false;
    } else {
      this.stream.write(line + '\n');
    }
  }

  private draw(line: string): void {
    const cols = this.stream.columns;
    if (cols && cols > 1 && line.length > cols - 1) line = line.slice(0, cols - 1);
    this.lastLine = line;
    this.drawn = true;
    this.stream.write(`\r${line}\x1b[K`);
  }

  private bucket(): number {
    if (this.total <= 0 || this.plainStep <= 0) return 0;
    return Math.floor(Math.min(1, this.count / this.total) / this.plainStep + 1e-9);
  }

  private rate(t: number): number | undefined {
    const s = (t - this.start) / 1000;
    return s > 0 && this.count > 0 ? this.count / s : undefined;
  }

  private countText(): string {
    return this.total > 0 ? `(${this.count}/${this.total})` : `(${this.count})`;
  }

  private fields(t: number): string[] {
    const parts: string[] = [];
    if (this.total > 0)
      parts.push(`${String(Math.floor(Math.min(1, this.count / this.total) * 100)).padStart(this.tty ? 3 : 0)}%`);
    parts.push(this.countText());
    const rate = this.rate(t);
    if (rate !== undefined) parts.push(`${formatRate(rate)} ${this.unit}/s`);
    const infoText = formatInfo(this.info);
    if (infoText) parts.push(infoText);
    if (rate !== undefined && this.total > 0 && this.count < this.total) {
      parts.push(`eta ${formatDuration((this.total - this.count) / rate)}`);
    }
    return parts;
  }

  private ttyLine(t: number): string {
    const parts = this.fields(t);
    if (this.total > 0) {
      const filled = Math.round(Math.min(1, this.count / this.total) * this.barWidth);
      parts.unshift(`[${'#'.repeat(filled)}${'-'.repeat(this.barWidth - filled)}]`);
    }
    return `${this.label}: ${parts.join(' ')}`;
  }

  private plainLine(t: number): string {
    return `${this.label}: ${this.fields(t).join(' ')}`;
  }
}
