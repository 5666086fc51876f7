// The embedded default bus: an in-process broker with NATS semantics, for a coordinator and workers
// in one process (workers on worker_threads, connected through a MessagePort).
// Same contract as bus/nats-transport.ts so the cluster code cannot tell them apart: wildcards,
// queue groups, request/reply on inbox subjects, "no responders", asynchronous in-order delivery,
// payloads copied (a sender reusing its buffer never changes what a receiver saw), max_payload enforced.

import { randomBytes } from 'node:crypto';
import { MessageChannel, type MessagePort, receiveMessageOnPort } from 'node:worker_threads';
import type { BusMessage, PublishOptions, SubscribeOptions, Subscription, Transport } from './transport.ts';
import { subjectMatches, validateSubject } from './subjects.ts';
import { HandlerErrors } from './handler-errors.ts';

export interface InprocOptions {
  /** Largest payload per message; defaults to 1 MiB (the NATS server default) so chunking is exercised. */
  maxPayload?: number;
  /** Called when a subscription handler throws (or its promise rejects); defaults to console.error. */
  onError?: (err: unknown, subject: string) => void;
}

const DEFAULT_MAX_PAYLOAD = 1024 * 1024;
/** Status of the empty message the broker sends to a request's inbox when nobody listens (as NATS does). */
const NO_RESPONDERS = 503;

interface Delivery extends BusMessage {
  status?: number;
}

// Protocol on a worker's MessagePort.
type ToHub =
  | { t: 'sub'; sid: number; subject: string; queue?: string }
  | { t: 'unsub'; sid: number }
  | { t: 'pub'; subject: string; data: Uint8Array; reply?: string }
  | { t: 'flush'; id: number }
  | { t: 'close' };
type ToClient =
  { t: 'hello'; maxPayload: number } | ({ t: 'msg'; sid: number } & Delivery) | { t: 'flushed'; id: number };

/** One connected client as the broker sees it. */
interface Endpoint {
  deliver(sid: number, d: Delivery): void;
}

interface HubSub {
  ep: Endpoint;
  sid: number;
  pattern: string;
  queue?: string;
}

/** Routing table; lives on the hub's thread. */
class Broker {
  private subs: HubSub[] = [];
  private rr = new Map<string, number>(); // queue group -> round-robin counter
  private pending: Array<() => void> = [];
  private scheduled = false;

  constructor(readonly maxPayload: number) {}

  add(ep: Endpoint, sid: number, pattern: string, queue?: string): void {
    this.subs.push({ ep, sid, pattern, queue });
  }

  remove(ep: Endpoint, sid: number): void {
    this.subs = this.subs.filter(s => !(s.ep === ep && s.sid === sid));
  }

  drop(ep: Endpoint): void {
    this.subs = this.subs.filter(s => s.ep !== ep);
  }

  /** Routes one message. `owned`: the broker may hand `data` itself to one receiver (no one else holds it). */
  route(subject: string, data: Uint8Array, reply: string | undefined, owned: boolean, status?: number): void {
    const targets: HubSub[] = [];
    const groups = new Map<string, HubSub[]>();
    for (const s of this.subs) {
      if (!subjectMatches(s.pattern, subject)) continue;
      if (s.queue === undefined) targets.push(s);
      else (groups.get(s.queue) ?? groups.set(s.queue, []).get(s.queue)!).push(s);
    }
    for (const [queue, members] of groups) {
      const n = this.rr.get(queue) ?? 0;
      this.rr.set(queue, n + 1);
      targets.push(members[n % members.length]);
    }
    if (targets.length === 0) {
      // Like the NATS server: a request nobody can answer gets an immediate "no responders" status.
      if (reply !== undefined && status === undefined)
        this.route(reply, new Uint8Array(0), undefined, true, NO_RESPONDERS);
      return;
    }
    targets.forEach((s, i) => {
      const copy = owned && i === targets.length - 1 ? data : data.slice();
      s.ep.deliver(s.sid, { subject, data: copy, reply, status });
    });
  }

  /** Local deliveries run later, in FIFO order, never inside publish(). */
  later(fn: () => void): void {
    this.pending.push(fn);
    if (this.scheduled) return;
    this.scheduled = true;
    // setImmediate (not a microtask) so a handler that keeps publishing cannot starve timers and I/O.
    setImmediate(() => {
      this.scheduled = false;
      const batch = this.pending;
      this.pending = [];
      for (const f of batch) f();
    });
  }

  clear(): void {
    this.subs = [];
    this.pending = [];
  }
}

/** What both client flavours (same thread / worker thread) share: handlers, request/reply, error capture. */
abstract class InprocClient implements Transport {
  protected closed = false;
  private handlers = new Map<number, (d: Delivery) => void>();
  private nextSid = 1;
  private inbox = `_INBOX.${randomBytes(9).toString('hex')}`;
  private nextRequest = 1;
  private pendingRequests = new Set<(err: Error) => void>();

