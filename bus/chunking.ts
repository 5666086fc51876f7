// Sends payloads larger than the transport's maxPayload as TensorChunk envelopes, and reassembles them.
// Chunks may arrive out of order or twice; the receiver checks sizes and the SHA-256 of the whole payload.
import { createHash, randomUUID } from 'node:crypto';
import { encodeEnvelope, type TensorChunkBody } from './codec.ts';
import type { Transport } from './transport.ts';

/** Splits payload into chunk envelopes that each fit in transport.maxPayload and publishes them on subject. */
export async function sendChunked(
  transport: Transport, subject: string, payload: Uint8Array, opts: { transferId?: string; sender?: string } = {},
): Promise<{ transferId: string; chunks: number }> {
  const transferId = opts.transferId ?? randomUUID();
  const sender = opts.sender ?? '';
  const sha256 = createHash('sha256').update(payload).digest();
  const room = chunkRoom(transport.maxPayload, transferId, sender, payload.length, sha256);
  const count = Math.max(1, Math.ceil(payload.length / room)); // an empty payload is still one chunk
  for (let index = 0; index < count; index++) {
    const data = payload.subarray(index * room, (index + 1) * room); // a view: encoding copies it anyway
    const msg = encodeEnvelope({ kind: 'chunk', value: { transferId, index, count, totalBytes: payload.length, sha256, data } }, sender);
    if (msg.length > transport.maxPayload) throw new Error(`chunk of ${msg.length} bytes exceeds maxPayload ${transport.maxPayload}`);
    transport.publish(subject, msg, { owned: true }); // a fresh envelope: no defensive copy
  }
  await transport.flush();
  return { transferId, chunks: count };
}

/** Data bytes that fit in one chunk envelope: maxPayload minus the measured envelope overhead. */
export function chunkRoom(maxPayload: number, transferId: string, sender: string, totalBytes: number, sha256: Uint8Array): number {
  // Encode a chunk without data and with the largest index/count varints: the header can only be smaller in practice.
  const header = encodeEnvelope({
    kind: 'chunk', value: { transferId, index: 0xfffffffe, count: 0xffffffff, totalBytes, sha256, data: new Uint8Array(0) },
  }, sender).length;
  // Data adds its tag (1 byte) and length varint, and the chunk's own length prefix grows by at most as many bytes.
  const room = maxPayload - header - 1 - 2 * varintSize(maxPayload);
  if (room < 1) throw new Error(`maxPayload ${maxPayload} leaves no room for chunk data (the chunk header takes ${header} bytes)`);
  return room;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) { n = Math.floor(n / 128); size++; }
  return size;
}

interface Transfer {
  count: number;
  totalBytes: number;
  sha256: Uint8Array;
  parts: (Uint8Array | undefined)[];
  received: number;
  bytes: number;
  lastSeen: number;
}

export interface ReassemblerOptions {
  /** Refuse transfers larger than this (default 256 MiB). */
  maxBytes?: number;
  /** Drop incomplete transfers that received nothing for this long, on sweep (default 30 s). */
  timeoutMs?: number;
  onComplete(transferId: string, payload: Uint8Array): void;
  onError?(transferId: string, reason: string): void;
}

/** Collects TensorChunks by transfer id; never throws on bad chunks, it reports them through onError. */
export class Reassembler {
  private readonly maxBytes: number;
  private readonly timeoutMs: number;
  private readonly pending = new Map<string, Transfer>();
  // Transfers that finished (either way), so late duplicates are ignored instead of starting a new transfer.
  private readonly finished = new Map<string, number>();
  private counts = { completed: 0, failed: 0, dropped: 0 };

  constructor(private readonly opts: ReassemblerOptions) {
    this.maxBytes = opts.maxBytes ?? 256 * 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
  }

  get stats(): { completed: number; failed: number; dropped: number; pending: number } {
    return { ...this.counts, pending: this.pending.size };
  }

