// Data-parallel training, the part the coordinator, the workers and the single-process reference share: the
// job spec, which images each shard of each step gets (with its augmentation and dropout masks), and the
// graphs each side runs.
//
// The global batch of a step is split into `shards` contiguous shards; each shard is one BatchNorm group.
// Dropout masks are graph inputs drawn from (seed, step, shard) (engine/train/dropout-masks.ts) instead of
// in-graph Dropout nodes, so a shard computes exactly the same thing on whichever worker runs it: a lost
// worker's shard is recomputed elsewhere with the same result, and the single-process reference sees the
// same masks.
import { Graph, type Value } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { correctCount, supConLoss, type ContrastiveOptions } from '../losses.ts';
import { cnnParams, cnnBuffers, cnnForward, type TrainContext } from '../model/cnn.ts';
import { simclrParams, simclrBuffers, projectionForward, PROJECTION_DIM } from '../model/simclr.ts';
import type { TensorSpec } from '../model/params.ts';
import { makeSchedule, type Recipe } from './train-state.ts';
import type { Schedule } from '../optim/schedulers.ts';
import { validationSplit, epochOrder, batches, gatherImages, gatherLabels } from '../data/split.ts';
import { normalise, IMAGE_SIZE, type DatasetName, type Split } from '../data/datasets.ts';
import { twoViews } from '../data/simclr-augment.ts';
import { randomShift } from '../data/augment.ts';
import { Rng } from '../util/random.ts';
import { SEEDS } from './seeds.ts';
import { DropoutMasks, type MaskSpec } from './dropout-masks.ts';
import { size } from '../graph/graph.ts';
import { specChecker } from '../util/spec-check.ts';

export type { MaskSpec };

/** A data-parallel job as submitted to the coordinator (plain JSON). */
export interface DataParallelSpec {
  kind: 'data-parallel';
  model: 'cnn' | 'simclr';
  /** Shards of every global batch = BatchNorm groups; fixed for the job, whatever the number of workers. */
  shards: number;
  epochs: number;
  /** Global batch size (images; a SimCLR image gives two views). */
  batchSize: number;
  recipe: Recipe;
  seed: number;
  dataset: DatasetName;
  limitTrain?: number;
  limitTest?: number;
  /** CNN: share of the training images held out for validation (evaluated each epoch). */
  valFraction: number;
  /** SimCLR: SupCon, temperature, linear-probe epochs. */
  supervised?: boolean;
  temperature?: number;
  probeEpochs?: number;
}

export const modelSpecs = (model: DataParallelSpec['model']): { params: TensorSpec[]; buffers: TensorSpec[] } =>
  model === 'cnn'
    ? { params: cnnParams(), buffers: cnnBuffers() }
    : { params: simclrParams(), buffers: simclrBuffers() };

const range = (n: number) => Uint32Array.from({ length: n }, (_, i) => i);

/** Which images every step and shard trains on, and the learning rate of every step. */
export class DataParallelPlan {
  readonly trainCount: number;
  readonly train: Uint32Array;
  readonly val: Uint32Array;
  readonly itersPerEpoch: number;
  readonly totalSteps: number;
  readonly schedule: Schedule;
  private cached: { epoch: number; list: Uint32Array[] } | null = null;

  constructor(
    readonly spec: DataParallelSpec,
    datasetCount: number,
  ) {
    this.trainCount = Math.min(datasetCount, spec.limitTrain ?? Infinity);
    const split =
      spec.valFraction > 0
        ? validationSplit(this.trainCount, spec.valFraction, spec.seed)
        : { train: range(this.trainCount), val: new Uint32Array(0) };
    this.train = split.train;
    this.val = split.val;
    this.itersPerEpoch = this.epochBatches(1).length;
    if (this.itersPerEpoch === 0) {
      throw new Error(
        `data-parallel ${spec.model}: ${this.train.length} training images give no batch of at least ${this.minBatch} images (${spec.shards} shards)`,
      );
    }
    this.totalSteps = this.itersPerEpoch * spec.epochs;
    this.schedule = makeSchedule(spec.recipe, this.itersPerEpoch, spec.epochs);
  }

