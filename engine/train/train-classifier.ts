// Supervised training of a classifier (the CNN): epochs of shuffled mini-batches, a JS optimizer over the
// gradients the ONNX graph returns, per-epoch validation/test evaluation, per-epoch checkpoints and resume.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ClassifierRunner } from './classifier-runner.ts';
import type { ClassifierDef } from './classifier-graphs.ts';
import { TensorSet } from '../model/params.ts';
import { makeOptimizer, type OptimizerName, type OptimizerState } from '../optim/optimizers.ts';
import { stepLR, warmupCosine, type Schedule } from '../optim/schedulers.ts';
import { EarlyStopping, type EarlyStoppingState } from '../optim/early-stopping.ts';
import { validationSplit, epochOrder, batches, gatherImages, gatherLabels } from '../data/split.ts';
import { normalise, IMAGE_SIZE, type Split } from '../data/datasets.ts';
import { randomShift } from '../data/augment.ts';
import { Rng } from '../util/random.ts';
import { readCheckpoint, writeCheckpoint } from '../checkpoint.ts';
import type { RuntimeOptions } from '../runtime.ts';

export interface Recipe {
  name: string;
  optimizer: OptimizerName;
  lr: number;
  weightDecay: number;
  /** Apply weight decay to weights only (not biases and BatchNorm parameters). */
  decayWeightsOnly: boolean;
  schedule: { kind: 'warmup-cosine'; warmupFraction: number } | { kind: 'step'; stepSize: number; gamma: number };
  /** Random translation of up to this many pixels (0: none). */
  shift: number;
  /** Default mini-batch size. */
  batchSize: number;
}

/** Named recipes: `fleet` is the default, `reference` reproduces the reference implementation's setup. */
export const RECIPES: Record<string, Recipe> = {
  fleet: {
    name: 'fleet', optimizer: 'adamw', lr: 3e-3, weightDecay: 0.05, decayWeightsOnly: true,
    schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 }, shift: 2, batchSize: 128,
  },
  reference: {
    name: 'reference', optimizer: 'adam', lr: 1e-3, weightDecay: 1e-3, decayWeightsOnly: false,
    schedule: { kind: 'step', stepSize: 5, gamma: 0.5 }, shift: 0, batchSize: 256,
  },
};

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
  onBatch?: (info: { epoch: number; batch: number; batches: number; loss: number; imagesPerSecond: number }) => void;
  onEpoch?: (m: EpochMetrics) => void;
  log?: (line: string) => void;
}

export interface TrainResult {
  params: TensorSet;
  buffers: TensorSet;
  history: EpochMetrics[];
  seconds: number;
  imagesPerSecond: number;
  test?: { loss: number; accuracy: number; probabilities: Float32Array };
  bestEpoch: number;
  stoppedEarly: boolean;
}

interface CheckpointMeta {
  format: 'fleet-train-1';
  model: string;
  epoch: number;
  seed: number;
  recipe: Recipe;
  epochs: number;
  batchSize: number;
  history: EpochMetrics[];
  optimizer: Omit<OptimizerState, 'buffers'> & { bufferNames: string[] };
  earlyStopping?: EarlyStoppingState;
  trainSeconds: number;
  trainImages: number;
}

export const checkpointFile = (dir: string, epoch: number) => path.join(dir, `epoch-${String(epoch).padStart(3, '0')}.ckpt`);

/** The newest checkpoint in dir, or null. */
export function latestCheckpoint(dir: string): string | null {
  if (!fs.existsSync(dir)) return null;
  const epochOf = (f: string) => Number(/^epoch-(\d+)\.ckpt$/.exec(f)?.[1] ?? -1);
  const files = fs.readdirSync(dir).filter(f => epochOf(f) >= 0).sort((a, b) => epochOf(a) - epochOf(b));
  return files.length ? path.join(dir, files[files.length - 1]) : null;
}

function makeSchedule(recipe: Recipe, lr: number, itersPerEpoch: number, epochs: number): Schedule {
  if (recipe.schedule.kind === 'step') {
    const s = stepLR(lr, recipe.schedule.stepSize, recipe.schedule.gamma);
    return t => s(Math.floor(t / itersPerEpoch));
  }
  const total = itersPerEpoch * epochs;
  return warmupCosine({ base: lr, warmup: Math.max(1, Math.round(recipe.schedule.warmupFraction * total)), total, minLr: 0 });
}

