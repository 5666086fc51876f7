// Requests that used to knock the server over or fool it, each answered with a clear error while the server keeps
// answering others: an output name repeated 100,000 times (a 259 MB response from a 1.9 MB request before),
// duplicate and unknown outputs, a response over the size bound, a request over the message bound, NaN, Inf and
// values outside the declared (or default) input range, client strings and server paths in error messages.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { InferenceServer } from '../serving/grpc-server.ts';
import { MAX_MESSAGE_CHARS, forClient } from '../serving/errors.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { connect, expectStatus, cnnModel, images, output, IMG, type Clients } from './helpers/serve.ts';

const S = grpc.status;

describe('serve: requests that must not knock the server over', function () {
  let dir: string, server: InferenceServer, c: Clients;
  const cnn = cnnModel(3);

  const fp32 = (values: number[], n: number, extra: object = {}, tensorParams: object = {}) =>
    c.call('ModelInfer', {
      model_name: 'cnn',
      inputs: [
        {
          name: 'input',
          datatype: 'FP32',
          shape: [n, IMG],
          contents: { fp32_contents: values },
          parameters: tensorParams,
        },
      ],
      ...extra,
    });
  const uint8 = (n: number, extra: object = {}) =>
    c.call('ModelInfer', {
      model_name: 'cnn',
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
      raw_input_contents: [Buffer.from(images(n, 1).pixels)],
      ...extra,
    });
  /** An ordinary request still gets its answer. */
  const stillServing = async () => assert.equal(output(await uint8(2), 'predicted_class').data.length, 2);

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-hardening-'));
    fs.mkdirSync(path.join(dir, 'cnn', '1'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'cnn', '1', 'model.onnx'), cnn);
    fs.mkdirSync(path.join(dir, 'broken', '1'), { recursive: true });
    fs.writeFileSync(path.join(dir, 'broken', '1', 'model.onnx'), cnn.subarray(0, 3000));
    const old = new Date(Date.now() - 60_000);
    for (const f of fs.readdirSync(dir, { recursive: true }) as string[]) fs.utimesSync(path.join(dir, f), old, old);
    // small bounds so that the tests reach them with small requests: 4 MiB in, 1 KiB of response tensors
    server = new InferenceServer({
      models: dir,
      pollMs: 100,
      settleMs: 300,
      runtime: { threads: 1 },
      metrics: createMetrics({ defaultMetrics: false }),
      maxMessageBytes: 4 * 1024 * 1024,
      maxResponseBytes: 1024,
    });
    c = connect(`127.0.0.1:${await server.start('127.0.0.1', 0)}`);
  });

  after(async () => {
    c?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('an output name repeated 100,000 times is INVALID_ARGUMENT, while concurrent ordinary requests are answered', async () => {
    const attack = uint8(1, { outputs: Array.from({ length: 100_000 }, () => ({ name: 'probabilities' })) });
    const others = Promise.all([uint8(1), uint8(3), uint8(1)]);
    await expectStatus(
      attack,
      S.INVALID_ARGUMENT,
      /names 100000 outputs; this model has 2 \("probabilities", "predicted_class"\)/,
    );
    assert.deepEqual(
      (await others).map(r => output(r, 'predicted_class').data.length),
      [1, 3, 1],
    );
    await stillServing();
  });

  it('a repeated output name, an unknown one and a missing name are INVALID_ARGUMENT', async () => {
    await expectStatus(
      uint8(1, { outputs: [{ name: 'predicted_class' }, { name: 'predicted_class' }] }),
      S.INVALID_ARGUMENT,
      /output "predicted_class" is named more than once/,
    );
    await expectStatus(uint8(1, { outputs: [{ name: 'logits' }] }), S.INVALID_ARGUMENT, /unknown output "logits"/);
    await expectStatus(uint8(1, { outputs: [{ name: '' }] }), S.INVALID_ARGUMENT, /unknown output ""/);
    // each allowed name once, in any order, is fine
    const r = await uint8(1, { outputs: [{ name: 'predicted_class' }, { name: 'probabilities' }] });
    assert.deepEqual(
      r.outputs.map((o: { name: string }) => o.name),
      ['predicted_class', 'probabilities'],
    );
  });

  it('a response over the response bound is RESOURCE_EXHAUSTED before it is built; a request over the message bound is refused', async () => {
    // 1 KiB: 10 images need 10*10*4 + 10*8 = 480 bytes, 30 need 1440
    assert.equal(output(await uint8(10), 'probabilities').data.length, 100);
    await expectStatus(uint8(30), S.RESOURCE_EXHAUSTED, /1440 bytes of tensors; at most 1024/);
    const big = new Float32Array(1400 * IMG); // 4.4 MB: over the 4 MiB message bound, refused by gRPC
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [{ name: 'input', datatype: 'FP32', shape: [1400, IMG] }],
        raw_input_contents: [Buffer.from(big.buffer)],
      }),
      S.RESOURCE_EXHAUSTED,
      /larger than max/,
    );
    await stillServing();
  });

  it('NaN, Inf and values outside the range are INVALID_ARGUMENT naming the tensor and input_range', async () => {
    const ok = Array.from(images(1, 2).unit);
    const at = (v: number, i = 100) => ok.map((x, j) => (j === i ? v : x));
    await expectStatus(fp32(at(NaN), 1), S.INVALID_ARGUMENT, /input "input": value 100 is NaN/);
    await expectStatus(fp32(at(Infinity), 1), S.INVALID_ARGUMENT, /input "input": value 100 is Infinity/);
    await expectStatus(
      fp32(at(1e30), 1),
      S.INVALID_ARGUMENT,
      /input "input": value 100 is 1\.0+\d*e\+30, outside 0 to 1/,
    );
    // pixels 0-255 sent without input_range: refused (they used to give confident garbage), with the fix named
    const pixels = Array.from(images(1, 2).pixels);
    const msg = await expectStatus(
      fp32(pixels, 1),
      S.INVALID_ARGUMENT,
      /input "input": value \d+ is \d+, outside 0 to 1 \(no input_range was given/,
    );
    assert.match(msg, /input_range to "0-255"/);
    // the same pixels with the range declared are fine; declared ranges are enforced too
    assert.equal(
      output(await fp32(pixels, 1, { parameters: { input_range: { string_param: '0-255' } } }), 'predicted_class').data
        .length,
      1,
    );
    await expectStatus(
      fp32(at(300), 1, {}, { input_range: { string_param: '0-255' } }),
      S.INVALID_ARGUMENT,
      /value 100 is 300, outside 0 to 255 \(the parameter input_range is "0-255"\)/,
    );
    await expectStatus(
      fp32(at(-1.5), 1, {}, { input_range: { string_param: 'normalised' } }),
      S.INVALID_ARGUMENT,
      /value 100 is -1.5, outside -1 to 1/,
    );
    assert.equal(
      output(
        await fp32(
          ok.map(x => 2 * x - 1),
          1,
          {},
          { input_range: { string_param: 'normalised' } },
        ),
        'predicted_class',
      ).data.length,
      1,
    );
    // negative or fractional UINT8 values in typed contents
    await expectStatus(
      c.call('ModelInfer', {
        model_name: 'cnn',
        inputs: [
          { name: 'input', datatype: 'UINT8', shape: [1, IMG], contents: { uint_contents: Array(IMG).fill(256) } },
        ],
      }),
      S.INVALID_ARGUMENT,
      /uint_contents\[0\] = 256/,
    );
    await stillServing();
  });

  it('error messages: echoed client strings are cut, the whole is bounded, no absolute server path, no list of models', async () => {
    const long = 'x'.repeat(100_000);
    const details = await expectStatus(
      c.call('ModelInfer', { model_name: long, inputs: [] }),
      S.NOT_FOUND,
      /unknown model "x{64}\.\.\."/,
    );
    assert.ok(details.length < 200, `${details.length} characters`);
    assert.doesNotMatch(details, /cnn|broken/);
    await expectStatus(
      c.call('ModelInfer', { model_name: 'cnn', inputs: [{ name: long, datatype: 'UINT8', shape: [1, IMG] }] }),
      S.INVALID_ARGUMENT,
      /unknown input "x{64}\.\.\."/,
    );
    const broken = await expectStatus(
      c.call('ModelInfer', {
        model_name: 'broken',
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, IMG] }],
        raw_input_contents: [Buffer.alloc(IMG)],
      }),
      S.UNAVAILABLE,
      /broken\/1\/model\.onnx: not a loadable ONNX model/,
    );
    assert.ok(!broken.includes(dir), `the repository's absolute path is in "${broken}"`);
    // the rule itself: long messages are cut, absolute paths keep only their last parts
    assert.equal(forClient('y'.repeat(5000)).length, MAX_MESSAGE_CHARS);
    assert.equal(forClient('/home/someone/secret/models/cnn/1/model.onnx: bad'), '.../cnn/1/model.onnx: bad');
    assert.equal(forClient('shape [1,3,28,28] is not 1/2'), 'shape [1,3,28,28] is not 1/2');
  });
});
