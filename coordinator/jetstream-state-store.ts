// The coordinator's state on JetStream, for a coordinator on NATS without --state DIR: one KV bucket holds
// every key; a value small enough for one message is stored inline, a larger one (a member's result is
// megabytes, over the server's max_payload) goes to the object store of the same name and the KV value
// points to it. Replacing a key = writing the new blob under a fresh name, then one KV put (the atomic
// switch), then removing the old blob after a grace period (a reader that took the old pointer can still
// read it); a crash in between leaves at most an unreferenced blob, which removeOrphanBlobs() deletes.
import { randomBytes } from 'node:crypto';
import { jetstreamManager } from '@nats-io/jetstream';
import { Kvm, type KV, type KvEntry } from '@nats-io/kv';
import { Objm, type ObjectStore } from '@nats-io/obj';
import type { NatsConnection } from '@nats-io/transport-node';
import { checkKey, type StateStore } from './state-store.ts';

export interface JetStreamStateOptions {
  /** Name of the KV bucket and of the object store (default fleet-state). */
  bucket?: string;
  /** Values up to this many bytes are stored inline in the KV entry (default: 64 KiB or half of max_payload). */
  inlineMax?: number;
  /** A replaced or deleted blob is removed this long after the switch (default 10 s; 0: at once). */
  retireAfterMs?: number;
  /** A blob read that receives nothing for this long is given up and the key read again (default 10 s). */
  readStallMs?: number;
}

export const DEFAULT_STATE_BUCKET = 'fleet-state';

// First byte of a KV value: what follows it.
const INLINE = 0;
const BLOB = 1;

const enc = new TextEncoder();
const dec = new TextDecoder();

export class JetStreamStateStore implements StateStore {
  readonly description: string;
  /** Replaced blobs waiting for their grace period to end. */
  private readonly retiring = new Map<string, NodeJS.Timeout>();

  private constructor(
    readonly bucket: string,
    private readonly kv: KV,
    private readonly obj: ObjectStore,
    private readonly inlineMax: number,
    private readonly retireAfterMs: number,
    private readonly readStallMs: number,
  ) {
    this.description = `JetStream bucket ${bucket}`;
  }

  /** Opens (creating if needed) the bucket on a connected client; a clear error when the server has no JetStream. */
  static async open(nc: NatsConnection, o: JetStreamStateOptions = {}): Promise<JetStreamStateStore> {
    const bucket = o.bucket ?? DEFAULT_STATE_BUCKET;
    if (!/^[-\w]+$/.test(bucket))
      throw new Error(`state bucket: invalid name ${JSON.stringify(bucket)} (letters, digits, '-' and '_' only)`);
    try {
      await jetstreamManager(nc); // asks the server for its JetStream account info: fails at once without JetStream
    } catch (e) {
      throw new Error(
        `JetStream is not available on the NATS server (${(e as Error).message}): start nats-server with -js, or keep state in a directory with --state DIR`,
      );
    }
    const kv = await new Kvm(nc).create(bucket, { history: 1 });
    const obj = await new Objm(nc).create(bucket);
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    return new JetStreamStateStore(
      bucket,
      kv,
      obj,
      o.inlineMax ?? Math.min(64 * 1024, Math.floor(maxPayload / 2)),
      o.retireAfterMs ?? 10_000,
      o.readStallMs ?? 10_000,
    );
  }

  async put(key: string, data: Uint8Array | string): Promise<void> {
    const k = kvKey(key);
    const bytes = typeof data === 'string' ? enc.encode(data) : data;
    const old = blobOf(await this.kv.get(k));
    let value: Uint8Array;
    if (bytes.byteLength <= this.inlineMax) {
      value = tagged(INLINE, bytes);
    } else {
      const name = `${key}#${randomBytes(6).toString('hex')}`;
      await this.obj.putBlob({ name }, bytes);
      value = tagged(BLOB, enc.encode(name));
    }
    await this.kv.put(k, value);
    if (old) await this.retire(old);
  }

