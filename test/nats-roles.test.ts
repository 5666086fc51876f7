// The per-role NATS users of deploy/k8s/base/nats.conf, enforced by a real nats-server running that file: each
// role can do what it needs (a positive check per role, so the denials below are not the server refusing
// everything) and cannot do what a compromised holder of its credential must not (docs/security.md): a worker
// cannot submit jobs, publish job results or answer a submitter's request; a submitter cannot publish task
// results, leases, heartbeats or tensors; neither reads the coordinator's job state in JetStream. A real job
// (coordinator on JetStream state, worker, fleet train --nats) runs to the end with each process as its role.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { taskCancelSubject, jobsStatusSubject, jobsLogsSubject, jobsCancelSubject } from '../bus/subjects.ts';
import {
  SUBJECTS,
  jobDoneSubject,
  jobProgressSubject,
  taskLeaseSubject,
  tensorSubject,
  workerHeartbeatSubject,
  inferSubject,
  dpUpSubject,
  dpWorkSubject,
  dpParamsSubject,
} from '../bus/subjects.ts';
import type { BusMessage } from '../bus/transport.ts';
import { JetStreamStateStore } from '../coordinator/jetstream-state-store.ts';
import { inboxPrefix } from '../cli/nats.ts';
import { startNatsServer, natsServerAvailable, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { waitFor, ProcGroup } from '../bench/harness/fleet-procs.ts';
import { REPO_ROOT, runFleet } from './helpers/cli.ts';

export const ROLES = ['coordinator', 'worker', 'submitter', 'server'] as const;
type Role = (typeof ROLES)[number];
/** The connection name each role's command uses (cli/*.ts), which sets its inbox prefix. */
const CONNECTION: Record<Role, string> = {
  coordinator: 'fleet-coordinator',
  worker: 'fleet-worker',
  submitter: 'fleet-train',
  server: 'fleet-serve',
};
const PASSWORD: Record<Role, string> = {
  coordinator: 'pw-coordinator-1',
  worker: 'pw-worker-2',
  submitter: 'pw-submitter-3',
  server: 'pw-server-4',
};
export const passwordEnv = (role: Role) => `NATS_${role.toUpperCase()}_PASSWORD`;
const enc = new TextEncoder();

describe('deploy: per-role NATS users and permissions (deploy/k8s/base/nats.conf on a real nats-server)', function () {
  this.timeout(60_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH', () => assert.fail('nats-server is not installed'));
    return;
  }
  let server: NatsServerHandle;
  const conns = {} as Record<Role, NatsTransport>;
  const events = {} as Record<Role, string[]>;

  before(async () => {
    const text = fs.readFileSync(path.join(REPO_ROOT, 'deploy/k8s/base/nats.conf'), 'utf8');
    const env = Object.fromEntries(ROLES.map(r => [passwordEnv(r), PASSWORD[r]]));
    server = await startNatsServer({ config: { text, env } });
    for (const role of ROLES) {
      events[role] = [];
      conns[role] = await connectNats(server.url, {
        name: CONNECTION[role],
        user: role,
        pass: PASSWORD[role],
        inboxPrefix: inboxPrefix(CONNECTION[role]),
        reconnect: false,
        onStatus: e => events[role].push(e),
        onError: () => {},
      });
    }
  });
  after(async () => {
    for (const role of ROLES) await conns[role]?.close();
    await server?.dispose();
  });

  /** Publishes on `subject` as `from` and reports whether `to` (subscribed to `pattern`) received it. */
  async function delivered(from: Role, to: Role, subject: string, pattern = subject): Promise<boolean> {
    const got: BusMessage[] = [];
    const payload = `${from}->${subject}-${Math.random()}`;
    const sub = conns[to].subscribe(pattern, m => {
      if (new TextDecoder().decode(m.data) === payload) got.push(m);
    });
    try {
      await conns[to].flush();
      conns[from].publish(subject, enc.encode(payload));
      // the publisher's flush returns after the server routed the message; the subscriber's flush after the
      // server wrote everything pending for it: in between, a delivered message has arrived
      await conns[from].flush();
      await conns[to].flush();
      return got.length > 0;
    } finally {
      sub.unsubscribe();
    }
  }

  /** Waits for the server's "Permissions Violation" for `subject` on the role's connection. */
  const violation = (role: Role, kind: 'Publish' | 'Subscription', subject: string) =>
    waitFor(
      () => events[role].some(e => e.includes(`Permissions Violation for ${kind} to "${subject}"`)),
      5000,
      `${role}: a permissions violation for ${kind.toLowerCase()} to ${subject} (events: ${events[role].join(' | ')})`,
    );

  it("docs/security.md's table of roles states exactly the permissions nats.conf grants", () => {
    const conf = fs.readFileSync(path.join(REPO_ROOT, 'deploy/k8s/base/nats.conf'), 'utf8').replace(/#.*$/gm, '');
    const doc = fs.readFileSync(path.join(REPO_ROOT, 'docs/security.md'), 'utf8');
    const quoted = (s = '') => [...s.matchAll(/"([^"]+)"/g)].map(m => m[1]).sort();
    const ticked = (s = '') => [...s.matchAll(/`([^`]+)`/g)].map(m => m[1]).sort();
    for (const role of ROLES) {
      const block = conf.split(/\buser:\s*/).find(b => b.startsWith(role))!;
      assert.ok(block, `nats.conf: no user ${role}`);
      const granted = {
        publish: quoted(/publish:\s*{\s*allow:\s*\[([^\]]*)\]/.exec(block)?.[1]),
        subscribe: quoted(/subscribe:\s*{\s*allow:\s*\[([^\]]*)\]/.exec(block)?.[1]),
        replies: /allow_responses:\s*true/.test(block),
      };
      const row = doc
        .split('\n')
        .find(l => l.startsWith(`| \`${role}\` |`))
        ?.split('|')
        .map(c => c.trim());
      assert.ok(row, `docs/security.md: no table row for ${role}`);
      const stated = { publish: ticked(row[3]), subscribe: ticked(row[4]), replies: /\breplies\b/.test(row[3]) };
      assert.deepEqual(stated, granted, `docs/security.md vs nats.conf for ${role}`);
    }
  });

  it('wrong or missing passwords are refused, and each role logs in with its own', async () => {
    const wrong = connectNats(server.url, { user: 'worker', pass: PASSWORD.coordinator, reconnect: false });
    await assert.rejects(wrong, /authorization/i);
    await assert.rejects(connectNats(server.url, { reconnect: false }), /authorization/i);
    for (const role of ROLES) assert.ok(!conns[role].connection.isClosed(), role);
  });

  it('a worker cannot submit jobs; a submitter can', async () => {
    assert.equal(await delivered('submitter', 'coordinator', SUBJECTS.jobSubmit), true);
    assert.equal(await delivered('worker', 'coordinator', SUBJECTS.jobSubmit), false);
    await violation('worker', 'Publish', SUBJECTS.jobSubmit);
  });

  it("a worker or server cannot publish a job's done message (its result); the coordinator can", async () => {
    const done = jobDoneSubject('job-1');
    assert.equal(await delivered('coordinator', 'submitter', done), true);
    assert.equal(await delivered('worker', 'submitter', done), false);
    await violation('worker', 'Publish', done);
    assert.equal(await delivered('server', 'submitter', done), false);
  });

  it("only the coordinator answers a submission: a worker cannot publish to the submitter's reply inbox", async () => {
    const requests: BusMessage[] = [];
    const sub = conns.coordinator.subscribe(SUBJECTS.jobSubmit, m => {
      requests.push(m);
    });
    await conns.coordinator.flush();
    try {
      const answer = conns.submitter.request(SUBJECTS.jobSubmit, enc.encode('{}'), 10_000);
      const req = await waitFor(() => requests[0], 5000, 'the submission at the coordinator');
      assert.ok(req.reply?.startsWith(`${inboxPrefix('fleet-train')}.`), `the submitter's inbox: ${req.reply}`);
      conns.worker.publish(req.reply!, enc.encode('{"ok":true,"jobId":"forged"}')); // the forged answer
      await conns.worker.flush();
      await violation('worker', 'Publish', req.reply!);
      conns.coordinator.respond(req, enc.encode('{"ok":true,"jobId":"real"}'));
      assert.equal(new TextDecoder().decode((await answer).data), '{"ok":true,"jobId":"real"}');
    } finally {
      sub.unsubscribe();
    }
  });

  it('a submitter cannot publish task results, leases, heartbeats, announcements or tensors', async () => {
    const cases: [Role, Role, string][] = [
      ['worker', 'coordinator', SUBJECTS.taskResult],
      ['coordinator', 'worker', taskLeaseSubject('w1')],
      ['worker', 'coordinator', workerHeartbeatSubject('w1')],
      ['worker', 'coordinator', SUBJECTS.workerAnnounce],
      ['worker', 'coordinator', tensorSubject('t1')],
      ['worker', 'coordinator', dpUpSubject('job-1')],
      ['coordinator', 'worker', dpWorkSubject('w1')],
      ['coordinator', 'worker', dpParamsSubject('job-1')],
    ];
    for (const [allowed, to, subject] of cases) {
      assert.equal(await delivered(allowed, to, subject), true, `${allowed} -> ${to} on ${subject}`);
      assert.equal(await delivered('submitter', to, subject), false, `submitter -> ${to} on ${subject}`);
      await violation('submitter', 'Publish', subject);
    }
    // workers cannot lease tasks to each other, and servers cannot report results
    assert.equal(await delivered('worker', 'worker', taskLeaseSubject('w2')), false);
    await violation('worker', 'Publish', taskLeaseSubject('w2'));
    assert.equal(await delivered('server', 'coordinator', SUBJECTS.taskResult), false);
  });

  it('jobs: a submitter asks the coordinator list/status/logs/cancel, a worker cannot; only the coordinator stops tasks', async () => {
    for (const subject of [
      SUBJECTS.jobsList,
      jobsStatusSubject('job-1'),
      jobsLogsSubject('job-1'),
      jobsCancelSubject('job-1'),
    ]) {
      assert.equal(
        await delivered('submitter', 'coordinator', subject),
        true,
        `submitter -> coordinator on ${subject}`,
      );
    }
    for (const subject of [SUBJECTS.jobsList, jobsCancelSubject('job-1')]) {
      assert.equal(await delivered('worker', 'coordinator', subject), false, `worker -> coordinator on ${subject}`);
      await violation('worker', 'Publish', subject);
    }
    // the coordinator answers on the fleet jobs command's own inbox
    const sub = conns.coordinator.subscribe(SUBJECTS.jobsList, m =>
      conns.coordinator.respond(m, enc.encode('{"ok":true}')),
    );
    await conns.coordinator.flush();
    const asker = await connectNats(server.url, {
      name: 'fleet-jobs',
      user: 'submitter',
      pass: PASSWORD.submitter,
      inboxPrefix: inboxPrefix('fleet-jobs'),
      reconnect: false,
    });
    try {
      const r = await asker.request(SUBJECTS.jobsList, enc.encode('{}'), 5000);
      assert.equal(new TextDecoder().decode(r.data), '{"ok":true}');
    } finally {
      sub.unsubscribe();
      await asker.close();
    }
    assert.equal(await delivered('coordinator', 'worker', taskCancelSubject('w1')), true);
    assert.equal(await delivered('submitter', 'worker', taskCancelSubject('w1')), false);
    await violation('submitter', 'Publish', taskCancelSubject('w1'));
    assert.equal(await delivered('worker', 'worker', taskCancelSubject('w2')), false);
    await violation('worker', 'Publish', taskCancelSubject('w2'));
  });

  it('progress: workers report task progress to the coordinator only; job progress comes from the coordinator', async () => {
    const p = jobProgressSubject('job-1');
    assert.equal(await delivered('coordinator', 'submitter', p), true);
    assert.equal(await delivered('worker', 'submitter', p), false);
    await violation('worker', 'Publish', p);
    assert.equal(await delivered('server', 'submitter', p), false);
    await violation('server', 'Publish', p);
    assert.equal(await delivered('worker', 'coordinator', SUBJECTS.taskProgress), true);
    assert.equal(await delivered('submitter', 'coordinator', SUBJECTS.taskProgress), false);
  });

  it('job results: a submitter asks the coordinator by request/reply; a worker cannot ask', async () => {
    const subject = `${SUBJECTS.jobResultPrefix}.job-1`;
    assert.equal(await delivered('submitter', 'coordinator', subject), true);
    assert.equal(await delivered('worker', 'coordinator', subject), false);
    await violation('worker', 'Publish', subject);
  });

  it('inference: servers answer fleet.infer.<model> and ask each other; workers cannot ask', async () => {
    const answer = (m: BusMessage) => conns.server.respond(m, enc.encode('answer'));
    const sub = conns.server.subscribe(SUBJECTS.inferAll, answer, { queue: 'infer' });
    await conns.server.flush();
    try {
      const r = await conns.server.request(inferSubject('m1'), enc.encode('x'), 5000);
      assert.equal(new TextDecoder().decode(r.data), 'answer');
      assert.equal(await delivered('worker', 'server', inferSubject('m1')), false);
      await violation('worker', 'Publish', inferSubject('m1'));
    } finally {
      sub.unsubscribe();
    }
  });

  it('snooping: a submitter cannot subscribe to leases or every inbox, a worker cannot watch submissions', async () => {
    const tries: [Role, string][] = [
      ['submitter', `${SUBJECTS.taskLeasePrefix}.*`],
      ['submitter', '_INBOX.>'],
      ['worker', SUBJECTS.jobSubmit],
      ['worker', '_INBOX.>'],
      ['server', SUBJECTS.taskResult],
    ];
    for (const [role, pattern] of tries) {
      conns[role].subscribe(pattern, () => {});
      await violation(role, 'Subscription', pattern);
    }
  });

  it('a real job under the roles: fleet coordinator (JetStream state), worker and train --nats', async function () {
    this.timeout(600_000);
    const group = new ProcGroup();
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-roles-'));
    const as = (role: Role) => ({ NATS_USER: role, NATS_PASSWORD: PASSWORD[role] });
    try {
      const c = group.spawn(
        'coordinator',
        ['coordinator', '--nats', server.url, '--http', 'off', '--state-bucket', 'roles-job', '--out-dir', dir],
        as('coordinator'),
      );
      await c.waitForLog(/coordinator: state /);
      const w = group.spawn('w1', ['worker', '--nats', server.url, '--threads', '1', '--id', 'w1'], as('worker'));
      await w.waitForLog(/worker w1: ready/);
      const r = await runFleet(
        [
          'train',
          'cnn',
          '--members',
          '2',
          '--epochs',
          '1',
          '--batch-size',
          '32',
          '--limit-train',
          '128',
          '--limit-test',
          '32',
          '--nats',
          server.url,
          '--out',
          path.join(dir, 'run'),
          '--json',
        ],
        { env: as('submitter'), timeoutMs: 540_000 },
      );
      assert.equal(r.code, 0, `${r.stderr}\n${group.describe()}`);
      const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
      assert.equal(summary.members, 2);
      assert.ok(summary.test_accuracy > 0, JSON.stringify(summary));
      for (const p of [c, w]) assert.doesNotMatch(p.stderr, /Permissions Violation/, `${p.name}: ${p.stderr}`);
    } finally {
      await group.killAll();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('JetStream job state: the coordinator reads and writes it (inline and blob values), no other role', async () => {
    const nc = conns.coordinator.connection;
    const store = await JetStreamStateStore.open(nc, { bucket: 'roles-test', inlineMax: 1000 });
    try {
      await store.put('jobs/a/job.json', '{"id":"a"}');
      const big = new Uint8Array(200_000).map((_, i) => i % 251);
      await store.put('jobs/a/result.bin', big);
      assert.equal(new TextDecoder().decode((await store.get('jobs/a/job.json'))!), '{"id":"a"}');
      assert.deepEqual(await store.get('jobs/a/result.bin'), big);
      assert.deepEqual((await store.list('jobs/')).sort(), ['jobs/a/job.json', 'jobs/a/result.bin']);
      assert.equal(await store.removeOrphanBlobs(), 0); // what a starting coordinator does (lists the object store)
      await store.delete('jobs/a/result.bin');
    } finally {
      await store.close();
    }
    for (const role of ['worker', 'submitter', 'server'] as const) {
      const open = JetStreamStateStore.open(conns[role].connection, { bucket: 'roles-test' });
      await assert.rejects(open, `${role} opened the job state`);
    }
  });
});
