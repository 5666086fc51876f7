// Prometheus metrics as the processes expose them: a Coordinator and two workers on the in-process bus (each
// with its own registry, as separate processes have) run a tiny job; the expositions are checked against what
// the job did (images trained, steps, bus traffic seen from both ends) and by `promtool check metrics`.
// Then real `fleet coordinator` / `fleet worker --http` processes on a real nats-server.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startEmbedded, tinyJob, waitJobDone, type Embedded } from './helpers/embedded.ts';
import { parseExposition, sample, sumOf, promtool, promtoolAvailable } from './helpers/prom.ts';
import { ProcGroup, waitFor, getJson } from '../bench/harness/fleet-procs.ts';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { exposition } from '../telemetry/metrics.ts';
import { InprocHub } from '../bus/inproc-transport.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { SUBJECTS, taskLeaseSubject, tensorSubject, workerHeartbeatSubject } from '../bus/subjects.ts';
import { encodeEnvelope, decodeEnvelope, jsonField, Device } from '../bus/codec.ts';
import { subjectKind } from '../bus/metered-transport.ts';
import * as http from 'node:http';

const LIMIT_TRAIN = 128,
  BATCH = 32,
  MEMBERS = 2;
const text = async (e: Embedded['c']['metrics']) => (await exposition(e)).body;

function httpText(url: string): Promise<{ status: number; type: string; body: string }> {
  return new Promise((resolve, reject) => {
    http
      .get(url, res => {
        let body = '';
        res
          .setEncoding('utf8')
          .on('data', d => {
            body += d;
          })
          .on('end', () => resolve({ status: res.statusCode ?? 0, type: String(res.headers['content-type']), body }));
      })
      .on('error', reject);
  });
}

