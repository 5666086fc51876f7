// ONNX Runtime sessions: created once per (graph, batch size), reused; CPU by default, CUDA on request.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import * as ort from 'onnxruntime-node';

export type Device = 'cpu' | 'cuda';
export interface RuntimeOptions {
  device?: Device;
  threads?: number;
  /** ONNX Runtime's profiler, writing to this file prefix (bench/profile-train.ts) */ profileFilePrefix?: string;
}
export type Feeds = Record<string, ort.Tensor>;

const require = createRequire(import.meta.url);

/** Directory holding onnxruntime-node's native libraries for this platform. */
function ortBinDir(): string {
  const pkg = path.dirname(require.resolve('onnxruntime-node/package.json'));
  const napi = fs.readdirSync(path.join(pkg, 'bin')).find(d => d.startsWith('napi-'));
  return path.join(pkg, 'bin', napi ?? 'napi-v6', process.platform, process.arch);
}

/** What onnxruntime-node's CUDA 12 execution provider loads at run time, and where each library comes from. */
export const CUDA_LIBRARIES: readonly { lib: string; from: string }[] = [
  {
    lib: 'libcuda.so.1',
    from: 'the NVIDIA driver (in a container: run it with the NVIDIA container toolkit, e.g. docker run --gpus all)',
  },
  { lib: 'libcudart.so.12', from: 'the CUDA 12 runtime' },
  { lib: 'libcublas.so.12', from: 'the CUDA 12 runtime (cuBLAS)' },
  { lib: 'libcublasLt.so.12', from: 'the CUDA 12 runtime (cuBLAS)' },
  { lib: 'libcufft.so.11', from: 'the CUDA 12 runtime (cuFFT)' },
  { lib: 'libcurand.so.10', from: 'the CUDA 12 runtime (cuRAND)' },
  { lib: 'libcudnn.so.9', from: 'cuDNN 9 for CUDA 12' },
];

const INSTALL_HINT =
  'Reinstall onnxruntime-node with ONNXRUNTIME_NODE_INSTALL=cuda12 (it downloads the CUDA provider), ' +
  'on a host with the CUDA 12 and cuDNN 9 runtime libraries, or use the GPU image (deploy/docker/Dockerfile.cuda).';
let cudaChecked = false;

/**
 * Throws an error naming the missing piece when the CUDA execution provider cannot work here: onnxruntime-node's
 * provider libraries (installed only with ONNXRUNTIME_NODE_INSTALL=cuda12), then each shared library it loads.
 */
export function checkCuda(probe: { binDir?: string; libraries?: readonly { lib: string; from: string }[] } = {}): void {
  if (cudaChecked && !probe.binDir && !probe.libraries) return;
  const dir = probe.binDir ?? ortBinDir();
  const providers =
    process.platform === 'win32'
      ? ['onnxruntime_providers_cuda.dll', 'onnxruntime_providers_shared.dll']
      : ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'];
  for (const lib of providers) {
    if (!fs.existsSync(path.join(dir, lib))) {
      throw new Error(
        `--device cuda: the CUDA execution provider is not installed (${lib} not found in ${dir}). ${INSTALL_HINT}`,
      );
    }
  }
  if (process.platform === 'linux') {
    for (const { lib, from } of probe.libraries ?? CUDA_LIBRARIES) {
      const missing = dlopenError(lib);
      if (missing) throw new Error(`--device cuda: ${lib} (${from}) cannot be loaded: ${missing}. ${INSTALL_HINT}`);
    }
  }
  if (!probe.binDir && !probe.libraries) cudaChecked = true;
}

/** Why the dynamic loader cannot open lib (by soname, as ONNX Runtime will), or null when it can. */
function dlopenError(lib: string): string | null {
  try {
    process.dlopen({ exports: {} }, lib);
    return null;
  } catch (e) {
    // a plain shared library loads and then "did not self-register" (it is not a Node addon): it is there
    const msg = (e as Error).message;
    return /did not self-register/.test(msg) ? null : msg;
  }
}

export async function createSession(
  model: Uint8Array | string,
  opts: RuntimeOptions = {},
): Promise<ort.InferenceSession> {
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
  if (opts.profileFilePrefix) {
    options.enableProfiling = true;
    options.profileFilePrefix = opts.profileFilePrefix;
  }
  try {
    return typeof model === 'string'
      ? await ort.InferenceSession.create(model, options)
      : await ort.InferenceSession.create(model, options);
  } catch (e) {
    if (opts.device !== 'cuda') throw e;
    throw new Error(
      `--device cuda: ONNX Runtime could not create a session with the CUDA execution provider: ${(e as Error).message}`,
    );
  }
}

export const f32 = (data: Float32Array, dims: number[]) => new ort.Tensor('float32', data, dims);
export const i64 = (data: BigInt64Array, dims: number[]) => new ort.Tensor('int64', data, dims);

export { ort };
