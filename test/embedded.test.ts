// The embedded default: a coordinator and N workers on worker threads in one process, on the in-process bus.
// Checked against training the same members in this thread (trainEnsemble), bit for bit; and, through the CLI,
// an embedded run killed mid-job that continues with --resume, equal to an uninterrupted run, with the
// coordinator's HTTP port served during the run. (test/cluster.test.ts compares the CLI's embedded run
// with the same job on NATS workers.) Tiny data, --threads 1: correctness, not speed.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runEmbedded } from '../cli/embedded.ts';
import { trainEnsemble } from '../engine/ensemble/train-ensemble.ts';
import { decodeMemberResult } from '../engine/ensemble/result-codec.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import type { JobSpec } from '../coordinator/coordinator.ts';
import { ProcGroup, waitFor, getJson, readJob, jobIds, trainingsOf } from '../bench/harness/fleet-procs.ts';
import { lines } from './helpers/cli.ts';

const spec: JobSpec = {
  kind: 'voting',
  model: 'cnn',
  members: 2,
  epochs: 1,
  batchSize: 64,
  recipe: { ...RECIPES.fleet, batchSize: 64 },
  seed: 11,
  valFraction: 0,
  dataset: 'mnist',
  limitTrain: 400,
  limitTest: 100,
  selection: { objective: 'loss', initSize: 0, maxIter: 50, bags: 1 },
};