  /** Every shard needs an image, and the contrastive loss needs two (the last partial batch is dropped otherwise). */
  get minBatch(): number {
    return Math.max(this.spec.shards, this.spec.model === 'simclr' ? 2 : 1);
  }

  private epochBatches(epoch: number): Uint32Array[] {
    if (this.cached?.epoch !== epoch) {
      const order = epochOrder(this.train, SEEDS.order(this.spec.seed), epoch);
      this.cached = { epoch, list: batches(order, this.spec.batchSize).filter(b => b.length >= this.minBatch) };
    }
    return this.cached.list;
  }

  /** Global step (0-based) -> its epoch (1-based), batch within the epoch, and image indices. */
  batch(step: number): { epoch: number; k: number; indices: Uint32Array } {
    const epoch = Math.floor(step / this.itersPerEpoch) + 1,
      k = step % this.itersPerEpoch;
    return { epoch, k, indices: this.epochBatches(epoch)[k] };
  }

  /** The images of shard s of a batch: contiguous, the first (m mod S) shards one image larger. */
  shard(indices: Uint32Array, s: number): Uint32Array {
    const S = this.spec.shards,
      m = indices.length,
      base = Math.floor(m / S),
      extra = m % S;
    const start = s * base + Math.min(s, extra);
    return indices.subarray(start, start + base + (s < extra ? 1 : 0));
  }

  shardSizes(step: number): number[] {
    const { indices } = this.batch(step);
    return Array.from({ length: this.spec.shards }, (_, s) => this.shard(indices, s).length);
  }
}

// ---- dropout masks as graph inputs

/** A TrainContext over shared parameter/buffer inputs whose dropout multiplies by mask inputs (named with tag). */
function shardContext(
  g: Graph,
  params: Map<string, Value>,
  buffers: Map<string, Value>,
  tag: string,
  masks: MaskSpec[],
) {
  const updates = new Map<string, Value>();
  let sites = 0;
  const get = (m: Map<string, Value>, kind: string, name: string) => {
    const v = m.get(name);
    if (!v) throw new Error(`${g.name}: unknown ${kind} ${name}`);
    return v;
  };
  const ctx: TrainContext = {
    g,
    training: true,
    param: name => get(params, 'parameter', name),
    buffer: name => get(buffers, 'buffer', name),
    updateBuffer: (name, v) => {
      updates.set(name, v);
    },
    dropout: (x, p) => {
      if (p <= 0) return x;
      const spec = { name: `mask.${tag}${sites++}`, shape: x.shape, p };
      masks.push(spec);
      return g.mul(x, g.input(spec.name, x.shape));
    },
  };
  return { ctx, updates };
}

function modelInputs(g: Graph, specs: { params: TensorSpec[]; buffers: TensorSpec[] }) {
  const params = new Map<string, Value>(),
    buffers = new Map<string, Value>();
  for (const s of specs.params) params.set(s.name, g.input(s.name, s.shape));
  for (const s of specs.buffers) buffers.set(s.name, g.input(s.name, s.shape));
  return { params, buffers };
}

/** One kernel instance per graph's mask list (its memory holds that graph's masks). */
const drawers = new WeakMap<MaskSpec[], DropoutMasks>();

/** The masks (keep / (1 - p), PyTorch's inverted dropout) of shard `shard` at step `step`, as copies. */
export function dropoutMasks(specs: MaskSpec[], seed: number, step: number, shard: number): Float32Array[] {
  let d = drawers.get(specs);
  if (!d) {
    d = new DropoutMasks(specs);
    drawers.set(specs, d);
  }
  return d.draw(...SEEDS.shardMasks(seed, step, shard)).map(m => m.slice());
}

