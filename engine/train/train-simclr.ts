// SimCLR pre-training (NT-Xent, or SupCon with --supervised) followed by linear evaluation:
// the encoder is frozen (eval BatchNorm), its features computed once, and a Linear 2048 -> 10 probe trained
// on them with cross-entropy.
import { Graph } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { supConLoss, correctCount, type ContrastiveOptions } from '../losses.ts';
import {
  simclrParams,
  simclrBuffers,
  projectionForward,
  exportEncoder,
  probeParams,
  PROJECTION_DIM,
} from '../model/simclr.ts';
import { FEATURES, CLASSES } from '../model/cnn.ts';
import { TensorSet } from '../model/params.ts';
import { graphContext, outputGradientsAndBuffers } from './graph-context.ts';
import { ModelRunner } from './model-runner.ts';
import { TrainState, makeSchedule, type Recipe } from './train-state.ts';
import { SIMCLR_RECIPE, PROBE_RECIPE, PROBE_EPOCHS, ENCODE_CHUNK } from './defaults.ts';
import { trainEpochs, type StepResult, type BatchProgress } from './loop.ts';
import { SEEDS } from './seeds.ts';
import { epochOrder, batches, gatherImages, gatherLabels, validationSplit } from '../data/split.ts';
import type { Evaluation } from './train-classifier.ts';
import { normalise, IMAGE_SIZE, type Split } from '../data/datasets.ts';
import { twoViews } from '../data/simclr-augment.ts';
import { warmupCosine } from '../optim/schedulers.ts';
import { createSession, ort, type RuntimeOptions } from '../runtime.ts';
import { Rng } from '../util/random.ts';

export { SIMCLR_RECIPE } from './defaults.ts';

