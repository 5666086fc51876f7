// SimCLR / SupCon: the contrastive loss against an independent float64 implementation (value and gradient),
// the standalone loss graph, a short pre-training run with linear evaluation on a small MNIST subset, and
// the exported encoder + probe classifier against the encoder features followed by the probe in JS.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { checkpointFile } from '../engine/train/train-state.ts';
import { Graph } from '../engine/graph/graph.ts';
import { supConLoss, type ContrastiveOptions } from '../engine/losses.ts';
import {
  buildContrastiveLossGraph,
  trainSimclr,
  encodeImages,
  type SimclrResult,
} from '../engine/train/train-simclr.ts';
import { exportEncoder, exportSimclrClassifier, PROJECTION_DIM } from '../engine/model/simclr.ts';
import { FEATURES, CLASSES } from '../engine/model/cnn.ts';
import { loadDataset, normalise, IMAGE_SIZE, type Split } from '../engine/data/datasets.ts';
import { ort } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';
import { gradcheck } from './helpers/gradcheck.ts';
import { runOnce, f32, i64, assertClose } from './helpers/compare.ts';

// ---- an independent float64 SupCon / NT-Xent ----

/** Rows of a random [n, d] matrix, each L2-normalised, rounded to float32 (what the graph will see). */
function unitRows(n: number, d: number, seed: number): number[][] {
  const rng = new Rng(seed);
  return Array.from({ length: n }, () => {
    const v = Array.from({ length: d }, () => rng.normal());
    const norm = Math.hypot(...v);
    return v.map(x => Math.fround(x / norm));
  });
}

const dot = (a: number[], b: number[]) => a.reduce((s, x, k) => s + x * b[k], 0);

/** Positives of anchor i among 2B projections: its other view, or every other projection with its label. */
function positivesOf(i: number, n: number, labels: number[] | null): number[] {
  const B = n / 2;
  if (!labels) return [(i + B) % n];
  return Array.from({ length: n }, (_, j) => j).filter(j => j !== i && labels[j] === labels[i]);
}

/**
 * loss = -(T / baseT) * mean_i mean_{j in P(i)} [ s_ij / T - log sum_{k != i} exp(s_ik / T) ],
 * and its gradient with respect to z (z need not be normalised: s_ij = z_i . z_j).
 */
function supConJS(z: number[][], labels: number[] | null, T = 0.07, baseT = 0.07): { loss: number; grad: number[][] } {
  const n = z.length,
    d = z[0].length;
  const s = z.map(a => z.map(b => dot(a, b)));
  let total = 0;
  // G[i][k] = dloss / ds_ik
  const G = Array.from({ length: n }, () => new Array<number>(n).fill(0));
  for (let i = 0; i < n; i++) {
    const P = positivesOf(i, n, labels);
    assert.ok(P.length > 0, `anchor ${i} has no positive`);
    const others = Array.from({ length: n }, (_, k) => k).filter(k => k !== i);
    const m = Math.max(...others.map(k => s[i][k] / T));
    const sumExp = others.reduce((acc, k) => acc + Math.exp(s[i][k] / T - m), 0);
    const logDen = m + Math.log(sumExp);
    total += P.reduce((acc, j) => acc + s[i][j] / T - logDen, 0) / P.length;
    const scale = -(T / baseT) / n / T;
    for (const k of others) {
      const softmax = Math.exp(s[i][k] / T - logDen);
      G[i][k] += scale * ((P.includes(k) ? 1 / P.length : 0) - softmax);
    }
  }
  const grad = Array.from({ length: n }, (_, i) =>
    Array.from({ length: d }, (_, c) => {
      let v = 0;
      for (let k = 0; k < n; k++) v += (G[i][k] + G[k][i]) * z[k][c];
      return v;
    }),
  );
  return { loss: (-(T / baseT) * total) / n, grad };
}

