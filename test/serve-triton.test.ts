// Triton's gRPC extensions (ModelConfig, ModelStatistics, RepositoryIndex, RepositoryModelLoad/Unload) through a
// client built from proto/inference.proto at run time, their REST equivalents through fetch, --model-control
// poll (load/unload refused) and explicit (nothing changes until a client asks), and the version label of the
// inference metrics.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { InferenceServer } from '../serving/grpc-server.ts';
import { listenHttp } from '../serving/rest.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { connect, expectStatus, cnnModel, milModel, images, output, IMG, type Clients } from './helpers/serve.ts';

const S = grpc.status;

function repository(): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-triton-'));
  const put = (name: string, version: string, bytes: Uint8Array) => {
    fs.mkdirSync(path.join(dir, name, version), { recursive: true });
    fs.writeFileSync(path.join(dir, name, version, 'model.onnx'), bytes);
  };
  put('cnn', '1', cnnModel(1));
  put('cnn', '2', cnnModel(2));
  fs.writeFileSync(path.join(dir, 'cnn', 'config.yaml'), 'max_batch_size: 32\nmax_queue_delay_ms: 2\n');
  put('mil', '1', milModel(3));
  put('broken', '1', cnnModel(4).subarray(0, 3000));
  fs.mkdirSync(path.join(dir, 'vote'));
  fs.writeFileSync(
    path.join(dir, 'vote', 'config.yaml'),
    'ensemble:\n  members:\n    - { name: cnn, weight: 2 }\n    - { name: cnn, version: 1, weight: 1 }\n  quorum: 1\n',
  );
  const old = new Date(Date.now() - 60_000);
  for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) fs.utimesSync(path.join(dir, f), old, old);
  return dir;
}

async function start(dir: string, modelControl: 'poll' | 'explicit', metrics?: Metrics) {
  const server = new InferenceServer({
    models: dir,
    pollMs: 100,
    settleMs: 200,
    runtime: { threads: 1 },
    metrics,
    modelControl,
  });
  const httpServer = await listenHttp(server, '127.0.0.1', 0);
  const c = connect(`127.0.0.1:${await server.start('127.0.0.1', 0)}`);
  return { server, httpServer, c, base: `http://127.0.0.1:${(httpServer.address() as { port: number }).port}` };
}

const getJson = async (url: string) => {
  const r = await fetch(url);
  return { status: r.status, json: (await r.json()) as any };
};
const post = async (url: string, body?: object) => {
  const r = await fetch(url, { method: 'POST', body: body ? JSON.stringify(body) : undefined });
  const text = await r.text();
  return { status: r.status, json: text ? JSON.parse(text) : undefined };
};

