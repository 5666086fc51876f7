// Supervised training of a classifier (the CNN): epochs of shuffled mini-batches, a JS optimizer over the
// gradients the ONNX graph returns, per-epoch validation/test evaluation, per-epoch checkpoints and resume.
import { ClassifierRunner } from './classifier-runner.ts';
import type { ClassifierDef } from './classifier-graphs.ts';
import type { TensorSet } from '../model/params.ts';
import { TrainState, makeSchedule, checkpointFile, readWeights, type Recipe } from './train-state.ts';
import { cyclicCosine } from '../optim/schedulers.ts';
import { validationSplit, epochOrder, batches, gatherImages, gatherLabels, bootstrap } from '../data/split.ts';
import { normalise, IMAGE_SIZE, type Split } from '../data/datasets.ts';
import { randomShift } from '../data/augment.ts';
import { Rng } from '../util/random.ts';
import type { RuntimeOptions } from '../runtime.ts';
import { trainEpochs, type BatchProgress } from './loop.ts';
import { SEEDS } from './seeds.ts';

export { checkpointFile, latestCheckpoint, type Recipe } from './train-state.ts';

export { RECIPES } from './defaults.ts';

export interface EpochMetrics {
  epoch: number;
  lr: number;
  seconds: number;
  train_loss: number;
  train_accuracy: number;
  val_loss?: number;
  val_accuracy?: number;
  test_loss?: number;
  test_accuracy?: number;
}

export interface TrainOptions {
  def: ClassifierDef;
  recipe: Recipe;
  epochs: number;
  batchSize: number;
  seed: number;
  /** Fraction of the training split held out for validation (0: none). */
  valFraction: number;
  /** Seed of the validation split (default: seed); ensemble members share one split. */
  splitSeed?: number;
  train: Split;
  test?: Split;
  /** Use only the first n training / test images (quick runs and tests). */
  limitTrain?: number;
  limitTest?: number;
  runtime?: RuntimeOptions;
  /** Where per-epoch checkpoints go (none when absent). */
  checkpointDir?: string;
  /** Continue from the newest checkpoint in checkpointDir. */
  resume?: boolean;
  /** Stop when validation loss has not improved for this many epochs. */
  patience?: number;
  minDelta?: number;
  /** Train on a bootstrap sample (with replacement) of the training split (bagging). */
  bootstrap?: boolean;
  /** Capture the weights of the epoch with the lowest validation loss (needs a validation split). */
  keepBest?: boolean;
  /** Snapshot ensemble: a cyclic cosine learning rate with this many cycles, capturing the weights at the end of each. */
  snapshots?: number;
  onBatch?: (info: BatchProgress) => void;
  onEpoch?: (m: EpochMetrics) => void;
  log?: (line: string) => void;
}

export interface Evaluation {
  loss: number;
  accuracy: number;
  probabilities: Float32Array;
}

/** Weights taken during training (the final, the best or a snapshot) with their validation and test evaluation. */
export interface Capture {
  epoch: number;
  params: TensorSet;
  buffers: TensorSet;
  val?: Evaluation;
  test?: Evaluation;
}

export interface TrainResult {
  params: TensorSet;
  buffers: TensorSet;
  history: EpochMetrics[];
  seconds: number;
  imagesPerSecond: number;
  test?: Evaluation;
  bestEpoch: number;
  stoppedEarly: boolean;
  /** The snapshots (snapshots option), else the best epoch's weights (keepBest), else the final weights. */
  captures: Capture[];
}

/** Evaluates on the given images in batches; returns mean loss, accuracy and the probability matrix. */
export async function evaluate(runner: ClassifierRunner, split: Split, indices: Uint32Array, batchSize: number) {
  const x = new Float32Array(batchSize * IMAGE_SIZE),
    u8 = new Uint8Array(batchSize * IMAGE_SIZE);
  const labels = new BigInt64Array(batchSize),
    l8 = new Uint8Array(batchSize);
  const probabilities = new Float32Array(indices.length * runner.def.classes);
  let lossSum = 0,
    correct = 0,
    at = 0;
  for (const b of batches(indices, batchSize)) {
    gatherImages(split, b, u8);
    normalise(u8.subarray(0, b.length * IMAGE_SIZE), x);
    gatherLabels(split, b, l8);
    for (let i = 0; i < b.length; i++) labels[i] = BigInt(l8[i]);
    const r = await runner.eval(x, labels, b.length);
    lossSum += r.lossSum;
    correct += r.correct;
    probabilities.set(r.probabilities, at * runner.def.classes);
    at += b.length;
  }
  return { loss: lossSum / indices.length, accuracy: correct / indices.length, probabilities };
}

