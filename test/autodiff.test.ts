// Every gradient rule against central finite differences, on random shapes and values.
import assert from 'node:assert/strict';
import { gradcheck, type InputSpec } from './helpers/gradcheck.ts';
import { Graph, type Value } from '../engine/graph/graph.ts';
import { gradients } from '../engine/autodiff/autodiff.ts';
import { RULES } from '../engine/autodiff/rules.ts';
import { conv2dCNHW } from '../engine/ops/conv.ts';
import { batchNormTrainingCNHW, batchNormInferenceCNHW } from '../engine/ops/batchnorm.ts';
import { binaryCrossEntropy } from '../engine/losses.ts';
import { createSession, ort } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';

type Build = (g: Graph, xs: Value[]) => Value;

async function check(build: Build, specs: InputSpec[], opts = {}) {
  const r = await gradcheck(build, specs, opts);
  assert.deepEqual(r.failures, [], `worst error ratio ${r.worst}`);
}

const labels = (n: number, c: number, seed = 3) => {
  const rng = new Rng(seed);
  return BigInt64Array.from({ length: n }, () => BigInt(rng.int(c)));
};

describe('autodiff: elementwise rules', () => {
  it('Add, Sub, Mul, Div with broadcasting', async () => {
    await check((g, [a, b]) => g.add(a, b), [{ shape: [2, 3, 4] }, { shape: [3, 1] }]);
    await check((g, [a, b]) => g.sub(a, b), [{ shape: [4] }, { shape: [2, 3, 4] }]);
    await check((g, [a, b]) => g.mul(a, b), [{ shape: [2, 3, 4] }, { shape: [1, 3, 1] }]);
    await check((g, [a, b]) => g.div(a, b), [{ shape: [2, 3] }, { shape: [3], positive: true }]);
  });
  it('Neg, Exp, Log, Sqrt, Reciprocal, Tanh, Sigmoid, Relu', async () => {
    await check((g, [x]) => g.neg(x), [{ shape: [5, 2] }]);
    await check((g, [x]) => g.exp(x), [{ shape: [3, 4] }]);
    await check((g, [x]) => g.log(x), [{ shape: [3, 4], positive: true }]);
    await check((g, [x]) => g.sqrt(x), [{ shape: [7], positive: true }]);
    await check((g, [x]) => g.reciprocal(x), [{ shape: [7], positive: true }]);
    await check((g, [x]) => g.tanh(x), [{ shape: [2, 5] }]);
    await check((g, [x]) => g.sigmoid(x), [{ shape: [2, 5] }]);
    await check((g, [x]) => g.relu(x), [{ shape: [4, 6] }]);
  });
  it('Clip, Where, Expand, Sum', async () => {
    await check((g, [x]) => g.clip(x, -0.7, 0.6), [{ shape: [3, 5] }], { seed: 5 });
    await check((g, [a, b]) => g.where(g.greater(a, b), a, g.mul(b, b)), [{ shape: [3, 4] }, { shape: [4] }]);
    await check((g, [x]) => g.expand(x, [2, 3, 4]), [{ shape: [3, 1] }]);
    await check((g, [a, b, c]) => g.sum([a, b, c]), [{ shape: [2, 3] }, { shape: [3] }, { shape: [2, 1] }]);
  });
  it('sums the gradient of a tensor used several times', async () => {
    await check((g, [x]) => g.add(g.mul(x, x), g.tanh(x)), [{ shape: [6] }]);
  });
});

describe('autodiff: reductions, softmax and normalisation', () => {
  it('ReduceSum and ReduceMean over axes, with and without keepdims', async () => {
    await check((g, [x]) => g.reduceSum(x, [1], true), [{ shape: [2, 3, 4] }]);
    await check((g, [x]) => g.reduceSum(x, [0, 2], false), [{ shape: [2, 3, 4] }]);
    await check((g, [x]) => g.reduceMean(x, [-1], false), [{ shape: [2, 3, 4] }]);
  });
  it('Softmax, LogSoftmax and L2 normalisation', async () => {
    await check((g, [x]) => g.softmax(x, 1), [{ shape: [3, 5] }]);
    await check((g, [x]) => g.logSoftmax(x, -1), [{ shape: [2, 3, 4] }]);
    await check((g, [x]) => g.l2Normalize(x, 1), [{ shape: [4, 6] }]);
  });
});

