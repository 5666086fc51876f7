// The reference CNN: 3 conv blocks (conv3x3 -> BatchNorm -> ReLU -> MaxPool2 -> Dropout; 32/64/128 channels,
// the third pool padded so 7x7 -> 4x4), Linear 2048->625, ReLU, Dropout, Linear 625->10 (logits).
// The reference's defects are not copied: ReLU and Dropout follow the 625-unit layer, the loss takes logits.
//
// Two lowerings of the same function:
// - training graphs (train or eval mode) with parameters as graph inputs, in the CNHW layout with
//   im2col convolutions (fast on ONNX Runtime with weights as inputs, see engine/ops/conv.ts);
// - the exported inference graph: NCHW Conv with BatchNorm folded into the weights, all weights baked in
//   as initializers, a symbolic batch dimension and softmax probabilities.
import { Graph, type Value } from '../graph/graph.ts';
import { conv2dCNHW } from '../ops/conv.ts';
import { batchNormMaxPoolCNHW, batchNormInferenceCNHW, normScaleSign } from '../ops/batchnorm.ts';
import { convBatchNormMaxPoolCNHW } from '../ops/conv-bn-pool.ts';
import { TensorSet, fanInUniform, type TensorSpec } from './params.ts';

export const CHANNELS = [32, 64, 128];
export const FEATURES = 2048;
export const HIDDEN = 625;
export const CLASSES = 10;
export const DROPOUT = 0.2;
export const BN_EPS = 1e-5;
export const BN_MOMENTUM = 0.1;
/** MaxPool padding per block: the third pool pads by 1 so that 7x7 becomes 4x4. */
const POOL_PADS = [0, 0, 1];

/** Parameters of the conv encoder (shared with SimCLR and MIL). Conv biases are left out: a bias right
 * before training-mode BatchNorm is cancelled by the mean subtraction (its gradient is exactly zero). */
export function encoderParams(): TensorSpec[] {
  const specs: TensorSpec[] = [];
  let cin = 1;
  CHANNELS.forEach((c, i) => {
    specs.push({ name: `conv${i + 1}.weight`, shape: [c, cin, 3, 3], init: fanInUniform(cin * 9), decay: true });
    specs.push({ name: `bn${i + 1}.weight`, shape: [c], init: { kind: 'const', value: 1 } });
    specs.push({ name: `bn${i + 1}.bias`, shape: [c], init: { kind: 'const', value: 0 } });
    cin = c;
  });
  return specs;
}

export function encoderBuffers(): TensorSpec[] {
  return CHANNELS.flatMap((c, i) => [
    { name: `bn${i + 1}.running_mean`, shape: [c], init: { kind: 'const', value: 0 } },
    { name: `bn${i + 1}.running_var`, shape: [c], init: { kind: 'const', value: 1 } },
  ]);
}

export function linearParams(name: string, inF: number, outF: number): TensorSpec[] {
  return [
    { name: `${name}.weight`, shape: [outF, inF], init: fanInUniform(inF), decay: true },
    { name: `${name}.bias`, shape: [outF], init: fanInUniform(inF) },
  ];
}

export const cnnParams = (): TensorSpec[] => [
  ...encoderParams(),
  ...linearParams('fc1', FEATURES, HIDDEN),
  ...linearParams('fc2', HIDDEN, CLASSES),
];
export const cnnBuffers = encoderBuffers;

/** How a training graph reaches parameters, buffers and randomness. */
export interface TrainContext {
  g: Graph;
  training: boolean;
  param(name: string): Value;
  buffer(name: string): Value;
  /** Records a buffer's new value (BatchNorm running statistics in training mode). */
  updateBuffer(name: string, v: Value): void;
  /** Dropout with a distinct seed per call site. */
  dropout(x: Value, p: number): Value;
}

/** Conv encoder in CNHW: x [N, 1, 28, 28] -> features [N, 2048]. */
export function encoderForward(ctx: TrainContext, x: Value): Value {
  const { g } = ctx;
  const N = x.shape[0];
  let h = g.reshape(x, [1, N, 28, 28]); // NCHW with C=1 is already CNHW
  CHANNELS.forEach((_, i) => {
    const k = i + 1;
    const [w, gamma, beta, rm, rv] = [
      ctx.param(`conv${k}.weight`),
      ctx.param(`bn${k}.weight`),
      ctx.param(`bn${k}.bias`),
      ctx.buffer(`bn${k}.running_mean`),
      ctx.buffer(`bn${k}.running_var`),
    ];
    const p = POOL_PADS[i];
    if (ctx.training) {
      // BatchNorm and the pool fused (engine/ops/): pool first, on the conv output of sign-flipped weights
      let bn;
      if (i === 0) {
        bn = convBatchNormMaxPoolCNHW(g, h, w, gamma, beta, rm, rv, { pad: 1, eps: BN_EPS, momentum: BN_MOMENTUM });
      } else {
        const sign = normScaleSign(g, gamma);
        const z = conv2dCNHW(g, h, g.mul(w, g.reshape(sign, [w.shape[0], 1, 1, 1])), null, { pad: 1 });
        bn = batchNormMaxPoolCNHW(g, z, gamma, beta, rm, rv, sign, { eps: BN_EPS, momentum: BN_MOMENTUM, pads: p });
      }
      ctx.updateBuffer(`bn${k}.running_mean`, bn.mean);
      ctx.updateBuffer(`bn${k}.running_var`, bn.variance);
      h = bn.y;
    } else {
      h = batchNormInferenceCNHW(g, conv2dCNHW(g, h, w, null, { pad: 1 }), gamma, beta, rm, rv, { eps: BN_EPS });
      h = g.maxPool(h, [2, 2], [2, 2], [p, p, p, p])[0];
    }
    h = g.relu(h); // ReLU after MaxPool: the same function, on a quarter of the data
    h = ctx.dropout(h, DROPOUT);
  });
  return g.reshape(g.transpose(h, [1, 0, 2, 3]), [N, FEATURES]);
}

