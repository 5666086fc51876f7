// The coordinator's state on JetStream, for a coordinator on NATS without --state DIR: one KV bucket holds
// every key; a value small enough for one message is stored inline, a larger one (a member's result is
// megabytes, over the server's max_payload) goes to the object store of the same name and the KV value
// points to it. Replacing a key = writing the new blob under a fresh name, then one KV put (the atomic
// switch), then removing the old blob; a crash in between leaves at most an unreferenced blob, which
// removeOrphanBlobs() deletes.
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
}

export const DEFAULT_STATE_BUCKET = 'fleet-state';

// First byte of a KV value: what follows it.
const INLINE = 0;
const BLOB = 1;

const enc = new TextEncoder();
const dec = new TextDecoder();

export class JetStreamStateStore implements StateStore {
  readonly description: string;

  private constructor(readonly bucket: string, private readonly kv: KV, private readonly obj: ObjectStore, private readonly inlineMax: number) {
    this.description = `JetStream bucket ${bucket}`;
  }

  /** Opens (creating if needed) the bucket on a connected client; a clear error when the server has no JetStream. */
  static async open(nc: NatsConnection, o: JetStreamStateOptions = {}): Promise<JetStreamStateStore> {
    const bucket = o.bucket ?? DEFAULT_STATE_BUCKET;
    if (!/^[-\w]+$/.test(bucket)) throw new Error(`state bucket: invalid name ${JSON.stringify(bucket)} (letters, digits, '-' and '_' only)`);
    try {
      await jetstreamManager(nc); // asks the server for its JetStream account info: fails at once without JetStream
    } catch (e) {
      throw new Error(`JetStream is not available on the NATS server (${(e as Error).message}): start nats-server with -js, or keep state in a directory with --state DIR`);
    }
    const kv = await new Kvm(nc).create(bucket, { history: 1 });
    const obj = await new Objm(nc).create(bucket);
    const maxPayload = nc.info?.max_payload ?? 1024 * 1024;
    return new JetStreamStateStore(bucket, kv, obj, o.inlineMax ?? Math.min(64 * 1024, Math.floor(maxPayload / 2)));
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
    if (old) await this.obj.delete(old).catch(() => {}); // left behind, it is an orphan for removeOrphanBlobs()
  }

  async get(key: string): Promise<Uint8Array | null> {
    const k = kvKey(key);
    // twice: a concurrent put may remove the blob between our reading the pointer and the blob
    for (let attempt = 0; attempt < 2; attempt++) {
      const e = await this.kv.get(k);
      if (!e || e.operation !== 'PUT' || e.value.length === 0) return null;
      if (e.value[0] === INLINE) return new Uint8Array(e.value.subarray(1)); // a plain copy, not the client's Buffer
      if (e.value[0] !== BLOB) throw new Error(`${this.description}: ${key}: not a fleet state value (tag ${e.value[0]})`);
      const blob = await this.obj.getBlob(dec.decode(e.value.subarray(1)));
      if (blob) return blob instanceof Buffer ? new Uint8Array(blob) : blob;
    }
    throw new Error(`${this.description}: ${key}: its blob is missing from the object store`);
  }

  async list(prefix: string): Promise<string[]> {
    if (prefix && !prefix.endsWith('/')) throw new Error(`state store: a list prefix is a folder ending in '/', got ${JSON.stringify(prefix)}`);
    const keys: string[] = [];
    for await (const k of await this.kv.keys()) if (k.startsWith(prefix)) keys.push(k);
    return keys.sort();
  }

  async delete(key: string): Promise<void> {
    const k = kvKey(key);
    const old = blobOf(await this.kv.get(k));
    await this.kv.delete(k);
    if (old) await this.obj.delete(old).catch(() => {});
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
      if (!info.deleted && !used.has(info.name)) { await this.obj.delete(info.name); removed++; }
    }
    return removed;
  }

  async close(): Promise<void> {} // the connection belongs to the transport
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
