// Data-parallel training over a real nats-server: a coordinator (parameter server) and K in-process workers,
// each on its own NATS connection, against a single process that computes the same global batch with the
// same per-shard BatchNorm grouping (one graph: every shard's forward, the loss over the whole batch,
// autodiff through all of it; engine/train/data-parallel.ts buildGroupedReferenceGraph) and steps its own
// optimizer. Losses within 1e-5, summed gradients within 1e-4, SGD parameters after 3 steps within 1e-4
// (relative, per tensor, in the L2 norm); Adam: the loss curve over 20 steps. Then a worker lost in the
// middle of a step, a coordinator restarted from its persisted state, and malformed messages.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { waitFor, getJson, ProcGroup } from '../bench/harness/fleet-procs.ts';
import { runFleet, lines } from './helpers/cli.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { SUBJECTS, dpUpSubject, dpWorkSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, jsonField, DataParallelPhase, DType } from '../bus/codec.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { submitJob } from '../coordinator/client.ts';
import type { StepInfo } from '../coordinator/data-parallel-job.ts';
import { startWorker, type WorkerHandle } from '../worker/worker.ts';
import {
  DataParallelPlan,
  buildGroupedReferenceGraph,
  shardInputs,
  modelSpecs,
  validateDataParallelSpec,
  flatten,
  type DataParallelSpec,
  type MaskSpec,
} from '../engine/train/data-parallel.ts';
import { TrainState, type Recipe } from '../engine/train/train-state.ts';
import { ModelRunner } from '../engine/train/model-runner.ts';
import { loadDataset } from '../engine/data/datasets.ts';
import { ort } from '../engine/runtime.ts';
import { createMetrics } from '../telemetry/metrics.ts';

const BATCH = 12;
/** DP_DEBUG=1 prints the coordinator's and workers' logs. */
const debugLog = (who: string) =>
  process.env.DP_DEBUG
    ? (line: string) => console.error(`${(performance.now() / 1000).toFixed(2)} ${who}: ${line}`)
    : undefined;

function dpSpec(model: 'cnn' | 'simclr', shards: number, optimizer: 'sgd' | 'adam', steps: number): DataParallelSpec {
  const recipe: Recipe =
    optimizer === 'sgd'
      ? {
          name: 'test-sgd',
          optimizer: 'sgd',
          lr: 0.05,
          weightDecay: 0,
          decayWeightsOnly: true,
          schedule: { kind: 'step', stepSize: 1000, gamma: 1 },
          shift: 0,
          batchSize: BATCH,
        }
      : {
          name: 'test-adam',
          optimizer: 'adam',
          lr: 1e-3,
          weightDecay: 0,
          decayWeightsOnly: true,
          schedule: { kind: 'warmup-cosine', warmupFraction: 0.1 },
          shift: 0,
          batchSize: BATCH,
        };
  if (model === 'cnn') recipe.shift = 2;
  return {
    kind: 'data-parallel',
    model,
    shards,
    epochs: 1,
    batchSize: BATCH,
    recipe,
    seed: 3,
    dataset: 'mnist',
    limitTrain: BATCH * steps,
    limitTest: 20,
    valFraction: 0,
    probeEpochs: 1,
  };
}

const data = loadDataset('mnist');

interface RefStep {
  loss: number;
  gradient: Float32Array;
}