  accept(chunk: TensorChunkBody): void {
    const c: any = chunk;
    if (!c || typeof c !== 'object' || typeof c.transferId !== 'string' || c.transferId === '') {
      return this.fail('', 'chunk without a transfer id');
    }
    const id: string = c.transferId;
    if (this.finished.has(id)) return;
    const bad = checkChunk(c, this.maxBytes);
    if (bad) return this.fail(id, bad);
    const now = Date.now();
    let t = this.pending.get(id);
    if (!t) {
      t = { count: c.count, totalBytes: c.totalBytes, sha256: c.sha256, parts: new Array(c.count), received: 0, bytes: 0, lastSeen: now };
      this.pending.set(id, t);
    } else {
      const diff = t.count !== c.count ? `count ${c.count} != ${t.count}`
        : t.totalBytes !== c.totalBytes ? `total_bytes ${c.totalBytes} != ${t.totalBytes}`
        : !Buffer.from(t.sha256).equals(c.sha256) ? 'sha256 differs' : null;
      if (diff) return this.fail(id, `inconsistent chunk header (${diff})`);
    }
    t.lastSeen = now;
    if (t.parts[c.index]) return; // duplicate delivery
    t.parts[c.index] = c.data;
    t.received++;
    t.bytes += c.data.length;
    if (t.bytes > t.totalBytes) return this.fail(id, `chunks add up to more than total_bytes ${t.totalBytes}`);
    if (t.received === t.count) this.complete(id, t);
  }

  /** Drops incomplete transfers idle for timeoutMs, and forgets finished ones after as long. */
  sweep(now = Date.now()): void {
    for (const [id, t] of this.pending) {
      if (now - t.lastSeen < this.timeoutMs) continue;
      this.pending.delete(id);
      this.finish(id, now);
      this.counts.dropped++;
      this.opts.onError?.(id, `timed out after ${this.timeoutMs} ms with ${t.received} of ${t.count} chunks`);
    }
    for (const [id, at] of this.finished) if (now - at >= this.timeoutMs) this.finished.delete(id);
  }

  private complete(id: string, t: Transfer): void {
    if (t.bytes !== t.totalBytes) return this.fail(id, `chunks add up to ${t.bytes} bytes, expected ${t.totalBytes}`);
    const payload = Buffer.concat(t.parts as Uint8Array[], t.totalBytes);
    const sha = createHash('sha256').update(payload).digest();
    if (!sha.equals(t.sha256)) return this.fail(id, 'SHA-256 of the reassembled payload does not match');
    this.pending.delete(id);
    this.finish(id, Date.now());
    this.counts.completed++;
    this.opts.onComplete(id, new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength));
  }

  private fail(id: string, reason: string): void {
    if (id) {
      this.pending.delete(id);
      this.finish(id, Date.now());
    }
    this.counts.failed++;
    this.opts.onError?.(id, reason);
  }

  private finish(id: string, at: number): void {
    this.finished.set(id, at);
    // Bound memory when sweep is rarely called: forget the oldest finished ids first (Map keeps insertion order).
    if (this.finished.size > 10_000) this.finished.delete(this.finished.keys().next().value!);
  }
}

/** Checks one chunk on its own; consistency with the other chunks of its transfer is checked in accept. */
function checkChunk(c: any, maxBytes: number): string | null {
  if (!Number.isSafeInteger(c.count) || c.count < 1) return `invalid count ${c.count}`;
  if (!Number.isSafeInteger(c.index) || c.index < 0 || c.index >= c.count) return `index ${c.index} out of range for count ${c.count}`;
  if (!Number.isSafeInteger(c.totalBytes) || c.totalBytes < 0) return `invalid total_bytes ${c.totalBytes}`;
  if (c.totalBytes > maxBytes) return `transfer of ${c.totalBytes} bytes exceeds the limit of ${maxBytes}`;
  // Every chunk carries at least one byte (except the single chunk of an empty payload), so count <= total_bytes.
  if (c.count > Math.max(1, c.totalBytes)) return `count ${c.count} exceeds total_bytes ${c.totalBytes}`;
  if (!(c.sha256 instanceof Uint8Array) || c.sha256.length !== 32) return 'sha256 is not 32 bytes';
  if (!(c.data instanceof Uint8Array)) return 'data is not bytes';
  if (c.data.length > c.totalBytes) return `data of ${c.data.length} bytes exceeds total_bytes ${c.totalBytes}`;
  return null;
}
