// CUDA workers without a GPU: --device cuda fails naming what is missing (the provider library and the install
// flag, or the CUDA/cuDNN library the dynamic loader cannot find); the GPU model is detected from nvidia-smi or
// the driver's /proc files and travels in the worker's announcement to the coordinator's fleet_worker_info.
// This machine has no NVIDIA GPU: nvidia-smi and the /proc files are stood in for by files in a temp folder.
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { detectGpuName } from '../worker/gpu.ts';
import { checkCuda, createSession } from '../engine/runtime.ts';
import { runFleet } from './helpers/cli.ts';
import { InprocHub } from '../bus/inproc-transport.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { startWorker, type WorkerHandle } from '../worker/worker.ts';
import { createMetrics, exposition } from '../telemetry/metrics.ts';

const ortBin = () => {
  const pkg = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
};
const cudaProviderInstalled = () => fs.existsSync(path.join(ortBin(), 'libonnxruntime_providers_cuda.so'));

describe('GPU detection (worker/gpu.ts)', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-gpu-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const script = (name: string, body: string) => {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, `#!/bin/sh\n${body}\n`, { mode: 0o755 });
    return file;
  };
  /** A driver folder like /proc/driver/nvidia/gpus: one folder per PCI address with an `information` file. */
  const procGpus = (models: Record<string, string>) => {
    const dir = path.join(tmp, 'gpus');
    for (const [bus, model] of Object.entries(models)) {
      fs.mkdirSync(path.join(dir, bus), { recursive: true });
      fs.writeFileSync(
        path.join(dir, bus, 'information'),
        `Model: \t\t ${model}\nIRQ:   \t\t 45\nGPU UUID: \t GPU-8a3c\nVideo BIOS: \t 96.00.9f.00.01\nBus Type: \t PCIe\n`,
      );
    }
    return dir;
  };

  it('takes the first line of nvidia-smi --query-gpu=name, checking the arguments it passes', () => {
    const smi = script(
      'nvidia-smi',
      '[ "$1" = "--query-gpu=name" ] && [ "$2" = "--format=csv,noheader" ] || exit 9\nprintf "NVIDIA H200\\nNVIDIA H200\\n"',
    );
    assert.equal(detectGpuName({ nvidiaSmi: smi, procDir: path.join(tmp, 'none') }), 'NVIDIA H200');
  });

  it("falls back to the driver's /proc files when nvidia-smi is missing or fails (first GPU by bus address)", () => {
    const proc = procGpus({ '0000:c1:00.0': 'NVIDIA A100-SXM4-80GB', '0000:41:00.0': 'NVIDIA L4' });
    assert.equal(detectGpuName({ nvidiaSmi: path.join(tmp, 'no-such-nvidia-smi'), procDir: proc }), 'NVIDIA L4');
    const failing = script(
      'nvidia-smi',
      'echo "NVIDIA-SMI has failed because it couldn\'t communicate with the NVIDIA driver." >&2; exit 9',
    );
    assert.equal(detectGpuName({ nvidiaSmi: failing, procDir: proc }), 'NVIDIA L4');
  });

  it('is empty when there is no GPU (no nvidia-smi, no driver folder, or a folder without a Model line)', () => {
    assert.equal(detectGpuName({ nvidiaSmi: path.join(tmp, 'none'), procDir: path.join(tmp, 'none') }), '');
    fs.mkdirSync(path.join(tmp, 'gpus', '0000:01:00.0'), { recursive: true });
    fs.writeFileSync(path.join(tmp, 'gpus', '0000:01:00.0', 'information'), 'IRQ: 45\n');
    assert.equal(detectGpuName({ nvidiaSmi: script('nvidia-smi', 'exit 0'), procDir: path.join(tmp, 'gpus') }), '');
  });
});

