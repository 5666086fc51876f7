// The KServe v2 gRPC server in-process over a temporary model repository, driven by a client built from
// proto/inference.proto at run time: every RPC, both input encodings and both datatypes, every error status,
// concurrent clients (answers equal onnxruntime run directly), dynamic batching, one-graph ensembles with
// their aggregations, MIL, models added and broken while running, health checks, and garbage on the wire.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { InferenceServer, FLEET_VERSION } from '../serving/grpc-server.ts';
import { addModelVersion } from '../serving/publish.ts';
import { ModelRepository } from '../serving/repository.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { hardVote } from '../engine/ensemble/combine.ts';
import { waitFor } from '../bench/harness/fleet-procs.ts';
import {
  connect,
  expectStatus,
  cnnModel,
  milModel,
  ensembleModel,
  images,
  direct,
  output,
  maxAbsDiff,
  argmaxRows,
  param,
  IMG,
  type Clients,
} from './helpers/serve.ts';

const S = grpc.status;

describe('serve: KServe v2 gRPC server over a model repository', function () {
  let dir: string, repo: string, server: InferenceServer, metrics: Metrics, c: Clients, address: string;
  const cnn = cnnModel(1),
    cnn2 = cnnModel(5),
    ens = ensembleModel([11, 12, 13], [0.5, 0.3, 0.2]),
    mil = milModel(21);

  const put = (name: string, version: string, bytes: Uint8Array, config?: string) => {
    fs.mkdirSync(path.join(repo, name, version), { recursive: true });
    fs.writeFileSync(path.join(repo, name, version, 'model.onnx'), bytes);
    if (config) fs.writeFileSync(path.join(repo, name, 'config.yaml'), config);
  };
  const metric = async (name: string, labels: Record<string, string>) => {
    const m = (await metrics.registry.getSingleMetric(name)!.get()).values.filter(v =>
      Object.entries(labels).every(([k, x]) => v.labels[k] === x),
    );
    return m.reduce((s, v) => s + v.value, 0);
  };
  const histogram = async (name: string, model: string) => {
    const vals = (await metrics.registry.getSingleMetric(name)!.get()).values.filter(v => v.labels.model === model);
    return {
      count: vals.find(v => (v as { metricName?: string }).metricName === `${name}_count`)?.value ?? 0,
      sum: vals.find(v => (v as { metricName?: string }).metricName === `${name}_sum`)?.value ?? 0,
    };
  };
  const infer = (model: string, pixels: Uint8Array, n: number, extra: object = {}, opts?: grpc.CallOptions) =>
    c.call(
      'ModelInfer',
      {
        model_name: model,
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
        raw_input_contents: [pixels],
        ...extra,
      },
      opts,
    );

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-serve-'));
    repo = path.join(dir, 'models');
    put('cnn', '1', cnn);
    put('cnn', '2', cnn2);
    put('ens', '1', ens);
    put('ens-hard', '1', ens, 'aggregation: hard\n');
    put('mil', '1', mil);
    put('batched', '1', cnn, 'max_batch_size: 64\nmax_queue_delay_ms: 300\n');
    put('slow', '1', cnn, 'max_queue_delay_ms: 3000\n');
    put('small', '1', cnn, 'max_request_images: 4\n');
    put('broken', '1', cnn.subarray(0, 5000));
    put('badconfig', '1', cnn, 'max_batch_size: lots\n');
    fs.mkdirSync(path.join(repo, 'run-dir'));
    fs.writeFileSync(path.join(repo, 'run-dir', 'model.onnx'), cnn); // a fleet train --out directory
    fs.writeFileSync(path.join(repo, 'run-dir', 'metrics.json'), '{}');
    // every file is older than the settle time, as a repository prepared before the start would be
    const old = new Date(Date.now() - 60_000);
    for (const f of fs.readdirSync(repo, { recursive: true }) as string[]) fs.utimesSync(path.join(repo, f), old, old);
    metrics = createMetrics({ defaultMetrics: false });
    server = new InferenceServer({ models: repo, pollMs: 100, settleMs: 300, runtime: { threads: 1 }, metrics });
    address = `127.0.0.1:${await server.start('127.0.0.1', 0)}`;
    c = connect(address);
  });

  after(async () => {
    c?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('ServerLive, ServerReady, ServerMetadata', async () => {
    assert.deepEqual(await c.call('ServerLive', {}), { live: true });
    assert.deepEqual(await c.call('ServerReady', {}), { ready: true });
    const m = await c.call('ServerMetadata', {});
    assert.equal(m.name, 'fleet');
    assert.equal(m.version, FLEET_VERSION);
  });

  it('ModelReady: ready, not ready (a truncated file, a bad config), unknown model or version NOT_FOUND', async () => {
    assert.equal((await c.call('ModelReady', { name: 'cnn' })).ready, true);
    assert.equal((await c.call('ModelReady', { name: 'cnn', version: '1' })).ready, true);
    assert.equal((await c.call('ModelReady', { name: 'run-dir' })).ready, true);
    assert.equal((await c.call('ModelReady', { name: 'broken' })).ready, false);
    assert.equal((await c.call('ModelReady', { name: 'badconfig' })).ready, false);
    await expectStatus(c.call('ModelReady', { name: 'nope' }), S.NOT_FOUND, /unknown model "nope"/);
    await expectStatus(c.call('ModelReady', { name: 'cnn', version: '7' }), S.NOT_FOUND, /no version "7"/);
    assert.equal(await metric('fleet_model_load_failures_total', { model: 'broken' }), 1);
  });

  it('ModelMetadata: versions, platform, input and outputs (ensembles list member_probabilities, MIL its bag outputs)', async () => {
    const m = await c.call('ModelMetadata', { name: 'cnn' });
    assert.deepEqual(m.versions, ['1', '2']);
    assert.equal(m.platform, 'onnxruntime_onnx');
    assert.deepEqual(
      m.inputs.map((t: any) => [t.name, t.datatype, t.shape]),
      [['input', 'FP32', [-1, 1, 28, 28]]],
    );
    assert.deepEqual(
      m.outputs.map((t: any) => [t.name, t.datatype, t.shape]),
      [
        ['probabilities', 'FP32', [-1, 10]],
        ['predicted_class', 'INT64', [-1]],
      ],
    );
    const e = await c.call('ModelMetadata', { name: 'ens' });
    assert.deepEqual(e.outputs.find((t: any) => t.name === 'member_probabilities').shape, [3, -1, 10]);
    const b = await c.call('ModelMetadata', { name: 'mil' });
    assert.deepEqual(
      b.outputs.map((t: any) => t.name),
      ['probability', 'attention', 'predicted_class'],
    );
    await expectStatus(c.call('ModelMetadata', { name: 'nope' }), S.NOT_FOUND);
    await expectStatus(
      c.call('ModelMetadata', { name: 'broken' }),
      S.UNAVAILABLE,
      /model\.onnx.*not a loadable ONNX model/,
    );
  });

  it('ModelInfer, typed FP32 [N,1,28,28] in 0-1 and raw FP32 [N,784] in 0-255: the answers equal onnxruntime run directly', async () => {
    const n = 3,
      { unit, pixels } = images(n, 1);
    const want = await direct(cnn2, pixels, n);
    const typed = await c.call('ModelInfer', {
      model_name: 'cnn',
      id: 'req-1',
      inputs: [
        { name: 'input', datatype: 'FP32', shape: [n, 1, 28, 28], contents: { fp32_contents: Array.from(unit) } },
      ],
    });
    assert.equal(typed.id, 'req-1');
    assert.equal(typed.model_version, '2', 'no version asked: the highest');
    assert.equal(typed.raw_output_contents.length, 0, 'typed in, typed out');
    assert.deepEqual(output(typed, 'probabilities').shape, [n, 10]);
    assert.ok(maxAbsDiff(output(typed, 'probabilities').data, want.probabilities) < 1e-5);
    assert.deepEqual(output(typed, 'predicted_class').data, argmaxRows(want.probabilities));

    const scaled = Float32Array.from(pixels);
    const raw = await c.call('ModelInfer', {
      model_name: 'cnn',
      model_version: '1',
      parameters: { input_range: { string_param: '0-255' } },
      inputs: [{ name: 'input', datatype: 'FP32', shape: [n, IMG] }],
      raw_input_contents: [Buffer.from(scaled.buffer)],
    });
    assert.equal(raw.model_version, '1');
    assert.equal(raw.raw_output_contents.length, 2, 'raw in, raw out');
    const want1 = await direct(cnn, pixels, n);
    assert.ok(maxAbsDiff(output(raw, 'probabilities').data, want1.probabilities) < 1e-5);
    assert.deepEqual(output(raw, 'predicted_class').data, argmaxRows(want1.probabilities));
  });

  it('ModelInfer, UINT8 [N,784] as uint_contents and as raw bytes: the same answer; requested outputs only', async () => {
    const n = 2,
      { pixels } = images(n, 2);
    const want = await direct(cnn, pixels, n);
    const typed = await c.call('ModelInfer', {
      model_name: 'cnn',
      model_version: '1',
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG], contents: { uint_contents: Array.from(pixels) } }],
    });
    const raw = await c.call('ModelInfer', {
      model_name: 'cnn',
      model_version: '1',
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, 1, 28, 28] }],
      raw_input_contents: [Buffer.from(pixels)],
      outputs: [{ name: 'predicted_class' }],
    });
    assert.ok(maxAbsDiff(output(typed, 'probabilities').data, want.probabilities) < 1e-5);
    assert.deepEqual(
      raw.outputs.map((o: any) => o.name),
      ['predicted_class'],
    );
    assert.deepEqual(output(raw, 'predicted_class').data, argmaxRows(want.probabilities));
  });

  it("a one-graph ensemble: the graph's selection-weighted vote and member_probabilities; aggregation: hard re-votes the members", async () => {
    const n = 4,
      { pixels } = images(n, 3);
    const want = await direct(ens, pixels, n);
    const r = await infer('ens', pixels, n);
    assert.ok(maxAbsDiff(output(r, 'probabilities').data, want.probabilities) < 1e-5);
    assert.deepEqual(output(r, 'member_probabilities').shape, [3, n, 10]);
    assert.ok(maxAbsDiff(output(r, 'member_probabilities').data, want.member_probabilities) < 1e-5);
    assert.match(String(param(r, 'ensemble_aggregation')), /graph/);

    const h = await infer('ens-hard', pixels, n);
    const members = [0, 1, 2].map(m => want.member_probabilities.slice(m * n * 10, (m + 1) * n * 10));
    assert.deepEqual(output(h, 'predicted_class').data, Array.from(hardVote(members, 10, [0.5, 0.3, 0.2])));
    const shares = output(h, 'probabilities').data;
    for (let i = 0; i < n; i++) {
      const row = shares.slice(i * 10, i * 10 + 10);
      assert.ok(Math.abs(row.reduce((a, b) => a + b, 0) - 1) < 1e-5, 'vote shares sum to 1');
      for (const v of row)
        assert.ok(
          [0, 0.2, 0.3, 0.5, 0.7, 0.8, 1].some(s => Math.abs(v - s) < 1e-5),
          `a vote share is a sum of weights, got ${v}`,
        );
    }
    assert.equal(param(h, 'ensemble_aggregation'), 'hard');
  });

  it('a MIL model: one bag -> bag probability and per-instance attention, as onnxruntime gives them', async () => {
    const L = 5,
      { pixels } = images(L, 4);
    const want = await direct(mil, pixels, L);
    const r = await infer('mil', pixels, L);
    assert.ok(maxAbsDiff(output(r, 'probability').data, want.probability) < 1e-5);
    assert.deepEqual(output(r, 'attention').shape, [L]);
    assert.ok(maxAbsDiff(output(r, 'attention').data, want.attention) < 1e-5);
    assert.deepEqual(output(r, 'predicted_class').data, [want.probability[0] >= 0.5 ? 1 : 0]);
  });

  it('errors: NOT_FOUND, INVALID_ARGUMENT, RESOURCE_EXHAUSTED, UNAVAILABLE with messages naming what was wrong, all counted', async () => {
    const one = images(1, 5).pixels;
    const before = await metric('fleet_inference_requests_total', { status: 'INVALID_ARGUMENT' });
    // the message names the unknown model, never the models there are
    assert.doesNotMatch(await expectStatus(infer('nope', one, 1), S.NOT_FOUND, /unknown model "nope"/), /cnn/);
    await expectStatus(infer('cnn', one, 1, { model_version: '9' }), S.NOT_FOUND, /no version "9"/);
    await expectStatus(
      c.call('ModelInfer', { model_name: 'cnn', inputs: [] }),
      S.INVALID_ARGUMENT,
      /missing input "input"/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'pixels', datatype: 'UINT8', shape: [1, IMG] }],
        raw_input_contents: [Buffer.from(one)],
      }),
      S.INVALID_ARGUMENT,
      /unknown input "pixels"/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, 3, 28, 28] }],
        raw_input_contents: [Buffer.from(one)],
      }),
      S.INVALID_ARGUMENT,
      /shape \[1,3,28,28\]/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'INT32', shape: [1, IMG], contents: { int_contents: Array.from(one) } }],
      }),
      S.INVALID_ARGUMENT,
      /datatype "INT32"/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [2, IMG] }],
        raw_input_contents: [Buffer.from(one)],
      }),
      S.INVALID_ARGUMENT,
      /784 bytes.*needs 1568/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [
          {
            name: 'input',
            datatype: 'UINT8',
            shape: [1, IMG],
            contents: { uint_contents: [...Array(783).fill(0), 300] },
          },
        ],
      }),
      S.INVALID_ARGUMENT,
      /uint_contents\[783\] = 300/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [
          {
            name: 'input',
            datatype: 'FP32',
            shape: [1, IMG],
            contents: { fp32_contents: [...Array(783).fill(0), NaN] },
          },
        ],
      }),
      S.INVALID_ARGUMENT,
      /value 783 is NaN/,
    );
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'FP32', shape: [1, IMG], contents: { fp32_contents: Array(IMG).fill(0) } }],
        parameters: { input_range: { string_param: '0-9' } },
      }),
      S.INVALID_ARGUMENT,
      /input_range/,
    );
    await expectStatus(
      infer('cnn', one, 1, { outputs: [{ name: 'logits' }] }),
      S.INVALID_ARGUMENT,
      /unknown output "logits"/,
    );
    await expectStatus(
      infer('small', images(5, 6).pixels, 5),
      S.RESOURCE_EXHAUSTED,
      /5 images in one request; this model takes at most 4/,
    );
    await expectStatus(
      infer('broken', one, 1),
      S.UNAVAILABLE,
      /model "broken" has no ready version.*broken\/1\/model\.onnx: not a loadable ONNX model/,
    );
    await expectStatus(infer('badconfig', one, 1), S.UNAVAILABLE, /config\.yaml: max_batch_size must be an integer/);
    assert.equal((await metric('fleet_inference_requests_total', { status: 'INVALID_ARGUMENT' })) - before, 9);
    assert.equal(
      (await metric('fleet_inference_requests_total', { model: '_unknown', status: 'NOT_FOUND' })) >= 1,
      true,
    );
    assert.equal(await metric('fleet_inference_requests_total', { model: 'small', status: 'RESOURCE_EXHAUSTED' }), 1);
    // the server is still fine
    assert.equal(output(await infer('cnn', one, 1), 'predicted_class').data.length, 1);
  });

  it('DEADLINE_EXCEEDED: a request whose deadline passes in the queue is answered so and never run', async () => {
    const batchesBefore = (await histogram('fleet_inference_batch_size', 'slow')).count;
    await expectStatus(infer('slow', images(1, 7).pixels, 1, {}, { deadline: Date.now() + 300 }), S.DEADLINE_EXCEEDED);
    // the client gives up at its deadline; the server's own answer is in its metrics once the batch comes due
    await waitFor(
      async () =>
        (await metric('fleet_inference_requests_total', { model: 'slow', status: 'DEADLINE_EXCEEDED' })) === 1,
      10_000,
      'the server to count the expired request',
    );
    assert.equal((await histogram('fleet_inference_batch_size', 'slow')).count, batchesBefore, 'no batch ran for it');
  });

  it('dynamic batching: 8 concurrent single-image requests share session runs (batch-size metric), each gets its own rows', async () => {
    const before = await histogram('fleet_inference_batch_size', 'batched');
    const { pixels } = images(8, 8);
    const want = await direct(cnn, pixels, 8);
    const answers = await Promise.all(
      Array.from({ length: 8 }, (_, i) => infer('batched', pixels.subarray(i * IMG, (i + 1) * IMG), 1)),
    );
    answers.forEach((r, i) =>
      assert.ok(
        maxAbsDiff(output(r, 'probabilities').data, want.probabilities.slice(i * 10, i * 10 + 10)) < 1e-5,
        `request ${i}`,
      ),
    );
    const after = await histogram('fleet_inference_batch_size', 'batched');
    assert.equal(after.sum - before.sum, 8, '8 images ran');
    assert.ok(
      after.count - before.count < 8,
      `8 requests ran in ${after.count - before.count} session runs: some were merged`,
    );
    assert.ok((await histogram('fleet_inference_queue_duration_seconds', 'batched')).count >= 8);
  });

  it('concurrent clients with requests of different sizes: every answer equals the direct run of its own images', async () => {
    const clients = Array.from({ length: 4 }, () => connect(address));
    try {
      const jobs = clients.flatMap((cl, k) =>
        Array.from({ length: 6 }, async (_, j) => {
          const n = 1 + ((k + j) % 4),
            { pixels } = images(n, 100 + k * 10 + j);
          const r = await cl.call('ModelInfer', {
            model_name: 'cnn',
            model_version: '1',
            inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
            raw_input_contents: [Buffer.from(pixels)],
          });
          return { r, pixels, n };
        }),
      );
      for (const { r, pixels, n } of await Promise.all(jobs)) {
        const want = await direct(cnn, pixels, n);
        assert.ok(maxAbsDiff(output(r, 'probabilities').data, want.probabilities) < 1e-5);
      }
    } finally {
      for (const cl of clients) cl.close();
    }
  });

  it('ModelStreamInfer: answers per request on one stream, errors in error_message without ending the stream', async () => {
    const stream = c.infer.ModelStreamInfer();
    const got: any[] = [];
    const ended = new Promise<void>((resolve, reject) => {
      stream.on('data', (d: any) => got.push(d));
      stream.on('end', resolve);
      stream.on('error', reject);
    });
    const { pixels } = images(2, 9);
    stream.write({
      model_name: 'cnn',
      model_version: '1',
      id: 'a',
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, IMG] }],
      raw_input_contents: [Buffer.from(pixels.subarray(0, IMG))],
    });
    stream.write({ model_name: 'nope', id: 'b', inputs: [] });
    stream.write({
      model_name: 'cnn',
      model_version: '1',
      id: 'c',
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, IMG] }],
      raw_input_contents: [Buffer.from(pixels.subarray(IMG))],
    });
    stream.end();
    await ended;
    assert.equal(got.length, 3);
    const want = await direct(cnn, pixels, 2);
    const byId = Object.fromEntries(
      got.filter(g => g.infer_response).map(g => [g.infer_response.id, g.infer_response]),
    );
    assert.ok(maxAbsDiff(output(byId.a, 'probabilities').data, want.probabilities.slice(0, 10)) < 1e-5);
    assert.ok(maxAbsDiff(output(byId.c, 'probabilities').data, want.probabilities.slice(10)) < 1e-5);
    assert.match(got.find(g => g.error_message).error_message, /unknown model "nope"/);
  });

  it('models appear while running: one put in with addModelVersion, and a half-written one that is reported, then loads when whole', async () => {
    await expectStatus(c.call('ModelReady', { name: 'late' }), S.NOT_FOUND);
    const src = path.join(dir, 'late.onnx');
    fs.writeFileSync(src, cnn2);
    addModelVersion(repo, 'late', src);
    await waitFor(async () => (await c.call('ModelReady', { name: 'late' })).ready, 15_000, 'model late to load');
    const { pixels } = images(1, 10);
    assert.ok(
      maxAbsDiff(
        output(await infer('late', pixels, 1), 'probabilities').data,
        (await direct(cnn2, pixels, 1)).probabilities,
      ) < 1e-5,
    );

    // a copy cut short: never served, reported with the file; completing the copy makes it load
    const file = path.join(repo, 'partial', '1', 'model.onnx');
    fs.mkdirSync(path.dirname(file), { recursive: true });
    fs.writeFileSync(file, cnn.subarray(0, cnn.length >> 1));
    await waitFor(
      () => server.repo.status().find(s => s.model === 'partial' && s.state === 'failed'),
      15_000,
      'the half-written model to be reported',
    );
    await expectStatus(infer('partial', pixels, 1), S.UNAVAILABLE, /partial.*model\.onnx/);
    fs.writeFileSync(file, cnn);
    await waitFor(
      async () => (await c.call('ModelReady', { name: 'partial' })).ready,
      15_000,
      'model partial to load once whole',
    );
    assert.ok(
      maxAbsDiff(
        output(await infer('partial', pixels, 1), 'probabilities').data,
        (await direct(cnn, pixels, 1)).probabilities,
      ) < 1e-5,
    );

    // a new version becomes the default; removing it falls back
    addModelVersion(repo, 'late', path.join(repo, 'cnn', '1', 'model.onnx'));
    await waitFor(
      async () =>
        (await c.call('ModelMetadata', { name: 'late' })).versions.length === 2 &&
        (await c.call('ModelReady', { name: 'late', version: '2' })).ready,
      15_000,
      'version 2 of late',
    );
    assert.equal((await infer('late', pixels, 1)).model_version, '2');
    fs.rmSync(path.join(repo, 'late', '2'), { recursive: true });
    await waitFor(
      async () => (await c.call('ModelMetadata', { name: 'late' })).versions.length === 1,
      15_000,
      'version 2 of late to go',
    );
    assert.equal((await infer('late', pixels, 1)).model_version, '1');
  });

  it('grpc.health.v1: Check and Watch SERVING for the server and the inference service, NOT_FOUND for other services', async () => {
    assert.equal((await c.check('')).status, 'SERVING');
    assert.equal((await c.check('inference.GRPCInferenceService')).status, 'SERVING');
    await expectStatus(c.check('no.such.Service'), S.NOT_FOUND, /unknown service/);
    const watch = c.health.Watch({ service: '' });
    const first = await new Promise<any>((resolve, reject) => {
      watch.once('data', resolve);
      watch.once('error', reject);
    });
    assert.equal(first.status, 'SERVING');
    watch.cancel();
  });

  it('garbage instead of a protobuf message is refused and the server keeps serving', async () => {
    const raw = new grpc.Client(address, grpc.credentials.createInsecure());
    try {
      const junk = Buffer.from(Array.from({ length: 300 }, (_, i) => (i * 97 + 13) & 0xff));
      const err = await new Promise<grpc.ServiceError>(resolve =>
        raw.makeUnaryRequest(
          '/inference.GRPCInferenceService/ModelInfer',
          (b: Buffer) => b,
          (b: Buffer) => b,
          junk,
          (e: grpc.ServiceError | null) => resolve(e!),
        ),
      );
      assert.ok(err, 'the call failed');
      assert.notEqual(err.code, S.OK);
    } finally {
      raw.close();
    }
    assert.equal((await c.call('ServerLive', {})).live, true);
    assert.equal(output(await infer('cnn', images(1, 11).pixels, 1), 'predicted_class').data.length, 1);
  });
});

describe('serve: a repository whose files were written just before the start', () => {
  it('waits for them to settle: the model is ready when start() resolves, not at the next poll', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-serve-fresh-'));
    fs.mkdirSync(path.join(dir, 'cnn', '1'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'cnn', '1', 'model.onnx'), cnnModel(3));
    const repo = new ModelRepository(dir, { pollMs: 60_000, settleMs: 300, runtime: { threads: 1 } });
    try {
      await repo.start();
      assert.deepEqual(
        repo.status().map(v => [v.model, v.version, v.state]),
        [['cnn', '1', 'ready']],
      );
      assert.equal(repo.get('cnn').version, '1');
    } finally {
      await repo.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});
