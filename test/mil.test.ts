// Attention MIL: the ReduceMax rule and masked BatchNorm (engine/ops) against finite differences, masked BatchNorm
// against BatchNorm on the real samples only, the model's architecture (Ilse et al. 2018's encoder, no BatchNorm or
// dropout), invariance of the padded-bag graphs to the padded length (eval and training), attention weights, short
// training runs for every pooling, and the exported one-bag model against the eval graph.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointFile } from '../engine/train/train-state.ts';
import { Graph, type Value } from '../engine/graph/graph.ts';
import { gradients } from '../engine/autodiff/autodiff.ts';
import { batchNormTrainingCNHW } from '../engine/ops/batchnorm.ts';
import { milParams, milBuffers, exportMil, POOLINGS, type Pooling } from '../engine/model/mil.ts';
import { buildMilGraph, trainMil, type MilResult, type MilOptions } from '../engine/train/train-mil.ts';
import { TensorSet } from '../engine/model/params.ts';
import { makeBags, maxLength, packBags, type Bag } from '../engine/data/bags.ts';
import { loadDataset, normalise, IMAGE_SIZE, type Split } from '../engine/data/datasets.ts';
import { ort } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';
import { gradcheck, type InputSpec } from './helpers/gradcheck.ts';
import { runOnce, f32, assertClose, assertCloseScaled } from './helpers/compare.ts';

type Feeds = Record<string, ort.Tensor>;

async function check(build: (g: Graph, xs: Value[]) => Value, specs: InputSpec[], opts = {}) {
  const r = await gradcheck(build, specs, opts);
  assert.deepEqual(r.failures, [], `worst error ratio ${r.worst}`);
}

/** Values k * step for k = 0..n-1 in a random order, shifted to be centred: distinct, with gaps of `step`. */
function distinct(n: number, seed: number, step = 0.05): Float32Array {
  const v = Float32Array.from({ length: n }, (_, k) => (k - n / 2) * step);
  return new Rng(seed).shuffle(v);
}

