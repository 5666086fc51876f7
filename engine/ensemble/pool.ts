// Runs member tasks: one after another in this thread, or on worker_threads (each with its share of the cores),
// so that members train in parallel.
import * as os from 'node:os';
import { Worker } from 'node:worker_threads';
import { runMemberTask, type MemberTask, type MemberResult, type TaskHooks } from './tasks.ts';
import type { RuntimeOptions } from '../runtime.ts';

export interface PoolOptions extends TaskHooks {
  /** Worker threads (0 or 1: train in this thread). */
  workers: number;
  runtime: RuntimeOptions;
}

export async function runPool(tasks: MemberTask[], o: PoolOptions): Promise<MemberResult[]> {
  if (o.workers <= 1) {
    const results: MemberResult[] = [];
    for (const t of tasks) results.push(await runMemberTask(t, o.runtime, o));
    return results;
  }
  const threads = Math.max(1, Math.floor((o.runtime.threads ?? os.availableParallelism()) / o.workers));
  const results = new Array<MemberResult>(tasks.length);
  let next = 0;
  const lane = async () => {
    while (next < tasks.length) {
      const i = next++;
      results[i] = await inWorker(tasks[i], { ...o.runtime, threads }, o);
    }
  };
  await Promise.all(Array.from({ length: Math.min(o.workers, tasks.length) }, lane));
  return results;
}

function inWorker(task: MemberTask, runtime: RuntimeOptions, hooks: TaskHooks): Promise<MemberResult> {
  return new Promise((resolve, reject) => {
    const w = new Worker(new URL('./member-worker.js', import.meta.url), { workerData: { task, runtime } });
    let done = false;
    w.on('message', (m: { kind: string; [k: string]: any }) => {
      if (m.kind === 'batch') hooks.onBatch?.(m.taskId, m.info);
      else if (m.kind === 'epoch') hooks.onEpoch?.(m.taskId, m.metrics);
      else if (m.kind === 'log') hooks.log?.(m.line);
      else if (m.kind === 'result') { done = true; resolve(m.result); }
      else if (m.kind === 'error') { done = true; reject(new Error(`${task.id}: ${m.message}`)); }
    });
    w.on('error', e => { done = true; reject(new Error(`${task.id}: worker failed: ${e.message}`)); });
    w.on('exit', code => { if (!done) reject(new Error(`${task.id}: worker exited with code ${code} before finishing`)); });
  });
}
