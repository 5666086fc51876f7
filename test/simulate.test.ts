// The scale model (bench/simulate.ts): its formulas against hand-computed cases, its inputs from a scale results
// file (bench/simulate-inputs.ts), the results files and docs table it writes (bench/simulate-report.ts) and
// `fleet bench simulate` on the command line.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  predict,
  linkBytes,
  ringBytes,
  transferMs,
  wireMsPerByte,
  simulate,
  DESIGNS,
  TRANSPORTS,
  WORKER_COUNTS,
  BANDWIDTHS_GBIT,
  type ModelInputs,
} from '../bench/simulate.ts';
import { readScaleResults, modelInputs, simclrSizes } from '../bench/simulate-inputs.ts';
import {
  benchSimulate,
  renderMarkdown,
  renderValidation,
  updateDocsTable,
  DOCS_BEGIN,
  DOCS_END,
  VALIDATION_BEGIN,
  VALIDATION_END,
} from '../bench/simulate-report.ts';
import { predictRun, type ChildResult } from '../bench/simulate-validate.ts';
import { runFleet, REPO_ROOT } from './helpers/cli.ts';

/** Round numbers so that every case can be computed by hand. */
const INPUTS: ModelInputs = {
  computeMsPerImage: 10,
  backwardOnlyMsPerImage: 4,
  lossMs: 0,
  lossGlobalBatch: 8,
  sumMsPerByte: 1e-6,
  optimizerMs: 20,
  paramBytes: 1e6,
  head1WeightBytes: 8e5,
  head1FactorBytesPerImage: 1e4,
  projectionBytesPerImage: 0,
  softwareMsPerByte: 0,
  messageMs: 1,
};
const NET = { gbitPerSecond: 1, latencyMs: 0.5 };
const near = (a: number, b: number, what: string, tol = 1e-6 * Math.max(1, Math.abs(b))) =>
  assert.ok(Math.abs(a - b) <= tol, `${what}: ${a} vs ${b}`);
/** Step times are rounded to 0.1 ms. */
const nearStep = (a: number, b: number, what: string) => near(a, b, what, 0.05 + 1e-9);

