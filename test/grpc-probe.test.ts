// The benchmark's minimal gRPC client (bench/grpc-probe.ts) against a real fleet server: it must get the answer
// the grpc-js client gets, and report gRPC errors as errors, or its latencies would measure something else.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InferenceServer } from '../serving/grpc-server.ts';
import {
  encodeInferRequest,
  inferenceService,
  type ModelInferRequest,
  type ModelInferResponse,
} from '../serving/protocol.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { connectProbe, GrpcStatusError, type GrpcProbe } from '../bench/grpc-probe.ts';
import { connect, cnnModel, images, IMG, type Clients } from './helpers/serve.ts';

describe('bench: the minimal gRPC client of fleet bench serve', function () {
  let dir: string, server: InferenceServer, c: Clients, probe: GrpcProbe;
  const infer = inferenceService.ModelInfer;
  const request = (model: string, pixels: Uint8Array, n: number): ModelInferRequest => ({
    model_name: model,
    inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
    raw_input_contents: [pixels],
  });

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-probe-'));
    fs.mkdirSync(path.join(dir, 'cnn', '1'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'cnn', '1', 'model.onnx'), cnnModel(3));
    const old = new Date(Date.now() - 60_000);
    fs.utimesSync(path.join(dir, 'cnn', '1', 'model.onnx'), old, old);
    server = new InferenceServer({
      models: dir,
      pollMs: 100,
      settleMs: 300,
      runtime: { threads: 1 },
      metrics: createMetrics({ defaultMetrics: false }),
    });
    const address = `127.0.0.1:${await server.start('127.0.0.1', 0)}`;
    c = connect(address);
    probe = connectProbe(address);
  });

  after(async () => {
    probe?.close();
    c?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('gets the same answer as the grpc-js client, call after call', async () => {
    const { pixels } = images(3, 7);
    const req = request('cnn', pixels, 3),
      bytes = encodeInferRequest(req);
    const expected = (await c.call('ModelInfer', req)) as ModelInferResponse;
    for (let i = 0; i < 3; i++) {
      const got = infer.responseDeserialize(
        await probe.call('/inference.GRPCInferenceService/ModelInfer', bytes),
      ) as ModelInferResponse;
      assert.deepEqual(
        got.outputs.map(o => [o.name, o.shape]),
        expected.outputs.map(o => [o.name, o.shape]),
      );
      assert.deepEqual(
        got.raw_output_contents.map(b => Buffer.from(b).toString('hex')),
        expected.raw_output_contents.map(b => Buffer.from(b).toString('hex')),
      );
    }
    assert.equal(expected.outputs.find(o => o.name === 'probabilities')!.shape.join(), '3,10');
  });

  it('reports gRPC errors with their status, and carries on', async () => {
    const unknown = encodeInferRequest(request('no-such-model', new Uint8Array(IMG), 1));
    await assert.rejects(
      probe.call('/inference.GRPCInferenceService/ModelInfer', unknown),
      (e: unknown) => e instanceof GrpcStatusError && e.code === 5 && /no-such-model/.test(e.message),
    );
    const wrongShape = encodeInferRequest(request('cnn', new Uint8Array(IMG), 2)); // 2 images declared, 1 sent
    await assert.rejects(
      probe.call('/inference.GRPCInferenceService/ModelInfer', wrongShape),
      (e: unknown) => e instanceof GrpcStatusError && e.code === 3,
    );
    await assert.rejects(
      probe.call('/inference.GRPCInferenceService/NoSuchMethod', new Uint8Array(0)),
      (e: unknown) => e instanceof GrpcStatusError && e.code === 12,
    );
    const live = await probe.call('/inference.GRPCInferenceService/ServerLive', new Uint8Array(0));
    assert.deepEqual(inferenceService.ServerLive.responseDeserialize(live), { live: true });
  });
});
