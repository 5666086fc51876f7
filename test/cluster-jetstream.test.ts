// The coordinator keeping its state in JetStream (no --state): `fleet coordinator` / `fleet worker` as real
// processes on a real nats-server started with JetStream. kill -9 of the coordinator mid-job and a restart on
// the same bucket: the job resumes, finished members are not trained again; the nats-server (JetStream with it)
// stopped for a few seconds mid-job: the state writes retry, the job finishes. Jobs are tiny (correctness only).
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
  type FleetProc,
  type JobState,
} from '../bench/harness/fleet-procs.ts';
import { voting, submit } from './helpers/jobs.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { JetStreamStateStore } from '../coordinator/jetstream-state-store.ts';

describe('cluster: coordinator state in JetStream', function () {
  this.timeout(240_000);
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
    bus = await connectNats(nats.url, { name: 'cluster-jetstream-test' });
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-cluster-js-'));
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

  /** The job record as the coordinator stored it in the bucket. */
  const readJob = async (store: JetStreamStateStore, id: string): Promise<JobState | null> => {
    const bytes = await store.get(`jobs/${id}/job.json`);
    return bytes && (JSON.parse(new TextDecoder().decode(bytes)) as JobState);
  };
  /** Waits for the stored job record to say done; fails early when a watched process dies or the job fails. */
  const waitStoredJob = (store: JetStreamStateStore, jobId: string, watch: FleetProc[]) =>
    waitFor(
      async () => {
        for (const p of watch) if (!p.alive) throw new WaitAbort(`${p.name} died: ${JSON.stringify(p.exit)}`);
        const r = await readJob(store, jobId);
        if (r?.state === 'failed') throw new WaitAbort(`job ${jobId} failed: ${r.error}`);
        return r?.state === 'done' ? r : null;
      },
      150_000,
      `job ${jobId} to finish`,
      200,
    );
  const waitWorkers = (api: string, ids: string[]) =>
    waitFor(
      async () => {
        const workers = (await getJson(`${api}/api/cluster`)).body.workers as { id: string; state: string }[];
        return ids.every(id => workers.some(w => w.id === id && w.state !== 'lost'));
      },
      60_000,
      `workers ${ids.join(', ')}`,
      100,
    );

  it('kill -9 of the coordinator mid-job, restarted on the same bucket: the job resumes, done members are not trained again', async () => {
    const bucket = 'fleet-restart-test',
      outDir = path.join(tmp, 'out');
    const args = ['--state-bucket', bucket, '--out-dir', outDir];
    const c = await group.coordinatorWith(nats.url, args);
    assert.match(
      c.proc.stderr,
      new RegExp(
        `coordinator: state JetStream bucket ${bucket}, outputs ${outDir.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}`,
      ),
    );
    const ws = [await group.worker(nats.url, 'w1'), await group.worker(nats.url, 'w2')];
    await waitWorkers(c.api, ['w1', 'w2']);
    const store = await JetStreamStateStore.open(bus.connection, { bucket });
    const jobId = await submit(bus, voting(3, 1500));
    assert.ok(await readJob(store, jobId), 'the job is in the bucket when the coordinator answers the submission');

    await waitFor(
      async () => {
        const j = await readJob(store, jobId);
        // a member trains for about 20 s here; storing a result in JetStream takes a second or so, during which the
        // worker already has its next lease: a lease a few seconds old is still early in its training
        return (
          j &&
          j.tasks.some(t => t.state === 'done') &&
          j.tasks.some(t => t.state === 'leased' && Date.now() - (t.leasedAt ?? 0) < 5000)
        );
      },
      120_000,
      'a member done and a recent lease',
      50,
    );
    await c.proc.kill('SIGKILL');
    const before = (await readJob(store, jobId))!;
    const doneBefore = before.tasks.filter(t => t.state === 'done');
    assert.ok(doneBefore.length >= 1 && before.state === 'running');
    for (const t of doneBefore)
      assert.ok(
        await store.get(`jobs/${jobId}/results/${t.task.id}.result`),
        `the result of ${t.task.id} is in the object store`,
      );

    await sleep(500);
    const c2 = await group.coordinatorWith(nats.url, args, 'coordinator (restarted)');
    await c2.proc.waitForLog(new RegExp(`job ${jobId}: resumed \\(${doneBefore.length}/3 tasks done\\)`), 10_000);
    const j = await waitStoredJob(store, jobId, [c2.proc, ...ws]);
    assert.ok(j.tasks.every(t => t.state === 'done'));
    for (const t of doneBefore) {
      const after = j.tasks.find(x => x.task.id === t.task.id)!;
      assert.equal(after.attempts, t.attempts, `${t.task.id} (done before the crash) was not leased again`);
      assert.equal(
        ws.reduce((n, w) => n + trainingsOf(w, t.task.id, jobId), 0),
        1,
        `${t.task.id} was trained once`,
      );
      assert.doesNotMatch(c2.proc.stderr, new RegExp(`${t.task.id} leased to`));
    }
    // the outputs are files under --out-dir/<job id>
    const out = path.join(outDir, jobId);
    assert.equal(j.summary!.out, out);
    const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.equal(m.members, 3);
    assert.equal(m.job, jobId);
    assert.ok(fs.existsSync(path.join(out, 'model.onnx')));
    assert.deepEqual((await store.list(`jobs/${jobId}/results/`)).length, 3);
  });

  it("the nats-server (and with it JetStream) stops for 3 s mid-job and comes back: the coordinator's state writes retry, the job finishes", async () => {
    const bucket = 'fleet-outage-test',
      outDir = path.join(tmp, 'out-outage');
    const c = await group.coordinatorWith(nats.url, ['--state-bucket', bucket, '--out-dir', outDir]);
    const ws = [await group.worker(nats.url, 'w1'), await group.worker(nats.url, 'w2')];
    await waitWorkers(c.api, ['w1', 'w2']);
    const store = await JetStreamStateStore.open(bus.connection, { bucket });
    const jobId = await submit(bus, voting(3, 1500));
    await waitFor(
      async () => (await readJob(store, jobId))?.tasks.some(t => t.state === 'leased'),
      60_000,
      'a lease',
      50,
    );

    await nats.stop();
    await sleep(3000);
    await nats.restart();

    const j = await waitStoredJob(store, jobId, [c.proc, ...ws]);
    assert.deepEqual(
      j.tasks.map(t => t.state),
      ['done', 'done', 'done'],
    );
    for (const p of [c.proc, ...ws]) assert.match(p.stderr, /nats: reconnect\b/, `${p.name} reconnected`);
    assert.equal((await store.list(`jobs/${jobId}/results/`)).length, 3, 'every result is in the object store');
    assert.equal(JSON.parse(fs.readFileSync(path.join(outDir, jobId, 'metrics.json'), 'utf8')).members, 3);
    // writes that failed for good (none expected: they retry for about 7 s) would be counted here
    const metrics = await (await fetch(`${c.api}/metrics`)).text();
    assert.match(metrics, /^fleet_state_write_failures_total 0$/m);
  });

  it('without --state on a server that has no JetStream, the coordinator exits 1 with one line saying what to do', async () => {
    const plain = await startNatsServer();
    try {
      const p = group.spawn('coordinator (no JetStream)', [
        'coordinator',
        '--nats',
        plain.url,
        '--http',
        'off',
        '--out-dir',
        path.join(tmp, 'x'),
      ]);
      const exit = await p.exited;
      assert.equal(exit.code, 1, p.stderr);
      assert.match(p.stderr, /fleet: JetStream is not available .*-js.*--state DIR/);
    } finally {
      await plain.dispose();
    }
  });

  it('--state-bucket together with --state is a usage error (exit 2)', async () => {
    const p = group.spawn('coordinator (both)', [
      'coordinator',
      '--nats',
      nats.url,
      '--state',
      path.join(tmp, 's'),
      '--state-bucket',
      'b',
    ]);
    assert.equal((await p.exited).code, 2);
    assert.match(p.stderr, /--state-bucket: only without --state/);
  });
});