const range = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

export async function trainClassifier(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? (() => {});
  const state = new TrainState<EpochMetrics>(
    o.def.name,
    o.def.params(),
    o.def.buffers(),
    o.recipe,
    o.seed,
    o.patience !== undefined ? { patience: o.patience, minDelta: o.minDelta } : undefined,
  );
  const { params, buffers } = state;
  const trainCount = Math.min(o.train.count, o.limitTrain ?? Infinity);
  const splitSeed = SEEDS.split(o.seed, o.splitSeed);
  const split =
    o.valFraction > 0
      ? validationSplit(trainCount, o.valFraction, splitSeed)
      : { train: range(trainCount), val: new Uint32Array(0) };
  if (o.bootstrap) split.train = bootstrap(split.train, o.seed);
  if (o.keepBest && !split.val.length)
    throw new Error('keeping the best epoch needs a validation split (val fraction > 0)');
  const cycles = o.snapshots ?? 0;
  if (cycles && (!Number.isInteger(cycles) || cycles < 1 || o.epochs % cycles !== 0)) {
    throw new Error(
      `snapshot ensembles need the epochs (${o.epochs}) to be a multiple of the number of snapshots (${cycles})`,
    );
  }
  const testIdx = o.test ? range(Math.min(o.test.count, o.limitTest ?? Infinity)) : null;
  const B = o.batchSize;
  const itersPerEpoch = Math.ceil(split.train.length / B);
  const schedule = cycles
    ? cyclicCosine({ base: o.recipe.lr, cycleLength: (itersPerEpoch * o.epochs) / cycles })
    : makeSchedule(o.recipe, itersPerEpoch, o.epochs);
  // what a resumed run must share with the run that wrote the checkpoint
  const settings = {
    seed: o.seed,
    'split seed': splitSeed,
    'batch size': B,
    recipe: o.recipe,
    'val fraction': o.valFraction,
    'training images': trainCount,
    bootstrap: !!o.bootstrap,
    snapshots: cycles,
  };

  const runner = new ClassifierRunner(o.def, params, buffers, o.runtime ?? {}, o.seed);
  const fillBatch = imageBatcher(B);
  const kept = new Captures(cycles ? o.epochs / cycles : 0, !!o.keepBest);
  let lastEval = null as { val?: Evaluation; test?: Evaluation } | null;
  const evaluateAll = async (r: ClassifierRunner = runner) => ({
    val: split.val.length ? await evaluate(r, o.train, split.val, B) : undefined,
    test: o.test && testIdx ? await evaluate(r, o.test, testIdx, B) : undefined,
  });
  const fromCheckpoint = async (epoch: number): Promise<Capture> => {
    const w = readWeights(checkpointFile(o.checkpointDir!, epoch), o.def.params(), o.def.buffers());
    const restored = new ClassifierRunner(o.def, w.params, w.buffers, o.runtime ?? {});
    try {
      return { epoch, ...w, ...(await evaluateAll(restored)) };
    } finally {
      await restored.release();
    }
  };
  try {
    const { stoppedEarly } = await trainEpochs({
      state,
      seed: o.seed,
      epochs: o.epochs,
      itersPerEpoch,
      schedule,
      runner,
      resumed: () => kept.restore(state.history, fromCheckpoint),
      checkpoints: o.checkpointDir ? { dir: o.checkpointDir, settings, resume: !!o.resume } : undefined,
      batches: epoch => {
        const shifts = new Rng(SEEDS.shift(o.seed, epoch));
        return batches(epochOrder(split.train, SEEDS.order(o.seed), epoch), B).map(idx => ({ idx, shifts }));
      },
      step: async ({ idx, shifts }) => {
        const { x, labels } = fillBatch(o.train, idx, o.recipe.shift, shifts);
        const r = await runner.step(x, labels, idx.length);
        return { loss: r.loss, grads: r.grads, examples: idx.length, correct: r.correct };
      },
      endEpoch: async t => {
        const m: EpochMetrics = {
          epoch: t.epoch,
          lr: t.lr,
          seconds: t.seconds,
          train_loss: t.lossSum / t.examples,
          train_accuracy: t.correct / t.examples,
        };
        const ev = await evaluateAll();
        lastEval = ev;
        if (ev.val) Object.assign(m, prefixed('val', ev.val));
        if (ev.test) Object.assign(m, prefixed('test', ev.test));
        kept.offer(t.epoch, params, buffers, ev);
        return m;
      },
      monitor: m => m.val_loss,
      onBatch: o.onBatch,
      onEpoch: o.onEpoch,
      log,
    });
    const test = lastEval?.test ?? (o.test && testIdx ? await evaluate(runner, o.test, testIdx, B) : undefined);
    const history = state.history;
    const bestIndex = history.reduce(
      (bi, m, i) => ((m.val_loss ?? Infinity) < (history[bi].val_loss ?? Infinity) ? i : bi),
      0,
    );
    const final = async (): Promise<Capture> => ({
      epoch: state.epoch,
      params,
      buffers,
      ...(lastEval ?? (await evaluateAll())),
    });
    const captures = cycles ? kept.snapshots : [kept.best ?? (await final())];
    return {
      params,
      buffers,
      history,
      seconds: state.trainSeconds,
      imagesPerSecond: state.trainImages / Math.max(state.trainSeconds, 1e-9),
      test,
      bestEpoch: history[bestIndex]?.epoch ?? 0,
      stoppedEarly,
      captures,
    };
  } finally {
    await runner.release();
  }
}

