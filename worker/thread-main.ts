// A cluster worker on a worker thread of the embedded run (cli/embedded.ts): the same worker as
// `fleet worker`, on the in-process bus through the MessagePort it was given. Log lines go to the parent;
// a 'stop' message from the parent stops it, and the thread then ends on its own.
import { parentPort, workerData, type MessagePort } from 'node:worker_threads';
import { inprocTransportFromPort } from '../bus/inproc-transport.ts';
import { startWorker } from './worker.ts';
import { taskCheckpointDir } from '../engine/ensemble/tasks.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';

export interface ThreadWorkerData {
  port: MessagePort;
  id: string;
  runtime: RuntimeOptions;
  /** Checkpoints of task T go to taskCheckpointDir(checkpointRoot, T) (the run serves a single job). */
  checkpointRoot: string;
  heartbeatMs: number;
  dataDir?: string;
}

const d = workerData as ThreadWorkerData;
const log = (line: string) => parentPort!.postMessage({ kind: 'log', line });
const bus = inprocTransportFromPort(d.port, {
  onError: (e, subject) => log(`bus: handler for ${subject} failed: ${(e as Error).message}`),
});
const worker = startWorker(bus, {
  id: d.id,
  runtime: d.runtime,
  dataDir: d.dataDir,
  heartbeatMs: d.heartbeatMs,
  log,
  checkpointDir: (_job, task) => taskCheckpointDir(d.checkpointRoot, task),
});
parentPort!.on('message', async (m: unknown) => {
  if (m !== 'stop') return;
  await worker.stop();
  await bus.close();
  parentPort!.close(); // nothing keeps the thread alive after this
});
