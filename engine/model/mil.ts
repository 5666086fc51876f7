// Attention-based deep multiple instance learning (Ilse et al. 2018) on MNIST bags:
// conv encoder -> Linear 2048 -> 500 -> ReLU -> pooling over the bag's instances -> Linear 500 -> 1 -> sigmoid.
// Pooling: attention (tanh branch, D = 128), gated attention (tanh * sigmoid branches), mean or max.
// Bags of different lengths share one graph: instances are padded to a fixed length and a mask marks the
// real ones (padded instances get zero attention and do not enter the BatchNorm statistics).
import { Graph, type Value } from '../graph/graph.ts';
import { encoderParams, encoderBuffers, linearParams, linear, FEATURES, CHANNELS, BN_EPS, BN_MOMENTUM, DROPOUT, bakeEncoder, bakeLinear, type TrainContext } from './cnn.ts';
import { conv2dCNHW } from '../ops/conv.ts';
import { batchNormTrainingCNHW, batchNormInferenceCNHW } from '../ops/batchnorm.ts';
import type { TensorSet, TensorSpec } from './params.ts';

export const POOLINGS = ['attention', 'gated', 'mean', 'max'] as const;
export type Pooling = typeof POOLINGS[number];
export const MIL_HIDDEN = 500;
export const ATTENTION_DIM = 128;

export function milParams(pooling: Pooling): TensorSpec[] {
  const specs = [...encoderParams(), ...linearParams('fc', FEATURES, MIL_HIDDEN)];
  if (pooling === 'attention' || pooling === 'gated') {
    specs.push(...linearParams('attention.v', MIL_HIDDEN, ATTENTION_DIM));
    if (pooling === 'gated') specs.push(...linearParams('attention.u', MIL_HIDDEN, ATTENTION_DIM));
    specs.push(...linearParams('attention.w', ATTENTION_DIM, 1));
  }
  specs.push(...linearParams('classifier', MIL_HIDDEN, 1));
  return specs;
}
export const milBuffers = encoderBuffers;

/** The encoder with a mask over the batch: padded instances do not enter the BatchNorm batch statistics. */
function maskedEncoder(ctx: TrainContext, x: Value, mask: Value): Value {
  const { g } = ctx;
  const N = x.shape[0];
  let h = g.reshape(x, [1, N, 28, 28]);
  CHANNELS.forEach((_, i) => {
    const k = i + 1;
    h = conv2dCNHW(g, h, ctx.param(`conv${k}.weight`), null, { pad: 1 });
    const [gamma, beta, rm, rv] = [ctx.param(`bn${k}.weight`), ctx.param(`bn${k}.bias`), ctx.buffer(`bn${k}.running_mean`), ctx.buffer(`bn${k}.running_var`)];
    if (ctx.training) {
      const bn = batchNormTrainingCNHW(g, h, gamma, beta, rm, rv, { eps: BN_EPS, momentum: BN_MOMENTUM, mask });
      ctx.updateBuffer(`bn${k}.running_mean`, bn.mean);
      ctx.updateBuffer(`bn${k}.running_var`, bn.variance);
      h = bn.y;
    } else {
      h = batchNormInferenceCNHW(g, h, gamma, beta, rm, rv, { eps: BN_EPS });
    }
    const p = i === 2 ? 1 : 0;
    h = g.relu(g.maxPool(h, [2, 2], [2, 2], [p, p, p, p])[0]);
    h = ctx.dropout(h, DROPOUT);
  });
  return g.reshape(g.transpose(h, [1, 0, 2, 3]), [N, FEATURES]);
}

/** Attention weights [bags, L] from instance embeddings h [bags * L, 500]; masked softmax over each bag. */
function attentionWeights(g: Graph, h: Value, mask: Value, pooling: Pooling, param: (n: string) => Value | null, bags: number, L: number): Value {
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
function pool(g: Graph, h: Value, mask: Value, pooling: Pooling, param: (n: string) => Value | null, bags: number, L: number): { m: Value; weights: Value | null } {
  const h3 = g.reshape(h, [bags, L, MIL_HIDDEN]);
  if (pooling === 'max') {
    const masked = g.where(g.greater(g.reshape(mask, [bags, L, 1]), g.scalar(0.5)), h3, g.scalar(-1e9));
    return { m: g.reduceMax(masked, [1], false), weights: null };
  }
  const a = attentionWeights(g, h, mask, pooling, param, bags, L);
  return { m: g.reshape(g.matmul(g.reshape(a, [bags, 1, L]), h3), [bags, MIL_HIDDEN]), weights: a };
}

/** Bag probabilities [bags] and instance weights [bags, L] for padded bags x [bags * L, 1, 28, 28] with mask [bags, L]. */
export function milForward(ctx: TrainContext, x: Value, mask: Value, pooling: Pooling): { prob: Value; weights: Value | null } {
  const { g } = ctx;
  const [bags, L] = mask.shape;
  const f = maskedEncoder(ctx, x, g.reshape(mask, [bags * L]));
  const h = ctx.dropout(g.relu(linear(ctx, f, 'fc')), DROPOUT);
  const { m, weights } = pool(g, h, mask, pooling, ctx.param, bags, L);
  const prob = g.reshape(g.sigmoid(linear(ctx, m, 'classifier')), [bags]);
  return { prob, weights };
}

/**
 * Inference model for one bag of any length: input "input" [L, 1, 28, 28] -> "probability" [1] and
 * "attention" [L] (instance weights, summing to 1; for max pooling the share of the 500 pooled features each
 * instance supplies, a tie splitting a feature equally).
 */
export function exportMil(params: TensorSet, buffers: TensorSet, pooling: Pooling, metadata: Record<string, string> = {}): Uint8Array {
  const g = new Graph(`fleet_mil_${pooling}`);
  const x = g.input('input', [4, 1, 28, 28], 'float32', { dynamicBatch: true });
  const h = g.relu(bakeLinear(g, bakeEncoder(g, x, params, buffers), params, 'fc'));
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
  return g.toModel({ docString: `fleet attention MIL (${pooling} pooling): one bag of 28x28 images normalised as (x/255 - 0.5) / 0.5`, metadata });
}
