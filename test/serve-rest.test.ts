// The KServe v2 REST binding, driven by a client written here from the protocol's specification (KServe's
// "required_api" REST section and Triton's binary tensor data extension) with fetch, not from fleet's code:
// a briefly trained CNN classifies MNIST test images with JSON and with binary tensors at the same accuracy
// (and the same answers) as over gRPC; health and metadata; every error status.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import type * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { InferenceServer } from '../serving/grpc-server.ts';
import { listenHttp } from '../serving/rest.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { trainClassifier, RECIPES } from '../engine/train/train-classifier.ts';
import { exportCnn } from '../engine/model/cnn.ts';
import { CNN } from '../engine/model/classifiers.ts';
import { loadDataset } from '../engine/data/datasets.ts';
import { connect, cnnModel, output, IMG, type Clients } from './helpers/serve.ts';

// ---- the client, from the specification

interface RestTensor {
  name: string;
  shape: number[];
  datatype: string;
  parameters?: Record<string, unknown>;
  data?: number[];
}
interface RestResponse {
  status: number;
  json: any;
  binary: Buffer;
  headers: Headers;
}

/** POST a JSON inference request; binary inputs go after the JSON, whose length Inference-Header-Content-Length gives. */
async function restInfer(base: string, model: string, body: object, binary: Buffer[] = []): Promise<RestResponse> {
  const json = Buffer.from(JSON.stringify(body));
  const headers: Record<string, string> = binary.length
    ? { 'content-type': 'application/octet-stream', 'inference-header-content-length': String(json.length) }
    : { 'content-type': 'application/json' };
  const res = await fetch(`${base}/v2/models/${encodeURIComponent(model)}/infer`, {
    method: 'POST',
    headers,
    body: Buffer.concat([json, ...binary]),
  });
  return readResponse(res);
}

async function readResponse(res: Response): Promise<RestResponse> {
  const bytes = Buffer.from(await res.arrayBuffer());
  const h = res.headers.get('inference-header-content-length');
  const jsonLength = h === null ? bytes.length : Number(h);
  const text = bytes.subarray(0, jsonLength).toString('utf8');
  return {
    status: res.status,
    json: text ? JSON.parse(text) : undefined,
    binary: bytes.subarray(jsonLength),
    headers: res.headers,
  };
}

/** An output's values: from "data", or from the binary part at the offset its predecessors' binary_data_size give. */
function restOutput(r: RestResponse, name: string): number[] {
  let at = 0;
  for (const o of r.json.outputs as RestTensor[]) {
    const size = o.parameters?.binary_data_size as number | undefined;
    if (o.name === name) {
      if (size === undefined) return o.data!;
      const b = new Uint8Array(r.binary.subarray(at, at + size));
      return o.datatype === 'INT64'
        ? Array.from(new BigInt64Array(b.slice().buffer), Number)
        : Array.from(new Float32Array(b.slice().buffer));
    }
    at += size ?? 0;
  }
  throw new Error(`no output ${name}`);
}

const get = async (url: string) => readResponse(await fetch(url));