/** The single-process run: the grouped graph on the whole global batch per step, and its own optimizer. */
async function reference(spec: DataParallelSpec): Promise<{ steps: RefStep[]; params: Float32Array[] }> {
  const plan = new DataParallelPlan(spec, data.train.count);
  const specs = modelSpecs(spec.model);
  const state = new TrainState('reference', specs.params, specs.buffers, spec.recipe, spec.seed);
  const runner = new ModelRunner(state.params, state.buffers, { threads: 1 });
  const built = new Map<string, MaskSpec[]>();
  const steps: RefStep[] = [];
  try {
    for (let t = 0; t < plan.totalSteps; t++) {
      const sizes = plan.shardSizes(t),
        key = sizes.join(',');
      let graph: Uint8Array | null = null;
      if (!built.has(key)) {
        const g = buildGroupedReferenceGraph(spec, sizes);
        built.set(key, g.masks);
        graph = g.model;
      }
      const masks = built.get(key)!;
      const feeds: Record<string, ort.Tensor> = {};
      const labels: bigint[][] = [[], []];
      sizes.forEach((n, s) => {
        const mine = masks.filter(m => m.name.startsWith(`mask.${s}.`));
        const inp = shardInputs(plan, data.train, t, s, mine);
        const views = spec.model === 'cnn' ? n : 2 * n;
        feeds[`x.${s}`] = new ort.Tensor('float32', inp.x, [views, 1, 28, 28]);
        mine.forEach((m, i) => {
          feeds[m.name] = new ort.Tensor('float32', inp.masks[i], m.shape);
        });
        if (spec.model === 'cnn') feeds[`labels.${s}`] = new ort.Tensor('int64', inp.labels, [n]);
        labels[0].push(...inp.labels.subarray(0, n));
        labels[1].push(...inp.labels.subarray(n));
      });
      if (spec.supervised)
        feeds.labels = new ort.Tensor('int64', BigInt64Array.from([...labels[0], ...labels[1]]), [
          labels[0].length * 2,
        ]);
      const out = await runner.run(`ref/${key}`, () => graph ?? buildGroupedReferenceGraph(spec, sizes).model, feeds);
      const grads = runner.grads(out);
      steps.push({ loss: (out.loss.data as Float32Array)[0], gradient: flatten(grads) });
      state.buffers.names.forEach((b, i) => {
        const mean = state.buffers.data[i].fill(0);
        for (let s = 0; s < sizes.length; s++) {
          const v = out[`new.${s}.${b}`].data as Float32Array;
          for (let k = 0; k < mean.length; k++) mean[k] += v[k] / sizes.length;
        }
      });
      state.optimizer.step(state.params.data, grads, plan.schedule(t));
    }
  } finally {
    await runner.release();
  }
  return { steps, params: state.params.data };
}

const norm = (a: Float32Array) => Math.sqrt(a.reduce((s, x) => s + x * x, 0));
function relErr(a: Float32Array, b: Float32Array): number {
  assert.equal(a.length, b.length, 'tensor sizes differ');
  let d = 0;
  for (let i = 0; i < a.length; i++) d += (a[i] - b[i]) ** 2;
  return Math.sqrt(d) / Math.max(norm(b), 1e-30);
}

/** Per parameter tensor: the relative L2 error of a flat vector (or list of tensors) against the reference. */
function assertTensorsClose(
  model: 'cnn' | 'simclr',
  got: Float32Array | Float32Array[],
  want: Float32Array | Float32Array[],
  tol: number,
  what: string,
) {
  const specs = modelSpecs(model).params;
  const split = (x: Float32Array | Float32Array[]) => {
    if (Array.isArray(x)) return x;
    let at = 0;
    return specs.map(s => {
      const n = s.shape.reduce((a, b) => a * b, 1);
      const v = x.subarray(at, at + n);
      at += n;
      return v;
    });
  };
  const g = split(got),
    w = split(want);
  specs.forEach((s, i) => {
    const e = relErr(g[i], w[i]);
    assert.ok(e <= tol, `${what}: ${s.name} differs by ${e.toExponential(2)} (relative L2), more than ${tol}`);
  });
}

const available = natsServerAvailable();

