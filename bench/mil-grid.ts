// `fleet bench mil-grid`: the sweep behind the figures of Ilse et al. 2018 — test bag AUC of the MIL model on
// MNIST-bags for several numbers of training bags, each over several seeds, for each pooling; mean and standard
// deviation per (training bags, pooling) cell, as a markdown table and an SVG line chart.
//
// A full sweep takes hours on a small machine, so it is resumable: the results file (JSON) is rewritten
// atomically after every finished run, and a later call with the same settings (epochs, test bags, bag length,
// target digit, recipe, model) skips the runs it already holds. With different settings it starts over.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { trainMil, MIL_RECIPE } from '../engine/train/train-mil.ts';
import { POOLINGS, MIL_MODEL, type Pooling } from '../engine/model/mil.ts';
import { loadDataset, type Split } from '../engine/data/datasets.ts';
import type { Device } from '../engine/runtime.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { lineChart } from '../engine/report/plots.ts';
import { versions } from '../util/versions.ts';
import { formatDuration } from '../util/format.ts';

/** One finished training run: `size` training bags, seed, pooling; test bag AUC and accuracy, wall seconds. */
export interface MilGridCell {
  size: number;
  seed: number;
  pooling: Pooling;
  auc: number | null;
  accuracy: number;
  seconds: number;
}

/** What makes results comparable: a results file is resumed only when these match exactly. */
export interface MilGridSettings {
  dataset: 'mnist';
  /** The architecture (MIL_MODEL): results of an earlier model are not resumed. */
  model: string;
  epochs: number;
  testBags: number;
  bagMean: number;
  bagStd: number;
  target: number;
  recipe: typeof MIL_RECIPE;
}

export interface MilGridFile {
  bench: 'mil-grid';
  settings: MilGridSettings;
  /** The machine of the latest write (the runs may come from several sessions). */
  machine: ReturnType<typeof versions>;
  /** ONNX Runtime threads of the latest write (null: its default). */
  threads: number | null;
  cells: MilGridCell[];
}

/** Mean and sample standard deviation (n - 1; 0 for one seed) of the finite AUCs of one (size, pooling) cell. */
export interface MilGridStat {
  mean: number | null;
  std: number | null;
  n: number;
}

export interface MilGridSummary {
  bench: 'mil-grid';
  out: string;
  markdown: string;
  svg: string;
  settings: MilGridSettings;
  /** The table's rows and columns: the sizes and poolings asked for and those of earlier runs in the file. */
  sizes: number[];
  seeds: number[];
  poolings: Pooling[];
  /** Runs trained by this call, and runs found finished in the results file. */
  trained: number;
  skipped: number;
  /** table[size][pooling]: AUC over the seeds. */
  table: Record<string, Record<string, MilGridStat>>;
}

export interface MilGridOptions {
  sizes: number[];
  seeds: number[];
  poolings: Pooling[];
  epochs: number;
  /** Test bags per run (default 250, as the paper). */
  testBags?: number;
  /** ONNX Runtime intra-op threads (default: ONNX Runtime's choice). */
  threads?: number;
  device?: Device;
  /** The results file (JSON); the table (.md) and chart (.svg) are written next to it. */
  out: string;
  log?: (line: string) => void;
  /** Bag length mean and standard deviation (default 10 and 2) and target digit (default 9), as the paper. */
  bagMean?: number;
  bagStd?: number;
  target?: number;
  /** MNIST splits (default: loadDataset('mnist'), loaded only when some run is left to train). */
  data?: { train: Split; test: Split };
}

/** The .md and .svg paths next to a results file. */
export function companionPaths(out: string): { markdown: string; svg: string } {
  const base = out.replace(/\.json$/i, '');
  return { markdown: `${base}.md`, svg: `${base}.svg` };
}

