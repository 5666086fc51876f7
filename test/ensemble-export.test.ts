import { strict as assert } from 'node:assert';
import {
  exportEnsemble,
  normaliseEnsembleWeights,
  HARD_VOTE_TIE_BREAK,
  HARD_VOTE_TIE_TOLERANCE,
  type EnsembleMember,
} from '../engine/ensemble/export.ts';
import { exportCnn, cnnParams, cnnBuffers, CLASSES } from '../engine/model/cnn.ts';
import { exportSimclrClassifier, simclrParams, simclrBuffers, probeParams } from '../engine/model/simclr.ts';
import { TensorSet } from '../engine/model/params.ts';
import { decodeModel } from '../engine/graph/onnx-proto.ts';
import { Rng } from '../engine/util/random.ts';
import { createSession, ort } from '../engine/runtime.ts';
import { f32, assertClose } from './helpers/compare.ts';

const IMG = 28 * 28;

/** Gives BatchNorm non-trivial affine parameters and running statistics, so that folding is exercised. */
function perturbBatchNorm(params: TensorSet, buffers: TensorSet, seed: number): void {
  const r = new Rng(seed);
  for (let k = 1; k <= 3; k++) {
    const fill = (a: Float32Array, f: () => number) => {
      for (let i = 0; i < a.length; i++) a[i] = f();
    };
    fill(params.get(`bn${k}.weight`), () => 0.5 + r.next());
    fill(params.get(`bn${k}.bias`), () => (r.next() - 0.5) * 0.4);
    fill(buffers.get(`bn${k}.running_mean`), () => (r.next() - 0.5) * 0.4);
    fill(buffers.get(`bn${k}.running_var`), () => 0.3 + r.next() * 1.7);
  }
}

function cnnMember(seed: number): Extract<EnsembleMember, { kind: 'cnn' }> {
  const params = TensorSet.init(cnnParams(), seed),
    buffers = TensorSet.init(cnnBuffers(), seed + 1000);
  perturbBatchNorm(params, buffers, seed + 2000);
  return { kind: 'cnn', params, buffers };
}

function simclrMember(seed: number): Extract<EnsembleMember, { kind: 'simclr' }> {
  const params = TensorSet.init(simclrParams(), seed),
    buffers = TensorSet.init(simclrBuffers(), seed + 1000);
  perturbBatchNorm(params, buffers, seed + 2000);
  return { kind: 'simclr', params, buffers, probe: TensorSet.init(probeParams(), seed + 3000) };
}

function images(n: number, seed: number): Float32Array {
  const r = new Rng(seed);
  return Float32Array.from({ length: n * IMG }, () => r.next() * 2 - 1);
}

type Outputs = Record<string, ort.Tensor>;

/** Runs a model on each batch (one session, one thread). */
async function runBatches(model: Uint8Array, batches: Float32Array[]): Promise<Outputs[]> {
  const session = await createSession(model, { threads: 1 });
  try {
    const out: Outputs[] = [];
    for (const x of batches) out.push((await session.run({ input: f32(x, [x.length / IMG, 1, 28, 28]) })) as Outputs);
    return out;
  } finally {
    await session.release();
  }
}

const probsOf = (o: Outputs) => o.probabilities.data as Float32Array;

function argmaxRow(a: ArrayLike<number>, row: number): number {
  let best = 0;
  for (let c = 1; c < CLASSES; c++) if (a[row * CLASSES + c] > a[row * CLASSES + best]) best = c;
  return best;
}

/** sum_m w_m * p_m with w normalised. */
function softVote(memberProbs: Float32Array[], weights: number[]): Float64Array {
  const total = weights.reduce((a, b) => a + b, 0);
  const out = new Float64Array(memberProbs[0].length);
  memberProbs.forEach((p, m) => {
    for (let i = 0; i < p.length; i++) out[i] += (weights[m] / total) * p[i];
  });
  return out;
}

