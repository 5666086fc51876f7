// Batch normalisation for the CNHW layout (channel axis 0), in training mode (batch statistics plus the
// running-statistics update, PyTorch semantics) and in inference mode (running statistics).
// Reductions run in two stages (over H*W, then over N): one ReduceSum over a long contiguous axis lost
// precision in ONNX Runtime (docs/design.md).
import { Graph, type Value } from '../graph/graph.ts';

export interface BatchNormOptions {
  eps?: number;
  momentum?: number;
}

/** Per-channel sum of a [C, N, H, W] tensor -> [C]. */
function channelSum(g: Graph, t: Value): Value {
  const [C, N, H, W] = t.shape;
  return g.reduceSum(g.reduceSum(g.reshape(t, [C, N, H * W]), [2], false), [1], false);
}

/**
 * Training mode. Returns y and the updated running mean and (unbiased) variance.
 * Backward: dbeta = sum(dy), dgamma = invstd * sum(dy * xc), dx = dy * gamma * invstd + xc * c1 + c0.
 * With `mask` [N] (1 = real sample, 0 = padding, e.g. the padded instances of a batch of MIL bags) the
 * statistics cover the real samples only and padded samples get no input gradient; the upstream gradient of
 * padded samples must be zero (their outputs must not reach the loss).
 */
export function batchNormTrainingCNHW(
  g: Graph,
  x: Value,
  gamma: Value,
  beta: Value,
  runMean: Value,
  runVar: Value,
  opts: BatchNormOptions & { mask?: Value } = {},
): { y: Value; mean: Value; variance: Value } {
  const eps = opts.eps ?? 1e-5,
    momentum = opts.momentum ?? 0.1;
  const [C, N, H, W] = x.shape;
  const col = (v: Value) => g.reshape(v, [C, 1, 1, 1]);
  const weights = opts.mask ? g.reshape(opts.mask, [1, N, 1, 1]) : null;
  const inputs = [x, gamma, beta, runMean, runVar, ...(opts.mask ? [opts.mask] : [])];
  let xc!: Value, invstd!: Value, invCount!: Value;
  const [y, newMean, newVar] = g.composite(
    'batchnorm',
    inputs,
    () => {
      // count = M for a full batch, or (real samples) * H * W with a mask
      const count = opts.mask ? g.mul(g.reduceSum(opts.mask, [0], false), g.scalar(H * W)) : g.scalar(N * H * W);
      invCount = g.reciprocal(count);
      const masked = (t: Value) => (weights ? g.mul(t, weights) : t);
      const mean = g.mul(channelSum(g, masked(x)), invCount);
      xc = g.sub(x, col(mean));
      const variance = g.mul(channelSum(g, masked(g.mul(xc, xc))), invCount);
      invstd = g.reciprocal(g.sqrt(g.add(variance, g.scalar(eps))));
      const out = g.add(g.mul(xc, col(g.mul(invstd, gamma))), col(beta));
      const keep = g.scalar(1 - momentum),
        m = g.scalar(momentum);
      const nm = g.add(g.mul(runMean, keep), g.mul(mean, m));
      // unbiased variance for the running estimate: var * count / (count - 1)
      const unbias = g.div(count, g.sub(count, g.scalar(1)));
      const nv = g.add(g.mul(runVar, keep), g.mul(g.mul(variance, unbias), m));
      return [out, nm, nv];
    },
    () =>
      (g2, [dy], needed) => {
        const sdy = channelSum(g2, dy!);
        const sdyxc = channelSum(g2, g2.mul(dy!, xc));
        const dgamma = needed[1] ? g2.mul(invstd, sdyxc) : null;
        const dbeta = needed[2] ? sdy : null;
        let dx: Value | null = null;
        if (needed[0]) {
          const gi = g2.mul(gamma, invstd);
          const c1 = g2.neg(g2.mul(g2.mul(gi, g2.mul(invstd, invstd)), g2.mul(sdyxc, invCount)));
          const c0 = g2.neg(g2.mul(gi, g2.mul(sdy, invCount)));
          dx = g2.add(g2.add(g2.mul(dy!, col(gi)), g2.mul(xc, col(c1))), col(c0));
          if (weights) dx = g2.mul(dx, weights);
        }
        return [dx, dgamma, dbeta, null, null, ...(opts.mask ? [null] : [])];
      },
  );
  return { y, mean: newMean, variance: newVar };
}

/** Inference mode from primitive ops (differentiable by the generic rules). */
export function batchNormInferenceCNHW(
  g: Graph,
  x: Value,
  gamma: Value,
  beta: Value,
  runMean: Value,
  runVar: Value,
  opts: BatchNormOptions = {},
): Value {
  const C = x.shape[0];
  const col = (v: Value) => g.reshape(v, [C, 1, 1, 1]);
  const scale = g.mul(gamma, g.reciprocal(g.sqrt(g.add(runVar, g.scalar(opts.eps ?? 1e-5)))));
  return g.add(g.mul(g.sub(x, col(runMean)), col(scale)), col(beta));
}

