// `fleet bench gpu`: the prepared check for a machine with an NVIDIA GPU. It computes (1) a data-parallel SimCLR
// step (the grouped single-process graph of engine/train/data-parallel.ts: every shard's forward, the global
// NT-Xent loss, autodiff through all of it) and (2) an ensemble member's CNN training step (the shard graph,
// dropout masks as inputs so that both devices draw the same ones) on the CPU and with `--device cuda`, checks
// every gradient tensor within 1e-4 (relative L2) of the CPU's, and records the throughput of each on each device
// plus a member's full training step (forward, gradients, AdamW) in bench/results/gpu.json. Without a usable
// CUDA provider it stops at once with checkCuda's message naming what is missing.
import { checkCuda, ort, type Device } from '../engine/runtime.ts';
import { loadDataset } from '../engine/data/datasets.ts';
import { TensorSet } from '../engine/model/params.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import { SIMCLR_RECIPE } from '../engine/train/train-simclr.ts';
import {
  DataParallelPlan,
  buildGroupedReferenceGraph,
  buildCnnShardGraph,
  shardInputs,
  modelSpecs,
  type DataParallelSpec,
  type BuiltGraph,
} from '../engine/train/data-parallel.ts';
import { benchTrain } from './throughput.ts';
import { median } from './stats.ts';

export const GRADIENT_TOLERANCE = 1e-4;

export interface GpuCheckOptions {
  /** The device checked against the CPU: cuda (cpu only to test this script on a machine without a GPU). */
  device: Device;
  batchSize: number;
  iters: number;
  threads: number;
  log: (line: string) => void;
}

/** The per-tensor relative L2 error of `got` against `want`: the largest, and the tensor it is in. */
export function worstRelativeError(names: string[], got: Float32Array[], want: Float32Array[]) {
  let worst = { tensor: '', error: -1 };
  names.forEach((name, i) => {
    const a = got[i],
      b = want[i];
    if (!a || !b || a.length !== b.length)
      throw new Error(`gradient ${name}: ${a?.length} values against ${b?.length}`);
    let d = 0,
      n = 0;
    for (let k = 0; k < a.length; k++) {
      d += (a[k] - b[k]) ** 2;
      n += b[k] * b[k];
    }
    const error = Math.sqrt(d) / Math.max(Math.sqrt(n), 1e-30);
    // NaN (a broken kernel) is the worst of all: nothing replaces it (x > NaN is false), and NaN <= tolerance is false
    if (Number.isNaN(error) || error > worst.error) worst = { tensor: name, error };
  });
  return worst;
}

function dpSpec(model: 'cnn' | 'simclr', batch: number): DataParallelSpec {
  const recipe = model === 'cnn' ? { ...RECIPES.fleet, batchSize: batch } : { ...SIMCLR_RECIPE, batchSize: batch };
  return {
    kind: 'data-parallel',
    model,
    shards: model === 'cnn' ? 1 : 2,
    epochs: 1,
    batchSize: batch,
    recipe,
    seed: 7,
    dataset: 'mnist',
    limitTrain: batch,
    valFraction: 0,
    probeEpochs: 1,
  };
}

/** One step's feeds for a graph of the plan's shards (x.<s>, masks, labels), named as the graph expects. */
function stepFeeds(spec: DataParallelSpec, graph: BuiltGraph, prefixed: boolean) {
  const data = loadDataset('mnist');
  const plan = new DataParallelPlan(spec, data.train.count);
  const sizes = plan.shardSizes(0);
  const feeds: Record<string, ort.Tensor> = {};
  sizes.forEach((n, s) => {
    const mine = graph.masks.filter(m => !prefixed || m.name.startsWith(`mask.${s}.`));
    const inp = shardInputs(plan, data.train, 0, s, mine);
    const views = spec.model === 'cnn' ? n : 2 * n;
    feeds[prefixed ? `x.${s}` : 'x'] = new ort.Tensor('float32', inp.x, [views, 1, 28, 28]);
    mine.forEach((m, i) => (feeds[m.name] = new ort.Tensor('float32', inp.masks[i], m.shape)));
    if (spec.model === 'cnn') feeds[prefixed ? `labels.${s}` : 'labels'] = new ort.Tensor('int64', inp.labels, [n]);
  });
  return { feeds, images: sizes.reduce((a, b) => a + b, 0) };
}

