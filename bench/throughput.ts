// Throughput of a full CNN training step (forward, loss, every gradient, BatchNorm statistics and the
// AdamW update) and of inference with the exported model, on random data of a fixed batch size.
import { CNN } from '../engine/model/classifiers.ts';
import { TensorSet } from '../engine/model/params.ts';
import { exportCnn } from '../engine/model/cnn.ts';
import { ClassifierRunner } from '../engine/train/classifier-runner.ts';
import { AdamW } from '../engine/optim/optimizers.ts';
import { createSession, ort, type RuntimeOptions } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';
import { simclrParams, simclrBuffers } from '../engine/model/simclr.ts';
import { buildSimclrTrainGraph } from '../engine/train/train-simclr.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { benchAugment } from './augment.ts';
import { median } from './stats.ts';

export interface BenchOptions {
  batchSize: number;
  warmup: number;
  iters: number;
  runtime: RuntimeOptions;
}

function randomBatch(n: number, seed: number) {
  const rng = new Rng(seed);
  return {
    x: Float32Array.from({ length: n * 784 }, () => rng.next() * 2 - 1),
    labels: BigInt64Array.from({ length: n }, () => BigInt(rng.int(10))),
  };
}

async function time(warmup: number, iters: number, fn: () => Promise<void>): Promise<number[]> {
  for (let i = 0; i < warmup; i++) await fn();
  const ms: number[] = [];
  for (let i = 0; i < iters; i++) {
    const t0 = performance.now();
    await fn();
    ms.push(performance.now() - t0);
  }
  return ms;
}

export async function benchTrain(o: BenchOptions) {
  const params = TensorSet.init(CNN.params(), 1),
    buffers = TensorSet.init(CNN.buffers(), 1);
  const runner = new ClassifierRunner(CNN, params, buffers, o.runtime, 1);
  const optimizer = new AdamW(params.data, { weightDecay: 0.05 });
  const { x, labels } = randomBatch(o.batchSize, 2);
  const optimizerMs: number[] = [];
  const ms = await time(o.warmup, o.iters, async () => {
    const r = await runner.step(x, labels, o.batchSize);
    const t0 = performance.now();
    optimizer.step(params.data, r.grads, 1e-3);
    optimizerMs.push(performance.now() - t0);
  });
  await runner.release();
  const step = median(ms);
  return {
    batch_size: o.batchSize,
    train_images_per_second: Math.round(o.batchSize / (step / 1000)),
    step_ms_median: round(step),
    optimizer_ms_median: round(median(optimizerMs.slice(o.warmup))),
    step_ms_all: ms.map(round),
  };
}

export async function benchInfer(o: BenchOptions) {
  const params = TensorSet.init(CNN.params(), 1),
    buffers = TensorSet.init(CNN.buffers(), 1);
  const session = await createSession(exportCnn(params, buffers), o.runtime);
  const { x } = randomBatch(o.batchSize, 3);
  const feeds = { input: new ort.Tensor('float32', x, [o.batchSize, 1, 28, 28]) };
  const ms = await time(o.warmup, o.iters, async () => {
    await session.run(feeds);
  });
  await session.release();
  const step = median(ms);
  return {
    batch_size: o.batchSize,
    infer_images_per_second: Math.round(o.batchSize / (step / 1000)),
    infer_ms_median: round(step),
    step_ms_median: round(step),
  };
}

const round = (x: number) => Math.round(x * 100) / 100;

/** Augmentation (two views per image) against a SimCLR training step on the same batch: the share it takes. */
export async function benchAugmentShare(o: BenchOptions) {
  const aug = benchAugment(o.batchSize, o.iters);
  const params = TensorSet.init(simclrParams(), 1),
    buffers = TensorSet.init(simclrBuffers(), 1);
  const runner = new ModelRunner(params, buffers, o.runtime, 1);
  const { x } = randomBatch(2 * o.batchSize, 4);
  const inputs = { x: new ort.Tensor('float32', x, [2 * o.batchSize, 1, 28, 28]) };
  const ms = await time(o.warmup, Math.min(o.iters, 10), async () => {
    await runner.run('train', seed => buildSimclrTrainGraph(2 * o.batchSize, false, {}, seed), inputs, {
      updateBuffers: true,
    });
  });
  await runner.release();
  const step = median(ms),
    augMs = (1000 * o.batchSize) / aug.images_per_second;
  return {
    batch_size: o.batchSize,
    augment_images_per_second: Math.round(aug.images_per_second),
    augment_ms_per_batch: round(augMs),
    simclr_step_ms_median: round(step),
    augment_share_of_step: Math.round((1e4 * augMs) / (augMs + step)) / 1e4,
  };
}
