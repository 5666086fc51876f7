// What the built-in dashboard shows of a finished run: a run is a directory with a metrics.json written by
// `fleet train` or by the coordinator for a job (<state>/jobs/<id>/out). From it come the ensemble's members,
// selection steps and baselines, the confusion matrix with the misclassified test digits, and a MIL run's
// test bags with their instances' attention. Digit pixels come from the run's data set on this host.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { loadDataset, IMAGE_SIZE, DATASETS, type DatasetName } from '../engine/data/datasets.ts';

export interface RunRef {
  id: string;
  dir: string;
  source: 'job' | 'dir';
}

/** A run's metrics.json is ours but may be truncated or from another version: refuse, naming the file. */
const MAX_METRICS_BYTES = 64 * 1024 * 1024;

export class RunError extends Error {
  constructor(
    message: string,
    readonly status = 422,
  ) {
    super(message);
  }
}

type Json = Record<string, any>;

export function readMetrics(dir: string): Json {
  const file = path.join(dir, 'metrics.json');
  let size: number;
  try {
    size = fs.statSync(file).size;
  } catch {
    throw new RunError(`${file}: no such file`, 404);
  }
  if (size > MAX_METRICS_BYTES)
    throw new RunError(`${file}: ${size} bytes is more than the ${MAX_METRICS_BYTES} the dashboard reads`);
  try {
    const m = JSON.parse(fs.readFileSync(file, 'utf8'));
    if (typeof m !== 'object' || m === null || Array.isArray(m)) throw new Error('not a JSON object');
    return m;
  } catch (e) {
    throw new RunError(`${file}: not a valid metrics.json: ${(e as Error).message}`);
  }
}

/** Sub-directories of runsDir holding a metrics.json (the runs `fleet train --out` wrote there). */
export function runsIn(runsDir: string | undefined): RunRef[] {
  if (!runsDir || !fs.existsSync(runsDir)) return [];
  return fs
    .readdirSync(runsDir, { withFileTypes: true })
    .filter(d => d.isDirectory() && fs.existsSync(path.join(runsDir, d.name, 'metrics.json')))
    .map(d => ({ id: d.name, dir: path.join(runsDir, d.name), source: 'dir' as const }));
}

const kindOf = (m: Json): string => (m.ensemble ? 'ensemble' : m.test_bags ? 'mil' : String(m.model ?? 'unknown'));

/** One line per run for the dashboard's list. */
export function runSummary(ref: RunRef) {
  try {
    const m = readMetrics(ref.dir);
    return {
      id: ref.id,
      source: ref.source,
      kind: kindOf(m),
      model: m.model ?? null,
      ensemble: m.ensemble ?? null,
      test_accuracy: m.test_accuracy ?? null,
      test_auc: m.test_auc ?? null,
      mtime: fs.statSync(path.join(ref.dir, 'metrics.json')).mtimeMs,
    };
  } catch (e) {
    return { id: ref.id, source: ref.source, kind: 'unreadable', error: (e as Error).message };
  }
}

/** The run's details: curves per member, and for ensembles the weights per selection step and the baselines. */
export function runDetails(ref: RunRef) {
  const m = readMetrics(ref.dir);
  const kind = kindOf(m);
  const histories: Record<string, unknown[]> =
    m.histories ?? (Array.isArray(m.history) ? { [m.model ?? 'model']: m.history } : {});
  const out: Json = {
    id: ref.id,
    kind,
    model: m.model ?? null,
    dataset: datasetOf(m),
    summary: pickScalars(m),
    histories,
    hasErrors: !!m.test_errors,
  };
  if (kind === 'ensemble') {
    out.ensemble = {
      kind: m.ensemble,
      members: m.member_results ?? [],
      weights: m.weights ?? [],
      selection: m.selection ?? null,
      comparison: { ensemble: m.ensemble_test ?? null, best_member: m.best_member ?? null, average: m.average ?? null },
    };
  }
  if (kind === 'mil') {
    const bags = m.test_bags as Json[];
    out.mil = {
      pooling: m.pooling ?? m.config?.pooling,
      target: m.config?.target,
      test_auc: m.test_auc,
      bags: bags.map(b => ({ label: b.label, probability: b.probability, size: b.digits?.length ?? 0 })),
    };
  }
  return out;
}

