// Ensembles of CNN members: voting (different seeds), bagging (bootstrap samples), snapshot (one run with a
// cyclic learning rate) and selection (Caruana et al. 2004 on a validation split). Members are tasks, trained
// here one after another (trainEnsemble) or by cluster workers (coordinator/: on NATS, or on worker threads
// in the embedded run); the ensemble is combined from their probability matrices.
import {
  runMemberTask,
  taskCheckpointDir,
  type MemberTask,
  type MemberResult,
  type TrainedMember,
  type BatchInfo,
} from './tasks.ts';
import { weightedAverage, hardVote, nll, accuracyOf, accuracyOfPredictions } from './combine.ts';
import { caruanaSelection } from './selection.ts';
import { validationSplit } from '../data/split.ts';
import { loadDatasetCached, type DatasetName } from '../data/datasets.ts';
import { CLASSES } from '../model/cnn.ts';
import type { Recipe, EpochMetrics } from '../train/train-classifier.ts';
import type { RuntimeOptions } from '../runtime.ts';

export const ENSEMBLE_KINDS = ['voting', 'bagging', 'snapshot', 'selection'] as const;
export type EnsembleKind = (typeof ENSEMBLE_KINDS)[number];

export interface EnsembleOptions {
  kind: EnsembleKind;
  /** Member model (default cnn); simclr members support voting and selection. */
  model?: 'cnn' | 'simclr';
  supervised?: boolean;
  probeEpochs?: number;
  temperature?: number;
  members: number;
  epochs: number;
  batchSize: number;
  recipe: Recipe;
  seed: number;
  /** One model as a job of one member: the member trains with `seed` itself, as `fleet train cnn` does locally. */
  single?: boolean;
  /** Validation share: selection needs one (default 0.15); voting, bagging and snapshot use the full training split (0). */
  valFraction: number;
  dataset: DatasetName;
  dataDir?: string;
  limitTrain?: number;
  limitTest?: number;
  runtime: RuntimeOptions;
  /** Where members keep their checkpoints (a rerun resumes them). */
  out?: string;
  selection?: { maxIter?: number; initSize?: number; objective?: 'loss' | 'accuracy'; bags?: number };
  onBatch?: (taskId: string, b: BatchInfo) => void;
  onEpoch?: (taskId: string, m: EpochMetrics) => void;
  log?: (line: string) => void;
}

export interface MemberSummary {
  name: string;
  epoch: number;
  val_loss?: number;
  val_accuracy?: number;
  test_loss: number;
  test_accuracy: number;
}

export interface EnsembleResult {
  kind: EnsembleKind;
  members: TrainedMember[];
  memberSummaries: MemberSummary[];
  weights: number[];
  /** The ensemble on the test set (soft vote with its weights), and the hard vote with the same weights. */
  test: { loss: number; accuracy: number; hard_vote_accuracy: number; probabilities: Float32Array; labels: Uint8Array };
  bestMember: {
    name: string;
    test_accuracy: number;
    test_loss: number;
    chosen_by: 'validation loss' | 'test accuracy';
  };
  average: { test_accuracy: number; test_loss: number; val_loss?: number; val_accuracy?: number };
  selection?: {
    objective: string;
    steps: Array<{ step: number; picked: number; score: number; weights: number[] }>;
    val_score: number;
  };
  histories: Record<string, EpochMetrics[]>;
  /** Labels of the shared validation split (when there is one), in the order of the members' validation probabilities. */
  valLabels?: Uint8Array;
  seconds: number;
}

/** The tasks of an ensemble: one per member, or a single snapshot run. */
export function ensembleTasks(o: EnsembleOptions): MemberTask[] {
  const base = {
    model: o.model ?? 'cnn',
    supervised: o.supervised,
    probeEpochs: o.probeEpochs,
    temperature: o.temperature,
    epochs: o.epochs,
    batchSize: o.batchSize,
    recipe: o.recipe,
    valFraction: o.valFraction,
    splitSeed: o.seed,
    dataset: o.dataset,
    dataDir: o.dataDir,
    limitTrain: o.limitTrain,
    limitTest: o.limitTest,
    bootstrap: o.kind === 'bagging',
    keepBest: o.kind === 'selection',
    snapshots: o.kind === 'snapshot' ? o.members : 0,
  };
  const count = o.kind === 'snapshot' ? 1 : o.members;
  return Array.from({ length: count }, (_, i) => {
    const id = o.kind === 'snapshot' ? 'snapshot-run' : `member-${i + 1}`;
    // every member shares the validation split (seeded by o.seed) but has its own initialisation and data order
    return {
      ...base,
      id,
      seed: o.single ? o.seed : o.seed + 1000 * (i + 1),
      checkpointDir: o.out ? taskCheckpointDir(o.out, id) : undefined,
    };
  });
}

