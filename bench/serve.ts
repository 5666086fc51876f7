// `fleet bench serve`: the gRPC server (`fleet serve` in a child process, a real client over loopback) against
// the same model run in this process with onnxruntime, in the same run. The model is a 5-member one-graph
// CNN ensemble with untrained weights (the cost of a forward pass does not depend on what the weights learned).
// Measured: single-image latency p50/p99 at concurrency 1 and 16 (the dynamic batcher merges concurrent
// requests), throughput with requests of 64 images, and the ratios to in-process runs. Single-image latency at
// concurrency 1 is measured twice: with the grpc-js client (what a Node user gets) and with a minimal HTTP/2 gRPC
// client (bench/grpc-probe.ts, like Triton's perf_analyzer), whose own garbage does not land in the numbers.
// The REST binding is measured in the same rounds (binary tensors in and out, a keep-alive node:http client):
// single images at concurrency 1 and requests of batch-size images, against gRPC's numbers of the same run.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import { exportEnsemble } from '../engine/ensemble/export.ts';
import { cnnParams, cnnBuffers } from '../engine/model/cnn.ts';
import { TensorSet } from '../engine/model/params.ts';
import { createSession, f32 } from '../engine/runtime.ts';
import { normalise, IMAGE_SIZE } from '../engine/data/datasets.ts';
import { Rng } from '../engine/util/random.ts';
import {
  InferenceClient,
  encodeInferRequest,
  inferenceService,
  type ModelInferRequest,
  type ModelInferResponse,
} from '../serving/protocol.ts';
import { connectProbe } from './grpc-probe.ts';

export interface ServeBenchOptions {
  threads: number;
  iters: number;
  warmup: number;
  batchSize: number;
  members?: number;
}

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
function quantile(xs: number[], q: number): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil(q * s.length) - 1))];
}
const mean = (xs: number[]) => xs.reduce((a, b) => a + b, 0) / xs.length;
const stats = (ms: number[]) => ({
  p50_ms: round(quantile(ms, 0.5)),
  p99_ms: round(quantile(ms, 0.99)),
  mean_ms: round(mean(ms)),
});

function pixels(n: number, seed: number): Uint8Array {
  const r = new Rng(seed);
  return Uint8Array.from({ length: n * IMAGE_SIZE }, () => Math.floor(r.next() * 256));
}

/** Starts `fleet serve` on free ports; resolves with its gRPC and REST addresses and a stop function. */
interface Served {
  address: string;
  rest: { host: string; port: number };
  stop: () => Promise<void>;
}
async function startServer(repo: string, threads: number): Promise<Served> {
  const args = [
    'serve',
    '--models',
    repo,
    '--grpc',
    '127.0.0.1:0',
    '--http',
    '127.0.0.1:0',
    '--threads',
    String(threads),
  ];
  const child = spawn(process.execPath, [path.join(ROOT, 'bin', 'fleet.js'), ...args], {
    stdio: ['ignore', 'ignore', 'pipe'],
  });
  let log = '';
  const [address, restPort] = await new Promise<[string, number]>((resolve, reject) => {
    const timer = setTimeout(() => reject(new Error(`fleet serve did not start:\n${log}`)), 60_000);
    child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
      const m = /gRPC on ([\d.]+:\d+).*REST on http:\/\/[\d.]+:(\d+)\/v2/.exec(log);
      if (m) {
        clearTimeout(timer);
        resolve([m[1], Number(m[2])]);
      }
    });
    child.once('exit', code => {
      clearTimeout(timer);
      reject(new Error(`fleet serve exited (${code}):\n${log}`));
    });
  });
  const stop = async () => {
    child.kill('SIGTERM');
    await new Promise(r => child.once('exit', r));
  };
  return { address, rest: { host: '127.0.0.1', port: restPort }, stop };
}