describe('mil: gradient rules', () => {
  it('ReduceMax over one or several axes, with and without keepdims (inputs without ties)', async () => {
    // gaps of 0.05 between values, perturbations of 1e-3 * N(0,1): the argmax never changes
    await check((g, [x]) => g.reduceMax(x, [1], false), [{ shape: [3, 5, 4], data: distinct(60, 1) }], { eps: 1e-3 });
    await check((g, [x]) => g.reduceMax(x, [0, 2], true), [{ shape: [3, 5, 4], data: distinct(60, 2) }], { eps: 1e-3 });
    await check((g, [x]) => g.reduceMax(x, [-1], false), [{ shape: [2, 6], data: distinct(12, 3) }], { eps: 1e-3 });
    // used twice, after a nonlinearity
    await check(
      (g, [x]) => g.mul(g.reduceMax(g.tanh(x), [1], true), x),
      [{ shape: [4, 3], data: distinct(12, 4, 0.2) }],
      { eps: 1e-3 },
    );
  });

  it('ReduceMax shares the gradient equally among tied maxima; masked max pooling gives padding no gradient', async () => {
    const g = new Graph();
    const x = g.input('x', [2, 4]);
    const loss = g.reduceSum(g.reduceMax(x, [1], false), [0], false);
    g.output(gradients(g, loss, [x])[0], 'dx');
    const out = await runOnce(g.toModel(), { x: f32([0, 0, 0, 0, 1, 3, 3, 2], [2, 4]) });
    assert.deepEqual(Array.from(out.dx.data as Float32Array), [0.25, 0.25, 0.25, 0.25, 0, 0.5, 0.5, 0]);

    // the MIL max pooling: padded rows replaced by -1e9 before the max, even when they hold the largest values
    const g2 = new Graph();
    const h = g2.input('h', [1, 3, 2]),
      mask = g2.input('mask', [1, 3, 1]);
    const m = g2.reduceMax(g2.where(g2.greater(mask, g2.scalar(0.5)), h, g2.scalar(-1e9)), [1], false);
    const l2 = g2.reduceSum(m, [0, 1], false);
    g2.output(m, 'm');
    g2.output(gradients(g2, l2, [h])[0], 'dh');
    const o2 = await runOnce(g2.toModel(), {
      h: f32([1, -2, 3, -1, 9, 9], [1, 3, 2]),
      mask: f32([1, 1, 0], [1, 3, 1]),
    });
    assert.deepEqual(Array.from(o2.m.data as Float32Array), [3, -1]);
    assert.deepEqual(Array.from(o2.dh.data as Float32Array), [0, 0, 1, 1, 0, 0]);
  });

  it('BatchNorm (CNHW, training) with a mask: gradients of x, gamma and beta', async () => {
    const mask = Float32Array.from([1, 0, 1, 1, 0]);
    // y times the mask broadcast over the batch axis: padded samples do not reach the output (as in MIL)
    const build = (g: Graph, [x, gamma, beta, m, v, mk]: Value[]) =>
      g.mul(batchNormTrainingCNHW(g, x, gamma, beta, m, v, { mask: mk }).y, g.reshape(mk, [1, 5, 1, 1]));
    const specs: InputSpec[] = [
      { shape: [3, 5, 2, 2] },
      { shape: [3] },
      { shape: [3] },
      { shape: [3], diff: false },
      { shape: [3], positive: true, diff: false },
      { shape: [5], data: mask, diff: false },
    ];
    await check(build, specs, { directions: 3 });
    await check(build, specs, { directions: 3, seed: 7 });
    // one real sample per bag of 4 padded ones: the statistics come from a single sample (H*W values)
    const lone = Float32Array.from([0, 0, 1, 0, 0]);
    await check(
      (g, [x, gamma, beta, m, v, mk]) =>
        g.mul(batchNormTrainingCNHW(g, x, gamma, beta, m, v, { mask: mk }).y, g.reshape(mk, [1, 5, 1, 1])),
      [
        { shape: [2, 5, 3, 3] },
        { shape: [2] },
        { shape: [2] },
        { shape: [2], diff: false },
        { shape: [2], positive: true, diff: false },
        { shape: [5], data: lone, diff: false },
      ],
      { directions: 3 },
    );
  });
});

