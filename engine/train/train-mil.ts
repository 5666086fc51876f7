// Training of the attention-MIL model on MNIST bags: bags are padded to one length with a mask (one session
// for all bag lengths), Bernoulli negative log-likelihood with clamped probabilities, bag AUC and accuracy on
// the test bags, attention weights per instance.
import { Graph } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { binaryCrossEntropy } from '../losses.ts';
import { milParams, milBuffers, milForward, type Pooling } from '../model/mil.ts';
import type { TensorSet } from '../model/params.ts';
import { graphContext, outputGradientsAndBuffers } from './graph-context.ts';
import { ModelRunner } from './model-runner.ts';
import { TrainState, makeSchedule, type Recipe } from './train-state.ts';
import { MIL_RECIPE } from './defaults.ts';
import { trainEpochs } from './loop.ts';
import { SEEDS } from './seeds.ts';
import { makeBags, maxLength, packBags, type Bag } from '../data/bags.ts';
import { normalise, IMAGE_SIZE, type Split } from '../data/datasets.ts';
import { rocAuc, binaryAccuracy } from '../metrics.ts';
import { ort, type RuntimeOptions } from '../runtime.ts';
import { Rng } from '../util/random.ts';

export { MIL_RECIPE } from './defaults.ts';

export function buildMilGraph(pooling: Pooling, bags: number, L: number, training: boolean, seed: number): Uint8Array {
  const g = new Graph(training ? 'mil_train' : 'mil_eval');
  const x = g.input('x', [bags * L, 1, 28, 28]);
  const mask = g.input('mask', [bags, L]);
  const labels = g.input('labels', [bags]);
  const gc = graphContext(g, milParams(pooling), milBuffers(), training, seed);
  const { prob, weights } = milForward(gc.ctx, x, mask, pooling);
  const loss = binaryCrossEntropy(g, prob, labels);
  g.output(loss, 'loss');
  g.output(prob, 'probability');
  if (training) outputGradientsAndBuffers(g, gc, gradients(g, loss, [...gc.params.values()]), milBuffers());
  else if (weights) g.output(weights, 'attention');
  return g.toModel();
}

export interface MilEpoch {
  epoch: number;
  lr: number;
  seconds: number;
  train_loss: number;
  train_accuracy: number;
  test_loss: number;
  test_accuracy: number;
  test_auc: number;
}

export interface MilOptions {
  pooling: Pooling;
  epochs: number;
  seed: number;
  bags: number;
  testBags: number;
  bagMean: number;
  bagStd: number;
  target: number;
  /** Bags per optimizer step (default 1, as the reference). */
  bagsPerStep?: number;
  recipe?: Recipe;
  train: Split;
  test: Split;
  runtime?: RuntimeOptions;
  checkpointDir?: string;
  resume?: boolean;
  /** Evaluate the test bags after every epoch (default) or only after the last (faster sweeps). */
  evaluateEachEpoch?: boolean;
  onBatch?: (info: { epoch: number; batch: number; batches: number; loss: number; lr: number }) => void;
  onEpoch?: (m: MilEpoch) => void;
  log?: (line: string) => void;
}

/** One test bag: its label, predicted probability, instances (digit labels and test-set indices) and their attention. */
export interface MilPrediction {
  label: number;
  probability: number;
  digits: number[];
  indices: number[];
  attention: number[] | null;
}

export interface MilResult {
  params: TensorSet;
  buffers: TensorSet;
  history: MilEpoch[];
  seconds: number;
  test: { loss: number; accuracy: number; auc: number; predictions: MilPrediction[] };
}

