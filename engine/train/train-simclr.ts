// SimCLR pre-training (NT-Xent, or SupCon with --supervised) followed by linear evaluation:
// the encoder is frozen (eval BatchNorm), its features computed once, and a Linear 2048 -> 10 probe trained
// on them with cross-entropy.
import { Graph } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { supConLoss, correctCount, type ContrastiveOptions } from '../losses.ts';
import { simclrParams, simclrBuffers, projectionForward, exportEncoder, probeParams, PROJECTION_DIM } from '../model/simclr.ts';
import { FEATURES, CLASSES } from '../model/cnn.ts';
import { TensorSet } from '../model/params.ts';
import { graphContext, outputGradientsAndBuffers } from './graph-context.ts';
import { ModelRunner } from './model-runner.ts';
import { TrainState, makeSchedule, type Recipe } from './train-state.ts';
import { epochOrder, batches, gatherImages, gatherLabels, validationSplit } from '../data/split.ts';
import type { Evaluation } from './train-classifier.ts';
import { normalise, IMAGE_SIZE, type Split } from '../data/datasets.ts';
import { twoViews } from '../data/simclr-augment.ts';
import { makeOptimizer } from '../optim/optimizers.ts';
import { warmupCosine } from '../optim/schedulers.ts';
import { createSession, ort, type RuntimeOptions } from '../runtime.ts';
import { Rng } from '../util/random.ts';

export const SIMCLR_RECIPE: Recipe = {
  name: 'simclr', optimizer: 'adamw', lr: 1e-3, weightDecay: 1e-4, decayWeightsOnly: true,
  schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 }, shift: 0, batchSize: 256,
};

/** Training graph: 2n views (all first views, then all second views) -> contrastive loss, gradients, BatchNorm statistics. */
export function buildSimclrTrainGraph(views: number, supervised: boolean, loss: ContrastiveOptions, seed: number): Uint8Array {
  const g = new Graph('simclr_train');
  const x = g.input('x', [views, 1, 28, 28]);
  const labels = supervised ? g.input('labels', [views], 'int64') : null;
  const gc = graphContext(g, simclrParams(), simclrBuffers(), true, seed);
  const z = projectionForward(gc.ctx, x);
  const l = supConLoss(g, z, labels, loss);
  const grads = gradients(g, l, [...gc.params.values()]);
  g.output(l, 'loss');
  outputGradientsAndBuffers(g, gc, grads, simclrBuffers());
  return g.toModel();
}

/**
 * The loss on its own: projections z [2n, 128] (and labels [2n] for SupCon) -> loss and dloss/dz.
 * Lets the loss over all 2n projections be computed in one place when the projections come from several workers.
 */
export function buildContrastiveLossGraph(views: number, supervised: boolean, loss: ContrastiveOptions = {}): Uint8Array {
  const g = new Graph('contrastive_loss');
  const z = g.input('z', [views, PROJECTION_DIM]);
  const labels = supervised ? g.input('labels', [views], 'int64') : null;
  const l = supConLoss(g, z, labels, loss);
  g.output(l, 'loss');
  g.output(gradients(g, l, [z])[0], 'grad.z');
  return g.toModel();
}

/** Linear probe on features: training (mean loss, correct, gradients) and evaluation (loss sum, correct, probabilities). */
function buildProbeGraph(batch: number, training: boolean): Uint8Array {
  const g = new Graph(training ? 'probe_train' : 'probe_eval');
  const f = g.input('features', [batch, FEATURES]);
  const labels = g.input('labels', [batch], 'int64');
  const gc = graphContext(g, probeParams(), [], training, 0);
  const logits = g.gemm(f, gc.ctx.param('probe.weight'), gc.ctx.param('probe.bias'), { transB: true });
  const [loss] = g.softmaxCrossEntropy(logits, labels, training ? 'mean' : 'sum');
  g.output(loss, 'loss');
  g.output(correctCount(g, logits, labels), 'correct');
  if (training) outputGradientsAndBuffers(g, gc, gradients(g, loss, [...gc.params.values()]), []);
  else g.output(g.softmax(logits, 1), 'probabilities');
  return g.toModel();
}

export interface SimclrEpoch { epoch: number; lr: number; seconds: number; train_loss: number }

export interface SimclrOptions {
  epochs: number;
  batchSize: number;
  recipe?: Recipe;
  seed: number;
  supervised: boolean;
  loss?: ContrastiveOptions;
  train: Split;
  test: Split;
  limitTrain?: number;
  limitTest?: number;
  /** Epochs of linear-probe training (default 10). */
  probeEpochs?: number;
  /** Share of the training images held out from the probe's training, with their predictions returned (default 0). */
  valFraction?: number;
  /** Seed of that split (default: seed); ensemble members share one split. */
  splitSeed?: number;
  runtime?: RuntimeOptions;
  checkpointDir?: string;
  resume?: boolean;
  onBatch?: (info: { epoch: number; batch: number; batches: number; loss: number; imagesPerSecond: number; images: number; lr: number }) => void;
  onEpoch?: (m: SimclrEpoch) => void;
  log?: (line: string) => void;
}