describe('autodiff: shape rules', () => {
  it('Reshape, Flatten, Transpose', async () => {
    await check(
      (g, [x]) =>
        g.mul(
          g.reshape(x, [4, 6]),
          g.constant(
            Array.from({ length: 24 }, (_, i) => i / 7),
            [4, 6],
          ),
        ),
      [{ shape: [2, 3, 4] }],
    );
    await check((g, [x]) => g.tanh(g.flatten(x, 2)), [{ shape: [2, 3, 2, 2] }]);
    await check((g, [x]) => g.tanh(g.transpose(x, [2, 0, 1])), [{ shape: [2, 3, 4] }]);
  });
  it('Concat and Split', async () => {
    await check((g, [a, b]) => g.tanh(g.concat([a, b, a], 1)), [{ shape: [2, 3] }, { shape: [2, 2] }]);
    await check(
      (g, [x]) => {
        const [p, q] = g.split(x, 1, [1, 3]);
        return g.mul(g.sigmoid(p), q);
      },
      [{ shape: [2, 4, 3] }],
    );
    // an unused Split output gets a zero gradient
    await check((g, [x]) => g.tanh(g.split(x, 0, [2, 1])[1]), [{ shape: [3, 2] }]);
  });
  it('Slice with steps and Pad', async () => {
    await check((g, [x]) => g.tanh(g.slice(x, [1, 0], [4, 3], [1, 2])), [{ shape: [2, 5, 4] }]);
    await check((g, [x]) => g.tanh(g.slice(x, [0, 1], [5, 4], [1, 2], [2, 2])), [{ shape: [2, 5, 5] }]);
    await check((g, [x]) => g.tanh(g.pad(x, [0, 1, 2, 0, 2, 1])), [{ shape: [2, 3, 2] }]);
  });
});

describe('autodiff: linear algebra', () => {
  it('MatMul, 2-D and batched with broadcasting', async () => {
    await check((g, [a, b]) => g.matmul(a, b), [{ shape: [3, 4] }, { shape: [4, 5] }]);
    await check((g, [a, b]) => g.matmul(a, b), [{ shape: [2, 3, 4] }, { shape: [4, 5] }]);
  });
  it('Gemm with every transpose combination, alpha, beta and a broadcast bias', async () => {
    for (const transA of [false, true])
      for (const transB of [false, true]) {
        await check(
          (g, [a, b, c]) => g.gemm(a, b, c, { transA, transB, alpha: 0.7, beta: 1.3 }),
          [{ shape: transA ? [4, 3] : [3, 4] }, { shape: transB ? [5, 4] : [4, 5] }, { shape: [5] }],
        );
      }
  });
});

describe('autodiff: convolution, pooling, batch normalisation, dropout', () => {
  for (const [k, s, p, hw] of [
    [3, 1, 1, 6],
    [3, 2, 1, 7],
    [2, 1, 0, 5],
    [1, 1, 0, 4],
    [5, 2, 2, 9],
  ]) {
    it(`conv2d (CNHW im2col) kernel ${k} stride ${s} pad ${p} on ${hw}x${hw}`, async () => {
      await check(
        (g, [x, w, b]) => conv2dCNHW(g, x, w, b, { stride: s, pad: p }),
        [{ shape: [3, 2, hw, hw] }, { shape: [4, 3, k, k] }, { shape: [4] }],
      );
    });
  }
  it('conv2d forward equals ONNX Conv on NCHW', async () => {
    const rng = new Rng(9);
    const g = new Graph();
    const x = g.input('x', [2, 3, 7, 7]),
      w = g.input('w', [4, 3, 3, 3]);
    const ours = g.transpose(conv2dCNHW(g, g.transpose(x, [1, 0, 2, 3]), w, null, { stride: 2, pad: 1 }), [1, 0, 2, 3]);
    g.output(ours, 'ours');
    g.output(g.conv(x, w, null, { strides: [2, 2], pads: [1, 1, 1, 1] }), 'ref');
    const sess = await createSession(g.toModel());
    const r = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const out = await sess.run({
      x: new ort.Tensor('float32', r(294), [2, 3, 7, 7]),
      w: new ort.Tensor('float32', r(108), [4, 3, 3, 3]),
    });
    const a = out.ours.data as Float32Array,
      b = out.ref.data as Float32Array;
    assert.deepEqual(out.ours.dims, out.ref.dims);
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-4, `element ${i}: ${v} vs ${b[i]}`));
  });
  it('MaxPool through its indices, including the padded 7x7 -> 4x4 pool', async () => {
    await check((g, [x]) => g.maxPool(x, [2, 2], [2, 2], [0, 0, 0, 0])[0], [{ shape: [2, 3, 4, 4] }]);
    await check((g, [x]) => g.maxPool(x, [2, 2], [2, 2], [1, 1, 1, 1])[0], [{ shape: [2, 2, 7, 7] }]);
  });
  it('MaxPool routes ties to the first maximum only (like PyTorch)', async () => {
    const g = new Graph();
    const x = g.input('x', [1, 1, 2, 2]);
    const [y] = g.maxPool(x, [2, 2], [2, 2], [0, 0, 0, 0]);
    const loss = g.reduceSum(y, [0, 1, 2, 3], false);
    g.output(gradients(g, loss, [x])[0], 'dx');
    const sess = await createSession(g.toModel());
    const out = await sess.run({ x: new ort.Tensor('float32', new Float32Array([0, 0, 0, 0]), [1, 1, 2, 2]) });
    assert.deepEqual(Array.from(out.dx.data as Float32Array), [1, 0, 0, 0]);
  });
  it('batch normalisation in training mode (CNHW), all three gradients', async () => {
    await check(
      (g, [x, gamma, beta, m, v]) => batchNormTrainingCNHW(g, x, gamma, beta, m, v).y,
      [
        { shape: [3, 4, 3, 3] },
        { shape: [3] },
        { shape: [3] },
        { shape: [3], diff: false },
        { shape: [3], positive: true, diff: false },
      ],
    );
  });
  it('batch normalisation in inference mode (CNHW primitives and the ONNX op)', async () => {
    await check(
      (g, [x, gamma, beta, m, v]) => batchNormInferenceCNHW(g, x, gamma, beta, m, v),
      [
        { shape: [3, 2, 2, 2] },
        { shape: [3] },
        { shape: [3] },
        { shape: [3], diff: false },
        { shape: [3], positive: true, diff: false },
      ],
    );
    await check(
      (g, [x, gamma, beta, m, v]) => g.node('BatchNormalization', [x, gamma, beta, m, v], { epsilon: { float: 1e-5 } }),
      [
        { shape: [2, 3, 2, 2] },
        { shape: [3] },
        { shape: [3] },
        { shape: [3], diff: false },
        { shape: [3], positive: true, diff: false },
      ],
    );
  });
  it('Dropout (mask reused by the backward pass)', async () => {
    await check((g, [x]) => g.dropout(x, 0.3, 17)[0], [{ shape: [4, 8] }], { freshSession: true });
  });
});

