// Start-up of the long-running commands and their options: a command that cannot start (a port in use, an
// unreadable or unusable TLS or credentials file, NATS unreachable after the retry budget) exits non-zero at
// once with one line naming the cause, before it announces itself on the bus; every numeric option has an
// upper bound (a usage error naming the option, the value and the range); TLS and credential settings that
// could not take effect are usage errors.
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, runFleet } from './helpers/cli.ts';
import { startNatsServer, natsServerAvailable, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { SUBJECTS } from '../bus/subjects.ts';
import { intOption, numberOption, UsageError, MAX_TIMER_MS } from '../util/args.ts';
import { listen, ListenError } from '../telemetry/listen.ts';
import coordinator, { OPTIONS as COORDINATOR_OPTIONS } from '../cli/coordinator.ts';
import worker, { OPTIONS as WORKER_OPTIONS } from '../cli/worker.ts';
import train from '../cli/train.ts';
import bench from '../cli/bench.ts';

interface Failure {
  code: number | null;
  stderr: string;
  lines: string[];
  errorToExitMs: number;
  totalMs: number;
}

/** Runs `fleet ...` expecting it to fail: the exit code, its stderr, and how long it lived after printing the error. */
function runFailing(args: string[], env: NodeJS.ProcessEnv = {}, timeoutMs = 60_000): Promise<Failure> {
  return new Promise((resolve, reject) => {
    const started = Date.now();
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'fleet.js'), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, FLEET_DEBUG: '', ...env },
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let stderr = '',
      errorAt = 0;
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
      if (!errorAt && /^fleet: /m.test(stderr)) errorAt = Date.now();
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', reject);
    child.on('exit', code => {
      clearTimeout(timer);
      const now = Date.now();
      const lines = stderr.split('\n').filter(l => l.trim());
      resolve({ code, stderr, lines, errorToExitMs: errorAt ? now - errorAt : Infinity, totalMs: now - started });
    });
  });
}

/** Exit 1, one `fleet: ...` line on stderr matching `re`, and the process gone within a second of printing it. */
function assertStartFailure(f: Failure, re: RegExp, what: string) {
  assert.equal(f.code, 1, `${what}: exit code (stderr: ${f.stderr})`);
  const fleetLines = f.lines.filter(l => l.startsWith('fleet: '));
  assert.equal(fleetLines.length, 1, `${what}: one fleet: line (stderr: ${f.stderr})`);
  assert.match(fleetLines[0], re, what);
  assert.ok(f.errorToExitMs < 1000, `${what}: exited ${f.errorToExitMs} ms after printing the error`);
}

/** A TCP port something else already listens on (held for the whole suite). */
async function busyPort(): Promise<{ port: number; close: () => Promise<void> }> {
  const srv = net.createServer();
  await new Promise<void>(r => srv.listen(0, '127.0.0.1', () => r()));
  return { port: (srv.address() as net.AddressInfo).port, close: () => new Promise(r => srv.close(() => r())) };
}