  private readonly errors: HandlerErrors;

  constructor(
    readonly maxPayload: number,
    onError?: (err: unknown, subject: string) => void,
  ) {
    this.errors = new HandlerErrors(onError);
  }

  /** Number of handler exceptions caught so far. */
  get handlerErrors(): number {
    return this.errors.count;
  }

  protected abstract sendSub(sid: number, subject: string, queue?: string): void;
  protected abstract sendUnsub(sid: number): void;
  protected abstract sendPub(subject: string, data: Uint8Array, reply?: string): void;
  protected abstract shutdown(): void;
  abstract flush(): Promise<void>;

  /** A message for subscription `sid` arrived (already asynchronous with respect to its publisher). */
  protected dispatch(sid: number, d: Delivery): void {
    this.handlers.get(sid)?.(d);
  }

  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void {
    this.checkOpen();
    validateSubject(subject, false);
    if (opts?.reply !== undefined) validateSubject(opts.reply, false);
    if (data.byteLength > this.maxPayload) {
      throw new Error(`payload of ${data.byteLength} bytes exceeds max_payload (${this.maxPayload}) on ${subject}`);
    }
    this.sendPub(subject, data, opts?.reply);
  }

  subscribe(subject: string, handler: (msg: BusMessage) => void, opts?: SubscribeOptions): Subscription {
    this.checkOpen();
    validateSubject(subject, true);
    const sid = this.addSub(subject, opts?.queue, d => {
      if (d.status !== undefined) return; // status messages only concern requests
      const msg: BusMessage = { subject: d.subject, data: d.data };
      if (d.reply !== undefined) msg.reply = d.reply;
      this.errors.run(handler, msg);
    });
    return { unsubscribe: () => this.removeSub(sid) };
  }

  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMessage> {
    return new Promise((resolve, reject) => {
      const inbox = `${this.inbox}.${this.nextRequest++}`;
      let sid = 0;
      const finish = (err: Error | null, msg?: BusMessage) => {
        clearTimeout(timer);
        this.pendingRequests.delete(fail);
        if (!this.closed) this.removeSub(sid);
        if (err) reject(err);
        else resolve(msg!);
      };
      const fail = (err: Error) => finish(err);
      const timer = setTimeout(
        () => finish(new Error(`request to ${subject} timed out after ${timeoutMs} ms`)),
        timeoutMs,
      );
      try {
        this.checkOpen();
        sid = this.addSub(inbox, undefined, d => {
          if (d.status === NO_RESPONDERS) finish(new Error(`no responders for ${subject}`));
          else finish(null, { subject: d.subject, data: d.data });
        });
        this.pendingRequests.add(fail);
        this.publish(subject, data, { reply: inbox });
      } catch (err) {
        finish(err as Error);
      }
    });
  }

  respond(msg: BusMessage, data: Uint8Array): void {
    if (!msg.reply) throw new Error(`message on ${msg.subject} has no reply subject`);
    this.publish(msg.reply, data);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.handlers.clear();
    for (const fail of [...this.pendingRequests]) fail(new Error('transport closed'));
    this.shutdown();
  }

  private addSub(subject: string, queue: string | undefined, fn: (d: Delivery) => void): number {
    const sid = this.nextSid++;
    this.handlers.set(sid, fn);
    this.sendSub(sid, subject, queue);
    return sid;
  }

  private removeSub(sid: number): void {
    if (!this.handlers.delete(sid) || this.closed) return;
    this.sendUnsub(sid);
  }

  protected checkOpen(): void {
    if (this.closed) throw new Error('transport closed');
  }
}

/** A client on the hub's own thread: calls the broker directly, deliveries are deferred. */
class LocalTransport extends InprocClient {
  private ep: Endpoint = { deliver: (sid, d) => this.broker.later(() => this.dispatch(sid, d)) };

  constructor(
    private broker: Broker,
    onError?: (err: unknown, subject: string) => void,
    private onClose?: () => void,
  ) {
    super(broker.maxPayload, onError);
  }

  protected sendSub(sid: number, subject: string, queue?: string): void {
    this.broker.add(this.ep, sid, subject, queue);
  }
  protected sendUnsub(sid: number): void {
    this.broker.remove(this.ep, sid);
  }
  protected sendPub(subject: string, data: Uint8Array, reply?: string): void {
    this.broker.route(subject, data, reply, false); // not owned: the broker copies for each receiver
  }
  protected shutdown(): void {
    this.broker.drop(this.ep);
    this.onClose?.();
  }
  async flush(): Promise<void> {
    this.checkOpen(); // routing is synchronous, so everything published has reached the broker
  }
}

/** A client in a worker thread, talking to the hub over a MessagePort. */
class PortTransport extends InprocClient {
  private flushes = new Map<number, { resolve: () => void; reject: (e: Error) => void }>();
  private nextFlush = 1;

