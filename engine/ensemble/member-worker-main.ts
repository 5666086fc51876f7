// Inside a worker thread: trains the task it was given and posts epochs, log lines and the result back.
import { parentPort, workerData } from 'node:worker_threads';
import { runMemberTask, type MemberTask } from './tasks.ts';
import type { RuntimeOptions } from '../runtime.ts';

const { task, runtime } = workerData as { task: MemberTask; runtime: RuntimeOptions };
try {
  const result = await runMemberTask(task, runtime, {
    // every 10th batch (and the last): enough for a progress bar, without flooding the channel
    onBatch: (taskId, info) => { if (info.batch % 10 === 0 || info.batch === info.batches) parentPort!.postMessage({ kind: 'batch', taskId, info }); },
    onEpoch: (taskId, metrics) => parentPort!.postMessage({ kind: 'epoch', taskId, metrics }),
    log: line => parentPort!.postMessage({ kind: 'log', line }),
  });
  const transfer = result.members.flatMap(m => [...m.params.data, ...m.buffers.data].map(a => a.buffer));
  parentPort!.postMessage({ kind: 'result', result }, transfer.filter((b, i, all) => all.indexOf(b) === i) as ArrayBuffer[]);
} catch (e) {
  parentPort!.postMessage({ kind: 'error', message: (e as Error).message });
}