describe('embedded run: coordinator + worker threads on the in-process bus', function () {
  this.timeout(300_000);
  let tmp: string;
  let group: ProcGroup;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-embedded-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));
  beforeEach(() => {
    group = new ProcGroup();
  });
  afterEach(async function () {
    if (this.currentTest?.state === 'failed' || process.env.FLEET_TEST_LOGS)
      process.stderr.write(`\nprocesses of "${this.currentTest?.title}":\n${group.describe()}\n`);
    await group.killAll();
  });

  it('on 2 worker threads: the members are bit-identical to training them in this thread, and so are the test losses', async () => {
    const out = path.join(tmp, 'two-threads');
    const batches = new Map<string, number>(),
      epochs: string[] = [];
    const done = await runEmbedded({
      spec,
      workers: 2,
      runtime: { threads: 1 },
      out,
      onBatch: (id, b) => {
        assert.ok(b.batch >= 1 && b.batch <= b.batches);
        batches.set(id, (batches.get(id) ?? 0) + 1);
      },
      onEpoch: (id, m) => epochs.push(`${id} ${m.epoch} ${m.test_loss}`),
    });
    const here = await trainEnsemble({ ...spec, runtime: { threads: 1 } });

    const job = readJob(path.join(out, 'state'), done.jobId)!;
    assert.deepEqual(job.tasks.map(t => t.worker).sort(), ['embedded-1', 'embedded-2'], 'each thread trained a member');
    for (const m of here.members) {
      const r = decodeMemberResult(
        fs.readFileSync(path.join(out, 'state', 'jobs', done.jobId, 'results', `${m.taskId}.result`)),
      );
      const t = r.members[0];
      assert.equal(t.name, m.name);
      m.params.data.forEach((a, k) =>
        assert.ok(
          Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(
            Buffer.from(t.params.data[k].buffer, t.params.data[k].byteOffset, t.params.data[k].byteLength),
          ),
          `${m.name} ${m.params.names[k]} differs`,
        ),
      );
      assert.deepEqual(t.test!.probabilities, m.test!.probabilities);
    }
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.deepEqual(
      metrics.member_results.map((m: { name: string; test_loss: number }) => [m.name, m.test_loss]),
      here.memberSummaries.map(m => [m.name, m.test_loss]),
    );
    assert.equal(done.summary.test_loss, here.test.loss);
    assert.equal(done.summary.test_accuracy, here.test.accuracy);
    assert.equal(done.summary.out, out);
    for (const f of [
      'model.onnx',
      'members/member-1/model.onnx',
      'members/member-2/model.onnx',
      'members/member-1/checkpoints/epoch-001.ckpt',
      'members-loss.svg',
    ]) {
      assert.ok(fs.existsSync(path.join(out, f)), f);
    }
    // progress came back from the threads: batches for the progress bar, and each member's epoch with its test loss
    assert.deepEqual([...batches.keys()].sort(), ['member-1', 'member-2']);
    assert.deepEqual(epochs.sort(), here.memberSummaries.map(m => `${m.name} 1 ${m.test_loss}`).sort());
  });

  it('fleet train: killed mid-run, refuses to start over or resume with other settings, then --resume finishes it equal to an uninterrupted run', async () => {
    const settings = [
      'train',
      'cnn',
      '--members',
      '2',
      '--epochs',
      '2',
      '--limit-train',
      '400',
      '--limit-test',
      '100',
      '--batch-size',
      '64',
      '--threads',
      '1',
      '--seed',
      '3',
      '--json',
    ];
    const out = path.join(tmp, 'interrupted'),
      state = path.join(out, 'state');
    const first = group.spawn('first run', [...settings, '--workers', '1', '--out', out, '--http', '127.0.0.1:0']);
    // the coordinator's HTTP port is served during the run
    const api = (await first.waitForLog(/embedded coordinator: (http:\/\/[\d.]+:\d+)\//, 60_000))[1];
    const cluster = await waitFor(
      async () => {
        const b = (await getJson(`${api}/api/cluster`)).body;
        return b.workers.some((w: { id: string }) => w.id === 'embedded-1') ? b : null;
      },
      60_000,
      'the embedded worker on /api/cluster',
    );
    assert.equal(cluster.workers.length, 1);
    const jobs = (await getJson(`${api}/api/jobs`)).body as { id: string; state: string; members: number }[];
    assert.equal(jobs.length, 1);
    assert.equal(jobs[0].state, 'running');
    assert.equal(jobs[0].members, 2);
    const jobId = jobs[0].id;
    const page = await fetch(`${api}/`);
    assert.equal(page.status, 200);
    assert.match(page.headers.get('content-type') ?? '', /text\/html/);
    const metrics = await (await fetch(`${api}/metrics`)).text();
    assert.match(metrics, /^fleet_workers_connected\{device="cpu"\} 1$/m);
    // member-1 done, member-2 under way: kill -9
    await waitFor(() => readJob(state, jobId)?.tasks[0].state === 'done', 120_000, 'member-1 done', 50);
    await first.kill('SIGKILL');
    assert.equal(readJob(state, jobId)!.state, 'running');

    const again = group.spawn('without --resume', [...settings, '--out', out]);
    assert.equal((await again.exited).code, 2);
    assert.match(
      again.stderr,
      /--out .* is not empty: add --resume to continue the run in it, or --overwrite to replace it/,
    );
    const other = group.spawn('other settings', [...settings, '--seed', '4', '--out', out, '--resume']);
    assert.equal((await other.exited).code, 1);
    assert.match(other.stderr, /--resume: .* has other settings \(seed: 3 there, 4 now\)/);

    const resumed = group.spawn('--resume', [...settings, '--workers', '2', '--out', out, '--resume']);
    const reference = group.spawn('uninterrupted', [
      ...settings,
      '--workers',
      '2',
      '--out',
      path.join(tmp, 'reference'),
    ]);
    for (const p of [resumed, reference]) assert.equal((await p.exited).code, 0, `${p.name}:\n${p.stderr}`);
    assert.deepEqual(jobIds(state), [jobId], 'the resumed run continued the same job');
    assert.equal(trainingsOf(resumed, 'member-1', jobId), 0, 'member-1 (done before the kill) was not trained again');
    assert.equal(trainingsOf(resumed, 'member-2', jobId), 1);
    const [r, ref] = [resumed, reference].map(p => JSON.parse(lines(p.stdout).at(-1)!));
    for (const k of [
      'members',
      'test_accuracy',
      'test_loss',
      'hard_vote_test_accuracy',
      'average_test_loss',
      'best_member_test_accuracy',
    ])
      assert.equal(r[k], ref[k], k);
    const members = (dir: string) =>
      JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8')).member_results.map(
        (m: { name: string; test_loss: number }) => [m.name, m.test_loss],
      );
    assert.deepEqual(members(out), members(path.join(tmp, 'reference')));
  });
});
