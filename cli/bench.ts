// `fleet bench train|infer|augment|serve|scale|mil-grid`: throughput, serving and cluster benchmarks, and the MIL sweep of Ilse et al. 2018 (test AUC
// against the number of training bags); results go to stdout (--json) and optionally a file.
// `fleet bench results`: the experiments behind the README's published numbers (bench/results.ts), and its tables.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type { ChildProcess } from 'node:child_process';
import { parse, intOption, numberOption, choiceOption, UsageError, OPTION_MAX } from '../util/args.ts';
import { benchTrain, benchInfer, benchAugmentShare } from '../bench/throughput.ts';
import { runMilGrid } from '../bench/mil-grid.ts';
import { benchScale } from '../bench/scale.ts';
import { benchServe } from '../bench/serve.ts';
import { POOLINGS, type Pooling } from '../engine/model/mil.ts';
import { checkCuda } from '../engine/runtime.ts';
import { versions } from '../util/versions.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { EXPERIMENTS, selectExperiments } from '../bench/experiments.ts';
import { runExperiments, listExperiments } from '../bench/results.ts';
import { updateReadme } from '../bench/readme-tables.ts';
import { benchSimulate, updateDocsTable } from '../bench/simulate-report.ts';
import { gpuCheck } from '../bench/gpu-check.ts';

const HELP = `usage: fleet bench train|infer|augment|mil-grid|serve|scale|simulate|gpu|results [options]

train     images per second of a full CNN training step (forward, loss, all gradients, AdamW update)
infer     images per second of the exported CNN model (BatchNorm folded, weights baked in)
augment   SimCLR augmentation (two random resized crops + flips per image) against a SimCLR training
          step on the same batch: images per second and the share of a step it would take
serve     KServe v2 gRPC serving (fleet serve in a child process, a 5-member one-graph ensemble with untrained
          weights) against the same model in-process: single-image latency p50/p99 at concurrency 1 (with the
          grpc-js client and with a minimal HTTP/2 gRPC client) and 16, throughput with requests of N
          images (--batch-size, default 64), and the ratios (--iters: timed requests, default 500)
mil-grid  test bag AUC of the MIL model on MNIST-bags (Ilse et al. 2018) for each number of training bags,
          seed and pooling; mean ± standard deviation over the seeds as a table (.md) and a chart (.svg)
          next to the results file. Resumable: rerun the same command and finished runs are skipped.
scale     the cluster over a local nats-server (starts its own): an ensemble of 4 CNN members on 1 worker
          process vs 2 (1 thread each), the speedup; data-parallel SimCLR with 2 workers, the share of a step
          spent outside compute (serialisation, transport, aggregation) and the bytes sent per step, and
          the same bytes alone through the nats-server (the transport floor; results in
          bench/results/scale.json unless --out FILE)
simulate  a model of data-parallel SimCLR on 2-256 workers at 1, 10 and 100 Gbit/s, from the measured compute and
          transport costs in a scale results file: predicted step time, efficiency (share of a step in compute)
          and bytes per link per step for the parameter server (current) and all-reduce designs; results in
          bench/results/simulate.json and .md unless --out FILE (see docs/data-parallel.md)
gpu       the check for a machine with an NVIDIA GPU: a data-parallel SimCLR step and an ensemble member's CNN
          step on the CPU and with --device cuda (default), every gradient within 1e-4 of the CPU's, and the
          throughput of each (results in bench/results/gpu.json unless --out FILE); fails at once naming what is
          missing when there is no CUDA provider. --device cpu checks the CPU against itself (no GPU needed)
results   every experiment behind the README's numbers (CNN, SimCLR, MIL, ensembles, Fashion-MNIST, speed
          against PyTorch), each run as a fleet command in a child process; one results file per experiment
          and mode (commit, date, machine, versions, exact commands) in bench/results/experiments/NAME.MODE.json,
          written after every run. Resumable: a run whose command is in the file already is skipped.

options:
  --threads N      ONNX Runtime intra-op threads (default: all cores)
  --device cpu|cuda
  --out FILE       train|infer|augment: also write the result (JSON) to FILE;
                   mil-grid: the results file (default bench/results/mil-grid.json)
  --json           print the result (mil-grid: the summary table) as one JSON object on the last stdout line
  -h, --help       this text

train|infer|augment|gpu options:
  --batch-size N   batch size (default 256; gpu: 64)
  --warmup N       untimed iterations first (default 3)
  --iters N        timed iterations (default 20; gpu: 10); the median is reported

mil-grid options:
  --sizes LIST     numbers of training bags (default 50,100,150,200,300,400,500)
  --seeds N        seeds 1..N for every size and pooling (default 5)
  --seed-list LIST the seeds instead, e.g. 1,2,3
  --poolings LIST  poolings, of attention|gated|mean|max (default all four)
  --epochs N       training epochs per run (default 40, as fleet train mil)
  --test-bags N    test bags per run (default 250)

results options:
  --quick          the small settings, about 30 minutes on 2 cores (the default)
  --full           the README's full settings (about 18 hours, 16 of them the whole MIL grid)
  --only LIST      only these experiments, e.g. cnn,simclr (see --list)
  --list           print the experiments, their commands and estimated minutes; run nothing
  --out-dir DIR    the results files (default bench/results/experiments)
  --readme         regenerate README.md's tables between <!-- results:NAME --> markers from the results files

scale options:
  --member-steps N training steps (batch 64) per ensemble member (default 20)
  --rounds N       rounds of (1 worker, 2 workers), interleaved (default 4; 0 skips the ensemble part)
  --dp-steps N     data-parallel SimCLR steps (default 8; the first 2 are warm-up)
  --dp-batch N     data-parallel global batch in images (default 256)

simulate options:
  --inputs FILE    the fleet bench scale results measured (default bench/results/scale.json); a missing
                   message round trip is measured with a short run of the transport floor
  --latency-ms X   one-way network latency per hop (default 0.05)
  --per-worker-batch N  images per worker per step (default: the measured global batch / workers)
  --docs           only copy the table of the results file (--out), and of simulate-validation.json next to
                   it when there is one (bench/simulate-validate.ts), into docs/data-parallel.md

To compare with PyTorch on the same machine: npx tsx bench/compare.ts (see the README).
`;

