// The cluster end to end: a real nats-server, and `fleet coordinator` / `fleet worker` / `fleet train --nats`
// as real child processes. Equality with the local run, worker and coordinator crashes, a NATS outage,
// garbage on every subject, eight workers, and the HTTP API. Jobs are tiny (1 epoch on a few hundred
// images, --threads 1): these are correctness tests, nothing here measures speed.
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { lines } from './helpers/cli.ts';
import {
  ProcGroup,
  WaitAbort,
  waitFor,
  sleep,
  getJson,
  readJob,
  trainingsOf,
  type Coord,
  type FleetProc,
  type JobState,
} from '../bench/harness/fleet-procs.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { SUBJECTS, taskLeaseSubject, tensorSubject, workerHeartbeatSubject } from '../bus/subjects.ts';
import { encodeEnvelope, jsonField, Device, DType, type EnvelopeBody } from '../bus/codec.ts';
import { voting, submit } from './helpers/jobs.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** Waits for job.json to say done (fails at once if it fails, or if one of `watch` dies). */
function waitJob(stateDir: string, id: string, watch: FleetProc[] = [], timeoutMs = 150_000): Promise<JobState> {
  return waitFor(
    () => {
      for (const p of watch)
        if (!p.alive) throw new WaitAbort(`${p.name} died while job ${id} ran: ${JSON.stringify(p.exit)}`);
      const j = readJob(stateDir, id);
      if (j?.state === 'failed') throw new WaitAbort(`job ${id} failed: ${j.error}`);
      return j?.state === 'done' ? j : null;
    },
    timeoutMs,
    `job ${id} to finish`,
    200,
  );
}

/** Waits until the coordinator's /api/cluster lists these workers as not lost. */
function waitWorkers(c: Coord, ids: string[], timeoutMs = 60_000) {
  return waitFor(
    async () => {
      const { body } = await getJson(`${c.api}/api/cluster`);
      const seen = new Map((body.workers as { id: string; state: string }[]).map(w => [w.id, w.state]));
      return ids.every(id => seen.has(id) && seen.get(id) !== 'lost') ? body : null;
    },
    timeoutMs,
    `workers ${ids.join(', ')} on ${c.api}/api/cluster`,
    100,
  );
}

/** Deterministic garbage (xorshift32), so that a failure can be reproduced byte for byte. */
function garbageBytes(n: number, seed: number): Uint8Array {
  const out = new Uint8Array(n);
  let x = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    out[i] = x & 0xff;
  }
  return out;
}

const metricsOf = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8'));
const lastJson = (stdout: string) => JSON.parse(lines(stdout).at(-1)!);
const taskOf = (j: JobState, id: string) => j.tasks.find(t => t.task.id === id)!;

const available = natsServerAvailable();