// ---- the graphs

export interface BuiltGraph {
  model: Uint8Array;
  masks: MaskSpec[];
}

/** CNN shard: loss = (sum of the shard's cross-entropies) / globalBatch, so summing the shards' losses and
 * gradients gives the mean over the global batch. Outputs loss, correct, grad.<param>, new.<buffer>. */
export function buildCnnShardGraph(n: number, globalBatch: number): BuiltGraph {
  const g = new Graph('dp_cnn_shard');
  const specs = modelSpecs('cnn'),
    masks: MaskSpec[] = [];
  const x = g.input('x', [n, 1, 28, 28]),
    labels = g.input('labels', [n], 'int64');
  const { params, buffers } = modelInputs(g, specs);
  const { ctx, updates } = shardContext(g, params, buffers, '', masks);
  const logits = cnnForward(ctx, x);
  const loss = g.mul(g.softmaxCrossEntropy(logits, labels, 'sum')[0], g.scalar(1 / globalBatch));
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  g.output(correctCount(g, logits, labels), 'correct');
  [...params.keys()].forEach((name, i) => g.output(grads[i], `grad.${name}`));
  for (const s of specs.buffers) g.output(updates.get(s.name)!, `new.${s.name}`);
  return { model: g.toModel(), masks };
}

/** SimCLR shard, first half: 2n views (the shard's first views, then its second views) -> z [2n, 128], new.<buffer>. */
export function buildSimclrForwardGraph(n: number): BuiltGraph {
  const g = new Graph('dp_simclr_forward');
  const specs = modelSpecs('simclr'),
    masks: MaskSpec[] = [];
  const x = g.input('x', [2 * n, 1, 28, 28]);
  const { params, buffers } = modelInputs(g, specs);
  const { ctx, updates } = shardContext(g, params, buffers, '', masks);
  g.output(projectionForward(ctx, x), 'z');
  for (const s of specs.buffers) g.output(updates.get(s.name)!, `new.${s.name}`);
  return { model: g.toModel(), masks };
}

/** SimCLR shard, second half: the same forward, seeded with the upstream dloss/dz [2n, 128] -> grad.<param>. */
export function buildSimclrBackwardGraph(n: number): BuiltGraph {
  const g = new Graph('dp_simclr_backward');
  const specs = modelSpecs('simclr'),
    masks: MaskSpec[] = [];
  const x = g.input('x', [2 * n, 1, 28, 28]);
  const { params, buffers } = modelInputs(g, specs);
  const { ctx } = shardContext(g, params, buffers, '', masks);
  const z = projectionForward(ctx, x);
  const seed = g.input('upstream', [2 * n, PROJECTION_DIM]);
  const grads = gradients(g, z, [...params.values()], seed);
  [...params.keys()].forEach((name, i) => g.output(grads[i], `grad.${name}`));
  return { model: g.toModel(), masks };
}

/** Where shard s's views sit in the global projection matrix [first views of all shards; second views of all shards]. */
export function viewRows(sizes: number[], s: number): { a: number; b: number; n: number } {
  const B = sizes.reduce((x, y) => x + y, 0),
    off = sizes.slice(0, s).reduce((x, y) => x + y, 0);
  return { a: off, b: B + off, n: sizes[s] };
}

/**
 * The single-process equivalent of a data-parallel step, as ONE graph: every shard's forward on its own
 * (its own BatchNorm statistics and masks, inputs x.<s>, labels.<s>, mask.<s>.<k>), the loss over the whole
 * global batch, and the gradients of the shared parameters (autodiff sums the shards' contributions).
 * Outputs loss, grad.<param>, and new.<s>.<buffer> per shard. This is what the distributed step must equal.
 */