/** The graph's supConLoss on fixed projections (and labels). */
async function graphLoss(z: number[][], labels: number[] | null, opts: ContrastiveOptions = {}): Promise<number> {
  const n = z.length,
    d = z[0].length;
  const g = new Graph('supcon_value');
  const zv = g.input('z', [n, d]);
  const lv = labels ? g.input('labels', [n], 'int64') : null;
  g.output(supConLoss(g, zv, lv, opts), 'loss');
  const feeds: Record<string, ort.Tensor> = { z: f32(z.flat(), [n, d]) };
  if (labels) feeds.labels = i64(labels, [n]);
  const out = await runOnce(g.toModel(), feeds);
  return (out.loss.data as Float32Array)[0];
}

const close = (a: number, b: number, rtol: number, what: string) =>
  assert.ok(Math.abs(a - b) <= rtol * Math.abs(b), `${what}: ${a} vs ${b} (relative ${Math.abs(a - b) / Math.abs(b)})`);

describe('simclr: the NT-Xent / SupCon loss', () => {
  it('the float64 reference gradient agrees with its own finite differences (sanity of the reference)', () => {
    const z = unitRows(6, 4, 11),
      labels = [0, 1, 0, 0, 1, 0];
    for (const lab of [null, labels]) {
      const { grad } = supConJS(z, lab, 0.2, 0.07);
      const h = 1e-6;
      for (const [i, c] of [
        [0, 0],
        [2, 3],
        [5, 1],
        [3, 2],
      ]) {
        const zp = z.map(r => r.slice()),
          zm = z.map(r => r.slice());
        zp[i][c] += h;
        zm[i][c] -= h;
        const fd = (supConJS(zp, lab, 0.2, 0.07).loss - supConJS(zm, lab, 0.2, 0.07).loss) / (2 * h);
        assert.ok(
          Math.abs(fd - grad[i][c]) < 1e-6 + 1e-5 * Math.abs(fd),
          `reference gradient [${i}][${c}]: ${grad[i][c]} vs ${fd}`,
        );
      }
    }
  });

  it('unsupervised (SimCLR): equals the float64 formula, the only positive being the other view', async () => {
    for (const seed of [1, 2]) {
      const z = unitRows(6, 4, seed);
      close(await graphLoss(z, null), supConJS(z, null).loss, 1e-5, `seed ${seed}`);
    }
    // a bigger batch, closer to real use
    const z = unitRows(16, 8, 3);
    close(await graphLoss(z, null), supConJS(z, null).loss, 1e-5, 'B = 8');
  });

  it('uninformative projections (all equal) give log(2B - 1)', async () => {
    const row = unitRows(1, 4, 5)[0];
    const z = Array.from({ length: 6 }, () => row.slice());
    close(await graphLoss(z, null), Math.log(5), 1e-5, 'all-equal projections');
  });

  it('supervised (SupCon): anchors with several positives, equals the float64 formula', async () => {
    // label 0 appears twice per view: anchors of class 0 have 3 positives, the class-1 anchor has 1
    const labels = [0, 1, 0, 0, 1, 0];
    const z = unitRows(6, 4, 7);
    const ref = supConJS(z, labels).loss;
    close(await graphLoss(z, labels), ref, 1e-5, 'supervised');
    assert.ok(Math.abs(ref - supConJS(z, null).loss) > 1e-3, 'the labels should change the loss for this batch');
    // all labels distinct: SupCon reduces to SimCLR
    const distinct = [0, 1, 2, 0, 1, 2];
    close(await graphLoss(z, distinct), supConJS(z, null).loss, 1e-5, 'distinct labels = unsupervised');
  });

  it('temperature other than 0.07 with baseTemperature 0.07 scales the loss by T / baseT', async () => {
    const z = unitRows(6, 4, 9),
      labels = [2, 2, 5, 2, 2, 5];
    for (const T of [0.5, 0.2]) {
      close(await graphLoss(z, null, { temperature: T }), supConJS(z, null, T, 0.07).loss, 1e-5, `T=${T} unsupervised`);
      close(
        await graphLoss(z, labels, { temperature: T, baseTemperature: 0.07 }),
        supConJS(z, labels, T, 0.07).loss,
        1e-5,
        `T=${T} supervised`,
      );
    }
    // baseTemperature = temperature removes the scale
    const a = await graphLoss(z, null, { temperature: 0.5, baseTemperature: 0.5 });
    close(a, supConJS(z, null, 0.5, 0.5).loss, 1e-5, 'T = baseT = 0.5');
    close((a * 0.5) / 0.07, supConJS(z, null, 0.5, 0.07).loss, 1e-5, 'the T/baseT factor');
  });

  it('rejects fewer than 4 projections or an odd count', () => {
    const g = new Graph();
    assert.throws(() => supConLoss(g, g.input('a', [2, 4]), null), /B >= 2, got 2/);
    assert.throws(() => supConLoss(g, g.input('b', [5, 4]), null), /2B projections.*got 5/);
  });
});