describe('data-parallel training over a real nats-server', function () {
  this.timeout(300_000);
  if (!available) {
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }
  let nats: NatsServerHandle;
  let tmp: string;
  const buses: NatsTransport[] = [];
  let workers: WorkerHandle[] = [];
  let coordinators: Coordinator[] = [];
  const connect = async (name: string) => {
    const b = await connectNats(nats.url, { name });
    buses.push(b);
    return b;
  };

  before(async () => {
    nats = await startNatsServer({ maxPayload: 1024 * 1024 });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-dp-'));
  });
  after(async () => {
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });
  afterEach(async () => {
    for (const c of coordinators) await c.stop().catch(() => {});
    for (const w of workers) void w.stop().catch(() => {}); // a vanished worker's stop never resolves
    for (const b of buses.splice(0)) await b.close().catch(() => {});
    workers = [];
    coordinators = [];
  });

  let dirs = 0;
  async function coordinator(
    stateDir: string,
    opts: {
      workerTimeoutMs?: number;
      persistEverySteps?: number;
      onStep?: (s: StepInfo) => void;
      metrics?: ReturnType<typeof createMetrics>;
    } = {},
  ) {
    const c = new Coordinator(await connect('coordinator'), {
      // in-process workers share one event loop: building a SimCLR graph keeps the others from heartbeating for a while
      stateDir,
      workerTimeoutMs: opts.workerTimeoutMs ?? 15_000,
      tickMs: 50,
      log: debugLog('coordinator'),
      metrics: opts.metrics,
      dataParallel: { persistEverySteps: opts.persistEverySteps, runtime: { threads: 1 }, onStep: opts.onStep },
    });
    coordinators.push(c);
    await c.start();
    return c;
  }

  async function cluster(
    k: number,
    opts: {
      workerTimeoutMs?: number;
      persistEverySteps?: number;
      onStep?: (s: StepInfo) => void;
      stateDir?: string;
      victim?: (w: WorkerHandle) => Parameters<typeof startWorker>[1]['beforeDataParallelWork'];
      metrics?: ReturnType<typeof createMetrics>;
    } = {},
  ) {
    const stateDir = opts.stateDir ?? path.join(tmp, `state-${++dirs}`);
    const c = await coordinator(stateDir, opts);
    for (let i = 0; i < k; i++) {
      const handle: { w?: WorkerHandle } = {};
      const hook = opts.victim && i === k - 1 ? opts.victim : undefined;
      const w = startWorker(await connect(`w${i}`), {
        id: `w${i}`,
        runtime: { threads: 1 },
        heartbeatMs: 100,
        log: debugLog(`w${i}`),
        beforeDataParallelWork: hook ? x => hook(handle.w!)!(x) : undefined,
      });
      handle.w = w;
      workers.push(w);
    }
    await waitFor(() => [...c.workers.values()].filter(w => w.state !== 'lost').length === k, 10_000, `${k} workers`);
    return { c, stateDir, client: await connect('client') };
  }

  /** Runs spec on K workers; returns every step (gradient copied), the final parameters and the job summary. */
  async function runDataParallel(
    spec: DataParallelSpec,
    k: number,
    opts: Omit<NonNullable<Parameters<typeof cluster>[1]>, 'onStep'> = {},
  ) {
    const steps: (Omit<StepInfo, 'gradient' | 'params'> & { gradient: Float32Array })[] = [];
    let params: Float32Array[] = [];
    const { c, client } = await cluster(k, {
      ...opts,
      onStep: s => {
        steps.push({ ...s, gradient: s.gradient.slice() });
        if (process.env.DP_DEBUG)
          console.log(
            `step ${s.step} wall ${s.wallMs.toFixed(0)} compute ${s.computeMs.toFixed(0)} agg ${s.aggregationMs.toFixed(0)} out ${s.bytesOut} in ${s.bytesIn}`,
          );
        params = s.params.map(p => p.slice());
      },
    });
    const done = await submitJob(client, spec, () => {}, 10_000);
    return { steps, params, summary: done.summary, c };
  }

  for (const model of ['simclr', 'cnn'] as const) {
    for (const k of [2, 3]) {
      it(`${model}, ${k} workers, SGD: loss, summed gradients and parameters after 3 steps equal the single process`, async () => {
        const spec = dpSpec(model, k, 'sgd', 3);
        const ref = await reference(spec);
        const dp = await runDataParallel(spec, k);
        assert.equal(dp.steps.length, 3, 'three optimizer steps');
        assert.deepEqual(
          dp.steps.map(s => s.step),
          [0, 1, 2],
        );
        dp.steps.forEach((s, t) => {
          assert.ok(
            Math.abs(s.loss - ref.steps[t].loss) <= 1e-5 * Math.abs(ref.steps[t].loss),
            `step ${t}: loss ${s.loss} vs ${ref.steps[t].loss}`,
          );
          assertTensorsClose(model, s.gradient, ref.steps[t].gradient, 1e-4, `step ${t} summed gradient`);
        });
        // the shards really ran on different workers
        assert.equal(new Set(dp.steps.flatMap(s => s.workers)).size, k);
        assertTensorsClose(model, dp.params, ref.params, 1e-4, 'parameters after 3 steps');
        // the same outputs as a local run
        const out = dp.summary.out as string;
        for (const f of model === 'cnn'
          ? ['model.onnx', 'metrics.json', 'loss.svg']
          : ['model.onnx', 'encoder.onnx', 'metrics.json', 'loss.svg']) {
          assert.ok(fs.existsSync(path.join(out, f)), `${f} written`);
        }
        assert.ok(typeof dp.summary.test_accuracy === 'number');
      });
    }
    it(`${model}, 2 workers, Adam: the loss curve over 20 steps equals the single process`, async () => {
      const spec = dpSpec(model, 2, 'adam', 20);
      const ref = await reference(spec);
      const dp = await runDataParallel(spec, 2);
      assert.equal(dp.steps.length, 20);
      dp.steps.forEach((s, t) => {
        assert.ok(
          Math.abs(s.loss - ref.steps[t].loss) <= 1e-4 * Math.abs(ref.steps[t].loss),
          `step ${t}: loss ${s.loss} vs ${ref.steps[t].loss}`,
        );
      });
      // the curve moved: this is training, not a constant
      assert.ok(Math.abs(dp.steps[19].loss - dp.steps[0].loss) > 1e-3 * Math.abs(dp.steps[0].loss));
    });
  }

  it('a worker lost in the middle of a step: its shard is recomputed elsewhere, each step is applied once, parameters equal the single process', async () => {
    const spec = dpSpec('simclr', 3, 'sgd', 3);
    const ref = await reference(spec);
    let vanished = false;
    // the third worker vanishes (no more heartbeats, no answer) when it gets its shard of step 1's backward pass
    const dp = await runDataParallel(spec, 3, {
      workerTimeoutMs: 3000,
      victim: w => async work => {
        if (work.step !== 1 || work.phase !== DataParallelPhase.BACKWARD || vanished) return;
        vanished = true;
        void w.stop();
        await new Promise(() => {});
      },
    });
    assert.ok(vanished, 'the victim got step 1 backward work');
    assert.deepEqual(
      dp.steps.map(s => s.step),
      [0, 1, 2],
      'every step applied exactly once',
    );
    assert.ok(dp.steps[1].reassigned >= 1, 'step 1 had a shard reassigned');
    assert.equal(dp.c.workers.get('w2')!.state, 'lost');
    assert.deepEqual(dp.steps[2].workers, ['w0', 'w1']);
    dp.steps.forEach((s, t) => {
      assert.ok(
        Math.abs(s.loss - ref.steps[t].loss) <= 1e-5 * Math.abs(ref.steps[t].loss),
        `step ${t}: loss ${s.loss} vs ${ref.steps[t].loss}`,
      );
      assertTensorsClose('simclr', s.gradient, ref.steps[t].gradient, 1e-4, `step ${t} summed gradient`);
    });
    assertTensorsClose('simclr', dp.params, ref.params, 1e-4, 'parameters after 3 steps');
  });

  it('a restarted coordinator resumes from the last persisted step and ends with the single-process parameters', async () => {
    const spec = dpSpec('cnn', 2, 'sgd', 5);
    const ref = await reference(spec);
    const stateDir = path.join(tmp, 'restart');
    const stepsA: number[] = [];
    const a = await cluster(2, { stateDir, persistEverySteps: 2, onStep: s => stepsA.push(s.step) });
    const reply = await a.client.request(SUBJECTS.jobSubmit, jsonField(spec), 10_000);
    const jobId = (JSON.parse(new TextDecoder().decode(reply.data)) as { jobId: string }).jobId;
    const recordFile = path.join(stateDir, 'data-parallel', jobId, 'job.json');
    const persistedStep = () =>
      fs.existsSync(recordFile) ? (JSON.parse(fs.readFileSync(recordFile, 'utf8')) as { step: number }).step : 0;
    await waitFor(() => persistedStep() >= 2, 120_000, 'step 2 to be persisted');
    await a.c.stop(); // as if it died: a stopped coordinator writes nothing more
    const persisted = persistedStep();
    assert.ok(persisted >= 2 && persisted < 5, `persisted at step ${persisted}`);

    const stepsB: number[] = [];
    let params: Float32Array[] = [];
    const b = await coordinator(stateDir, {
      persistEverySteps: 2,
      onStep: s => {
        stepsB.push(s.step);
        params = s.params.map(p => p.slice());
      },
    });
    const done = new Promise<{ ok: boolean }>(resolve => {
      const sub = a.client.subscribe(`fleet.job.done.${jobId}`, m => {
        sub.unsubscribe();
        resolve(JSON.parse(new TextDecoder().decode(m.data)));
      });
    });
    assert.equal((await done).ok, true);
    assert.deepEqual(
      stepsB,
      Array.from({ length: 5 - persisted }, (_, i) => persisted + i),
      'B applies exactly the steps after the persisted one',
    );
    assert.ok(stepsA.length >= persisted);
    assertTensorsClose('cnn', params, ref.params, 1e-4, 'parameters after 5 steps across the restart');
    assert.equal(b.dataParallel.view().find(j => j.id === jobId)?.state, 'done');
  });

  it('malformed messages on the data-parallel subjects are dropped and counted; a job still runs', async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    const { c, client } = await cluster(2, { metrics });
    const garbage = [
      new Uint8Array([1, 2, 3, 250, 251]),
      encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'x', uptimeMs: 1, runningTaskIds: [] } }, 't').subarray(
        0,
        7,
      ),
      encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'x', uptimeMs: 1, runningTaskIds: [] } }, 't'),
    ];
    for (const g of garbage) {
      client.publish(dpUpSubject('job-x'), g);
      client.publish(dpWorkSubject('w0'), g);
    }
    // well formed, but for no job / with a spec the worker refuses: answered or ignored, never fatal
    client.publish(
      dpWorkSubject('w1'),
      encodeEnvelope(
        {
          kind: 'dpWork',
          value: {
            jobId: 'job-x',
            workId: 'x',
            step: 0,
            phase: DataParallelPhase.GRADIENT,
            shard: 0,
            shards: 1,
            paramsTransferId: 'p',
            upstreamTransferId: '',
            specJson: jsonField({ kind: 'data-parallel', model: 'rnn' }),
          },
        },
        't',
      ),
    );
    await client.flush();
    await waitFor(
      () =>
        c.dataParallel.stats.malformed >= 3 &&
        workers[0].dataParallel.malformed >= 3 &&
        workers[1].dataParallel.failed >= 1,
      10_000,
      'the messages to be counted',
    );
    assert.ok(
      (await metrics.registry.getSingleMetric('fleet_bus_malformed_messages_total')!.get()).values.some(
        v => v.value >= 3,
      ),
    );
    const done = await submitJob(client, dpSpec('cnn', 2, 'sgd', 1), () => {});
    assert.equal(done.summary.steps, 1);
    assert.ok(
      (await metrics.registry.getSingleMetric('fleet_gradient_aggregation_duration_seconds')!.get()).values.some(
        v => (v as { metricName?: string }).metricName?.endsWith('_count') && v.value === 1,
      ),
    );
  });
});

