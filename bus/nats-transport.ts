// Transport over a real NATS server (nats.js v3 client). Used when the cluster is given a nats:// URL.

import { readFileSync } from 'node:fs';
import {
  connect,
  credsAuthenticator,
  nkeyAuthenticator,
  NoRespondersError,
  RequestError,
  TimeoutError,
  type Authenticator,
  type NatsConnection,
  type NodeConnectionOptions,
  type Status,
} from '@nats-io/transport-node';
import type { BusMessage, PublishOptions, SubscribeOptions, Subscription, Transport } from './transport.ts';
import { redactUrls, urlSecrets } from '../util/redact.ts';
import { HandlerErrors } from './handler-errors.ts';

export interface NatsOptions {
  /** Connection name shown by the server (monitoring). */
  name?: string;
  user?: string;
  pass?: string;
  token?: string;
  /** NKey seed (SU...), for nkey authentication. */
  nkeySeed?: string;
  /** Path of a .creds file (JWT + nkey seed). */
  credsFile?: string;
  tls?: { caFile?: string; certFile?: string; keyFile?: string };
  /**
   * Where replies to this connection's requests arrive (default _INBOX): a per-role prefix lets the server's
   * permissions give each role its own inboxes only (deploy/k8s/base/nats.conf).
   */
  inboxPrefix?: string;
  /** Reconnect after losing the server (default true: unlimited attempts, short wait). */
  reconnect?: boolean;
  /**
   * How long to keep trying to reach the server at start-up (default 0: one try). Only unreachable-server
   * failures are retried; a refused login or a TLS failure fails at once.
   */
  connectWaitMs?: number;
  /**
   * Connection events worth a log line: "disconnect <server>", "reconnect <server>", "error: ...", unanswered
   * pings, ... Routine ones (a ping with none outstanding, each reconnect attempt) are not reported.
   */
  onStatus?: (event: string) => void;
  /** How often the client pings the server (nats.js default: 2 minutes). */
  pingIntervalMs?: number;
  /** Called when a subscription handler throws (or its promise rejects); defaults to console.error. */
  onError?: (err: unknown, subject: string) => void;
}

const RECONNECT_WAIT_MS = 250;
/** The least a start-up try waits for the server's handshake (nats.js would wait 20 s for a silent host). */
const CONNECT_TRY_MS = 5000;

export type NatsTransport = Transport & {
  readonly handlerErrors: number;
  /** The nats.js connection itself, for what needs more than the bus (the JetStream state store). */
  readonly connection: NatsConnection;
};

export async function connectNats(url: string, opts: NatsOptions = {}): Promise<NatsTransport> {
  const redact = redactor(url, opts);
  const authenticator: Authenticator[] = [];
  if (opts.nkeySeed) authenticator.push(nkeyAuthenticator(new TextEncoder().encode(opts.nkeySeed)));
  if (opts.credsFile) authenticator.push(credsAuthenticator(readFileSync(opts.credsFile)));
  const reconnect = opts.reconnect ?? true;
  const fromUrl = urlCredentials(url);
  const co: NodeConnectionOptions = {
    servers: fromUrl.servers,
    name: opts.name,
    user: opts.user ?? fromUrl.user,
    pass: opts.pass ?? fromUrl.pass,
    token: opts.token ?? fromUrl.token,
    reconnect,
    maxReconnectAttempts: -1,
    reconnectTimeWait: RECONNECT_WAIT_MS,
  };
  if (opts.pingIntervalMs) co.pingInterval = opts.pingIntervalMs;
  if (opts.inboxPrefix) co.inboxPrefix = opts.inboxPrefix;
  if (authenticator.length) co.authenticator = authenticator;
  if (opts.tls) co.tls = { ...opts.tls };
  else if (url.startsWith('tls://')) co.tls = {};
  const started = Date.now();
  const deadline = started + Math.max(0, opts.connectWaitMs ?? 0);
  for (let tries = 1; ; tries++) {
    try {
      // a try waits at least CONNECT_TRY_MS: a busy event loop (a worker building graphs in this process) delays
      // the handshake, and a shorter wait failed connections to a healthy server
      co.timeout = Math.max(CONNECT_TRY_MS, deadline - Date.now());
      return new NatsClient(await connect(co), opts, redact);
    } catch (err) {
      if (retryable(err) && Date.now() + RECONNECT_WAIT_MS < deadline) {
        await new Promise(r => setTimeout(r, RECONNECT_WAIT_MS));
        continue;
      }
      const spent = tries > 1 ? ` (${tries} tries in ${((Date.now() - started) / 1000).toFixed(1)} s)` : '';
      // No `cause`: the original error (or its options) could carry credentials.
      throw new Error(`cannot connect to NATS at ${redact(url)}${spent}: ${redact(errorText(err))}`);
    }
  }
}

class NatsClient implements Transport {
  private readonly initialMaxPayload: number;
  private readonly errors: HandlerErrors;

  constructor(
    private nc: NatsConnection,
    private opts: NatsOptions,
    private redact: (s: string) => string,
  ) {
    this.initialMaxPayload = nc.info?.max_payload ?? 1024 * 1024;
    this.errors = new HandlerErrors(opts.onError);
    if (opts.onStatus) void this.watchStatus(opts.onStatus);
  }

  get handlerErrors(): number {
    return this.errors.count;
  }

  get connection(): NatsConnection {
    return this.nc;
  }

  /** Read from the current server's INFO: it may change after a reconnect. */
  get maxPayload(): number {
    return this.nc.info?.max_payload ?? this.initialMaxPayload;
  }