export interface SimclrResult {
  params: TensorSet;
  buffers: TensorSet;
  probe: TensorSet;
  history: SimclrEpoch[];
  seconds: number;
  imagesPerSecond: number;
  linearEval: { trainAccuracy: number; testAccuracy: number; testLoss: number; seconds: number; probabilities: Float32Array; test: Evaluation; val?: Evaluation };
}

const range = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

export async function trainSimclr(o: SimclrOptions): Promise<SimclrResult> {
  const log = o.log ?? (() => {});
  const recipe = o.recipe ?? { ...SIMCLR_RECIPE, batchSize: o.batchSize };
  if (o.batchSize < 2) throw new Error(`contrastive training needs a batch size of at least 2 images, got ${o.batchSize}`);
  const state = new TrainState<SimclrEpoch>('simclr', simclrParams(), simclrBuffers(), recipe, o.seed);
  const trainCount = Math.min(o.train.count, o.limitTrain ?? Infinity);
  if (trainCount < 2) throw new Error(`contrastive training needs at least 2 training images, got ${trainCount}`);
  const indices = range(trainCount);
  // the last partial batch is dropped when it has fewer than 2 images (no negatives to contrast with)
  const batchList = (epoch: number) => batches(epochOrder(indices, o.seed, epoch), o.batchSize).filter(b => b.length >= 2);
  const itersPerEpoch = batchList(1).length;
  const schedule = makeSchedule(recipe, itersPerEpoch, o.epochs);
  const settings = { seed: o.seed, 'batch size': o.batchSize, recipe, supervised: o.supervised, loss: o.loss ?? {}, 'training images': trainCount };
  if (o.resume && o.checkpointDir && !state.resume(o.checkpointDir, settings, o.epochs, log)) log(`no checkpoint in ${o.checkpointDir}: starting from scratch`);

  const runner = new ModelRunner(state.params, state.buffers, o.runtime ?? {}, o.seed);
  const B = o.batchSize;
  const u8 = new Uint8Array(B * IMAGE_SIZE), l8 = new Uint8Array(B);
  const x = new Float32Array(2 * B * IMAGE_SIZE), labels = new BigInt64Array(2 * B);
  try {
    for (let epoch = state.epoch + 1; epoch <= o.epochs; epoch++) {
      await runner.reseed((o.seed * 1000003 + epoch) >>> 0);
      const rng = new Rng((o.seed * 7654321 + epoch) >>> 0);
      const list = batchList(epoch);
      let lossSum = 0, seen = 0, lr = 0;
      const t0 = performance.now();
      for (let k = 0; k < list.length; k++) {
        const b = list[k], n = b.length;
        gatherImages(o.train, b, u8);
        // views A fill the first n rows of x, views B the next n
        twoViews(u8, n, rng, x.subarray(0, n * IMAGE_SIZE), x.subarray(n * IMAGE_SIZE, 2 * n * IMAGE_SIZE));
        const inputs: Record<string, ort.Tensor> = { x: new ort.Tensor('float32', x.subarray(0, 2 * n * IMAGE_SIZE), [2 * n, 1, 28, 28]) };
        if (o.supervised) {
          gatherLabels(o.train, b, l8);
          for (let i = 0; i < n; i++) labels[i] = labels[i + n] = BigInt(l8[i]);
          inputs.labels = new ort.Tensor('int64', labels.subarray(0, 2 * n), [2 * n]);
        }
        const out = await runner.run(`train/${n}`, seed => buildSimclrTrainGraph(2 * n, o.supervised, o.loss ?? {}, seed), inputs, { updateBuffers: true });
        const loss = (out.loss.data as Float32Array)[0];
        if (!Number.isFinite(loss)) throw new Error(`training diverged: loss is ${loss} at epoch ${epoch}, batch ${k + 1}`);
        lr = schedule((epoch - 1) * itersPerEpoch + k);
        state.optimizer.step(state.params.data, runner.grads(out), lr);
        lossSum += loss * n; seen += n;
        o.onBatch?.({ epoch, batch: k + 1, batches: list.length, loss, imagesPerSecond: seen / ((performance.now() - t0) / 1000), images: n, lr });
      }
      const seconds = (performance.now() - t0) / 1000;
      state.trainSeconds += seconds; state.trainImages += seen;
      const m: SimclrEpoch = { epoch, lr, seconds, train_loss: lossSum / Math.max(seen, 1) };
      state.history.push(m);
      state.epoch = epoch;
      o.onEpoch?.(m);
      if (o.checkpointDir) state.save(o.checkpointDir, settings, o.epochs);
    }
  } finally {
    await runner.release();
  }
  const linearEval = await linearEvaluation(state.params, state.buffers, o, trainCount, log);
  return {
    params: state.params, buffers: state.buffers, probe: linearEval.probe, history: state.history,
    seconds: state.trainSeconds, imagesPerSecond: state.trainImages / Math.max(state.trainSeconds, 1e-9), linearEval,
  };
}