export function buildGroupedReferenceGraph(
  spec: Pick<DataParallelSpec, 'model' | 'supervised' | 'temperature'>,
  sizes: number[],
): BuiltGraph {
  const g = new Graph(`dp_${spec.model}_reference`);
  const specs = modelSpecs(spec.model),
    masks: MaskSpec[] = [];
  const { params, buffers } = modelInputs(g, specs);
  const B = sizes.reduce((a, b) => a + b, 0);
  const newBuffers: Map<string, Value>[] = [];
  let loss: Value;
  if (spec.model === 'cnn') {
    const perShard = sizes.map((n, s) => {
      const { ctx, updates } = shardContext(g, params, buffers, `${s}.`, masks);
      newBuffers.push(updates);
      const labels = g.input(`labels.${s}`, [n], 'int64');
      return g.softmaxCrossEntropy(cnnForward(ctx, g.input(`x.${s}`, [n, 1, 28, 28])), labels, 'sum')[0];
    });
    loss = g.mul(g.sum(perShard), g.scalar(1 / B));
  } else {
    const z = sizes.map((n, s) => {
      const { ctx, updates } = shardContext(g, params, buffers, `${s}.`, masks);
      newBuffers.push(updates);
      return g.split(projectionForward(ctx, g.input(`x.${s}`, [2 * n, 1, 28, 28])), 0, [n, n]);
    });
    const all = g.concat([...z.map(v => v[0]), ...z.map(v => v[1])], 0);
    const labels = spec.supervised ? g.input('labels', [2 * B], 'int64') : null;
    loss = supConLoss(g, all, labels, contrastiveOptions(spec));
  }
  const grads = gradients(g, loss, [...params.values()]);
  g.output(loss, 'loss');
  [...params.keys()].forEach((name, i) => g.output(grads[i], `grad.${name}`));
  newBuffers.forEach((u, s) => {
    for (const b of specs.buffers) g.output(u.get(b.name)!, `new.${s}.${b.name}`);
  });
  return { model: g.toModel(), masks };
}

export const contrastiveOptions = (spec: Pick<DataParallelSpec, 'temperature'>): ContrastiveOptions =>
  spec.temperature ? { temperature: spec.temperature } : {};

// ---- a shard's inputs

export interface ShardInputs {
  n: number;
  x: Float32Array;
  labels: BigInt64Array;
  masks: Float32Array[];
}

/** The inputs of shard s of a step: CNN images (shifted as the recipe says) and labels; SimCLR two views per image. */
export function shardInputs(
  plan: DataParallelPlan,
  data: Split,
  step: number,
  s: number,
  masks: MaskSpec[],
): ShardInputs {
  const spec = plan.spec;
  const idx = plan.shard(plan.batch(step).indices, s),
    n = idx.length;
  const u8 = gatherImages(data, idx, new Uint8Array(n * IMAGE_SIZE)),
    l8 = gatherLabels(data, idx);
  const rng = new Rng(SEEDS.shardData(spec.seed, step, s));
  let x: Float32Array, labels: BigInt64Array;
  if (spec.model === 'cnn') {
    const shifted = new Uint8Array(n * IMAGE_SIZE);
    randomShift(u8, shifted, n, spec.recipe.shift, rng);
    x = normalise(shifted, new Float32Array(n * IMAGE_SIZE));
    labels = BigInt64Array.from(l8, v => BigInt(v));
  } else {
    x = new Float32Array(2 * n * IMAGE_SIZE);
    twoViews(u8, n, rng, x.subarray(0, n * IMAGE_SIZE), x.subarray(n * IMAGE_SIZE));
    labels = BigInt64Array.from([...l8, ...l8], v => BigInt(v));
  }
  return { n, x, labels, masks: dropoutMasks(masks, spec.seed, step, s) };
}

// ---- flat tensors (what travels on the bus)

export const totalSize = (specs: TensorSpec[]) => specs.reduce((n, s) => n + size(s.shape), 0);

