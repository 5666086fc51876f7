// Operating jobs: `fleet jobs list|status|watch|cancel|logs` against `fleet coordinator` and `fleet worker`
// processes on a real nats-server; cancelling a running job frees its workers; `fleet train --nats --detach`,
// Ctrl-C on a submitting `fleet train --nats`, a single model as a 1-member job; the HTTP API's job reads and
// token-guarded changes. Jobs are tiny except the ones meant to be cancelled (long enough never to finish).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { ProcGroup, waitFor, getJson, readJob, type Coord, type FleetProc } from '../bench/harness/fleet-procs.ts';
import { runFleet, lines, type CliResult } from './helpers/cli.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { voting, submit } from './helpers/jobs.ts';
import { InprocHub } from '../bus/inproc-transport.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { serveHttp } from '../coordinator/http.ts';
import { bounded } from '../coordinator/jobs-api.ts';
import { taskCancelSubject } from '../bus/subjects.ts';
import { jsonField } from '../bus/codec.ts';
import { startEmbedded, tinyJob, waitJobDone } from './helpers/embedded.ts';

const TOKEN = 'jobs-test-token-0123456789abcdef';
const show = (r: CliResult) => `exit ${r.code}\n[stdout]\n${r.stdout}\n[stderr]\n${r.stderr}`;

/** A request with a method and headers; resolves with the status and parsed JSON body. */
function call(
  url: string,
  method: string,
  headers: Record<string, string> = {},
  body?: string,
): Promise<{ status: number; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, headers, timeout: 10_000 }, res => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        text += d;
      });
      res.on('end', () => {
        try {
          resolve({ status: res.statusCode ?? 0, body: JSON.parse(text) });
        } catch (e) {
          reject(new Error(`${method} ${url}: ${text}`));
        }
      });
    });
    req.on('error', reject);
    req.end(body);
  });
}

