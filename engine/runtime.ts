// ONNX Runtime sessions: created once per (graph, batch size), reused; CPU by default, CUDA on request.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';

export type Device = 'cpu' | 'cuda';
export interface RuntimeOptions { device?: Device; threads?: number; /** ONNX Runtime's profiler, writing to this file prefix (bench/profile-train.ts) */ profileFilePrefix?: string }
export type Feeds = Record<string, ort.Tensor>;

const require = createRequire(import.meta.url);

/** Directory holding onnxruntime-node's native libraries for this platform. */
function ortBinDir(): string {
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const napi = fs.readdirSync(path.join(pkg, 'bin')).find(d => d.startsWith('napi-'));
  return path.join(pkg, 'bin', napi ?? 'napi-v6', process.platform, process.arch);
}

/** Throws a clear error when the CUDA execution provider cannot be loaded. */
export function checkCuda(): void {
  const dir = ortBinDir();
  const lib = process.platform === 'win32' ? 'onnxruntime_providers_cuda.dll' : 'libonnxruntime_providers_cuda.so';
  if (!fs.existsSync(path.join(dir, lib))) {
    throw new Error(`--device cuda: the CUDA execution provider is not installed (${lib} not found in ${dir}). ` +
      'Reinstall onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=cuda12 (needs the CUDA 12 and cuDNN 9 runtime libraries).');
  }
}

export async function createSession(model: Uint8Array | string, opts: RuntimeOptions = {}): Promise<ort.InferenceSession> {
  if (opts.device === 'cuda') checkCuda();
  const options: ort.InferenceSession.SessionOptions = {
    executionProviders: opts.device === 'cuda' ? ['cuda', 'cpu'] : ['cpu'],
    graphOptimizationLevel: 'all',
    executionMode: 'sequential',
    interOpNumThreads: 1,
    logSeverityLevel: 3,
    // intra-op threads block instead of spinning between ops and runs: on a 2-core machine shared with other
    // processes (and with the JavaScript optimizer step between runs) spinning threads took CPU from the work;
    // measured 0.45-0.65x the step time of the spinning default under load (README, speed section)
    extra: { session: { intra_op: { allow_spinning: '0' } } },
  };
  if (opts.threads) options.intraOpNumThreads = opts.threads;
  if (opts.profileFilePrefix) { options.enableProfiling = true; options.profileFilePrefix = opts.profileFilePrefix; }
  return typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options);
}

export const f32 = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);
export const i64 = (data: BigInt64Array, dims: number[]) => new ort.Tensor('int64', data, dims);

export { ort };