export const OPTIONS = {
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  device: { type: 'string' },
  warmup: { type: 'string' },
  iters: { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  sizes: { type: 'string' },
  seeds: { type: 'string' },
  'seed-list': { type: 'string' },
  poolings: { type: 'string' },
  epochs: { type: 'string' },
  'test-bags': { type: 'string' },
  'member-steps': { type: 'string' },
  rounds: { type: 'string' },
  'dp-steps': { type: 'string' },
  'dp-batch': { type: 'string' },
  quick: { type: 'boolean' },
  full: { type: 'boolean' },
  only: { type: 'string' },
  list: { type: 'boolean' },
  'out-dir': { type: 'string' },
  readme: { type: 'boolean' },
  inputs: { type: 'string' },
  'latency-ms': { type: 'string' },
  'per-worker-batch': { type: 'string' },
  docs: { type: 'boolean' },
} as const;

const KINDS = ['train', 'infer', 'augment', 'mil-grid', 'serve', 'scale', 'simulate', 'gpu', 'results'] as const;
const SIMULATE_ONLY = ['inputs', 'latency-ms', 'per-worker-batch', 'docs'];
const RESULTS_ONLY = ['quick', 'full', 'only', 'list', 'out-dir', 'readme'];
const THROUGHPUT_ONLY = ['batch-size', 'warmup', 'iters'];
const MIL_GRID_ONLY = ['sizes', 'seeds', 'seed-list', 'poolings', 'epochs', 'test-bags'];
const SCALE_ONLY = ['member-steps', 'rounds', 'dp-steps', 'dp-batch'];
export const MIL_GRID_SIZES = [50, 100, 150, 200, 300, 400, 500];

export default async function bench(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const kind = positionals[0];
  if (!(KINDS as readonly string[]).includes(kind))
    throw new UsageError(
      `bench: expected train, infer or augment (throughput), mil-grid (MIL sweep), serve (gRPC serving), scale (cluster), simulate (a model of scale), gpu (the GPU check) or results (the README's experiments), got ${kind ? `"${kind}"` : 'nothing'}`,
    );
  if (positionals.length > 1) throw new UsageError(`bench: unexpected argument "${positionals[1]}"`);
  const foreign =
    kind === 'gpu'
      ? [...MIL_GRID_ONLY, ...SCALE_ONLY]
      : kind === 'mil-grid'
        ? [...THROUGHPUT_ONLY, ...SCALE_ONLY]
        : kind === 'scale'
          ? [...THROUGHPUT_ONLY, ...MIL_GRID_ONLY, 'threads', 'device']
          : [...MIL_GRID_ONLY, ...SCALE_ONLY];
  if (kind === 'results') return results(values);
  if (kind === 'simulate') return simulateBench(values);
  for (const name of [...foreign, ...RESULTS_ONLY, ...SIMULATE_ONLY]) {
    if (values[name as keyof typeof values] !== undefined)
      throw new UsageError(`--${name}: not an option of fleet bench ${kind}`);
  }
  if (kind === 'mil-grid') return milGrid(values);
  if (kind === 'scale') return scale(values);
  if (kind === 'serve') return serveBench(values);
  if (kind === 'gpu') return gpuBench(values);
  const threads = intOption(values, 'threads', os.availableParallelism(), 1, OPTION_MAX.threads);
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  const o = {
    batchSize: intOption(values, 'batch-size', 256, 1, OPTION_MAX.batchSize),
    warmup: intOption(values, 'warmup', 3, 0, OPTION_MAX.steps),
    iters: intOption(values, 'iters', 20, 1, OPTION_MAX.steps),
    runtime: { threads, device },
  };
  const r =
    kind === 'train' ? await benchTrain(o) : kind === 'infer' ? await benchInfer(o) : await benchAugmentShare(o);
  const result = { bench: kind, threads, device, ...r, machine: versions() };
  if (values.out) writeFileAtomic(values.out, JSON.stringify(result, null, 2) + '\n');
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else if ('augment_share_of_step' in r)
    process.stdout.write(
      `augment: ${r.augment_images_per_second} img/s (${r.augment_ms_per_batch} ms per batch of ${r.batch_size}), SimCLR step ${r.simclr_step_ms_median} ms: ${(100 * r.augment_share_of_step).toFixed(1)}% of a step\n`,
    );
  else if ('train_images_per_second' in r)
    process.stdout.write(
      `train: ${r.train_images_per_second} img/s, step ${r.step_ms_median} ms (batch ${r.batch_size}, ${threads} threads)\n`,
    );
  else
    process.stdout.write(
      `infer: ${r.infer_images_per_second} img/s, ${r.infer_ms_median} ms per batch of ${r.batch_size} (${threads} threads)\n`,
    );
}

type Values = Record<string, string | boolean | undefined>;

async function scale(values: Values): Promise<void> {
  const o = {
    memberSteps: intOption(values, 'member-steps', 20, 1, OPTION_MAX.steps),
    rounds: intOption(values, 'rounds', 4, 0, OPTION_MAX.steps),
    dpSteps: intOption(values, 'dp-steps', 8, 3, OPTION_MAX.steps),
    warmupSteps: 2,
    dpBatch: intOption(values, 'dp-batch', 256, 2, OPTION_MAX.batchSize),
  };
  const out = path.resolve((values.out as string | undefined) ?? path.join('bench', 'results', 'scale.json'));
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const r = await benchScale({ ...o, log });
  const result = { bench: 'scale', ...r, machine: versions() };
  writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  const d = r.data_parallel_simclr;
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else
    process.stdout.write(
      `scale: ensemble of 4 on 2 workers ${r.ensemble.speedup}x faster than on 1 (target 1.8x; ceiling from the members' ` +
        `own seconds ${r.ensemble.speedup_ceiling_from_member_seconds}x); data-parallel SimCLR step ${d.step_ms_median} ms, ` +
        `${(100 * d.outside_compute_share_median).toFixed(1)}% outside compute (target 10%; the same bytes alone through nats-server: ` +
        `${(100 * d.transport_floor.share_of_step).toFixed(1)}%), ${(d.bytes_per_step / 2 ** 20).toFixed(1)} MiB per step; wrote ${out}\n`,
    );
}

/** fleet bench simulate: the scale model on measured inputs (bench/simulate-report.ts), or only its docs table. */
async function simulateBench(values: Values): Promise<void> {
  for (const name of Object.keys(OPTIONS)) {
    if (values[name] !== undefined && ![...SIMULATE_ONLY, 'out', 'json', 'help'].includes(name)) {
      throw new UsageError(`--${name}: not an option of fleet bench simulate`);
    }
  }
  const root = path.resolve(path.dirname(new URL(import.meta.url).pathname), '..');
  const out = path.resolve((values.out as string | undefined) ?? path.join(root, 'bench', 'results', 'simulate.json'));
  if (values.docs) {
    for (const name of ['inputs', 'latency-ms', 'per-worker-batch']) {
      if (values[name] !== undefined) throw new UsageError(`--${name}: not with --docs`);
    }
    const validation = path.join(path.dirname(out), 'simulate-validation.json');
    const doc = path.join(root, 'docs', 'data-parallel.md');
    const changed = updateDocsTable(doc, out, fs.existsSync(validation) ? validation : undefined);
    process.stdout.write(`docs/data-parallel.md: ${changed ? 'table regenerated' : 'table up to date'} from ${out}\n`);
    return;
  }
  const latencyMs = numberOption(values, 'latency-ms', 0.05);
  if (latencyMs < 0) throw new UsageError(`--latency-ms: must be at least 0, got ${latencyMs}`);
  const perWorkerBatch =
    values['per-worker-batch'] === undefined ? undefined : intOption(values, 'per-worker-batch', 1, 1);
  const inputs = path.resolve(
    (values.inputs as string | undefined) ?? path.join(root, 'bench', 'results', 'scale.json'),
  );
  const log = (line: string) => process.stderr.write(`${line}\n`);
  const r = await benchSimulate({ inputs, out, latencyMs, perWorkerBatch, root, log });
  if (values.json) process.stdout.write(`${JSON.stringify(r)}\n`);
  else {
    const at = (design: string, w: number) =>
      r.predictions.find(
        p => p.design === design && p.workers === w && p.gbit_per_second === 10 && p.transport === 'wire',
      );
    const line = (design: string) =>
      [2, 256].map(w => `${w} workers ${Math.round(100 * (at(design, w)?.efficiency ?? NaN))}%`).join(', ');
    process.stdout.write(
      `simulate: efficiency at 10 Gbit/s (wire transport): parameter server ${line('ps')}; ` +
        `ring all-reduce overlapped ${line('allreduce-overlap')}; ` +
        `wrote ${out} and ${out.replace(/\.json$/, '')}.md\n`,
    );
  }
}

/** fleet bench gpu: CPU against CUDA gradients and throughput (bench/gpu-check.ts). */
async function gpuBench(values: Values): Promise<void> {
  if (values.warmup !== undefined) throw new UsageError('--warmup: not an option of fleet bench gpu');
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cuda');
  const o = {
    device,
    batchSize: intOption(values, 'batch-size', 64, 2),
    iters: intOption(values, 'iters', 10, 1),
    threads: intOption(values, 'threads', os.availableParallelism(), 1),
    log: (l: string) => process.stderr.write(`${l}\n`),
  };
  const out = path.resolve((values.out as string | undefined) ?? path.join('bench', 'results', 'gpu.json'));
  const r = await gpuCheck(o);
  const result = { bench: 'gpu', ...r, threads: o.threads, machine: versions() };
  writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else {
    const d = r.data_parallel_simclr,
      m = r.ensemble_member_cnn;
    process.stdout.write(
      `gpu: ${device} against CPU: data-parallel SimCLR gradients within ` +
        `${d.worst_gradient_error.toExponential(1)}, ` +
        `member CNN within ${m.worst_gradient_error.toExponential(1)} (tolerance ${r.tolerance}); wrote ${out}\n`,
    );
  }
  if (!r.ok) throw new Error(`gpu: gradients differ from the CPU's by more than ${r.tolerance} (see ${out})`);
}

/** fleet bench serve: gRPC serving against in-process runs of the same model (bench/serve.ts). */
async function serveBench(values: Values): Promise<void> {
  const threads = intOption(values, 'threads', os.availableParallelism(), 1, OPTION_MAX.threads);
  const r = await benchServe({
    threads,
    iters: intOption(values, 'iters', 500, 10, OPTION_MAX.steps),
    warmup: intOption(values, 'warmup', 30, 0, OPTION_MAX.steps),
    batchSize: intOption(values, 'batch-size', 64, 1, OPTION_MAX.batchSize),
  });
  const result = { bench: 'serve', ...r, machine: versions() };
  if (values.out) writeFileAtomic(values.out as string, JSON.stringify(result, null, 2) + '\n');
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else
    process.stdout.write(
      `serve: concurrency 1 p50 ${r.concurrency_1.p50_ms} ms, p99 ${r.concurrency_1.p99_ms} ms (grpc-js client), ` +
        `p50 ${r.concurrency_1_minimal_client.p50_ms} ms, p99 ${r.concurrency_1_minimal_client.p99_ms} ms (minimal client); batch ${r.batch_size}: ` +
        `${r.batch.images_per_second} img/s served, ${r.served_over_in_process_throughput}x in-process\n`,
    );
}

async function milGrid(values: Values): Promise<void> {
  const sizes = listOption(values, 'sizes', MIL_GRID_SIZES, 1);
  if (values.seeds !== undefined && values['seed-list'] !== undefined)
    throw new UsageError('--seeds and --seed-list: give one or the other');
  const seeds =
    values['seed-list'] !== undefined
      ? listOption(values, 'seed-list', [], 0)
      : Array.from({ length: intOption(values, 'seeds', 5, 1, OPTION_MAX.steps) }, (_, i) => i + 1);
  const poolings = poolingsOption(values);
  const epochs = intOption(values, 'epochs', 40, 1, OPTION_MAX.epochs);
  const testBags = intOption(values, 'test-bags', 250, 1, OPTION_MAX.items);
  const threads = intOption(values, 'threads', os.availableParallelism(), 1, OPTION_MAX.threads);
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  const out = path.resolve((values.out as string | undefined) ?? path.join('bench', 'results', 'mil-grid.json'));
  if (device === 'cuda') checkCuda();
  const runs = sizes.length * seeds.length * poolings.length;
  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(
    `fleet bench mil-grid: ${runs} runs (${sizes.length} sizes x ${seeds.length} seeds x ${poolings.length} poolings), ` +
      `${epochs} epoch${epochs === 1 ? '' : 's'}, ${testBags} test bags, ${device} x${threads} threads, results ${out}`,
  );
  const summary = await runMilGrid({ sizes, seeds, poolings, epochs, testBags, threads, device, out, log });
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else
    process.stdout.write(
      `mil-grid: ${summary.trained} runs trained, ${summary.skipped} skipped; table ${summary.markdown}, chart ${summary.svg}\n`,
    );
}

/** A comma-separated list of distinct integers >= min, or def when the option is absent. */
function listOption(values: Values, name: string, def: number[], min: number): number[] {
  const raw = values[name];
  if (raw === undefined) return def;
  const items = String(raw)
    .split(',')
    .map(s => s.trim());
  const xs = items.map(s => {
    if (!/^\d+$/.test(s))
      throw new UsageError(
        `--${name}: expected comma-separated ${min > 0 ? 'positive' : 'non-negative'} integers, got "${s}" in "${raw}"`,
      );
    const n = Number(s);
    if (n < min) throw new UsageError(`--${name}: must be at least ${min}, got ${n} in "${raw}"`);
    const max = OPTION_MAX.items;
    if (n > max) throw new UsageError(`--${name}: must be at most ${max}, got ${s} (allowed ${min}..${max})`);
    return n;
  });
  const dup = xs.find((x, i) => xs.indexOf(x) !== i);
  if (dup !== undefined) throw new UsageError(`--${name}: ${dup} is listed twice in "${raw}"`);
  return xs;
}

function poolingsOption(values: Values): Pooling[] {
  const raw = values.poolings;
  if (raw === undefined) return [...POOLINGS];
  const items = String(raw)
    .split(',')
    .map(s => s.trim());
  for (const p of items) {
    if (!(POOLINGS as readonly string[]).includes(p))
      throw new UsageError(`--poolings: expected some of ${POOLINGS.join('|')}, got "${p}" in "${raw}"`);
  }
  const dup = items.find((x, i) => items.indexOf(x) !== i);
  if (dup !== undefined) throw new UsageError(`--poolings: ${dup} is listed twice in "${raw}"`);
  return items as Pooling[];
}

/** fleet bench results: run the experiments (bench/results.ts), list them, or regenerate the README's tables. */
async function results(values: Values): Promise<void> {
  for (const name of Object.keys(OPTIONS)) {
    if (values[name] !== undefined && ![...RESULTS_ONLY, 'json', 'help'].includes(name)) {
      throw new UsageError(`--${name}: not an option of fleet bench results`);
    }
  }
  if (values.quick && values.full) throw new UsageError('--quick and --full: give one or the other');
  const mode = values.full ? 'full' : 'quick';
  let experiments;
  try {
    experiments = selectExperiments(EXPERIMENTS, values.only as string | undefined);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  if (values.readme) {
    for (const name of ['quick', 'full', 'only', 'list', 'out-dir']) {
      if (values[name] !== undefined) throw new UsageError(`--${name}: not with --readme`);
    }
    const changed = updateReadme();
    if (values.json) process.stdout.write(`${JSON.stringify({ bench: 'results', readme: 'README.md', changed })}\n`);
    else
      process.stdout.write(
        changed.length ? `README.md: regenerated ${changed.join(', ')}\n` : 'README.md: every table is up to date\n',
      );
    return;
  }
  if (values.list) {
    process.stdout.write(listExperiments(experiments, mode));
    return;
  }
  const outDir = values['out-dir'] === undefined ? undefined : path.resolve(values['out-dir'] as string);
  // stopped from outside (Ctrl-C, kill): take the running child along; finished runs are already in their files
  let current: ChildProcess | undefined;
  const stop = (signal: NodeJS.Signals) => {
    current?.kill(signal);
    process.stderr.write(`fleet bench results: ${signal}: stopped; the same command resumes\n`);
    process.exit(130);
  };
  process.once('SIGINT', stop).once('SIGTERM', stop);
  const outcomes = await runExperiments({
    experiments,
    mode,
    outDir,
    onSpawn: child => {
      current = child;
    },
  });
  process.off('SIGINT', stop).off('SIGTERM', stop);
  const failed = outcomes.filter(o => o.error);
  if (values.json) process.stdout.write(`${JSON.stringify({ bench: 'results', mode, experiments: outcomes })}\n`);
  else {
    for (const o of outcomes) {
      const what = o.error ? `FAILED (${o.error.split('\n')[0]})` : `${o.trained} run(s), ${o.skipped} done already`;
      process.stdout.write(`${o.name}: ${what}; ${o.file}\n`);
    }
  }
  if (failed.length) {
    const names = failed.map(o => o.name).join(', ');
    throw new Error(`${failed.length} experiment(s) failed: ${names} (the same command resumes the rest)`);
  }
}