/** Concatenates arrays into out (allocated when absent). */
export function flatten(
  arrays: Float32Array[],
  out: Float32Array = new Float32Array(arrays.reduce((n, a) => n + a.length, 0)),
): Float32Array {
  let at = 0;
  for (const a of arrays) {
    out.set(a, at);
    at += a.length;
  }
  return out;
}

/** Views of consecutive pieces of flat with the given element counts (no copy). */
export function unflatten(flat: Float32Array, sizes: number[]): Float32Array[] {
  let at = 0;
  return sizes.map(n => {
    const v = flat.subarray(at, at + n);
    at += n;
    return v;
  });
}

// ---- validation of a submitted spec (untrusted JSON)

const LIMITS = { shards: 256, epochs: 10_000, batchSize: 65_536, images: 10_000_000 };

/** Throws naming the first bad field; the coordinator and the workers both check every spec they get. */
export function validateDataParallelSpec(spec: unknown): asserts spec is DataParallelSpec {
  const { o, bad, int } = specChecker('data-parallel job spec', spec);
  if (o.kind !== 'data-parallel') throw bad('kind', o.kind, '"data-parallel"');
  if (o.model !== 'cnn' && o.model !== 'simclr') throw bad('model', o.model, 'cnn or simclr');
  int('shards', 1, LIMITS.shards);
  int('epochs', 1, LIMITS.epochs);
  int('batchSize', o.model === 'simclr' ? 2 : 1, LIMITS.batchSize);
  if ((o.batchSize as number) < (o.shards as number))
    throw bad('shards', o.shards, `at most the batch size (${o.batchSize})`);
  int('seed', 0, 2 ** 31);
  int('limitTrain', 1, LIMITS.images, true);
  int('limitTest', 1, LIMITS.images, true);
  int('probeEpochs', 1, LIMITS.epochs, true);
  if (typeof o.valFraction !== 'number' || !(o.valFraction >= 0 && o.valFraction < 1))
    throw bad('valFraction', o.valFraction, 'a number in [0, 1)');
  if (o.model === 'simclr' && o.valFraction !== 0) throw bad('valFraction', o.valFraction, '0 for SimCLR');
  if (!['mnist', 'fashion'].includes(o.dataset as string)) throw bad('dataset', o.dataset, 'mnist or fashion');
  if (o.supervised !== undefined && typeof o.supervised !== 'boolean')
    throw bad('supervised', o.supervised, 'a boolean');
  if (
    o.temperature !== undefined &&
    !(typeof o.temperature === 'number' && o.temperature > 0 && Number.isFinite(o.temperature))
  )
    throw bad('temperature', o.temperature, 'a positive number');
  if ('dataDir' in o) throw bad('dataDir', o.dataDir, 'absent (workers read their own data)');
  const r = o.recipe as Record<string, unknown> | null;
  const sched = (r?.schedule ?? null) as Record<string, unknown> | null;
  const num = (v: unknown, min: number) => typeof v === 'number' && Number.isFinite(v) && v >= min;
  if (
    typeof r !== 'object' ||
    r === null ||
    !['adam', 'adamw', 'sgd'].includes(r.optimizer as string) ||
    !num(r.lr, 0) ||
    r.lr === 0 ||
    !num(r.weightDecay, 0) ||
    typeof r.decayWeightsOnly !== 'boolean' ||
    !Number.isInteger(r.shift) ||
    !num(r.shift, 0) ||
    (r.shift as number) > 8 ||
    typeof sched !== 'object' ||
    sched === null ||
    !(sched.kind === 'warmup-cosine'
      ? num(sched.warmupFraction, 0) && (sched.warmupFraction as number) <= 1
      : sched.kind === 'step' && Number.isInteger(sched.stepSize) && num(sched.stepSize, 1) && num(sched.gamma, 0))
  ) {
    throw bad(
      'recipe',
      o.recipe,
      'a recipe (optimizer adam|adamw|sgd, lr > 0, weightDecay >= 0, decayWeightsOnly, shift 0-8, schedule warmup-cosine|step)',
    );
  }
}
