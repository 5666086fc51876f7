// The unit of work of an ensemble: one member = one task (its configuration and seed). A task's result holds
// everything the ensemble needs (the member's weights, history, validation and test probabilities), as plain
// data so that it can cross a worker_threads boundary or, later, the cluster's bus.
import * as path from 'node:path';
import { trainClassifier, type EpochMetrics, type Recipe } from '../train/train-classifier.ts';
import { trainSimclr } from '../train/train-simclr.ts';
import { CNN } from '../model/classifiers.ts';
import { TensorSet } from '../model/params.ts';
import { loadDatasetCached, type loadDataset, type DatasetName } from '../data/datasets.ts';
import type { RuntimeOptions } from '../runtime.ts';

export interface MemberTask {
  id: string;
  /** cnn: a supervised CNN; simclr: SimCLR pre-training, the member being the encoder + its linear probe. */
  model: 'cnn' | 'simclr';
  seed: number;
  epochs: number;
  batchSize: number;
  recipe: Recipe;
  valFraction: number;
  /** Seed of the validation split, shared by all members of an ensemble. */
  splitSeed: number;
  /** Train on a bootstrap sample of the training split (bagging). */
  bootstrap: boolean;
  /** The member is its epoch with the lowest validation loss (selection pools). */
  keepBest: boolean;
  /** Snapshot ensemble: one run, a member at the end of each of this many learning-rate cycles (0: off). */
  snapshots: number;
  dataset: DatasetName;
  dataDir?: string;
  limitTrain?: number;
  limitTest?: number;
  /** Per-epoch checkpoints of this task (resume after a crash). */
  checkpointDir?: string;
  /** SimCLR members: SupCon instead of NT-Xent, and the probe's epochs. */
  supervised?: boolean;
  probeEpochs?: number;
  temperature?: number;
}

/** A TensorSet as plain data. */
export interface TensorData {
  names: string[];
  shapes: number[][];
  data: Float32Array[];
}
export interface EvalData {
  loss: number;
  accuracy: number;
  probabilities: Float32Array;
}

export interface TrainedMember {
  name: string;
  taskId: string;
  model: 'cnn' | 'simclr';
  epoch: number;
  params: TensorData;
  buffers: TensorData;
  /** The linear probe of a SimCLR member. */
  probe?: TensorData;
  val?: EvalData;
  test?: EvalData;
}
export interface MemberResult {
  taskId: string;
  members: TrainedMember[];
  history: EpochMetrics[];
  seconds: number;
}

/** One training step's report; `images` is the step's batch size (the last batch of an epoch may be smaller). */
export interface BatchInfo {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  imagesPerSecond: number;
  images: number;
}

export interface TaskHooks {
  onBatch?: (taskId: string, b: BatchInfo) => void;
  onEpoch?: (taskId: string, m: EpochMetrics) => void;
  log?: (line: string) => void;
}

export const toTensorSet = (t: TensorData) =>
  new TensorSet(
    t.names.map((name, i) => ({ name, shape: t.shapes[i], init: { kind: 'const', value: 0 } })),
    t.data,
  );
const plain = (t: TensorSet): TensorData => ({ names: t.names, shapes: t.shapes, data: t.data });

/** Trains one task in this thread. */
export async function runMemberTask(
  task: MemberTask,
  runtime: RuntimeOptions,
  hooks: TaskHooks = {},
): Promise<MemberResult> {
  const data = loadDatasetCached(task.dataset, task.dataDir);
  if (task.model === 'simclr') return runSimclrTask(task, data, runtime, hooks);
  const r = await trainClassifier({
    def: CNN,
    recipe: task.recipe,
    epochs: task.epochs,
    batchSize: task.batchSize,
    seed: task.seed,
    valFraction: task.valFraction,
    splitSeed: task.splitSeed,
    train: data.train,
    test: data.test,
    limitTrain: task.limitTrain,
    limitTest: task.limitTest,
    runtime,
    bootstrap: task.bootstrap,
    keepBest: task.keepBest,
    snapshots: task.snapshots || undefined,
    checkpointDir: task.checkpointDir,
    resume: !!task.checkpointDir,
    onBatch: b => hooks.onBatch?.(task.id, b),
    onEpoch: m => hooks.onEpoch?.(task.id, m),
    log: line => hooks.log?.(`${task.id}: ${line}`),
  });
  const members = r.captures.map((c, i) => ({
    name: task.snapshots ? `${task.id}/snapshot-${i + 1}` : task.id,
    taskId: task.id,
    model: 'cnn' as const,
    epoch: c.epoch,
    params: plain(c.params),
    buffers: plain(c.buffers),
    val: c.val,
    test: c.test,
  }));
  return { taskId: task.id, members, history: r.history, seconds: r.seconds };
}

async function runSimclrTask(
  task: MemberTask,
  data: ReturnType<typeof loadDataset>,
  runtime: RuntimeOptions,
  hooks: TaskHooks,
): Promise<MemberResult> {
  const r = await trainSimclr({
    epochs: task.epochs,
    batchSize: task.batchSize,
    recipe: task.recipe,
    seed: task.seed,
    supervised: !!task.supervised,
    loss: task.temperature ? { temperature: task.temperature } : {},
    train: data.train,
    test: data.test,
    limitTrain: task.limitTrain,
    limitTest: task.limitTest,
    probeEpochs: task.probeEpochs,
    valFraction: task.valFraction,
    splitSeed: task.splitSeed,
    runtime,
    checkpointDir: task.checkpointDir,
    resume: !!task.checkpointDir,
    onBatch: b => hooks.onBatch?.(task.id, b),
    onEpoch: m => hooks.onEpoch?.(task.id, { ...m, train_accuracy: NaN }),
    log: line => hooks.log?.(`${task.id}: ${line}`),
  });
  const member: TrainedMember = {
    name: task.id,
    taskId: task.id,
    model: 'simclr',
    epoch: r.history.length,
    params: plain(r.params),
    buffers: plain(r.buffers),
    probe: plain(r.probe),
    val: r.linearEval.val,
    test: r.linearEval.test,
  };
  return {
    taskId: task.id,
    members: [member],
    history: r.history.map(h => ({ ...h, train_accuracy: NaN })),
    seconds: r.seconds,
  };
}

export const taskCheckpointDir = (out: string, id: string) => path.join(out, 'members', id, 'checkpoints');
