// Exactly one active coordinator: a leader lease in a JetStream KV bucket whose entries expire (the bucket's
// TTL). The leader creates the key with compare-and-set (create: only when it is absent) and renews it every
// TTL/3 with a revision-checked update; a coordinator that cannot create it is a hot standby and tries again
// every TTL/3. A killed leader stops renewing: the key expires after at most one TTL and a standby takes it.
// The revision of the create is the leader's epoch (it only grows). A leader acts only while its lease is
// surely alive (less than TTL - margin since a renewal it sent was confirmed): after a stall or a partition
// it stops at once (suspended), before the key could have expired and another coordinator taken over
// (fencing); the state store refuses its writes meanwhile. A later renewal that still finds its revision
// resumes it (nobody else can have led); one that finds another revision loses the lease for good.
import * as os from 'node:os';
import type { NatsConnection } from '@nats-io/transport-node';
import { Kvm, type KV } from '@nats-io/kv';
import { JetStreamApiError } from '@nats-io/jetstream';
import type { StateStore } from './state-store.ts';
import type { Metrics } from '../telemetry/metrics.ts';

export const DEFAULT_LEADER_BUCKET = 'fleet-leader';
/** The lease expires this long after its last renewal (ms): a standby takes over a killed leader within about it. */
export const DEFAULT_LEADER_TTL_MS = 5000;
const KEY = 'leader';

/** suspended: a leader whose renewal is overdue (it acts again if a renewal still finds its own revision). */
export type Role = 'standby' | 'leader' | 'suspended' | 'lost';
export interface LeaderView {
  id: string;
  role: Role;
  leader: string | null;
  epoch: number | null;
  ttlMs: number;
}

export interface LeaderLeaseOptions {
  /** This coordinator's name in the lease, /api/cluster and the metric (default <host>-<pid>). */
  id?: string;
  bucket?: string;
  ttlMs?: number;
  log?: (line: string) => void;
  metrics?: Metrics;
}

export class LeaderLease {
  role: Role = 'standby';
  /** The revision that made this coordinator leader (its epoch), or null while it is not. */
  epoch: number | null = null;
  /** Who holds the lease as last seen (this coordinator's id while it leads). */
  holder: string | null = null;
  private revision = 0;
  /** Until when the lease is surely ours: the send time of the last confirmed write plus TTL minus a margin. */
  private validUntil = 0;
  private timer?: NodeJS.Timeout;
  private watch?: NodeJS.Timeout;
  private busy = false;
  private stopped = false;
  private readonly log: (line: string) => void;
  private onLead?: () => void;
  private onLose?: (why: string) => void;

  private constructor(
    private readonly kv: KV,
    readonly id: string,
    readonly ttlMs: number,
    private readonly o: LeaderLeaseOptions,
  ) {
    this.log = o.log ?? (() => {});
    this.gauge();
  }

  /** Opens (creating if needed) the lease bucket; one made earlier with another TTL is an error. */
  static async open(nc: NatsConnection, o: LeaderLeaseOptions = {}): Promise<LeaderLease> {
    const ttlMs = o.ttlMs ?? DEFAULT_LEADER_TTL_MS;
    const bucket = o.bucket ?? DEFAULT_LEADER_BUCKET;
    const id = o.id ?? `${os.hostname()}-${process.pid}`.replace(/[^-\w.]/g, '_');
    const kv = await new Kvm(nc).create(bucket, { history: 1, ttl: ttlMs });
    const ttl = (await kv.status()).ttl;
    if (ttl !== ttlMs)
      throw new Error(
        `leader bucket ${bucket}: its TTL is ${ttl} ms, not ${ttlMs} ms (use that TTL, or remove the bucket)`,
      );
    return new LeaderLease(kv, id, ttlMs, o);
  }

  /** True while this coordinator may act as leader (its lease cannot have expired yet). */
  get leading(): boolean {
    return this.role === 'leader' && Date.now() < this.validUntil;
  }

  /**
   * Starts trying to lead (at once, then every TTL/3). onLead: it became leader; onLose: it lost the lease for good
   * (another coordinator may lead now: this one must not act again). Resolves after the first try.
   */
  start(onLead: () => void, onLose: (why: string) => void): Promise<void> {
    this.onLead = onLead;
    this.onLose = onLose;
    this.log(`coordinator ${this.id}: standby until it holds the leader lease (TTL ${this.ttlMs} ms)`);
    const first = this.step();
    this.timer = setInterval(() => void this.step(), Math.max(100, Math.floor(this.ttlMs / 3)));
    // a leader whose renewals stop coming back (partition, stall) stops acting when its lease might expire,
    // even while a renewal request still hangs
    this.watch = setInterval(() => {
      if (this.role !== 'leader' || this.leading) return;
      this.role = 'suspended';
      this.gauge();
      this.log(
        `coordinator ${this.id}: its leader lease was not renewed in time; it stops leading until a renewal succeeds`,
      );
    }, 100);
    return first;
  }