/** Features of the frozen encoder for the given images, [count, 2048]. */
export async function encodeImages(params: TensorSet, buffers: TensorSet, split: Split, count: number, runtime: RuntimeOptions = {}): Promise<Float32Array> {
  const session = await createSession(exportEncoder(params, buffers), runtime);
  const chunk = 500;
  const u8 = new Uint8Array(chunk * IMAGE_SIZE), x = new Float32Array(chunk * IMAGE_SIZE);
  const features = new Float32Array(count * FEATURES);
  try {
    for (let start = 0; start < count; start += chunk) {
      const n = Math.min(chunk, count - start);
      u8.set(split.images.subarray(start * IMAGE_SIZE, (start + n) * IMAGE_SIZE));
      normalise(u8.subarray(0, n * IMAGE_SIZE), x);
      const out = await session.run({ input: new ort.Tensor('float32', x.subarray(0, n * IMAGE_SIZE), [n, 1, 28, 28]) });
      features.set(out.features.data as Float32Array, start * FEATURES);
    }
  } finally {
    await session.release();
  }
  return features;
}

/** Linear evaluation of a trained encoder: features of the frozen encoder, a Linear 2048 -> 10 probe trained on them. */
export async function linearEvaluation(params: TensorSet, buffers: TensorSet, o: SimclrOptions, trainCount: number, log: (l: string) => void) {
  const t0 = performance.now();
  const testCount = Math.min(o.test.count, o.limitTest ?? Infinity);
  // with a validation share the probe trains on the rest and its validation predictions are kept (ensemble selection)
  const split = (o.valFraction ?? 0) > 0 ? validationSplit(trainCount, o.valFraction!, o.splitSeed ?? o.seed) : { train: range(trainCount), val: new Uint32Array(0) };
  log(`linear evaluation: encoding ${trainCount} training and ${testCount} test images with the frozen encoder`);
  const trainF = await encodeImages(params, buffers, o.train, trainCount, o.runtime);
  const testF = await encodeImages(params, buffers, o.test, testCount, o.runtime);
  const probe = TensorSet.init(probeParams(), o.seed);
  const runner = new ModelRunner(probe, new TensorSet([]), o.runtime ?? {});
  const epochs = o.probeEpochs ?? 10, B = 256;
  const batchesPerEpoch = Math.ceil(split.train.length / B);
  const optimizer = makeOptimizer('adamw', probe.data, { weightDecay: 1e-4 });
  const schedule = warmupCosine({ base: 1e-3, warmup: Math.max(1, Math.round(0.05 * epochs * batchesPerEpoch)), total: epochs * batchesPerEpoch });
  const f = new Float32Array(B * FEATURES), labels = new BigInt64Array(B);
  const fill = (src: Float32Array, split: Split, idx: Uint32Array) => {
    idx.forEach((k, i) => { f.set(src.subarray(k * FEATURES, (k + 1) * FEATURES), i * FEATURES); labels[i] = BigInt(split.labels[k]); });
    return { features: new ort.Tensor('float32', f.subarray(0, idx.length * FEATURES), [idx.length, FEATURES]), labels: new ort.Tensor('int64', labels.subarray(0, idx.length), [idx.length]) };
  };
  const evaluate = async (src: Float32Array, data: Split, idx: Uint32Array): Promise<Evaluation> => {
    let lossSum = 0, correct = 0, at = 0;
    const probabilities = new Float32Array(idx.length * CLASSES);
    for (const b of batches(idx, B)) {
      const out = await runner.run(`eval/${b.length}`, () => buildProbeGraph(b.length, false), fill(src, data, b));
      lossSum += (out.loss.data as Float32Array)[0]; correct += (out.correct.data as Float32Array)[0];
      probabilities.set(out.probabilities.data as Float32Array, at * CLASSES);
      at += b.length;
    }
    return { loss: lossSum / idx.length, accuracy: correct / idx.length, probabilities };
  };
  let trainAccuracy = 0;
  try {
    for (let epoch = 1; epoch <= epochs; epoch++) {
      let correct = 0;
      const list = batches(epochOrder(split.train, o.seed + 17, epoch), B);
      for (let k = 0; k < list.length; k++) {
        const out = await runner.run(`train/${list[k].length}`, () => buildProbeGraph(list[k].length, true), fill(trainF, o.train, list[k]));
        optimizer.step(probe.data, runner.grads(out), schedule((epoch - 1) * batchesPerEpoch + k));
        correct += (out.correct.data as Float32Array)[0];
      }
      trainAccuracy = correct / split.train.length;
    }
    const test = await evaluate(testF, o.test, range(testCount));
    const val = split.val.length ? await evaluate(trainF, o.train, split.val) : undefined;
    const seconds = (performance.now() - t0) / 1000;
    log(`linear evaluation: probe train accuracy ${(100 * trainAccuracy).toFixed(2)}%, test accuracy ${(100 * test.accuracy).toFixed(2)}% (${seconds.toFixed(1)}s)`);
    return { probe, trainAccuracy, testAccuracy: test.accuracy, testLoss: test.loss, seconds, probabilities: test.probabilities, test, val };
  } finally {
    await runner.release();
  }
}