describe('mil: masked BatchNorm equals BatchNorm on the real samples only', () => {
  const C = 3,
    N = 6,
    H = 3,
    W = 2,
    HW = H * W;
  const real = [0, 2, 3, 5],
    maskArr = Array.from({ length: N }, (_, n) => (real.includes(n) ? 1 : 0));
  const Nr = real.length;
  const rng = new Rng(12);
  const xFull = new Float32Array(C * N * HW);
  for (let c = 0; c < C; c++)
    for (let n = 0; n < N; n++)
      for (let k = 0; k < HW; k++) {
        // padded samples hold large values: any leak into the statistics would show
        xFull[(c * N + n) * HW + k] = maskArr[n] ? rng.normal() * (c + 1) + c : 100 + 50 * rng.normal();
      }
  const gather = (t: ArrayLike<number>) => {
    const r = new Float32Array(C * Nr * HW);
    for (let c = 0; c < C; c++)
      real.forEach((n, j) => {
        for (let k = 0; k < HW; k++) r[(c * Nr + j) * HW + k] = t[(c * N + n) * HW + k];
      });
    return r;
  };
  const xReal = gather(xFull);
  const proj = Float32Array.from({ length: C * N * HW }, () => rng.normal());
  const params = { gamma: [1.5, -0.5, 0.8], beta: [0.1, 0.2, -0.3], rm: [0.5, -1, 2], rv: [1, 2, 0.5] };

  async function runBoth() {
    const g = new Graph('masked_bn');
    const xf = g.input('xf', [C, N, H, W]),
      xr = g.input('xr', [C, Nr, H, W]),
      mask = g.input('mask', [N]);
    const pf = g.input('pf', [C, N, H, W]),
      pr = g.input('pr', [C, Nr, H, W]);
    const [gamma, beta, rm, rv] = ['gamma', 'beta', 'rm', 'rv'].map(n => g.input(n, [C]));
    const a = batchNormTrainingCNHW(g, xf, gamma, beta, rm, rv, { mask });
    const b = batchNormTrainingCNHW(g, xr, gamma, beta, rm, rv);
    // losses: padded outputs masked out (their projection weights pf are zero there anyway)
    const la = g.reduceSum(g.mul(g.mul(a.y, g.reshape(mask, [1, N, 1, 1])), pf), [0, 1, 2, 3], false);
    const lb = g.reduceSum(g.mul(b.y, pr), [0, 1, 2, 3], false);
    const [dxa, dga, dba] = gradients(g, la, [xf, gamma, beta]);
    const [dxb, dgb, dbb] = gradients(g, lb, [xr, gamma, beta]);
    Object.entries({
      ya: a.y,
      ma: a.mean,
      va: a.variance,
      yb: b.y,
      mb: b.mean,
      vb: b.variance,
      dxa,
      dga,
      dba,
      dxb,
      dgb,
      dbb,
    }).forEach(([name, v]) => g.output(v, name));
    const feeds: Feeds = {
      xf: f32(xFull, [C, N, H, W]),
      xr: f32(xReal, [C, Nr, H, W]),
      mask: f32(maskArr, [N]),
      pf: f32(proj, [C, N, H, W]),
      pr: f32(gather(proj), [C, Nr, H, W]),
      gamma: f32(params.gamma, [C]),
      beta: f32(params.beta, [C]),
      rm: f32(params.rm, [C]),
      rv: f32(params.rv, [C]),
    };
    const out = await runOnce(g.toModel(), feeds);
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  }

  it('y at the real samples and the running statistics are the same', async () => {
    const o = await runBoth();
    assertClose(gather(o.ya), o.yb, 'y at real samples', { rtol: 1e-5, atol: 1e-5 });
    assertClose(o.ma, o.mb, 'running mean', { rtol: 1e-5, atol: 1e-6 });
    assertClose(o.va, o.vb, 'running variance', { rtol: 1e-5, atol: 1e-6 });
    // and they are what PyTorch would compute: 0.9 * running + 0.1 * batch statistic (unbiased variance)
    for (let c = 0; c < C; c++) {
      const vals = Array.from(xReal.subarray(c * Nr * HW, (c + 1) * Nr * HW));
      const mean = vals.reduce((s, v) => s + v, 0) / vals.length;
      const unbiased = vals.reduce((s, v) => s + (v - mean) ** 2, 0) / (vals.length - 1);
      assert.ok(Math.abs(o.ma[c] - (0.9 * params.rm[c] + 0.1 * mean)) < 1e-5, `running mean ${c}`);
      assert.ok(
        Math.abs(o.va[c] - (0.9 * params.rv[c] + 0.1 * unbiased)) < 1e-4 * (1 + unbiased),
        `running variance ${c}`,
      );
    }
  });

  it('gradients: same dgamma, dbeta and dx at real samples; zero dx at padded samples', async () => {
    const o = await runBoth();
    assertClose(o.dga, o.dgb, 'dgamma', { rtol: 1e-4, atol: 1e-5 });
    assertClose(o.dba, o.dbb, 'dbeta', { rtol: 1e-4, atol: 1e-5 });
    assertClose(gather(o.dxa), o.dxb, 'dx at real samples', { rtol: 1e-4, atol: 1e-5 });
    for (let c = 0; c < C; c++)
      for (let n = 0; n < N; n++)
        if (!maskArr[n]) {
          for (let k = 0; k < HW; k++)
            assert.ok(o.dxa[(c * N + n) * HW + k] === 0, `dx at padded sample ${n}: ${o.dxa[(c * N + n) * HW + k]}`);
        }
  });
});

// ---- padded bags through the MIL graphs ----

