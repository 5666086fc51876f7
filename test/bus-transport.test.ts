// The same behavioural suite over both transports (NATS against a real nats-server, and the
// in-process hub), then the parts only one of them has (auth/reconnect/TLS; worker threads).

import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import type { BusMessage, Transport } from '../bus/transport.ts';
import { connectNats, type NatsOptions } from '../bus/nats-transport.ts';
import { InprocHub, inprocTransportFromPort } from '../bus/inproc-transport.ts';
import {
  SUBJECTS,
  inferSubject,
  jobProgressSubject,
  subjectMatches,
  subjectToken,
  taskLeaseSubject,
  tensorSubject,
  validateSubject,
  workerHeartbeatSubject,
} from '../bus/subjects.ts';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';

const enc = new TextEncoder();
const dec = new TextDecoder();
const text = (m: BusMessage) => dec.decode(m.data);
const MAX_PAYLOAD = 65536;

async function waitFor(cond: () => boolean, what: string, timeoutMs = 10_000): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  while (!cond()) {
    if (Date.now() > deadline) throw new Error(`timed out waiting for ${what}`);
    await new Promise(r => setTimeout(r, 5));
  }
}

const sleep = (ms: number) => new Promise(r => setTimeout(r, ms));

/** How a suite obtains connected transports; every transport it hands out is closed after each test. */
interface Fixture {
  /** A new, independent connection. */
  connect(): Promise<Transport>;
  /** Handler errors reported through the onError hook. */
  errors: Array<{ err: unknown; subject: string }>;
}

