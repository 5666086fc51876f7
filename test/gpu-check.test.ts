// The prepared GPU check (bench/gpu-check.ts, `fleet bench gpu`): its gradient comparison, its clean failure on a
// machine without the CUDA provider (this one), and a run of the whole check with the CPU against itself.
import { strict as assert } from 'node:assert';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { worstRelativeError, GRADIENT_TOLERANCE } from '../bench/gpu-check.ts';
import { runFleet, lines } from './helpers/cli.ts';

const ortBin = () => {
  const pkg = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
  return path.join(pkg, 'bin', 'napi-v6', process.platform, process.arch);
};
const cudaProviderInstalled = () => fs.existsSync(path.join(ortBin(), 'libonnxruntime_providers_cuda.so'));

describe('GPU check (bench/gpu-check.ts)', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-gpu-check-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('names the tensor with the largest relative L2 error; NaN is the worst and fails the tolerance', () => {
    const a = Float32Array.from([1, 2, 3]),
      b = Float32Array.from([4, 0, 0]);
    assert.deepEqual(worstRelativeError(['a', 'b'], [a, b], [a, b]), { tensor: 'a', error: 0 });
    const off = Float32Array.from([4 + 4e-3, 0, 0]); // 1e-3 relative
    const w = worstRelativeError(['a', 'b'], [a, off], [a, b]);
    assert.equal(w.tensor, 'b');
    assert.ok(Math.abs(w.error - 1e-3) < 1e-6 && w.error > GRADIENT_TOLERANCE, String(w.error));
    const nan = worstRelativeError(
      ['a', 'b', 'c'],
      [off, Float32Array.from([NaN, 0, 0]), a.map(x => 9 * x)],
      [b, b, a],
    );
    assert.equal(nan.tensor, 'b');
    assert.ok(!(nan.error <= GRADIENT_TOLERANCE));
    assert.throws(() => worstRelativeError(['a'], [a.subarray(1)], [a]), /gradient a: 2 values against 3/);
  });

  it('fleet bench gpu without the CUDA provider fails at once naming it, and writes no results', async function () {
    if (cudaProviderInstalled()) this.skip(); // with the provider it would run on the GPU
    const out = path.join(tmp, 'gpu.json');
    const r = await runFleet(['bench', 'gpu', '--out', out]);
    assert.equal(r.code, 1, r.stderr);
    assert.equal(lines(r.stderr).length, 1, r.stderr);
    assert.match(
      r.stderr,
      /--device cuda: the CUDA execution provider is not installed \(libonnxruntime_providers_cuda\.so/,
    );
    assert.equal(fs.existsSync(out), false);
  });

  it('fleet bench gpu --device cpu runs the whole check with the CPU against itself', async () => {
    const out = path.join(tmp, 'gpu.json');
    const args = [
      'bench',
      'gpu',
      '--device',
      'cpu',
      '--batch-size',
      '4',
      '--iters',
      '1',
      '--threads',
      '1',
      '--out',
      out,
    ];
    const r = await runFleet([...args, '--json']);
    assert.equal(r.code, 0, r.stderr);
    const result = JSON.parse(fs.readFileSync(out, 'utf8'));
    assert.deepEqual(JSON.parse(lines(r.stdout).pop()!), result);
    assert.equal(result.ok, true);
    for (const part of [result.data_parallel_simclr, result.ensemble_member_cnn]) {
      assert.equal(part.worst_gradient_error, 0);
      assert.ok(part.cpu.images_per_second > 0 && part.device.images_per_second > 0);
    }
    assert.equal(result.data_parallel_simclr.shards, 2);
    assert.ok(result.member_training_images_per_second.cpu > 0 && result.member_training_images_per_second.device > 0);
    assert.equal(result.machine.node, process.version);
    const bad = await runFleet(['bench', 'gpu', '--rounds', '2']);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /--rounds: not an option of fleet bench gpu/);
  });
});