export function linear(ctx: TrainContext, x: Value, name: string): Value {
  return ctx.g.gemm(x, ctx.param(`${name}.weight`), ctx.param(`${name}.bias`), { transB: true });
}

/** The CNN's logits [N, 10] for a training graph. */
export function cnnForward(ctx: TrainContext, x: Value): Value {
  const f = encoderForward(ctx, x);
  const h = ctx.dropout(ctx.g.relu(linear(ctx, f, 'fc1')), DROPOUT);
  return linear(ctx, h, 'fc2');
}

// ---- the exported inference graph ----

/** Bakes the encoder (BatchNorm folded into the conv weights and a bias) into g: x [N,1,28,28] -> [N, 2048]. */
export function bakeEncoder(g: Graph, x: Value, params: TensorSet, buffers: TensorSet, prefix = ''): Value {
  let h = x;
  let cin = 1;
  CHANNELS.forEach((c, i) => {
    const k = i + 1;
    const w = params.get(`conv${k}.weight`),
      gamma = params.get(`bn${k}.weight`),
      beta = params.get(`bn${k}.bias`);
    const mean = buffers.get(`bn${k}.running_mean`),
      variance = buffers.get(`bn${k}.running_var`);
    const wf = new Float32Array(w.length),
      bf = new Float32Array(c);
    const per = cin * 9;
    for (let o = 0; o < c; o++) {
      const scale = gamma[o] / Math.sqrt(variance[o] + BN_EPS);
      for (let j = 0; j < per; j++) wf[o * per + j] = w[o * per + j] * scale;
      bf[o] = beta[o] - mean[o] * scale;
    }
    const wv = g.initializer(`${prefix}conv${k}.weight`, wf, [c, cin, 3, 3]);
    const bv = g.initializer(`${prefix}conv${k}.bias`, bf, [c]);
    // Conv then ReLU lets ONNX Runtime fuse the activation into the convolution
    h = g.relu(g.conv(h, wv, bv, { pads: [1, 1, 1, 1] }));
    const p = POOL_PADS[i];
    h = g.node('MaxPool', [h], {
      kernel_shape: { ints: [2, 2] },
      strides: { ints: [2, 2] },
      pads: { ints: [p, p, p, p] },
    });
    cin = c;
  });
  return g.flatten(h, 1);
}

export function bakeLinear(g: Graph, x: Value, params: TensorSet, name: string, prefix = ''): Value {
  const w = params.get(`${name}.weight`),
    b = params.get(`${name}.bias`);
  const outF = b.length;
  return g.gemm(
    x,
    g.initializer(`${prefix}${name}.weight`, w.slice(), [outF, w.length / outF]),
    g.initializer(`${prefix}${name}.bias`, b.slice(), [outF]),
    { transB: true },
  );
}

/** The CNN's logits from baked weights (for export and ensembles). */
export function bakeCnnLogits(g: Graph, x: Value, params: TensorSet, buffers: TensorSet, prefix = ''): Value {
  const f = bakeEncoder(g, x, params, buffers, prefix);
  return bakeLinear(g, g.relu(bakeLinear(g, f, params, 'fc1', prefix)), params, 'fc2', prefix);
}

/** A standalone inference model: input "input" [N,1,28,28] (normalised), outputs "probabilities" [N,10] and "logits". */
export function exportCnn(params: TensorSet, buffers: TensorSet, metadata: Record<string, string> = {}): Uint8Array {
  const g = new Graph('fleet_cnn');
  const x = g.input('input', [1, 1, 28, 28], 'float32', { dynamicBatch: true });
  const logits = bakeCnnLogits(g, x, params, buffers);
  g.output(g.softmax(logits, 1), 'probabilities');
  g.output(logits, 'logits');
  return g.toModel({ docString: 'fleet CNN for 28x28 grey images normalised as (x/255 - 0.5) / 0.5', metadata });
}