describe('fleet jobs: list, status, watch, cancel and logs against a coordinator on a real nats-server', function () {
  this.timeout(300_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }
  let nats: NatsServerHandle;
  let tmp: string;
  let group: ProcGroup;
  let coord: Coord;
  let workers: FleetProc[];
  let bus: NatsTransport;
  const jobs = (...args: string[]) => runFleet(['jobs', ...args, '--nats', nats.url], { timeoutMs: 120_000 });
  /** A job that would train for minutes: 2 members, many epochs. */
  const long = () => ({ ...voting(2, 2000), epochs: 200 });
  const tiny = () => voting(1, 128);
  const training = (w: FleetProc, jobId: string) =>
    new RegExp(`task member-\\d of job ${jobId} \\(attempt \\d+\\): training`).test(w.stderr);

  before(async () => {
    nats = await startNatsServer();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-jobs-'));
    group = new ProcGroup();
  });
  after(async () => {
    await bus?.close();
    await group?.killAll();
    await nats?.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') console.log(group.describe());
  });

  it('with no coordinator on the bus: a clear error naming the NATS URL, exit 1', async () => {
    const r = await runFleet(['jobs', 'list', '--nats', nats.url, '--timeout-ms', '500']);
    assert.equal(r.code, 1, show(r));
    assert.match(
      r.stderr,
      new RegExp(`${nats.url.replace(/[.]/g, '\\.')}: no coordinator answered on fleet\\.jobs\\.list`),
    );
  });

  it('usage: an unknown action or a bad job id is a usage error (exit 2)', async () => {
    for (const args of [['frob'], ['status'], ['status', 'a.b']]) {
      const r = await jobs(...args);
      assert.equal(r.code, 2, show(r));
    }
  });

  it('starts a coordinator (HTTP job changes with a token) and two workers', async () => {
    const tokenFile = path.join(tmp, 'token');
    fs.writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    coord = await group.coordinator(nats.url, path.join(tmp, 'state'), ['--api-token-file', tokenFile]);
    workers = [await group.worker(nats.url, 'jw1'), await group.worker(nats.url, 'jw2')];
    bus = await connectNats(nats.url, { name: 'jobs-test' });
  });

  let finished = '',
    cancelled = '',
    waiting = '';
  it('list shows running and finished jobs; watch of a finished job exits 0; status and logs tell its story', async () => {
    finished = await submit(bus, tiny());
    const w = await jobs('watch', finished);
    assert.equal(w.code, 0, show(w));
    assert.match(w.stdout, new RegExp(`job ${finished}: done, 1/1 tasks done`));
    cancelled = await submit(bus, long());
    await waitFor(() => workers.every(x => training(x, cancelled)), 60_000, 'both workers training the long job');
    const l = await jobs('list');
    assert.equal(l.code, 0, show(l));
    const row = (id: string) =>
      lines(l.stdout)
        .find(x => x.startsWith(id))
        ?.split(/\s+/);
    assert.deepEqual(row(finished)?.slice(1, 5), ['done', 'voting', '1', '1/1'], l.stdout);
    assert.deepEqual(row(cancelled)?.slice(1, 5), ['running', 'voting', '2', '0/2'], l.stdout);
    const json = await jobs('list', '--json');
    const listed = JSON.parse(json.stdout).jobs as { id: string; state: string }[];
    assert.deepEqual(
      listed.map(j => [j.id, j.state]),
      [
        [cancelled, 'running'],
        [finished, 'done'],
      ],
    );
    const logs = await jobs('logs', finished);
    assert.equal(logs.code, 0, show(logs));
    assert.match(logs.stdout, /submitted: cnn voting ensemble of 1/);
    assert.match(logs.stdout, /member-1: leased to jw\d/);
    assert.match(logs.stdout, /finished: test accuracy/);
    const none = await jobs('status', 'job-none');
    assert.equal(none.code, 1, show(none));
    assert.match(none.stderr, /no coordinator answered on fleet\.jobs\.status\.job-none/);
  });

  it("cancel stops both workers' tasks within seconds; they take the next job; cancelled in CLI, API, metrics, state", async () => {
    waiting = await submit(bus, tiny()); // queued behind the long job's two tasks
    const t0 = Date.now();
    const c = await jobs('cancel', cancelled);
    assert.equal(c.code, 0, show(c));
    assert.equal(c.stdout.trim(), `job ${cancelled}: cancelled`);
    for (const w of workers) {
      await w.waitForLog(
        new RegExp(`task member-\\d of job ${cancelled}: stopped \\(the job was cancelled\\)`),
        30_000,
      );
    }
    const stoppedAfter = Date.now() - t0;
    assert.ok(stoppedAfter < 30_000, `stopped after ${stoppedAfter} ms`);
    // a freed worker trains the job that waited
    await waitFor(() => readJob(coord.stateDir, waiting)?.state === 'done', 120_000, `job ${waiting} to finish`);
    assert.equal(readJob(coord.stateDir, cancelled)?.state, 'cancelled');
    assert.deepEqual(
      readJob(coord.stateDir, cancelled)?.tasks.map(t => t.state),
      ['cancelled', 'cancelled'],
    );
    const s = await jobs('status', cancelled);
    assert.equal(s.code, 0, show(s));
    assert.match(s.stdout, new RegExp(`^job ${cancelled}: cancelled`));
    assert.match(s.stdout, /cancelled: cancelled by .*fleet jobs cancel/);
    const w = await jobs('watch', cancelled);
    assert.equal(w.code, 1, show(w));
    assert.match(w.stderr, new RegExp(`job ${cancelled} cancelled`));
    const logs = await jobs('logs', cancelled);
    assert.match(logs.stdout, /member-1: stop sent to jw\d/);
    const api = await getJson(`${coord.api}/api/jobs/${cancelled}`);
    assert.equal(api.status, 200);
    assert.equal(api.body.state, 'cancelled');
    const all = await getJson(`${coord.api}/api/jobs`);
    assert.equal(all.body.find((j: { id: string }) => j.id === cancelled).state, 'cancelled');
    const metrics = await new Promise<string>((resolve, reject) =>
      http
        .get(`${coord.api}/metrics`, res => {
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
    assert.match(metrics, /^fleet_jobs\{state="cancelled"\} 1$/m);
    // a second cancel is harmless; a finished job cannot be cancelled
    assert.equal((await jobs('cancel', cancelled)).code, 0);
    const done = await jobs('cancel', finished);
    assert.equal(done.code, 1, show(done));
    assert.match(done.stderr, /is already done/);
  });

  it('HTTP: GET /api/jobs/<id>; DELETE without, with a wrong and with the right token; POST submits', async () => {
    const id = await submit(bus, long());
    const url = `${coord.api}/api/jobs/${id}`;
    assert.equal((await call(url, 'DELETE')).status, 401);
    assert.equal((await call(url, 'DELETE', { authorization: `Bearer ${TOKEN}x` })).status, 403);
    assert.equal((await call(url, 'DELETE', { authorization: 'Bearer' })).status, 401);
    assert.equal(readJob(coord.stateDir, id)?.state, 'running');
    const ok = await call(url, 'DELETE', { authorization: `Bearer ${TOKEN}` });
    assert.equal(ok.status, 200, JSON.stringify(ok.body));
    assert.equal(ok.body.state, 'cancelled');
    await waitFor(() => readJob(coord.stateDir, id)?.state === 'cancelled', 10_000, 'the cancel persisted');
    assert.equal(
      (await call(`${coord.api}/api/jobs/${finished}`, 'DELETE', { authorization: `Bearer ${TOKEN}` })).status,
      409,
    );
    assert.equal(
      (await call(`${coord.api}/api/jobs/job-none`, 'DELETE', { authorization: `Bearer ${TOKEN}` })).status,
      404,
    );
    assert.equal((await getJson(`${coord.api}/api/jobs/job-none`)).status, 404);
    const posted = await call(
      `${coord.api}/api/jobs`,
      'POST',
      { authorization: `Bearer ${TOKEN}` },
      JSON.stringify(tiny()),
    );
    assert.equal(posted.status, 201, JSON.stringify(posted.body));
    assert.equal((await call(`${coord.api}/api/jobs`, 'POST', {}, JSON.stringify(tiny()))).status, 401);
    assert.equal(
      (await call(`${coord.api}/api/jobs`, 'POST', { authorization: `Bearer ${TOKEN}` }, '{"kind":"x"}')).status,
      400,
    );
    await waitFor(() => readJob(coord.stateDir, posted.body.jobId)?.state === 'done', 120_000, 'the posted job');
    assert.ok(!coord.proc.stderr.includes(TOKEN), 'the token is never logged');
  });

  it('HTTP job changes are off without --api-token-file: 405 with a clear error; reads work', async () => {
    const hub = new InprocHub();
    const stateDir = fs.mkdtempSync(path.join(tmp, 'plain-'));
    const c = new Coordinator(hub.transport(), { stateDir });
    await c.start();
    const server = await serveHttp(c, '127.0.0.1', 0);
    try {
      const base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
      const job = c.submit(tiny());
      const r = await call(`${base}/api/jobs/${job.id}`, 'DELETE', { authorization: `Bearer ${TOKEN}` });
      assert.equal(r.status, 405);
      assert.match(r.body.error, /job changes over HTTP are off \(start the coordinator with --api-token-file FILE\)/);
      assert.equal((await call(`${base}/api/jobs`, 'POST', {}, '{}')).status, 405);
      assert.equal((await getJson(`${base}/api/jobs/${job.id}`)).body.state, 'running');
      assert.equal(job.state, 'running');
    } finally {
      server.close();
      await c.stop();
      hub.close();
    }
  });

  it('fleet train --nats --detach prints the job id and how to follow it, exits, and leaves no local folder', async () => {
    const out = path.join(tmp, 'detached');
    const r = await runFleet([
      'train',
      'cnn',
      '--members',
      '1',
      '--nats',
      nats.url,
      '--detach',
      '--epochs',
      '1',
      '--batch-size',
      '64',
      '--limit-train',
      '128',
      '--limit-test',
      '100',
      '--out',
      out,
    ]);
    assert.equal(r.code, 0, show(r));
    const id = /^submitted job (\S+)$/m.exec(r.stdout)?.[1];
    assert.ok(id, r.stdout);
    assert.match(r.stderr, new RegExp(`follow it with: fleet jobs watch ${id} --nats`));
    assert.ok(!fs.existsSync(out), 'no local run folder');
    const w = await jobs('watch', id!);
    assert.equal(w.code, 0, show(w));
  });

  it('Ctrl-C on a submitting fleet train --nats cancels the job, says so, and leaves no local folder', async () => {
    const out = path.join(tmp, 'interrupted');
    const p = group.spawn('train-sigint', [
      'train',
      'cnn',
      '--members',
      '2',
      '--nats',
      nats.url,
      '--epochs',
      '200',
      '--batch-size',
      '64',
      '--limit-train',
      '2000',
      '--limit-test',
      '100',
      '--out',
      out,
    ]);
    const id = (await p.waitForLog(/submitted job (\S+)/, 120_000))[1];
    await waitFor(() => workers.some(x => training(x, id)), 60_000, `a worker training ${id}`);
    p.child.kill('SIGINT');
    await waitFor(() => !p.alive, 60_000, 'fleet train to exit after Ctrl-C');
    const exit = await p.exited;
    assert.equal(exit.code, 130, p.describe());
    assert.match(p.stderr, new RegExp(`interrupted: asking the coordinator to cancel job ${id}`));
    assert.match(p.stderr, new RegExp(`job ${id}: cancelled`));
    assert.equal(readJob(coord.stateDir, id)?.state, 'cancelled');
    assert.ok(!fs.existsSync(out), 'no local run folder');
    for (const w of workers) if (training(w, id)) await w.waitForLog(new RegExp(`job ${id}: stopped`), 30_000);
  });

  it('fleet train cnn --nats without --members trains one model as a 1-member job, the same as the local run', async () => {
    const common = [
      '--epochs',
      '1',
      '--batch-size',
      '64',
      '--limit-train',
      '256',
      '--limit-test',
      '100',
      '--seed',
      '3',
      '--json',
    ];
    const cluster = await runFleet([
      'train',
      'cnn',
      '--nats',
      nats.url,
      ...common,
      '--out',
      path.join(tmp, 'single-cluster'),
    ]);
    assert.equal(cluster.code, 0, show(cluster));
    const local = await runFleet([
      'train',
      'cnn',
      '--threads',
      '1',
      ...common,
      '--out',
      path.join(tmp, 'single-local'),
    ]);
    assert.equal(local.code, 0, show(local));
    const a = JSON.parse(lines(cluster.stdout).at(-1)!),
      b = JSON.parse(lines(local.stdout).at(-1)!);
    assert.equal(a.members, 1);
    assert.equal(a.test_accuracy, b.test_accuracy);
    assert.ok(Math.abs(a.test_loss - b.test_loss) < 1e-5, `test loss ${a.test_loss} vs ${b.test_loss}`);
  });
});

describe('cancel on the in-process bus: the worker checks the lease; answers and histories are bounded', function () {
  this.timeout(180_000);

  it("a cancel naming the wrong token or attempt is dropped and counted; the coordinator's stops the task", async () => {
    const e = startEmbedded(1, { workerIds: ['cw1'] });
    try {
      const job = e.c.submit({ ...tinyJob('voting', 1, 200, 2000, 100) });
      const w = e.workers[0];
      await waitFor(() => w.stats.samples > 0, 60_000, 'the worker training');
      const t = job.tasks[0] as unknown as { task: { id: string }; attempts: number; token: string };
      const forged = (over: object) =>
        e.hub
          .transport()
          .publish(
            taskCancelSubject('cw1'),
            jsonField({ jobId: job.id, taskId: t.task.id, attempt: t.attempts, leaseToken: t.token, ...over }),
          );
      const before = w.stats.malformed;
      forged({ leaseToken: 'f'.repeat(32) });
      forged({ attempt: t.attempts + 1 });
      forged({ taskId: 'member-9' });
      e.hub.transport().publish(taskCancelSubject('cw1'), new TextEncoder().encode('not json'));
      await waitFor(() => w.stats.malformed >= before + 4, 10_000, 'the forged cancels counted');
      const samples = w.stats.samples;
      await waitFor(() => w.stats.samples > samples, 30_000, 'the worker still training');
      assert.equal(w.stats.cancelled, 0);
      assert.deepEqual(e.c.cancel(job.id, 'the test'), { ok: true, state: 'cancelled' });
      await waitFor(() => w.stats.cancelled === 1, 30_000, 'the task stopped');
      assert.equal(job.state, 'cancelled');
      assert.deepEqual(
        job.tasks.map(x => x.state),
        ['cancelled'],
      );
      assert.match(String(e.c.outcome(job.id)?.error), /cancelled by the test/);
      // the freed worker takes the next job
      const next = e.c.submit(tinyJob('voting', 1, 1, 64, 50));
      await waitJobDone(e.c, next);
      assert.equal(w.stats.completed, 1);
    } finally {
      await e.stop();
    }
  });

  it('an answer over the size bound keeps the newest events (or the first jobs) and says it was truncated', () => {
    const events = Array.from({ length: 1000 }, (_, i) => ({ at: i, text: `event ${i} ${'x'.repeat(40)}` }));
    const out = JSON.parse(new TextDecoder().decode(bounded({ ok: true, events }, 4096)));
    assert.ok(out.truncated && out.events.length > 0 && out.events.length < 1000);
    assert.equal(out.events.at(-1).text, events.at(-1)!.text);
    const jobs = Array.from({ length: 1000 }, (_, i) => ({ id: `job-${i}` }));
    const list = JSON.parse(new TextDecoder().decode(bounded({ ok: true, jobs }, 2048)));
    assert.ok(list.truncated && list.jobs.length < 1000);
    assert.equal(list.jobs[0].id, 'job-0');
    assert.ok(new TextEncoder().encode(JSON.stringify(list)).length <= 2048);
  });

  it('a job keeps its last 200 events', () => {
    const hub = new InprocHub();
    const c = new Coordinator(hub.transport(), { stateDir: fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-events-')) });
    for (let i = 0; i < 250; i++) c.jobEvent('job-x', `line ${i}`);
    const ev = c.jobEvents('job-x');
    assert.equal(ev.length, 200);
    assert.equal(ev[0].text, 'line 50');
    assert.equal(ev.at(-1)!.text, 'line 249');
    hub.close();
  });
});