  publish(subject: string, data: Uint8Array, opts?: PublishOptions): void {
    // nats.js queues payloads by reference until the next write, so a sender reusing its buffer right
    // after publish() would change what goes out: copy, as the in-process hub does, unless it is handed over.
    this.nc.publish(subject, opts?.owned ? data : data.slice(), opts?.reply ? { reply: opts.reply } : undefined);
  }

  subscribe(subject: string, handler: (msg: BusMessage) => void, opts?: SubscribeOptions): Subscription {
    const sub = this.nc.subscribe(subject, {
      queue: opts?.queue,
      // The callback must never throw: nats.js would tear the subscription down.
      callback: (err, m) => {
        if (err) return this.errors.report(err, subject);
        const msg: BusMessage = { subject: m.subject, data: m.data };
        if (m.reply) msg.reply = m.reply;
        this.errors.run(handler, msg);
      },
    });
    return { unsubscribe: () => sub.unsubscribe() };
  }

  async request(subject: string, data: Uint8Array, timeoutMs: number): Promise<BusMessage> {
    try {
      const m = await this.nc.request(subject, data, { timeout: timeoutMs });
      return { subject: m.subject, data: m.data };
    } catch (err) {
      if (isNoResponders(err)) throw new Error(`no responders for ${subject}`);
      if (isTimeout(err)) throw new Error(`request to ${subject} timed out after ${timeoutMs} ms`);
      throw new Error(`request to ${subject} failed: ${this.redact(errorText(err))}`);
    }
  }

  respond(msg: BusMessage, data: Uint8Array): void {
    if (!msg.reply) throw new Error(`message on ${msg.subject} has no reply subject`);
    this.publish(msg.reply, data);
  }

  flush(): Promise<void> {
    return this.nc.flush();
  }

  async close(): Promise<void> {
    if (this.nc.isClosed()) return;
    // nats.js close() drops unsent data: flush first, but do not hang if the server is gone.
    let timer: NodeJS.Timeout | undefined;
    await Promise.race([
      this.nc.flush().catch(() => {}),
      new Promise<void>(resolve => (timer = setTimeout(resolve, 1000))),
    ]);
    clearTimeout(timer);
    await this.nc.close();
  }

  private async watchStatus(onStatus: (event: string) => void): Promise<void> {
    for await (const s of this.nc.status()) {
      try {
        const event = describeStatus(s);
        if (event !== null) onStatus(this.redact(event));
      } catch {
        // a failing status hook must not stop the watcher
      }
    }
  }
}

/** A log line for a connection event, or null for routine ones. */
export function describeStatus(s: Status): string | null {
  switch (s.type) {
    case 'reconnecting':
      return null; // one per attempt while the server is away: the disconnect and reconnect lines say it
    case 'disconnect':
    case 'reconnect':
    case 'ldm':
      return `${s.type} ${s.server}`;
    case 'error':
      return `error: ${errorText(s.error)}`;
    case 'ping':
      // every ping interval counts the ping it is about to send: only earlier ones left unanswered are news
      return s.pendingPings > 1 ? `ping: ${s.pendingPings - 1} unanswered (the server may be unreachable)` : null;
    case 'slowConsumer':
      return `slowConsumer (${s.pending} pending)`;
    default:
      return s.type;
  }
}

function isNoResponders(err: unknown): boolean {
  if (err instanceof NoRespondersError) return true;
  if (err instanceof RequestError && err.isNoResponders()) return true;
  return err instanceof Error && err.cause instanceof NoRespondersError;
}

/** A start-up failure worth another try: the server is not reachable (yet), as opposed to a refusal. */
function retryable(err: unknown): boolean {
  const text = `${errorText(err)} ${err instanceof Error && err.cause ? errorText(err.cause) : ''}`;
  if (/auth|permission|tls|certificate|ssl/i.test(text)) return false;
  return /refused|reset|timed? ?out|unreachable|ENOTFOUND|EAI_AGAIN/i.test(text);
}

function isTimeout(err: unknown): boolean {
  return err instanceof TimeoutError || (err instanceof Error && err.cause instanceof TimeoutError);
}

function errorText(err: unknown): string {
  return err instanceof Error ? err.message : String(err);
}

/**
 * nats.js ignores a URL's user info, so nats://user:pass@host (or nats://token@host) is split here into the
 * bare server URLs and the credentials; every server of a list must carry the same ones.
 */
function urlCredentials(url: string): { servers: string[]; user?: string; pass?: string; token?: string } {
  const found = new Set<string>();
  const servers = url.split(',').map(server => {
    const m = /^\s*([a-z][a-z0-9+.-]*:\/\/)([^\s/?#]*)@(.*)$/i.exec(server);
    if (!m) return server.trim();
    found.add(m[2]);
    return `${m[1]}${m[3]}`;
  });
  if (found.size > 1) throw new Error('NATS server list: every server URL must carry the same credentials');
  const info = [...found][0];
  if (info === undefined) return { servers };
  const decode = (s: string) => {
    try {
      return decodeURIComponent(s);
    } catch {
      return s;
    }
  };
  const colon = info.indexOf(':');
  if (colon < 0) return { servers, token: decode(info) };
  return { servers, user: decode(info.slice(0, colon)), pass: decode(info.slice(colon + 1)) };
}

/** Removes every secret we were given (and URL user info) from a text meant for logs or errors. */
function redactor(url: string, opts: NatsOptions): (s: string) => string {
  // nats://user:pass@host (the password is secret) or nats://token@host (all of it is)
  const secrets = [opts.pass, opts.token, opts.nkeySeed, ...urlSecrets(url)].filter((s): s is string => !!s);
  secrets.sort((a, b) => b.length - a.length); // longest first, so a secret containing another is fully hidden
  return (s: string) => {
    let out = redactUrls(s);
    for (const secret of secrets) out = out.split(secret).join('***');
    return out;
  };
}