/** Training graph: 2n views (all first views, then all second views) -> contrastive loss, gradients, BatchNorm statistics. */
export function buildSimclrTrainGraph(
  views: number,
  supervised: boolean,
  loss: ContrastiveOptions,
  seed: number,
): Uint8Array {
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
export function buildContrastiveLossGraph(
  views: number,
  supervised: boolean,
  loss: ContrastiveOptions = {},
): Uint8Array {
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

export interface SimclrEpoch {
  epoch: number;
  lr: number;
  seconds: number;
  train_loss: number;
}

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
  onBatch?: (info: BatchProgress) => void;
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
  linearEval: {
    trainAccuracy: number;
    testAccuracy: number;
    testLoss: number;
    seconds: number;
    probabilities: Float32Array;
    test: Evaluation;
    val?: Evaluation;
  };
}

const range = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

export async function trainSimclr(o: SimclrOptions): Promise<SimclrResult> {
  const log = o.log ?? (() => {});
  const recipe = o.recipe ?? { ...SIMCLR_RECIPE, batchSize: o.batchSize };
  if (o.batchSize < 2)
    throw new Error(`contrastive training needs a batch size of at least 2 images, got ${o.batchSize}`);
  const state = new TrainState<SimclrEpoch>('simclr', simclrParams(), simclrBuffers(), recipe, o.seed);
  const trainCount = Math.min(o.train.count, o.limitTrain ?? Infinity);
  if (trainCount < 2) throw new Error(`contrastive training needs at least 2 training images, got ${trainCount}`);
  const indices = range(trainCount);
  // the last partial batch is dropped when it has fewer than 2 images (no negatives to contrast with)
  const batchList = (epoch: number) =>
    batches(epochOrder(indices, SEEDS.order(o.seed), epoch), o.batchSize).filter(b => b.length >= 2);
  const itersPerEpoch = batchList(1).length;
  const settings = {
    seed: o.seed,
    'batch size': o.batchSize,
    recipe,
    supervised: o.supervised,
    loss: o.loss ?? {},
    'training images': trainCount,
  };

  const runner = new ModelRunner(state.params, state.buffers, o.runtime ?? {}, o.seed);
  const views = viewBatcher(o.batchSize);
  try {
    await trainEpochs({
      state,
      seed: o.seed,
      epochs: o.epochs,
      runner,
      itersPerEpoch,
      schedule: makeSchedule(recipe, itersPerEpoch, o.epochs),
      checkpoints: o.checkpointDir ? { dir: o.checkpointDir, settings, resume: !!o.resume } : undefined,
      batches: epoch => {
        const rng = new Rng(SEEDS.views(o.seed, epoch));
        return batchList(epoch).map(idx => ({ idx, rng }));
      },
      step: async ({ idx, rng }) => {
        const n = idx.length;
        const inputs = views(o.train, idx, rng, o.supervised);
        const out = await runner.run(
          `train/${n}`,
          seed => buildSimclrTrainGraph(2 * n, o.supervised, o.loss ?? {}, seed),
          inputs,
          { updateBuffers: true },
        );
        return { loss: (out.loss.data as Float32Array)[0], grads: runner.grads(out), examples: n };
      },
      endEpoch: async t => ({
        epoch: t.epoch,
        lr: t.lr,
        seconds: t.seconds,
        train_loss: t.lossSum / Math.max(t.examples, 1),
      }),
      onBatch: o.onBatch,
      onEpoch: o.onEpoch,
      log,
    });
  } finally {
    await runner.release();
  }
  const linearEval = await linearEvaluation(state.params, state.buffers, o, trainCount, log);
  return {
    params: state.params,
    buffers: state.buffers,
    probe: linearEval.probe,
    history: state.history,
    seconds: state.trainSeconds,
    imagesPerSecond: state.trainImages / Math.max(state.trainSeconds, 1e-9),
    linearEval,
  };
}

/** Fills reused buffers with a batch's two augmented views (views A in the first n rows, views B in the next n),
 * and for SupCon its labels, once per view. */
function viewBatcher(size: number) {
  const u8 = new Uint8Array(size * IMAGE_SIZE),
    l8 = new Uint8Array(size);
  const x = new Float32Array(2 * size * IMAGE_SIZE),
    labels = new BigInt64Array(2 * size);
  return (data: Split, idx: Uint32Array, rng: Rng, supervised: boolean) => {
    const n = idx.length;
    gatherImages(data, idx, u8);
    twoViews(u8, n, rng, x.subarray(0, n * IMAGE_SIZE), x.subarray(n * IMAGE_SIZE, 2 * n * IMAGE_SIZE));
    const inputs: Record<string, ort.Tensor> = {
      x: new ort.Tensor('float32', x.subarray(0, 2 * n * IMAGE_SIZE), [2 * n, 1, 28, 28]),
    };
    if (supervised) {
      gatherLabels(data, idx, l8);
      for (let i = 0; i < n; i++) labels[i] = labels[i + n] = BigInt(l8[i]);
      inputs.labels = new ort.Tensor('int64', labels.subarray(0, 2 * n), [2 * n]);
    }
    return inputs;
  };
}

/** Features of the frozen encoder for the given images, [count, 2048]. */
export async function encodeImages(
  params: TensorSet,
  buffers: TensorSet,
  split: Split,
  count: number,
  runtime: RuntimeOptions = {},
): Promise<Float32Array> {
  const session = await createSession(exportEncoder(params, buffers), runtime);
  const chunk = ENCODE_CHUNK;
  const u8 = new Uint8Array(chunk * IMAGE_SIZE),
    x = new Float32Array(chunk * IMAGE_SIZE);
  const features = new Float32Array(count * FEATURES);
  try {
    for (let start = 0; start < count; start += chunk) {
      const n = Math.min(chunk, count - start);
      u8.set(split.images.subarray(start * IMAGE_SIZE, (start + n) * IMAGE_SIZE));
      normalise(u8.subarray(0, n * IMAGE_SIZE), x);
      const out = await session.run({
        input: new ort.Tensor('float32', x.subarray(0, n * IMAGE_SIZE), [n, 1, 28, 28]),
      });
      features.set(out.features.data as Float32Array, start * FEATURES);
    }
  } finally {
    await session.release();
  }
  return features;
}

/** Linear evaluation of a trained encoder: features of the frozen encoder, a Linear 2048 -> 10 probe trained on them. */
export async function linearEvaluation(
  params: TensorSet,
  buffers: TensorSet,
  o: SimclrOptions,
  trainCount: number,
  log: (l: string) => void,
) {
  const t0 = performance.now();
  const testCount = Math.min(o.test.count, o.limitTest ?? Infinity);
  // with a validation share the probe trains on the rest and its validation predictions are kept (ensemble selection)
  const split =
    (o.valFraction ?? 0) > 0
      ? validationSplit(trainCount, o.valFraction!, SEEDS.split(o.seed, o.splitSeed))
      : { train: range(trainCount), val: new Uint32Array(0) };
  log(`linear evaluation: encoding ${trainCount} training and ${testCount} test images with the frozen encoder`);
  const trainF = await encodeImages(params, buffers, o.train, trainCount, o.runtime);
  const testF = await encodeImages(params, buffers, o.test, testCount, o.runtime);
  const state = new TrainState<{ train_accuracy: number }>('probe', probeParams(), [], PROBE_RECIPE, o.seed);
  const probe = state.params;
  const runner = new ProbeRunner(probe, state.buffers, o.runtime ?? {}, PROBE_RECIPE.batchSize);
  const epochs = o.probeEpochs ?? PROBE_EPOCHS,
    B = PROBE_RECIPE.batchSize;
  const batchesPerEpoch = Math.ceil(split.train.length / B);
  // not makeSchedule: it rounds fraction * (epochs * batches), this schedule (fraction * epochs) * batches
  const warmup = Math.max(1, Math.round(PROBE_RECIPE.schedule.warmupFraction * epochs * batchesPerEpoch));
  const schedule = warmupCosine({ base: PROBE_RECIPE.lr, warmup, total: epochs * batchesPerEpoch });
  try {
    await trainEpochs({
      state,
      seed: o.seed,
      epochs,
      itersPerEpoch: batchesPerEpoch,
      schedule,
      batches: epoch => batches(epochOrder(split.train, SEEDS.probeOrder(o.seed), epoch), B),
      step: idx => runner.step(trainF, o.train, idx),
      endEpoch: async t => ({ train_accuracy: t.correct / t.examples }),
    });
    const trainAccuracy = state.history.at(-1)?.train_accuracy ?? 0;
    const test = await runner.evaluate(testF, o.test, range(testCount));
    const val = split.val.length ? await runner.evaluate(trainF, o.train, split.val) : undefined;
    const seconds = (performance.now() - t0) / 1000;
    const pct = (x: number) => `${(100 * x).toFixed(2)}%`;
    log(
      `linear evaluation: probe train accuracy ${pct(trainAccuracy)}, test accuracy ${pct(test.accuracy)} ` +
        `(${seconds.toFixed(1)}s)`,
    );
    const { accuracy: testAccuracy, loss: testLoss, probabilities } = test;
    return { probe, trainAccuracy, testAccuracy, testLoss, seconds, probabilities, test, val };
  } finally {
    await runner.release();
  }
}

/** The linear probe on precomputed features [count, 2048]: training steps and evaluation, in reused buffers. */
class ProbeRunner extends ModelRunner {
  private readonly features: Float32Array;
  private readonly labels: BigInt64Array;

  constructor(
    params: TensorSet,
    buffers: TensorSet,
    runtime: RuntimeOptions,
    private readonly batchSize: number,
  ) {
    super(params, buffers, runtime);
    this.features = new Float32Array(batchSize * FEATURES);
    this.labels = new BigInt64Array(batchSize);
  }

  private inputs(src: Float32Array, data: Split, idx: Uint32Array) {
    idx.forEach((k, i) => {
      this.features.set(src.subarray(k * FEATURES, (k + 1) * FEATURES), i * FEATURES);
      this.labels[i] = BigInt(data.labels[k]);
    });
    const n = idx.length;
    return {
      features: new ort.Tensor('float32', this.features.subarray(0, n * FEATURES), [n, FEATURES]),
      labels: new ort.Tensor('int64', this.labels.subarray(0, n), [n]),
    };
  }

  async step(src: Float32Array, data: Split, idx: Uint32Array): Promise<StepResult> {
    const graph = () => buildProbeGraph(idx.length, true);
    const out = await this.run(`train/${idx.length}`, graph, this.inputs(src, data, idx));
    const scalar = (name: string) => (out[name].data as Float32Array)[0];
    return { loss: scalar('loss'), grads: this.grads(out), examples: idx.length, correct: scalar('correct') };
  }

  async evaluate(src: Float32Array, data: Split, idx: Uint32Array): Promise<Evaluation> {
    let lossSum = 0,
      correct = 0,
      at = 0;
    const probabilities = new Float32Array(idx.length * CLASSES);
    for (const b of batches(idx, this.batchSize)) {
      const out = await this.run(`eval/${b.length}`, () => buildProbeGraph(b.length, false), this.inputs(src, data, b));
      lossSum += (out.loss.data as Float32Array)[0];
      correct += (out.correct.data as Float32Array)[0];
      probabilities.set(out.probabilities.data as Float32Array, at * CLASSES);
      at += b.length;
    }
    return { loss: lossSum / idx.length, accuracy: correct / idx.length, probabilities };
  }
}
