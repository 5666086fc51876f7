// The fused training blocks (BatchNorm and the 2x2 max pool computed pool-first): finite-difference checks, and
// equality with the unfused composition conv -> BatchNorm -> MaxPool (outputs, running statistics, gradients)
// on data with exact ties and BatchNorm scales of both signs.
import assert from 'node:assert/strict';
import { gradcheck, type InputSpec } from './helpers/gradcheck.ts';
import { Graph, type Value, size } from '../engine/graph/graph.ts';
import { gradients } from '../engine/autodiff/autodiff.ts';
import { conv2dCNHW } from '../engine/ops/conv.ts';
import { batchNormTrainingCNHW, batchNormMaxPoolCNHW, normScaleSign } from '../engine/ops/batchnorm.ts';
import { convBatchNormMaxPoolCNHW } from '../engine/ops/conv-bn-pool.ts';
import { createSession, ort } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';

type Build = (g: Graph, xs: Value[]) => Value;

// Each check's seed is one where no pool window's maximum changes under the finite-difference step (with other
// seeds a maximum switches and the unfused reference, BatchNorm then MaxPool, fails the check the same way).
async function check(build: Build, specs: InputSpec[], seed: number) {
  const r = await gradcheck(build, specs, { seed });
  assert.deepEqual(r.failures, [], `worst error ratio ${r.worst}`);
}

/** z = sign(gamma) * x per channel, then the fused BatchNorm + pool: the function MaxPool(BatchNorm(x)). */
function bnPool(g: Graph, x: Value, gamma: Value, beta: Value, m: Value, v: Value, pads: number) {
  const sign = normScaleSign(g, gamma);
  return batchNormMaxPoolCNHW(g, g.mul(x, g.reshape(sign, [x.shape[0], 1, 1, 1])), gamma, beta, m, v, sign, { pads });
}

const stats = (c: number): InputSpec[] => [
  { shape: [c], diff: false },
  { shape: [c], positive: true, diff: false },
];

describe('fused BatchNorm + max pool: finite differences', () => {
  it('batchNormMaxPool (pool first, sign-flipped input), unpadded and the padded 7x7 -> 4x4 pool', async () => {
    await check(
      (g, [x, ga, be, m, v]) => bnPool(g, x, ga, be, m, v, 0).y,
      [{ shape: [3, 4, 4, 4] }, { shape: [3] }, { shape: [3] }, ...stats(3)],
      1,
    );
    await check(
      (g, [x, ga, be, m, v]) => bnPool(g, x, ga, be, m, v, 1).y,
      [{ shape: [2, 3, 7, 7] }, { shape: [2] }, { shape: [2] }, ...stats(2)],
      2,
    );
  });
  it('conv + BatchNorm + pool of a first layer (parity im2col, Gram statistics): weight, scale and shift gradients', async () => {
    await check(
      (g, [x, w, ga, be, m, v]) => convBatchNormMaxPoolCNHW(g, x, w, ga, be, m, v, { pad: 1 }).y,
      [{ shape: [2, 3, 6, 6], diff: false }, { shape: [4, 2, 3, 3] }, { shape: [4] }, { shape: [4] }, ...stats(4)],
      1,
    );
    await check(
      (g, [x, w, ga, be, m, v]) => convBatchNormMaxPoolCNHW(g, x, w, ga, be, m, v).y,
      [{ shape: [1, 2, 5, 5], diff: false }, { shape: [3, 1, 2, 2] }, { shape: [3] }, { shape: [3] }, ...stats(3)],
      4,
    );
  });
  it('conv + BatchNorm + pool refuses an input gradient and an odd conv output', () => {
    const g = new Graph();
    const [x, w, ga, be, m, v] = [
      g.input('x', [1, 2, 6, 6]),
      g.input('w', [2, 1, 3, 3]),
      g.input('g', [2]),
      g.input('b', [2]),
      g.input('m', [2]),
      g.input('v', [2]),
    ];
    const { y } = convBatchNormMaxPoolCNHW(g, x, w, ga, be, m, v, { pad: 1 });
    assert.throws(() => gradients(g, g.reduceSum(y, [0, 1, 2, 3], false), [x]), /no gradient for the input/);
    assert.throws(
      () => convBatchNormMaxPoolCNHW(g, g.input('x7', [1, 2, 7, 7]), w, ga, be, m, v, { pad: 1 }),
      /must be even/,
    );
  });
});

/** Runs `outs` of a graph over named inputs. */
async function run(g: Graph, outs: Record<string, Value>, feeds: Record<string, [Float32Array, number[]]>) {
  for (const [name, v] of Object.entries(outs)) g.output(v, name);
  const sess = await createSession(g.toModel(), { threads: 1 });
  const out = await sess.run(
    Object.fromEntries(Object.entries(feeds).map(([k, [d, s]]) => [k, new ort.Tensor('float32', d, s)])),
  );
  await sess.release();
  return Object.fromEntries(Object.keys(outs).map(k => [k, out[k].data as Float32Array]));
}

function assertClose(a: Float32Array, b: Float32Array, what: string, rtol = 1e-4) {
  assert.equal(a.length, b.length, what);
  const scale = b.reduce((s, v) => Math.max(s, Math.abs(v)), 0);
  a.forEach((v, i) =>
    assert.ok(Math.abs(v - b[i]) <= rtol * scale + 1e-7, `${what}[${i}]: ${v} vs ${b[i]} (scale ${scale})`),
  );
}