/** Three bags of lengths 3, 6 and 1 from the test split (one positive for target 9 or not, it does not matter here). */
const BAGS: Bag[] = [[0, 1, 2], [3, 4, 5, 6, 7, 8], [9]].map(ix => ({
  indices: Uint32Array.from(ix),
  label: (ix.length % 2) as 0 | 1,
  instanceLabels: new Uint8Array(ix.length),
}));

function packed(split: Split, bags: Bag[], L: number): Feeds {
  const u8 = new Uint8Array(bags.length * L * IMAGE_SIZE),
    mask = new Float32Array(bags.length * L);
  packBags(split, bags, L, u8, mask);
  return {
    x: f32(normalise(u8, new Float32Array(u8.length)), [bags.length * L, 1, 28, 28]),
    mask: f32(mask, [bags.length, L]),
    labels: f32(
      bags.map(b => b.label),
      [bags.length],
    ),
  };
}

function weightFeeds(params: TensorSet, buffers: TensorSet): Feeds {
  const feeds: Feeds = {};
  for (const set of [params, buffers])
    set.names.forEach((n, i) => {
      feeds[n] = new ort.Tensor('float32', set.data[i], set.shapes[i]);
    });
  return feeds;
}

/** Random parameters (the model has no buffers: the empty set is still fed, as the trainer does). */
function weights(pooling: Pooling, seed: number): { params: TensorSet; buffers: TensorSet } {
  return { params: TensorSet.init(milParams(pooling), seed), buffers: TensorSet.init(milBuffers(), 0) };
}

/** Attention [bags, L] of the real instances of each bag, and a check that padding gets exactly zero and rows sum to 1. */
function realAttention(att: Float32Array, bags: Bag[], L: number, what: string): number[][] {
  return bags.map((b, k) => {
    const n = b.indices.length;
    const row = Array.from(att.subarray(k * L, (k + 1) * L));
    row.slice(n).forEach((v, i) => assert.equal(v, 0, `${what}: bag ${k} padded slot ${n + i} has weight ${v}`));
    const real = row.slice(0, n);
    real.forEach(v => assert.ok(v > 0 && v <= 1, `${what}: bag ${k} weight ${v}`));
    const s = real.reduce((a, v) => a + v, 0);
    assert.ok(Math.abs(s - 1) < 1e-5, `${what}: bag ${k} weights sum to ${s}`);
    return real;
  });
}

describe("mil: the model is Ilse et al. 2018's (no BatchNorm, no dropout)", () => {
  // conv 5x5 1->20, conv 5x5 20->50, Linear 800->500, attention 500->128(->128 gate)->1, classifier 500->1
  const encoder = 20 * 25 + 20 + (50 * 20 * 25 + 50) + (800 * 500 + 500);
  const expected: Record<Pooling, number> = {
    attention: encoder + (500 * 128 + 128) + (128 + 1) + (500 + 1),
    gated: encoder + 2 * (500 * 128 + 128) + (128 + 1) + (500 + 1),
    mean: encoder + (500 + 1),
    max: encoder + (500 + 1),
  };
  for (const pooling of POOLINGS) {
    it(`${pooling}: parameter count ${expected[pooling]}, no buffers, no Dropout; the export takes one input`, async () => {
      const params = TensorSet.init(milParams(pooling), 1);
      assert.equal(
        params.data.reduce((n, a) => n + a.length, 0),
        expected[pooling],
      );
      assert.deepEqual(milBuffers(), []);
      const model = exportMil(params, TensorSet.init(milBuffers(), 0), pooling);
      const session = await ort.InferenceSession.create(model);
      assert.deepEqual(session.inputNames, ['input']);
      // op types are plain strings in the ONNX protobuf
      const text = new TextDecoder('latin1').decode(buildMilGraph(pooling, 2, 3, true, 0));
      assert.ok(!text.includes('Dropout'), 'the training graph has no Dropout');
      assert.ok(text.includes('grad.conv2.bias'), "sanity: the text holds the graph's names");
    });
  }
});