describe('metrics: an embedded coordinator and two workers after a 2-member job', function () {
  this.timeout(180_000);
  let e: Embedded;
  let job: ReturnType<Coordinator['submit']>;
  let metricsJson: any;

  before(async () => {
    e = startEmbedded(MEMBERS);
    await waitFor(() => e.c.workers.size === MEMBERS, 10_000, 'workers to announce');
    job = e.c.submit(tinyJob('voting', MEMBERS, 1, LIMIT_TRAIN, 64));
    await waitJobDone(e.c, job);
    metricsJson = JSON.parse(fs.readFileSync(path.join(e.c.outDir(job.id), 'metrics.json'), 'utf8'));
    // the per-worker summary arrives with the next heartbeats
    await waitFor(
      () => e.workers.every(w => e.c.workers.get(w.id)?.samplesProcessed === w.stats.samples),
      10_000,
      'heartbeats with the final sample counts',
    );
    e.c.monitor!.refresh();
  });
  after(async () => {
    await e?.stop();
  });

  it('the coordinator exposes workers, jobs, per-member loss and accuracy from the progress events', async () => {
    const s = parseExposition(await text(e.c.metrics));
    assert.equal(sample(s, 'fleet_workers_connected', { device: 'cpu' }), MEMBERS);
    assert.equal(sample(s, 'fleet_workers_connected', { device: 'cuda' }), 0);
    assert.equal(sample(s, 'fleet_jobs', { state: 'done' }), 1);
    assert.equal(sample(s, 'fleet_jobs', { state: 'running' }), 0);
    assert.equal(sample(s, 'fleet_task_retries_total'), 0);
    for (const member of ['member-1', 'member-2']) {
      const last = metricsJson.histories[member].at(-1);
      assert.equal(sample(s, 'fleet_training_loss', { fleet_job: job.id, member, split: 'train' }), last.train_loss);
      assert.equal(sample(s, 'fleet_training_loss', { fleet_job: job.id, member, split: 'test' }), last.test_loss);
      assert.equal(
        sample(s, 'fleet_training_accuracy_ratio', { fleet_job: job.id, member, split: 'train' }),
        last.train_accuracy,
      );
      assert.equal(
        sample(s, 'fleet_training_accuracy_ratio', { fleet_job: job.id, member, split: 'test' }),
        last.test_accuracy,
      );
    }
    assert.ok(s.has('process_cpu_seconds_total'), 'default process metrics');
  });

  it("re-exposes each worker's summary: heartbeat age, busy, images processed (equal to the worker's own count)", async () => {
    const s = parseExposition(await text(e.c.metrics));
    let total = 0;
    for (const w of e.workers) {
      const labels = { worker: w.id, device: 'cpu' };
      const age = sample(s, 'fleet_worker_heartbeat_age_seconds', labels);
      assert.ok(age >= 0 && age < 5, `heartbeat age ${age}`);
      assert.equal(sample(s, 'fleet_worker_busy', labels), 0);
      assert.equal(sample(s, 'fleet_worker_samples_processed', labels), w.stats.samples);
      total += w.stats.samples;
    }
    assert.equal(total, MEMBERS * LIMIT_TRAIN, 'each member trains on LIMIT_TRAIN images for 1 epoch');
  });

  it('workers expose step durations and images processed', async () => {
    let steps = 0,
      images = 0;
    for (const w of e.workers) {
      const s = parseExposition(await text(w.metrics));
      images += sample(s, 'fleet_samples_processed_total', { model: 'cnn' });
      assert.equal(sample(s, 'fleet_samples_processed_total', { model: 'cnn' }), w.stats.samples);
      const count = sample(s, 'fleet_training_step_duration_seconds_count', { model: 'cnn' });
      assert.equal(sample(s, 'fleet_training_step_duration_seconds_bucket', { model: 'cnn', le: '+Inf' }), count);
      assert.ok(sample(s, 'fleet_training_step_duration_seconds_sum', { model: 'cnn' }) > 0 || count === 0);
      steps += count;
    }
    assert.equal(images, MEMBERS * LIMIT_TRAIN);
    // 4 batches per member; the first step of each task is not timed (it includes building the sessions)
    assert.equal(steps, MEMBERS * (LIMIT_TRAIN / BATCH - 1));
  });

  it('bus traffic: what the workers sent is what the coordinator received, by kind, in messages and bytes', async () => {
    const cs = parseExposition(await text(e.c.metrics));
    const ws = await Promise.all(e.workers.map(async w => parseExposition(await text(w.metrics))));
    for (const kind of ['chunk', 'result']) {
      for (const name of ['fleet_bus_messages_total', 'fleet_bus_bytes_total']) {
        const sent = ws.reduce((a, s) => a + sumOf(s, name, { direction: 'out', kind }), 0);
        assert.ok(sent > 0, `${name} ${kind}`);
        assert.equal(sample(cs, name, { direction: 'in', kind }), sent, `${name} ${kind}`);
      }
    }
    assert.equal(sample(cs, 'fleet_bus_messages_total', { direction: 'out', kind: 'lease' }), MEMBERS);
    assert.equal(
      ws.reduce((a, s) => a + sumOf(s, 'fleet_bus_messages_total', { direction: 'in', kind: 'lease' }), 0),
      MEMBERS,
    );
    assert.ok(sample(cs, 'fleet_bus_messages_total', { direction: 'in', kind: 'heartbeat' }) >= MEMBERS);
  });

  it("malformed messages and failed chunk reassemblies are counted, with the coordinator's stats", async () => {
    const before = parseExposition(await text(e.c.metrics));
    const b0 = { malformed: e.c.stats.malformed, reassembly: e.c.stats.reassemblyFailures };
    const t = e.hub.transport();
    t.publish(workerHeartbeatSubject('w1'), new Uint8Array([0xff, 0x01, 0x02]));
    // a one-chunk transfer whose SHA-256 does not match its data
    t.publish(
      tensorSubject('bogus-1'),
      encodeEnvelope(
        {
          kind: 'chunk',
          value: {
            transferId: 'bogus-1',
            index: 0,
            count: 1,
            totalBytes: 3,
            sha256: new Uint8Array(32),
            data: new Uint8Array([1, 2, 3]),
          },
        },
        'test',
      ),
    );
    await waitFor(
      () => e.c.stats.malformed > b0.malformed && e.c.stats.reassemblyFailures > b0.reassembly,
      5000,
      'the coordinator to drop both',
    );
    const s = parseExposition(await text(e.c.metrics));
    const was = (name: string, labels?: Record<string, string>) => {
      try {
        return sample(before, name, labels);
      } catch {
        return 0;
      }
    };
    assert.equal(
      sample(s, 'fleet_bus_malformed_messages_total', { kind: 'heartbeat' }) -
        was('fleet_bus_malformed_messages_total', { kind: 'heartbeat' }),
      1,
    );
    assert.equal(sample(s, 'fleet_chunk_reassembly_failures_total') - was('fleet_chunk_reassembly_failures_total'), 1);
    assert.equal(e.c.stats.malformed - b0.malformed, 1);
    assert.equal(e.c.stats.reassemblyFailures - b0.reassembly, 1);
    await t.close();
  });

  it('both expositions pass promtool check metrics', async function () {
    assert.ok(promtoolAvailable(), 'promtool is not installed (apt-get install prometheus; .ci/run does)');
    for (const m of [e.c.metrics, e.workers[0].metrics]) {
      const r = promtool(['check', 'metrics'], await text(m));
      assert.equal(r.status, 0, r.output);
    }
  });
});

