// The serving commands as processes: `fleet serve` (gRPC + /metrics, TLS and mutual TLS), `fleet models add`,
// `fleet predict` on PNGs (any size and colour) and on IDX images, usage errors, and `fleet coordinator --grpc`
// serving the model of an ensemble job it just finished (a real nats-server and worker).
import { strict as assert } from 'node:assert';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { PNG } from 'pngjs';
import { runFleet, lines, helpOptions } from './helpers/cli.ts';
import { OPTIONS as SERVE_OPTIONS } from '../cli/serve.ts';
import { OPTIONS as PREDICT_OPTIONS } from '../cli/predict.ts';
import { OPTIONS as MODELS_OPTIONS } from '../cli/models.ts';
import { ProcGroup, waitFor } from '../bench/harness/fleet-procs.ts';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { connect, cnnModel, direct, output, maxAbsDiff, argmaxRows, IMG } from './helpers/serve.ts';
import { readImages } from '../engine/data/idx.ts';
import { resolveDataDir, FILES } from '../engine/data/datasets.ts';
import { connectNats } from '../bus/nats-transport.ts';
import { SUBJECTS } from '../bus/subjects.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';

const IDX = path.join(resolveDataDir('mnist'), FILES.testImages);

function writePng(
  file: string,
  width: number,
  height: number,
  rgba: (x: number, y: number) => [number, number, number, number],
) {
  const png = new PNG({ width, height });
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) png.data.set(rgba(x, y), (y * width + x) * 4);
  fs.writeFileSync(file, PNG.sync.write(png));
}

function getText(url: string): Promise<string> {
  return new Promise((resolve, reject) =>
    http
      .get(url, res => {
        let t = '';
        res
          .setEncoding('utf8')
          .on('data', d => {
            t += d;
          })
          .on('end', () => resolve(t));
      })
      .on('error', reject),
  );
}