describe('serve: Triton extensions over gRPC and REST (model control poll)', function () {
  let dir: string, server: InferenceServer, httpServer: http.Server, c: Clients, base: string, metrics: Metrics;
  const infer = (model: string, n: number, extra: object = {}) =>
    c.call('ModelInfer', {
      model_name: model,
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
      raw_input_contents: [Buffer.from(images(n, n).pixels)],
      ...extra,
    });

  before(async () => {
    dir = repository();
    metrics = createMetrics({ defaultMetrics: false });
    ({ server, httpServer, c, base } = await start(dir, 'poll', metrics));
  });
  after(async () => {
    c?.close();
    httpServer?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("ModelConfig: inputs, outputs, max batch size, dynamic batching; a fan-out ensemble's members as steps; MIL unbatched", async () => {
    const { config } = await c.call('ModelConfig', { name: 'cnn' });
    assert.equal(config.name, 'cnn');
    assert.equal(config.platform, 'onnxruntime_onnx');
    assert.equal(config.backend, 'onnxruntime');
    assert.equal(config.max_batch_size, 32);
    assert.deepEqual(
      config.input.map((t: any) => [t.name, t.data_type, t.format, t.dims]),
      [['input', 'TYPE_FP32', 'FORMAT_NCHW', [1, 28, 28]]],
    );
    assert.deepEqual(
      config.output.map((t: any) => [t.name, t.data_type, t.dims]),
      [
        ['probabilities', 'TYPE_FP32', [10]],
        ['predicted_class', 'TYPE_INT64', []],
      ],
    );
    assert.equal(config.scheduling_choice, 'dynamic_batching');
    assert.equal(config.dynamic_batching.max_queue_delay_microseconds, 2000);

    const vote = (await c.call('ModelConfig', { name: 'vote' })).config;
    assert.equal(vote.platform, 'ensemble');
    assert.equal(vote.scheduling_choice, 'ensemble_scheduling');
    assert.deepEqual(
      vote.ensemble_scheduling.step.map((s: any) => [s.model_name, s.model_version]),
      [
        ['cnn', -1],
        ['cnn', 1],
      ],
    );
    assert.equal(vote.parameters.ensemble_weights.string_value, '[2,1]');

    const mil = (await c.call('ModelConfig', { name: 'mil' })).config;
    assert.equal(mil.max_batch_size, 0);
    assert.deepEqual(mil.input[0].dims, [-1, 1, 28, 28]);

    await expectStatus(c.call('ModelConfig', { name: 'nope' }), S.NOT_FOUND, /unknown model "nope"/);
    await expectStatus(c.call('ModelConfig', { name: 'cnn', version: '9' }), S.NOT_FOUND, /no version "9"/);
    await expectStatus(c.call('ModelConfig', { name: 'broken' }), S.UNAVAILABLE);
    // REST: the same configuration
    const rest = await getJson(`${base}/v2/models/cnn/config`);
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.json.input, [
      { name: 'input', data_type: 'TYPE_FP32', format: 'FORMAT_NCHW', dims: [1, 28, 28] },
    ]);
    assert.equal(rest.json.max_batch_size, 32);
    assert.equal((await getJson(`${base}/v2/models/nope/config`)).status, 404);
  });

  it('ModelStatistics: successes, failures, images, session runs and batch sizes per version, as the requests made them', async () => {
    const before = (await c.call('ModelStatistics', { name: 'cnn', version: '2' })).model_stats[0];
    await Promise.all([infer('cnn', 1), infer('cnn', 2), infer('cnn', 3)]);
    await expectStatus(infer('cnn', 1, { outputs: [{ name: 'nope' }] }), S.INVALID_ARGUMENT);
    const { model_stats } = await c.call('ModelStatistics', { name: 'cnn' });
    assert.deepEqual(
      model_stats.map((s: any) => s.version),
      ['1', '2'],
    );
    const v2 = model_stats[1],
      v1 = model_stats[0];
    assert.equal(v2.inference_count - before.inference_count, 6);
    assert.equal(v2.inference_stats.success.count - before.inference_stats.success.count, 3);
    assert.equal(v2.inference_stats.fail.count - before.inference_stats.fail.count, 1);
    assert.ok(v2.inference_stats.success.ns > before.inference_stats.success.ns);
    assert.equal(v2.inference_stats.queue.count - before.inference_stats.queue.count, 3, 'each request queued once');
    const runs = v2.execution_count - before.execution_count;
    assert.ok(runs >= 1 && runs <= 3, `${runs} session runs`);
    const images = v2.batch_stats.reduce((s: number, b: any) => s + b.batch_size * b.compute_infer.count, 0);
    const imagesBefore = before.batch_stats.reduce((s: number, b: any) => s + b.batch_size * b.compute_infer.count, 0);
    assert.equal(images - imagesBefore, 6, 'the batch statistics account for every image');
    assert.ok(Math.abs(v2.last_inference - Date.now()) < 60_000);
    assert.equal(v1.inference_count, 0, 'version 1 was not asked');
    // every model when no name is given; unknown names NOT_FOUND; REST the same
    const all = (await c.call('ModelStatistics', {})).model_stats.map((s: any) => `${s.name}/${s.version}`);
    assert.ok(
      all.includes('cnn/2') && all.includes('mil/1') && !all.some((n: string) => n.startsWith('broken')),
      all.join(' '),
    );
    await expectStatus(c.call('ModelStatistics', { name: 'nope' }), S.NOT_FOUND);
    const rest = await getJson(`${base}/v2/models/cnn/versions/2/stats`);
    assert.equal(rest.status, 200);
    assert.equal(rest.json.model_stats[0].inference_count, v2.inference_count);
    assert.ok((await getJson(`${base}/v2/models/stats`)).json.model_stats.length >= 4);
  });

  it('RepositoryIndex: every version with its state and reason (no absolute paths); ready only on request', async () => {
    const { models } = await c.call('RepositoryIndex', {});
    const rows = Object.fromEntries(models.map((m: any) => [`${m.name}/${m.version}`, m]));
    assert.deepEqual(Object.keys(rows).sort(), ['broken/1', 'cnn/1', 'cnn/2', 'mil/1', 'vote/1']);
    assert.equal(rows['cnn/2'].state, 'READY');
    assert.equal(rows['broken/1'].state, 'UNAVAILABLE');
    assert.match(rows['broken/1'].reason, /broken\/1\/model\.onnx: not a loadable ONNX model/);
    assert.ok(!rows['broken/1'].reason.includes(dir));
    const ready = (await c.call('RepositoryIndex', { ready: true })).models.map((m: any) => m.name);
    assert.ok(!ready.includes('broken') && ready.includes('cnn'));
    const rest = await post(`${base}/v2/repository/index`, { ready: true });
    assert.equal(rest.status, 200);
    assert.deepEqual(rest.json.map((m: any) => `${m.name}/${m.version}`).sort(), ['cnn/1', 'cnn/2', 'mil/1', 'vote/1']);
    assert.equal((await post(`${base}/v2/repository/index`)).json.length, 5);
  });

  it('load and unload are refused while the repository is polled', async () => {
    await expectStatus(
      c.call('RepositoryModelLoad', { model_name: 'cnn' }),
      S.FAILED_PRECONDITION,
      /--model-control explicit/,
    );
    await expectStatus(
      c.call('RepositoryModelUnload', { model_name: 'cnn' }),
      S.FAILED_PRECONDITION,
      /--model-control explicit/,
    );
    const r = await post(`${base}/v2/repository/models/cnn/unload`);
    assert.equal(r.status, 400);
    assert.match(r.json.error, /explicit/);
    assert.equal(output(await infer('cnn', 1), 'predicted_class').data.length, 1);
  });

  it('inference metrics carry the model version', async () => {
    await infer('cnn', 1, { model_version: '1' });
    const values = (await metrics.registry.getSingleMetric('fleet_inference_requests_total')!.get()).values;
    const ok = (version: string) =>
      values.find(v => v.labels.model === 'cnn' && v.labels.version === version && v.labels.status === 'OK')?.value ??
      0;
    assert.equal(ok('1'), 1);
    assert.ok(ok('2') >= 3);
  });
});

describe('serve: --model-control explicit', function () {
  let dir: string, server: InferenceServer, httpServer: http.Server, c: Clients, base: string;
  const infer = (model: string) =>
    c.call('ModelInfer', {
      model_name: model,
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, IMG] }],
      raw_input_contents: [Buffer.from(images(1, 1).pixels)],
    });

  before(async () => {
    dir = repository();
    ({ server, httpServer, c, base } = await start(dir, 'explicit'));
  });
  after(async () => {
    c?.close();
    httpServer?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('loads every model at the start; a model added later is served only after RepositoryModelLoad', async () => {
    assert.equal(output(await infer('cnn'), 'predicted_class').data.length, 1);
    fs.mkdirSync(path.join(dir, 'late', '1'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'late', '1', 'model.onnx'), cnnModel(9));
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(path.join(dir, 'late', '1', 'model.onnx'), old, old);
    await new Promise(resolve => setTimeout(resolve, 400)); // two poll periods of the poll mode: nothing happens here
    await expectStatus(infer('late'), S.NOT_FOUND);
    await c.call('RepositoryModelLoad', { model_name: 'late' });
    assert.equal(output(await infer('late'), 'predicted_class').data.length, 1);
    await expectStatus(c.call('RepositoryModelLoad', { model_name: 'nope' }), S.NOT_FOUND, /no model folder "nope"/);
    await expectStatus(c.call('RepositoryModelLoad', { model_name: '../etc' }), S.NOT_FOUND, /letters, digits/);
    await expectStatus(
      c.call('RepositoryModelLoad', { model_name: 'broken' }),
      S.UNAVAILABLE,
      /not a loadable ONNX model/,
    );
  });

  it('RepositoryModelUnload (and REST unload/load): unloaded models are NOT_FOUND, listed as unloaded, and come back on load', async () => {
    await c.call('RepositoryModelUnload', { model_name: 'cnn' });
    await expectStatus(infer('cnn'), S.NOT_FOUND);
    const idx = (await c.call('RepositoryIndex', {})).models.filter((m: any) => m.name === 'cnn');
    assert.deepEqual(
      idx.map((m: any) => [m.state, m.reason]),
      [['UNAVAILABLE', 'unloaded']],
    );
    await expectStatus(c.call('RepositoryModelUnload', { model_name: 'cnn' }), S.NOT_FOUND);
    assert.equal((await post(`${base}/v2/repository/models/cnn/load`)).status, 200);
    assert.equal(output(await infer('cnn'), 'predicted_class').data.length, 1);
    assert.equal((await post(`${base}/v2/repository/models/mil/unload`)).status, 200);
    assert.equal((await getJson(`${base}/v2/models/mil`)).status, 404);
    assert.equal((await post(`${base}/v2/repository/models/nope/unload`)).status, 404);
  });
});
