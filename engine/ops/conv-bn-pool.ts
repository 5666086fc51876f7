// The first conv block of a training graph as one unit: conv (im2col) -> BatchNorm (training mode) -> 2x2 max
// pool with stride 2, for a layer whose input gradient is not needed (its input is the image). Measured faster
// than the separate ops on ONNX Runtime (see docs/design.md / the README's speed section) because:
// - BatchNorm is a per-channel map t -> a * t + c; multiplying each channel's weights by sign(gamma) makes
//   a = |gamma| * invstd >= 0, so it commutes with the max: the pool runs on the conv output, and only the
//   pooled quarter is normalised;
// - the im2col matrix is built per window parity (a, b) (output rows 2i+a, columns 2j+b): four MatMuls give the
//   four elements of every pool window as four tensors, and the pool is an elementwise Max of them;
// - the batch statistics and the weight gradient's BatchNorm terms come from the K x K Gram matrix of the im2col
//   matrix (sum z = W colsum, sum z^2 = rowsum(W G * W), sum dz cols = R cols^T + c1 * W G + c0 colsum), so no
//   full-size pass over the conv output is needed beyond the pool (K = 9 for one input channel).
// Gradients are routed to the first maximum of each window, like PyTorch.
import { Graph, type Value } from '../graph/graph.ts';
import { normScaleSign, type BatchNormOptions } from './batchnorm.ts';

export interface ConvBnPoolOptions extends BatchNormOptions {
  pad?: number;
}

/**
 * x [C, N, H, W] (CNHW), w [O, C, kh, kw] (stride 1, no bias: BatchNorm cancels it), BatchNorm parameters and
 * running statistics [O] -> y [O, N, Ho/2, Wo/2] = MaxPool2x2(BatchNorm(conv(x, w))), and the running statistics
 * updated as PyTorch does. The conv output size must be even. There is no gradient for x.
 */
