// A tiny bus client on a worker thread: connects through the port it was given, answers
// requests, echoes subscriptions, and can call a service on the main thread.
import { workerData } from 'node:worker_threads';
import { inprocTransportFromPort } from '../../bus/inproc-transport.ts';

const bus = inprocTransportFromPort(workerData.port);
const enc = new TextEncoder();
const dec = new TextDecoder();

// Request/reply served from the worker.
bus.subscribe('worker.echo.*', m => bus.respond(m, enc.encode(`echo:${dec.decode(m.data)}`)));
// Plain subscription: forwards what it receives back to the main thread.
bus.subscribe('worker.inbox', m => bus.publish('main.seen', m.data));
// The worker asks the main thread for something, and reports the answer.
bus.subscribe('worker.ask', async m => {
  const answer = await bus.request('main.service', m.data, 5000);
  bus.publish('main.answer', answer.data);
});
bus.subscribe('worker.stop', async () => {
  await bus.close();
});
await bus.flush(); // our subscriptions are registered with the hub before we say we are ready
bus.publish('main.ready', new Uint8Array(0));
