// `fleet train simclr --nats URL` and `fleet train cnn --data-parallel --nats URL`: one model trained with
// synchronous data-parallel steps on the cluster (the coordinator is the parameter server, each worker computes
// shards of every global batch). The job is submitted to the coordinator, its steps stream as progress, and the
// summary is the same as a local run's; the model files are written by the coordinator under its --state.
import { intOption, numberOption, positiveOption as positive, choiceOption, UsageError } from '../util/args.ts';
import { OPTION_MAX as MAX } from '../util/args.ts';
import { connectFromCli, natsSettings } from './nats.ts';
import { redactUrl } from '../util/redact.ts';
import { submitJob } from '../coordinator/client.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import { SIMCLR_RECIPE } from '../engine/train/train-simclr.ts';
import { validateDataParallelSpec, type DataParallelSpec } from '../engine/train/data-parallel.ts';
import type { Values, Run, RunResult } from './train.ts';

export const DATA_PARALLEL_HELP = `  --shards N          data-parallel: split every global batch into N shards, one BatchNorm group each
                      (default 2); the coordinator hands the shards to the workers, the result does not
                      depend on how many workers there are
`;

const NOT_HERE = [
  'members',
  'ensemble',
  'workers',
  'objective',
  'init-size',
  'max-iter',
  'selection-bags',
  'patience',
  'min-delta',
  'resume',
  'data-dir',
  'threads',
  'device',
];
const WHY: Record<string, string> = {
  'data-dir': 'workers read their own data',
  threads: 'each worker has its own (fleet worker --threads)',
  device: 'each worker has its own (fleet worker --device)',
};

export async function dataParallelRun(
  values: Values,
  run: Run | null,
  model: 'cnn' | 'simclr',
): Promise<RunResult | null> {
  if (!values.nats) throw new UsageError('--data-parallel: needs --nats URL (a running fleet coordinator and workers)');
  for (const name of NOT_HERE)
    if (values[name] !== undefined)
      throw new UsageError(`--${name}: not for data-parallel training${WHY[name] ? ` (${WHY[name]})` : ''}`);
  const shards = intOption(values, 'shards', 2, 1, MAX.workers);
  const limits = {
    limitTrain: values['limit-train'] === undefined ? undefined : intOption(values, 'limit-train', 0, 1, MAX.items),
    limitTest: values['limit-test'] === undefined ? undefined : intOption(values, 'limit-test', 0, 1, MAX.items),
  };
  const seed = intOption(values, 'seed', 1, 0, MAX.seed);
  const dataset = choiceOption(values, 'dataset', ['mnist', 'fashion'] as const, 'mnist');
  const epochs = intOption(values, 'epochs', 1, 1, MAX.epochs);
  let spec: DataParallelSpec;
  if (model === 'cnn') {
    const recipe = { ...RECIPES[choiceOption(values, 'recipe', Object.keys(RECIPES), 'fleet')] };
    recipe.lr = positive(values, 'lr', recipe.lr, MAX.lr);
    recipe.batchSize = intOption(values, 'batch-size', recipe.batchSize, 1, MAX.batchSize);
    spec = {
      kind: 'data-parallel',
      model,
      shards,
      epochs,
      batchSize: recipe.batchSize,
      recipe,
      seed,
      dataset,
      valFraction: numberOption(values, 'val-fraction', 0.15, 0, 0.99),
      ...limits,
    };
  } else {
    const batchSize = intOption(values, 'batch-size', SIMCLR_RECIPE.batchSize, 2, MAX.batchSize);
    const recipe = { ...SIMCLR_RECIPE, batchSize, lr: positive(values, 'lr', SIMCLR_RECIPE.lr, MAX.lr) };
    spec = {
      kind: 'data-parallel',
      model,
      shards,
      epochs,
      batchSize,
      recipe,
      seed,
      dataset,
      valFraction: 0,
      supervised: !!values.supervised,
      temperature: positive(values, 'temperature', 0.07),
      probeEpochs: intOption(values, 'probe-epochs', 10, 1, MAX.epochs),
      ...limits,
    };
  }
  try {
    validateDataParallelSpec(spec);
  } catch (e) {
    throw new UsageError((e as Error).message.replace(/^data-parallel job spec: /, ''));
  }
  natsSettings(values);
  if (!run) return null;
  const bus = await connectFromCli(values, 'fleet-train', run.log);
  try {
    const done = await submitJob(bus, spec, run.log, 10_000, (p, m) => {
      if (m.event === 'step') run.onBatch({ epoch: p.epoch, batch: p.batch, batches: p.batches, loss: p.loss });
      else if (m.event === 'epoch') {
        const e = m as { epoch: number; train_loss: number; test_accuracy?: number; seconds: number };
        run.log(
          `epoch ${e.epoch}/${spec.epochs}, train loss ${e.train_loss.toFixed(4)}${e.test_accuracy !== undefined ? `, test accuracy ${(100 * e.test_accuracy).toFixed(2)}%` : ''}, ${e.seconds.toFixed(1)}s`,
        );
      }
    });
    const { headline, model: _m, members: _k, ...summary } = done.summary as Record<string, unknown>;
    return {
      summary: {
        ...summary,
        coordinator_out: done.summary.out,
        cluster: redactUrl(String(values.nats)),
        job: done.jobId,
      },
      details: { job: done.jobId, config: spec },
      files: {},
      headline: `${headline} (data-parallel job ${done.jobId}, ${shards} shards); outputs in ${done.summary.out} on the coordinator`,
    };
  } finally {
    await bus.close();
  }
}