describe('mil: padded bags', function () {
  let test: Split;
  before(() => {
    test = loadDataset('mnist').test;
  });
  const L0 = maxLength(BAGS);

  for (const pooling of POOLINGS) {
    it(`${pooling}: eval graph is invariant to the padded length; attention sums to 1 on real instances, 0 on padding`, async () => {
      const { params, buffers } = weights(pooling, 5);
      const w = weightFeeds(params, buffers);
      const runAt = (L: number) =>
        runOnce(buildMilGraph(pooling, BAGS.length, L, false, 0), { ...w, ...packed(test, BAGS, L) });
      const a = await runAt(L0),
        b = await runAt(L0 + 5);
      const pa = a.probability.data as Float32Array,
        pb = b.probability.data as Float32Array;
      assertClose(pb, pa, 'bag probabilities', { rtol: 1e-5, atol: 1e-6 });
      assertClose(a.loss.data as Float32Array, b.loss.data as Float32Array, 'loss', { rtol: 1e-5, atol: 1e-6 });
      if (pooling === 'max') {
        assert.equal(a.attention, undefined, 'max pooling has no attention output');
      } else {
        const ra = realAttention(a.attention.data as Float32Array, BAGS, L0, `L=${L0}`);
        const rb = realAttention(b.attention.data as Float32Array, BAGS, L0 + 5, `L=${L0 + 5}`);
        assertClose(rb.flat(), ra.flat(), 'attention on real instances', { rtol: 1e-5, atol: 1e-6 });
        if (pooling === 'mean')
          ra.forEach((r, k) => r.forEach(v => assert.ok(Math.abs(v - 1 / BAGS[k].indices.length) < 1e-6)));
        // a single-instance bag puts all its weight on that instance
        assert.ok(Math.abs(ra[2][0] - 1) < 1e-6);
      }
      // eval mode: each bag on its own, unpadded, gives the same probability as in the padded batch
      for (const [k, bag] of BAGS.entries()) {
        const n = bag.indices.length;
        const one = await runOnce(buildMilGraph(pooling, 1, n, false, 0), { ...w, ...packed(test, [bag], n) });
        assertClose(one.probability.data as Float32Array, [pa[k]], `bag ${k} alone`, { rtol: 1e-5, atol: 1e-6 });
      }
    });
  }

  for (const pooling of POOLINGS) {
    it(`${pooling}: training graph: same loss and parameter gradients at two padded lengths; equals the eval graph`, async () => {
      const { params, buffers } = weights(pooling, 6);
      const w = weightFeeds(params, buffers);
      const runAt = (L: number) =>
        runOnce(buildMilGraph(pooling, BAGS.length, L, true, 0), { ...w, ...packed(test, BAGS, L) });
      const a = await runAt(L0),
        b = await runAt(L0 + 5);
      const data = (o: typeof a, k: string) => o[k].data as Float32Array;
      assertClose(data(b, 'loss'), data(a, 'loss'), 'loss', { rtol: 1e-5, atol: 1e-6 });
      assertClose(data(b, 'probability'), data(a, 'probability'), 'probability', { rtol: 1e-5, atol: 1e-6 });
      for (const name of params.names) {
        const ga = data(a, `grad.${name}`),
          gb = data(b, `grad.${name}`);
        assert.ok(ga.every(Number.isFinite), `grad.${name} is finite`);
        assertCloseScaled(gb, ga, `grad.${name}`, 1e-4);
      }
      // no BatchNorm and no dropout: the training graph computes what the eval graph does
      const e = await runOnce(buildMilGraph(pooling, BAGS.length, L0, false, 0), { ...w, ...packed(test, BAGS, L0) });
      assertClose(data(a, 'probability'), data(e, 'probability'), 'training vs eval probability', {
        rtol: 1e-5,
        atol: 1e-6,
      });
      // the check has teeth: with the padding marked as real (mask all ones), the bag probabilities change
      const f = packed(test, BAGS, L0 + 5);
      f.mask = f32(new Float32Array(BAGS.length * (L0 + 5)).fill(1), [BAGS.length, L0 + 5]);
      const c = await runOnce(buildMilGraph(pooling, BAGS.length, L0 + 5, true, 0), { ...w, ...f });
      const dp = Math.max(...data(c, 'probability').map((v, i) => Math.abs(v - data(a, 'probability')[i])));
      assert.ok(dp > 1e-4, `padding counted as real should change some bag's probability (max change ${dp})`);
    });
  }
});