describe('serve: fleet serve, fleet models add, fleet predict as processes', function () {
  const group = new ProcGroup();
  let dir: string, repo: string, grpcAt: string, metricsUrl: string;
  const model = cnnModel(41);
  const digit = readImages(IDX).pixels.slice(7 * IMG, 8 * IMG); // test image 7

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-serve-cli-'));
    repo = path.join(dir, 'models');
    fs.mkdirSync(repo);
    const run = path.join(dir, 'my run');
    fs.mkdirSync(run);
    fs.writeFileSync(path.join(run, 'model.onnx'), model);
    const added = await runFleet(['models', 'add', run, '--models', repo]);
    assert.equal(added.code, 0, added.stderr);
    assert.match(added.stdout, /added my-run version 1/);
    const p = group.spawn('serve', [
      'serve',
      '--models',
      repo,
      '--grpc',
      '127.0.0.1:0',
      '--http',
      '127.0.0.1:0',
      '--threads',
      '1',
    ]);
    const m = await p.waitForLog(
      /gRPC on ([\d.]+:\d+), (\d+) model\(s\) ready, metrics on (http:\/\/[\d.]+:\d+)\/metrics/,
    );
    [grpcAt, metricsUrl] = [m[1], `${m[3]}/metrics`];
    assert.equal(m[2], '1');
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed') process.stderr.write(`\n${group.describe()}\n`);
  });

  after(async () => {
    await group.killAll();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('predict on an IDX image and on PNGs of it (28x28 grey; 280x280 colour, inverted): the same answer as the model run directly', async () => {
    const want = (await direct(model, digit, 1)).probabilities;
    const idx = await runFleet([
      'predict',
      '--server',
      grpcAt,
      '--model',
      'my-run',
      '--idx',
      IDX,
      '--index',
      '7',
      '--json',
    ]);
    assert.equal(idx.code, 0, idx.stderr);
    const r = JSON.parse(lines(idx.stdout).at(-1)!);
    assert.equal(r.class, argmaxRows(want)[0]);
    assert.ok(maxAbsDiff(r.probabilities, want) < 1e-5);

    const small = path.join(dir, 'digit.png'),
      big = path.join(dir, 'digit-big.png');
    writePng(small, 28, 28, (x, y) => {
      const v = digit[y * 28 + x];
      return [v, v, v, 255];
    });
    // a dark digit on white paper, ten times larger: inverted and area-averaged back to the same 28x28
    writePng(big, 280, 280, (x, y) => {
      const v = 255 - digit[Math.floor(y / 10) * 28 + Math.floor(x / 10)];
      return [v, v, v, 255];
    });
    for (const file of [small, big]) {
      const p = await runFleet(['predict', '--server', grpcAt, '--model', 'my-run', '--image', file, '--json']);
      assert.equal(p.code, 0, p.stderr);
      const got = JSON.parse(lines(p.stdout).at(-1)!);
      assert.ok(maxAbsDiff(got.probabilities, want) < 1e-5, file);
    }
    const text = await runFleet(['predict', '--server', grpcAt, '--model', 'my-run', '--image', small]);
    assert.match(text.stdout, new RegExp(`^class ${argmaxRows(want)[0]} \\(model my-run version 1\\)`));
    assert.equal(lines(text.stdout).filter(l => /^\s+\d: \d\.\d{4}/.test(l)).length, 10);
  });

  it('/metrics counts the requests by model and status; a model added while running is served', async () => {
    const bad = await runFleet(['predict', '--server', grpcAt, '--model', 'nope', '--idx', IDX, '--index', '0']);
    assert.equal(bad.code, 1);
    assert.match(bad.stderr, /^fleet: predict: NOT_FOUND: unknown model "nope"/);
    // the REST binding shares the port with /metrics
    const rest = await fetch(new URL('/v2/models/my-run', metricsUrl));
    assert.equal(rest.status, 200);
    assert.deepEqual(((await rest.json()) as { versions: string[] }).versions, ['1']);
    const text = await getText(metricsUrl);
    assert.match(text, /fleet_inference_requests_total\{model="my-run",version="1",status="OK"\} [1-9]/);
    assert.match(text, /fleet_inference_requests_total\{model="_unknown",version="",status="NOT_FOUND"\} 1/);
    assert.match(text, /fleet_inference_batch_size_bucket/);

    const onnx = path.join(dir, 'other.onnx');
    fs.writeFileSync(onnx, cnnModel(42));
    assert.equal((await runFleet(['models', 'add', onnx, '--models', repo, '--name', 'other'])).code, 0);
    await waitFor(
      async () =>
        (await runFleet(['predict', '--server', grpcAt, '--model', 'other', '--idx', IDX, '--index', '0'])).code === 0,
      30_000,
      'model other to be served',
      500,
    );
  });

  it('--help of serve, predict and models lists exactly the options each accepts', async () => {
    for (const [cmd, declared] of [
      ['serve', SERVE_OPTIONS],
      ['predict', PREDICT_OPTIONS],
      ['models', MODELS_OPTIONS],
    ] as const) {
      const r = await runFleet([cmd, '--help']);
      assert.equal(r.code, 0, r.stderr);
      assert.match(r.stdout, new RegExp(`^usage: fleet ${cmd}`));
      assert.deepEqual(helpOptions(r.stdout).sort(), Object.keys(declared).sort(), cmd);
    }
    const main = await runFleet(['help']);
    for (const cmd of ['serve --models', 'predict --server', 'models add'])
      assert.ok(main.stdout.includes(`fleet ${cmd}`), cmd);
  });

  it('usage errors exit 2 with one line', async () => {
    for (const args of [
      ['serve'],
      ['serve', '--models', repo, '--grpc', 'nowhere'],
      ['serve', '--models', repo, '--tls-cert', 'x.pem'],
      ['predict', '--server', grpcAt, '--model', 'my-run'],
      ['predict', '--server', grpcAt, '--model', 'my-run', '--idx', IDX],
      ['predict', '--model', 'x', '--image', 'a.png', '--server', 'nowhere'],
      ['models', 'add'],
      ['models', 'add', path.join(dir, 'my run'), '--models', repo, '--name', 'a.b'],
    ]) {
      const r = await runFleet(args);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.equal(lines(r.stderr).length, 1, r.stderr);
    }
    const r = await runFleet(['predict', '--server', grpcAt, '--model', 'my-run', '--idx', IDX, '--index', '10000']);
    assert.equal(r.code, 2);
    assert.match(r.stderr, /has 10000 images/);
  });

  it('serve that cannot start exits 1 at once naming the cause (address in use, unreadable TLS file); predict refuses a PNG bomb', async () => {
    const taken = grpcAt; // the running server's gRPC port
    const inUse = await runFleet(['serve', '--models', repo, '--grpc', taken, '--http', 'off'], { timeoutMs: 30_000 });
    assert.equal(inUse.code, 1, inUse.stderr);
    assert.match(inUse.stderr, new RegExp(`gRPC: cannot listen on ${taken.replace(/\./g, '\\.')}: .*EADDRINUSE`));
    const httpInUse = await runFleet(
      ['serve', '--models', repo, '--grpc', '127.0.0.1:0', '--http', new URL(metricsUrl).host],
      { timeoutMs: 30_000 },
    );
    assert.equal(httpInUse.code, 1, httpInUse.stderr);
    assert.match(httpInUse.stderr, /HTTP: cannot listen on .*EADDRINUSE/);
    const missing = path.join(dir, 'no-such-cert.pem');
    const noTls = await runFleet(
      [
        'serve',
        '--models',
        repo,
        '--grpc',
        '127.0.0.1:0',
        '--http',
        'off',
        '--tls-cert',
        missing,
        '--tls-key',
        missing,
      ],
      { timeoutMs: 30_000 },
    );
    assert.equal(noTls.code, 1, noTls.stderr);
    assert.match(noTls.stderr, /TLS certificate .*no-such-cert\.pem: ENOENT/);
    assert.equal(lines(noTls.stderr).length, 1, noTls.stderr);
    // a 30000x30000 PNG header in a tiny file: a clear error, not gigabytes of memory
    const bomb = new PNG({ width: 1, height: 1 });
    const bytes = PNG.sync.write(bomb);
    bytes.writeUInt32BE(30000, 16);
    bytes.writeUInt32BE(30000, 20); // the IHDR's width and height
    fs.writeFileSync(path.join(dir, 'bomb.png'), bytes);
    const p = await runFleet(
      ['predict', '--server', grpcAt, '--model', 'my-run', '--image', path.join(dir, 'bomb.png')],
      { timeoutMs: 30_000 },
    );
    assert.equal(p.code, 1, p.stderr);
    assert.match(p.stderr, /bomb\.png: not a readable PNG: the header declares 30000x30000 pixels/);
  });

  const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
  (haveOpenssl ? it : it.skip)(
    'TLS and mutual TLS: predict with the CA (and a client certificate) works, without fails',
    async () => {
      const cert = path.join(dir, 'cert.pem'),
        key = path.join(dir, 'key.pem');
      const r = spawnSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        key,
        '-out',
        cert,
        '-days',
        '1',
        '-subj',
        '/CN=localhost',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ]);
      assert.equal(r.status, 0, String(r.stderr));
      const tls = group.spawn('serve-tls', [
        'serve',
        '--models',
        repo,
        '--grpc',
        '127.0.0.1:0',
        '--http',
        'off',
        '--threads',
        '1',
        '--tls-cert',
        cert,
        '--tls-key',
        key,
      ]);
      const at = (await tls.waitForLog(/gRPC \(TLS\) on ([\d.]+:\d+)/))[1];
      const args = [
        'predict',
        '--server',
        at,
        '--model',
        'my-run',
        '--idx',
        IDX,
        '--index',
        '7',
        '--timeout-ms',
        '5000',
      ];
      assert.equal((await runFleet([...args, '--tls-ca', cert])).code, 0);
      const plain = await runFleet(args);
      assert.equal(plain.code, 1);
      assert.match(plain.stderr, /UNAVAILABLE/);

      const mtls = group.spawn('serve-mtls', [
        'serve',
        '--models',
        repo,
        '--grpc',
        '127.0.0.1:0',
        '--http',
        'off',
        '--threads',
        '1',
        '--tls-cert',
        cert,
        '--tls-key',
        key,
        '--tls-client-ca',
        cert,
      ]);
      const at2 = (await mtls.waitForLog(/gRPC \(TLS\) on ([\d.]+:\d+)/))[1];
      const args2 = [
        'predict',
        '--server',
        at2,
        '--model',
        'my-run',
        '--idx',
        IDX,
        '--index',
        '7',
        '--timeout-ms',
        '5000',
        '--tls-ca',
        cert,
      ];
      const withCert = await runFleet([...args2, '--tls-cert', cert, '--tls-key', key]);
      assert.equal(withCert.code, 0, withCert.stderr);
      assert.equal((await runFleet(args2)).code, 1, 'no client certificate: refused');
    },
  );
});