/** Evaluates on the given images in batches; returns mean loss, accuracy and the probability matrix. */
export async function evaluate(runner: ClassifierRunner, split: Split, indices: Uint32Array, batchSize: number) {
  const x = new Float32Array(batchSize * IMAGE_SIZE), u8 = new Uint8Array(batchSize * IMAGE_SIZE);
  const labels = new BigInt64Array(batchSize), l8 = new Uint8Array(batchSize);
  const probabilities = new Float32Array(indices.length * runner.def.classes);
  let lossSum = 0, correct = 0, at = 0;
  for (const b of batches(indices, batchSize)) {
    gatherImages(split, b, u8);
    normalise(u8.subarray(0, b.length * IMAGE_SIZE), x);
    gatherLabels(split, b, l8);
    for (let i = 0; i < b.length; i++) labels[i] = BigInt(l8[i]);
    const r = await runner.eval(x, labels, b.length);
    lossSum += r.lossSum; correct += r.correct;
    probabilities.set(r.probabilities, at * runner.def.classes);
    at += b.length;
  }
  return { loss: lossSum / indices.length, accuracy: correct / indices.length, probabilities };
}

const range = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

export async function trainClassifier(o: TrainOptions): Promise<TrainResult> {
  const log = o.log ?? (() => {});
  const specs = o.def.params();
  const params = TensorSet.init(specs, o.seed);
  const buffers = TensorSet.init(o.def.buffers(), o.seed);
  const decay = specs.map(s => !o.recipe.decayWeightsOnly || !!s.decay);
  const optimizer = makeOptimizer(o.recipe.optimizer, params.data,
    o.recipe.optimizer === 'sgd' ? { weightDecay: o.recipe.weightDecay, momentum: 0.9, decay } : { weightDecay: o.recipe.weightDecay, decay });
  const early = o.patience !== undefined ? new EarlyStopping({ patience: o.patience, minDelta: o.minDelta ?? 0, mode: 'min' }) : null;

  const trainCount = Math.min(o.train.count, o.limitTrain ?? Infinity);
  const split = o.valFraction > 0 ? validationSplit(trainCount, o.valFraction, o.seed) : { train: range(trainCount), val: new Uint32Array(0) };
  const testIdx = o.test ? range(Math.min(o.test.count, o.limitTest ?? Infinity)) : null;
  const itersPerEpoch = Math.ceil(split.train.length / o.batchSize);
  const schedule = makeSchedule(o.recipe, o.recipe.lr, itersPerEpoch, o.epochs);

  let history: EpochMetrics[] = [];
  let startEpoch = 1, trainSeconds = 0, trainImages = 0;
  if (o.resume && o.checkpointDir) {
    const file = latestCheckpoint(o.checkpointDir);
    if (file) {
      const ck = readCheckpoint<CheckpointMeta>(file);
      checkResumable(file, ck.meta, o);
      params.names.forEach((n, i) => restore(params.data[i], ck.tensors.get(`param/${n}`), file, n));
      buffers.names.forEach((n, i) => restore(buffers.data[i], ck.tensors.get(`buffer/${n}`), file, n));
      const bufs: Record<string, Float32Array[]> = {};
      for (const b of ck.meta.optimizer.bufferNames) bufs[b] = params.names.map(n => ck.tensors.get(`optim/${b}/${n}`)!);
      optimizer.load({ name: ck.meta.optimizer.name, step: ck.meta.optimizer.step, hyper: ck.meta.optimizer.hyper, buffers: bufs });
      if (early && ck.meta.earlyStopping) early.load(ck.meta.earlyStopping);
      history = ck.meta.history;
      startEpoch = ck.meta.epoch + 1;
      trainSeconds = ck.meta.trainSeconds; trainImages = ck.meta.trainImages;
      log(`resumed from ${file} (epoch ${ck.meta.epoch})`);
    } else {
      log(`no checkpoint in ${o.checkpointDir}: starting from scratch`);
    }
  }

  const runner = new ClassifierRunner(o.def, params, buffers, o.runtime ?? {}, o.seed);
  const B = o.batchSize;
  const u8 = new Uint8Array(B * IMAGE_SIZE), shifted = new Uint8Array(B * IMAGE_SIZE);
  const x = new Float32Array(B * IMAGE_SIZE), labels = new BigInt64Array(B), l8 = new Uint8Array(B);
  let stoppedEarly = false;
  let lastTest: TrainResult['test'];
  try {
    for (let epoch = startEpoch; epoch <= o.epochs; epoch++) {
      await runner.reseed((o.seed * 1000003 + epoch) >>> 0);
      const augRng = new Rng((o.seed * 1000003 + epoch) >>> 0);
      const order = epochOrder(split.train, o.seed, epoch);
      const list = batches(order, B);
      let lossSum = 0, correct = 0, seen = 0, lr = 0;
      const t0 = performance.now();
      for (let k = 0; k < list.length; k++) {
        const b = list[k], n = b.length;
        gatherImages(o.train, b, u8);
        if (o.recipe.shift > 0) randomShift(u8, shifted, n, o.recipe.shift, augRng);
        normalise((o.recipe.shift > 0 ? shifted : u8).subarray(0, n * IMAGE_SIZE), x);
        gatherLabels(o.train, b, l8);
        for (let i = 0; i < n; i++) labels[i] = BigInt(l8[i]);
        const r = await runner.step(x, labels, n);
        if (!Number.isFinite(r.loss)) throw new Error(`training diverged: loss is ${r.loss} at epoch ${epoch}, batch ${k + 1}`);
        lr = schedule((epoch - 1) * itersPerEpoch + k);
        optimizer.step(params.data, r.grads, lr);
        lossSum += r.loss * n; correct += r.correct; seen += n;
        o.onBatch?.({ epoch, batch: k + 1, batches: list.length, loss: r.loss, imagesPerSecond: seen / ((performance.now() - t0) / 1000) });
      }
      const seconds = (performance.now() - t0) / 1000;
      trainSeconds += seconds; trainImages += seen;
      const m: EpochMetrics = { epoch, lr, seconds, train_loss: lossSum / seen, train_accuracy: correct / seen };
      if (split.val.length) Object.assign(m, prefixed('val', await evaluate(runner, o.train, split.val, B)));
      if (o.test && testIdx) { lastTest = await evaluate(runner, o.test, testIdx, B); Object.assign(m, prefixed('test', lastTest)); }
      history.push(m);
      o.onEpoch?.(m);
      const verdict = early && m.val_loss !== undefined ? early.update(m.val_loss) : null;
      if (o.checkpointDir) {
        const st = optimizer.state();
        const tensors = new Map<string, Float32Array>();
        params.names.forEach((n, i) => tensors.set(`param/${n}`, params.data[i]));
        buffers.names.forEach((n, i) => tensors.set(`buffer/${n}`, buffers.data[i]));
        for (const [b, arrs] of Object.entries(st.buffers)) params.names.forEach((n, i) => tensors.set(`optim/${b}/${n}`, arrs[i]));
        const meta: CheckpointMeta = {
          format: 'fleet-train-1', model: o.def.name, epoch, seed: o.seed, recipe: o.recipe, epochs: o.epochs, batchSize: B, history,
          optimizer: { name: st.name, step: st.step, hyper: st.hyper, bufferNames: Object.keys(st.buffers) },
          earlyStopping: early?.state(), trainSeconds, trainImages,
        };
        writeCheckpoint(checkpointFile(o.checkpointDir, epoch), meta, tensors);
      }
      if (verdict?.stop) { stoppedEarly = true; log(`early stopping after epoch ${epoch} (best epoch ${early!.bestEpoch + 1})`); break; }
    }
    const test = lastTest ?? (o.test && testIdx ? await evaluate(runner, o.test, testIdx, B) : undefined);
    const best = history.reduce((bi, m, i) => ((m.val_loss ?? Infinity) < (history[bi].val_loss ?? Infinity) ? i : bi), 0);
    return {
      params, buffers, history, seconds: trainSeconds, imagesPerSecond: trainImages / Math.max(trainSeconds, 1e-9),
      test, bestEpoch: history[best]?.epoch ?? 0, stoppedEarly,
    };
  } finally {
    await runner.release();
  }
}

