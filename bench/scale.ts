// `fleet bench scale`: how the cluster scales on this machine, over a local nats-server.
// (1) An ensemble of 4 CNN members, a fixed number of steps each, on 1 worker process vs 2 (1 ONNX Runtime
//     thread each): the speedup of the whole job (submit to done).
// (2) Data-parallel SimCLR with 2 worker processes: per step, the share of the wall time spent outside compute
//     (serialisation, transport, aggregation = wall - slowest shard of each phase - the coordinator's loss graph)
//     and the bytes sent per step (both directions).
// The coordinator runs in this process; the workers are `fleet worker` processes.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { startNatsServer } from './harness/nats-server.ts';
import { ProcGroup, waitFor, type FleetProc } from './harness/fleet-procs.ts';
import { connectNats } from '../bus/nats-transport.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { submitJob } from '../coordinator/client.ts';
import type { StepInfo } from '../coordinator/data-parallel-job.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import { SIMCLR_RECIPE } from '../engine/train/train-simclr.ts';
import type { JobSpec } from '../coordinator/coordinator.ts';
import type { DataParallelSpec } from '../engine/train/data-parallel.ts';
import { transportFloor } from './transport-floor.ts';
import { median } from './stats.ts';

export interface ScaleOptions {
  /** (1): training steps per member (batch 64). */
  memberSteps: number;
  /** (1): rounds of (1 worker, 2 workers), interleaved A B B A; 0 skips (1). */
  rounds: number;
  /** (2): data-parallel SimCLR steps (the first `warmupSteps` are not counted) and the global batch. */
  dpSteps: number;
  warmupSteps: number;
  dpBatch: number;
  log: (line: string) => void;
}

const round = (x: number, d = 3) => Math.round(x * 10 ** d) / 10 ** d;
const medianTimeline = (ts: Record<string, number>[]) =>
  Object.fromEntries(Object.keys(ts[0] ?? {}).map(k => [k, round(median(ts.map(t => t[k] ?? 0)), 1)]));