export async function trainMil(o: MilOptions): Promise<MilResult> {
  const log = o.log ?? (() => {});
  const per = o.bagsPerStep ?? MIL_RECIPE.batchSize;
  if (!Number.isInteger(per) || per < 1) throw new RangeError(`bags per step must be an integer >= 1, got ${per}`);
  const recipe = o.recipe ?? { ...MIL_RECIPE, batchSize: per };
  const bagShape = { meanLength: o.bagMean, stdLength: o.bagStd, target: o.target };
  const trainBags = makeBags(o.train, { count: o.bags, ...bagShape, seed: SEEDS.trainBags(o.seed) });
  const testBags = makeBags(o.test, { count: o.testBags, ...bagShape, seed: SEEDS.testBags(o.seed) });
  // one padded length for every bag: one session serves all bag lengths
  const L = Math.max(maxLength(trainBags), maxLength(testBags));
  const state = new TrainState<MilEpoch>(`mil-${o.pooling}`, milParams(o.pooling), milBuffers(), recipe, o.seed);
  const itersPerEpoch = Math.ceil(trainBags.length / per);
  const settings = {
    seed: o.seed,
    pooling: o.pooling,
    bags: o.bags,
    'bag length': [o.bagMean, o.bagStd],
    target: o.target,
    'bags per step': per,
    recipe,
  };
  log(
    `mil: ${trainBags.length} training bags (${positives(trainBags)} positive), ${testBags.length} test bags ` +
      `(${positives(testBags)} positive), padded to ${L} instances`,
  );

  const runner = new ModelRunner(state.params, state.buffers, o.runtime ?? {}, o.seed);
  const evaluate = () => evaluateBags(runner, o.pooling, o.test, testBags, L, per);

  try {
    let last: Awaited<ReturnType<typeof evaluate>> | null = null;
    await trainEpochs({
      state,
      seed: o.seed,
      epochs: o.epochs,
      runner,
      itersPerEpoch,
      schedule: makeSchedule(recipe, itersPerEpoch, o.epochs),
      checkpoints: o.checkpointDir ? { dir: o.checkpointDir, settings, resume: !!o.resume } : undefined,
      batches: epoch => {
        const order = new Rng(SEEDS.bagOrder(o.seed, epoch)).shuffle([...trainBags]);
        return Array.from({ length: itersPerEpoch }, (_, k) => order.slice(k * per, (k + 1) * per));
      },
      step: async list => {
        const train = (seed: number) => buildMilGraph(o.pooling, list.length, L, true, seed);
        const inputs = bagInputs(o.train, list, L);
        const out = await runner.run(`train/${list.length}`, train, inputs, { updateBuffers: true });
        const probs = out.probability.data as Float32Array;
        const correct = list.reduce((n, b, i) => n + ((probs[i] >= 0.5 ? 1 : 0) === b.label ? 1 : 0), 0);
        const images = list.reduce((n, b) => n + b.indices.length, 0);
        const loss = (out.loss.data as Float32Array)[0];
        return { loss, grads: runner.grads(out), examples: list.length, correct, images };
      },
      endEpoch: async t => {
        last = o.evaluateEachEpoch === false && t.epoch < o.epochs ? null : await evaluate();
        return {
          epoch: t.epoch,
          lr: t.lr,
          seconds: t.seconds,
          train_loss: t.lossSum / t.examples,
          train_accuracy: t.correct / t.examples,
          test_loss: last?.loss ?? NaN,
          test_accuracy: last?.accuracy ?? NaN,
          test_auc: last?.auc ?? NaN,
        };
      },
      stepName: 'step',
      onBatch:
        o.onBatch && (p => o.onBatch!({ epoch: p.epoch, batch: p.batch, batches: p.batches, loss: p.loss, lr: p.lr })),
      onEpoch: o.onEpoch,
      log,
    });
    const test = last ?? (await evaluate());
    return { params: state.params, buffers: state.buffers, history: state.history, seconds: state.trainSeconds, test };
  } finally {
    await runner.release();
  }
}

/** A group of bags as graph inputs: the instances padded to L per bag with a mask, and the bag labels. */
function bagInputs(split: Split, list: Bag[], L: number) {
  const u8 = new Uint8Array(list.length * L * IMAGE_SIZE),
    mask = new Float32Array(list.length * L);
  packBags(split, list, L, u8, mask);
  return {
    x: new ort.Tensor('float32', normalise(u8, new Float32Array(u8.length)), [list.length * L, 1, 28, 28]),
    mask: new ort.Tensor('float32', mask, [list.length, L]),
    labels: new ort.Tensor(
      'float32',
      Float32Array.from(list, b => b.label),
      [list.length],
    ),
  };
}

/** The test bags, `per` at a time: mean loss, accuracy, AUC and every bag's prediction with its attention. */
async function evaluateBags(runner: ModelRunner, pooling: Pooling, test: Split, bags: Bag[], L: number, per: number) {
  const predictions: MilPrediction[] = [];
  let lossSum = 0;
  for (let i = 0; i < bags.length; i += per) {
    const list = bags.slice(i, i + per);
    const graph = () => buildMilGraph(pooling, list.length, L, false, 0);
    const out = await runner.run(`eval/${list.length}`, graph, bagInputs(test, list, L));
    lossSum += (out.loss.data as Float32Array)[0] * list.length;
    const probs = out.probability.data as Float32Array,
      att = out.attention?.data as Float32Array | undefined;
    list.forEach((b, k) =>
      predictions.push({
        label: b.label,
        probability: probs[k],
        digits: Array.from(b.indices, j => test.labels[j]),
        indices: Array.from(b.indices),
        attention: att ? Array.from(att.subarray(k * L, k * L + b.indices.length)) : null,
      }),
    );
  }
  const scores = predictions.map(p => p.probability),
    labels = predictions.map(p => p.label);
  const accuracy = binaryAccuracy(scores, labels);
  return { loss: lossSum / bags.length, accuracy, auc: safeAuc(scores, labels), predictions };
}

const positives = (bags: Bag[]) => bags.reduce((n, b) => n + b.label, 0);

/** AUC, or NaN when the test bags hold only one class (tiny test sets). */
function safeAuc(scores: number[], labels: number[]): number {
  return new Set(labels).size < 2 ? NaN : rocAuc(scores, labels);
}
