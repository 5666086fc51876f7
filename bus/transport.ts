// The message bus seen by the coordinator and the workers: one interface, two implementations
// (bus/nats-transport.ts for nats:// URLs, bus/inproc-transport.ts for the embedded default).
// Payloads are bytes (protobuf messages, see bus/codec.ts); large tensors are split by bus/chunking.ts.

export interface BusMessage {
  subject: string;
  data: Uint8Array;
  /** Subject to answer on (request/reply), if the sender expects an answer. */
  reply?: string;
}

export interface Subscription {
  unsubscribe(): void;
}

export interface SubscribeOptions {
  /** Queue group: each message goes to one member of the group (work distribution). */
  queue?: string;
}

export interface PublishOptions {
  /** Subject to answer on. */
  reply?: string;
  /**
   * The caller hands data over and never changes it afterwards (e.g. a freshly encoded envelope): the
   * transport may queue it by reference instead of copying it (18 MB per data-parallel version).
   */
  owned?: boolean;
}

export interface Transport {
  /** Largest payload a single message may carry (the NATS server's max_payload; larger data must be chunked). */
  readonly maxPayload: number;
  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void;
  /** Subjects may use NATS wildcards: `*` matches one token, `>` the rest. */
  subscribe(subject: string, handler: (msg: BusMessage) => void, opts?: SubscribeOptions): Subscription;
  /** Publishes and waits for one answer on a fresh inbox; rejects after timeoutMs. */
  request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMessage>;
  /** Answers a request message. */
  respond(msg: BusMessage, data: Uint8Array): void;
  /** Resolves when everything published so far has reached the server (or the in-process broker). */
  flush(): Promise<void>;
  close(): Promise<void>;
}