export async function runMilGrid(o: MilGridOptions): Promise<MilGridSummary> {
  const log = o.log ?? (() => {});
  checkList('sizes', o.sizes, 1);
  checkList('seeds', o.seeds, 0);
  if (o.poolings.length === 0) throw new RangeError('mil-grid: poolings is empty');
  for (const p of o.poolings)
    if (!(POOLINGS as readonly string[]).includes(p)) throw new RangeError(`mil-grid: unknown pooling "${p}"`);
  if (new Set(o.poolings).size !== o.poolings.length) throw new RangeError('mil-grid: a pooling is listed twice');
  if (!Number.isInteger(o.epochs) || o.epochs < 1)
    throw new RangeError(`mil-grid: epochs must be a positive integer, got ${o.epochs}`);

  const settings: MilGridSettings = {
    dataset: 'mnist',
    model: MIL_MODEL,
    epochs: o.epochs,
    testBags: o.testBags ?? 250,
    bagMean: o.bagMean ?? 10,
    bagStd: o.bagStd ?? 2,
    target: o.target ?? 9,
    recipe: MIL_RECIPE,
  };
  const out = path.resolve(o.out);
  const threads = o.threads ?? null;
  const file: MilGridFile = { bench: 'mil-grid', settings, machine: versions(), threads, cells: [] };
  const previous = readResults(out);
  if (previous) {
    const diff = settingsDiff(previous.settings, settings);
    if (diff.length === 0) {
      file.cells = previous.cells;
      log(`mil-grid: resuming ${out} (${previous.cells.length} finished runs)`);
    } else {
      log(`mil-grid: ${out} holds other settings (${diff.join(', ')}): starting over`);
    }
  }

  const key = (c: { size: number; seed: number; pooling: string }) => `${c.size}/${c.seed}/${c.pooling}`;
  const done = new Map(file.cells.map(c => [key(c), c]));
  // smallest sizes first: a partial sweep already gives whole rows of the table
  const grid = o.sizes.flatMap(size => o.seeds.flatMap(seed => o.poolings.map(pooling => ({ size, seed, pooling }))));
  let data = o.data ?? null;
  let trained = 0,
    skipped = 0;
  const started = performance.now();
  for (const [i, cell] of grid.entries()) {
    const name = `cell ${i + 1}/${grid.length}: ${cell.size} bags, seed ${cell.seed}, ${cell.pooling}`;
    const old = done.get(key(cell));
    if (old) {
      skipped++;
      log(`${name}: skipped (done: AUC ${fmt(old.auc)})`);
      continue;
    }
    data ??= loadDataset('mnist');
    const t0 = performance.now();
    const r = await trainMil({
      pooling: cell.pooling,
      epochs: o.epochs,
      seed: cell.seed,
      bags: cell.size,
      testBags: settings.testBags,
      bagMean: settings.bagMean,
      bagStd: settings.bagStd,
      target: settings.target,
      recipe: settings.recipe,
      train: data.train,
      test: data.test,
      runtime: { threads: o.threads, device: o.device },
      evaluateEachEpoch: false,
      onEpoch: e => {
        if (o.epochs > 1)
          log(
            `  ${name}: epoch ${e.epoch}/${o.epochs}, train loss ${e.train_loss.toFixed(4)}, ${e.seconds.toFixed(1)}s`,
          );
      },
    });
    const seconds = (performance.now() - t0) / 1000;
    const result: MilGridCell = {
      ...cell,
      auc: Number.isFinite(r.test.auc) ? r.test.auc : null,
      accuracy: r.test.accuracy,
      seconds: Math.round(seconds * 100) / 100,
    };
    file.cells.push(result);
    done.set(key(cell), result);
    file.machine = versions();
    writeFileAtomic(out, JSON.stringify(file, null, 2) + '\n');
    trained++;
    log(
      `${name}: AUC ${fmt(result.auc)}, accuracy ${(result.accuracy * 100).toFixed(1)}%, ${seconds.toFixed(1)}s (elapsed ${formatDuration((performance.now() - started) / 1000)})`,
    );
  }

  // the table and chart show every finished run of the file (earlier calls' sizes and poolings too), so a grid
  // run in parts (a few sizes or poolings per call) ends with one table; rows and columns in a fixed order
  const sizes = [...new Set([...o.sizes, ...file.cells.map(c => c.size)])].sort((a, b) => a - b);
  const poolings = POOLINGS.filter(p => o.poolings.includes(p) || file.cells.some(c => c.pooling === p));
  const table = summarise(file.cells, sizes, poolings, o.seeds);
  const paths = companionPaths(out);
  writeFileAtomic(paths.markdown, markdownTable(table, sizes, poolings, settings));
  writeFileAtomic(paths.svg, gridChart(table, sizes, poolings, settings));
  log(`mil-grid: ${trained} trained, ${skipped} skipped; wrote ${out}, ${paths.markdown}, ${paths.svg}`);
  return {
    bench: 'mil-grid',
    out,
    markdown: paths.markdown,
    svg: paths.svg,
    settings,
    sizes,
    seeds: o.seeds,
    poolings,
    trained,
    skipped,
    table,
  };
}