/** A REST inference call with binary tensors (Triton's extension): UINT8 images in, probabilities out. */
function restClient(at: { host: string; port: number }) {
  const agent = new http.Agent({ keepAlive: true, maxSockets: 1 });
  const body = (p: Uint8Array, n: number) => {
    const head = Buffer.from(
      JSON.stringify({
        inputs: [
          { name: 'input', shape: [n, IMAGE_SIZE], datatype: 'UINT8', parameters: { binary_data_size: p.length } },
        ],
        outputs: [{ name: 'probabilities', parameters: { binary_data: true } }],
      }),
    );
    return { bytes: Buffer.concat([head, p]), headLength: head.length, answerBytes: n * 40 };
  };
  const call = (b: ReturnType<typeof body>) =>
    new Promise<void>((resolve, reject) => {
      const req = http.request(
        {
          ...at,
          path: '/v2/models/ensemble/infer',
          method: 'POST',
          agent,
          headers: {
            'content-type': 'application/octet-stream',
            'content-length': b.bytes.length,
            'inference-header-content-length': b.headLength,
          },
        },
        res => {
          const chunks: Buffer[] = [];
          res.on('data', (c: Buffer) => chunks.push(c));
          res.on('end', () => {
            const all = Buffer.concat(chunks),
              json = Number(res.headers['inference-header-content-length']);
            if (res.statusCode === 200 && all.length - json === b.answerBytes) resolve();
            else reject(new Error(`REST: ${res.statusCode}: ${all.subarray(0, 200).toString()}`));
          });
        },
      );
      req.on('error', reject);
      req.end(b.bytes);
    });
  return { body, call, close: () => agent.destroy() };
}