describe('--device cuda without a usable CUDA execution provider', function () {
  this.timeout(60_000);
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-cuda-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  /** A folder that has onnxruntime-node's two CUDA provider files (empty: only their presence is checked). */
  const fakeProviders = () => {
    const dir = fs.mkdtempSync(path.join(tmp, 'bin-'));
    for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so'])
      fs.writeFileSync(path.join(dir, f), '');
    return dir;
  };

  it('fleet worker --device cuda exits 1 naming the provider library and ONNXRUNTIME_NODE_INSTALL=cuda12, before connecting', async function () {
    if (cudaProviderInstalled()) this.skip(); // onnxruntime-node was installed with its CUDA provider here
    // nothing listens on port 1: the check must come before any connection attempt
    const r = await runFleet(['worker', '--nats', 'nats://127.0.0.1:1', '--device', 'cuda']);
    assert.equal(r.code, 1, r.stderr);
    const lines = r.stderr.trim().split('\n');
    assert.equal(lines.length, 1, r.stderr);
    assert.match(
      lines[0],
      /^fleet: --device cuda: the CUDA execution provider is not installed \(libonnxruntime_providers_cuda\.so not found in .*onnxruntime-node.*\)/,
    );
    assert.match(lines[0], /ONNXRUNTIME_NODE_INSTALL=cuda12/);
    assert.doesNotMatch(r.stderr, /nats/i);
  });

  it('a training session on cuda fails the same way (createSession)', async function () {
    if (cudaProviderInstalled()) this.skip();
    // the check comes before the model is read, so any bytes do
    await assert.rejects(
      createSession(new Uint8Array(0), { device: 'cuda' }),
      /--device cuda: .*libonnxruntime_providers_cuda\.so not found.*ONNXRUNTIME_NODE_INSTALL=cuda12/,
    );
  });

  it('with the provider installed, names the first CUDA library the loader cannot open and where it comes from', () => {
    const bin = fakeProviders();
    const libs = [
      { lib: 'libc.so.6', from: 'glibc' },
      { lib: 'libfleet-test-cudnn.so.9', from: 'cuDNN 9 for CUDA 12' },
      { lib: 'libm.so.6', from: 'glibc' },
    ];
    assert.throws(
      () => checkCuda({ binDir: bin, libraries: libs }),
      /^Error: --device cuda: libfleet-test-cudnn\.so\.9 \(cuDNN 9 for CUDA 12\) cannot be loaded: libfleet-test-cudnn\.so\.9: cannot open shared object file.*ONNXRUNTIME_NODE_INSTALL=cuda12/,
    );
    // libraries that are there pass (they load, then are refused as Node addons, which is fine)
    assert.doesNotThrow(() => checkCuda({ binDir: bin, libraries: libs.filter(l => l.from === 'glibc') }));
    // only one of the two provider files is not enough
    fs.rmSync(path.join(bin, 'libonnxruntime_providers_shared.so'));
    assert.throws(() => checkCuda({ binDir: bin, libraries: [] }), /libonnxruntime_providers_shared\.so not found in/);
  });

  it("names a library whose own dependency is missing (as when cuDNN's sub-libraries are absent)", function () {
    if (spawnSync('cc', ['--version']).status !== 0) this.skip(); // needs a C compiler to build the two libraries
    const dir = fs.mkdtempSync(path.join(tmp, 'so-'));
    fs.writeFileSync(path.join(dir, 'dep.c'), 'int fleet_dep(void) { return 1; }\n');
    fs.writeFileSync(
      path.join(dir, 'outer.c'),
      'int fleet_dep(void);\nint fleet_outer(void) { return fleet_dep(); }\n',
    );
    const cc = (args: string[]) => {
      const r = spawnSync('cc', args, { cwd: dir, encoding: 'utf8' });
      assert.equal(r.status, 0, r.stderr);
    };
    cc(['-shared', '-fPIC', '-o', 'libfleetdep.so', 'dep.c']);
    cc(['-shared', '-fPIC', '-o', 'libfleetouter.so', 'outer.c', '-L.', '-lfleetdep']);
    fs.rmSync(path.join(dir, 'libfleetdep.so')); // the dependency goes missing after linking
    assert.throws(
      () =>
        checkCuda({
          binDir: fakeProviders(),
          libraries: [{ lib: path.join(dir, 'libfleetouter.so'), from: 'a test library' }],
        }),
      /libfleetouter\.so \(a test library\) cannot be loaded: libfleetdep\.so: cannot open shared object file/,
    );
  });
});

describe('the GPU in the announcement and in fleet_worker_info (coordinator and worker on the in-process bus)', () => {
  let dir: string, hub: InprocHub, c: Coordinator, workers: WorkerHandle[];
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-gpuinfo-'));
    hub = new InprocHub();
    workers = [];
  });
  afterEach(async () => {
    for (const w of workers) await w.stop();
    await c?.stop();
    hub.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const until = async (cond: () => boolean | Promise<boolean>, ms = 5000) => {
    const t0 = Date.now();
    while (!(await cond())) {
      if (Date.now() - t0 > ms) throw new Error('timed out');
      await new Promise(r => setTimeout(r, 20));
    }
  };
  const infoLines = async (m: ReturnType<typeof createMetrics>) =>
    (await exposition(m)).body.split('\n').filter(l => l.startsWith('fleet_worker_info{'));

  it("a CUDA worker's GPU model reaches the coordinator's records and metrics; a CPU worker has gpu=\"\"; a lost worker's series goes", async () => {
    const metrics = createMetrics({ defaultMetrics: false });
    c = new Coordinator(hub.transport(), { stateDir: dir, tickMs: 20, workerTimeoutMs: 300, metrics });
    await c.start();
    const gpu = startWorker(hub.transport(), {
      id: 'g1',
      runtime: { device: 'cuda', threads: 1 },
      gpuName: 'NVIDIA H200',
      heartbeatMs: 50,
    });
    const cpu = startWorker(hub.transport(), { id: 'c1', runtime: { device: 'cpu', threads: 1 }, heartbeatMs: 50 });
    workers.push(gpu, cpu);
    await until(() => c.workers.size === 2);
    assert.equal(c.workers.get('g1')!.gpu, 'NVIDIA H200');
    assert.equal(c.workers.get('g1')!.device, 'cuda');
    assert.equal(c.workers.get('c1')!.gpu, '');
    await until(async () => (await infoLines(metrics)).length === 2);
    assert.deepEqual((await infoLines(metrics)).sort(), [
      'fleet_worker_info{worker="c1",device="cpu",gpu=""} 1',
      'fleet_worker_info{worker="g1",device="cuda",gpu="NVIDIA H200"} 1',
    ]);
    const view = c.clusterView().workers.find(w => w.id === 'g1')!;
    assert.equal(view.gpu, 'NVIDIA H200');
    await gpu.stop(); // stops heartbeating: lost after 300 ms
    await until(() => c.workers.get('g1')!.state === 'lost');
    await until(async () => (await infoLines(metrics)).length === 1);
    assert.deepEqual(await infoLines(metrics), ['fleet_worker_info{worker="c1",device="cpu",gpu=""} 1']);
  });
});