describe('serve: fleet coordinator --grpc serves the model of a finished ensemble job', function () {
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH', () => assert.fail('nats-server is not installed'));
    return;
  }
  const group = new ProcGroup();
  let nats: NatsServerHandle, dir: string;
  before(async () => {
    nats = await startNatsServer();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-coord-grpc-'));
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') process.stderr.write(`\n${group.describe()}\n`);
  });
  after(async () => {
    await group.killAll();
    await nats?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('a 2-member voting job finishes; its one-graph model answers over gRPC as job id, equal to out/model.onnx run directly', async () => {
    const state = path.join(dir, 'state');
    const c = await group.coordinator(nats.url, state, ['--grpc', '127.0.0.1:0']);
    const grpcAt = (await c.proc.waitForLog(/serving the jobs' models over gRPC on ([\d.]+:\d+)/))[1];
    await group.worker(nats.url, 'w1');
    const bus = await connectNats(nats.url);
    let jobId: string;
    try {
      const spec = {
        kind: 'voting',
        model: 'cnn',
        members: 2,
        epochs: 1,
        batchSize: 64,
        recipe: { ...RECIPES.fleet, batchSize: 64 },
        seed: 1,
        valFraction: 0,
        dataset: 'mnist',
        limitTrain: 200,
        limitTest: 50,
        selection: { objective: 'loss', initSize: 0, maxIter: 50, bags: 1 },
      };
      const reply = JSON.parse(
        new TextDecoder().decode(
          (await bus.request(SUBJECTS.jobSubmit, new TextEncoder().encode(JSON.stringify(spec)), 15_000)).data,
        ),
      );
      assert.ok(reply.ok, reply.error);
      jobId = reply.jobId;
    } finally {
      await bus.close();
    }
    await c.proc.waitForLog(new RegExp(`job ${jobId}: model published for serving`), 150_000);
    const cl = connect(grpcAt);
    try {
      await waitFor(
        async () => (await cl.call('ModelReady', { name: jobId })).ready,
        30_000,
        'the job model to load',
        200,
      );
      const meta = await cl.call('ModelMetadata', { name: jobId });
      assert.deepEqual(meta.outputs.find((o: any) => o.name === 'member_probabilities').shape, [2, -1, 10]);
      const pixels = readImages(IDX).pixels.slice(0, 3 * IMG);
      const r = await cl.call('ModelInfer', {
        model_name: jobId,
        inputs: [{ name: 'input', datatype: 'UINT8', shape: [3, IMG] }],
        raw_input_contents: [Buffer.from(pixels)],
      });
      const want = await direct(fs.readFileSync(path.join(state, 'jobs', jobId, 'out', 'model.onnx')), pixels, 3);
      assert.ok(maxAbsDiff(output(r, 'probabilities').data, want.probabilities) < 1e-5);
      // the same model over KServe v2 REST on the coordinator's --http port (JSON tensors, as the protocol says)
      assert.equal((await fetch(`${c.api}/v2/models/${jobId}/ready`)).status, 200);
      const rest = await fetch(`${c.api}/v2/models/${jobId}/infer`, {
        method: 'POST',
        headers: { 'content-type': 'application/json' },
        body: JSON.stringify({
          inputs: [{ name: 'input', datatype: 'UINT8', shape: [3, IMG], data: Array.from(pixels) }],
          outputs: [{ name: 'probabilities' }],
        }),
      });
      assert.equal(rest.status, 200, await rest.clone().text());
      const body = (await rest.json()) as { outputs: { name: string; data: number[] }[] };
      const probs = body.outputs.find(o => o.name === 'probabilities')!.data;
      assert.ok(maxAbsDiff(probs, want.probabilities) < 1e-5);
      assert.equal((await fetch(`${c.api}/v2/models/nope/ready`)).status, 404);
    } finally {
      cl.close();
    }
  });
});
