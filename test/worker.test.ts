// The cluster worker against hand-made coordinator messages on the in-process bus (no training: every task here
// fails at once on its data set): leases with bad ids or task JSON are dropped and counted, a second lease while
// busy is refused with its attempt and token, a failed task is answered with them, and cancels that name no
// running lease are dropped and counted.
import { strict as assert } from 'node:assert';
import { InprocHub } from '../bus/inproc-transport.ts';
import { SUBJECTS, taskLeaseSubject, taskCancelSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, jsonField, type TaskLeaseBody, type TaskResultBody } from '../bus/codec.ts';
import { startWorker, type WorkerHandle } from '../worker/worker.ts';
import { waitFor } from '../bench/harness/fleet-procs.ts';

const lease = (taskId: string, over: Partial<TaskLeaseBody> = {}): TaskLeaseBody => ({
  jobId: 'job-1',
  taskId,
  attempt: 2,
  leaseMs: 60_000,
  leaseToken: `token-${taskId}`,
  taskJson: jsonField({ model: 'cnn', dataset: 'no-such-data-set', epochs: 1, batchSize: 8 }),
  ...over,
});

describe('worker: leases and cancels from the coordinator (in-process bus)', () => {
  let hub: InprocHub, w: WorkerHandle, results: TaskResultBody[];
  const coordinator = () => hub.transport();
  const send = (l: TaskLeaseBody) =>
    coordinator().publish(taskLeaseSubject('w1'), encodeEnvelope({ kind: 'lease', value: l }, 'coord'));

  beforeEach(() => {
    hub = new InprocHub();
    results = [];
    coordinator().subscribe(SUBJECTS.taskResult, msg => {
      const d = decodeEnvelope(msg.data);
      if (d.ok && d.envelope.body.kind === 'result') results.push(d.envelope.body.value);
    });
    w = startWorker(hub.transport(), { id: 'w1', runtime: { threads: 1 }, heartbeatMs: 60_000 });
  });
  afterEach(async () => {
    await w.stop();
    hub.close();
  });

  it('refuses a second lease while busy, with its attempt and token; answers a failed task with its own', async () => {
    // published together: both arrive before the first task has failed
    send(lease('member-1'));
    send(lease('member-2', { attempt: 3 }));
    await waitFor(() => results.length === 2, 10_000, 'two results');
    const busy = results.find(r => r.taskId === 'member-2')!;
    assert.equal(busy.ok, false);
    assert.match(busy.error, /w1 is busy with job-1\/member-1/);
    assert.deepEqual(JSON.parse(new TextDecoder().decode(busy.resultJson)), { attempt: 3, busy: true });
    assert.equal(busy.leaseToken, 'token-member-2');
    const failed = results.find(r => r.taskId === 'member-1')!;
    assert.equal(failed.ok, false);
    assert.equal(failed.workerId, 'w1');
    assert.equal(failed.leaseToken, 'token-member-1');
    assert.deepEqual(JSON.parse(new TextDecoder().decode(failed.resultJson)), { attempt: 2 });
    assert.deepEqual(w.stats, { leases: 1, completed: 0, failed: 1, malformed: 0, samples: 0, cancelled: 0 });
  });

  it('drops and counts leases with bad ids or task JSON, and cancels that name no running lease', async () => {
    send(lease('../etc'));
    send(lease('member-1', { taskJson: jsonField(42) }));
    send(lease('member-1', { taskJson: jsonField(null) }));
    const cancel = (body: Uint8Array) => coordinator().publish(taskCancelSubject('w1'), body);
    cancel(new TextEncoder().encode('not json'));
    cancel(jsonField('a string'));
    cancel(jsonField({ jobId: 'job-1', taskId: 'member-1', pad: 'x'.repeat(2000) }));
    cancel(jsonField({ jobId: 'job-1', taskId: 'member-1', attempt: 2, leaseToken: 'token-member-1' }));
    await waitFor(() => w.stats.malformed === 7, 10_000, 'seven dropped messages');
    assert.equal(w.stats.leases, 0);
    assert.equal(results.length, 0);
    const rejected = await w.metrics.registry.getSingleMetricAsString('fleet_bus_rejected_total');
    assert.match(rejected, /kind="lease",reason="bad_id"} 1/);
    assert.match(rejected, /kind="lease",reason="malformed"} 2/);
    assert.match(rejected, /kind="cancel",reason="malformed"} 3/);
    assert.match(rejected, /kind="cancel",reason="not_leased"} 1/);
  });
});