describe('start-up: fleet coordinator and fleet worker exit non-zero at once, naming the cause', function () {
  this.timeout(120_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH', () => assert.fail('nats-server is not installed'));
    return;
  }
  let nats: NatsServerHandle, busy: Awaited<ReturnType<typeof busyPort>>, watcher: NatsTransport, dir: string;
  /** Every announce and heartbeat any process sent: a worker that cannot start must send none. */
  const announced: string[] = [];
  before(async () => {
    nats = await startNatsServer();
    busy = await busyPort();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-startup-'));
    watcher = await connectNats(nats.url);
    for (const s of [SUBJECTS.workerAnnounce, SUBJECTS.workerHeartbeatAll]) {
      watcher.subscribe(s, m => {
        announced.push(m.subject);
      });
    }
    await watcher.flush();
  });
  after(async () => {
    await watcher?.close();
    await busy?.close();
    await nats?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });
  const inUse = () => `cannot listen on 127\\.0\\.0\\.1:${busy.port} \\(`;

  it('worker: --metrics on a port in use -> exit 1 before it announces itself or heartbeats', async () => {
    const at = `127.0.0.1:${busy.port}`;
    const f = await runFailing([
      'worker',
      '--nats',
      nats.url,
      '--id',
      'w-busy',
      '--heartbeat-ms',
      '50',
      '--metrics',
      at,
    ]);
    assertStartFailure(f, new RegExp(`^fleet: ${inUse()}--metrics\\): address already in use$`), 'worker --metrics');
    await watcher.flush();
    assert.deepEqual(announced, [], 'the worker announced itself or heartbeated');
  });

  it('coordinator: --http on a port in use -> exit 1', async () => {
    const f = await runFailing([
      'coordinator',
      '--nats',
      nats.url,
      '--state',
      path.join(dir, 's1'),
      '--http',
      `127.0.0.1:${busy.port}`,
    ]);
    assertStartFailure(f, new RegExp(`^fleet: ${inUse()}--http\\): address already in use$`), 'coordinator --http');
  });

  it('coordinator: --grpc on a port in use -> exit 1', async () => {
    const f = await runFailing([
      'coordinator',
      '--nats',
      nats.url,
      '--state',
      path.join(dir, 's2'),
      '--http',
      'off',
      '--grpc',
      `127.0.0.1:${busy.port}`,
    ]);
    assertStartFailure(f, new RegExp(`^fleet: ${inUse()}--grpc\\): address already in use$`), 'coordinator --grpc');
  });

  it('an unreadable or unusable TLS or credentials file -> exit 1 naming flag and file', async () => {
    const garbage = path.join(dir, 'garbage.pem');
    fs.writeFileSync(garbage, 'not a certificate\n');
    const missing = path.join(dir, 'missing.pem');
    const worker = ['worker', '--nats', nats.url];
    const coord = (s: string) => ['coordinator', '--nats', nats.url, '--state', path.join(dir, s)];
    const cases: [string[], RegExp][] = [
      [[...worker, '--nats-ca', missing], /^fleet: --nats-ca \S+missing\.pem: cannot read it \(no such file\)$/],
      [[...coord('s3'), '--nats-ca', garbage], /^fleet: --nats-ca \S+garbage\.pem: not a usable CA certificate/],
      [
        [...worker, '--nats-cert', garbage, '--nats-key', garbage],
        /^fleet: --nats-cert \S+ \/ --nats-key \S+: not a usable certificate/,
      ],
      [[...coord('s4'), '--nats-creds', garbage], /^fleet: --nats-creds \S+garbage\.pem: not a NATS credentials file/],
      [[...worker, '--nats-creds', dir], /^fleet: --nats-creds \S+: cannot read it \(is a directory\)$/],
    ];
    for (const [args, re] of cases) assertStartFailure(await runFailing(args), re, args.join(' '));
    await watcher.flush();
    assert.deepEqual(announced, []);
  });

  it('NATS unreachable -> exit 1 after the retry budget (--nats-wait-ms), naming server and cause', async () => {
    const closed = await busyPort();
    await closed.close(); // a port nobody listens on now
    for (const cmd of [['worker'], ['coordinator', '--state', path.join(dir, 's5')]]) {
      const f = await runFailing([...cmd, '--nats', `nats://127.0.0.1:${closed.port}`, '--nats-wait-ms', '1500']);
      const re =
        `^fleet: cannot connect to NATS at nats://127\\.0\\.0\\.1:${closed.port} ` +
        '\\(\\d+ tries in [\\d.]+ s\\): connection refused$';
      assertStartFailure(f, new RegExp(re), cmd[0]);
      const tries = Number(/\((\d+) tries/.exec(f.stderr)![1]);
      assert.ok(tries >= 2, `${cmd[0]}: retried within its budget (${tries} tries)`);
    }
  });

  it('--nats-wait-ms 0 gives up after one try, and a refused login is not retried', async () => {
    const f = await runFailing(['worker', '--nats', 'nats://127.0.0.1:1', '--nats-wait-ms', '0']);
    assertStartFailure(f, /^fleet: cannot connect to NATS at nats:\/\/127\.0\.0\.1:1: connection refused$/, 'one try');
    const auth = await startNatsServer({ user: 'fleet', pass: 'right-password' });
    try {
      const env = { NATS_USER: 'fleet', NATS_PASSWORD: 'wrong-password' };
      const g = await runFailing(['worker', '--nats', auth.url, '--nats-wait-ms', '30000'], env);
      assertStartFailure(g, /^fleet: cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+: .*authorization/i, 'login');
      assert.ok(g.totalMs < 25_000, `a refused login is not retried for the whole budget (${g.totalMs} ms)`);
      assert.ok(!g.stderr.includes('wrong-password'));
    } finally {
      await auth.dispose();
    }
  });

  it('credentials in the URL never reach the error (nor with FLEET_DEBUG stacks)', async () => {
    for (const env of [{}, { FLEET_DEBUG: '1' }]) {
      const f = await runFailing(
        ['worker', '--nats', 'nats://fleet:Pa55-in-url@127.0.0.1:1', '--nats-wait-ms', '0'],
        env,
      );
      assert.equal(f.code, 1);
      assert.match(f.stderr, /nats:\/\/fleet:\*\*\*@127\.0\.0\.1:1/);
      assert.ok(!f.stderr.includes('Pa55-in-url'), f.stderr);
    }
  });
});

describe('start-up: the shared listen step (telemetry/listen.ts)', () => {
  it('resolves once listening; rejects with a ListenError naming address, option and cause', async () => {
    const a = await listen(net.createServer(), '127.0.0.1', 0, '--x');
    const port = (a.address() as net.AddressInfo).port;
    try {
      await assert.rejects(listen(net.createServer(), '127.0.0.1', port, '--metrics'), (e: unknown) => {
        assert.ok(e instanceof ListenError);
        assert.equal(e.message, `cannot listen on 127.0.0.1:${port} (--metrics): address already in use`);
        assert.equal(e.code, 'EADDRINUSE');
        return true;
      });
      await assert.rejects(
        listen(net.createServer(), 'no-such-host.invalid', 0, '--http'),
        /^Error: cannot listen on no-such-host\.invalid:0 \(--http\): (no such host|host name lookup failed)$/,
      );
    } finally {
      a.close();
    }
  });
});

describe('options: upper bounds on every numeric option, impossible TLS and credential settings', () => {
  it('intOption / numberOption: the bounds are inclusive, and the default bound keeps timers below 2^31 ms', () => {
    assert.equal(intOption({ n: '10' }, 'n', 0, 1, 10), 10);
    assert.throws(
      () => intOption({ n: '11' }, 'n', 0, 1, 10),
      /^Error: --n: must be at most 10, got 11 \(allowed 1\.\.10\)$/,
    );
    assert.equal(intOption({ n: String(MAX_TIMER_MS) }, 'n', 0), MAX_TIMER_MS);
    assert.throws(() => intOption({ n: String(MAX_TIMER_MS + 1) }, 'n', 0), UsageError);
    assert.throws(() => intOption({ n: '99999999999999999999999' }, 'n', 0), /must be at most/);
    assert.equal(numberOption({ x: '0.5' }, 'x', 0, 0, 0.5), 0.5);
    assert.throws(
      () => numberOption({ x: '0.51' }, 'x', 0, 0, 0.5),
      /--x: must be at most 0\.5, got 0\.51 \(allowed 0\.\.0\.5\)/,
    );
    assert.equal(MAX_TIMER_MS, 2 ** 31 - 1);
  });

  const nats = ['--nats', 'nats://127.0.0.1:1'];
  // [command, argv, option, value, allowed range]
  const table: [typeof coordinator, string[], string, string, string][] = [
    [coordinator, nats, 'worker-timeout-ms', '5000000000', '100..3600000'],
    [coordinator, nats, 'max-attempts', '1000', '1..100'],
    [coordinator, nats, 'nats-wait-ms', '700000', '0..600000'],
    [worker, nats, 'heartbeat-ms', '99999999999', '50..60000'],
    [worker, nats, 'threads', '100000', '1..1024'],
    [train, ['cnn'], 'epochs', '1000000', '1..100000'],
    [train, ['cnn'], 'batch-size', '100000', '1..65536'],
    [train, ['cnn'], 'seed', '3000000000', '0..2147483647'],
    [train, ['cnn'], 'limit-train', '1000000000000', '1..100000000'],
    [train, ['cnn'], 'lr', '1000', '>0..10'],
    [train, ['cnn'], 'patience', '1000000', '0..100000'],
    [train, ['cnn'], 'min-delta', '1e7', '0..1000000'],
    [train, ['cnn'], 'members', '5000', '1..1000'],
    [train, ['cnn', '--members', '2'], 'workers', '1000', '1..256'],
    [train, ['cnn', '--members', '2', '--ensemble', 'selection'], 'max-iter', '1000000', '1..100000'],
    [train, ['cnn', '--members', '2', ...nats], 'nats-wait-ms', '700000', '0..600000'],
    [train, ['cnn', '--data-parallel', ...nats], 'shards', '100000', '1..256'],
    [train, ['simclr'], 'temperature', '1e9', '>0..1000000'],
    [train, ['simclr'], 'probe-epochs', '1000000', '1..100000'],
    [train, ['mil'], 'bags', '1000000000', '1..100000000'],
    [train, ['mil'], 'bag-mean', '1e9', '>0..10000'],
    [bench, ['train'], 'iters', '1000000', '1..100000'],
    [bench, ['train'], 'threads', '5000', '1..1024'],
  ];
  for (const [command, argv, option, value, range] of table) {
    const name =
      command === coordinator
        ? 'coordinator'
        : command === worker
          ? 'worker'
          : `${command === bench ? 'bench' : 'train'} ${argv[0]}`;
    it(`fleet ${name} --${option} ${value}: a usage error naming the option, the value and ${range}`, async () => {
      await assert.rejects(command([...argv, `--${option}`, value]), (e: unknown) => {
        assert.ok(e instanceof UsageError, String(e));
        const quote = (s: string) => s.replace(/[.+]/g, '\\$&');
        const re = `^--${option}: must be (at most|positive).*, got ${quote(value)} \\(allowed ${quote(range)}\\)$`;
        assert.match(e.message, new RegExp(re));
        return true;
      });
    });
  }

  it('every *-ms option of coordinator and worker refuses a delay past the timer limit', async () => {
    for (const [command, options] of [
      [coordinator, COORDINATOR_OPTIONS],
      [worker, WORKER_OPTIONS],
    ] as const) {
      const ms = Object.keys(options).filter(o => o.endsWith('-ms'));
      assert.ok(ms.length >= 2, ms.join(', '));
      for (const o of ms) {
        await assert.rejects(
          command([...nats, `--${o}`, String(2 ** 31)]),
          (e: unknown) => e instanceof UsageError && e.message.startsWith(`--${o}: must be at most`),
        );
      }
    }
  });

  it('the command line: exit 2 with the one line', async () => {
    const r = await runFleet(['coordinator', ...nats, '--worker-timeout-ms', '5000000000']);
    assert.equal(r.code, 2);
    assert.equal(
      r.stderr,
      'fleet: --worker-timeout-ms: must be at most 3600000, got 5000000000 (allowed 100..3600000)\n',
    );
  });

  it('TLS and credential settings that could not take effect are usage errors', async () => {
    const cases: [typeof worker, string[], NodeJS.ProcessEnv, RegExp][] = [
      [worker, [...nats, '--nats-key', 'k.pem'], {}, /^--nats-key: needs --nats-cert/],
      [coordinator, [...nats, '--nats-cert', 'c.pem'], {}, /^--nats-cert: needs --nats-key/],
      [
        worker,
        ['--nats', 'http://127.0.0.1:4222'],
        {},
        /^--nats: expected nats:\/\/HOST:PORT or tls:\/\/HOST:PORT, got "http:\/\/127\.0\.0\.1:4222"$/,
      ],
      [worker, ['--nats', 'nats://u:Pw-9@[bad'], {}, /^--nats: expected .*, got "nats:\/\/u:\*\*\*@\[bad"$/],
      [worker, nats, { NATS_PASSWORD: 'x' }, /^NATS_PASSWORD is set without NATS_USER/],
      [worker, nats, { NATS_USER: 'x' }, /^NATS_USER is set without NATS_PASSWORD/],
      [worker, nats, { NATS_USER: 'x', NATS_PASSWORD: 'y', NATS_TOKEN: 'z' }, /^NATS_USER and NATS_TOKEN are both set/],
      [
        coordinator,
        ['--nats', 'nats://a:b@127.0.0.1:1'],
        { NATS_USER: 'x', NATS_PASSWORD: 'y' },
        /^--nats: the URL carries credentials and so does NATS_USER/,
      ],
      [train, ['cnn', '--members', '2', '--nats-ca', 'ca.pem'], {}, /^--nats-ca: only with --nats URL/],
      [train, ['cnn', '--members', '2', ...nats, '--nats-key', 'k.pem'], {}, /^--nats-key: needs --nats-cert/],
      [train, ['simclr', ...nats, '--nats-cert', 'c.pem'], {}, /^--nats-cert: needs --nats-key/],
      [worker, [...nats, '--id', 'a.b'], {}, /^--id: .*must not contain/],
    ];
    const saved = { ...process.env };
    try {
      for (const [command, argv, env, re] of cases) {
        for (const k of ['NATS_USER', 'NATS_PASSWORD', 'NATS_TOKEN', 'NATS_NKEY_SEED']) delete process.env[k];
        Object.assign(process.env, env);
        await assert.rejects(command(argv), (e: unknown) => {
          assert.ok(e instanceof UsageError, `${argv.join(' ')}: ${String(e)}`);
          assert.match(e.message, re, argv.join(' '));
          return true;
        });
      }
    } finally {
      for (const k of Object.keys(process.env)) if (!(k in saved)) delete process.env[k];
      Object.assign(process.env, saved);
    }
  });
});