/** +1 where gamma >= 0, else -1: multiplying a channel by it makes BatchNorm's scale gamma * invstd non-negative. */
export function normScaleSign(g: Graph, gamma: Value): Value {
  return g.where(g.greaterOrEqual(gamma, g.scalar(0)), g.scalar(1), g.scalar(-1));
}

/**
 * Training-mode BatchNorm followed by a 2x2 max pool with stride 2 (padding `pads`), computed as pool-then-normalise:
 * BatchNorm is a per-channel map t -> a * t + c, and with a >= 0 it commutes with the max. The caller passes the
 * conv output of sign-flipped weights, z = sign * x (sign = normScaleSign(gamma) per channel), so that
 * a = |gamma| * invstd >= 0; the result equals MaxPool(BatchNorm(x)) with the gradient routed to the first maximum
 * of each window (MaxPool's Indices), like PyTorch. Statistics are one-pass (E[z^2] - mean^2, two-stage
 * reductions), so only the pooled quarter is normalised. Returns the pooled output and the running statistics
 * updated as PyTorch does (mean of x = sign * mean of z).
 * Backward, with dq the gradient of the pooled output and P the pooled z: sdy = sum(dq),
 * sdyzhat = invstd * sum(dq * (P - mean)), dz = unpool(a * dq) + c1 * z + c0 with c1 = -a * invstd * sdyzhat / M
 * and c0 = -a * sdy / M - c1 * mean.
 */
export function batchNormMaxPoolCNHW(
  g: Graph,
  z: Value,
  gamma: Value,
  beta: Value,
  runMean: Value,
  runVar: Value,
  sign: Value,
  opts: BatchNormOptions & { pads?: number } = {},
): { y: Value; mean: Value; variance: Value } {
  const eps = opts.eps ?? 1e-5,
    momentum = opts.momentum ?? 0.1,
    pad = opts.pads ?? 0;
  const [C, N, H, W] = z.shape,
    M = N * H * W;
  const col = (v: Value) => g.reshape(v, [C, 1, 1, 1]);
  const poolAttrs = { kernel_shape: { ints: [2, 2] }, strides: { ints: [2, 2] }, pads: { ints: [pad, pad, pad, pad] } };
  let P!: Value, idx!: Value, mean!: Value, invstd!: Value, a!: Value;
  const [y, newMean, newVar] = g.composite(
    'batchnorm-maxpool',
    [z, gamma, beta, runMean, runVar, sign],
    () => {
      const zr = g.reshape(z, [C, N, H * W]);
      const sum = g.reduceSum(g.reduceSum(zr, [2], false), [1], false);
      const sumSq = g.reduceSum(g.node('ReduceSumSquare', [zr, g.ints([2])], { keepdims: { int: 0 } }), [1], false);
      const invM = g.scalar(1 / M);
      mean = g.mul(sum, invM);
      const variance = g.relu(g.sub(g.mul(sumSq, invM), g.mul(mean, mean)));
      invstd = g.reciprocal(g.sqrt(g.add(variance, g.scalar(eps))));
      a = g.mul(g.mul(gamma, sign), invstd);
      [P, idx] = g.maxPool(z, [2, 2], [2, 2], [pad, pad, pad, pad]);
      const out = g.add(g.mul(P, col(a)), col(g.sub(beta, g.mul(a, mean))));
      const keep = g.scalar(1 - momentum);
      const nm = g.add(g.mul(runMean, keep), g.mul(g.mul(mean, sign), g.scalar(momentum)));
      const nv = g.add(g.mul(runVar, keep), g.mul(variance, g.scalar((momentum * M) / (M - 1))));
      return [out, nm, nv];
    },
    () =>
      (g2, [dq], needed) => {
        const invM = g2.scalar(1 / M);
        const sdy = channelSum(g2, dq!);
        const sdyzhat = g2.mul(invstd, g2.sub(channelSum(g2, g2.mul(dq!, P)), g2.mul(mean, sdy)));
        let dz: Value | null = null;
        if (needed[0]) {
          const routed = g2.node(
            'MaxUnpool',
            [g2.mul(dq!, col(a)), idx, g2.ints(z.shape)],
            poolAttrs,
            undefined,
            z.shape,
          );
          const c1 = g2.neg(g2.mul(g2.mul(a, invstd), g2.mul(sdyzhat, invM)));
          const c0 = g2.sub(g2.neg(g2.mul(a, g2.mul(sdy, invM))), g2.mul(c1, mean));
          dz = g2.sum([routed, g2.mul(z, col(c1)), col(c0)]);
        }
        return [dz, needed[1] ? g2.mul(sign, sdyzhat) : null, needed[2] ? sdy : null, null, null, null];
      },
  );
  return { y, mean: newMean, variance: newVar };
}