/** The confusion matrix and the misclassified test digits with their pixels (base64, 28x28 grey, row-major). */
export function runErrors(ref: RunRef) {
  const m = readMetrics(ref.dir);
  const e = m.test_errors;
  if (!e || !Array.isArray(e.confusion) || !Array.isArray(e.misclassified)) {
    throw new RunError(
      `${path.join(ref.dir, 'metrics.json')}: no test_errors (written by runs of this version for CNN models and ensembles)`,
      404,
    );
  }
  const images = testImages(m, ref.dir);
  return {
    id: ref.id,
    confusion: e.confusion,
    errors: e.errors,
    classes: e.confusion.length,
    misclassified: e.misclassified.map((x: Json) => ({ ...x, pixels: pixels(images, x.index, ref.dir) })),
  };
}

/** One MIL test bag: its instances as images with their attention weights, the bag's label and probability. */
export function milBag(ref: RunRef, index: number) {
  const m = readMetrics(ref.dir);
  const bags = m.test_bags;
  if (!Array.isArray(bags)) throw new RunError(`run ${ref.id} is not a MIL run`, 404);
  if (!Number.isInteger(index) || index < 0 || index >= bags.length)
    throw new RunError(`bag ${index}: run ${ref.id} has test bags 0..${bags.length - 1}`, 404);
  const b = bags[index];
  if (!Array.isArray(b.indices))
    throw new RunError(
      `${path.join(ref.dir, 'metrics.json')}: bag ${index} has no instance indices (a run from before they were recorded)`,
    );
  const images = testImages(m, ref.dir);
  return {
    id: ref.id,
    index,
    label: b.label,
    probability: b.probability,
    target: m.config?.target ?? null,
    instances: (b.indices as number[]).map((i, k) => ({
      digit: b.digits?.[k] ?? null,
      attention: b.attention?.[k] ?? null,
      pixels: pixels(images, i, ref.dir),
    })),
  };
}

function datasetOf(m: Json): DatasetName {
  const d = m.dataset ?? m.config?.dataset ?? 'mnist';
  return (DATASETS as readonly string[]).includes(d) ? d : 'mnist';
}

const datasets = new Map<string, { images: Uint8Array; count: number }>();

function testImages(m: Json, dir: string) {
  const name = datasetOf(m),
    dataDir: string | undefined = typeof m.config?.dataDir === 'string' ? m.config.dataDir : undefined;
  const key = `${name}|${dataDir ?? ''}`;
  if (!datasets.has(key)) {
    try {
      datasets.set(key, loadDataset(name, dataDir).test);
    } catch (e) {
      throw new RunError(`run ${dir}: cannot load the ${name} test set for its digits: ${(e as Error).message}`, 500);
    }
  }
  return datasets.get(key)!;
}

function pixels(images: { images: Uint8Array; count: number }, i: unknown, dir: string): string {
  if (!Number.isInteger(i) || (i as number) < 0 || (i as number) >= images.count)
    throw new RunError(
      `${path.join(dir, 'metrics.json')}: test index ${i} is not in the test set (0..${images.count - 1})`,
    );
  const k = i as number;
  return Buffer.from(images.images.subarray(k * IMAGE_SIZE, (k + 1) * IMAGE_SIZE)).toString('base64');
}

function pickScalars(m: Json): Json {
  return Object.fromEntries(
    Object.entries(m).filter(([, v]) => typeof v === 'number' || typeof v === 'string' || typeof v === 'boolean'),
  );
}