/** The gradients of one step of `graph` on a device, and the median time of `iters` more runs. */
async function runOn(spec: DataParallelSpec, graph: BuiltGraph, prefixed: boolean, device: Device, o: GpuCheckOptions) {
  const specs = modelSpecs(spec.model);
  const runner = new ModelRunner(TensorSet.init(specs.params, 11), TensorSet.init(specs.buffers, 11), {
    device,
    threads: o.threads,
  });
  const { feeds, images } = stepFeeds(spec, graph, prefixed);
  try {
    const first = await runner.run('check', () => graph.model, feeds);
    const grads = runner.grads(first).map(g => g.slice());
    const ms: number[] = [];
    for (let i = 0; i < o.iters; i++) {
      const t0 = performance.now();
      await runner.run('check', () => graph.model, feeds);
      ms.push(performance.now() - t0);
    }
    const step = median(ms);
    return {
      grads,
      names: runner.params.names,
      step_ms_median: round(step),
      images_per_second: Math.round(images / (step / 1000)),
    };
  } finally {
    await runner.release();
  }
}

async function compare(what: string, spec: DataParallelSpec, graph: BuiltGraph, prefixed: boolean, o: GpuCheckOptions) {
  o.log(`${what}: CPU`);
  const cpu = await runOn(spec, graph, prefixed, 'cpu', o);
  o.log(`${what}: ${o.device}`);
  const dev = await runOn(spec, graph, prefixed, o.device, o);
  const worst = worstRelativeError(cpu.names, dev.grads, cpu.grads);
  return {
    batch: spec.batchSize,
    shards: spec.shards,
    worst_gradient_error: worst.error,
    worst_tensor: worst.tensor,
    within_tolerance: worst.error <= GRADIENT_TOLERANCE,
    cpu: { step_ms_median: cpu.step_ms_median, images_per_second: cpu.images_per_second },
    [o.device === 'cpu' ? 'device' : o.device]: {
      step_ms_median: dev.step_ms_median,
      images_per_second: dev.images_per_second,
    },
  };
}

export async function gpuCheck(o: GpuCheckOptions) {
  if (o.device === 'cuda') checkCuda(); // throws naming the missing provider or library
  const simclr = dpSpec('simclr', o.batchSize);
  const dataParallel = await compare(
    'data-parallel SimCLR step',
    simclr,
    buildGroupedReferenceGraph(simclr, new DataParallelPlan(simclr, loadDataset('mnist').train.count).shardSizes(0)),
    true,
    o,
  );
  const cnn = dpSpec('cnn', o.batchSize);
  const member = await compare('ensemble member CNN step', cnn, buildCnnShardGraph(o.batchSize, o.batchSize), false, o);
  o.log('ensemble member training step (AdamW), throughput');
  const train = async (device: Device) =>
    benchTrain({ batchSize: o.batchSize, warmup: 2, iters: o.iters, runtime: { device, threads: o.threads } });
  const trainCpu = await train('cpu'),
    trainDev = await train(o.device);
  return {
    device: o.device,
    tolerance: GRADIENT_TOLERANCE,
    ok: dataParallel.within_tolerance && member.within_tolerance,
    data_parallel_simclr: dataParallel,
    ensemble_member_cnn: member,
    member_training_images_per_second: {
      cpu: trainCpu.train_images_per_second,
      [o.device === 'cpu' ? 'device' : o.device]: trainDev.train_images_per_second,
    },
  };
}

const round = (x: number) => Math.round(x * 10) / 10;