describe('data-parallel specs and messages', () => {
  it('validateDataParallelSpec names the bad field', () => {
    const good = dpSpec('simclr', 2, 'sgd', 3);
    validateDataParallelSpec(good);
    const cases: [Record<string, unknown>, RegExp][] = [
      [{ shards: 0 }, /shards/],
      [{ shards: 20 }, /shards .*at most the batch size/],
      [{ model: 'rnn' }, /model/],
      [{ epochs: 1.5 }, /epochs/],
      [{ dataset: 'cifar' }, /dataset/],
      [{ recipe: { ...good.recipe, lr: -1 } }, /recipe/],
      [{ dataDir: '/etc' }, /dataDir/],
      [{ valFraction: 0.2 }, /valFraction .*0 for SimCLR/],
      [{ temperature: 0 }, /temperature/],
      [{ kind: 'voting' }, /kind/],
    ];
    for (const [change, re] of cases)
      assert.throws(() => validateDataParallelSpec({ ...good, ...change }), re, JSON.stringify(change));
  });

  it('DataParallelWork and DataParallelResult round-trip; invalid ones are rejected with the field named', () => {
    const work = {
      jobId: 'j',
      workId: 'w',
      step: 7,
      phase: DataParallelPhase.BACKWARD,
      shard: 1,
      shards: 2,
      paramsTransferId: 'p',
      upstreamTransferId: 'u',
      specJson: jsonField({ a: 1 }),
    };
    const d = decodeEnvelope(encodeEnvelope({ kind: 'dpWork', value: work }, 'c'));
    assert.ok(d.ok && d.envelope.body.kind === 'dpWork');
    assert.deepEqual(
      { ...d.envelope.body.value, specJson: [...d.envelope.body.value.specJson] },
      { ...work, specJson: [...work.specJson] },
    );
    const result = {
      jobId: 'j',
      workId: 'w',
      workerId: 'w0',
      step: 7,
      phase: DataParallelPhase.FORWARD,
      shard: 1,
      ok: true,
      error: '',
      tensors: { name: 'result', shape: [10], dtype: DType.FLOAT32, transferId: 't' },
      loss: 0.5,
      correct: 3,
      computeMs: 12.5,
    };
    const r = decodeEnvelope(encodeEnvelope({ kind: 'dpResult', value: result }, 'w0'));
    assert.ok(r.ok && r.envelope.body.kind === 'dpResult');
    assert.deepEqual(r.envelope.body.value, result);
    const bad: [Record<string, unknown>, RegExp][] = [
      [{ ...work, phase: 0 }, /dpWork.phase is unspecified/],
      [{ ...work, shard: 2 }, /shard 2 is not below shards 2/],
      [{ ...work, upstreamTransferId: '' }, /upstream_transfer_id is empty/],
      [{ ...work, specJson: new Uint8Array(0) }, /spec_json is empty/],
    ];
    for (const [v, re] of bad) assert.throws(() => encodeEnvelope({ kind: 'dpWork', value: v as never }, 'c'), re);
    assert.throws(
      () => encodeEnvelope({ kind: 'dpResult', value: { ...result, tensors: null } }, 'w0'),
      /tensors is missing/,
    );
    assert.throws(
      () => encodeEnvelope({ kind: 'dpResult', value: { ...result, loss: NaN } }, 'w0'),
      /loss is not a finite number/,
    );
    // a failed result needs no tensors
    assert.ok(
      decodeEnvelope(
        encodeEnvelope({ kind: 'dpResult', value: { ...result, ok: false, error: 'x', tensors: null } }, 'w0'),
      ).ok,
    );
  });

  it('DataParallelPlan: shards cover each batch once, contiguously, and the schedule spans every step', () => {
    const spec = { ...dpSpec('cnn', 3, 'adam', 4), batchSize: 10, limitTrain: 43 };
    const plan = new DataParallelPlan(spec, data.train.count);
    assert.equal(plan.itersPerEpoch, 5); // 10, 10, 10, 10, 3 (3 >= 3 shards: kept)
    const b = plan.batch(4).indices;
    assert.deepEqual(plan.shardSizes(4), [1, 1, 1]);
    assert.deepEqual(plan.shardSizes(0), [4, 3, 3]);
    assert.deepEqual(
      [0, 1, 2].flatMap(s => [...plan.shard(plan.batch(0).indices, s)]),
      [...plan.batch(0).indices],
    );
    assert.equal(b.length, 3);
    assert.throws(() => new DataParallelPlan({ ...spec, limitTrain: 2 }, data.train.count), /no batch of at least 3/);
  });
});

