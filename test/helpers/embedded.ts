// The embedded default's shape in the test process: a Coordinator and workers on the in-process bus, each
// with its own metrics registry (as separate processes would have), plus a job to wait for.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { InprocHub } from '../../bus/inproc-transport.ts';
import { Coordinator, type JobSpec, type JobRecord } from '../../coordinator/coordinator.ts';
import { startWorker, type WorkerHandle } from '../../worker/worker.ts';
import { createMetrics } from '../../telemetry/metrics.ts';
import { RECIPES } from '../../engine/train/train-classifier.ts';
import { waitFor } from '../../bench/harness/fleet-procs.ts';

export interface Embedded {
  hub: InprocHub;
  c: Coordinator;
  workers: WorkerHandle[];
  stateDir: string;
  stop(): Promise<void>;
}

export function startEmbedded(
  workers: number,
  opts: { batchProgressMs?: number; workerIds?: string[] } = {},
): Embedded {
  const stateDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-embedded-'));
  const hub = new InprocHub();
  const c = new Coordinator(hub.transport(), { stateDir, tickMs: 50, metrics: createMetrics() });
  c.start();
  const ws = Array.from({ length: workers }, (_, i) =>
    startWorker(hub.transport(), {
      id: opts.workerIds?.[i] ?? `w${i + 1}`,
      runtime: { threads: 1 },
      heartbeatMs: 200,
      metrics: createMetrics(),
      batchProgressMs: opts.batchProgressMs,
    }),
  );
  return {
    hub,
    c,
    workers: ws,
    stateDir,
    async stop() {
      for (const w of ws) await w.stop();
      await c.stop();
      hub.close();
      fs.rmSync(stateDir, { recursive: true, force: true });
    },
  };
}

/** A tiny CNN ensemble job (limitTrain images per member, batch 32, threads 1). */
export function tinyJob(
  kind: 'voting' | 'selection',
  members: number,
  epochs: number,
  limitTrain: number,
  limitTest: number,
): JobSpec {
  return {
    kind,
    model: 'cnn',
    members,
    epochs,
    batchSize: 32,
    recipe: { ...RECIPES.fleet, batchSize: 32 },
    seed: 1,
    valFraction: kind === 'selection' ? 0.25 : 0,
    dataset: 'mnist',
    limitTrain,
    limitTest,
    selection: { objective: 'loss', initSize: 0, maxIter: 20, bags: 1 },
  };
}

export async function waitJobDone(c: Coordinator, job: JobRecord, timeoutMs = 120_000): Promise<JobRecord> {
  await waitFor(() => job.state !== 'running', timeoutMs, `job ${job.id}`);
  if (job.state !== 'done') throw new Error(`job ${job.id} ${job.state}: ${job.error}`);
  return job;
}