  async get(key: string): Promise<Uint8Array | null> {
    const k = kvKey(key);
    // more than once: the blob we were pointed to may be gone (replaced long ago) by the time we read it
    for (let attempt = 0; attempt < 3; attempt++) {
      const e = await this.kv.get(k);
      if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
      if (e.value[0] === INLINE) return new Uint8Array(e.value.subarray(1)); // a plain copy, not the client's Buffer
      if (e.value[0] !== BLOB)
        throw new Error(`${this.description}: ${key}: not a fleet state value (tag ${e.value[0]})`);
      const blob = await this.readBlob(dec.decode(e.value.subarray(1)));
      if (blob) return blob;
    }
    throw new Error(`${this.description}: ${key}: its blob is missing from the object store`);
  }

  async list(prefix: string): Promise<string[]> {
    if (prefix && !prefix.endsWith('/'))
      throw new Error(`state store: a list prefix is a folder ending in '/', got ${JSON.stringify(prefix)}`);
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) if (k.startsWith(prefix)) keys.push(k);
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    const k = kvKey(key);
    const old = blobOf(await this.kv.get(k));
    await this.kv.delete(k);
    if (old) await this.retire(old);
  }

  /** A blob's bytes, or null when it is gone; a read whose chunks stop coming (purged meanwhile) is given up. */
  private async readBlob(name: string): Promise<Uint8Array | null> {
    const r = await this.obj.get(name);
    if (!r) return null;
    const reader = r.data.getReader();
    const parts: Uint8Array[] = [];
    for (;;) {
      let timer: NodeJS.Timeout | undefined;
      const stalled = new Promise<'stalled'>(resolve => {
        timer = setTimeout(() => resolve('stalled'), this.readStallMs);
      });
      const next = await Promise.race([reader.read(), stalled]).finally(() => clearTimeout(timer));
      if (next === 'stalled') {
        await reader.cancel().catch(() => {});
        return null;
      }
      if (next.done) break;
      parts.push(next.value);
    }
    await r.error.then(e => {
      if (e) throw e;
    }); // the digest check
    return new Uint8Array(Buffer.concat(parts));
  }

  /** Removes a blob no key points to any more, after the grace period for readers that still hold its name. */
  private async retire(name: string): Promise<void> {
    if (this.retireAfterMs <= 0) {
      await this.obj.delete(name).catch(() => {});
      return;
    }
    const timer = setTimeout(() => {
      this.retiring.delete(name);
      void this.obj.delete(name).catch(() => {});
    }, this.retireAfterMs);
    timer.unref(); // a process that exits first leaves an orphan for removeOrphanBlobs()
    this.retiring.set(name, timer);
  }

  /** Deletes blobs no key points to (left by a crash between a blob write and its KV put). Call before writing. */
  async removeOrphanBlobs(): Promise<number> {
    const used = new Set<string>();
    for (const key of await this.list('')) {
      const b = blobOf(await this.kv.get(key));
      if (b) used.add(b);
    }
    let removed = 0;
    for (const info of await this.obj.list()) {
      if (!info.deleted && !used.has(info.name)) {
        await this.obj.delete(info.name);
        removed++;
      }
    }
    return removed;
  }

  /** Removes the blobs still in their grace period (the connection itself belongs to the transport). */
  async close(): Promise<void> {
    for (const [name, timer] of this.retiring) {
      clearTimeout(timer);
      await this.obj.delete(name).catch(() => {});
    }
    this.retiring.clear();
  }
}

/** The common key grammar (checkKey) is a subset of what KV keys allow, so a valid key is a valid KV key. */
const kvKey = checkKey;

function tagged(tag: number, body: Uint8Array): Uint8Array {
  const out = new Uint8Array(body.byteLength + 1);
  out[0] = tag;
  out.set(body, 1);
  return out;
}

function blobOf(e: KvEntry | null): string | null {
  return e && e.operation === 'PUT' && e.value[0] === BLOB ? dec.decode(e.value.subarray(1)) : null;
}