/** Throws a clear error for an ensemble that cannot be trained. */
export function checkEnsemble(o: EnsembleOptions): void {
  if (o.members < 1) throw new Error(`an ensemble needs at least 1 member, got ${o.members}`);
  if (o.kind === 'selection' && !(o.valFraction > 0))
    throw new Error('selection needs a validation split (--val-fraction > 0)');
  if (o.model === 'simclr' && (o.kind === 'bagging' || o.kind === 'snapshot'))
    throw new Error(`simclr ensembles support voting and selection, not ${o.kind}`);
}

/** Trains the members in this thread, one after another, and combines them (the single-process reference). */
export async function trainEnsemble(o: EnsembleOptions): Promise<EnsembleResult> {
  checkEnsemble(o);
  const t0 = performance.now();
  const results: MemberResult[] = [];
  for (const t of ensembleTasks(o)) results.push(await runMemberTask(t, o.runtime, o));
  return combineEnsemble(o, results, (performance.now() - t0) / 1000);
}

/** The ensemble from its tasks' results, wherever they were trained (here, on worker threads, on cluster workers). */
export function combineEnsemble(o: EnsembleOptions, results: MemberResult[], seconds: number): EnsembleResult {
  const members = results.flatMap(r => r.members);
  const data = loadDatasetCached(o.dataset, o.dataDir);
  const testCount = Math.min(data.test.count, o.limitTest ?? Infinity);
  const testLabels = data.test.labels.subarray(0, testCount);
  const test = members.map(m => m.test!.probabilities);
  const memberSummaries = members.map(m => ({
    name: m.name,
    epoch: m.epoch,
    val_loss: m.val?.loss,
    val_accuracy: m.val?.accuracy,
    test_loss: m.test!.loss,
    test_accuracy: m.test!.accuracy,
  }));

  const haveVal = members.every(m => m.val);
  const valLabels = haveVal ? validationLabels(o, data.train) : null;
  const average = {
    test_accuracy: accuracyOf(weightedAverage(test), testLabels, CLASSES),
    test_loss: nll(weightedAverage(test), testLabels, CLASSES),
  };
  if (valLabels) {
    const v = weightedAverage(members.map(m => m.val!.probabilities));
    Object.assign(average, { val_loss: nll(v, valLabels, CLASSES), val_accuracy: accuracyOf(v, valLabels, CLASSES) });
  }

  let weights = members.map(() => 1 / members.length);
  let selection: EnsembleResult['selection'];
  if (o.kind === 'selection') {
    const objective = o.selection?.objective ?? 'loss';
    const s = caruanaSelection(
      members.map(m => m.val!.probabilities),
      valLabels!,
      CLASSES,
      { ...o.selection, objective, seed: o.seed },
    );
    weights = s.weights;
    // the score of the ensemble the selection chose (of the first bag when bagged)
    selection = { objective, steps: s.steps, val_score: s.steps[s.bestSteps[0]].score };
  }
  // the best single member: by validation loss when there is a validation split, else (reported only) by test accuracy
  const bi = haveVal
    ? memberSummaries.reduce((b, m, i) => (m.val_loss! < memberSummaries[b].val_loss! ? i : b), 0)
    : memberSummaries.reduce((b, m, i) => (m.test_accuracy > memberSummaries[b].test_accuracy ? i : b), 0);
  const probabilities = weightedAverage(test, weights);
  const hard = hardVote(test, CLASSES, weights);
  const histories: Record<string, EpochMetrics[]> = {};
  for (const r of results) histories[r.taskId] = r.history;
  return {
    kind: o.kind,
    members,
    memberSummaries,
    weights,
    test: {
      loss: nll(probabilities, testLabels, CLASSES),
      accuracy: accuracyOf(probabilities, testLabels, CLASSES),
      hard_vote_accuracy: accuracyOfPredictions(hard, testLabels),
      probabilities,
      labels: testLabels,
    },
    bestMember: {
      name: memberSummaries[bi].name,
      test_accuracy: memberSummaries[bi].test_accuracy,
      test_loss: memberSummaries[bi].test_loss,
      chosen_by: haveVal ? 'validation loss' : 'test accuracy',
    },
    average,
    selection,
    histories,
    valLabels: valLabels ?? undefined,
    seconds,
  };
}

/** Labels of the validation split, in the order the trainer evaluates it. */
function validationLabels(o: EnsembleOptions, train: { labels: Uint8Array; count: number }): Uint8Array {
  const count = Math.min(train.count, o.limitTrain ?? Infinity);
  const { val } = validationSplit(count, o.valFraction, o.seed);
  return Uint8Array.from(val, i => train.labels[i]);
}
