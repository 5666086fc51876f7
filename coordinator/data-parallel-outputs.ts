// What a data-parallel job reports from its parameter server, as a local run of the same model would: the
// evaluation at each epoch's end (CNN), and at the end the model files, metrics.json, summary and headline.
import * as path from 'node:path';
import type { ParameterServer } from './parameter-server.ts';
import type { DataParallelPlan, DataParallelSpec } from '../engine/train/data-parallel.ts';
import { linearEvaluation, type SimclrEpoch } from '../engine/train/train-simclr.ts';
import { evaluate, type EpochMetrics, type Evaluation } from '../engine/train/train-classifier.ts';
import { cnnRunOutputs, simclrRunOutputs, type RunOutputs } from '../engine/train/run-outputs.ts';
import { ClassifierRunner } from '../engine/train/classifier-runner.ts';
import type { TensorSet } from '../engine/model/params.ts';
import { CNN } from '../engine/model/classifiers.ts';
import type { loadDataset } from '../engine/data/datasets.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';

/** The parts of a data-parallel job its reports are made from. */
export interface JobRun {
  record: { id: string; spec: DataParallelSpec };
  plan: DataParallelPlan;
  ps: ParameterServer;
  data: ReturnType<typeof loadDataset>;
  progress: { history: (EpochMetrics | SimclrEpoch)[]; trainSeconds: number; trainImages: number };
}

/** A finished run's model and time, for its output files. */
interface RunTotals {
  params: TensorSet;
  buffers: TensorSet;
  seconds: number;
  imagesPerSecond: number;
}

/** CNN: the loss and accuracy of the current parameters on the validation split (if any) and the test set. */
export async function evaluateCnn(
  job: JobRun,
  runtime: RuntimeOptions = {},
): Promise<Partial<EpochMetrics> & { test?: Evaluation }> {
  const { ps, plan, data, record } = job;
  const runner = new ClassifierRunner(CNN, ps.state.params, ps.state.buffers, runtime);
  try {
    const B = record.spec.batchSize;
    const val = plan.val.length ? await evaluate(runner, data.train, plan.val, B) : undefined;
    const testCount = Math.min(data.test.count, record.spec.limitTest ?? Infinity);
    const test = await evaluate(
      runner,
      data.test,
      Uint32Array.from({ length: testCount }, (_, i) => i),
      B,
    );
    return {
      ...(val ? { val_loss: val.loss, val_accuracy: val.accuracy } : {}),
      test_loss: test.loss,
      test_accuracy: test.accuracy,
    };
  } finally {
    await runner.release();
  }
}

/** The model files, summary and headline a local run of the job's model writes (SimCLR: after its probe). */
export async function runOutputs(
  job: JobRun,
  runtime: RuntimeOptions | undefined,
  log: (line: string) => void,
): Promise<RunOutputs> {
  const { params, buffers } = job.ps.state;
  const seconds = job.progress.trainSeconds,
    imagesPerSecond = job.progress.trainImages / Math.max(seconds, 1e-9);
  return job.record.spec.model === 'cnn'
    ? cnnOutputs(job, { params, buffers, seconds, imagesPerSecond })
    : simclrOutputs(job, { params, buffers, seconds, imagesPerSecond }, runtime, log);
}

function cnnOutputs(job: JobRun, run: RunTotals): RunOutputs {
  const spec = job.record.spec,
    history = job.progress.history as EpochMetrics[];
  const last = history.at(-1)!;
  const bestIndex = history.reduce(
    (bi, m, i) => ((m.val_loss ?? Infinity) < (history[bi].val_loss ?? Infinity) ? i : bi),
    0,
  );
  return cnnRunOutputs({
    ...run,
    history,
    recipe: spec.recipe.name,
    dataset: spec.dataset,
    test: { loss: last.test_loss!, accuracy: last.test_accuracy!, probabilities: new Float32Array(0) },
    bestEpoch: history[bestIndex].epoch,
    stoppedEarly: false,
  });
}

async function simclrOutputs(
  job: JobRun,
  run: RunTotals,
  runtime: RuntimeOptions | undefined,
  log: (line: string) => void,
): Promise<RunOutputs> {
  const { data, plan } = job,
    spec = job.record.spec;
  const probe = {
    epochs: spec.epochs,
    batchSize: spec.batchSize,
    seed: spec.seed,
    supervised: !!spec.supervised,
    train: data.train,
    test: data.test,
    limitTrain: spec.limitTrain,
    limitTest: spec.limitTest,
    probeEpochs: spec.probeEpochs,
    runtime,
  };
  const lin = await linearEvaluation(run.params, run.buffers, probe, plan.trainCount, log);
  return simclrRunOutputs({
    ...run,
    probe: lin.probe,
    history: job.progress.history as SimclrEpoch[],
    linearEval: lin,
    supervised: !!spec.supervised,
    dataset: spec.dataset,
  });
}

/** Writes the job's model files and metrics.json to `out`; returns the job's summary. */
export function writeOutputs(job: JobRun, outputs: RunOutputs, out: string) {
  const { record, progress, plan } = job,
    spec = record.spec;
  for (const [name, content] of Object.entries(outputs.files)) writeFileAtomic(path.join(out, name), content);
  const summary = {
    model: spec.model,
    members: 1,
    ...outputs.summary,
    data_parallel: true,
    shards: spec.shards,
    steps: plan.totalSteps,
    out,
  };
  const metrics = { ...summary, job: record.id, config: spec, history: progress.history };
  writeFileAtomic(path.join(out, 'metrics.json'), JSON.stringify(metrics, null, 2) + '\n');
  return summary;
}
