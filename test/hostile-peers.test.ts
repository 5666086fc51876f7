// Hostile and buggy peers on a real nats-server, against a real coordinator and a real worker (in this process,
// each on its own NATS connection): forged results (path names, wrong sender, wrong token, wrong kind, wrong
// shapes, replay of an old attempt), forged failures, progress and done messages, floods of partial transfers
// and fake workers. After each, the job finishes with exactly the result of an undisturbed run, nothing is
// written outside the output root, and every rejection is counted by reason (fleet_bus_rejected_total).
import { strict as assert } from 'node:assert';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { waitFor } from '../bench/harness/fleet-procs.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { SUBJECTS, taskLeaseSubject, tensorSubject, workerHeartbeatSubject, jobDoneSubject } from '../bus/subjects.ts';
import {
  encodeEnvelope,
  decodeEnvelope,
  jsonField,
  Device,
  DType,
  type EnvelopeBody,
  type TaskLeaseBody,
} from '../bus/codec.ts';
import { sendChunked } from '../bus/chunking.ts';
import { Coordinator, type CoordinatorOptions, type JobSpec } from '../coordinator/coordinator.ts';
import { submitJob } from '../coordinator/client.ts';
import { DirStateStore } from '../coordinator/state-store.ts';
import { startWorker, type WorkerHandle } from '../worker/worker.ts';
import { encodeMemberResult } from '../engine/ensemble/result-codec.ts';
import { expectedRows } from '../engine/ensemble/result-check.ts';
import { memberModelPath } from '../engine/ensemble/outputs.ts';
import { checkId, pathUnder } from '../util/ids.ts';
import type { MemberResult } from '../engine/ensemble/tasks.ts';
import { voting, fakeMemberResult } from './helpers/jobs.ts';

const spec = (members: number, seed = 5): JobSpec => voting(members, 200, seed);
type Summary = Record<string, unknown>;
const RESULT_KEYS = [
  'test_accuracy',
  'test_loss',
  'hard_vote_test_accuracy',
  'average_test_accuracy',
  'average_test_loss',
  'best_member_test_accuracy',
];
const memberResults = (out: string) =>
  (
    JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')).member_results as {
      name: string;
      test_loss: number;
    }[]
  ).map(m => [m.name, m.test_loss]);

/** Every file under dir (relative paths). */
function filesUnder(dir: string): string[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir, { recursive: true, withFileTypes: true })
    .filter(e => e.isFile())
    .map(e => path.relative(dir, path.join(e.parentPath ?? (e as { path?: string }).path ?? dir, e.name)))
    .sort();
}

describe('identifiers and output paths (util/ids.ts)', () => {
  it('checkId takes task, job and worker ids and refuses path steps, separators and odd characters', () => {
    for (const ok of ['member-1', 'job-mb3x-ab12', 'w1', 'host_1.example', 'snapshot-run'])
      assert.equal(checkId('id', ok), ok);
    for (const bad of [
      '',
      '..',
      '../x',
      'a/b',
      'a\\b',
      '.hidden',
      '-x',
      'a..b',
      'x'.repeat(65),
      'a b',
      'a\u0000b',
      42,
      null,
    ]) {
      assert.throws(() => checkId('task id', bad), /invalid task id/);
    }
  });

  it('pathUnder keeps a path under its root; memberModelPath refuses names that would leave it', () => {
    const root = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-ids-'));
    try {
      assert.equal(
        pathUnder(root, 'members', 'member-1', 'model.onnx'),
        path.join(root, 'members', 'member-1', 'model.onnx'),
      );
      for (const parts of [['..', 'x'], ['/etc/passwd'], ['a', '..', '..', 'b'], ['.']])
        assert.throws(() => pathUnder(root, ...parts), /leaves its root/);
      assert.equal(memberModelPath('snapshot-run/snapshot-2'), 'members/snapshot-run/snapshot-2/model.onnx');
      for (const name of ['../../escape', '/abs', 'a/b/c', 'x/..', ''])
        assert.throws(() => memberModelPath(name), /invalid member name/);
    } finally {
      fs.rmSync(root, { recursive: true, force: true });
    }
  });
});