describe('scale model (bench/simulate.ts)', () => {
  it('a transfer costs the message cost, the latency per hop and the slower of software and wire per byte', () => {
    near(wireMsPerByte(1), 8e-6, '1 Gbit/s = 125 MB/s');
    near(transferMs(INPUTS, NET, 1e6, 2), 1 + 2 * 0.5 + 8, 'wire-bound');
    near(transferMs({ ...INPUTS, softwareMsPerByte: 2e-5 }, NET, 1e6, 1), 1 + 0.5 + 20, 'software-bound');
  });

  it('link bytes: parameter server 2 x P x W, ring worker 2 x P x (W-1)/W sent, one NATS hub 2 x P x (W-1)', () => {
    const P = INPUTS.paramBytes;
    for (const W of [2, 3, 8, 256]) {
      const ps = linkBytes(INPUTS, 'ps', W, 16);
      assert.equal(ps.sent + ps.received, 2 * P * W, `ps, ${W} workers`);
      near(linkBytes(INPUTS, 'allreduce-ring', W, 16).sent, (2 * P * (W - 1)) / W, `ring, ${W} workers`);
      near(ringBytes(P, W), (2 * P * (W - 1)) / W, 'ringBytes');
      assert.equal(linkBytes(INPUTS, 'allreduce-hub', W, 16).received, 2 * P * (W - 1), `hub, ${W} workers`);
      near(linkBytes(INPUTS, 'allreduce-fp16', W, 16).sent, (P * (W - 1)) / W, `fp16, ${W} workers`);
    }
    // projections (2 views x 128 float32 per image) go up to the loss and their gradients come back
    const z = { ...INPUTS, projectionBytesPerImage: 1024 };
    assert.equal(linkBytes(z, 'ps', 4, 16).sent, 4 * (P + 1024 * 16));
  });

  it('head1 as factors: all-gathered, fewer bytes than the dense ring only while W x F < 2 x H', () => {
    const b = 16,
      F = INPUTS.head1FactorBytesPerImage * b,
      H = INPUTS.head1WeightBytes; // F = 160 kB, H = 800 kB: crossover W = 10
    for (const W of [2, 4, 8, 9, 11, 16, 64]) {
      const factored = linkBytes(INPUTS, 'allreduce-factored', W, b).sent;
      near(factored, ringBytes(INPUTS.paramBytes - H, W) + (W - 1) * F, `factored, ${W} workers`);
      const dense = linkBytes(INPUTS, 'allreduce-ring', W, b).sent;
      assert.equal(factored < dense, W * F < 2 * H, `${W} workers: factored ${factored} vs dense ${dense}`);
    }
  });

  it("the parameter server's step by hand: compute, W copies down, W gradients up, sum of W, optimizer", () => {
    // W = 2, 4 images each: compute 40; down and up 1 + 0.5 + 2e6 x 8e-6 = 17.5 each; projections (0 bytes) 2 x 1.5;
    // sum 2 x 1e6 x 1e-6 = 2; optimizer 20
    const p = predict(INPUTS, 'ps', 2, NET, 4);
    nearStep(p.step_ms, 40 + 17.5 + 17.5 + 3 + 2 + 20, 'ps step');
    near(p.efficiency, Math.round((1000 * 40) / p.step_ms) / 1000, 'efficiency = compute / step');
  });

  it("the ring's step by hand: 2(W-1) exchanges of P/W; overlap hides the head bucket up to the backward pass", () => {
    // W = 4, 4 images: ring 6 x (1 + 0.5 + 250e3 x 8e-6) = 6 x 3.5 = 21; sum 0.75 x 1e6 x 1e-6 = 0.75; optimizer 20
    const ring = predict(INPUTS, 'allreduce-ring', 4, NET, 4);
    nearStep(ring.step_ms, 40 + 3 + 21 + 0.75 + 20, 'ring step');
    // head bucket 80% of 21 = 16.8 ms, backward window 4 x 4 = 16 ms: 16 hidden
    nearStep(
      predict(INPUTS, 'allreduce-overlap', 4, NET, 4).step_ms,
      40 + 3 + (21 - 16) + 0.75 + 20,
      'overlapped step',
    );
    // a long backward pass hides the whole head bucket
    nearStep(
      predict({ ...INPUTS, backwardOnlyMsPerImage: 100 }, 'allreduce-overlap', 4, NET, 4).step_ms,
      40 + 3 + 21 * 0.2 + 0.75 + 20,
      'fully hidden',
    );
  });

  it('the loss graph is quadratic in the global batch and left out of the efficiency', () => {
    const m = { ...INPUTS, lossMs: 5, lossGlobalBatch: 8 };
    const a = predict(m, 'ps', 2, NET, 4),
      b = predict(m, 'ps', 4, NET, 4);
    near(a.loss_ms, 5, 'measured batch');
    near(b.loss_ms, 20, 'twice the batch');
    near(
      b.efficiency,
      Math.round((1000 * b.compute_ms) / (b.step_ms - b.loss_ms)) / 1000,
      'efficiency without the loss',
    );
  });

  it('efficiency never falls as bandwidth grows; it rises for the parameter server when wire-bound', () => {
    const m = { ...INPUTS, softwareMsPerByte: 1e-6, projectionBytesPerImage: 1024, lossMs: 3 };
    for (const transport of TRANSPORTS) {
      for (const design of DESIGNS) {
        for (const W of WORKER_COUNTS) {
          const eff = [0.1, 1, 10, 100].map(
            g => predict(m, design, W, { gbitPerSecond: g, latencyMs: 0.05 }, 16, transport).efficiency,
          );
          for (let i = 1; i < eff.length; i++) assert.ok(eff[i] >= eff[i - 1], `${transport} ${design} ${W}: ${eff}`);
        }
      }
    }
    assert.ok(
      predict(m, 'ps', 8, { gbitPerSecond: 10, latencyMs: 0.05 }, 16, 'wire').efficiency >
        predict(m, 'ps', 8, { gbitPerSecond: 1, latencyMs: 0.05 }, 16, 'wire').efficiency,
    );
  });

  it('simulate covers every transport x design x bandwidth x worker count once', () => {
    const rows = simulate(INPUTS, { latencyMs: 0.05, perWorkerBatch: 16 });
    assert.equal(rows.length, TRANSPORTS.length * DESIGNS.length * BANDWIDTHS_GBIT.length * WORKER_COUNTS.length);
    const keys = new Set(rows.map(r => `${r.transport}/${r.design}/${r.gbit_per_second}/${r.workers}`));
    assert.equal(keys.size, rows.length);
  });
});