function transportSuite(name: string, setup: () => Promise<Fixture>, teardown: () => Promise<void>) {
  describe(`bus transport: ${name}`, () => {
    let fx: Fixture;
    let open: Transport[] = [];
    const connect = async () => {
      const t = await fx.connect();
      open.push(t);
      return t;
    };
    /** Subscribes and records every message. */
    const collect = (t: Transport, subject: string, queue?: string) => {
      const got: BusMessage[] = [];
      const sub = t.subscribe(subject, m => void got.push(m), queue ? { queue } : undefined);
      return { got, sub };
    };

    before(async () => {
      fx = await setup();
    });
    afterEach(async () => {
      await Promise.all(open.map(t => t.close()));
      open = [];
      fx.errors.length = 0;
    });
    after(teardown);

    it('publishes and subscribes', async () => {
      const [a, b] = [await connect(), await connect()];
      const { got } = collect(b, 'test.pub');
      await b.flush();
      a.publish('test.pub', enc.encode('hello'));
      await waitFor(() => got.length === 1, 'one message');
      assert.equal(got[0].subject, 'test.pub');
      assert.equal(text(got[0]), 'hello');
      assert.equal(got[0].reply, undefined);
    });

    it('matches wildcards: * one token, > the tail', async () => {
      const [a, b] = [await connect(), await connect()];
      const star = collect(b, 'w.*');
      const tail = collect(b, 'w.>');
      const mid = collect(b, 'w.*.end');
      const done = collect(b, 'done');
      await b.flush();
      for (const s of ['w', 'w.a', 'w.a.b', 'w.x.end', 'x.a']) a.publish(s, enc.encode(s));
      a.publish('done', new Uint8Array(0)); // same publisher and receiver: arrives after the others
      await waitFor(() => done.got.length === 1, 'wildcard deliveries');
      assert.deepEqual(star.got.map(text), ['w.a']);
      assert.deepEqual(tail.got.map(text), ['w.a', 'w.a.b', 'w.x.end']);
      assert.deepEqual(mid.got.map(text), ['w.x.end']);
    });

    it('splits a queue group: each message to exactly one member, plain subscribers get all', async () => {
      const [a, b, c] = [await connect(), await connect(), await connect()];
      const members = [collect(b, 'jobs', 'workers'), collect(c, 'jobs', 'workers'), collect(c, 'jobs', 'workers')];
      const watcher = collect(b, 'jobs');
      await Promise.all([b.flush(), c.flush()]);
      const n = 60;
      for (let i = 0; i < n; i++) a.publish('jobs', enc.encode(String(i)));
      await waitFor(() => watcher.got.length === n && members.reduce((s, m) => s + m.got.length, 0) === n, 'all jobs');
      const seen = members.flatMap(m => m.got.map(text)).sort((x, y) => +x - +y);
      assert.deepEqual(
        seen,
        Array.from({ length: n }, (_, i) => String(i)),
      );
      for (const m of members) assert.ok(m.got.length > 0, 'every member got some work');
    });

    it('does request/reply', async () => {
      const [a, b] = [await connect(), await connect()];
      b.subscribe('svc.double', m => b.respond(m, enc.encode(text(m) + text(m))));
      await b.flush();
      const answer = await a.request('svc.double', enc.encode('ab'), 5000);
      assert.equal(text(answer), 'abab');
      // Several in flight at once, each gets its own answer.
      const many = await Promise.all(['1', '2', '3'].map(s => a.request('svc.double', enc.encode(s), 5000)));
      assert.deepEqual(many.map(text), ['11', '22', '33']);
    });

    it('rejects a request nobody answers with a timeout error', async () => {
      const [a, b] = [await connect(), await connect()];
      const { got } = collect(b, 'svc.silent');
      await b.flush();
      await assert.rejects(
        a.request('svc.silent', enc.encode('x'), 150),
        /request to svc\.silent timed out after 150 ms/,
      );
      assert.equal(got.length, 1);
      assert.ok(got[0].reply, 'the request carried a reply subject');
    });

    it('rejects a request with no subscriber as "no responders"', async () => {
      const a = await connect();
      await assert.rejects(a.request('svc.nobody', enc.encode('x'), 5000), /no responders for svc\.nobody/);
    });

    it('delivers many messages in publish order', async () => {
      const [a, b] = [await connect(), await connect()];
      const { got } = collect(b, 'seq');
      await b.flush();
      const n = 3000;
      for (let i = 0; i < n; i++) a.publish('seq', enc.encode(String(i)));
      await waitFor(() => got.length === n, `${n} messages`);
      got.forEach((m, i) => assert.equal(text(m), String(i)));
    });

    it('reports maxPayload and refuses larger messages', async () => {
      const [a, b] = [await connect(), await connect()];
      assert.equal(a.maxPayload, MAX_PAYLOAD);
      const { got } = collect(b, 'big');
      await b.flush();
      const full = new Uint8Array(MAX_PAYLOAD).map((_, i) => i % 251);
      a.publish('big', full);
      assert.throws(() => a.publish('big', new Uint8Array(MAX_PAYLOAD + 1)), /max_payload/);
      await waitFor(() => got.length === 1, 'the full-size message');
      assert.deepEqual(got[0].data, full);
    });

    it('copies payloads: a sender reusing its buffer after publish() changes nothing', async () => {
      const [a, b] = [await connect(), await connect()];
      const { got } = collect(b, 'copy');
      await b.flush();
      const small = new Uint8Array([1, 2, 3]);
      const large = new Uint8Array(40_000).fill(7);
      a.publish('copy', small);
      small.fill(0);
      a.publish('copy', large);
      large.fill(0);
      await waitFor(() => got.length === 2, 'two messages');
      assert.deepEqual([...got[0].data], [1, 2, 3]);
      assert.ok(got[1].data.every(v => v === 7));
    });

    it('keeps delivering after a handler throws, and reports the error', async () => {
      const [a, b] = [await connect(), await connect()];
      const seen: string[] = [];
      b.subscribe('flaky', m => {
        seen.push(text(m));
        if (text(m) === '1') throw new Error('boom');
      });
      b.subscribe('flaky', async m => {
        if (text(m) === '2') throw new Error('async boom');
      });
      await b.flush();
      for (const s of ['1', '2', '3']) a.publish('flaky', enc.encode(s));
      await waitFor(() => seen.length === 3 && fx.errors.length === 2, 'three deliveries and two errors');
      assert.deepEqual(seen, ['1', '2', '3']);
      assert.deepEqual(fx.errors.map(e => (e.err as Error).message).sort(), ['async boom', 'boom']);
      assert.ok(fx.errors.every(e => e.subject === 'flaky'));
      assert.equal((b as Transport & { handlerErrors: number }).handlerErrors, 2);
    });

    it('stops delivery after unsubscribe', async () => {
      const [a, b] = [await connect(), await connect()];
      const first = collect(b, 'unsub');
      const marker = collect(b, 'unsub.marker');
      await b.flush();
      a.publish('unsub', enc.encode('1'));
      await waitFor(() => first.got.length === 1, 'first message');
      first.sub.unsubscribe();
      await b.flush();
      a.publish('unsub', enc.encode('2'));
      a.publish('unsub.marker', enc.encode('m'));
      await waitFor(() => marker.got.length === 1, 'marker');
      assert.equal(first.got.length, 1);
    });

    it('close() ends subscriptions and pending requests, and is idempotent', async () => {
      const [a, b] = [await connect(), await connect()];
      const { got } = collect(b, 'closing');
      b.subscribe('svc.hang', () => {});
      await b.flush();
      const pending = a.request('svc.hang', enc.encode('x'), 30_000);
      await sleep(50);
      await a.close();
      await assert.rejects(pending);
      assert.throws(() => a.publish('closing', enc.encode('x')));
      await a.close();
      await b.close();
      const c = await connect();
      c.publish('closing', enc.encode('after'));
      await c.flush();
      await sleep(50);
      assert.equal(got.length, 0);
    });
  });
}