export async function benchServe(o: ServeBenchOptions) {
  const members = o.members ?? 5,
    concurrency = 16;
  const model = exportEnsemble(
    Array.from({ length: members }, (_, i) => ({
      kind: 'cnn' as const,
      params: TensorSet.init(cnnParams(), i + 1),
      buffers: TensorSet.init(cnnBuffers(), i + 101),
    })),
    Array.from({ length: members }, () => 1),
  );
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-bench-serve-'));
  fs.mkdirSync(path.join(dir, 'ensemble', '1'), { recursive: true });
  fs.writeFileSync(path.join(dir, 'ensemble', '1', 'model.onnx'), model);
  const one = pixels(1, 1),
    batch = pixels(o.batchSize, 2);

  // in-process: the same model, the same threads, the same uint8 -> normalised conversion per call
  const session = await createSession(model, { threads: o.threads });
  const runLocal = async (p: Uint8Array, n: number) => {
    await session.run({ input: f32(normalise(p, new Float32Array(p.length)), [n, 1, 28, 28]) }, ['probabilities']);
  };
  const server = await startServer(dir, o.threads);
  const clients = Array.from(
    { length: concurrency },
    () =>
      new InferenceClient(server.address, grpc.credentials.createInsecure()) as unknown as {
        ModelInfer(req: object, cb: (e: grpc.ServiceError | null, r: ModelInferResponse) => void): void;
        close(): void;
      },
  );
  const request = (p: Uint8Array, n: number) => ({
    model_name: 'ensemble',
    inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMAGE_SIZE] }],
    raw_input_contents: [p],
    outputs: [{ name: 'probabilities' }],
  });
  const call = (k: number, req: object) =>
    new Promise<void>((resolve, reject) => clients[k].ModelInfer(req, e => (e ? reject(e) : resolve())));
  const single = request(one, 1),
    big = request(batch, o.batchSize);
  const probe = connectProbe(server.address),
    singleBytes = encodeInferRequest(single as ModelInferRequest);
  const rest = restClient(server.rest),
    restSingle = rest.body(one, 1),
    restBig = rest.body(batch, o.batchSize);
  const probeCall = async () => {
    const r = inferenceService.ModelInfer.responseDeserialize(
      await probe.call('/inference.GRPCInferenceService/ModelInfer', singleBytes),
    ) as ModelInferResponse;
    if (r.raw_output_contents[0]?.length !== 40)
      throw new Error(`probe: expected 10 probabilities, got ${r.raw_output_contents[0]?.length} bytes`);
  };
  const timed = async (times: number, fn: () => Promise<void>, into: number[]) => {
    for (let i = 0; i < times; i++) {
      const t0 = performance.now();
      await fn();
      into.push(performance.now() - t0);
    }
  };
  try {
    for (let i = 0; i < o.warmup; i++) {
      await runLocal(one, 1);
      await call(0, single);
      await probeCall();
      await rest.call(restSingle);
    }
    for (let i = 0; i < 2; i++) {
      await runLocal(batch, o.batchSize);
      await call(0, big);
      await rest.call(restBig);
    }
    // served and in-process alternate in rounds, so that load from elsewhere on the machine hits both alike
    const rounds = 5,
      per = Math.max(2, Math.round(o.iters / rounds)),
      batchPer = Math.max(2, Math.round(o.iters / rounds / 20));
    const localSingle: number[] = [],
      c1: number[] = [],
      c1Probe: number[] = [],
      c16: number[] = [],
      localBatch: number[] = [],
      served: number[] = [];
    const ratios: number[] = [],
      restC1: number[] = [],
      restBatch: number[] = [];
    let c16Seconds = 0;
    for (let r = 0; r < rounds; r++) {
      await timed(per, () => runLocal(one, 1), localSingle);
      await timed(per, () => call(0, single), c1);
      await timed(per, probeCall, c1Probe);
      await timed(per, () => rest.call(restSingle), restC1);
      const t16 = performance.now();
      await Promise.all(
        clients.map(async (_, k) => {
          for (let i = 0; i < Math.ceil(per / concurrency) * 4; i++) await timed(1, () => call(k, single), c16);
        }),
      );
      c16Seconds += (performance.now() - t16) / 1000;
      const lb: number[] = [],
        sb: number[] = [];
      await timed(batchPer, () => runLocal(batch, o.batchSize), lb);
      await timed(batchPer, () => call(0, big), sb);
      await timed(batchPer, () => rest.call(restBig), restBatch);
      ratios.push(mean(lb) / mean(sb));
      localBatch.push(...lb);
      served.push(...sb);
    }
    const perSecond = (ms: number[], n: number) => round((n * 1000) / mean(ms), 1);
    return {
      model: `${members}-member one-graph CNN ensemble (untrained weights: same cost as trained)`,
      threads: o.threads,
      rounds,
      batch_size: o.batchSize,
      concurrency_1: { ...stats(c1), images_per_second: perSecond(c1, 1), requests: c1.length, client: 'grpc-js' },
      concurrency_1_minimal_client: {
        ...stats(c1Probe),
        images_per_second: perSecond(c1Probe, 1),
        requests: c1Probe.length,
        client: 'node:http2 (bench/grpc-probe.ts)',
      },
      concurrency_16: { ...stats(c16), images_per_second: round(c16.length / c16Seconds, 1), requests: c16.length },
      batch: { ...stats(served), images_per_second: perSecond(served, o.batchSize), requests: served.length },
      rest_concurrency_1: {
        ...stats(restC1),
        images_per_second: perSecond(restC1, 1),
        requests: restC1.length,
        client: 'node:http keep-alive, binary tensors',
      },
      rest_batch: {
        ...stats(restBatch),
        images_per_second: perSecond(restBatch, o.batchSize),
        requests: restBatch.length,
      },
      rest_over_grpc_single_p50_latency: round(quantile(restC1, 0.5) / quantile(c1, 0.5)),
      rest_over_grpc_single_p99_latency: round(quantile(restC1, 0.99) / quantile(c1, 0.99)),
      rest_over_grpc_batch_throughput: round(mean(served) / mean(restBatch)),
      in_process: {
        single: { ...stats(localSingle), images_per_second: perSecond(localSingle, 1), runs: localSingle.length },
        batch: { ...stats(localBatch), images_per_second: perSecond(localBatch, o.batchSize), runs: localBatch.length },
      },
      // the median over rounds of (served images/s) / (in-process images/s) with requests of batch_size images
      served_over_in_process_throughput: round(quantile(ratios, 0.5)),
      served_over_in_process_throughput_per_round: ratios.map(x => round(x)),
      served_over_in_process_single_p50_latency: round(quantile(c1, 0.5) / quantile(localSingle, 0.5)),
      targets: {
        concurrency_1_p99_ms_below: 5,
        throughput_ratio_at_least: 0.8,
        rest_over_grpc_single_latency_at_most: 1.5,
      },
    };
  } finally {
    for (const cl of clients) cl.close();
    probe.close();
    rest.close();
    await server.stop();
    await session.release();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