  view(): LeaderView {
    return { id: this.id, role: this.role, leader: this.holder, epoch: this.epoch, ttlMs: this.ttlMs };
  }

  /** Stops renewing; a leader deletes its key (if still its own) so that a standby takes over at once. */
  async stop(): Promise<void> {
    this.stopped = true;
    clearInterval(this.timer);
    clearInterval(this.watch);
    if (this.role === 'leader' || this.role === 'suspended') {
      await this.kv.delete(KEY, { previousSeq: this.revision }).catch(() => {});
      this.role = 'standby';
      this.epoch = null;
      this.gauge();
    }
  }

  private async step(): Promise<void> {
    if (this.busy || this.stopped || this.role === 'lost') return;
    this.busy = true;
    const sentAt = Date.now();
    try {
      if (this.role === 'leader' || this.role === 'suspended') await this.renew(sentAt);
      else await this.acquire(sentAt);
    } finally {
      this.busy = false;
    }
  }

  /**
   * A revision-checked update: it succeeds only if the key still holds our last write, i.e. it never expired and
   * nobody else created it meanwhile, so this coordinator's view of the jobs is still the only one.
   */
  private async renew(sentAt: number) {
    try {
      this.revision = await this.kv.update(KEY, this.value(), this.revision);
    } catch (e) {
      // unreachable or timed out: the watch suspends us when the lease may have expired
      if (!(e instanceof JetStreamApiError)) return;
      // the key expired (a stall, a server outage) or another coordinator holds it. The bucket holds only this
      // key, so a create that gets the very next revision proves that nobody else led in between.
      const rev = await this.kv.create(KEY, this.value()).catch(() => null);
      if (rev !== this.revision + 1) {
        if (rev !== null) await this.kv.delete(KEY, { previousSeq: rev }).catch(() => {});
        return this.lose(`renewing it was refused: ${e.message}`);
      }
      this.revision = rev;
      this.epoch = rev;
    }
    if (this.stopped || this.role === 'lost') return;
    this.validUntil = sentAt + this.ttlMs - this.margin();
    if (this.role === 'suspended') {
      this.role = 'leader';
      this.gauge();
      this.log(`coordinator ${this.id}: leader lease renewed; leading again (epoch ${this.epoch})`);
    }
  }

  private async acquire(sentAt: number) {
    let rev: number;
    try {
      rev = await this.kv.create(KEY, this.value());
    } catch {
      // held by another coordinator (or the server is unreachable): stay standby, note who leads
      const e = await this.kv.get(KEY).catch(() => null);
      this.holder = e?.operation === 'PUT' ? holderOf(e.value) : null;
      return;
    }
    if (this.stopped) {
      await this.kv.delete(KEY, { previousSeq: rev }).catch(() => {});
      return;
    }
    this.revision = rev;
    this.epoch = rev;
    this.holder = this.id;
    this.validUntil = sentAt + this.ttlMs - this.margin();
    this.role = 'leader';
    this.gauge();
    this.log(`coordinator ${this.id}: leader (epoch ${rev})`);
    this.onLead?.();
  }

  /** Margin for clock rate and the time the server took to store the write (ms). */
  private margin(): number {
    return Math.min(1000, Math.floor(this.ttlMs / 6));
  }

  private lose(why: string) {
    this.role = 'lost';
    this.epoch = null;
    this.holder = null;
    this.gauge();
    this.log(`coordinator ${this.id}: lost the leader lease (${why})`);
    this.onLose?.(why);
  }

  private value(): string {
    return JSON.stringify({ id: this.id, at: Date.now() });
  }

  private gauge() {
    this.o.metrics?.coordinatorLeader.set({ coordinator: this.id }, this.role === 'leader' ? 1 : 0);
  }
}

/** The holder named in a lease value (untrusted: anyone allowed on $KV may write it), or null. */
function holderOf(value: Uint8Array): string | null {
  try {
    const id = (JSON.parse(new TextDecoder().decode(value.subarray(0, 1024))) as { id?: unknown }).id;
    return typeof id === 'string' && /^[-\w.]{1,128}$/.test(id) ? id : null;
  } catch {
    return null;
  }
}

/**
 * The state store as the leader may use it: writes only while the lease is surely held, so a leader that lost
 * its lease (partitioned, stalled) cannot overwrite the job records of the coordinator that took over.
 */
export function fencedStore(store: StateStore, lease: LeaderLease): StateStore {
  const check = (key: string) => {
    if (!lease.leading) throw new Error(`not writing ${key}: this coordinator does not hold the leader lease`);
  };
  return {
    description: store.description,
    put: async (key, data) => {
      check(key);
      return store.put(key, data);
    },
    get: key => store.get(key),
    list: prefix => store.list(prefix),
    delete: async key => {
      check(key);
      return store.delete(key);
    },
    close: () => store.close(),
  };
}
