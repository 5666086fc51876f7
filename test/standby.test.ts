// Exactly one active coordinator (coordinator/leader.ts): the leader lease in JetStream KV. Two `fleet coordinator`
// processes on one real nats-server with JetStream: one leads, the other is a hot standby that takes no job and
// leases nothing; kill -9 of the leader mid-job: the standby takes over within seconds, the job finishes with the
// result of the local run, and members finished before the crash are not trained again. In-process: a leader cut
// off from NATS stops leading before the lease can expire, and never leads at the same time as its successor.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import {
  ProcGroup,
  WaitAbort,
  waitFor,
  sleep,
  getJson,
  trainingsOf,
  type JobState,
} from '../bench/harness/fleet-procs.ts';
import { lines } from './helpers/cli.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { JetStreamStateStore } from '../coordinator/jetstream-state-store.ts';
import { LeaderLease, fencedStore } from '../coordinator/leader.ts';

const metricsOf = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8'));
const lastJson = (stdout: string) => JSON.parse(lines(stdout).at(-1)!);

describe('standby coordinator: one leader (a lease in JetStream KV), takeover after kill -9', function () {
  this.timeout(300_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }

  let nats: NatsServerHandle;
  let bus: NatsTransport;
  let tmp: string;
  let group: ProcGroup;
  before(async () => {
    nats = await startNatsServer({ jetstream: true });
    bus = await connectNats(nats.url, { name: 'standby-test' });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-standby-'));
  });
  after(async () => {
    await bus?.close();
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    group = new ProcGroup();
  });
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' || process.env.FLEET_TEST_LOGS)
      process.stderr.write(`\nprocesses of "${this.currentTest?.title}":\n${group.describe()}\n`);
    await group.killAll();
  });

  const readJob = async (store: JetStreamStateStore, id: string): Promise<JobState | null> => {
    const bytes = await store.get(`jobs/${id}/job.json`);
    return bytes && (JSON.parse(new TextDecoder().decode(bytes)) as JobState);
  };
  const cluster = async (api: string) => (await getJson(`${api}/api/cluster`)).body;

  it(
    'two coordinators: one leads, the standby takes nothing; kill -9 of the leader mid-job: the standby leads within 15 s, ' +
      'the job equals the local run, finished members are not trained again',
    async () => {
      const bucket = 'fleet-standby-test',
        outDir = path.join(tmp, 'out');
      const args = ['--state-bucket', bucket, '--out-dir', outDir, '--leader-ttl-ms', '5000'];
      const settings = [
        '--members',
        '3',
        '--epochs',
        '1',
        '--limit-train',
        '1500',
        '--limit-test',
        '100',
        '--batch-size',
        '64',
        '--seed',
        '5',
        '--json',
      ];
      const localOut = path.join(tmp, 'local');
      const local = group.spawn('local train', ['train', 'cnn', ...settings, '--threads', '1', '--out', localOut]);

      const a = await group.coordinatorWith(nats.url, args, 'coordinator A');
      await a.proc.waitForLog(/coordinator \S+: leader \(epoch \d+\)/, 20_000);
      const b = await group.coordinatorWith(nats.url, args, 'coordinator B');
      await b.proc.waitForLog(/coordinator \S+: standby until it holds the leader lease/, 20_000);
      // /api/cluster: A leads, B is a standby that knows A leads
      const ca = (await cluster(a.api)).leader,
        idA = ca.id as string;
      assert.equal(ca.role, 'leader');
      assert.ok(Number.isInteger(ca.epoch) && ca.epoch > 0, `an epoch: ${ca.epoch}`);
      const cb = await waitFor(
        async () => {
          const l = (await cluster(b.api)).leader;
          return l.leader === idA && l;
        },
        10_000,
        'B to see A lead',
      );
      assert.equal(cb.role, 'standby');
      assert.notEqual(cb.id, idA);
      assert.match(
        await (await fetch(`${a.api}/metrics`)).text(),
        new RegExp(`^fleet_coordinator_leader\\{coordinator="${idA}"\\} 1$`, 'm'),
      );
      assert.match(
        await (await fetch(`${b.api}/metrics`)).text(),
        new RegExp(`^fleet_coordinator_leader\\{coordinator="${cb.id}"\\} 0$`, 'm'),
      );

      const ws = [await group.worker(nats.url, 'w1'), await group.worker(nats.url, 'w2')];
      const submitter = group.spawn('submit', [
        'train',
        'cnn',
        ...settings,
        '--nats',
        nats.url,
        '--out',
        path.join(tmp, 'submit'),
      ]);
      const store = await JetStreamStateStore.open(bus.connection, { bucket });
      const jobId = await waitFor(
        async () => (await store.list('jobs/')).map(k => /^jobs\/([^/]+)\/job\.json$/.exec(k)?.[1]).find(Boolean),
        60_000,
        'the job',
      );
      await waitFor(
        async () => {
          if (!submitter.alive) throw new WaitAbort(`the submitter exited: ${submitter.stderr}`);
          const j = await readJob(store, jobId);
          return (
            j &&
            j.tasks.some(t => t.state === 'done') &&
            j.tasks.some(t => t.state === 'leased' && Date.now() - (t.leasedAt ?? 0) < 5000)
          );
        },
        180_000,
        'a member done and a recent lease',
        50,
      );
      // only the leader accepted the job and leased its tasks
      assert.match(a.proc.stderr, new RegExp(`job ${jobId}: member-\\d leased to`));
      assert.doesNotMatch(b.proc.stderr, /leased to|job job-/);
      assert.deepEqual((await cluster(b.api)).tasks, [], 'the standby tracks no task');

      await a.proc.kill('SIGKILL');
      const killedAt = Date.now();
      const before = (await readJob(store, jobId))!;
      const doneBefore = before.tasks.filter(t => t.state === 'done');
      await b.proc.waitForLog(/coordinator \S+: leader \(epoch \d+\)/, 15_000);
      const tookOverMs = Date.now() - killedAt;
      assert.ok(tookOverMs < 15_000, `took over after ${tookOverMs} ms`);
      const lb = (await cluster(b.api)).leader;
      assert.equal(lb.role, 'leader');
      assert.ok(lb.epoch > ca.epoch, `a newer epoch (${lb.epoch} after ${ca.epoch})`);
      await b.proc.waitForLog(new RegExp(`job ${jobId}: resumed \\(${doneBefore.length}/3 tasks done\\)`), 20_000);

      const exit = await submitter.exited;
      assert.equal(exit.code, 0, `the submitter failed:\n${submitter.stderr}`);
      const r = lastJson(submitter.stdout);
      assert.equal((await local.exited).code, 0, `local run failed:\n${local.stderr}`);
      const ref = lastJson(local.stdout);
      for (const k of ['test_accuracy', 'test_loss', 'hard_vote_test_accuracy', 'average_test_loss'])
        assert.equal(r[k], ref[k], k);
      const members = (dir: string) =>
        (metricsOf(dir).member_results as { name: string; test_loss: number }[]).map(m => [m.name, m.test_loss]);
      assert.deepEqual(members(r.coordinator_out), members(localOut), 'per-member test losses');

      const j = (await readJob(store, jobId))!;
      assert.equal(j.state, 'done');
      for (const t of doneBefore) {
        assert.equal(
          j.tasks.find(x => x.task.id === t.task.id)!.attempts,
          t.attempts,
          `${t.task.id} was not leased again`,
        );
        assert.equal(
          ws.reduce((n, w) => n + trainingsOf(w, t.task.id, jobId), 0),
          1,
          `${t.task.id} was trained once`,
        );
        assert.doesNotMatch(b.proc.stderr, new RegExp(`${t.task.id} leased to`));
      }
    },
  );

  it('a leader cut off from NATS stops leading before its lease can expire; the other takes over, never both at once', async () => {
    const bucket = 'fleet-leader-cut',
      ttlMs = 1500;
    const connA = await connectNats(nats.url, { name: 'lease-a' });
    const logs: string[] = [];
    const log = (l: string) => logs.push(l);
    const a = await LeaderLease.open(connA.connection, { bucket, ttlMs, id: 'a', log });
    const b = await LeaderLease.open(bus.connection, { bucket, ttlMs, id: 'b', log });
    let lostB: string | null = null;
    a.start(
      () => {},
      () => {},
    );
    await waitFor(() => a.role === 'leader', 5000, 'a to lead');
    b.start(
      () => {},
      why => {
        lostB = why;
      },
    );
    await waitFor(() => b.holder === 'a', 5000, 'b to see a lead');
    assert.equal(b.role, 'standby');
    const stateA = fencedStore(
      await JetStreamStateStore.open(connA.connection, { bucket: 'fleet-leader-cut-state' }),
      a,
    );
    await stateA.put('x', 'written while leading');

    let both = 0;
    const watch = setInterval(() => {
      if (a.leading && b.leading) both++;
    }, 5);
    await connA.close(); // a partition: a cannot renew
    const cutAt = Date.now();
    await waitFor(() => !a.leading, ttlMs, 'a to stop leading');
    assert.ok(Date.now() - cutAt < ttlMs, 'a stopped before its lease could expire');
    await waitFor(() => b.role === 'leader', 3 * ttlMs, 'b to take over');
    clearInterval(watch);
    assert.equal(both, 0, 'never two leaders');
    assert.equal(a.role, 'suspended');
    await assert.rejects(stateA.put('x', 'stale'), /does not hold the leader lease/);
    assert.equal(lostB, null);
    assert.ok(
      logs.some(l => /coordinator a: its leader lease was not renewed in time/.test(l)),
      logs.join('\n'),
    );
    await a.stop();
    await b.stop();
    assert.equal(b.role, 'standby');
  });

  it('a leader stalled past its lease stops leading at once, and leads again when nobody took over meanwhile', async () => {
    const logs: string[] = [];
    const a = await LeaderLease.open(bus.connection, {
      bucket: 'fleet-leader-stall',
      ttlMs: 1000,
      id: 'a',
      log: l => logs.push(l),
    });
    let lost: string | null = null;
    a.start(
      () => {},
      why => {
        lost = why;
      },
    );
    await waitFor(() => a.role === 'leader', 5000, 'a to lead');
    const epoch = a.epoch!;
    const until = Date.now() + 1500;
    while (Date.now() < until) {
      /* a long synchronous step: no renewal can run */
    }
    assert.equal(a.leading, false, 'not leading right after the stall, before any timer ran');
    await waitFor(() => a.role === 'leader' && a.leading, 5000, 'a to lead again');
    assert.equal(lost, null);
    assert.ok(a.epoch! >= epoch);
    assert.ok(
      logs.some(l => /coordinator a: leader lease renewed; leading again/.test(l)),
      logs.join('\n'),
    );
    await a.stop();
  });

  it('a leader that stops gracefully deletes its lease: the standby leads before the lease would have expired', async () => {
    const ttlMs = 6000;
    const a = await LeaderLease.open(bus.connection, { bucket: 'fleet-leader-handover', ttlMs, id: 'a' });
    const b = await LeaderLease.open(bus.connection, { bucket: 'fleet-leader-handover', ttlMs, id: 'b' });
    a.start(
      () => {},
      () => {},
    );
    await waitFor(() => a.role === 'leader', 5000, 'a to lead');
    let ledAt = 0;
    b.start(
      () => {
        ledAt = Date.now();
      },
      () => {},
    );
    await waitFor(() => b.holder === 'a', 5000, 'b to see a lead');
    const stoppedAt = Date.now();
    await a.stop();
    await waitFor(() => ledAt > 0, ttlMs, 'b to lead');
    // a renewed at most ttl/3 before it stopped: its lease would have lived at least 2/3 ttl more
    assert.ok(ledAt - stoppedAt < (2 * ttlMs) / 3, `b led ${ledAt - stoppedAt} ms after a stopped`);
    await b.stop();
  });
});