/** The hard-vote rule in JS: most weighted votes, then highest weighted mean probability, then lowest index. */
function hardVote(memberProbs: Float32Array[], weights: number[]) {
  const n = memberProbs[0].length / CLASSES;
  const total = weights.reduce((a, b) => a + b, 0);
  const soft = softVote(memberProbs, weights);
  const votes: Float64Array[] = [],
    winners: number[] = [],
    tied: number[][] = [];
  for (let i = 0; i < n; i++) {
    const v = new Float64Array(CLASSES);
    memberProbs.forEach((p, m) => {
      v[argmaxRow(p, i)] += weights[m] / total;
    });
    const top = Math.max(...v);
    const t = [...v.keys()].filter(c => v[c] >= top - HARD_VOTE_TIE_TOLERANCE);
    let w = t[0];
    for (const c of t) if (soft[i * CLASSES + c] > soft[i * CLASSES + w]) w = c;
    votes.push(v);
    winners.push(w);
    tied.push(t);
  }
  return { votes, winners, tied };
}

describe('ensemble export', function () {
  const members = [cnnMember(1), cnnMember(2), cnnMember(3), cnnMember(4)];
  const weights = [0.5, 0.25, 0.25, 0];
  const batches = [images(5, 11), images(1, 12)];
  /** memberOut[m][b]: member m's own exported model (exportCnn) on batch b. */
  let memberOut: Outputs[][];

  before(async () => {
    memberOut = [];
    for (const m of members.slice(0, 3)) memberOut.push(await runBatches(exportCnn(m.params, m.buffers), batches));
  });

  it("soft vote: one graph equals the weighted sum of the members' own models, for batch 5 and batch 1", async () => {
    const out = await runBatches(exportEnsemble(members, weights), batches);
    batches.forEach((x, b) => {
      const n = x.length / IMG;
      assert.deepEqual(out[b].probabilities.dims, [n, CLASSES]);
      const expected = softVote(
        memberOut.map(o => probsOf(o[b])),
        weights.slice(0, 3),
      );
      assertClose(probsOf(out[b]), expected, `soft probabilities, batch ${n}`, { rtol: 0, atol: 1e-5 });
      for (let i = 0; i < n; i++) {
        const s = probsOf(out[b])
          .subarray(i * CLASSES, (i + 1) * CLASSES)
          .reduce((a, v) => a + v, 0);
        assert.ok(Math.abs(s - 1) < 1e-5, `row ${i} sums to ${s}`);
      }
    });
  });

  it("member_probabilities [M, N, 10] holds each included member's probabilities", async () => {
    const out = await runBatches(exportEnsemble(members, weights), batches);
    batches.forEach((x, b) => {
      const n = x.length / IMG;
      assert.deepEqual(out[b].member_probabilities.dims, [3, n, CLASSES], 'the zero-weight member is left out');
      const mp = out[b].member_probabilities.data as Float32Array;
      for (let m = 0; m < 3; m++) {
        assertClose(
          mp.subarray(m * n * CLASSES, (m + 1) * n * CLASSES),
          probsOf(memberOut[m][b]),
          `member ${m}, batch ${n}`,
          { rtol: 0, atol: 1e-5 },
        );
      }
    });
  });

  it("declares a symbolic batch, prefixes each member's initializers and leaves zero-weight members out", () => {
    const model = decodeModel(exportEnsemble(members, weights, { metadata: { run: 'r1' } }));
    const dims = (list: any[], name: string) =>
      list
        .find((v: any) => v.name === name)
        .type.tensorType.shape.dim.map((d: any) => d.dimParam ?? Number(d.dimValue));
    assert.deepEqual(dims(model.graph.input, 'input'), ['N', 1, 28, 28]);
    assert.deepEqual(dims(model.graph.output, 'probabilities'), ['N', CLASSES]);
    assert.deepEqual(dims(model.graph.output, 'member_probabilities'), [3, 'N', CLASSES]);
    const names: string[] = model.graph.initializer.map((t: any) => t.name);
    for (const p of ['m0.', 'm1.', 'm2.']) {
      assert.ok(names.includes(`${p}conv1.weight`) && names.includes(`${p}fc2.bias`), `initializers of ${p}`);
    }
    assert.ok(!names.some(n => n.startsWith('m3.')), 'no initializers for the zero-weight member');
    const meta = Object.fromEntries(model.metadataProps.map((p: any) => [p.key, p.value]));
    assert.equal(meta.run, 'r1');
    assert.equal(meta['ensemble.vote'], 'soft');
    assert.deepEqual(JSON.parse(meta['ensemble.members']), [0, 1, 2]);
    assert.deepEqual(JSON.parse(meta['ensemble.weights']), [0.5, 0.25, 0.25]);
  });

  it('unnormalised weights give the same model as normalised ones', async () => {
    const [a] = await runBatches(exportEnsemble(members, [2, 1, 1, 0]), [batches[0]]);
    const expected = softVote(
      memberOut.map(o => probsOf(o[0])),
      [2, 1, 1],
    );
    assertClose(probsOf(a), expected, 'probabilities', { rtol: 0, atol: 1e-5 });
  });

  /** Checks the hard-vote model on `x` against the JS rule; returns how many images were ties and how the ties went. */
  async function checkHardVote(ens: EnsembleMember[], w: number[], x: Float32Array) {
    const used = ens.map((m, i) => ({ m, w: w[i] })).filter(u => u.w > 0);
    const own: Float32Array[] = [];
    for (const { m } of used) {
      if (m.kind !== 'cnn') throw new Error('cnn members only');
      own.push(probsOf((await runBatches(exportCnn(m.params, m.buffers), [x]))[0]));
    }
    const [out] = await runBatches(exportEnsemble(ens, w, { vote: 'hard' }), [x]);
    const p = probsOf(out);
    const ref = hardVote(
      own,
      used.map(u => u.w),
    );
    const n = x.length / IMG;
    assert.deepEqual(out.member_probabilities.dims, [used.length, n, CLASSES]);
    let ties = 0,
      lowestWon = 0,
      otherWon = 0;
    for (let i = 0; i < n; i++) {
      assert.equal(argmaxRow(p, i), ref.winners[i], `weights [${w}], image ${i}: votes [${Array.from(ref.votes[i])}]`);
      if (ref.tied[i].length > 1) {
        ties++;
        if (ref.winners[i] === ref.tied[i][0]) lowestWon++;
        else otherWon++;
      }
      for (let c = 0; c < CLASSES; c++) {
        const d = p[i * CLASSES + c] - ref.votes[i][c];
        if (ref.tied[i].includes(c)) assert.ok(d >= -1e-6 && d <= HARD_VOTE_TIE_BREAK + 1e-6, `tied class ${c}: ${d}`);
        else
          assert.ok(
            Math.abs(d) < 1e-6,
            `class ${c} of image ${i} is ${p[i * CLASSES + c]}, vote share ${ref.votes[i][c]}`,
          );
      }
    }
    return { ties, lowestWon, otherWon };
  }

  /** A copy of a member whose fc2 bias favours class `cls` by `beta` (steers its votes). */
  function steer(m: Extract<EnsembleMember, { kind: 'cnn' }>, cls: number, beta: number): EnsembleMember {
    const params = m.params.clone();
    params.get('fc2.bias')[cls] += beta;
    return { kind: 'cnn', params, buffers: m.buffers };
  }

  it('hard vote: argmax follows "most weighted votes, then highest mean probability"; values are vote shares', async () => {
    const x = images(24, 13);
    for (const w of [
      [0.5, 0.25, 0.25, 0],
      [1, 1, 0, 0],
      [1, 0, 1, 1e-9],
      [0.2, 0.3, 0.5, 0],
    ])
      await checkHardVote(members, w, x);
    await checkHardVote(members, weights, images(1, 14)); // batch 1
    // members steered so that member 0 (weight 1/2) votes 2 and members 1 and 2 (1/4 each) vote 7: every image is
    // a tie, decided by the mean probability, which goes either way depending on the image
    const steered = [steer(members[0], 2, 0.3), steer(members[1], 7, 0.3), steer(members[2], 7, 0.3)];
    const r = await checkHardVote(steered, [0.5, 0.25, 0.25], x);
    assert.equal(r.ties, 24, 'every image is a tie');
    assert.ok(r.lowestWon > 0 && r.otherWon > 0, `ties won by class 2: ${r.lowestWon}, by class 7: ${r.otherWon}`);
    // a clear majority is never overturned by the tie-break: 2 + 7 + 7 with equal weights -> 7
    const r2 = await checkHardVote(steered, [1, 1, 1], x);
    assert.equal(r2.ties, 0);
  });

  it('a simclr member (encoder + probe) takes part and matches exportSimclrClassifier', async () => {
    const s = simclrMember(21);
    const ens = [members[0], s];
    const out = await runBatches(exportEnsemble(ens, [1, 3]), batches);
    const sOwn = await runBatches(exportSimclrClassifier(s.params, s.buffers, s.probe), batches);
    batches.forEach((x, b) => {
      const n = x.length / IMG;
      const mp = out[b].member_probabilities.data as Float32Array;
      assert.deepEqual(out[b].member_probabilities.dims, [2, n, CLASSES]);
      assertClose(mp.subarray(0, n * CLASSES), probsOf(memberOut[0][b]), `cnn member, batch ${n}`, {
        rtol: 0,
        atol: 1e-5,
      });
      assertClose(mp.subarray(n * CLASSES), probsOf(sOwn[b]), `simclr member, batch ${n}`, { rtol: 0, atol: 1e-5 });
      assertClose(
        probsOf(out[b]),
        softVote([probsOf(memberOut[0][b]), probsOf(sOwn[b])], [1, 3]),
        `ensemble, batch ${n}`,
        { rtol: 0, atol: 1e-5 },
      );
    });
    const names: string[] = decodeModel(exportEnsemble(ens, [1, 3])).graph.initializer.map((t: any) => t.name);
    assert.ok(names.includes('m1.probe.weight') && names.includes('m1.conv3.bias'));
    assert.ok(!names.some(n => n.includes('head')), 'the projection head is not part of the classifier');
  });

  it("a single member with positive weight is that member's model", async () => {
    const out = await runBatches(exportEnsemble(members, [0, 0, 7, 0]), batches);
    batches.forEach((x, b) => {
      const n = x.length / IMG;
      assert.deepEqual(out[b].member_probabilities.dims, [1, n, CLASSES]);
      assertClose(probsOf(out[b]), probsOf(memberOut[2][b]), `batch ${n}`, { rtol: 0, atol: 1e-5 });
      assertClose(out[b].member_probabilities.data as Float32Array, probsOf(memberOut[2][b]), `member, batch ${n}`, {
        rtol: 0,
        atol: 1e-5,
      });
    });
  });

  it('rejects bad weights, no members, unknown votes and kinds', () => {
    const two = members.slice(0, 2);
    assert.throws(() => exportEnsemble([], []), /no members/);
    assert.throws(() => exportEnsemble(two, [1]), /1 weights for 2 members/);
    assert.throws(() => exportEnsemble(two, [1, 1, 1]), /3 weights for 2 members/);
    assert.throws(() => exportEnsemble(two, [0, 0]), /at least one member needs a positive weight/);
    assert.throws(() => exportEnsemble(two, [1, -0.5]), /weight 1 is -0.5/);
    assert.throws(() => exportEnsemble(two, [1, NaN]), /weight 1 is NaN/);
    assert.throws(() => exportEnsemble(two, [Infinity, 1]), /weight 0 is Infinity/);
    assert.throws(() => exportEnsemble(two, [1, 1], { vote: 'median' as never }), /vote must be 'soft' or 'hard'/);
    assert.throws(
      () => exportEnsemble([{ ...members[0], kind: 'mlp' } as never, members[1]], [1, 1]),
      /unknown kind mlp/,
    );
    assert.throws(
      () => exportEnsemble([{ kind: 'simclr', params: members[0].params, buffers: members[0].buffers } as never], [1]),
      /has no probe/,
    );
    assert.deepEqual(normaliseEnsembleWeights(3, [3, 0, 1]), [
      { index: 0, weight: 0.75 },
      { index: 2, weight: 0.25 },
    ]);
  });
});
