// Every message a process takes off the bus goes through here: decoded, checked for the expected kind, and
// handed on; anything dropped (here or by the handler's own checks: wrong sender, stale lease, ...) is counted
// by kind and reason in one counter (fleet_bus_rejected_total) and logged, at a bounded rate.
import { decodeEnvelope, type BodyKind, type BodyMap, type Envelope } from './codec.ts';
import type { BusMessage, SubscribeOptions, Subscription, Transport } from './transport.ts';

/** Why a message was dropped: a fixed set, because each is a metric label value. */
export const REJECT_REASONS = [
  'malformed',
  'wrong_kind',
  'bad_id',
  'unknown_job',
  'unknown_task',
  'unknown_worker',
  'not_leased',
  'wrong_worker',
  'wrong_sender',
  'wrong_token',
  'stale_attempt',
  'spec_mismatch',
  'bad_transfer',
  'over_capacity',
  'duplicate',
] as const;
export type RejectReason = (typeof REJECT_REASONS)[number];

/** The counters rejections go to (telemetry's Metrics has them; the bus depends on no metrics library). */
export interface RejectCounters {
  rejected: { inc(labels: { kind: string; reason: string }): void };
  /** Messages that failed to decode (reason malformed or wrong_kind), the older per-kind counter. */
  malformed: { inc(labels: { kind: string }): void };
}

/** Log lines per (kind, reason) per window; beyond them a flood is summed up, not printed line by line. */
const LOG_LINES = 50;
const LOG_WINDOW_MS = 10_000;

export class Rejections {
  /** Totals by `kind/reason`, for stats views and tests. */
  readonly counts = new Map<string, number>();
  private readonly logged = new Map<string, { since: number; lines: number; suppressed: number }>();

  constructor(
    private readonly o: {
      counters?: RejectCounters;
      log?: (line: string) => void;
      onReject?: (reason: RejectReason) => void;
    } = {},
  ) {}

  /** Counts and logs one dropped message; kind is the expected message kind (a code constant, not input). */
  reject(kind: string, reason: RejectReason, detail: string): void {
    const key = `${kind}/${reason}`;
    this.counts.set(key, (this.counts.get(key) ?? 0) + 1);
    this.o.counters?.rejected.inc({ kind, reason });
    if (reason === 'malformed' || reason === 'wrong_kind') this.o.counters?.malformed.inc({ kind });
    this.o.onReject?.(reason);
    this.logLine(
      key,
      reason === 'malformed' || reason === 'wrong_kind'
        ? `dropped a malformed ${kind} message: ${detail}`
        : `rejected a ${kind} message (${reason}): ${detail}`,
    );
  }

  /** How many messages were rejected for this reason (any kind), or in all. */
  count(reason?: RejectReason): number {
    let n = 0;
    for (const [key, v] of this.counts) if (!reason || key.endsWith(`/${reason}`)) n += v;
    return n;
  }

  private logLine(key: string, line: string): void {
    if (!this.o.log) return;
    const now = Date.now();
    let w = this.logged.get(key);
    if (!w || now - w.since >= LOG_WINDOW_MS) {
      if (w?.suppressed) this.o.log(`... and ${w.suppressed} more like it (${key}) in ${LOG_WINDOW_MS / 1000} s`);
      w = { since: now, lines: 0, suppressed: 0 };
      if (this.logged.size > 1000) this.logged.clear();
      this.logged.set(key, w);
    }
    if (w.lines++ < LOG_LINES) this.o.log(line);
    else w.suppressed++;
  }
}

type Handler<K extends BodyKind> = (
  body: { [P in K]: { kind: P; value: BodyMap[P] } }[K],
  envelope: Envelope,
  msg: BusMessage,
) => void;

/**
 * Subscribes to `subject` and calls handle with each message that decodes to one of `kinds`; the rest are
 * rejected (malformed, wrong_kind) under the label `label` (default: the kinds joined with '|').
 */
export function receive<K extends BodyKind>(
  bus: Transport,
  subject: string,
  kinds: readonly K[],
  rejections: Rejections,
  handle: Handler<K>,
  opts: SubscribeOptions & { label?: string; maxBytes?: number } = {},
): Subscription {
  const label = opts.label ?? kinds.join('|');
  return bus.subscribe(
    subject,
    msg => {
      const d = decodeEnvelope(msg.data, { maxBytes: opts.maxBytes });
      if (!d.ok) return rejections.reject(label, 'malformed', `on ${msg.subject}: ${d.reason}`);
      const body = d.envelope.body;
      if (!(kinds as readonly string[]).includes(body.kind)) {
        return rejections.reject(
          label,
          'wrong_kind',
          `on ${msg.subject}: a ${body.kind} message where ${kinds.join(' or ')} was expected`,
        );
      }
      handle(body as Parameters<Handler<K>>[0], d.envelope, msg);
    },
    opts.queue ? { queue: opts.queue } : undefined,
  );
}