/** The weights a run keeps: a snapshot at the end of every learning-rate cycle; the epoch of lowest validation loss. */
class Captures {
  readonly snapshots: Capture[] = [];
  best: Capture | null = null;

  /** cycleEpochs: epochs per snapshot cycle (0: no snapshots); keepBest: track the best epoch. */
  constructor(
    private readonly cycleEpochs: number,
    private readonly keepBest: boolean,
  ) {}

  private snapshotAt(epoch: number): boolean {
    return this.cycleEpochs ? epoch % this.cycleEpochs === 0 : false;
  }

  /** The weights and evaluation of an epoch just trained (copied only when kept). */
  offer(epoch: number, params: TensorSet, buffers: TensorSet, ev: { val?: Evaluation; test?: Evaluation }): void {
    const capture = () => ({ epoch, params: params.clone(), buffers: buffers.clone(), ...ev });
    if (this.snapshotAt(epoch)) this.snapshots.push(capture());
    if (this.keepBest && ev.val && (!this.best || ev.val.loss < this.best.val!.loss)) this.best = capture();
  }

  /** After a resume: the captures of the epochs trained before it, loaded back from their checkpoints. */
  async restore(history: EpochMetrics[], load: (epoch: number) => Promise<Capture>): Promise<void> {
    const lowest = Math.min(...history.map(h => h.val_loss ?? Infinity));
    for (const m of history) {
      const isBest = this.keepBest && m.val_loss === lowest;
      if (!this.snapshotAt(m.epoch) && !isBest) continue;
      const c = await load(m.epoch);
      if (this.snapshotAt(m.epoch)) this.snapshots.push(c);
      if (isBest) this.best = c;
    }
  }
}

/** Fills reused buffers with one training batch: images gathered, shifted when asked, normalised; labels. */
function imageBatcher(size: number) {
  const u8 = new Uint8Array(size * IMAGE_SIZE),
    shifted = new Uint8Array(size * IMAGE_SIZE);
  const x = new Float32Array(size * IMAGE_SIZE),
    labels = new BigInt64Array(size),
    l8 = new Uint8Array(size);
  return (data: Split, idx: Uint32Array, shift: number, rng: Rng) => {
    const n = idx.length;
    gatherImages(data, idx, u8);
    if (shift > 0) randomShift(u8, shifted, n, shift, rng);
    normalise((shift > 0 ? shifted : u8).subarray(0, n * IMAGE_SIZE), x);
    gatherLabels(data, idx, l8);
    for (let i = 0; i < n; i++) labels[i] = BigInt(l8[i]);
    return { x, labels };
  };
}

function prefixed(p: 'val' | 'test', r: { loss: number; accuracy: number }) {
  return { [`${p}_loss`]: r.loss, [`${p}_accuracy`]: r.accuracy };
}