describe('metrics: task retries', () => {
  it('a failed attempt that is leased again counts one retry; the attempt that fails the job does not', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-retries-'));
    const hub = new InprocHub();
    const c = new Coordinator(hub.transport(), {
      stateDir: dir,
      maxAttempts: 2,
      tickMs: 20,
      metrics: createMetrics({ defaultMetrics: false }),
    });
    try {
      await c.start();
      const w = hub.transport();
      w.subscribe(taskLeaseSubject('fake'), msg => {
        const d = decodeEnvelope(msg.data);
        if (!d.ok || d.envelope.body.kind !== 'lease') return;
        const l = d.envelope.body.value;
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
                error: 'boom',
                resultJson: jsonField({ attempt: l.attempt }),
                tensors: [],
                attempt: l.attempt,
                leaseToken: l.leaseToken,
                resultSha256: new Uint8Array(0),
              },
            },
            'fake',
          ),
        );
        setTimeout(
          () =>
            w.publish(
              workerHeartbeatSubject('fake'),
              encodeEnvelope(
                { kind: 'heartbeat', value: { workerId: 'fake', uptimeMs: 1, runningTaskIds: [] } },
                'fake',
              ),
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
      w.publish(
        workerHeartbeatSubject('fake'),
        encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'fake', uptimeMs: 1, runningTaskIds: [] } }, 'fake'),
      );
      await waitFor(() => c.workers.has('fake'), 5000, 'the fake worker');
      const job = c.submit(tinyJob('voting', 1, 1, 64, 32));
      await waitFor(() => job.state === 'failed', 10_000, 'the job to fail');
      const s = parseExposition((await exposition(c.metrics)).body);
      assert.equal(sample(s, 'fleet_task_retries_total'), 1);
      c.monitor!.refresh();
      assert.equal(sample(parseExposition((await exposition(c.metrics)).body), 'fleet_jobs', { state: 'failed' }), 1);
    } finally {
      await c.stop();
      hub.close();
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('message kinds come from a fixed set of subjects', () => {
    assert.equal(subjectKind(workerHeartbeatSubject('x')), 'heartbeat');
    assert.equal(subjectKind(tensorSubject('t1')), 'chunk');
    assert.equal(subjectKind(SUBJECTS.workerAnnounce), 'announce');
    assert.equal(subjectKind('_INBOX.abc.1'), 'reply');
    assert.equal(subjectKind('fleet.worker.announcements'), 'other');
    assert.equal(subjectKind('something.else'), 'other');
  });
});

describe('metrics: fleet coordinator and fleet worker --http as processes (real nats-server)', function () {
  this.timeout(90_000);
  let nats: NatsServerHandle;
  const group = new ProcGroup();
  before(async function () {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server; .ci/run does)');
    nats = await startNatsServer();
  });
  afterEach(async function () {
    if (this.currentTest?.state === 'failed') console.error(group.describe());
    await group.killAll();
  });
  after(async () => {
    await nats?.dispose();
  });

  it('the worker serves /metrics; the coordinator re-exposes its heartbeat; both pass promtool', async () => {
    const state = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-metrics-'));
    const c = await group.coordinator(nats.url, state);
    const w = await group.worker(nats.url, 'mw', ['--http', '127.0.0.1:0']);
    const at = (await w.waitForLog(/metrics at (http:\/\/[\d.]+:\d+\/metrics)/))[1];
    const ws = await waitFor(
      async () => {
        const r = await httpText(at);
        const s = parseExposition(r.body);
        return sumOf(s, 'fleet_bus_messages_total', { direction: 'out', kind: 'heartbeat' }) >= 2 ? r : null;
      },
      20_000,
      'worker heartbeats in its /metrics',
    );
    assert.equal(ws.status, 200);
    assert.match(ws.type, /^text\/plain/);
    assert.ok(parseExposition(ws.body).has('process_resident_memory_bytes'));
    const cs = await waitFor(
      async () => {
        const r = await httpText(`${c.api}/metrics`);
        const s = parseExposition(r.body);
        return s.get('fleet_workers_connected{device="cpu"}') === 1 &&
          s.has('fleet_worker_heartbeat_age_seconds{device="cpu",worker="mw"}')
          ? r
          : null;
      },
      20_000,
      'the coordinator to see worker mw',
    );
    assert.equal(sample(parseExposition(cs.body), 'fleet_worker_busy', { worker: 'mw', device: 'cpu' }), 0);
    if (promtoolAvailable()) {
      for (const body of [ws.body, cs.body]) {
        const r = promtool(['check', 'metrics'], body);
        assert.equal(r.status, 0, r.output);
      }
    }
    assert.equal((await getJson(`${c.api}/api/cluster`)).body.workers[0].samplesProcessed, 0);
    const other = await httpText(at.replace('/metrics', '/other'));
    assert.equal(other.status, 404);
    fs.rmSync(state, { recursive: true, force: true });
  });

  it('--http with a bad address is a usage error', async () => {
    const w = group.spawn('bad', ['worker', '--nats', nats.url, '--http', 'nowhere']);
    const r = await w.exited;
    assert.equal(r.code, 2);
    assert.match(w.stderr, /--http: expected HOST:PORT/);
  });

  it('--metrics, the old name of --http, still serves /metrics and warns that it is deprecated', async () => {
    const w = await group.worker(nats.url, 'old', ['--metrics', '127.0.0.1:0']);
    assert.match(w.stderr, /--metrics is deprecated, use --http HOST:PORT/);
    const at = (await w.waitForLog(/metrics at (http:\/\/[\d.]+:\d+\/metrics)/))[1];
    assert.equal((await httpText(at)).status, 200);
    const both = group.spawn('both', [
      'worker',
      '--nats',
      nats.url,
      '--http',
      '127.0.0.1:0',
      '--metrics',
      '127.0.0.1:0',
    ]);
    assert.equal((await both.exited).code, 2);
    assert.match(both.stderr, /--metrics is the old name of --http: give one of them/);
  });
});