describe('fused BatchNorm + max pool equal the unfused composition', () => {
  const rng = new Rng(11);
  // MNIST-like: most pixels exactly -1 (background), some exactly 1, a few in between, so pool windows tie
  const image = (n: number) =>
    Float32Array.from({ length: n }, () => {
      const u = rng.next();
      return u < 0.7 ? -1 : u < 0.85 ? 1 : rng.next() * 2 - 1;
    });
  const normal = (n: number) => Float32Array.from({ length: n }, () => rng.normal());
  const C = 1,
    N = 4,
    O = 6;
  const x = image(C * N * 28 * 28),
    w = normal(O * C * 9).map(v => v / 3);
  const gamma = Float32Array.from({ length: O }, (_, i) => (i % 3 === 1 ? -0.8 : 0.5 + 0.1 * i));
  const beta = normal(O),
    rm = normal(O),
    rv = Float32Array.from({ length: O }, () => 0.5 + rng.next());
  const proj = normal(O * N * 14 * 14);
  const feeds = {
    x: [x, [C, N, 28, 28]],
    w: [w, [O, C, 3, 3]],
    gamma: [gamma, [O]],
    beta: [beta, [O]],
    rm: [rm, [O]],
    rv: [rv, [O]],
  } as Record<string, [Float32Array, number[]]>;

  const build = (fused: 'first' | 'pool' | null) => {
    const g = new Graph();
    const [xi, wi, ga, be, m, v] = ['x', 'w', 'gamma', 'beta', 'rm', 'rv'].map(k => g.input(k, feeds[k][1]));
    let r: { y: Value; mean: Value; variance: Value };
    if (fused === 'first') r = convBatchNormMaxPoolCNHW(g, xi, wi, ga, be, m, v, { pad: 1 });
    else if (fused === 'pool') {
      const sign = normScaleSign(g, ga);
      const z = conv2dCNHW(g, xi, g.mul(wi, g.reshape(sign, [O, 1, 1, 1])), null, { pad: 1 });
      r = batchNormMaxPoolCNHW(g, z, ga, be, m, v, sign, {});
    } else {
      const bn = batchNormTrainingCNHW(g, conv2dCNHW(g, xi, wi, null, { pad: 1 }), ga, be, m, v);
      r = { y: g.maxPool(bn.y, [2, 2], [2, 2], [0, 0, 0, 0])[0], mean: bn.mean, variance: bn.variance };
    }
    const loss = g.reduceSum(g.mul(r.y, g.initializer('proj', proj, r.y.shape)), [0, 1, 2, 3], false);
    const wrt = fused === 'first' ? [wi, ga, be] : [xi, wi, ga, be];
    const grads = gradients(g, loss, wrt);
    return {
      g,
      outs: {
        y: r.y,
        mean: r.mean,
        variance: r.variance,
        ...Object.fromEntries(grads.map((d, i) => [`d_${wrt[i].name}`, d])),
      },
    };
  };

  for (const fused of ['first', 'pool'] as const) {
    it(`${fused === 'first' ? 'conv + BatchNorm + pool (first layer)' : 'sign-flipped conv, then BatchNorm + pool'}: outputs, running statistics, gradients`, async () => {
      const ref = build(null),
        ours = build(fused);
      const a = await run(ours.g, ours.outs, feeds),
        b = await run(ref.g, ref.outs, feeds);
      assert.ok(size([O, N, 14, 14]) === a.y.length);
      for (const k of Object.keys(a)) assertClose(a[k], b[k], k);
    });
  }

  for (const gammaValue of [1.5, -2]) {
    it(`a window of equal values sends its gradient to the first element, like PyTorch (gamma ${gammaValue})`, async () => {
      // window A (flat 0, 1, 4, 5) all equal; window B (2, 3, 6, 7) distinct; the loss reads window A's output only
      const xv = new Float32Array([1, 1, 0, -1, 1, 1, 2, -3]);
      const grad = async (fusedPool: boolean) => {
        const g = new Graph();
        const xi = g.input('x', [1, 1, 2, 4]),
          ga = g.input('gamma', [1]),
          be = g.input('beta', [1]);
        const y = fusedPool
          ? bnPool(g, xi, ga, be, g.constant([0]), g.constant([1]), 0).y
          : g.maxPool(
              batchNormTrainingCNHW(g, xi, ga, be, g.constant([0]), g.constant([1])).y,
              [2, 2],
              [2, 2],
              [0, 0, 0, 0],
            )[0];
        const [dx] = gradients(g, g.reduceSum(g.mul(y, g.constant([1, 0], [1, 1, 1, 2])), [0, 1, 2, 3], false), [xi]);
        return (
          await run(
            g,
            { dx },
            {
              x: [xv, [1, 1, 2, 4]],
              gamma: [new Float32Array([gammaValue]), [1]],
              beta: [new Float32Array([0.3]), [1]],
            },
          )
        ).dx;
      };
      const ours = await grad(true),
        ref = await grad(false);
      assertClose(ours, ref, 'dx', 1e-5);
      assert.ok(Math.abs(ours[0] - ours[1]) > 0.1, `the first element takes the routed gradient: ${Array.from(ours)}`);
      assert.ok(
        Math.abs(ours[1] - ours[4]) < 1e-6 && Math.abs(ours[1] - ours[5]) < 1e-6,
        `the other tied elements share only the dense part: ${Array.from(ours)}`,
      );
    });
  }
});
