// A Transport that counts the bytes it publishes (data-parallel jobs report bytes sent per step).
import type { Transport } from './transport.ts';

export function countingTransport(bus: Transport, count: (bytes: number) => void): Transport {
  return {
    get maxPayload() {
      return bus.maxPayload;
    },
    publish: (subject, data, opts) => {
      count(data.length);
      bus.publish(subject, data, opts);
    },
    subscribe: (subject, handler, opts) => bus.subscribe(subject, handler, opts),
    request: (subject, data, timeoutMs) => {
      count(data.length);
      return bus.request(subject, data, timeoutMs);
    },
    respond: (msg, data) => {
      count(data.length);
      bus.respond(msg, data);
    },
    flush: () => bus.flush(),
    close: () => bus.close(),
  };
}