/** AUC mean and standard deviation per (size, pooling) over the given seeds' finished runs. */
export function summarise(
  cells: MilGridCell[],
  sizes: number[],
  poolings: Pooling[],
  seeds: number[],
): Record<string, Record<string, MilGridStat>> {
  const wanted = new Set(seeds);
  const table: Record<string, Record<string, MilGridStat>> = {};
  for (const size of sizes) {
    table[size] = {};
    for (const pooling of poolings) {
      const aucs = cells
        .filter(
          c =>
            c.size === size && c.pooling === pooling && wanted.has(c.seed) && c.auc !== null && Number.isFinite(c.auc),
        )
        .map(c => c.auc as number);
      table[size][pooling] = stat(aucs);
    }
  }
  return table;
}

export function stat(xs: number[]): MilGridStat {
  const n = xs.length;
  if (n === 0) return { mean: null, std: null, n };
  const mean = xs.reduce((a, b) => a + b, 0) / n;
  const std = n > 1 ? Math.sqrt(xs.reduce((a, x) => a + (x - mean) ** 2, 0) / (n - 1)) : 0;
  return { mean, std, n };
}

/** Rows: training bags; columns: poolings; cells "mean ± std (n seeds)". */
export function markdownTable(
  table: Record<string, Record<string, MilGridStat>>,
  sizes: number[],
  poolings: Pooling[],
  s: MilGridSettings,
): string {
  const lines = [
    '# MIL on MNIST-bags: test bag AUC',
    '',
    `${plural(s.epochs, 'epoch')}, ${s.testBags} test bags, bag length ~ N(${s.bagMean}, ${s.bagStd}), target digit ${s.target}; ` +
      'mean ± sample standard deviation over the seeds.',
    '',
    `| training bags | ${poolings.join(' | ')} |`,
    `|---:|${poolings.map(() => '---:').join('|')}|`,
  ];
  for (const size of sizes) {
    const row = poolings.map(p => {
      const c = table[size][p];
      return c.mean === null
        ? '—'
        : `${c.mean.toFixed(3)} ± ${(c.std ?? 0).toFixed(3)} (${c.n} seed${c.n === 1 ? '' : 's'})`;
    });
    lines.push(`| ${size} | ${row.join(' | ')} |`);
  }
  return lines.join('\n') + '\n';
}

/** Mean AUC against the number of training bags, one line per pooling. */
export function gridChart(
  table: Record<string, Record<string, MilGridStat>>,
  sizes: number[],
  poolings: Pooling[],
  s: MilGridSettings,
): string {
  const order = [...sizes].sort((a, b) => a - b);
  return lineChart({
    title: `MNIST-bags: test AUC (mean over seeds, ${plural(s.epochs, 'epoch')})`,
    xLabel: 'training bags',
    yLabel: 'test AUC',
    series: poolings.map(p => ({
      name: p,
      points: order.map(size => [size, table[size][p].mean ?? NaN] as [number, number]),
    })),
  });
}

function readResults(file: string): MilGridFile | null {
  if (!fs.existsSync(file)) return null;
  let parsed: MilGridFile;
  try {
    parsed = JSON.parse(fs.readFileSync(file, 'utf8')) as MilGridFile;
  } catch (e) {
    throw new Error(
      `mil-grid: ${file} is not a results file (${(e as Error).message}); move it away or choose another --out`,
    );
  }
  if (parsed?.bench !== 'mil-grid' || !Array.isArray(parsed.cells) || typeof parsed.settings !== 'object') {
    throw new Error(`mil-grid: ${file} is not a mil-grid results file; move it away or choose another --out`);
  }
  return parsed;
}

/** The settings that differ, as "name old -> new". */
function settingsDiff(a: MilGridSettings, b: MilGridSettings): string[] {
  const names = new Set([...Object.keys(a ?? {}), ...Object.keys(b)]);
  const diff: string[] = [];
  for (const n of names) {
    const x = JSON.stringify((a as unknown as Record<string, unknown>)?.[n]),
      y = JSON.stringify((b as unknown as Record<string, unknown>)[n]);
    if (x !== y) diff.push(`${n} ${x} -> ${y}`);
  }
  return diff;
}

function checkList(name: string, xs: number[], min: number): void {
  if (xs.length === 0) throw new RangeError(`mil-grid: ${name} is empty`);
  for (const x of xs)
    if (!Number.isInteger(x) || x < min) throw new RangeError(`mil-grid: ${name} must be integers >= ${min}, got ${x}`);
  if (new Set(xs).size !== xs.length) throw new RangeError(`mil-grid: a value of ${name} is listed twice`);
}

const plural = (n: number, word: string) => `${n} ${word}${n === 1 ? '' : 's'}`;
const fmt = (auc: number | null) => (auc === null ? 'n/a (one class in the test bags)' : auc.toFixed(4));
