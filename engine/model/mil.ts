// Attention-based deep multiple instance learning (Ilse et al. 2018) on MNIST bags, with the paper's encoder:
// conv 5x5 20 -> ReLU -> MaxPool 2 -> conv 5x5 50 -> ReLU -> MaxPool 2 -> Linear 800 -> 500 -> ReLU,
// then pooling over the bag's instances -> Linear 500 -> 1 -> sigmoid.
// Pooling: attention (tanh branch, D = 128), gated attention (tanh * sigmoid branches), mean or max.
// No BatchNorm and no dropout: with one bag per step, BatchNorm's statistics come from the ~10 instances of one
// bag (whose mix of digits differs from bag to bag and from the running averages used at test time), and on
// seeds where that mismatch was large the CNN's encoder learned poorly (issue 19; README "Multiple instance
// learning"). Each instance is encoded on its own, so bags of different lengths share one graph: instances are
// padded to a fixed length and a mask gives the padded ones zero attention (and no gradient).
import { Graph, type Value } from '../graph/graph.ts';
import { linearParams, linear, bakeLinear, type TrainContext } from './cnn.ts';
import { conv2dCNHW } from '../ops/conv.ts';
import { fanInUniform, type TensorSet, type TensorSpec } from './params.ts';

export const POOLINGS = ['attention', 'gated', 'mean', 'max'] as const;
export type Pooling = (typeof POOLINGS)[number];
/** The encoder's two convolutions: output channels, 5x5 kernels, no padding (28 -> 24 -> 12 -> 8 -> 4). */
export const MIL_CONVS = [
  { name: 'conv1', in: 1, out: 20 },
  { name: 'conv2', in: 20, out: 50 },
] as const;
const KERNEL = 5;
export const MIL_FEATURES = 50 * 4 * 4;
export const MIL_HIDDEN = 500;
export const ATTENTION_DIM = 128;
/** Names the architecture in results files, so results of another model are never mixed in (bench mil-grid). */
export const MIL_MODEL = 'ilse2018: conv5x5 20, pool 2, conv5x5 50, pool 2, fc 800-500, no BatchNorm or dropout';

export function milParams(pooling: Pooling): TensorSpec[] {
  const specs: TensorSpec[] = MIL_CONVS.flatMap(c => [
    {
      name: `${c.name}.weight`,
      shape: [c.out, c.in, KERNEL, KERNEL],
      init: fanInUniform(c.in * KERNEL * KERNEL),
      decay: true,
    },
    { name: `${c.name}.bias`, shape: [c.out], init: fanInUniform(c.in * KERNEL * KERNEL) },
  ]);
  specs.push(...linearParams('fc', MIL_FEATURES, MIL_HIDDEN));
  if (pooling === 'attention' || pooling === 'gated') {
    specs.push(...linearParams('attention.v', MIL_HIDDEN, ATTENTION_DIM));
    if (pooling === 'gated') specs.push(...linearParams('attention.u', MIL_HIDDEN, ATTENTION_DIM));
    specs.push(...linearParams('attention.w', ATTENTION_DIM, 1));
  }
  specs.push(...linearParams('classifier', MIL_HIDDEN, 1));
  return specs;
}
/** The model has no buffers (no BatchNorm running statistics); kept so checkpoints and graphs share one shape. */
export const milBuffers = (): TensorSpec[] => [];

/** The encoder for a training graph, in CNHW: x [N, 1, 28, 28] -> features [N, 800]. */
function encoder(ctx: TrainContext, x: Value): Value {
  const { g } = ctx;
  const N = x.shape[0];
  let h = g.reshape(x, [1, N, 28, 28]); // NCHW with C=1 is already CNHW
  for (const c of MIL_CONVS) {
    h = conv2dCNHW(g, h, ctx.param(`${c.name}.weight`), ctx.param(`${c.name}.bias`));
    h = g.relu(g.maxPool(h, [2, 2], [2, 2], [0, 0, 0, 0])[0]); // ReLU after MaxPool: the same, on a quarter of the data
  }
  return g.reshape(g.transpose(h, [1, 0, 2, 3]), [N, MIL_FEATURES]);
}

/** The encoder baked into an inference graph: x [N, 1, 28, 28] -> features [N, 800] (NCHW Conv). */
function bakeMilEncoder(g: Graph, x: Value, params: TensorSet): Value {
  let h = x;
  for (const c of MIL_CONVS) {
    const w = g.initializer(`${c.name}.weight`, params.get(`${c.name}.weight`).slice(), [c.out, c.in, KERNEL, KERNEL]);
    const b = g.initializer(`${c.name}.bias`, params.get(`${c.name}.bias`).slice(), [c.out]);
    h = g.relu(g.conv(h, w, b, { pads: [0, 0, 0, 0] }));
    h = g.node('MaxPool', [h], {
      kernel_shape: { ints: [2, 2] },
      strides: { ints: [2, 2] },
      pads: { ints: [0, 0, 0, 0] },
    });
  }
  return g.flatten(h, 1);
}

