// `fleet eval` as a process: an .onnx file run here and the same model asked of `fleet serve` give the same
// accuracy, loss and confusion matrix, equal to the model run directly on the same MNIST test images; the files
// it writes; usage errors.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runFleet, lines } from './helpers/cli.ts';
import { cnnModel, direct, argmaxRows, IMG } from './helpers/serve.ts';
import { ProcGroup } from '../bench/harness/fleet-procs.ts';
import { loadDataset } from '../engine/data/datasets.ts';

describe('eval: fleet eval on a whole (limited) test set, locally and through a server', function () {
  const group = new ProcGroup();
  let dir: string, onnx: string;
  const N = 300,
    model = cnnModel(7);

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-eval-'));
    fs.mkdirSync(path.join(dir, 'models', 'cnn', '1'), { recursive: true });
    onnx = path.join(dir, 'models', 'cnn', '1', 'model.onnx');
    fs.writeFileSync(onnx, model);
  });
  after(async () => {
    await group.killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('MODEL.onnx and the served NAME give the accuracy, loss and confusion matrix of the model run directly', async () => {
    const test = loadDataset('mnist').test;
    const want = await direct(model, test.images.subarray(0, N * IMG), N);
    const predicted = argmaxRows(want.probabilities);
    const labels = Array.from(test.labels.subarray(0, N));
    const accuracy = predicted.filter((p, i) => p === labels[i]).length / N;
    let loss = 0;
    for (let i = 0; i < N; i++) loss -= Math.log(want.probabilities[i * 10 + labels[i]]);

    const out = path.join(dir, 'local');
    const r = await runFleet([
      'eval',
      onnx,
      '--limit',
      String(N),
      '--batch-size',
      '128',
      '--threads',
      '1',
      '--out',
      out,
      '--json',
    ]);
    assert.equal(r.code, 0, r.stderr);
    const got = JSON.parse(lines(r.stdout).at(-1)!);
    assert.equal(got.images, N);
    assert.equal(got.accuracy, accuracy);
    assert.ok(Math.abs(got.loss - loss / N) < 1e-4, `${got.loss} vs ${loss / N}`);
    assert.equal(
      got.confusion.flat().reduce((s: number, v: number) => s + v, 0),
      N,
    );
    for (let t = 0; t < 10; t++) {
      const row = labels.map((l, i) => [l, predicted[i]]).filter(([l]) => l === t);
      for (let p = 0; p < 10; p++)
        assert.equal(got.confusion[t][p], row.filter(([, q]) => q === p).length, `confusion[${t}][${p}]`);
      assert.equal(got.per_class_accuracy[t], row.length ? row.filter(([, q]) => q === t).length / row.length : null);
    }
    assert.deepEqual(JSON.parse(fs.readFileSync(path.join(out, 'eval.json'), 'utf8')).confusion, got.confusion);
    const svg = fs.readFileSync(path.join(out, 'confusion.svg'), 'utf8');
    assert.match(svg, /^<svg /);
    assert.match(svg, /cnn-1 on the mnist test set/);

    const serve = group.spawn('serve', [
      'serve',
      '--models',
      path.join(dir, 'models'),
      '--grpc',
      '127.0.0.1:0',
      '--http',
      'off',
      '--threads',
      '1',
    ]);
    const at = (await serve.waitForLog(/gRPC on ([\d.]+:\d+)/))[1];
    const s = await runFleet([
      'eval',
      'cnn',
      '--server',
      at,
      '--limit',
      String(N),
      '--batch-size',
      '100',
      '--out',
      path.join(dir, 'served'),
      '--json',
    ]);
    assert.equal(s.code, 0, s.stderr);
    const served = JSON.parse(lines(s.stdout).at(-1)!);
    assert.equal(served.accuracy, got.accuracy);
    assert.deepEqual(served.confusion, got.confusion);
    assert.ok(Math.abs(served.loss - got.loss) < 1e-5);
    const missing = await runFleet(['eval', 'nope', '--server', at, '--limit', '10', '--out', path.join(dir, 'x')]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /NOT_FOUND: unknown model "nope"/);
  });

  it('usage errors exit 2 with one line', async () => {
    for (const args of [
      ['eval'],
      ['eval', 'cnn'],
      ['eval', onnx, '--server', '127.0.0.1:1'],
      ['eval', onnx, '--dataset', 'cifar'],
      ['eval', onnx, '--version', '2'],
    ]) {
      const r = await runFleet(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
    }
  });
});
