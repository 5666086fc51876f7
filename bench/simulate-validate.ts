// Validation of the scale model (bench/simulate.ts) against real data-parallel SimCLR steps over a limited link:
// two network namespaces joined by one veth pair, "hub" (nats-server and the coordinator, i.e. the parameter
// server's host) and "workers" (2 `fleet worker` processes), `tc qdisc tbf` limiting the rate on both ends.
// Every byte between the coordinator and the workers crosses that link, as on the parameter server's link of
// the model. Latency is not added: this kernel has no netem (`tc qdisc add ... netem` answers "Specified qdisc
// kind is unknown" and there are no modules to load), so the model's latency per hop is 0 here.
// For each setting the parent (this script, as root) sets tc and runs a child in the hub namespace that runs the
// job in-process (as `fleet bench scale` does) and reports each step's wall time, compute and aggregation; the
// model then predicts the step from that run's own compute plus its transfers at the link's rate, with the
// transport costs of bench/results/scale.json (as `fleet bench simulate`). Traffic stays inside the namespaces
// created here, which are deleted at the end (and on exit).
//   sudo npx tsx bench/simulate-validate.ts [--steps N] [--out FILE]
// (results: bench/results/simulate-validation.json; then `fleet bench simulate --docs` copies the table)
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { spawn, spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parseArgs } from 'node:util';
import { ProcGroup, waitFor } from './harness/fleet-procs.ts';
import { connectNats } from '../bus/nats-transport.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { submitJob } from '../coordinator/client.ts';
import type { StepInfo } from '../coordinator/data-parallel-job.ts';
import type { DataParallelSpec } from '../engine/train/data-parallel.ts';
import { SIMCLR_RECIPE } from '../engine/train/train-simclr.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { provenance } from './results-file.ts';
import { readScaleResults, measureMessageRoundTrip, modelInputs } from './simulate-inputs.ts';
import { predict, type ModelInputs } from './simulate.ts';
import { median } from './stats.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const SUBNET = '10.213.9'; // private, used only inside the namespaces created here
const HUB = `${SUBNET}.1`,
  NATS_PORT = 4222,
  BATCH = 256,
  WORKERS = 2,
  WARMUP = 2;
/** The link settings measured: none (loopback speed), about the software's own rate (1 Gbit/s), and below it. */
const SETTINGS: { gbit: number | null; delayMs: number }[] = [
  { gbit: null, delayMs: 0 },
  { gbit: 1, delayMs: 0 },
  { gbit: 0.5, delayMs: 0 },
  { gbit: 0.3, delayMs: 0 },
  { gbit: 0.2, delayMs: 0 },
  { gbit: 0.1, delayMs: 0 },
];

export interface ChildResult {
  steps: {
    wall_ms: number;
    compute_ms: number;
    loss_ms: number;
    sum_ms: number;
    optimizer_ms: number;
    bytes: number;
  }[];
}

