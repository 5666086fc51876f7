// The experiment log of a training run, written into its run folder as the run goes (so an interrupted run keeps
// what it did): one record per optimizer step and one per epoch, as JSON Lines (train-log.jsonl, each record with
// its "type") and as CSV (steps.csv, epochs.csv) for spreadsheets and pandas. A resumed run drops the records of
// the epochs it trains again and appends.
import * as fs from 'node:fs';
import * as path from 'node:path';

export const LOG_FILES = { jsonl: 'train-log.jsonl', steps: 'steps.csv', epochs: 'epochs.csv' } as const;

export interface StepRecord {
  /** The ensemble member (task) the step belongs to; absent for a single model. */
  member?: string;
  epoch: number;
  batch: number;
  batches: number;
  /** Optimizer steps since the start of the run (of this member). */
  step: number;
  loss: number;
  lr?: number;
  images_per_second?: number;
  time: string;
}

export type EpochRecord = { member?: string; epoch: number; time: string } & Record<
  string,
  number | string | undefined
>;

const STEP_COLUMNS = [
  'member',
  'epoch',
  'batch',
  'batches',
  'step',
  'loss',
  'lr',
  'images_per_second',
  'time',
] as const;

export class RunLog {
  readonly steps: StepRecord[] = [];
  readonly epochs: EpochRecord[] = [];
  private epochColumns: string[] | null = null;
  private readonly stepCount = new Map<string, number>();

  /**
   * Starts the log in dir: fresh, or (keepEpochs = the epoch a resumed run continues after) with the records of
   * epochs up to keepEpochs kept from the existing log.
   */
  constructor(
    private readonly dir: string,
    keepEpochs?: number,
  ) {
    fs.mkdirSync(dir, { recursive: true });
    if (keepEpochs !== undefined) {
      for (const r of readLog(path.join(dir, LOG_FILES.jsonl))) {
        if (r.epoch > keepEpochs) continue;
        if (r.type === 'step') this.steps.push(r.record as unknown as StepRecord);
        else this.epochs.push(r.record as EpochRecord);
      }
    }
    for (const s of this.steps) {
      const m = s.member ?? '';
      this.stepCount.set(m, Math.max(this.stepCount.get(m) ?? 0, s.step));
    }
    this.rewrite();
  }

  step(
    s: { epoch: number; batch: number; batches: number; loss: number; lr?: number; imagesPerSecond?: number },
    member?: string,
  ): void {
    const step = (this.stepCount.get(member ?? '') ?? 0) + 1;
    this.stepCount.set(member ?? '', step);
    const r: StepRecord = {
      ...(member === undefined ? {} : { member }),
      epoch: s.epoch,
      batch: s.batch,
      batches: s.batches,
      step,
      loss: s.loss,
      ...(s.lr === undefined ? {} : { lr: s.lr }),
      ...(s.imagesPerSecond === undefined ? {} : { images_per_second: round(s.imagesPerSecond, 1) }),
      time: new Date().toISOString(),
    };
    this.steps.push(r);
    this.append({ type: 'step', ...r }, r, STEP_COLUMNS as readonly string[], LOG_FILES.steps);
  }

  epoch(m: { epoch: number }, member?: string): void {
    const r = { ...(member === undefined ? {} : { member }), time: new Date().toISOString() } as EpochRecord;
    for (const [k, v] of Object.entries(m)) if (typeof v === 'number' || typeof v === 'string') r[k] = v;
    this.epochs.push(r);
    if (!this.epochColumns) {
      this.epochColumns = epochColumns(this.epochs);
      fs.appendFileSync(path.join(this.dir, LOG_FILES.epochs), `${this.epochColumns.join(',')}\n`);
    }
    this.append({ type: 'epoch', ...r }, r, this.epochColumns, LOG_FILES.epochs);
  }

  private append(json: object, row: object, columns: readonly string[], csv: string): void {
    fs.appendFileSync(path.join(this.dir, LOG_FILES.jsonl), `${JSON.stringify(json)}\n`);
    fs.appendFileSync(path.join(this.dir, csv), `${csvRow(columns.map(c => (row as Record<string, unknown>)[c]))}\n`);
  }

  /** Writes the three files from the records kept in memory (a fresh log: just the CSV headers). */
  private rewrite(): void {
    const lines = [
      ...this.steps.map(s => ({ type: 'step', ...s })),
      ...this.epochs.map(e => ({ type: 'epoch', ...e })),
    ].sort((a, b) => a.epoch - b.epoch || (a.type === b.type ? 0 : a.type === 'step' ? -1 : 1));
    fs.writeFileSync(path.join(this.dir, LOG_FILES.jsonl), lines.map(l => `${JSON.stringify(l)}\n`).join(''));
    const table = (columns: readonly string[], rows: object[]) =>
      [columns.join(','), ...rows.map(r => csvRow(columns.map(c => (r as Record<string, unknown>)[c])))]
        .map(l => `${l}\n`)
        .join('');
    fs.writeFileSync(path.join(this.dir, LOG_FILES.steps), table(STEP_COLUMNS, this.steps));
    this.epochColumns = this.epochs.length ? epochColumns(this.epochs) : null;
    // the epochs' header is written with the first epoch (its columns depend on the model and the splits)
    const epochsCsv = this.epochColumns ? table(this.epochColumns, this.epochs) : '';
    fs.writeFileSync(path.join(this.dir, LOG_FILES.epochs), epochsCsv);
  }
}

function epochColumns(epochs: EpochRecord[]): string[] {
  const keys = new Set<string>(['member', 'epoch']);
  for (const e of epochs) for (const k of Object.keys(e)) if (k !== 'time') keys.add(k);
  return [...keys, 'time'];
}

function readLog(file: string): { type: string; epoch: number; record: Record<string, unknown> }[] {
  if (!fs.existsSync(file)) return [];
  const out: { type: string; epoch: number; record: Record<string, unknown> }[] = [];
  for (const line of fs.readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    let r: unknown;
    try {
      r = JSON.parse(line);
    } catch {
      continue;
    } // a line cut off by a crash
    if (typeof r !== 'object' || r === null) continue;
    const { type, ...record } = r as Record<string, unknown>;
    if ((type !== 'step' && type !== 'epoch') || typeof record.epoch !== 'number') continue;
    out.push({ type, epoch: record.epoch, record });
  }
  return out;
}

function csvRow(values: unknown[]): string {
  return values
    .map(v => {
      if (v === undefined || v === null) return '';
      const s = String(v);
      return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
    })
    .join(',');
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