export async function benchScale(o: ScaleOptions) {
  const nats = await startNatsServer();
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-bench-scale-'));
  const group = new ProcGroup();
  const load = [os.loadavg()[0]];
  try {
    const bus = await connectNats(nats.url, { name: 'bench-coordinator' });
    const steps: StepInfo[] = [];
    const coordinator = new Coordinator(bus, {
      stateDir: path.join(tmp, 'state'),
      workerTimeoutMs: 5_000,
      dataParallel: {
        runtime: { threads: 1 },
        onStep: s => steps.push({ ...s, gradient: new Float32Array(0), params: [] }),
      },
    });
    await coordinator.start();
    const client = await connectNats(nats.url, { name: 'bench-client' });
    const live = () => [...coordinator.workers.values()].filter(w => w.state !== 'lost').map(w => w.id);
    const startWorkers = async (ids: string[]) => {
      await Promise.all(ids.map(id => group.worker(nats.url, id)));
      await waitFor(() => ids.every(id => live().includes(id)), 30_000, `workers ${ids}`);
    };

    // (1) ensemble speedup: the same job on 1 worker, then on 2
    const ensemble: JobSpec = {
      kind: 'voting',
      model: 'cnn',
      members: 4,
      epochs: 1,
      batchSize: 64,
      recipe: { ...RECIPES.fleet, batchSize: 64 },
      seed: 1,
      valFraction: 0,
      dataset: 'mnist',
      limitTrain: 64 * o.memberSteps,
      limitTest: 200,
      selection: { objective: 'loss', initSize: 0, maxIter: 50, bags: 1 },
    };
    // a member's training seconds as its worker reports them (epoch events), by setting: shows co-running slowdown
    const memberSeconds: Record<1 | 2, number[]> = { 1: [], 2: [] };
    const timeJob = async (label: string, spec: JobSpec, into?: number[]) => {
      const t0 = performance.now();
      const at = () => `+${((performance.now() - t0) / 1000).toFixed(2)} s`;
      await submitJob(
        client,
        spec,
        line => o.log(`${label} ${at()}: ${line}`),
        10_000,
        (p, m) => {
          if (m.event === 'leased') o.log(`${label} ${at()}: ${p.taskId} leased to ${m.worker}`);
          else if (typeof m.seconds === 'number') {
            into?.push(m.seconds);
            o.log(`${label} ${at()}: ${p.taskId} trained in ${m.seconds.toFixed(2)} s`);
          }
        },
      );
      return (performance.now() - t0) / 1000;
    };
    // A fresh worker process's first task also loads the data set and warms the JIT (about 0.4 s here): each new
    // worker runs a small job first, so that both settings measure long-lived workers, as a cluster has them.
    const warmUp = () => timeJob('warm-up', { ...ensemble, members: 2, limitTrain: 64 * 2, limitTest: 50 });
    // interleaved A B B A ... so that a change in the machine's load hits both settings alike
    const times: Record<1 | 2, number[]> = { 1: [], 2: [] };
    await startWorkers(['scale-w1']);
    await warmUp();
    let second: FleetProc | null = null;
    for (let r = 0; r < o.rounds; r++) {
      for (const k of (r % 2 === 0 ? [1, 2] : [2, 1]) as (1 | 2)[]) {
        if (k === 2 && !second) {
          await startWorkers(['scale-w2']);
          second = group.procs.find(p => p.name === 'scale-w2' && p.alive)!;
          await warmUp();
        }
        if (k === 1 && second) {
          await second.kill();
          second = null;
          await waitFor(
            () => !live().includes('scale-w2') || coordinator.workers.get('scale-w2')?.state === 'lost',
            60_000,
            'scale-w2 to be gone',
          );
        }
        const s = await timeJob(`${k} worker${k > 1 ? 's' : ''}`, ensemble, memberSeconds[k]);
        times[k].push(s);
        o.log(`round ${r + 1}: ensemble of 4 on ${k} worker(s): ${s.toFixed(1)} s`);
      }
    }
    if (!second) await startWorkers(['scale-w2']);
    const one = times[1].reduce((a, b) => a + b, 0) / o.rounds,
      two = times[2].reduce((a, b) => a + b, 0) / o.rounds;
    o.log(
      `ensemble of 4: ${one.toFixed(1)} s on 1 worker, ${two.toFixed(1)} s on 2 (speedup ${(one / two).toFixed(2)}x)`,
    );
    load.push(os.loadavg()[0]);

    // (2) data-parallel SimCLR, 2 shards on the 2 workers
    const dp: DataParallelSpec = {
      kind: 'data-parallel',
      model: 'simclr',
      shards: 2,
      epochs: 1,
      batchSize: o.dpBatch,
      recipe: { ...SIMCLR_RECIPE, batchSize: o.dpBatch },
      seed: 1,
      dataset: 'mnist',
      limitTrain: o.dpBatch * o.dpSteps,
      limitTest: 100,
      valFraction: 0,
      probeEpochs: 1,
    };
    await submitJob(
      client,
      dp,
      line => o.log(`data-parallel: ${line}`),
      10_000,
      (p, m) => {
        if (m.event === 'step')
          o.log(`data-parallel: step ${m.step}/${m.steps}, loss ${p.loss.toFixed(4)}, ${m.wall_ms} ms`);
      },
    );
    load.push(os.loadavg()[0]);
    const counted = steps.slice(o.warmupSteps);
    const outside = counted.map(s => 1 - s.computeMs / s.wallMs);
    const computeMs = median(counted.map(s => s.computeMs));
    // (3) the same bytes through the same nats-server with nothing else to do: what transport alone costs here
    const floor = await transportFloor(nats.url, Math.round(median(counted.map(s => s.bytesIn)) / 2), 2, 7);
    o.log(
      `transport floor: ${(floor.payload_bytes / 2 ** 20).toFixed(1)} MiB to 2 echo processes and back: ${floor.round_trip_ms_median} ms`,
    );
    const result = {
      ensemble: {
        members: 4,
        steps_per_member: o.memberSteps,
        batch_size: 64,
        rounds: o.rounds,
        seconds_1_worker: times[1].map(x => round(x, 2)),
        seconds_2_workers: times[2].map(x => round(x, 2)),
        speedup: round(one / two, 3),
        target: 1.8,
        // median of the members' own training seconds: the same on 2 workers as on 1 unless co-running slows them
        member_seconds_median_1_worker: round(median(memberSeconds[1]), 3),
        member_seconds_median_2_workers: round(median(memberSeconds[2]), 3),
        // the speedup if everything but the members' training took no time: 2 x (alone / side by side)
        speedup_ceiling_from_member_seconds: round((2 * median(memberSeconds[1])) / median(memberSeconds[2]), 3),
        warm_up: 'each new worker process runs a 2-member job of 2 steps first (not timed)',
      },
      data_parallel_simclr: {
        workers: 2,
        shards: 2,
        global_batch: o.dpBatch,
        steps_counted: counted.length,
        warmup_steps: o.warmupSteps,
        step_ms_median: round(median(counted.map(s => s.wallMs)), 1),
        compute_ms_median: round(computeMs, 1),
        aggregation_ms_median: round(median(counted.map(s => s.aggregationMs)), 1),
        outside_compute_share_median: round(median(outside)),
        outside_compute_share_max: round(Math.max(...outside)),
        target_share: 0.1,
        bytes_per_step: Math.round(median(counted.map(s => s.bytesOut + s.bytesIn))),
        bytes_coordinator_out_per_step: Math.round(median(counted.map(s => s.bytesOut))),
        bytes_workers_out_per_step: Math.round(median(counted.map(s => s.bytesIn))),
        // the critical path of a step, interval by interval (bus/dp-timeline.ts), median over the counted steps
        timeline_ms_median: medianTimeline(counted.map(s => s.timeline.path)),
        bus_handler_ms_median: medianTimeline(counted.map(s => s.timeline.bus)),
        // one step's parameter broadcast and the gradients back, as bytes only (bench/transport-floor.ts); the
        // share of a step it would take if this were all that happened outside compute
        transport_floor: {
          ...floor,
          share_of_step: round(floor.round_trip_ms_median / (floor.round_trip_ms_median + computeMs)),
        },
        per_step: counted.map(s => ({
          step: s.step,
          wall_ms: round(s.wallMs, 1),
          compute_ms: round(s.computeMs, 1),
          aggregation_ms: round(s.aggregationMs, 1),
        })),
      },
      load_average_1min: load.map(x => round(x, 2)),
      caveat:
        "the 2-core machine is shared with other engineers' test runs; see load_average_1min (before, after (1), after (2))",
    };
    await client.close();
    await coordinator.stop();
    await bus.close();
    return result;
  } finally {
    await group.killAll();
    await nats.dispose();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}