// ---- training and export ----

describe('mil: training on a few bags and the exported model', function () {
  let data: { train: Split; test: Split };
  const results = new Map<Pooling, MilResult>();
  const base = (pooling: Pooling): MilOptions => ({
    pooling,
    epochs: 2,
    seed: 4,
    bags: 12,
    testBags: 20,
    bagMean: 5,
    bagStd: 1,
    target: 9,
    train: data.train,
    test: data.test,
    runtime: { threads: 1 },
  });

  before(async function () {
    data = loadDataset('mnist');
    for (const pooling of POOLINGS) results.set(pooling, await trainMil(base(pooling)));
  });

  for (const pooling of POOLINGS) {
    it(`${pooling}: trains 2 epochs; AUC in [0, 1]; one attention weight per instance${pooling === 'max' ? ' (null for max)' : ''}`, () => {
      const r = results.get(pooling)!;
      assert.deepEqual(
        r.history.map(h => h.epoch),
        [1, 2],
      );
      for (const h of r.history) {
        for (const k of ['train_loss', 'train_accuracy', 'test_loss', 'test_accuracy', 'lr'] as const)
          assert.ok(Number.isFinite(h[k]), `epoch ${h.epoch} ${k} = ${h[k]}`);
        assert.ok(h.train_accuracy >= 0 && h.train_accuracy <= 1 && h.test_accuracy >= 0 && h.test_accuracy <= 1);
      }
      const { auc, accuracy, loss, predictions } = r.test;
      assert.equal(typeof auc, 'number');
      const labels = new Set(predictions.map(p => p.label));
      if (labels.size < 2) assert.ok(Number.isNaN(auc), 'one class: AUC is NaN');
      else assert.ok(auc >= 0 && auc <= 1, `AUC ${auc}`);
      assert.ok(accuracy >= 0 && accuracy <= 1 && Number.isFinite(loss) && loss > 0);
      assert.equal(predictions.length, 20);
      for (const p of predictions) {
        assert.ok(p.probability >= 0 && p.probability <= 1);
        assert.equal(p.label, p.digits.includes(9) ? 1 : 0, 'bag label = contains the target digit');
        assert.ok(p.digits.length >= 1);
        if (pooling === 'max') assert.equal(p.attention, null);
        else {
          assert.equal(p.attention!.length, p.digits.length, 'one attention weight per instance');
          assert.ok(Math.abs(p.attention!.reduce((a, v) => a + v, 0) - 1) < 1e-5, 'weights sum to 1');
        }
      }
      // the final test metrics are those of the last epoch
      const last = r.history[r.history.length - 1];
      assert.equal(last.test_loss, loss);
      assert.equal(last.test_accuracy, accuracy);
    });
  }

  it('several bags per step (padded batches of bags in training) also trains', async () => {
    const r = await trainMil({ ...base('gated'), bagsPerStep: 5 });
    assert.equal(r.history.length, 2);
    assert.ok(r.history.every(h => Number.isFinite(h.train_loss) && Number.isFinite(h.test_loss)));
    assert.equal(r.test.predictions.length, 20);
    r.test.predictions.forEach(p => assert.equal(p.attention!.length, p.digits.length));
  });

  it('an interrupted run resumed from its checkpoint is bit-identical to the uninterrupted one', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-mil-resume-'));
    try {
      const straight = await trainMil({ ...base('attention'), epochs: 3, checkpointDir: dir });
      fs.rmSync(checkpointFile(dir, 3));
      const resumed = await trainMil({ ...base('attention'), epochs: 3, checkpointDir: dir, resume: true });
      resumed.params.data.forEach((a, i) =>
        assert.ok(
          a.every((v, k) => Object.is(v, straight.params.data[i][k])),
          `parameter ${resumed.params.names[i]} differs`,
        ),
      );
      assert.deepEqual(
        resumed.test.predictions.map(p => p.probability),
        straight.test.predictions.map(p => p.probability),
      );
      await assert.rejects(
        trainMil({ ...base('gated'), epochs: 3, checkpointDir: dir, resume: true }),
        /cannot resume/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('rejects invalid options with clear errors', async () => {
    await assert.rejects(trainMil({ ...base('attention'), target: 12 }), /target digit must be 0-9, got 12/);
    await assert.rejects(trainMil({ ...base('attention'), bags: 0 }), /bag count must be an integer >= 1, got 0/);
    for (const bad of [0, -1, 1.5])
      await assert.rejects(
        trainMil({ ...base('attention'), bagsPerStep: bad }),
        /bags per step must be an integer >= 1/,
      );
    await assert.rejects(trainMil({ ...base('mean'), testBags: 0 }), /bag count must be an integer >= 1, got 0/);
    await assert.rejects(trainMil({ ...base('gated'), bagMean: 0 }), /meanLength must be > 0/);
  });

  for (const pooling of POOLINGS) {
    it(`${pooling}: exportMil on one bag equals the eval graph (same weights), for several bag lengths`, async () => {
      const r = results.get(pooling)!;
      const w = weightFeeds(r.params, r.buffers);
      const model = exportMil(r.params, r.buffers, pooling, { pooling });
      for (const n of [7, 1, 3]) {
        const bag: Bag = {
          indices: Uint32Array.from({ length: n }, (_, i) => 20 + 3 * i),
          label: 0,
          instanceLabels: new Uint8Array(n),
        };
        const feeds = packed(data.test, [bag], n);
        const ref = await runOnce(buildMilGraph(pooling, 1, n, false, 0), { ...w, ...feeds });
        const out = await runOnce(model, { input: feeds.x });
        assert.deepEqual(out.probability.dims, [1]);
        assert.deepEqual(out.attention.dims, [n]);
        assertClose(
          out.probability.data as Float32Array,
          ref.probability.data as Float32Array,
          `probability (${n} instances)`,
          { rtol: 1e-4, atol: 1e-5 },
        );
        const att = out.attention.data as Float32Array;
        if (pooling === 'max') {
          // the share of the 500 pooled features each instance supplies (ties split): each in [0, 1], summing to 1
          att.forEach(v => assert.ok(v >= 0 && v <= 1, `max attention ${v}`));
          assert.ok(
            Math.abs(att.reduce((a, v) => a + v, 0) - 1) < 1e-5,
            `max attention sums to ${att.reduce((a, v) => a + v, 0)}`,
          );
          if (n === 1) assert.equal(att[0], 1);
        } else {
          assertClose(att, ref.attention.data as Float32Array, `attention (${n} instances)`, {
            rtol: 1e-4,
            atol: 1e-6,
          });
        }
      }
    });
  }

  it("exportMil reproduces the trainer's own test predictions (probability and attention) bag by bag", async () => {
    // the trainer's test bags, rebuilt from its seed (makeBags is deterministic)
    const bags = makeBags(data.test, { count: 20, meanLength: 5, stdLength: 1, target: 9, seed: 4 + 1 });
    for (const pooling of POOLINGS) {
      const r = results.get(pooling)!;
      const model = exportMil(r.params, r.buffers, pooling);
      for (const k of [0, 1, 2]) {
        const b = bags[k],
          p = r.test.predictions[k];
        assert.deepEqual(
          p.digits,
          Array.from(b.indices, j => data.test.labels[j]),
        );
        const feeds = packed(data.test, [b], b.indices.length);
        const out = await runOnce(model, { input: feeds.x });
        assertClose(out.probability.data as Float32Array, [p.probability], `${pooling} bag ${k} probability`, {
          rtol: 1e-4,
          atol: 1e-5,
        });
        if (p.attention)
          assertClose(out.attention.data as Float32Array, p.attention, `${pooling} bag ${k} attention`, {
            rtol: 1e-4,
            atol: 1e-6,
          });
      }
    }
  });
});
