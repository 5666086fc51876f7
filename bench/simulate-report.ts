// `fleet bench simulate`: the scale model (bench/simulate.ts) run on measured inputs (bench/simulate-inputs.ts),
// written to bench/results/simulate.json and a Markdown table next to it, and copied from that file into
// docs/data-parallel.md between markers (never typed there by hand).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { provenance } from './results-file.ts';
import { readScaleResults, measureMessageRoundTrip, modelInputs } from './simulate-inputs.ts';
import {
  simulate,
  markdownTable,
  DESIGNS,
  DESIGN_TEXT,
  WORKER_COUNTS,
  BANDWIDTHS_GBIT,
  type Prediction,
} from './simulate.ts';

export const DOCS_BEGIN = '<!-- simulate:table -->';
export const DOCS_END = '<!-- /simulate:table -->';

export interface SimulateOptions {
  inputs: string;
  out: string;
  latencyMs: number;
  perWorkerBatch?: number;
  root: string;
  log: (line: string) => void;
}

export async function benchSimulate(o: SimulateOptions) {
  const measured = readScaleResults(o.inputs);
  let messageRoundTrip = measured.messageRoundTripMs;
  if (messageRoundTrip === undefined) {
    o.log(
      `${o.inputs} has no message round trip: measuring one ` +
        `(1 KB through a local nats-server, ${measured.floor.receivers} echoes)`,
    );
    messageRoundTrip = await measureMessageRoundTrip(measured.floor.receivers);
  }
  const { inputs, sources } = modelInputs(measured, messageRoundTrip, path.relative(o.root, o.inputs));
  const perWorkerBatch = o.perWorkerBatch ?? measured.globalBatch / measured.workers;
  const predictions = simulate(inputs, { latencyMs: o.latencyMs, perWorkerBatch });
  const result = {
    bench: 'simulate',
    ...provenance(o.root, [o.out, mdPath(o.out)]),
    measured_at: measured.date,
    message_round_trip_ms: messageRoundTrip,
    scenario: {
      latency_ms_per_hop: o.latencyMs,
      per_worker_batch: perWorkerBatch,
      workers: WORKER_COUNTS,
      gbit_per_second: BANDWIDTHS_GBIT,
    },
    designs: Object.fromEntries(DESIGNS.map(d => [d, DESIGN_TEXT[d]])),
    inputs,
    input_sources: sources,
    predictions,
  };
  writeFileAtomic(o.out, JSON.stringify(result, null, 2) + '\n');
  writeFileAtomic(mdPath(o.out), renderMarkdown(result));
  return result;
}

export const mdPath = (jsonFile: string) => jsonFile.replace(/\.json$/, '') + '.md';

/** The table with its scenario and provenance line, as it appears in the .md file and the docs. */
export function renderMarkdown(r: {
  commit: string | null;
  date: string;
  measured_at: string;
  scenario: { latency_ms_per_hop: number; per_worker_batch: number };
  predictions: Prediction[];
}): string {
  return (
    `Predicted by \`fleet bench simulate\` (bench/results/simulate.json, ${r.date.slice(0, 16)} UTC, commit ` +
    `${r.commit?.slice(0, 10) ?? 'unknown'}) from the measurement of ${r.measured_at.slice(0, 16)}; ` +
    `${r.scenario.per_worker_batch} images per worker, ${r.scenario.latency_ms_per_hop} ms latency per hop.\n` +
    markdownTable(r.predictions)
  );
}

/** `text` with what is between `begin` and `end` replaced by `body`; throws naming the doc if a marker is missing. */
function replaceBetween(doc: string, text: string, begin: string, end: string, body: string): string {
  const a = text.indexOf(begin),
    b = text.indexOf(end);
  if (a < 0 || b < a) throw new Error(`${doc}: the markers ${begin} ... ${end} are missing`);
  return `${text.slice(0, a + begin.length)}\n${body}\n${text.slice(b)}`;
}

export const VALIDATION_BEGIN = '<!-- simulate:validation -->';
export const VALIDATION_END = '<!-- /simulate:validation -->';

export interface ValidationRow {
  gbit_per_second: number | null;
  measured_step_ms: number;
  predicted_step_ms: number;
  error: number;
  compute_ms_median: number;
  steps_counted: number;
}

/** The predicted vs measured table of bench/results/simulate-validation.json (bench/simulate-validate.ts). */
export function renderValidation(v: {
  date: string;
  commit: string | null;
  load_average_1min: number;
  rows: ValidationRow[];
}) {
  const head =
    `Measured by bench/simulate-validate.ts (bench/results/simulate-validation.json, ${v.date.slice(0, 16)} UTC, ` +
    `commit ${v.commit?.slice(0, 10) ?? 'unknown'}, load average ${v.load_average_1min} on 2 cores); the parameter ` +
    'server with 2 workers, global batch 256, medians of the counted steps.\n\n' +
    '| link (tbf, both directions) | measured step ms | predicted step ms | error | compute ms (measured) | steps |\n' +
    '|---|---:|---:|---:|---:|---:|\n';
  return (
    head +
    v.rows
      .map(
        r =>
          `| ${r.gbit_per_second === null ? 'unlimited (loopback speed)' : `${r.gbit_per_second * 1000} Mbit/s`} | ` +
          `${r.measured_step_ms} | ${r.predicted_step_ms} | ${(100 * r.error).toFixed(1)}% | ` +
          `${r.compute_ms_median} | ${r.steps_counted} |`,
      )
      .join('\n') +
    '\n'
  );
}

/**
 * Copies the results file's table (and the validation file's, when given) into `doc` between their markers.
 * Returns whether the doc changed; throws when a marker is missing.
 */
export function updateDocsTable(doc: string, resultsFile: string, validationFile?: string): boolean {
  const r = JSON.parse(fs.readFileSync(resultsFile, 'utf8'));
  if (!Array.isArray(r.predictions) || typeof r.date !== 'string' || !r.scenario)
    throw new Error(`${resultsFile}: not a fleet bench simulate results file`);
  const text = fs.readFileSync(doc, 'utf8');
  let next = replaceBetween(doc, text, DOCS_BEGIN, DOCS_END, renderMarkdown(r));
  if (validationFile) {
    const v = JSON.parse(fs.readFileSync(validationFile, 'utf8'));
    if (!Array.isArray(v.rows) || typeof v.date !== 'string')
      throw new Error(`${validationFile}: not a validation results file`);
    next = replaceBetween(doc, next, VALIDATION_BEGIN, VALIDATION_END, renderValidation(v));
  }
  if (next === text) return false;
  writeFileAtomic(doc, next);
  return true;
}
