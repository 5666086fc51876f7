// The coordinator's bookkeeping, in-process on the in-process bus with a scripted fake worker.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InprocHub } from '../bus/inproc-transport.ts';
import { SUBJECTS, taskLeaseSubject, workerHeartbeatSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, jsonField, Device } from '../bus/codec.ts';
import { Coordinator, type JobSpec } from '../coordinator/coordinator.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';

const spec: JobSpec = { kind: 'voting', members: 1, epochs: 1, batchSize: 64, recipe: RECIPES.fleet, seed: 1, valFraction: 0, dataset: 'mnist', limitTrain: 100, limitTest: 50 };
const until = async (cond: () => boolean, ms = 5000) => {
  const t0 = Date.now();
  while (!cond()) { if (Date.now() - t0 > ms) throw new Error('timed out'); await new Promise(r => setTimeout(r, 20)); }
};

describe('coordinator bookkeeping (in-process bus, fake worker)', () => {
  let dir: string, hub: InprocHub, c: Coordinator;
  beforeEach(() => { dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-coord-')); hub = new InprocHub(); });
  afterEach(async () => { await c?.stop(); hub.close(); fs.rmSync(dir, { recursive: true, force: true }); });

  it('a worker that refuses a lease as busy does not use up the task\'s attempts; a real failure does', async () => {
    c = new Coordinator(hub.transport(), { stateDir: dir, maxAttempts: 2, tickMs: 20 });
    c.start();
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
      w.publish(SUBJECTS.taskResult, encodeEnvelope({ kind: 'result', value: { taskId: l.taskId, jobId: l.jobId, workerId: 'fake', ok: false,
        error: busy ? 'busy' : 'boom', resultJson: jsonField({ attempt: l.attempt, busy }), tensors: [] } }, 'fake'));
      // heartbeat as idle so the coordinator leases again
      setTimeout(() => job.state === 'running' && w.publish(workerHeartbeatSubject('fake'), encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'fake', uptimeMs: 1, runningTaskIds: [] } }, 'fake')), 30);
    });
    w.publish(SUBJECTS.workerAnnounce, encodeEnvelope({ kind: 'announce', value: { workerId: 'fake', device: Device.CPU, threads: 1, version: 't', gpuName: '' } }, 'fake'));
    await new Promise(r => setTimeout(r, 50));
    job = c.submit(spec);
    await until(() => job.state !== 'running');
    await new Promise(r => setTimeout(r, 60));
    // three busy refusals kept attempt 1; then two real failures (attempts 1 and 2) fail the job
    assert.deepEqual(leases, [1, 1, 1, 1, 2]);
    assert.equal(job.state, 'failed');
    assert.match(job.error!, /failed on 2 attempts: boom/);
  });

  it('refuses job specs that are not jobs, naming the field, and saves nothing', () => {
    c = new Coordinator(hub.transport(), { stateDir: dir });
    for (const [bad, field] of [[null, 'the spec'], [{ ...spec, kind: 'stacking' }, 'kind'], [{ ...spec, members: 1e9 }, 'members'],
      [{ ...spec, recipe: null }, 'recipe'], [{ ...spec, dataset: 'cifar' }, 'dataset']] as const) {
      assert.throws(() => c.submit(bad as unknown as JobSpec), new RegExp(`job spec: ${field}`));
    }
    assert.deepEqual(fs.readdirSync(path.join(dir, 'jobs')), []);
  });
});