/** A run can only continue with the settings it was started with (else split, order and schedule differ). */
function checkResumable(file: string, meta: CheckpointMeta, o: TrainOptions): void {
  const mismatch = (what: string, was: unknown, now: unknown) =>
    new Error(`${file}: cannot resume: the checkpoint was trained with ${what} ${JSON.stringify(was)}, this run asks for ${JSON.stringify(now)}`);
  if (meta.model !== o.def.name) throw mismatch('model', meta.model, o.def.name);
  if (meta.seed !== o.seed) throw mismatch('seed', meta.seed, o.seed);
  if (meta.batchSize !== o.batchSize) throw mismatch('batch size', meta.batchSize, o.batchSize);
  if (JSON.stringify(meta.recipe) !== JSON.stringify(o.recipe)) throw mismatch('recipe', meta.recipe, o.recipe);
  if (meta.epochs !== o.epochs) {
    o.log?.(`note: the learning-rate schedule now spans ${o.epochs} epochs (the checkpoint's run planned ${meta.epochs})`);
  }
}

function prefixed(p: 'val' | 'test', r: { loss: number; accuracy: number }) {
  return { [`${p}_loss`]: r.loss, [`${p}_accuracy`]: r.accuracy };
}

function restore(dst: Float32Array, src: Float32Array | undefined, file: string, name: string) {
  if (!src) throw new Error(`${file}: checkpoint has no tensor ${name}`);
  if (src.length !== dst.length) throw new Error(`${file}: tensor ${name} has ${src.length} values, the model needs ${dst.length}`);
  dst.set(src);
}
