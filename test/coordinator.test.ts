// The coordinator's bookkeeping, in-process on the in-process bus with a scripted fake worker.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InprocHub } from '../bus/inproc-transport.ts';
import { SUBJECTS, taskLeaseSubject, workerHeartbeatSubject, tensorSubject, jobDoneSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, jsonField, Device, DType } from '../bus/codec.ts';
import { sendChunked } from '../bus/chunking.ts';
import { Coordinator, type JobSpec, type JobRecord } from '../coordinator/coordinator.ts';
import { DirStateStore, type StateStore } from '../coordinator/state-store.ts';
import { encodeMemberResult } from '../engine/ensemble/result-codec.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import { createHash } from 'node:crypto';
import type { Transport } from '../bus/transport.ts';
import { fakeMemberResult } from './helpers/jobs.ts';
import { submitJob } from '../coordinator/client.ts';

const spec: JobSpec = {
  kind: 'voting',
  members: 1,
  epochs: 1,
  batchSize: 64,
  recipe: RECIPES.fleet,
  seed: 1,
  valFraction: 0,
  dataset: 'mnist',
  limitTrain: 100,
  limitTest: 50,
};
const heartbeat = (w: Transport, id: string) =>
  w.publish(
    workerHeartbeatSubject(id),
    encodeEnvelope({ kind: 'heartbeat', value: { workerId: id, uptimeMs: 1, runningTaskIds: [] } }, id),
  );
const until = async (cond: () => boolean, ms = 5000) => {
  const t0 = Date.now();
  while (!cond()) {
    if (Date.now() - t0 > ms) throw new Error('timed out');
    await new Promise(r => setTimeout(r, 20));
  }
};

