// Helpers for the serving tests: a KServe v2 client built from proto/inference.proto at run time
// (@grpc/proto-loader, as any third-party client would), promisified calls, tiny real models, and the
// reference answers from running the same .onnx directly with onnxruntime.
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import { exportCnn, cnnParams, cnnBuffers } from '../../engine/model/cnn.ts';
import { exportMil, milParams, milBuffers } from '../../engine/model/mil.ts';
import { exportEnsemble } from '../../engine/ensemble/export.ts';
import { TensorSet } from '../../engine/model/params.ts';
import { Rng } from '../../engine/util/random.ts';
import { createSession, f32 } from '../../engine/runtime.ts';
import { REPO_ROOT } from './cli.ts';

const OPTIONS = { keepCase: true, longs: Number, enums: String, defaults: true, oneofs: true };
const def = protoLoader.loadSync(
  [path.join(REPO_ROOT, 'proto', 'inference.proto'), path.join(REPO_ROOT, 'proto', 'health.proto')],
  OPTIONS,
);
const pkg = grpc.loadPackageDefinition(def) as any;

export const IMG = 784;

export type Call = (method: string, req: object, opts?: grpc.CallOptions) => Promise<any>;

export interface Clients {
  infer: any;
  health: any;
  call: Call;
  check: (service: string) => Promise<any>;
  close(): void;
}

export function connect(address: string, creds = grpc.credentials.createInsecure()): Clients {
  const infer = new pkg.inference.GRPCInferenceService(address, creds);
  const health = new pkg.grpc.health.v1.Health(address, creds);
  const call: Call = (method, req, opts = {}) =>
    new Promise((resolve, reject) =>
      infer[method](req, opts, (e: grpc.ServiceError | null, r: any) => (e ? reject(e) : resolve(r))),
    );
  const check = (service: string) =>
    new Promise((resolve, reject) =>
      health.Check({ service }, (e: grpc.ServiceError | null, r: any) => (e ? reject(e) : resolve(r))),
    );
  return {
    infer,
    health,
    call,
    check,
    close: () => {
      infer.close();
      health.close();
    },
  };
}

/** Rejects unless the promise fails with this gRPC status; returns the error's details. */
export async function expectStatus(p: Promise<unknown>, code: grpc.status, detail?: RegExp): Promise<string> {
  try {
    await p;
  } catch (e) {
    const err = e as grpc.ServiceError;
    if (err.code !== code)
      throw new Error(`expected ${grpc.status[code]}, got ${grpc.status[err.code]}: ${err.details}`);
    if (detail && !detail.test(err.details))
      throw new Error(`${grpc.status[code]} details "${err.details}" do not match ${detail}`);
    return err.details;
  }
  throw new Error(`expected ${grpc.status[code]}, but the call succeeded`);
}

// ---- tiny real models (untrained: the serving path does not care what the weights learned)

export const cnnModel = (seed: number) =>
  exportCnn(TensorSet.init(cnnParams(), seed), TensorSet.init(cnnBuffers(), seed + 1));
export const milModel = (seed: number) =>
  exportMil(TensorSet.init(milParams('attention'), seed), TensorSet.init(milBuffers(), seed + 1), 'attention');
export function ensembleModel(seeds: number[], weights: number[]): Uint8Array {
  return exportEnsemble(
    seeds.map(s => ({
      kind: 'cnn' as const,
      params: TensorSet.init(cnnParams(), s),
      buffers: TensorSet.init(cnnBuffers(), s + 1),
    })),
    weights,
  );
}

/** n pseudo-random images with values in 0-1, and the same as UINT8 (rounded) pixels. */
export function images(n: number, seed: number): { unit: Float32Array; pixels: Uint8Array } {
  const r = new Rng(seed);
  const pixels = Uint8Array.from({ length: n * IMG }, () => Math.floor(r.next() * 256));
  return { unit: Float32Array.from(pixels, p => p / 255), pixels };
}

/** The model's outputs run directly on normalised input (x/255 - 0.5)/0.5. */
export async function direct(
  model: Uint8Array,
  pixels: Uint8Array,
  n: number,
  shape = [n, 1, 28, 28],
): Promise<Record<string, Float32Array>> {
  const s = await createSession(model, { threads: 1 });
  try {
    const x = Float32Array.from(pixels, p => (p / 255 - 0.5) / 0.5);
    const out = await s.run({ input: f32(x, shape) });
    return Object.fromEntries(Object.entries(out).map(([k, v]) => [k, v.data as Float32Array]));
  } finally {
    await s.release();
  }
}

/** An output of a response, raw or typed, as numbers. */
export function output(res: any, name: string): { shape: number[]; data: number[] } {
  const i = res.outputs.findIndex((o: any) => o.name === name);
  if (i < 0) throw new Error(`no output ${name} in ${res.outputs.map((o: any) => o.name).join(', ')}`);
  const o = res.outputs[i];
  const raw: Buffer | undefined = res.raw_output_contents[i];
  let data: number[];
  if (raw && raw.length) {
    const b = new Uint8Array(raw);
    data =
      o.datatype === 'FP32' ? Array.from(new Float32Array(b.buffer)) : Array.from(new BigInt64Array(b.buffer), Number);
  } else {
    data = o.datatype === 'FP32' ? o.contents.fp32_contents : o.contents.int64_contents.map(Number);
  }
  return { shape: o.shape.map(Number), data };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  if (a.length !== b.length) throw new Error(`lengths differ: ${a.length} vs ${b.length}`);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

export function argmaxRows(p: ArrayLike<number>, classes = 10): number[] {
  const out: number[] = [];
  for (let i = 0; i < p.length / classes; i++) {
    let best = 0;
    for (let c = 1; c < classes; c++) if (p[i * classes + c] > p[i * classes + best]) best = c;
    out.push(best);
  }
  return out;
}

/** The value of a response parameter, whichever oneof field it uses. */
export const param = (res: any, key: string) => {
  const p = res.parameters?.[key];
  return p ? p[p.parameter_choice] : undefined;
};