describe('simclr: gradient of the contrastive loss (finite differences)', () => {
  const labels = BigInt64Array.from([0, 1, 0, 2, 0, 1, 0, 2].map(BigInt));
  for (const [name, T] of [
    ['T = 0.07', 0.07],
    ['T = 0.5', 0.5],
  ] as const) {
    it(`L2-normalise then supConLoss, without labels (${name})`, async () => {
      const r = await gradcheck(
        (g, [x]) => supConLoss(g, g.l2Normalize(x, 1), null, { temperature: T }),
        [{ shape: [8, 5] }],
        { eps: 1e-3, directions: 3, seed: 3 },
      );
      assert.deepEqual(r.failures, [], `worst error ratio ${r.worst}`);
    });
    it(`L2-normalise then supConLoss, with labels (${name})`, async () => {
      const r = await gradcheck(
        (g, [x, y]) => supConLoss(g, g.l2Normalize(x, 1), y, { temperature: T }),
        [{ shape: [8, 5] }, { shape: [8], dtype: 'int64', data: labels }],
        { eps: 1e-3, directions: 3, seed: 4 },
      );
      assert.deepEqual(r.failures, [], `worst error ratio ${r.worst}`);
    });
  }
});

describe('simclr: buildContrastiveLossGraph', () => {
  for (const supervised of [false, true]) {
    it(`loss and grad.z equal the float64 formula and its analytic gradient (${supervised ? 'SupCon' : 'SimCLR'})`, async () => {
      const n = 8;
      const z = unitRows(n, PROJECTION_DIM, supervised ? 21 : 22);
      const labels = [3, 1, 3, 7, 3, 1, 3, 7];
      for (const loss of [{}, { temperature: 0.3 }] as ContrastiveOptions[]) {
        const feeds: Record<string, ort.Tensor> = { z: f32(z.flat(), [n, PROJECTION_DIM]) };
        if (supervised) feeds.labels = i64(labels, [n]);
        const out = await runOnce(buildContrastiveLossGraph(n, supervised, loss), feeds);
        const ref = supConJS(z, supervised ? labels : null, loss.temperature ?? 0.07, 0.07);
        close((out.loss.data as Float32Array)[0], ref.loss, 1e-5, 'loss');
        assert.deepEqual(out['grad.z'].dims, [n, PROJECTION_DIM]);
        const flat = ref.grad.flat();
        const scale = Math.max(...flat.map(Math.abs));
        assertClose(out['grad.z'].data as Float32Array, flat, 'grad.z', { rtol: 1e-4, atol: 1e-5 * scale });
      }
    });
  }

  it('grad.z equals central finite differences of its own loss output', async () => {
    const n = 6,
      rng = new Rng(31);
    const model = buildContrastiveLossGraph(n, false, { temperature: 0.5 });
    const z = unitRows(n, PROJECTION_DIM, 30).flat();
    const run = async (v: number[]) => runOnce(model, { z: f32(v, [n, PROJECTION_DIM]) });
    const base = await run(z);
    const grad = base['grad.z'].data as Float32Array;
    for (let d = 0; d < 3; d++) {
      const dir = z.map(() => rng.normal());
      const eps = 1e-3;
      const lp = (await run(z.map((v, i) => v + eps * dir[i]))).loss.data as Float32Array;
      const lm = (await run(z.map((v, i) => v - eps * dir[i]))).loss.data as Float32Array;
      const fd = (lp[0] - lm[0]) / (2 * eps);
      const an = dir.reduce((s, v, i) => s + v * grad[i], 0);
      assert.ok(
        Math.abs(fd - an) <= 1e-3 + 5e-3 * Math.abs(fd),
        `direction ${d}: finite difference ${fd} vs grad.z ${an}`,
      );
    }
  });

  it('rejects a batch with B < 2 (fewer than 4 projections) with a clear error', () => {
    assert.throws(() => buildContrastiveLossGraph(2, false), /B >= 2, got 2/);
    assert.throws(() => buildContrastiveLossGraph(2, true), /B >= 2/);
    assert.throws(() => buildContrastiveLossGraph(3, false), /got 3/);
  });
});

