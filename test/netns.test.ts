// fleet across hosts: nats-server, the coordinator, two workers and the submitting client each in their own
// Linux network namespace with their own address on a private /24 (veth pairs to a bridge in a namespace of
// its own), so every message crosses a real network stack between "machines". In the middle of the job one
// worker's cable is pulled (ip link set ... down on its switch port): the coordinator loses it after
// --worker-timeout-ms, leases its member to the other worker, and the job finishes with every member, equal
// to the same job trained in one process. Needs root and iproute2 (skipped, saying why, without them).
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Lan, netnsUnavailable, cleanLeftovers } from './helpers/netns.ts';
import { natsServerAvailable } from '../bench/harness/nats-server.ts';
import { lines } from './helpers/cli.ts';
import { ProcGroup, WaitAbort, waitFor, readJob, trainingsOf, type FleetProc } from '../bench/harness/fleet-procs.ts';

// a private subnet used only inside this test's own namespaces
const SUBNET = '10.213.7';
const JOB = [
  '--members',
  '3',
  '--epochs',
  '1',
  '--limit-train',
  '300',
  '--limit-test',
  '100',
  '--batch-size',
  '64',
  '--seed',
  '11',
  '--json',
];
const WORKER_TIMEOUT_MS = 3000;

const metricsOf = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'metrics.json'), 'utf8'));
const lastJson = (stdout: string) => JSON.parse(lines(stdout).at(-1)!);

describe("multi-host: coordinator, workers and NATS in separate network namespaces, a worker's link cut mid-job", function () {
  this.timeout(300_000);
  const unavailable = netnsUnavailable();
  let lan: Lan | null = null;
  let nats: ChildProcess | null = null;
  let natsLog = '';
  let group: ProcGroup;
  let tmp: string;

  before(function () {
    if (unavailable) {
      console.log(`      skipped: ${unavailable}`);
      this.skip();
    }
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server)');
    const stale = cleanLeftovers();
    if (stale.length) console.log(`      removed namespaces left by earlier runs: ${stale.join(', ')}`);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-netns-'));
    group = new ProcGroup();
    lan = new Lan(SUBNET);
    lan.createSwitch();
    lan.addHost('nats', 1);
    lan.addHost('coord', 2);
    lan.addHost('w1', 11);
    lan.addHost('w2', 12);
    lan.addHost('client', 20);
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed' || process.env.FLEET_TEST_LOGS) {
      process.stderr.write(
        `\nprocesses of "${this.currentTest?.title}":\n${group?.describe()}\n----- nats-server\n${natsLog.slice(-4000)}\n`,
      );
    }
  });

  after(async () => {
    await group?.killAll();
    if (nats && nats.exitCode === null && nats.signalCode === null) {
      const gone = new Promise(r => nats!.once('exit', r));
      nats.kill('SIGKILL');
      await gone;
    }
    if (lan) {
      lan.destroy();
      const left = lan.existing();
      lan = null;
      assert.deepEqual(left, [], `network namespaces left behind: ${left.join(', ')}`);
    }
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('an ensemble job finishes with all members after one worker is cut off, equal to the single-process run', async () => {
    const l = lan!;
    const natsUrl = `nats://${l.host('nats').addr}:4222`;

    // the single-process reference, in this (the test's own) namespace, meanwhile
    const localOut = path.join(tmp, 'local');
    const local = group.spawn('local train', ['train', 'cnn', ...JOB, '--threads', '1', '--out', localOut]);

    // nats-server on its own host, listening only on that host's address
    nats = spawn(
      l.exec('nats')[0],
      [...l.exec('nats').slice(1), 'nats-server', '-a', l.host('nats').addr, '-p', '4222'],
      { stdio: ['ignore', 'ignore', 'pipe'] },
    );
    nats.stderr!.setEncoding('utf8').on('data', (d: string) => {
      natsLog = (natsLog + d).slice(-100_000);
    });
    await waitFor(
      () => {
        if (nats!.exitCode !== null) throw new WaitAbort(`nats-server exited: ${natsLog}`);
        return /Server is ready/.test(natsLog);
      },
      20_000,
      'nats-server in its namespace',
    );

    const stateDir = path.join(tmp, 'state');
    const coord = group.spawn(
      'coordinator',
      [
        'coordinator',
        '--nats',
        natsUrl,
        '--state',
        stateDir,
        '--http',
        `${l.host('coord').addr}:8080`,
        '--worker-timeout-ms',
        String(WORKER_TIMEOUT_MS),
      ],
      undefined,
      l.exec('coord'),
    );
    await coord.waitForLog(
      new RegExp(`coordinator: state .*, http://${l.host('coord').addr.replace(/\./g, '\\.')}:8080/api/cluster`),
    );
    const workers: Record<string, FleetProc> = {};
    for (const id of ['w1', 'w2']) workers[id] = await group.worker(natsUrl, id, [], l.exec(id));
    for (const id of ['w1', 'w2']) await coord.waitForLog(new RegExp(`worker ${id} joined \\(cpu, 1 threads`));

    const client = group.spawn(
      'client',
      ['train', 'cnn', ...JOB, '--nats', natsUrl, '--out', path.join(tmp, 'client-out')],
      undefined,
      l.exec('client'),
    );

    // w2 starts training a member: pull its cable
    const m = await workers.w2.waitForLog(/task (\S+) of job (\S+) \(attempt 1\): training/, 120_000);
    const [victim, jobId] = [m[1], m[2]];
    l.cut('w2');
    assert.equal(l.linkUp('w2'), false);

    await coord.waitForLog(new RegExp(`worker w2 lost \\(no heartbeat`), 60_000);
    await coord.waitForLog(
      new RegExp(`task ${victim}: back in the queue \\((worker w2 lost|no heartbeat of w2 listed it)`),
      10_000,
    );
    const exit = await waitFor(
      () => {
        if (!coord.alive || !workers.w1.alive) throw new WaitAbort('the coordinator or w1 died');
        return client.exit;
      },
      240_000,
      'the client to finish the job',
      200,
    );
    assert.equal(exit.code, 0, `the client failed:\n${client.stderr}`);
    const summary = lastJson(client.stdout);

    // every member done; the cut worker's member was trained again, once, by w1
    const job = readJob(stateDir, jobId)!;
    assert.equal(job.state, 'done');
    assert.equal(job.tasks.length, 3);
    assert.ok(
      job.tasks.every(t => t.state === 'done'),
      JSON.stringify(job.tasks),
    );
    const t = job.tasks.find(x => x.task.id === victim)!;
    assert.deepEqual([t.worker, t.attempts], ['w1', 2], `task ${victim} after the cut`);
    assert.equal(trainingsOf(workers.w1, victim, jobId), 1);
    assert.ok(workers.w2.alive, 'the cut-off worker did not crash');

    // the same results as one process computing the same job
    assert.equal((await local.exited).code, 0, `local run failed:\n${local.stderr}`);
    const ref = lastJson(local.stdout);
    assert.equal(summary.members, 3);
    for (const k of ['test_accuracy', 'test_loss', 'average_test_loss', 'best_member_test_accuracy'])
      assert.equal(summary[k], ref[k], k);
    const members = (dir: string) =>
      (metricsOf(dir).member_results as { name: string; test_loss: number }[]).map(x => [x.name, x.test_loss]);
    assert.deepEqual(members(summary.coordinator_out), members(localOut));
  });
});