/** A scale results file like fleet bench scale's, with round numbers. */
function scaleFile(dir: string, edit: (v: any) => void = () => {}): string {
  const v: any = {
    bench: 'scale',
    machine: { date: '2026-12-02T14:53:18.753Z' },
    data_parallel_simclr: {
      workers: 2,
      global_batch: 256,
      compute_ms_median: 1010,
      timeline_ms_median: { loss: 10, forward_compute: 300, backward_compute: 800, aggregate_sum: 60, optimizer: 30 },
      transport_floor: {
        payload_bytes: 18e6,
        receivers: 2,
        round_trip_ms_median: 580,
        message_round_trip_ms_median: 4,
      },
    },
  };
  edit(v);
  const file = path.join(dir, 'scale.json');
  fs.writeFileSync(file, JSON.stringify(v));
  return file;
}

describe('scale model inputs and results (bench/simulate-inputs.ts, bench/simulate-report.ts)', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-simulate-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('derives every input from the measurement and the model definition', () => {
    const s = readScaleResults(scaleFile(tmp));
    const { inputs } = modelInputs(s, 4, 'scale.json');
    near(inputs.computeMsPerImage, (1010 - 10) / 128, 'compute per image');
    near(inputs.backwardOnlyMsPerImage, 500 / 128, 'backward only');
    near(inputs.messageMs, 2, 'half a message round trip');
    near(inputs.softwareMsPerByte, (580 - 4) / (2 * 2 * 18e6), 'per byte through the hub');
    const sizes = simclrSizes();
    near(inputs.sumMsPerByte, 60 / (2 * sizes.paramBytes), 'sum per byte');
    // SimCLR: 4.6M float32 parameters, head1 2048 x 2048 of them
    assert.equal(sizes.head1WeightBytes, 2048 * 2048 * 4);
    assert.ok(sizes.paramBytes > sizes.head1WeightBytes && sizes.paramBytes < 20e6, String(sizes.paramBytes));
  });

  it('a missing or wrong field is an error naming it; a missing message round trip is allowed (measured)', () => {
    const file = scaleFile(tmp, v => {
      delete v.data_parallel_simclr.timeline_ms_median.optimizer;
    });
    assert.throws(() => readScaleResults(file), /timeline_ms_median\.optimizer must be a number/);
    assert.throws(
      () =>
        readScaleResults(
          scaleFile(tmp, v => {
            v.data_parallel_simclr.workers = 'two';
          }),
        ),
      /data_parallel_simclr\.workers/,
    );
    assert.throws(() => readScaleResults(path.join(tmp, 'none.json')), /none\.json: not found/);
    const noMessage = scaleFile(tmp, v => {
      delete v.data_parallel_simclr.transport_floor.message_round_trip_ms_median;
    });
    assert.equal(readScaleResults(noMessage).messageRoundTripMs, undefined);
  });

  it('writes predictions with provenance, a Markdown table, and copies it into a doc between markers', async () => {
    const out = path.join(tmp, 'simulate.json');
    await benchSimulate({ inputs: scaleFile(tmp), out, latencyMs: 0.05, root: REPO_ROOT, log: () => {} });
    const r = JSON.parse(fs.readFileSync(out, 'utf8'));
    for (const k of [
      'commit',
      'dirty',
      'date',
      'machine',
      'measured_at',
      'scenario',
      'inputs',
      'input_sources',
      'predictions',
    ])
      assert.ok(k in r, k);
    assert.equal(r.machine.node, process.version);
    assert.equal(r.scenario.per_worker_batch, 128);
    assert.equal(
      r.predictions.length,
      TRANSPORTS.length * DESIGNS.length * BANDWIDTHS_GBIT.length * WORKER_COUNTS.length,
    );
    for (const k of [
      'design',
      'transport',
      'workers',
      'gbit_per_second',
      'step_ms',
      'efficiency',
      'link_bytes_sent',
      'link_bytes_received',
    ]) {
      assert.ok(
        r.predictions.every(
          (p: Record<string, unknown>) => typeof p[k] === (k === 'design' || k === 'transport' ? 'string' : 'number'),
        ),
        k,
      );
    }
    const md = fs.readFileSync(path.join(tmp, 'simulate.md'), 'utf8');
    assert.equal(md, renderMarkdown(r));
    const ps2 = r.predictions.find(
      (p: any) => p.design === 'ps' && p.workers === 2 && p.gbit_per_second === 10 && p.transport === 'measured',
    );
    assert.ok(
      md.includes(`| ps | ${Math.round(ps2.step_ms)} (${Math.round(100 * ps2.efficiency)}) |`),
      md.slice(0, 600),
    );

    const doc = path.join(tmp, 'doc.md');
    fs.writeFileSync(doc, `# x\n${DOCS_BEGIN}\nold table\n${DOCS_END}\nafter\n`);
    assert.equal(updateDocsTable(doc, out), true);
    const text = fs.readFileSync(doc, 'utf8');
    assert.ok(text.includes(`${DOCS_BEGIN}\n${md}\n${DOCS_END}\nafter`) && !text.includes('old table'));
    assert.equal(updateDocsTable(doc, out), false, 'up to date');
    fs.writeFileSync(doc, '# no markers\n');
    assert.throws(() => updateDocsTable(doc, out), /markers/);
  });

  it('the validation predicts a run from its own compute plus the parameter server transfers at the link rate', () => {
    const step = { wall_ms: 0, compute_ms: 1000, loss_ms: 10, sum_ms: 20, optimizer_ms: 30, bytes: 0 };
    const run: ChildResult = { steps: [step, step, { ...step, compute_ms: 5000 }] }; // medians: one slow step ignored
    // 0.1 Gbit/s: 8e-5 ms per byte; down and up 1 + 2 x 1e6 x 8e-5 = 161 each; projections (0 bytes) 2 x 1; sum 20;
    // optimizer 30; compute 1000 (incl. the loss graph)
    nearStep(predictRun(INPUTS, run, 0.1, 0), 1000 + 322 + 2 + 20 + 30, '0.1 Gbit/s');
    nearStep(predictRun(INPUTS, run, null, 0), 1000 + 2 + 2 + 20 + 30, 'unlimited');
  });

  it('docs/data-parallel.md holds the tables of bench/results/simulate.json and simulate-validation.json', () => {
    const v = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'bench', 'results', 'simulate-validation.json'), 'utf8'));
    const text = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'data-parallel.md'), 'utf8');
    assert.ok(
      text.includes(`${VALIDATION_BEGIN}\n${renderValidation(v)}\n${VALIDATION_END}`),
      'run fleet bench simulate --docs',
    );
    for (const row of v.rows) assert.ok(Math.abs(row.predicted_step_ms / row.measured_step_ms - 1 - row.error) < 1e-3);
  });

  it('docs/data-parallel.md holds the table of bench/results/simulate.json as generated', () => {
    const r = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'bench', 'results', 'simulate.json'), 'utf8'));
    const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs', 'data-parallel.md'), 'utf8');
    assert.ok(doc.includes(`${DOCS_BEGIN}\n${renderMarkdown(r)}\n${DOCS_END}`), 'run fleet bench simulate --docs');
  });
});