describe('coordinator bookkeeping (in-process bus, fake worker)', () => {
  let dir: string, hub: InprocHub, c: Coordinator;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-coord-'));
    hub = new InprocHub();
  });
  afterEach(async () => {
    await c?.stop();
    hub.close();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it("a worker that refuses a lease as busy does not use up the task's attempts; a real failure does", async () => {
    c = new Coordinator(hub.transport(), { stateDir: dir, maxAttempts: 2, tickMs: 20 });
    await c.start();
    const w = hub.transport();
    const leases: number[] = [];
    let job: ReturnType<Coordinator['submit']>;
    let refusals = 0;
    w.subscribe(taskLeaseSubject('fake'), msg => {
      const d = decodeEnvelope(msg.data);
      if (!d.ok || d.envelope.body.kind !== 'lease') return;
      const l = d.envelope.body.value;
      leases.push(l.attempt);
      const busy = refusals < 3;
      if (busy) refusals++;
      w.publish(
        SUBJECTS.taskResult,
        encodeEnvelope(
          {
            kind: 'result',
            value: {
              taskId: l.taskId,
              jobId: l.jobId,
              workerId: 'fake',
              ok: false,
              error: busy ? 'busy' : 'boom',
              resultJson: jsonField({ attempt: l.attempt, busy }),
              tensors: [],
              attempt: l.attempt,
              leaseToken: l.leaseToken,
              resultSha256: new Uint8Array(0),
            },
          },
          'fake',
        ),
      );
      // heartbeat as idle so the coordinator leases again
      setTimeout(
        () =>
          job.state === 'running' &&
          w.publish(
            workerHeartbeatSubject('fake'),
            encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'fake', uptimeMs: 1, runningTaskIds: [] } }, 'fake'),
          ),
        30,
      );
    });
    w.publish(
      SUBJECTS.workerAnnounce,
      encodeEnvelope(
        { kind: 'announce', value: { workerId: 'fake', device: Device.CPU, threads: 1, version: 't', gpuName: '' } },
        'fake',
      ),
    );
    heartbeat(w, 'fake'); // a worker that only announced itself is not leased anything
    await new Promise(r => setTimeout(r, 50));
    job = c.submit(spec);
    await until(() => job.state !== 'running');
    await new Promise(r => setTimeout(r, 60));
    // three busy refusals kept attempt 1; then two real failures (attempts 1 and 2) fail the job
    assert.deepEqual(leases, [1, 1, 1, 1, 2]);
    assert.equal(job.state, 'failed');
    assert.match(job.error!, /failed on 2 attempts: boom/);
  });

  it('the submitter asks the owning coordinator for the outcome: a forged done message does not end its wait, a vanished coordinator does', async () => {
    c = new Coordinator(hub.transport(), { stateDir: dir, tickMs: 20 });
    await c.start();
    const client = hub.transport();
    const waiting = submitJob(client, spec, () => {}, 5000, undefined, { pollMs: 50, requestMs: 200, goneMs: 1000 });
    const job = await (async () => {
      await until(() => c.jobs.size === 1);
      return [...c.jobs.values()][0];
    })();
    client.publish(jobDoneSubject(job.id), jsonField({ ok: true, summary: { test_accuracy: 1 } }));
    client.publish(jobDoneSubject(job.id), new TextEncoder().encode('{not json'));
    let settled = false;
    void waiting.then(
      () => {
        settled = true;
      },
      () => {
        settled = true;
      },
    );
    await new Promise(r => setTimeout(r, 400));
    assert.equal(settled, false, 'a forged done message ended the wait');
    await c.stop(); // no worker ever came: the job is still running when its coordinator goes
    await assert.rejects(waiting, new RegExp(`the coordinator that owns job ${job.id} has not answered for 1 s`));
  });

  it('refuses job specs that are not jobs, naming the field, and saves nothing', async () => {
    c = new Coordinator(hub.transport(), { stateDir: dir });
    for (const [bad, field] of [
      [null, 'the spec'],
      [{ ...spec, kind: 'stacking' }, 'kind'],
      [{ ...spec, members: 1e9 }, 'members'],
      [{ ...spec, recipe: null }, 'recipe'],
      [{ ...spec, dataset: 'cifar' }, 'dataset'],
    ] as const) {
      assert.throws(() => c.submit(bad as unknown as JobSpec), new RegExp(`job spec: ${field}`));
    }
    await c.persisted();
    assert.deepEqual(fs.readdirSync(dir), []);
  });

  it('a task is done only once its result is stored: a failed result write is retried, and the job record says done only after it', async () => {
    const inner = new DirStateStore(dir);
    const events: string[] = [];
    let failures = 1;
    // a store whose result writes are slow, and fail once
    const store: StateStore = {
      description: 'test store',
      async put(key, data) {
        if (key.endsWith('.result') && failures-- > 0) {
          events.push('result write failed');
          throw new Error('store unreachable');
        }
        if (key.endsWith('.result')) await new Promise(r => setTimeout(r, 150));
        await inner.put(key, data);
        events.push(
          key.endsWith('.result')
            ? 'result stored'
            : `job record: task ${(JSON.parse(String(data)) as JobRecord).tasks[0].state}`,
        );
      },
      get: key => inner.get(key),
      list: prefix => inner.list(prefix),
      delete: key => inner.delete(key),
      close: async () => {},
    };
    c = new Coordinator(hub.transport(), { store, outputDir: id => path.join(dir, 'out', id), tickMs: 20 });
    await c.start();
    const w = hub.transport();
    w.subscribe(taskLeaseSubject('fake'), async msg => {
      const d = decodeEnvelope(msg.data);
      if (!d.ok || d.envelope.body.kind !== 'lease') return;
      const l = d.envelope.body.value;
      const transferId = `${l.taskId}-1`;
      // a result that fits the job (zeros would do as well as trained weights for the bookkeeping)
      const payload = encodeMemberResult(fakeMemberResult(l.taskId, { val: 0, test: 50 }));
      await sendChunked(w, tensorSubject(transferId), payload, { transferId, sender: 'fake' });
      w.publish(
        SUBJECTS.taskResult,
        encodeEnvelope(
          {
            kind: 'result',
            value: {
              taskId: l.taskId,
              jobId: l.jobId,
              workerId: 'fake',
              ok: true,
              error: '',
              resultJson: jsonField({ attempt: l.attempt }),
              tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId }],
              attempt: l.attempt,
              leaseToken: l.leaseToken,
              resultSha256: createHash('sha256').update(payload).digest(),
            },
          },
          'fake',
        ),
      );
    });
    w.publish(
      SUBJECTS.workerAnnounce,
      encodeEnvelope(
        { kind: 'announce', value: { workerId: 'fake', device: Device.CPU, threads: 1, version: 't', gpuName: '' } },
        'fake',
      ),
    );
    heartbeat(w, 'fake');
    await new Promise(r => setTimeout(r, 50));
    const job = c.submit(spec);
    await until(() => job.state !== 'running', 15_000);
    assert.equal(job.state, 'done', job.error);
    await c.persisted();
    const stored = events.indexOf('result stored'),
      done = events.indexOf('job record: task done');
    assert.ok(
      events.indexOf('result write failed') >= 0 && stored > events.indexOf('result write failed'),
      events.join(', '),
    );
    assert.ok(done > stored, `the job record said done before the result was stored: ${events.join(', ')}`);
    assert.equal(c.stats.stateWriteFailures, 0, 'a retried write is not a failure');
    assert.ok(await inner.get(`jobs/${job.id}/results/member-1.result`));
  });

  it('a state write that fails on every retry is counted in stats and in fleet_state_write_failures_total; the coordinator keeps going', async () => {
    const inner = new DirStateStore(dir);
    const store: StateStore = {
      description: 'test store',
      async put(key, data) {
        if (key.endsWith('job.json')) throw new Error('store unreachable');
        await inner.put(key, data);
      },
      get: key => inner.get(key),
      list: prefix => inner.list(prefix),
      delete: key => inner.delete(key),
      close: async () => {},
    };
    c = new Coordinator(hub.transport(), { store, outputDir: id => path.join(dir, 'out', id), tickMs: 20 });
    await c.start();
    const job = c.submit(spec); // no worker: the job stays queued, its record write fails (5 attempts, about 7.5 s)
    await c.persisted();
    assert.equal(c.stats.stateWriteFailures, 1);
    const counter = (await c.metrics.stateWriteFailures.get()).values;
    assert.equal(counter[0]?.value, 1);
    assert.equal(job.state, 'running');
  });

  it('a running job whose every task was stored before a crash is combined when the coordinator starts (nothing is leased)', async () => {
    const store = new DirStateStore(dir);
    const job = {
      id: 'job-crashed',
      spec,
      state: 'running',
      submittedAt: Date.now(),
      tasks: [{ task: { id: 'member-1' }, state: 'done', attempts: 1, worker: 'gone' }],
    };
    await store.put('jobs/job-crashed/job.json', JSON.stringify(job));
    await store.put(
      'jobs/job-crashed/results/member-1.result',
      encodeMemberResult({ taskId: 'member-1', members: [], history: [], seconds: 0 }),
    );
    const logs: string[] = [];
    c = new Coordinator(hub.transport(), { stateDir: dir, tickMs: 20, log: l => logs.push(l) });
    await c.load();
    assert.equal(c.jobs.get('job-crashed')!.state, 'running');
    await c.start();
    await until(() => c.jobs.get('job-crashed')!.state !== 'running');
    assert.equal(c.stats.leases, 0);
    // its members are empty, so combining fails: but it is no longer stuck as running, in memory and in the store
    await c.persisted();
    const saved = JSON.parse(new TextDecoder().decode((await store.get('jobs/job-crashed/job.json'))!)) as JobRecord;
    assert.equal(saved.state, c.jobs.get('job-crashed')!.state);
    assert.ok(
      logs.some(l => /job-crashed: resumed \(1\/1 tasks done\)/.test(l)),
      logs.join('\n'),
    );
  });
});