describe('hostile peers on a real nats-server (coordinator and worker in this process)', function () {
  this.timeout(300_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }

  let nats: NatsServerHandle;
  let tmp: string;
  let n = 0;
  const conns: NatsTransport[] = [];
  const running: { stop(): Promise<void> }[] = [];
  const connect = async (name: string) => {
    const c = await connectNats(nats.url, { name });
    conns.push(c);
    return c;
  };
  let reference: { summary: Summary; members: (string | number)[][] };

  /** A coordinator with its state and outputs under a fresh directory of tmp. */
  async function coordinator(opts: Partial<CoordinatorOptions> = {}) {
    const root = path.join(tmp, `${++n}`);
    const out = path.join(root, 'out');
    const c = new Coordinator(await connect('coordinator'), {
      store: new DirStateStore(path.join(root, 'state')),
      outputDir: id => path.join(out, id),
      tickMs: 50,
      workerTimeoutMs: 4000,
      ...opts,
    });
    await c.start();
    running.push(c);
    return { c, root, out };
  }
  async function worker(id: string): Promise<WorkerHandle> {
    const w = startWorker(await connect(id), { id, runtime: { threads: 1 }, heartbeatMs: 300, announceEvery: 3 });
    running.push(w);
    return w;
  }
  const rejected = (c: Coordinator, kind: string, reason: string) => c.rejections.counts.get(`${kind}/${reason}`) ?? 0;
  const assertSameResult = (summary: Summary, label: string) => {
    for (const k of RESULT_KEYS) assert.equal(summary[k], reference.summary[k], `${label}: ${k}`);
    assert.deepEqual(memberResults(summary.out as string), reference.members, `${label}: per-member test losses`);
  };
  /** A job's id once the coordinator has it (the submitter only learns it from the reply). */
  const jobOf = (c: Coordinator, i = 0) =>
    waitFor(() => [...c.jobs.values()].sort((a, b) => a.submittedAt - b.submittedAt)[i], 10_000, 'the job');

  before(async () => {
    nats = await startNatsServer();
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-hostile-'));
    // the undisturbed run every attacked run must equal
    const { c } = await coordinator();
    const w = await worker('ref-w');
    const done = await submitJob(await connect('ref-submitter'), spec(2), () => {});
    reference = { summary: done.summary, members: memberResults(done.summary.out as string) };
    assert.equal(
      c.rejections.count(),
      0,
      `an undisturbed run rejects nothing: ${JSON.stringify([...c.rejections.counts])}`,
    );
    await w.stop();
    await c.stop();
  });
  afterEach(async () => {
    for (const r of running.splice(0).reverse()) await r.stop().catch(() => {});
    for (const c of conns.splice(0)) await c.close().catch(() => {});
  });
  after(async () => {
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('forged results, failures, heartbeats, progress and done messages from peers without the lease change nothing', async () => {
    const { c, root } = await coordinator();
    const evil = await connect('evil');
    const w = await worker('w1');
    // the submitter: a forged or garbled done message must neither end nor hang its wait
    const submitted = submitJob(await connect('submitter'), spec(2), () => {}, 10_000, undefined, { pollMs: 300 });
    const job = await jobOf(c);
    const m1 = await waitFor(() => job.tasks.find(t => t.state === 'leased'), 30_000, 'a lease');
    const queued = job.tasks.find(t => t !== m1)!;
    const result = (over: Partial<Extract<EnvelopeBody, { kind: 'result' }>['value']>, sender: string) =>
      evil.publish(
        SUBJECTS.taskResult,
        encodeEnvelope(
          {
            kind: 'result',
            value: {
              taskId: m1.task.id,
              jobId: job.id,
              workerId: sender,
              ok: true,
              error: '',
              resultJson: jsonField({}),
              tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId: 'forged' }],
              attempt: m1.attempts,
              leaseToken: 'guessed-token',
              resultSha256: new Uint8Array(32),
              ...over,
            },
          },
          sender,
        ),
      );
    // a one-hot "perfect" result sent as a chunked transfer, then results naming it
    const rows = expectedRows(spec(2));
    const perfect = encodeMemberResult(fakeMemberResult(m1.task.id, rows));
    await sendChunked(evil, tensorSubject('forged'), perfect, { transferId: 'forged', sender: 'ghost' });
    const sha = createHash('sha256').update(perfect).digest();
    result({ resultSha256: sha }, 'ghost'); // a worker that never announced: wrong_worker
    result({ resultSha256: sha, workerId: 'w1' }, 'ghost'); // claims another id: wrong_sender
    result({ resultSha256: sha }, 'w1'); // the lease holder's name, a guessed token
    result({ resultSha256: sha, attempt: m1.attempts + 1 }, 'w1'); // an attempt that does not exist
    result({ ok: false, error: 'forged', tensors: [], resultSha256: new Uint8Array(0), taskId: queued.task.id }, 'w1'); // a queued task
    result({ ok: false, error: 'forged', tensors: [], resultSha256: new Uint8Array(0) }, 'w1'); // wrong token
    result({ jobId: 'job-nope' }, 'w1');
    // heartbeats claiming the lease without its token, and progress for members that do not exist
    evil.publish(
      workerHeartbeatSubject('w1'),
      encodeEnvelope(
        {
          kind: 'heartbeat',
          value: {
            workerId: 'w1',
            uptimeMs: 1,
            runningTaskIds: [],
            running: [{ jobId: job.id, taskId: m1.task.id, attempt: m1.attempts, leaseToken: 'guessed-token' }],
          },
        },
        'w1',
      ),
    );
    for (let i = 0; i < 200; i++) {
      evil.publish(
        SUBJECTS.taskProgress,
        encodeEnvelope(
          {
            kind: 'progress',
            value: {
              taskId: `fake-${i}`,
              jobId: job.id,
              epoch: 1,
              batch: 0,
              batches: 0,
              loss: 9,
              metricsJson: jsonField({}),
              attempt: 1,
              leaseToken: 'guessed-token',
            },
          },
          'w1',
        ),
      );
    }
    // done messages: garbage, and a forged success
    evil.publish(jobDoneSubject(job.id), new TextEncoder().encode('{not json'));
    evil.publish(jobDoneSubject(job.id), jsonField({ ok: true, summary: { test_accuracy: 1, out: '/tmp' } }));
    await evil.flush();
    await waitFor(() => c.rejections.count() >= 207, 10_000, 'the forgeries to be counted');
    assert.equal(job.state, 'running', 'nothing forged finished the job');
    assert.equal(
      queued.state === 'queued' || queued.worker === 'w1',
      true,
      'the forged failure did not touch the queued task',
    );
    assert.equal(queued.attempts <= 1, true);

    const done = await submitted;
    assertSameResult(done.summary, 'after forged messages');
    assert.equal(
      job.tasks.map(t => t.attempts).join(),
      '1,1',
      `attempts; rejections: ${JSON.stringify([...c.rejections.counts])}`,
    );
    assert.equal(rejected(c, 'result', 'wrong_worker'), 1);
    assert.equal(rejected(c, 'result', 'wrong_sender'), 1);
    assert.equal(rejected(c, 'result', 'wrong_token'), 2);
    assert.equal(rejected(c, 'result', 'stale_attempt'), 1);
    assert.equal(rejected(c, 'result', 'not_leased'), 1);
    assert.equal(rejected(c, 'result', 'unknown_job'), 1);
    assert.equal(rejected(c, 'heartbeat', 'wrong_token'), 1);
    assert.equal(rejected(c, 'progress', 'unknown_task'), 200);
    // the same counts in the one metric, by kind and reason
    const series = (await c.metrics.rejected.get()).values;
    assert.equal(series.find(v => v.labels.kind === 'result' && v.labels.reason === 'wrong_token')?.value, 2);
    // progress series only for the leased members
    const members = new Set((await c.metrics.loss.get()).values.map(v => v.labels.member));
    assert.deepEqual([...members].sort(), ['member-1', 'member-2']);
    assert.ok(w.stats.completed === 2);
    assert.deepEqual(
      filesUnder(root).filter(f => !f.startsWith('out/') && !f.startsWith('state/')),
      [],
    );
  });

  it('a hostile worker holding leases: a member name with ../, the wrong kind, wrong shapes, a replayed old attempt; nothing escapes', async () => {
    const { c, root, out } = await coordinator({ maxAttempts: 10, workerTimeoutMs: 2500 });
    const evil = await connect('evil');
    const rows = expectedRows(spec(2));
    const attacks: ((taskId: string) => MemberResult)[] = [
      id => fakeMemberResult(id, rows, { name: '../../../../escape' }),
      id => fakeMemberResult(id, rows, { model: 'simclr' }),
      id => ({
        ...fakeMemberResult(id, rows),
        members: [
          {
            ...fakeMemberResult(id, rows).members[0],
            test: { loss: 0, accuracy: 1, probabilities: new Float32Array(10) },
          },
        ],
      }),
      id => {
        const r = fakeMemberResult(id, rows);
        r.members[0].params.shapes[0] = [1, 2, 3];
        return r;
      },
    ];
    let sent = 0;
    let first: Uint8Array | null = null;
    const heartbeat = () =>
      evil.publish(
        workerHeartbeatSubject('evil'),
        encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'evil', uptimeMs: 1, runningTaskIds: [] } }, 'evil'),
      );
    evil.subscribe(taskLeaseSubject('evil'), async msg => {
      const d = decodeEnvelope(msg.data);
      if (!d.ok || d.envelope.body.kind !== 'lease') return;
      const l: TaskLeaseBody = d.envelope.body.value;
      if (sent >= attacks.length) {
        // done attacking: replay the first result (an old attempt), then go silent
        if (first) evil.publish(SUBJECTS.taskResult, first);
        return;
      }
      const payload = encodeMemberResult(attacks[sent++](l.taskId));
      const transferId = `${l.taskId}-${l.attempt}-x`;
      await sendChunked(evil, tensorSubject(transferId), payload, { transferId, sender: 'evil' });
      const msgBytes = encodeEnvelope(
        {
          kind: 'result',
          value: {
            taskId: l.taskId,
            jobId: l.jobId,
            workerId: 'evil',
            ok: true,
            error: '',
            resultJson: jsonField({}),
            tensors: [{ name: 'result', shape: [], dtype: DType.UINT8, transferId }],
            attempt: l.attempt,
            leaseToken: l.leaseToken,
            resultSha256: createHash('sha256').update(payload).digest(),
          },
        },
        'evil',
      );
      first ??= msgBytes;
      evil.publish(SUBJECTS.taskResult, msgBytes);
      heartbeat(); // idle again: lease me the next one
    });
    evil.publish(
      SUBJECTS.workerAnnounce,
      encodeEnvelope(
        { kind: 'announce', value: { workerId: 'evil', device: Device.CPU, threads: 1, version: 'x', gpuName: '' } },
        'evil',
      ),
    );
    heartbeat();
    const submitted = submitJob(await connect('submitter'), spec(2), () => {}, 10_000, undefined, { pollMs: 300 });
    await waitFor(
      () => rejected(c, 'result', 'spec_mismatch') >= attacks.length && rejected(c, 'result', 'stale_attempt') >= 1,
      30_000,
      'the attacks',
    );
    await worker('w1'); // the honest worker trains both members once the hostile one has gone silent
    const done = await submitted;
    assertSameResult(done.summary, 'after a hostile lease holder');
    assert.equal(rejected(c, 'result', 'spec_mismatch'), attacks.length);
    // nothing outside the output root, and inside it only the job's own files
    assert.deepEqual(
      filesUnder(root).filter(f => !f.startsWith('out/') && !f.startsWith('state/')),
      [],
    );
    assert.ok(!fs.existsSync(path.join(tmp, 'escape')) && !fs.existsSync(path.resolve(out, '../../../../escape')));
    const jobOut = path.join(out, done.jobId);
    assert.deepEqual(
      filesUnder(jobOut).filter(f => f.startsWith('members/')),
      ['members/member-1/model.onnx', 'members/member-2/model.onnx'],
    );
  });

  it('floods of partial transfers and fake workers stay within their caps; fake workers get no lease', async () => {
    const MiB = 1024 * 1024;
    const { c } = await coordinator({
      maxWorkers: 40,
      workerTimeoutMs: 2000,
      transfers: { maxBytesPerSender: 8 * MiB, maxBytesTotal: 32 * MiB, idleMs: 1500 },
    });
    const evil = await connect('evil');
    // 300 transfers that declare 1 MiB each and send one 64 KiB chunk of 16
    const chunk = new Uint8Array(64 * 1024);
    for (let i = 0; i < 300; i++) {
      const sender = `flood-${i % 3}`;
      evil.publish(
        tensorSubject(`t${i}`),
        encodeEnvelope(
          {
            kind: 'chunk',
            value: {
              transferId: `t${i}`,
              index: 0,
              count: 16,
              totalBytes: MiB,
              sha256: new Uint8Array(32),
              data: chunk,
            },
          },
          sender,
        ),
      );
    }
    // 100 workers that announce themselves and never heartbeat
    for (let i = 0; i < 100; i++) {
      evil.publish(
        SUBJECTS.workerAnnounce,
        encodeEnvelope(
          {
            kind: 'announce',
            value: { workerId: `fake-${i}`, device: Device.CPU, threads: 64, version: 'x', gpuName: '' },
          },
          `fake-${i}`,
        ),
      );
    }
    await evil.flush();
    await waitFor(() => c.rejections.count('over_capacity') >= 300 - 24 + 60, 10_000, 'the floods to be refused');
    assert.ok(c.reassembler.load.bytes <= 24 * MiB, `${c.reassembler.load.bytes} bytes in flight`); // 8 MiB for each of 3 senders
    assert.ok(c.workers.size <= 40);
    const submitted = submitJob(await connect('submitter'), spec(2), () => {}, 10_000, undefined, { pollMs: 300 });
    await worker('w1'); // let in once the silent fakes are lost and forgotten
    const done = await submitted;
    assertSameResult(done.summary, 'after the floods');
    const job = c.jobs.get(done.jobId)!;
    assert.deepEqual(
      job.tasks.map(t => [t.worker, t.attempts]),
      [
        ['w1', 1],
        ['w1', 1],
      ],
      'no fake worker was leased a task',
    );
    await waitFor(() => c.reassembler.load.bytes === 0, 10_000, 'the unfinished transfers to expire');
  });

  it('two concurrent jobs on two workers: the later, smaller job is not starved, and each result equals its run alone', async () => {
    const { c } = await coordinator();
    await Promise.all([worker('w1'), worker('w2')]);
    await waitFor(() => [...c.workers.values()].filter(w => w.heartbeatAt).length === 2, 10_000, 'both workers');
    const client = await connect('submitter');
    const big = submitJob(client, spec(4), () => {}, 10_000, undefined, { pollMs: 300 });
    const bigJob = await jobOf(c, 0);
    await waitFor(
      () => bigJob.tasks.filter(t => t.state === 'leased').length === 2,
      10_000,
      'the big job on both workers',
    );
    const small = submitJob(client, spec(2), () => {}, 10_000, undefined, { pollMs: 300 });
    const [a, b] = await Promise.all([big, small]);
    // the small job got the first worker that came free, before the big job's last tasks (first come, first served
    // would have leased all four big members first)
    const [smallJob] = [c.jobs.get(b.jobId)!];
    assert.ok(
      smallJob.tasks[0].leasedAt! < bigJob.tasks[3].leasedAt!,
      `small job leased at ${smallJob.tasks[0].leasedAt}, big member-4 at ${bigJob.tasks[3].leasedAt}`,
    );
    assert.equal(a.jobId, bigJob.id);
    assertSameResult(b.summary, 'the small job alongside the big one');
    // the big job's members 1 and 2 have the seeds of the reference's members: the same results
    assert.deepEqual(memberResults(a.summary.out as string).slice(0, 2), reference.members);
  });
});