  constructor(
    private port: MessagePort,
    maxPayload: number,
    onError?: (err: unknown, subject: string) => void,
  ) {
    super(maxPayload, onError);
    port.on('message', (m: ToClient) => {
      if (m.t === 'msg') this.dispatch(m.sid, m);
      else if (m.t === 'flushed') {
        this.flushes.get(m.id)?.resolve();
        this.flushes.delete(m.id);
      }
    });
    // The hub closed (or its thread ended): behave like a closed connection.
    port.on('close', () => void this.close());
  }

  private post(m: ToHub, transfer?: ArrayBuffer[]): void {
    this.port.postMessage(m, transfer);
  }
  protected sendSub(sid: number, subject: string, queue?: string): void {
    this.post({ t: 'sub', sid, subject, queue });
  }
  protected sendUnsub(sid: number): void {
    this.post({ t: 'unsub', sid });
  }
  protected sendPub(subject: string, data: Uint8Array, reply?: string): void {
    const copy = data.slice(); // our own exact-size copy, transferred rather than cloned again
    this.post({ t: 'pub', subject, data: copy, reply }, [copy.buffer as ArrayBuffer]);
  }
  protected shutdown(): void {
    for (const f of this.flushes.values()) f.reject(new Error('transport closed'));
    this.flushes.clear();
    try {
      this.post({ t: 'close' });
    } catch {
      // port already closed
    }
    this.port.close();
  }
  flush(): Promise<void> {
    this.checkOpen();
    const id = this.nextFlush++;
    return new Promise((resolve, reject) => {
      this.flushes.set(id, { resolve, reject });
      this.post({ t: 'flush', id }); // the port is ordered: the answer means every earlier publish was routed
    });
  }
}

/** The in-process broker. Give `transport()` to code on this thread and `port()` to each worker thread. */
export class InprocHub {
  readonly maxPayload: number;
  private broker: Broker;
  private onError?: (err: unknown, subject: string) => void;
  private locals = new Set<LocalTransport>();
  private ports = new Set<MessagePort>();
  private closed = false;

  constructor(opts: InprocOptions = {}) {
    this.maxPayload = opts.maxPayload ?? DEFAULT_MAX_PAYLOAD;
    this.onError = opts.onError;
    this.broker = new Broker(this.maxPayload);
  }

  /** A transport for this thread. */
  transport(): Transport & { readonly handlerErrors: number } {
    if (this.closed) throw new Error('hub closed');
    const t: LocalTransport = new LocalTransport(this.broker, this.onError, () => this.locals.delete(t));
    this.locals.add(t);
    return t;
  }

  /** A port to transfer to a worker thread, which calls inprocTransportFromPort(port) on it. */
  port(): MessagePort {
    if (this.closed) throw new Error('hub closed');
    const { port1, port2 } = new MessageChannel();
    const ep: Endpoint = {
      deliver: (sid, d) => {
        const m: ToClient = { t: 'msg', sid, ...d };
        // d.data is the receiver's own exact-size copy, so its buffer can be moved instead of cloned.
        const own = d.data.byteOffset === 0 && d.data.byteLength === d.data.buffer.byteLength;
        port1.postMessage(m, own ? [d.data.buffer as ArrayBuffer] : []);
      },
    };
    // Queued before the transfer so the worker can read it synchronously (maxPayload is a plain property).
    port1.postMessage({ t: 'hello', maxPayload: this.maxPayload } satisfies ToClient);
    port1.on('message', (m: ToHub) => {
      switch (m.t) {
        case 'sub':
          this.broker.add(ep, m.sid, m.subject, m.queue);
          break;
        case 'unsub':
          this.broker.remove(ep, m.sid);
          break;
        case 'pub':
          this.broker.route(m.subject, m.data, m.reply, true); // structured clone already gave us our own copy
          break;
        case 'flush':
          port1.postMessage({ t: 'flushed', id: m.id } satisfies ToClient);
          break;
        case 'close':
          port1.close();
          break;
      }
    });
    // Fires when either side closes or the worker thread exits: forget its subscriptions.
    port1.on('close', () => {
      this.broker.drop(ep);
      this.ports.delete(port1);
    });
    this.ports.add(port1);
    return port2;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const t of [...this.locals]) void t.close();
    for (const p of [...this.ports]) p.close();
    this.broker.clear();
  }
}

/** The worker-thread side: wraps a port obtained from InprocHub.port() (and transferred to this thread). */
export function inprocTransportFromPort(
  port: MessagePort,
  opts: Pick<InprocOptions, 'onError'> = {},
): Transport & { readonly handlerErrors: number } {
  const hello = receiveMessageOnPort(port)?.message as ToClient | undefined;
  if (!hello || hello.t !== 'hello') throw new Error('inprocTransportFromPort: not a port from InprocHub.port()');
  return new PortTransport(port, hello.maxPayload, opts.onError);
}