describe('simclr: training and linear evaluation on a small MNIST subset', function () {
  let data: { train: Split; test: Split };
  let result: SimclrResult;
  const B = 32;
  // 256 images, 8 steps per epoch; the probe trains on frozen features (cheap), 30 epochs of one batch each
  const base = { batchSize: B, seed: 3, limitTrain: 256, limitTest: 200, probeEpochs: 30, runtime: { threads: 1 } };

  before(async function () {
    data = loadDataset('mnist');
    result = await trainSimclr({ ...base, epochs: 2, supervised: false, train: data.train, test: data.test });
  });

  it('resumes from a checkpoint bit-identically (augmentation and dropout included)', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-simclr-resume-'));
    try {
      const o = {
        ...base,
        limitTrain: 128,
        probeEpochs: 1,
        epochs: 2,
        supervised: false,
        train: data.train,
        test: data.test,
        checkpointDir: dir,
      };
      const straight = await trainSimclr(o);
      fs.rmSync(checkpointFile(dir, 2));
      const resumed = await trainSimclr({ ...o, resume: true });
      assert.deepEqual(
        resumed.history.map(h => h.train_loss),
        straight.history.map(h => h.train_loss),
      );
      resumed.params.data.forEach((a, i) =>
        assert.ok(
          a.every((v, k) => Object.is(v, straight.params.data[i][k])),
          `parameter ${resumed.params.names[i]} differs`,
        ),
      );
      await assert.rejects(trainSimclr({ ...o, supervised: true, resume: true }), /cannot resume/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('runs 2 epochs: history, finite loss below log(2B - 1), linear-eval accuracy well above chance', () => {
    assert.deepEqual(
      result.history.map(h => h.epoch),
      [1, 2],
    );
    for (const h of result.history) {
      assert.ok(Number.isFinite(h.train_loss) && h.train_loss > 0, `epoch ${h.epoch} loss ${h.train_loss}`);
      assert.ok(h.lr >= 0 && h.seconds >= 0);
    }
    // an encoder mapping everything to one point scores log(2B - 1); after training the views are told apart
    const last = result.history[result.history.length - 1].train_loss;
    assert.ok(last < Math.log(2 * B - 1), `final loss ${last} not below log(2B-1) = ${Math.log(2 * B - 1)}`);
    const le = result.linearEval;
    assert.ok(le.testAccuracy > 0.3, `linear-eval test accuracy ${le.testAccuracy}`);
    assert.ok(le.trainAccuracy > 0.3, `probe train accuracy ${le.trainAccuracy}`);
    assert.ok(Number.isFinite(le.testLoss));
    assert.equal(le.probabilities.length, 200 * CLASSES);
    for (let i = 0; i < 200; i++) {
      const row = le.probabilities.subarray(i * CLASSES, (i + 1) * CLASSES);
      assert.ok(
        Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-4,
        `probabilities of test image ${i} sum to ${row.reduce((a, b) => a + b, 0)}`,
      );
    }
    assert.ok(result.imagesPerSecond > 0);
  });

  it('supervised (SupCon) training also runs', async () => {
    const r = await trainSimclr({
      ...base,
      epochs: 1,
      limitTrain: 64,
      probeEpochs: 2,
      supervised: true,
      train: data.train,
      test: data.test,
    });
    assert.equal(r.history.length, 1);
    assert.ok(Number.isFinite(r.history[0].train_loss), `loss ${r.history[0].train_loss}`);
    assert.ok(r.history[0].train_loss > 0);
  });

  it('rejects a batch size of 1 and fewer than 2 training images', async () => {
    await assert.rejects(
      trainSimclr({ ...base, epochs: 1, batchSize: 1, supervised: false, train: data.train, test: data.test }),
      /batch size of at least 2/,
    );
    await assert.rejects(
      trainSimclr({ ...base, epochs: 1, limitTrain: 1, supervised: false, train: data.train, test: data.test }),
      /at least 2 training images/,
    );
  });

  it('exportSimclrClassifier equals the encoder features (exportEncoder / encodeImages) followed by the probe in JS', async () => {
    const n = 5;
    const features = await encodeImages(result.params, result.buffers, data.test, n, { threads: 1 });
    assert.equal(features.length, n * FEATURES);
    // the exported encoder on its own gives the same features
    const x = normalise(data.test.images.subarray(0, n * IMAGE_SIZE), new Float32Array(n * IMAGE_SIZE));
    const enc = await runOnce(exportEncoder(result.params, result.buffers), { input: f32(x, [n, 1, 28, 28]) });
    assertClose(enc.features.data as Float32Array, features, 'encoder features', { rtol: 1e-5, atol: 1e-6 });

    const W = result.probe.get('probe.weight'),
      b = result.probe.get('probe.bias');
    assert.equal(W.length, CLASSES * FEATURES);
    const logits: number[] = [],
      probs: number[] = [];
    for (let i = 0; i < n; i++) {
      const row = Array.from({ length: CLASSES }, (_, c) => {
        let v = b[c];
        for (let k = 0; k < FEATURES; k++) v += features[i * FEATURES + k] * W[c * FEATURES + k];
        return v;
      });
      const m = Math.max(...row),
        e = row.map(v => Math.exp(v - m)),
        s = e.reduce((a, v) => a + v, 0);
      logits.push(...row);
      probs.push(...e.map(v => v / s));
    }
    const out = await runOnce(exportSimclrClassifier(result.params, result.buffers, result.probe), {
      input: f32(x, [n, 1, 28, 28]),
    });
    assert.deepEqual(out.logits.dims, [n, CLASSES]);
    assertClose(out.logits.data as Float32Array, logits, 'logits', { rtol: 1e-4, atol: 1e-4 });
    assertClose(out.probabilities.data as Float32Array, probs, 'probabilities', { rtol: 1e-4, atol: 1e-5 });
    // and the linear evaluation's own test probabilities for these images
    assertClose(result.linearEval.probabilities.subarray(0, n * CLASSES), probs, 'linear-eval probabilities', {
      rtol: 1e-4,
      atol: 1e-5,
    });
  });

  it('encodeImages across its 500-image chunks: each row is the encoder output of that image', async () => {
    const count = 503,
      rows = [0, 499, 500, 502];
    const features = await encodeImages(result.params, result.buffers, data.test, count, { threads: 1 });
    assert.equal(features.length, count * FEATURES);
    const x = new Float32Array(rows.length * IMAGE_SIZE);
    rows.forEach((r, i) =>
      normalise(
        data.test.images.subarray(r * IMAGE_SIZE, (r + 1) * IMAGE_SIZE),
        x.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE),
      ),
    );
    const enc = await runOnce(exportEncoder(result.params, result.buffers), {
      input: f32(x, [rows.length, 1, 28, 28]),
    });
    const ref = enc.features.data as Float32Array;
    rows.forEach((r, i) =>
      assertClose(
        features.subarray(r * FEATURES, (r + 1) * FEATURES),
        ref.subarray(i * FEATURES, (i + 1) * FEATURES),
        `features of image ${r}`,
        { rtol: 1e-5, atol: 1e-6 },
      ),
    );
  });
});