describe('fleet bench simulate', () => {
  it('--help describes simulate and its options', async () => {
    const r = await runFleet(['bench', 'simulate', '--help']);
    assert.equal(r.code, 0, r.stderr);
    for (const s of ['simulate ', '--inputs FILE', '--latency-ms X', '--per-worker-batch N', '--docs'])
      assert.ok(r.stdout.includes(s), s);
  });

  it('runs on a results file, and rejects bad options and files naming them', async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-simulate-cli-'));
    try {
      const out = path.join(tmp, 'sim.json');
      const ok = await runFleet([
        'bench',
        'simulate',
        '--inputs',
        scaleFile(tmp),
        '--out',
        out,
        '--json',
        '--per-worker-batch',
        '64',
      ]);
      assert.equal(ok.code, 0, ok.stderr);
      const r = JSON.parse(ok.stdout.trim().split('\n').pop()!);
      assert.equal(r.scenario.per_worker_batch, 64);
      assert.ok(fs.existsSync(out) && fs.existsSync(path.join(tmp, 'sim.md')));
      for (const [args, re] of [
        [['--latency-ms=-1'], /--latency-ms: must be at least 0/],
        [['--per-worker-batch', '0'], /--per-worker-batch: must be at least 1/],
        [['--iters', '3'], /--iters: not an option of fleet bench simulate/],
        [['--docs', '--latency-ms', '1'], /--latency-ms: not with --docs/],
      ] as [string[], RegExp][]) {
        const bad = await runFleet(['bench', 'simulate', '--out', out, ...args]);
        assert.equal(bad.code, 2, `${args}: ${bad.stderr}`);
        assert.match(bad.stderr, re);
      }
      const missing = await runFleet(['bench', 'simulate', '--inputs', path.join(tmp, 'nope.json'), '--out', out]);
      assert.notEqual(missing.code, 0);
      assert.match(missing.stderr, /nope\.json: not found/);
      const other = await runFleet(['bench', 'scale', '--latency-ms', '1']);
      assert.equal(other.code, 2);
      assert.match(other.stderr, /--latency-ms: not an option of fleet bench scale/);
    } finally {
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });
});