export function convBatchNormMaxPoolCNHW(
  g: Graph,
  x: Value,
  w: Value,
  gamma: Value,
  beta: Value,
  runMean: Value,
  runVar: Value,
  opts: ConvBnPoolOptions = {},
): { y: Value; mean: Value; variance: Value } {
  const p = opts.pad ?? 0,
    eps = opts.eps ?? 1e-5,
    momentum = opts.momentum ?? 0.1;
  const [C, N, H, W] = x.shape,
    [O, C2, kh, kw] = w.shape;
  if (C !== C2) throw new Error(`conv-bn-pool: input has ${C} channels, weight expects ${C2}`);
  const Ho = H + 2 * p - kh + 1,
    Wo = W + 2 * p - kw + 1;
  if (Ho < 2 || Wo < 2 || Ho % 2 || Wo % 2)
    throw new Error(`conv-bn-pool: the conv output ${Ho}x${Wo} must be even (2x2 pool)`);
  const h = Ho / 2,
    wo = Wo / 2,
    K = kh * kw * C,
    Q = N * h * wo,
    M = 4 * Q;
  const col = (v: Value) => g.reshape(v, [O, 1]);
  // two-stage sums over a [rows, N*h*wo] matrix (one ReduceSum over a long axis loses precision in ONNX Runtime)
  const rowSum = (g2: Graph, t: Value) =>
    g2.reduceSum(g2.reduceSum(g2.reshape(t, [t.shape[0], N, h * wo]), [2], false), [1], false);
  let cols!: Value[],
    z!: Value[],
    P!: Value,
    wm!: Value,
    sign!: Value,
    gram!: Value,
    colSum!: Value,
    mean!: Value,
    invstd!: Value,
    a!: Value;

  const [y, newMean, newVar] = g.composite(
    'conv-batchnorm-maxpool',
    [x, w, gamma, beta, runMean, runVar],
    () => {
      sign = normScaleSign(g, gamma);
      // rows ordered (i, j, c): matches the weight transposed to [O, kh, kw, C]
      wm = g.mul(g.reshape(g.transpose(w, [0, 2, 3, 1]), [O, K]), col(sign));
      const xp = p > 0 ? g.pad(x, [0, 0, p, p, 0, 0, p, p]) : x;
      cols = [];
      for (let pa = 0; pa < 2; pa++) {
        for (let pb = 0; pb < 2; pb++) {
          const patches: Value[] = [];
          for (let i = 0; i < kh; i++) {
            for (let j = 0; j < kw; j++) {
              patches.push(g.slice(xp, [pa + i, pb + j], [pa + i + 2 * h - 1, pb + j + 2 * wo - 1], [2, 3], [2, 2]));
            }
          }
          cols.push(g.reshape(g.concat(patches, 0), [K, Q]));
        }
      }
      z = cols.map(c => g.matmul(wm, c));
      P = g.node('Max', z);
      gram = g.sum(cols.map(c => g.gemm(c, c, null, { transB: true })));
      colSum = g.sum(cols.map(c => rowSum(g, c)));
      const invM = g.scalar(1 / M);
      mean = g.mul(g.reshape(g.matmul(wm, g.reshape(colSum, [K, 1])), [O]), invM);
      const sumSq = g.reduceSum(g.mul(g.matmul(wm, gram), wm), [1], false);
      const variance = g.relu(g.sub(g.mul(sumSq, invM), g.mul(mean, mean)));
      invstd = g.reciprocal(g.sqrt(g.add(variance, g.scalar(eps))));
      a = g.mul(g.mul(gamma, sign), invstd);
      const out = g.add(g.mul(P, col(a)), col(g.sub(beta, g.mul(a, mean))));
      const keep = g.scalar(1 - momentum);
      const nm = g.add(g.mul(runMean, keep), g.mul(g.mul(mean, sign), g.scalar(momentum)));
      const nv = g.add(g.mul(runVar, keep), g.mul(variance, g.scalar((momentum * M) / (M - 1))));
      return [g.reshape(out, [O, N, h, wo]), nm, nv];
    },
    () =>
      (g2, [dy], needed) => {
        if (needed[0]) throw new Error('conv-bn-pool: no gradient for the input (use it for a first layer only)');
        const dq = g2.reshape(dy!, [O, Q]);
        const invM = g2.scalar(1 / M);
        const sdy = rowSum(g2, dq);
        const sdyzhat = g2.mul(invstd, g2.sub(rowSum(g2, g2.mul(dq, P)), g2.mul(mean, sdy)));
        let gw: Value | null = null;
        if (needed[1]) {
          // the first maximum of each window takes the gradient: R_k = dPa where z_k is the max and no earlier one is
          const dPa = g2.mul(dq, col(a)),
            zero = g2.scalar(0);
          const routed: Value[] = [];
          let rest = dPa;
          for (let k = 0; k < 3; k++) {
            const isMax = g2.equal(z[k], P);
            routed.push(g2.where(isMax, rest, zero));
            rest = g2.where(isMax, zero, rest);
          }
          routed.push(rest);
          const c1 = g2.neg(g2.mul(g2.mul(a, invstd), g2.mul(sdyzhat, invM)));
          const c0 = g2.sub(g2.neg(g2.mul(a, g2.mul(sdy, invM))), g2.mul(c1, mean));
          // sum over m of dz[o, m] cols[k, m], with dz = R + c1 * z + c0
          const gwm = g2.sum([
            ...routed.map((r, k) => g2.gemm(r, cols[k], null, { transB: true })),
            g2.mul(g2.matmul(wm, gram), col(c1)),
            g2.mul(col(c0), g2.reshape(colSum, [1, K])),
          ]);
          gw = g2.transpose(g2.reshape(g2.mul(gwm, col(sign)), [O, kh, kw, C]), [0, 3, 1, 2]);
        }
        return [null, gw, needed[2] ? g2.mul(sign, sdyzhat) : null, needed[3] ? sdy : null, null, null];
      },
  );
  return { y, mean: newMean, variance: newVar };
}