describe('fleet train --nats: data-parallel jobs from the command line (processes)', function () {
  this.timeout(300_000);
  if (!available) return;
  let nats: NatsServerHandle;
  let tmp: string;
  const group = new ProcGroup();
  before(async () => {
    nats = await startNatsServer();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-dp-cli-'));
  });
  after(async function () {
    if (this.currentTest?.state === 'failed' || process.env.FLEET_TEST_LOGS) process.stderr.write(group.describe());
    await group.killAll();
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('usage errors exit 2 with one line', async () => {
    for (const [args, re] of [
      [['train', 'cnn', '--data-parallel'], /--data-parallel: needs --nats URL/],
      [['train', 'cnn', '--shards', '2'], /--shards: only for data-parallel training/],
      [['train', 'simclr', '--nats', nats.url, '--shards', '0'], /--shards: must be at least 1/],
      [
        ['train', 'simclr', '--nats', nats.url, '--batch-size', '4', '--shards', '8'],
        /shards must be at most the batch size/,
      ],
      [
        ['train', 'cnn', '--data-parallel', '--nats', nats.url, '--patience', '2'],
        /--patience: not for data-parallel training/,
      ],
      [
        ['train', 'simclr', '--nats', nats.url, '--data-dir', '/tmp'],
        /--data-dir: not for data-parallel training \(workers read their own data\)/,
      ],
    ] as [string[], RegExp][]) {
      const r = await runFleet(args);
      assert.equal(r.code, 2, `${args.join(' ')}: exit ${r.code}\n${r.stderr}`);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
      assert.match(r.stderr, re);
    }
  });

  it('fleet train simclr --nats and fleet train cnn --data-parallel --nats: progress, the local summary, the model files', async () => {
    const c = await group.coordinator(nats.url, path.join(tmp, 'state'));
    await Promise.all(['dp1', 'dp2'].map(id => group.worker(nats.url, id)));
    const simclr = await runFleet(
      [
        'train',
        'simclr',
        '--nats',
        nats.url,
        '--shards',
        '2',
        '--batch-size',
        '8',
        '--limit-train',
        '16',
        '--limit-test',
        '20',
        '--probe-epochs',
        '1',
        '--out',
        path.join(tmp, 'simclr'),
        '--json',
      ],
      { timeoutMs: 240_000 },
    );
    assert.equal(simclr.code, 0, simclr.stderr);
    const s = JSON.parse(lines(simclr.stdout).at(-1)!);
    assert.equal(s.model, 'simclr');
    assert.equal(s.data_parallel, true);
    assert.equal(s.steps, 2);
    assert.equal(s.epochs, 1);
    assert.ok(typeof s.linear_eval_accuracy === 'number' && typeof s.test_loss === 'number');
    for (const f of ['model.onnx', 'encoder.onnx', 'metrics.json', 'loss.svg'])
      assert.ok(fs.existsSync(path.join(s.coordinator_out, f)), f);
    assert.match(simclr.stderr, /epoch 1\/1, train loss \d/);
    assert.ok(fs.existsSync(path.join(tmp, 'simclr', 'metrics.json')));

    const cnn = await runFleet(
      [
        'train',
        'cnn',
        '--data-parallel',
        '--nats',
        nats.url,
        '--shards',
        '3',
        '--batch-size',
        '12',
        '--limit-train',
        '36',
        '--limit-test',
        '20',
        '--val-fraction',
        '0',
        '--out',
        path.join(tmp, 'cnn'),
        '--json',
      ],
      { timeoutMs: 240_000 },
    );
    assert.equal(cnn.code, 0, cnn.stderr);
    const r = JSON.parse(lines(cnn.stdout).at(-1)!);
    assert.equal(r.model, 'cnn');
    assert.equal(r.steps, 3);
    assert.equal(r.shards, 3);
    assert.ok(typeof r.test_accuracy === 'number');
    for (const f of ['model.onnx', 'metrics.json', 'loss.svg', 'accuracy.svg'])
      assert.ok(fs.existsSync(path.join(r.coordinator_out, f)), f);
    const { body } = await getJson(`${c.api}/api/jobs`);
    assert.equal(
      (body as { kind: string; state: string }[]).filter(j => j.kind === 'data-parallel' && j.state === 'done').length,
      2,
    );
  });
});