/** In the hub namespace: nats-server, the coordinator in this process, 2 workers in the workers namespace. */
async function child(workersNs: string, steps: number): Promise<void> {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-validate-'));
  const nats = spawn('nats-server', ['-a', HUB, '-p', String(NATS_PORT)], { stdio: 'ignore' });
  const group = new ProcGroup();
  const url = `nats://${HUB}:${NATS_PORT}`;
  try {
    const bus = await waitFor(
      () => connectNats(url, { name: 'validate-coordinator' }).catch(() => null),
      20_000,
      'nats-server',
    );
    const infos: StepInfo[] = [];
    const coordinator = new Coordinator(bus, {
      stateDir: path.join(tmp, 'state'),
      workerTimeoutMs: 60_000,
      dataParallel: {
        runtime: { threads: 1 },
        onStep: s => infos.push({ ...s, gradient: new Float32Array(0), params: [] }),
      },
    });
    await coordinator.start();
    const ids = ['v-w1', 'v-w2'];
    await Promise.all(ids.map(id => group.worker(url, id, [], ['ip', 'netns', 'exec', workersNs])));
    await waitFor(
      () =>
        ids.every(id => {
          const w = coordinator.workers.get(id);
          return w && w.state !== 'lost';
        }),
      30_000,
      'workers',
    );
    const client = await connectNats(url, { name: 'validate-client' });
    const spec: DataParallelSpec = {
      kind: 'data-parallel',
      model: 'simclr',
      shards: WORKERS,
      epochs: 1,
      batchSize: BATCH,
      recipe: { ...SIMCLR_RECIPE, batchSize: BATCH },
      seed: 1,
      dataset: 'mnist',
      limitTrain: BATCH * steps,
      limitTest: 100,
      valFraction: 0,
      probeEpochs: 1,
    };
    await submitJob(
      client,
      spec,
      line => process.stderr.write(`${line}\n`),
      30_000,
      (_, m) => {
        if (m.event === 'step') process.stderr.write(`step ${m.step}/${m.steps}: ${m.wall_ms} ms\n`);
      },
    );
    const path_ = (s: StepInfo, k: string) => (s.timeline.path as Record<string, number>)[k] ?? 0;
    const result: ChildResult = {
      steps: infos.slice(WARMUP).map(s => ({
        wall_ms: s.wallMs,
        compute_ms: s.computeMs,
        loss_ms: path_(s, 'loss'),
        sum_ms: path_(s, 'aggregate_sum'),
        optimizer_ms: path_(s, 'optimizer'),
        bytes: s.bytesIn + s.bytesOut,
      })),
    };
    process.stdout.write(`${JSON.stringify(result)}\n`);
    await client.close();
    await coordinator.stop();
    await bus.close();
  } finally {
    await group.killAll();
    nats.kill('SIGKILL');
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

function run(cmd: string, args: string[]): void {
  const r = spawnSync(cmd, args, { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`${cmd} ${args.join(' ')}: ${r.stderr.trim() || `exit ${r.status}`}`);
}

/** The two namespaces and their veth pair; destroy() removes both (the veth goes with them). */
function link(id: string) {
  const hub = `${id}-vhub`,
    wk = `${id}-vwk`;
  const destroy = () => {
    for (const ns of [hub, wk]) spawnSync('ip', ['netns', 'del', ns], { stdio: 'ignore' });
  };
  process.on('exit', destroy);
  run('ip', ['netns', 'add', hub]);
  run('ip', ['netns', 'add', wk]);
  run('ip', ['-n', hub, 'link', 'add', 'eth0', 'type', 'veth', 'peer', 'name', 'eth0', 'netns', wk]);
  for (const [ns, addr] of [
    [hub, HUB],
    [wk, `${SUBNET}.2`],
  ]) {
    run('ip', ['-n', ns, 'addr', 'add', `${addr}/24`, 'dev', 'eth0']);
    run('ip', ['-n', ns, 'link', 'set', 'eth0', 'up']);
    run('ip', ['-n', ns, 'link', 'set', 'lo', 'up']);
  }
  /** Both directions: a token bucket at the rate (none: unlimited), its queue long enough not to drop a transfer. */
  const shape = (gbit: number | null) => {
    for (const ns of [hub, wk]) {
      spawnSync('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'del', 'dev', 'eth0', 'root'], { stdio: 'ignore' });
      if (gbit === null) continue;
      const tbf = ['tbf', 'rate', `${Math.round(gbit * 1000)}mbit`, 'burst', '128kb', 'latency', '2000ms'];
      run('ip', ['netns', 'exec', ns, 'tc', 'qdisc', 'add', 'dev', 'eth0', 'root', ...tbf]);
    }
  };
  return { hub, wk, shape, destroy };
}

/** The model's prediction of the parameter server's step for a run: its own compute, the link's transfers. */
export function predictRun(m: ModelInputs, r: ChildResult, gbit: number | null, delayMs: number): number {
  const s = r.steps;
  const measured: ModelInputs = {
    ...m,
    // this run's own compute and aggregation (they do not depend on the network), per image as the model takes them
    computeMsPerImage: (median(s.map(x => x.compute_ms)) - median(s.map(x => x.loss_ms))) / (BATCH / WORKERS),
    lossMs: median(s.map(x => x.loss_ms)),
    lossGlobalBatch: BATCH,
    sumMsPerByte: median(s.map(x => x.sum_ms)) / (WORKERS * m.paramBytes),
    optimizerMs: median(s.map(x => x.optimizer_ms)),
  };
  // no rate limit: the software is the bottleneck (a wire much faster than it)
  return predict(measured, 'ps', WORKERS, { gbitPerSecond: gbit ?? 1e6, latencyMs: delayMs }, BATCH / WORKERS).step_ms;
}

async function main(): Promise<void> {
  const { values } = parseArgs({
    options: { child: { type: 'string' }, steps: { type: 'string' }, out: { type: 'string' } },
  });
  const steps = Number(values.steps ?? 6);
  if (!Number.isInteger(steps) || steps <= WARMUP)
    throw new Error(`--steps: an integer above ${WARMUP}, got ${values.steps}`);
  if (values.child) return child(values.child, steps);
  if (process.getuid?.() !== 0) throw new Error('bench/simulate-validate.ts: network namespaces and tc need root');
  const out = path.resolve(values.out ?? path.join(ROOT, 'bench', 'results', 'simulate-validation.json'));
  const scaleFile = path.join(ROOT, 'bench', 'results', 'scale.json');
  const measured = readScaleResults(scaleFile);
  const messageRoundTrip = measured.messageRoundTripMs ?? (await measureMessageRoundTrip(measured.floor.receivers));
  const { inputs } = modelInputs(measured, messageRoundTrip, 'bench/results/scale.json');
  const net = link(`fnt${process.pid}`);
  const rows = [];
  try {
    for (const s of SETTINGS) {
      net.shape(s.gbit);
      process.stderr.write(`link: ${s.gbit === null ? 'unlimited' : `${s.gbit} Gbit/s`}\n`);
      const r = spawnSync(
        'ip',
        [
          'netns',
          'exec',
          net.hub,
          process.execPath,
          '--import',
          'tsx',
          fileURLToPath(import.meta.url),
          '--child',
          net.wk,
          '--steps',
          String(steps),
        ],
        { cwd: ROOT, encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], timeout: 300_000 },
      );
      if (r.status !== 0)
        throw new Error(
          `the run over ${JSON.stringify(s)} failed (exit ${r.status}${r.signal ? `, ${r.signal}` : ''})`,
        );
      const res = JSON.parse(r.stdout.trim().split('\n').pop()!) as ChildResult;
      const measuredStep = median(res.steps.map(x => x.wall_ms));
      const predicted = predictRun(inputs, res, s.gbit, s.delayMs);
      rows.push({
        gbit_per_second: s.gbit,
        delay_ms: s.delayMs,
        steps_counted: res.steps.length,
        measured_step_ms: round(measuredStep),
        predicted_step_ms: round(predicted),
        error: round((predicted - measuredStep) / measuredStep, 3),
        compute_ms_median: round(median(res.steps.map(x => x.compute_ms))),
        bytes_per_step: Math.round(median(res.steps.map(x => x.bytes))),
        wall_ms: res.steps.map(x => round(x.wall_ms)),
      });
      process.stderr.write(`  measured ${round(measuredStep)} ms, predicted ${round(predicted)} ms\n`);
    }
  } finally {
    net.destroy();
  }
  const result = {
    bench: 'simulate-validation',
    ...provenance(ROOT, [out]),
    shaping: 'tc qdisc tbf on both ends of one veth pair (no netem here)',
    design: 'ps',
    workers: WORKERS,
    global_batch: BATCH,
    warmup_steps: WARMUP,
    transport_inputs: {
      from: 'bench/results/scale.json',
      software_ms_per_byte: inputs.softwareMsPerByte,
      message_ms: inputs.messageMs,
    },
    load_average_1min: os.loadavg()[0],
    rows,
  };
  writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(`wrote ${out}\n`);
}

const round = (x: number, d = 1) => Math.round(x * 10 ** d) / 10 ** d;

if (process.argv[1] && path.resolve(process.argv[1]) === fileURLToPath(import.meta.url)) {
  main().then(
    () => process.exit(0),
    e => {
      process.stderr.write(`${(e as Error).message}\n`);
      process.exit(1);
    },
  );
}