describe('autodiff: losses', () => {
  for (const reduction of ['mean', 'sum', 'none'] as const) {
    it(`softmax cross-entropy on logits (${reduction})`, async () => {
      await check(
        (g, [z, y]) => g.softmaxCrossEntropy(z, y, reduction)[0],
        [{ shape: [5, 4] }, { shape: [5], dtype: 'int64', data: labels(5, 4) }],
      );
    });
  }
  it('binary cross-entropy on clamped probabilities', async () => {
    const t = Float32Array.from([1, 0, 1, 1, 0, 0]);
    await check(
      (g, [z, y]) => binaryCrossEntropy(g, g.sigmoid(z), y),
      [{ shape: [6] }, { shape: [6], data: t, diff: false }],
    );
  });
});

describe('autodiff: seeds and safety', () => {
  it('accepts an upstream gradient as a graph input (seed) equal to differentiating sum(y * seed)', async () => {
    const rng = new Rng(4);
    const g = new Graph();
    const x = g.input('x', [3, 4]),
      s = g.input('s', [3, 2]);
    const w = g.constant(
      Array.from({ length: 8 }, () => rng.normal()),
      [4, 2],
    );
    const y = g.tanh(g.matmul(x, w));
    g.output(gradients(g, y, [x], s)[0], 'viaSeed');
    const loss = g.reduceSum(g.mul(y, s), [0, 1], false);
    g.output(gradients(g, loss, [x])[0], 'viaLoss');
    const sess = await createSession(g.toModel());
    const r = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
    const out = await sess.run({
      x: new ort.Tensor('float32', r(12), [3, 4]),
      s: new ort.Tensor('float32', r(6), [3, 2]),
    });
    const a = out.viaSeed.data as Float32Array,
      b = out.viaLoss.data as Float32Array;
    a.forEach((v, i) => assert.ok(Math.abs(v - b[i]) < 1e-5));
  });
  it('a deliberately wrong rule is caught by the finite-difference check', async () => {
    const right = RULES.Sigmoid;
    RULES.Sigmoid = (g, n, [gy]) => [g.mul(gy!, g.value(n.outputs[0]))]; // forgets the (1 - y) factor
    try {
      const r = await gradcheck((g, [x]) => g.sigmoid(x), [{ shape: [2, 5] }]);
      assert.ok(r.failures.length > 0, 'the wrong Sigmoid rule passed the check');
    } finally {
      RULES.Sigmoid = right;
    }
  });
  it('refuses a non-scalar output without a seed and an op without a rule', () => {
    const g = new Graph();
    const x = g.input('x', [2, 2]);
    assert.throws(() => gradients(g, g.tanh(x), [x]), /not a scalar/);
    const y = g.reduceSum(g.node('Abs', [x]), [0, 1], false);
    assert.throws(() => gradients(g, y, [x]), /no gradient rule for op Abs/);
  });
});
