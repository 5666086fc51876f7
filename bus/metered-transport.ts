// Counts what a process sends and receives on the bus (fleet_bus_bytes_total, fleet_bus_messages_total) by
// wrapping its Transport, so the NATS and the in-process transports are metered the same way. The message
// kind comes from the subject (a small fixed set), not from decoding the payload: metering stays O(1).
import type { BusMessage, PublishOptions, SubscribeOptions, Subscription, Transport } from './transport.ts';
import { SUBJECTS } from './subjects.ts';

const KIND_BY_SUBJECT: Record<string, string> = {
  [SUBJECTS.workerAnnounce]: 'announce',
  [SUBJECTS.taskResult]: 'result',
  [SUBJECTS.jobSubmit]: 'submit',
  [SUBJECTS.taskProgress]: 'progress',
};
const KIND_BY_PREFIX: [string, string][] = [
  [`${SUBJECTS.workerHeartbeatPrefix}.`, 'heartbeat'],
  [`${SUBJECTS.taskLeasePrefix}.`, 'lease'],
  [`${SUBJECTS.jobProgressPrefix}.`, 'progress'],
  [`${SUBJECTS.jobDonePrefix}.`, 'done'],
  [`${SUBJECTS.tensorPrefix}.`, 'chunk'],
  [`${SUBJECTS.inferPrefix}.`, 'infer'],
  ['_INBOX.', 'reply'],
];

/** The message kind of a subject, for metric labels: one of a fixed set, 'other' for anything else. */
export function subjectKind(subject: string): string {
  const exact = KIND_BY_SUBJECT[subject];
  if (exact) return exact;
  for (const [prefix, kind] of KIND_BY_PREFIX) if (subject.startsWith(prefix)) return kind;
  return 'other';
}

type BusLabels = { direction: 'in' | 'out'; kind: string };

/** The two counters the bus needs (telemetry's Metrics has them): the bus depends on no metrics library. */
export interface BusMeter {
  busMessages: { inc(labels: BusLabels): void };
  busBytes: { inc(labels: BusLabels, value: number): void };
}

/** A Transport that counts every message through `inner` in `metrics`; otherwise identical to `inner`. */
export function meteredTransport(inner: Transport, metrics: BusMeter): Transport {
  const count = (direction: 'in' | 'out', subject: string, bytes: number) => {
    const labels = { direction, kind: subjectKind(subject) };
    metrics.busMessages.inc(labels);
    metrics.busBytes.inc(labels, bytes);
  };
  const incoming = (handler: (msg: BusMessage) => void) => (msg: BusMessage) => {
    count('in', msg.subject, msg.data.byteLength);
    return handler(msg);
  };
  return {
    get maxPayload() {
      return inner.maxPayload;
    },
    publish(subject: string, data: Uint8Array, opts?: PublishOptions) {
      inner.publish(subject, data, opts);
      count('out', subject, data.byteLength); // after: a refused publish (too large, closed) sent nothing
    },
    subscribe(subject: string, handler: (msg: BusMessage) => void, opts?: SubscribeOptions): Subscription {
      return inner.subscribe(subject, incoming(handler), opts);
    },
    async request(subject: string, data: Uint8Array, timeoutMs: number) {
      const answer = inner.request(subject, data, timeoutMs);
      count('out', subject, data.byteLength);
      const msg = await answer;
      count('in', msg.subject, msg.data.byteLength);
      return msg;
    },
    respond(msg: BusMessage, data: Uint8Array) {
      inner.respond(msg, data);
      count('out', msg.reply ?? '', data.byteLength);
    },
    flush: () => inner.flush(),
    close: () => inner.close(),
  };
}