/** Attention weights [bags, L] from instance embeddings h [bags * L, 500]; masked softmax over each bag. */
function attentionWeights(
  g: Graph,
  h: Value,
  mask: Value,
  pooling: Pooling,
  param: (n: string) => Value | null,
  bags: number,
  L: number,
): Value {
  if (pooling === 'mean') return g.div(mask, g.reduceSum(mask, [1], true));
  const lin = (x: Value, name: string) => g.gemm(x, param(`${name}.weight`)!, param(`${name}.bias`)!, { transB: true });
  let a = g.tanh(lin(h, 'attention.v'));
  if (pooling === 'gated') a = g.mul(a, g.sigmoid(lin(h, 'attention.u')));
  const logits = g.reshape(lin(a, 'attention.w'), [bags, L]);
  // padded instances get a large negative logit, hence zero weight (and zero gradient) after the softmax
  const masked = g.where(g.greater(mask, g.scalar(0.5)), logits, g.scalar(-1e9));
  return g.softmax(masked, 1);
}

/** Pools h [bags * L, 500] into bag embeddings [bags, 500]; returns them with the instance weights (null for max). */
function pool(
  g: Graph,
  h: Value,
  mask: Value,
  pooling: Pooling,
  param: (n: string) => Value | null,
  bags: number,
  L: number,
): { m: Value; weights: Value | null } {
  const h3 = g.reshape(h, [bags, L, MIL_HIDDEN]);
  if (pooling === 'max') {
    const masked = g.where(g.greater(g.reshape(mask, [bags, L, 1]), g.scalar(0.5)), h3, g.scalar(-1e9));
    return { m: g.reduceMax(masked, [1], false), weights: null };
  }
  const a = attentionWeights(g, h, mask, pooling, param, bags, L);
  return { m: g.reshape(g.matmul(g.reshape(a, [bags, 1, L]), h3), [bags, MIL_HIDDEN]), weights: a };
}

/** Bag probabilities [bags] and instance weights [bags, L] for padded bags x [bags * L, 1, 28, 28] with mask [bags, L]. */
export function milForward(
  ctx: TrainContext,
  x: Value,
  mask: Value,
  pooling: Pooling,
): { prob: Value; weights: Value | null } {
  const { g } = ctx;
  const [bags, L] = mask.shape;
  const h = g.relu(linear(ctx, encoder(ctx, x), 'fc'));
  const { m, weights } = pool(g, h, mask, pooling, ctx.param, bags, L);
  const prob = g.reshape(g.sigmoid(linear(ctx, m, 'classifier')), [bags]);
  return { prob, weights };
}

/**
 * Inference model for one bag of any length: input "input" [L, 1, 28, 28] -> "probability" [1] and
 * "attention" [L] (instance weights, summing to 1; for max pooling the share of the 500 pooled features each
 * instance supplies, a tie splitting a feature equally). The model has no buffers: `_buffers` (empty) keeps
 * the call the same as the other models' exports.
 */
export function exportMil(
  params: TensorSet,
  _buffers: TensorSet,
  pooling: Pooling,
  metadata: Record<string, string> = {},
): Uint8Array {
  const g = new Graph(`fleet_mil_${pooling}`);
  const x = g.input('input', [4, 1, 28, 28], 'float32', { dynamicBatch: true });
  const h = g.relu(bakeLinear(g, bakeMilEncoder(g, x, params), params, 'fc'));
  let m: Value, weights: Value;
  if (pooling === 'max') {
    m = g.reduceMax(h, [0], true);
    // each feature is one vote, shared among the instances that tie for its maximum
    const wins = g.cast(g.equal(h, m), 'float32');
    const shares = g.div(wins, g.reduceSum(wins, [0], true));
    weights = g.div(g.reduceSum(shares, [1], false), g.scalar(MIL_HIDDEN));
  } else if (pooling === 'mean') {
    m = g.reduceMean(h, [0], true);
    // uniform weights 1/L: the softmax of a zero per instance
    weights = g.reshape(g.softmax(g.reshape(g.mul(g.reduceSum(h, [1], false), g.scalar(0)), [1, -1]), 1), [-1]);
  } else {
    const lin = (v: Value, name: string) => bakeLinear(g, v, params, name);
    let a = g.tanh(lin(h, 'attention.v'));
    if (pooling === 'gated') a = g.mul(a, g.sigmoid(lin(h, 'attention.u')));
    weights = g.softmax(g.reshape(lin(a, 'attention.w'), [1, -1]), 1);
    m = g.matmul(weights, h);
    weights = g.reshape(weights, [-1]);
  }
  g.output(g.reshape(g.sigmoid(bakeLinear(g, m, params, 'classifier')), [1]), 'probability');
  g.output(weights, 'attention');
  return g.toModel({
    docString: `fleet attention MIL (${pooling} pooling): one bag of 28x28 images normalised as (x/255 - 0.5) / 0.5`,
    metadata,
  });
}