// ---- NATS -----------------------------------------------------------------------------------

const haveNats = natsServerAvailable();
let natsServer: NatsServerHandle | undefined;
const natsErrors: Fixture['errors'] = [];

if (haveNats) {
  transportSuite(
    'nats',
    async () => {
      natsServer = await startNatsServer({ maxPayload: MAX_PAYLOAD });
      const url = natsServer.url;
      return {
        errors: natsErrors,
        connect: () => connectNats(url, { name: 'test', onError: (err, subject) => natsErrors.push({ err, subject }) }),
      };
    },
    async () => {
      await natsServer?.dispose();
    },
  );
} else {
  // the bus is tested against a real server: a machine without one fails here rather than passing silently
  describe('bus transport: nats', () =>
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed')));
}

// ---- in-process ---------------------------------------------------------------------------

let hub: InprocHub | undefined;
const hubErrors: Fixture['errors'] = [];
transportSuite(
  'inproc',
  async () => {
    hub = new InprocHub({ maxPayload: MAX_PAYLOAD, onError: (err, subject) => hubErrors.push({ err, subject }) });
    const h = hub;
    return { errors: hubErrors, connect: async () => h.transport() };
  },
  async () => hub?.close(),
);

// ---- NATS only ----------------------------------------------------------------------------

(haveNats ? describe : describe.skip)('bus transport: nats only', () => {
  const servers: NatsServerHandle[] = [];
  const open: Transport[] = [];
  const start = async (opts: Parameters<typeof startNatsServer>[0]) => {
    const s = await startNatsServer(opts);
    servers.push(s);
    return s;
  };
  const connect = async (url: string, opts?: NatsOptions) => {
    const t = await connectNats(url, opts);
    open.push(t);
    return t;
  };
  afterEach(async () => {
    await Promise.all(open.splice(0).map(t => t.close()));
  });
  after(async () => {
    await Promise.all(servers.splice(0).map(s => s.dispose()));
  });

  async function roundTrip(t: Transport): Promise<void> {
    const got: string[] = [];
    t.subscribe('auth.check', m => void got.push(text(m)));
    await t.flush();
    t.publish('auth.check', enc.encode('ok'));
    await waitFor(() => got.length === 1, 'round trip');
  }

  it('authenticates with user/password; a wrong password fails without echoing it', async () => {
    const pass = 'Right-Pa55word';
    const s = await start({ user: 'fleet', pass });
    await roundTrip(await connect(s.url, { user: 'fleet', pass }));
    const wrong = 'Wrong-Pa55word';
    await assert.rejects(connectNats(s.url, { user: 'fleet', pass: wrong, reconnect: false }), (err: Error) => {
      assert.match(err.message, /cannot connect to NATS at nats:\/\/127\.0\.0\.1:\d+/);
      assert.match(err.message, /authorization/i);
      assert.ok(!err.message.includes(wrong) && !err.message.includes(pass), err.message);
      assert.ok(!String(err.stack).includes(wrong));
      return true;
    });
    // Credentials inside the URL are redacted as well.
    const inUrl = s.url.replace('nats://', `nats://fleet:${wrong}@`);
    await assert.rejects(connectNats(inUrl, { reconnect: false }), (err: Error) => !err.message.includes(wrong));
    await assert.rejects(connectNats(s.url, { reconnect: false }), /authorization/i);
  });

  it('authenticates with a token', async () => {
    const token = 'tok-0123456789abcdef';
    const s = await start({ token });
    await roundTrip(await connect(s.url, { token }));
    const wrong = 'tok-not-the-right-one';
    await assert.rejects(connectNats(s.url, { token: wrong, reconnect: false }), (err: Error) => {
      assert.match(err.message, /authorization/i);
      assert.ok(!err.message.includes(wrong), err.message);
      return true;
    });
  });

  it('reconnects: a subscription receives messages published after a server restart', async () => {
    const s = await start({});
    const events: string[] = [];
    const sub = await connect(s.url, { onStatus: e => events.push(e) });
    const pub = await connect(s.url);
    const got: string[] = [];
    sub.subscribe('fleet.test.restart', m => void got.push(text(m)));
    await sub.flush();
    pub.publish('fleet.test.restart', enc.encode('before'));
    await waitFor(() => got.length === 1, 'message before restart');

    await s.stop();
    await waitFor(() => events.some(e => e.startsWith('disconnect')), 'disconnect event');
    await s.restart();
    await waitFor(() => events.some(e => e.startsWith('reconnect ')), 'reconnect event', 20_000);
    // The publisher may reconnect a little later than the subscriber: keep sending until one arrives.
    for (let i = 0; !got.includes('after'); i++) {
      if (i > 400) assert.fail('no message after restart');
      pub.publish('fleet.test.restart', enc.encode('after'));
      await sleep(50);
    }
  });

  it('status events: routine pings and reconnect attempts are not reported, disconnect and reconnect are', async () => {
    const s = await start({});
    const events: string[] = [];
    await connect(s.url, { onStatus: e => events.push(e), pingIntervalMs: 50 });
    await sleep(600); // about 12 answered pings
    assert.equal(events.length, 0, `nothing to report on a healthy connection: ${events.join(' | ')}`);
    await s.stop();
    await waitFor(() => events.some(e => e.startsWith('disconnect')), 'disconnect event');
    await sleep(600); // reconnect attempts every 250 ms while the server is away
    await s.restart();
    await waitFor(() => events.some(e => e.startsWith('reconnect ')), 'reconnect event', 20_000);
    assert.ok(
      events.every(e => !/^reconnecting|^ping \(/.test(e)),
      events.join(' | '),
    );
  });

  const haveOpenssl = spawnSync('openssl', ['version']).status === 0;
  (haveOpenssl ? it : it.skip)('connects over TLS with a CA file', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'fleet-tls-'));
    try {
      const certFile = join(dir, 'cert.pem');
      const keyFile = join(dir, 'key.pem');
      const r = spawnSync('openssl', [
        'req',
        '-x509',
        '-newkey',
        'ec',
        '-pkeyopt',
        'ec_paramgen_curve:prime256v1',
        '-nodes',
        '-keyout',
        keyFile,
        '-out',
        certFile,
        '-days',
        '1',
        '-subj',
        '/CN=127.0.0.1',
        '-addext',
        'subjectAltName=IP:127.0.0.1,DNS:localhost',
      ]);
      assert.equal(r.status, 0, String(r.stderr));
      const s = await start({ tls: { certFile, keyFile } });
      await roundTrip(await connect(s.url, { tls: { caFile: certFile } }));
      // Without trusting the CA the handshake fails.
      await assert.rejects(connectNats(s.url, { tls: {}, reconnect: false }));
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

// ---- in-process only ------------------------------------------------------------------------

describe('bus transport: inproc only', () => {
  let h: InprocHub;
  beforeEach(() => {
    h = new InprocHub();
  });
  afterEach(() => h.close());

  it('defaults maxPayload to 1 MiB', () => {
    assert.equal(h.transport().maxPayload, 1024 * 1024);
  });

  it('never delivers inside publish()', async () => {
    const t = h.transport();
    let inPublish = false;
    let sawInPublish = false;
    let count = 0;
    t.subscribe('sync', () => {
      sawInPublish ||= inPublish;
      count++;
    });
    inPublish = true;
    t.publish('sync', new Uint8Array(1));
    inPublish = false;
    await waitFor(() => count === 1, 'delivery');
    assert.equal(sawInPublish, false);
  });

  it('gives each receiver its own copy: one mutating its data does not affect another', async () => {
    const [a, b] = [h.transport(), h.transport()];
    const got: Uint8Array[] = [];
    b.subscribe('copy', m => {
      got.push(m.data);
      m.data.fill(9); // a careless receiver
    });
    b.subscribe('copy', m => void got.push(m.data.slice()));
    a.publish('copy', new Uint8Array([1, 2, 3]));
    await waitFor(() => got.length === 2, 'two deliveries');
    assert.deepEqual([...got[1]], [1, 2, 3]);
  });

  it('rejects malformed subjects', () => {
    const t = h.transport();
    assert.throws(() => t.publish('a.*', new Uint8Array(0)), /wildcards/);
    assert.throws(() => t.publish('a..b', new Uint8Array(0)), /invalid subject/);
    assert.throws(() => t.subscribe('a.>.b', () => {}), /must be last/);
  });

  it('serves a worker thread connected through hub.port()', async function () {
    const main = h.transport();
    const ready = new Promise<void>(resolve => main.subscribe('main.ready', () => resolve()));
    const seen: string[] = [];
    main.subscribe('main.seen', m => void seen.push(text(m)));
    const answers: string[] = [];
    main.subscribe('main.answer', m => void answers.push(text(m)));
    main.subscribe('main.service', m => main.respond(m, enc.encode(`main:${text(m)}`)));

    const port = h.port();
    const worker = new Worker(new URL('./helpers/bus-worker.js', import.meta.url), {
      workerData: { port },
      transferList: [port],
    });
    const failed = new Promise<never>((_, reject) => worker.once('error', reject));
    try {
      await Promise.race([ready, failed]);
      // main -> worker request/reply
      const reply = await main.request('worker.echo.x', enc.encode('ping'), 5000);
      assert.equal(text(reply), 'echo:ping');
      // main -> worker subscription, in order
      for (let i = 0; i < 100; i++) main.publish('worker.inbox', enc.encode(String(i)));
      await waitFor(() => seen.length === 100, 'worker echoes');
      assert.deepEqual(
        seen,
        Array.from({ length: 100 }, (_, i) => String(i)),
      );
      // worker -> main request/reply
      main.publish('worker.ask', enc.encode('q'));
      await waitFor(() => answers.length === 1, 'worker answer');
      assert.equal(answers[0], 'main:q');
      // Once the worker closes its transport, its subscriptions are gone and the thread can exit.
      const exited = new Promise<number>(resolve => worker.once('exit', resolve));
      main.publish('worker.stop', new Uint8Array(0));
      assert.equal(await exited, 0);
      // the hub learns of the closed port asynchronously: within a few seconds requests must fail fast
      let last = '';
      for (let i = 0; i < 50 && !/no responders/.test(last); i++) {
        last = await main.request('worker.echo.x', enc.encode('ping'), 100).then(
          () => 'answered',
          (e: Error) => e.message,
        );
      }
      assert.match(last, /no responders/);
    } finally {
      await worker.terminate();
    }
  });

  it('refuses a port that does not come from a hub', () => {
    const { port1 } = new MessageChannel();
    assert.throws(() => inprocTransportFromPort(port1), /not a port from InprocHub/);
    port1.close();
  });
});

// ---- subjects -------------------------------------------------------------------------------

describe('bus subjects', () => {
  it('matches NATS wildcards', () => {
    const cases: Array<[string, string, boolean]> = [
      ['a.b', 'a.b', true],
      ['a.b', 'a.c', false],
      ['a.*', 'a.b', true],
      ['a.*', 'a', false],
      ['a.*', 'a.b.c', false],
      ['a.*.c', 'a.b.c', true],
      ['*.*', 'a.b', true],
      ['a.>', 'a.b', true],
      ['a.>', 'a.b.c.d', true],
      ['a.>', 'a', false],
      ['>', 'a', true],
      ['>', 'a.b', true],
      ['a.b', 'a.b.c', false],
      ['a.b.c', 'a.b', false],
      ['a.>', 'a..b', false],
    ];
    for (const [p, s, want] of cases) assert.equal(subjectMatches(p, s), want, `${p} vs ${s}`);
  });

  it('builds subjects from validated ids', () => {
    assert.equal(workerHeartbeatSubject('w-1'), 'fleet.worker.heartbeat.w-1');
    assert.equal(taskLeaseSubject('w-1'), 'fleet.task.lease.w-1');
    assert.equal(jobProgressSubject('job_7'), 'fleet.job.progress.job_7');
    assert.equal(tensorSubject('t9'), 'fleet.tensor.t9');
    assert.equal(inferSubject('cnn'), 'fleet.infer.cnn');
    assert.ok(subjectMatches(SUBJECTS.workerHeartbeatAll, workerHeartbeatSubject('w-1')));
    assert.ok(subjectMatches(SUBJECTS.jobProgressAll, jobProgressSubject('j')));
    assert.ok(subjectMatches(SUBJECTS.inferAll, inferSubject('cnn')));
    for (const bad of ['', 'a.b', 'a b', '*', '>', 'x>', 'tab\there']) {
      assert.throws(() => subjectToken(bad), `${JSON.stringify(bad)} must be refused`);
    }
    assert.throws(() => workerHeartbeatSubject('w.1'));
    assert.doesNotThrow(() => validateSubject(SUBJECTS.taskResult, false));
  });
});