describe('serve: the KServe v2 REST binding (JSON and binary tensors)', function () {
  let dir: string, server: InferenceServer, httpServer: http.Server, base: string, c: Clients, metrics: Metrics;
  let pixels: Uint8Array, labels: Uint8Array;
  const N = 300;

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-rest-'));
    // a CNN trained briefly (1000 images, 3 epochs: about 80% test accuracy), so that accuracy means something
    const d = loadDataset('mnist');
    const trained = await trainClassifier({
      def: CNN,
      recipe: { ...RECIPES.fleet, lr: 1e-3 },
      epochs: 3,
      batchSize: 64,
      seed: 1,
      valFraction: 0.15,
      train: d.train,
      test: d.test,
      limitTrain: 1000,
      limitTest: 10,
    });
    pixels = d.test.images.subarray(0, N * IMG);
    labels = d.test.labels.subarray(0, N);
    const put = (name: string, bytes: Uint8Array, config?: string) => {
      fs.mkdirSync(path.join(dir, name, '1'), { recursive: true });
      fs.writeFileSync(path.join(dir, name, '1', 'model.onnx'), bytes);
      if (config) fs.writeFileSync(path.join(dir, name, 'config.yaml'), config);
    };
    put('cnn', exportCnn(trained.params, trained.buffers));
    put('small', cnnModel(2), 'max_request_images: 4\n');
    put('broken', cnnModel(2).subarray(0, 3000));
    const old = new Date(Date.now() - 60_000);
    for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) fs.utimesSync(path.join(dir, f), old, old);
    metrics = createMetrics({ defaultMetrics: false });
    server = new InferenceServer({
      models: dir,
      pollMs: 100,
      settleMs: 300,
      runtime: { threads: 1 },
      metrics,
      maxMessageBytes: 1024 * 1024,
    });
    httpServer = await listenHttp(server, '127.0.0.1', 0, metrics);
    base = `http://127.0.0.1:${(httpServer.address() as { port: number }).port}`;
    c = connect(`127.0.0.1:${await server.start('127.0.0.1', 0)}`);
  });

  after(async () => {
    c?.close();
    httpServer?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('health, server and model metadata, model readiness', async () => {
    const live = await get(`${base}/v2/health/live`),
      ready = await get(`${base}/v2/health/ready`);
    assert.deepEqual([live.status, ready.status], [200, 200]);
    const meta = await get(`${base}/v2`);
    assert.equal(meta.json.name, 'fleet');
    assert.ok(meta.json.extensions.includes('binary_tensor_data'));
    const m = await get(`${base}/v2/models/cnn`);
    assert.deepEqual(m.json.versions, ['1']);
    assert.deepEqual(m.json.inputs, [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }]);
    assert.deepEqual(
      m.json.outputs.map((o: RestTensor) => o.name),
      ['probabilities', 'predicted_class'],
    );
    assert.equal((await get(`${base}/v2/models/cnn/versions/1`)).status, 200);
    assert.equal((await get(`${base}/v2/models/cnn/ready`)).status, 200);
    assert.equal((await get(`${base}/v2/models/cnn/versions/1/ready`)).status, 200);
    assert.equal((await get(`${base}/v2/models/broken/ready`)).status, 400, 'not ready: a 4xx');
    // /metrics shares the port
    assert.match(await (await fetch(`${base}/metrics`)).text(), /fleet_inference_requests_total/);
  });

  it("MNIST test images: JSON (UINT8) and binary (FP32 0-1) over REST give gRPC's answers and accuracy", async () => {
    const grpcClasses: number[] = [],
      jsonClasses: number[] = [],
      binClasses: number[] = [];
    let maxDiff = 0;
    for (let at = 0; at < N; at += 64) {
      const n = Math.min(64, N - at),
        batch = pixels.subarray(at * IMG, (at + n) * IMG);
      const g = await c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
        raw_input_contents: [Buffer.from(batch)],
      });
      grpcClasses.push(...output(g, 'predicted_class').data);
      const gp = output(g, 'probabilities').data;

      const j = await restInfer(base, 'cnn', {
        id: `json-${at}`,
        inputs: [{ name: 'input', shape: [n, IMG], datatype: 'UINT8', data: Array.from(batch) }],
      });
      assert.equal(j.status, 200, JSON.stringify(j.json));
      assert.equal(j.headers.get('content-type'), 'application/json');
      assert.equal(j.json.id, `json-${at}`);
      assert.equal(j.json.model_name, 'cnn');
      assert.equal(j.json.model_version, '1');
      jsonClasses.push(...restOutput(j, 'predicted_class'));

      const unit = Buffer.from(Float32Array.from(batch, p => p / 255).buffer);
      const b = await restInfer(
        base,
        'cnn',
        {
          inputs: [
            { name: 'input', shape: [n, 1, 28, 28], datatype: 'FP32', parameters: { binary_data_size: unit.length } },
          ],
          outputs: [
            { name: 'probabilities', parameters: { binary_data: true } },
            { name: 'predicted_class', parameters: { binary_data: true } },
          ],
        },
        [unit],
      );
      assert.equal(b.status, 200, JSON.stringify(b.json));
      assert.equal(b.binary.length, n * 10 * 4 + n * 8);
      binClasses.push(...restOutput(b, 'predicted_class'));
      const bp = restOutput(b, 'probabilities');
      for (let i = 0; i < gp.length; i++) maxDiff = Math.max(maxDiff, Math.abs(gp[i] - bp[i]));
    }
    const accuracy = (classes: number[]) => classes.filter((k, i) => k === labels[i]).length / N;
    assert.ok(accuracy(grpcClasses) > 0.6, `gRPC accuracy ${accuracy(grpcClasses)}: the model is trained`);
    assert.deepEqual(jsonClasses, grpcClasses);
    assert.deepEqual(binClasses, grpcClasses);
    assert.equal(accuracy(jsonClasses), accuracy(grpcClasses));
    assert.ok(maxDiff < 1e-5, `FP32 0-1 and UINT8 probabilities differ by ${maxDiff}`);
  });

  it('nested JSON data, binary_data_output for every output, a version in the path', async () => {
    const one = Array.from(pixels.subarray(0, IMG));
    const nested = Array.from({ length: 28 }, (_, y) => one.slice(y * 28, (y + 1) * 28));
    const r = await fetch(`${base}/v2/models/cnn/versions/1/infer`, {
      method: 'POST',
      body: JSON.stringify({
        parameters: { binary_data_output: true, input_range: '0-255' },
        inputs: [{ name: 'input', shape: [1, 28, 28], datatype: 'FP32', data: [nested] }],
      }),
    }).then(readResponse);
    assert.equal(r.status, 200, JSON.stringify(r.json));
    assert.ok(
      r.json.outputs.every(
        (o: RestTensor) => typeof o.parameters?.binary_data_size === 'number' && o.data === undefined,
      ),
    );
    assert.equal(
      restOutput(r, 'predicted_class')[0],
      (
        await restInfer(base, 'cnn', {
          inputs: [{ name: 'input', shape: [1, IMG], datatype: 'UINT8', data: one }],
        }).then(x => restOutput(x, 'predicted_class'))
      )[0],
    );
  });

  it('errors: {"error": ...} with 400, 404, 405, 413, 429, 503, and the server keeps answering', async () => {
    const one = Array.from(pixels.subarray(0, IMG));
    const ok = { inputs: [{ name: 'input', shape: [1, IMG], datatype: 'UINT8', data: one }] };
    const expectError = async (p: Promise<RestResponse>, status: number, re: RegExp) => {
      const r = await p;
      assert.equal(r.status, status, JSON.stringify(r.json));
      assert.equal(typeof r.json?.error, 'string', `${status}: ${JSON.stringify(r.json)}`);
      assert.match(r.json.error, re);
    };
    await expectError(restInfer(base, 'nope', ok), 404, /unknown model "nope"/);
    await expectError(get(`${base}/v2/models/nope`), 404, /unknown model "nope"/);
    await expectError(
      fetch(`${base}/v2/models/cnn/versions/7/infer`, { method: 'POST', body: JSON.stringify(ok) }).then(readResponse),
      404,
      /no version "7"/,
    );
    await expectError(get(`${base}/v2/nowhere`), 404, /no such path/);
    await expectError(
      fetch(`${base}/v2/models/cnn/infer`, { method: 'POST', body: '{"inputs": [' }).then(readResponse),
      400,
      /not JSON/,
    );
    await expectError(restInfer(base, 'cnn', {}), 400, /no "inputs" array/);
    await expectError(
      restInfer(base, 'cnn', { inputs: [{ name: 'input', shape: [1, 3, 28, 28], datatype: 'UINT8', data: one }] }),
      400,
      /shape \[1,3,28,28\]/,
    );
    await expectError(
      restInfer(base, 'cnn', { inputs: [{ name: 'input', shape: [1, IMG], datatype: 'FP32', data: one }] }),
      400,
      /outside 0 to 1.*input_range/,
    );
    await expectError(
      restInfer(base, 'cnn', {
        inputs: [{ name: 'input', shape: [1, IMG], datatype: 'UINT8', data: [...one.slice(1), 'x'] }],
      }),
      400,
      /array of numbers/,
    );
    await expectError(
      restInfer(base, 'cnn', { inputs: [{ name: 'input', shape: [2, IMG], datatype: 'UINT8', data: one }] }),
      400,
      /data holds 784 values, shape \[2,784\] needs 1568/,
    );
    await expectError(
      restInfer(base, 'cnn', { ...ok, outputs: [{ name: 'probabilities' }, { name: 'probabilities' }] }),
      400,
      /named more than once/,
    );
    await expectError(
      restInfer(
        base,
        'cnn',
        { inputs: [{ name: 'input', shape: [1, IMG], datatype: 'UINT8', parameters: { binary_data_size: 10_000 } }] },
        [Buffer.alloc(IMG)],
      ),
      400,
      /binary_data_size 10000 does not fit/,
    );
    await expectError(
      restInfer(
        base,
        'cnn',
        { inputs: [{ name: 'input', shape: [1, IMG], datatype: 'UINT8', parameters: { binary_data_size: IMG } }] },
        [Buffer.alloc(IMG + 5)],
      ),
      400,
      /5 binary bytes/,
    );
    await expectError(
      fetch(`${base}/v2/models/cnn/infer`, {
        method: 'POST',
        headers: { 'inference-header-content-length': '99999' },
        body: JSON.stringify(ok),
      }).then(readResponse),
      400,
      /Inference-Header-Content-Length/,
    );
    await expectError(
      fetch(`${base}/v2/models/cnn/infer`).then(readResponse),
      405,
      /"GET" is not allowed here; use POST/,
    );
    await expectError(
      restInfer(base, 'small', {
        inputs: [{ name: 'input', shape: [5, IMG], datatype: 'UINT8', data: Array(5 * IMG).fill(0) }],
      }),
      429,
      /5 images in one request/,
    );
    await expectError(restInfer(base, 'broken', ok), 503, /broken\/1\/model\.onnx: not a loadable ONNX model/);
    const big = Buffer.alloc(2 * 1024 * 1024, 0x20); // 2 MiB of spaces: over the 1 MiB body bound
    await expectError(
      fetch(`${base}/v2/models/cnn/infer`, { method: 'POST', body: big }).then(readResponse),
      413,
      /at most 1048576/,
    );
    const r = await restInfer(base, 'cnn', ok);
    assert.equal(r.status, 200);
    const m = (await metrics.registry.getSingleMetric('fleet_inference_requests_total')!.get()).values;
    assert.ok(
      m.some(v => v.labels.model === 'small' && v.labels.status === 'RESOURCE_EXHAUSTED'),
      'REST requests are counted like gRPC ones',
    );
  });
});