describe('cluster: coordinator and workers as processes on a real nats-server', function () {
  this.timeout(240_000);
  if (!available) {
    // the cluster is tested against a real server: a machine without one fails here rather than passing silently
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }

  let nats: NatsServerHandle;
  let tmp: string;
  let group: ProcGroup;
  let bus: NatsTransport | null = null;
  let dirs = 0;
  const dir = (name: string) => path.join(tmp, `${++dirs}-${name}`);
  const client = async () => (bus = await connectNats(nats.url, { name: 'cluster-test' }));

  before(async () => {
    nats = await startNatsServer();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-cluster-'));
  });
  after(async () => {
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    group = new ProcGroup();
  });
  afterEach(async function () {
    // FLEET_TEST_LOGS=1 prints every process's output, also when the test passed
    if (this.currentTest?.state === 'failed' || process.env.FLEET_TEST_LOGS)
      process.stderr.write(`\nprocesses of "${this.currentTest?.title}":\n${group.describe()}\n`);
    await bus?.close().catch(() => {});
    bus = null;
    await group.killAll();
  });

  it('a voting job over 2 workers, and over 1, equals the local run (same member and ensemble test losses)', async () => {
    const settings = [
      '--members',
      '2',
      '--epochs',
      '1',
      '--limit-train',
      '400',
      '--limit-test',
      '100',
      '--batch-size',
      '64',
      '--seed',
      '7',
      '--json',
    ];
    const localOut = dir('local');
    const local = group.spawn('local train', ['train', 'cnn', ...settings, '--threads', '1', '--out', localOut]);

    const c = await group.coordinator(nats.url, dir('state'));
    const workers = await Promise.all(['w1', 'w2'].map(id => group.worker(nats.url, id)));
    await waitWorkers(c, ['w1', 'w2']);
    const viaCluster = async (name: string) => {
      const p = group.spawn(name, [
        'train',
        'cnn',
        ...settings,
        '--nats',
        nats.url,
        '--out',
        dir(name.replace(/\W+/g, '-')),
      ]);
      const exit = await p.exited;
      assert.equal(exit.code, 0, `${name} failed:\n${p.stderr}`);
      return lastJson(p.stdout);
    };
    const two = await viaCluster('submit (2 workers)');
    assert.equal((await local.exited).code, 0, `local run failed:\n${local.stderr}`);
    const ref = lastJson(local.stdout);
    const refMetrics = metricsOf(localOut);

    const check = (r: any, label: string) => {
      assert.equal(r.members, 2, label);
      for (const k of [
        'test_accuracy',
        'test_loss',
        'hard_vote_test_accuracy',
        'average_test_accuracy',
        'average_test_loss',
        'best_member_test_accuracy',
      ]) {
        assert.equal(r[k], ref[k], `${label}: ${k}`);
      }
      const members = metricsOf(r.coordinator_out).member_results as {
        name: string;
        test_loss: number;
        test_accuracy: number;
      }[];
      assert.deepEqual(
        members.map(m => [m.name, m.test_loss, m.test_accuracy]),
        (refMetrics.member_results as typeof members).map(m => [m.name, m.test_loss, m.test_accuracy]),
        `${label}: per-member test results`,
      );
      assert.ok(
        fs.existsSync(path.join(r.coordinator_out, 'model.onnx')),
        `${label}: the coordinator wrote model.onnx`,
      );
    };
    check(two, '2 workers');
    // both workers took part
    for (const w of workers) assert.match(w.stderr, /task member-\d: done/, `${w.name} trained a member`);

    // 1 worker: a fresh coordinator (new state) learns about w1 from its periodic announce
    await c.proc.stop();
    await workers[1].stop();
    const c1 = await group.coordinator(nats.url, dir('state-1'), [], 'coordinator (1 worker)');
    await waitWorkers(c1, ['w1']);
    const one = await viaCluster('submit (1 worker)');
    check(one, '1 worker');
    const job = readJob(c1.stateDir, metricsOf(one.coordinator_out).job)!;
    assert.deepEqual(
      job.tasks.map(t => [t.state, t.worker, t.attempts]),
      [
        ['done', 'w1', 1],
        ['done', 'w1', 1],
      ],
    );
  });

  it('kill -9 of a worker mid-job: its task is re-leased to another worker, finished members are not retrained', async () => {
    const c = await group.coordinator(nats.url, dir('state'), ['--worker-timeout-ms', '2000']);
    const w = { w1: await group.worker(nats.url, 'w1'), w2: await group.worker(nats.url, 'w2') } as Record<
      string,
      FleetProc
    >;
    await waitWorkers(c, ['w1', 'w2']);
    const jobId = await submit(await client(), voting(3, 1500));

    // a member is done, and another was just leased (so its worker is at the start of its training)
    const at = await waitFor(
      () => {
        const j = readJob(c.stateDir, jobId);
        if (!j || j.state !== 'running') return null;
        const done = j.tasks.filter(t => t.state === 'done');
        const fresh = j.tasks
          .filter(t => t.state === 'leased' && Date.now() - (t.leasedAt ?? 0) < 800)
          .sort((a, b) => b.leasedAt! - a.leasedAt!);
        return done.length && fresh.length ? { done: done.map(t => t.task.id), victim: fresh[0] } : null;
      },
      120_000,
      'a member done and a fresh lease',
      50,
    );
    const victimWorker = at.victim.worker!;
    const survivor = victimWorker === 'w1' ? 'w2' : 'w1';
    await w[victimWorker].kill('SIGKILL');

    const j = await waitJob(c.stateDir, jobId, [c.proc, w[survivor]]);
    assert.ok(j.tasks.every(t => t.state === 'done'));
    const victim = taskOf(j, at.victim.task.id);
    assert.ok(victim.attempts >= 2, `the killed worker's task ${victim.task.id} has ${victim.attempts} attempt(s)`);
    assert.equal(victim.worker, survivor, 'the re-leased task was finished by the other worker');
    for (const id of at.done) {
      assert.equal(taskOf(j, id).attempts, 1, `${id} finished before the kill and was not leased again`);
      assert.equal(trainingsOf(w.w1, id, jobId) + trainingsOf(w.w2, id, jobId), 1, `${id} was trained once`);
    }
    assert.match(c.proc.stderr, new RegExp(`worker ${victimWorker} lost`));
    const { body } = await getJson(`${c.api}/api/cluster`);
    assert.equal(body.workers.find((x: { id: string }) => x.id === victimWorker).state, 'lost');
    assert.ok(body.stats.releases >= 1);
    const m = metricsOf(path.join(c.stateDir, 'jobs', jobId, 'out'));
    assert.equal(m.members, 3);
  });

  it('the nats-server stops for 2 s mid-job and comes back on the same port: everyone reconnects, the job finishes', async () => {
    const c = await group.coordinator(nats.url, dir('state'));
    const ws = [await group.worker(nats.url, 'w1'), await group.worker(nats.url, 'w2')];
    await waitWorkers(c, ['w1', 'w2']);
    const jobId = await submit(await client(), voting(3, 1500));
    await waitFor(() => readJob(c.stateDir, jobId)?.tasks.some(t => t.state === 'leased'), 60_000, 'a lease', 50);

    await nats.stop();
    await sleep(2000);
    await nats.restart();

    const j = await waitJob(c.stateDir, jobId, [c.proc, ...ws]);
    assert.deepEqual(
      j.tasks.map(t => t.state),
      ['done', 'done', 'done'],
    );
    for (const p of [c.proc, ...ws]) assert.match(p.stderr, /nats: reconnect\b/, `${p.name} reconnected`);
    assert.equal(metricsOf(path.join(c.stateDir, 'jobs', jobId, 'out')).members, 3);
    // and the cluster still works after the outage
    const again = await submit(bus!, voting(2, 300));
    await waitJob(c.stateDir, again, [c.proc, ...ws], 90_000);
  });

  it('kill -9 of the coordinator mid-job, restarted on the same --state: the job resumes, done tasks are not leased again', async () => {
    const stateDir = dir('state');
    const c = await group.coordinator(nats.url, stateDir);
    const ws = [await group.worker(nats.url, 'w1'), await group.worker(nats.url, 'w2')];
    await waitWorkers(c, ['w1', 'w2']);
    const jobId = await submit(await client(), voting(3, 1500));
    await waitFor(
      () => {
        const j = readJob(stateDir, jobId);
        return (
          j &&
          j.tasks.some(t => t.state === 'done') &&
          j.tasks.some(t => t.state === 'leased' && Date.now() - (t.leasedAt ?? 0) < 800)
        );
      },
      120_000,
      'a member done and a fresh lease',
      50,
    );
    await c.proc.kill('SIGKILL');
    const before = readJob(stateDir, jobId)!;
    const doneBefore = before.tasks.filter(t => t.state === 'done');
    assert.ok(doneBefore.length >= 1 && before.state === 'running');

    await sleep(500);
    const c2 = await group.coordinator(nats.url, stateDir, [], 'coordinator (restarted)');
    await c2.proc.waitForLog(new RegExp(`job ${jobId}: resumed \\(${doneBefore.length}/3 tasks done\\)`), 10_000);
    const j = await waitJob(stateDir, jobId, [c2.proc, ...ws]);
    assert.ok(j.tasks.every(t => t.state === 'done'));
    for (const t of doneBefore) {
      assert.equal(
        taskOf(j, t.task.id).attempts,
        t.attempts,
        `${t.task.id} (done before the crash) was not leased again`,
      );
      assert.equal(
        ws.reduce((n, w) => n + trainingsOf(w, t.task.id, jobId), 0),
        1,
        `${t.task.id} was trained once`,
      );
      assert.doesNotMatch(c2.proc.stderr, new RegExp(`${t.task.id} leased to`));
    }
    const m = metricsOf(path.join(stateDir, 'jobs', jobId, 'out'));
    assert.equal(m.members, 3);
    assert.equal(m.job, jobId);
  });

  it('garbage on every subject: nothing crashes, the coordinator counts it, and a following job succeeds', async () => {
    const c = await group.coordinator(nats.url, dir('state'));
    const w1 = await group.worker(nats.url, 'w1');
    await waitWorkers(c, ['w1']);
    const base = (await getJson(`${c.api}/api/cluster`)).body.stats as {
      malformed: number;
      reassemblyFailures: number;
    };
    const b = await client();
    const max = b.maxPayload;
    assert.ok(max >= 64 * 1024, `max_payload ${max}`);

    const valid: Record<string, Uint8Array> = {
      announce: encodeEnvelope(
        {
          kind: 'announce',
          value: { workerId: 'ghost', device: Device.CPU, threads: 1, version: '0.1.0', gpuName: '' },
        },
        'ghost',
      ),
      heartbeat: encodeEnvelope(
        { kind: 'heartbeat', value: { workerId: 'ghost', uptimeMs: 5, runningTaskIds: ['member-1'] } },
        'ghost',
      ),
      result: encodeEnvelope(
        {
          kind: 'result',
          value: {
            taskId: 'member-1',
            jobId: 'no-such-job',
            workerId: 'ghost',
            ok: true,
            error: '',
            resultJson: jsonField({ attempt: 1 }),
            tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId: 'x' }],
            attempt: 1,
            leaseToken: 'guess',
            resultSha256: new Uint8Array(32),
          },
        },
        'ghost',
      ),
      chunk: encodeEnvelope(
        {
          kind: 'chunk',
          value: {
            transferId: 'x',
            index: 0,
            count: 1,
            totalBytes: 3,
            sha256: new Uint8Array(32),
            data: new Uint8Array(3),
          },
        },
        'ghost',
      ),
      lease: encodeEnvelope(
        {
          kind: 'lease',
          value: {
            taskId: 'member-1',
            jobId: 'no-such-job',
            attempt: 1,
            leaseMs: 1000,
            taskJson: jsonField({ id: 'member-1' }),
            leaseToken: 'guess',
          },
        },
        'ghost',
      ),
    };
    let seed = 1;
    const randomBytes = (n: number) => garbageBytes(n, seed++);
    const garbage = (kind: keyof typeof valid, wrongKind: keyof typeof valid) => [
      new Uint8Array(0),
      randomBytes(1),
      randomBytes(17),
      randomBytes(3000),
      randomBytes(max), // empty, random, as large as the server allows
      valid[kind].subarray(0, valid[kind].length - 1),
      valid[kind].subarray(0, Math.floor(valid[kind].length / 2)), // truncated envelopes
      valid[wrongKind], // a well-formed envelope of the wrong kind
    ];
    let expectMalformed = 0;
    const coordinatorSubjects: [string, keyof typeof valid, keyof typeof valid][] = [
      [SUBJECTS.workerAnnounce, 'announce', 'heartbeat'],
      [workerHeartbeatSubject('x'), 'heartbeat', 'announce'],
      [SUBJECTS.taskResult, 'result', 'chunk'],
      [tensorSubject('x'), 'chunk', 'result'],
    ];
    for (const [subject, kind, wrong] of coordinatorSubjects) {
      for (const g of garbage(kind, wrong)) {
        b.publish(subject, g);
        expectMalformed++;
      }
    }
    // the worker's lease subject
    const leaseGarbage = garbage('lease', 'heartbeat');
    for (const g of leaseGarbage) b.publish(taskLeaseSubject('w1'), g);
    // a lease whose task is not a task: the worker tries it, fails, reports the failure (for a job nobody knows)
    b.publish(
      taskLeaseSubject('w1'),
      encodeEnvelope(
        {
          kind: 'lease',
          value: {
            taskId: 'bogus',
            jobId: 'no-such-job',
            attempt: 1,
            leaseMs: 1000,
            taskJson: jsonField({}),
            leaseToken: 'guess',
          },
        },
        'ghost',
      ),
    );
    // chunks that are well-formed envelopes but broken transfers
    const sha = (d: Uint8Array) => createHash('sha256').update(d).digest();
    const chunk = (
      transferId: string,
      index: number,
      count: number,
      totalBytes: number,
      sha256: Uint8Array,
      data: Uint8Array,
    ) =>
      b.publish(
        tensorSubject(transferId),
        encodeEnvelope(
          { kind: 'chunk', value: { transferId, index, count, totalBytes, sha256, data } } as EnvelopeBody,
          'ghost',
        ),
      );
    chunk('bad-sha', 0, 1, 4, new Uint8Array(32), new Uint8Array([1, 2, 3, 4])); // SHA-256 mismatch
    chunk('bad-header', 0, 2, 8, sha(new Uint8Array(8)), new Uint8Array(4)); // then an inconsistent header
    chunk('bad-header', 1, 3, 8, sha(new Uint8Array(8)), new Uint8Array(4));
    chunk('too-many', 0, 5, 2, sha(new Uint8Array(2)), new Uint8Array(1)); // count above total_bytes
    const notAResult = randomBytes(64);
    chunk('not-a-result', 0, 1, 64, sha(notAResult), notAResult); // whole, but not a member result
    const expectReassembly = 4;
    await b.flush();
    // job submissions that are not JSON, or not a valid job: answered with ok false
    for (const body of [
      enc('{not json'),
      randomBytes(100),
      new Uint8Array(0),
      enc(JSON.stringify({ ...voting(2, 300), members: 0 })),
    ]) {
      const reply = JSON.parse(dec((await b.request(SUBJECTS.jobSubmit, body, 15_000)).data));
      assert.equal(reply.ok, false, `a bad submission was accepted: ${JSON.stringify(reply)}`);
      expectMalformed++;
    }
    b.publish(SUBJECTS.jobSubmit, randomBytes(max)); // as large as allowed, and with no reply subject to answer on
    expectMalformed++;
    await b.flush();

    const stats = await waitFor(
      async () => {
        const s = (await getJson(`${c.api}/api/cluster`)).body.stats;
        return s.malformed - base.malformed >= expectMalformed &&
          s.reassemblyFailures - base.reassemblyFailures >= expectReassembly
          ? s
          : null;
      },
      30_000,
      `malformed +${expectMalformed} and reassemblyFailures +${expectReassembly}`,
      200,
    );
    assert.ok(stats.malformed - base.malformed >= expectMalformed);
    await w1.waitForLog(/task bogus: failed/, 30_000);
    const dropped = () => w1.stderr.split('\n').filter(l => l.includes('dropped a malformed lease message')).length;
    await waitFor(() => dropped() >= leaseGarbage.length, 30_000, 'the worker to drop the lease garbage');
    assert.ok(c.proc.alive && w1.alive, 'the coordinator and the worker are still running');

    // the cluster still works
    const jobId = await submit(b, voting(2, 300));
    const j = await waitJob(c.stateDir, jobId, [c.proc, w1], 90_000);
    assert.deepEqual(
      j.tasks.map(t => [t.state, t.worker]),
      [
        ['done', 'w1'],
        ['done', 'w1'],
      ],
    );
    assert.ok(c.proc.alive && w1.alive);
  });

  it('job submissions that are JSON but not a job spec are refused, leave no job behind, and the coordinator keeps serving', async () => {
    const c = await group.coordinator(nats.url, dir('state'));
    const b = await client();
    const bodies = [
      'null',
      '{}',
      '[]',
      '"abc"',
      '42',
      '{"members":"x"}',
      JSON.stringify({ ...voting(2, 300), members: 'two' }),
      JSON.stringify({ ...voting(2, 300), kind: 'stacking' }),
    ];
    const replies: [string, { ok: boolean; jobId?: string; error?: string }][] = [];
    for (const body of bodies)
      replies.push([body, JSON.parse(dec((await b.request(SUBJECTS.jobSubmit, enc(body), 15_000)).data))]);
    // the API still answers (a job record with a null spec used to make GET /api/jobs throw and kill the process)
    const jobs = await getJson(`${c.api}/api/jobs`);
    assert.equal(jobs.status, 200);
    assert.ok(c.proc.alive, 'the coordinator is still running');
    for (const [body, reply] of replies)
      assert.equal(reply.ok, false, `${body} was accepted as a job: ${JSON.stringify(reply)}`);
    assert.deepEqual(jobs.body, [], 'no job was recorded');
    assert.deepEqual(fs.readdirSync(c.stateDir), [], 'no job state was written');
  });

  it('8 worker processes complete a 4-member job', async () => {
    const c = await group.coordinator(nats.url, dir('state'));
    const ids = Array.from({ length: 8 }, (_, i) => `w${i + 1}`);
    const ws = await Promise.all(ids.map(id => group.worker(nats.url, id)));
    await waitWorkers(c, ids, 120_000);
    const jobId = await submit(await client(), voting(4, 300));
    const j = await waitJob(c.stateDir, jobId, [c.proc, ...ws], 180_000);
    assert.deepEqual(
      j.tasks.map(t => t.state),
      ['done', 'done', 'done', 'done'],
    );
    const used = new Set(j.tasks.map(t => t.worker));
    assert.ok(used.size >= 2, `the members went to ${[...used].join(', ')}`);
    const m = metricsOf(path.join(c.stateDir, 'jobs', jobId, 'out'));
    assert.equal(m.members, 4);
    assert.equal(m.member_results.length, 4);
    assert.ok(m.test_accuracy >= 0 && m.test_accuracy <= 1 && Number.isFinite(m.test_loss));
    assert.ok(ws.every(w => w.alive));
  });

  it('HTTP API: /api/cluster lists the workers, /api/jobs the job with its counts and summary, unknown paths answer 404 JSON', async () => {
    const c = await group.coordinator(nats.url, dir('state'));
    await Promise.all(['w1', 'w2'].map(id => group.worker(nats.url, id)));
    const cluster = await waitWorkers(c, ['w1', 'w2']);
    for (const id of ['w1', 'w2']) {
      const w = cluster.workers.find((x: { id: string }) => x.id === id);
      assert.equal(w.device, 'cpu');
      assert.equal(w.threads, 1);
      assert.ok(['idle', 'busy'].includes(w.state), w.state);
      assert.equal(typeof w.heartbeatAgeMs, 'number');
      assert.ok(w.heartbeatAgeMs >= 0 && Number.isFinite(w.heartbeatAgeMs));
      assert.equal(w.version, '0.1.0');
    }
    for (const k of ['malformed', 'reassemblyFailures', 'leases', 'releases', 'results'])
      assert.equal(typeof cluster.stats[k], 'number', k);

    const jobId = await submit(await client(), voting(2, 300));
    const running = await getJson(`${c.api}/api/jobs`);
    assert.equal(running.status, 200);
    assert.match(running.type, /application\/json/);
    const listed = running.body.find((x: { id: string }) => x.id === jobId);
    assert.ok(listed, 'the job is listed as soon as it is submitted');
    assert.equal(listed.tasks, 2);
    assert.equal(listed.kind, 'voting');

    await waitJob(c.stateDir, jobId, [c.proc]);
    const jobs = (await getJson(`${c.api}/api/jobs`)).body;
    assert.equal(jobs.length, 1);
    const job = jobs[0];
    assert.equal(job.id, jobId);
    assert.equal(job.state, 'done');
    assert.equal(job.members, 2);
    assert.equal(job.done, 2);
    assert.equal(job.tasks, 2);
    assert.equal(job.summary.members, 2);
    assert.equal(job.summary.ensemble, 'voting');
    assert.ok(job.summary.test_accuracy >= 0 && job.summary.test_accuracy <= 1);
    assert.equal(job.summary.out, path.join(c.stateDir, 'jobs', jobId, 'out'));
    assert.ok(job.finishedAt >= job.submittedAt);

    const after = (await getJson(`${c.api}/api/cluster`)).body;
    const tasks = after.tasks.filter((t: { job: string }) => t.job === jobId);
    assert.deepEqual(
      tasks.map((t: { task: string; state: string; attempts: number }) => [t.task, t.state, t.attempts]),
      [
        ['member-1', 'done', 1],
        ['member-2', 'done', 1],
      ],
    );
    for (const t of tasks) assert.ok(['w1', 'w2'].includes(t.worker));
    assert.ok(after.stats.leases >= 2 && after.stats.results >= 2);
    assert.deepEqual(after.workers.map((w: { id: string }) => w.id).sort(), ['w1', 'w2']);

    const missing = await getJson(`${c.api}/api/nope`);
    assert.equal(missing.status, 404);
    assert.match(missing.type, /application\/json/);
    assert.match(missing.body.error, /\/api\/nope/);
    const post = await getJson(`${c.api}/api/jobs`, 'POST');
    assert.equal(post.status, 405);
    assert.match(post.body.error, /POST/);
  });
});
