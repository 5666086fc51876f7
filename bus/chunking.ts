// Sends payloads larger than the transport's maxPayload as TensorChunk envelopes, and reassembles them.
// Chunks may arrive out of order or twice; the receiver checks sizes and the SHA-256 of the whole payload.
import { createHash, randomUUID } from 'node:crypto';
import { encodeEnvelope, type TensorChunkBody } from './codec.ts';
import type { Transport } from './transport.ts';

/** Splits payload into chunk envelopes that each fit in transport.maxPayload and publishes them on subject. */
export async function sendChunked(
  transport: Transport,
  subject: string,
  payload: Uint8Array,
  opts: { transferId?: string; sender?: string } = {},
): Promise<{ transferId: string; chunks: number }> {
  const transferId = opts.transferId ?? randomUUID();
  const sender = opts.sender ?? '';
  const sha256 = createHash('sha256').update(payload).digest();
  const room = chunkRoom(transport.maxPayload, transferId, sender, payload.length, sha256);
  const count = Math.max(1, Math.ceil(payload.length / room)); // an empty payload is still one chunk
  for (let index = 0; index < count; index++) {
    const data = payload.subarray(index * room, (index + 1) * room); // a view: encoding copies it anyway
    const msg = encodeEnvelope(
      { kind: 'chunk', value: { transferId, index, count, totalBytes: payload.length, sha256, data } },
      sender,
    );
    if (msg.length > transport.maxPayload)
      throw new Error(`chunk of ${msg.length} bytes exceeds maxPayload ${transport.maxPayload}`);
    transport.publish(subject, msg, { owned: true }); // a fresh envelope: no defensive copy
  }
  await transport.flush();
  return { transferId, chunks: count };
}

/** Data bytes that fit in one chunk envelope: maxPayload minus the measured envelope overhead. */
export function chunkRoom(
  maxPayload: number,
  transferId: string,
  sender: string,
  totalBytes: number,
  sha256: Uint8Array,
): number {
  // Encode a chunk without data and with the largest index/count varints: the header can only be smaller in practice.
  const header = encodeEnvelope(
    {
      kind: 'chunk',
      value: { transferId, index: 0xfffffffe, count: 0xffffffff, totalBytes, sha256, data: new Uint8Array(0) },
    },
    sender,
  ).length;
  // Data adds its tag (1 byte) and length varint, and the chunk's own length prefix grows by at most as many bytes.
  const room = maxPayload - header - 1 - 2 * varintSize(maxPayload);
  if (room < 1)
    throw new Error(`maxPayload ${maxPayload} leaves no room for chunk data (the chunk header takes ${header} bytes)`);
  return room;
}

function varintSize(n: number): number {
  let size = 1;
  while (n >= 128) {
    n = Math.floor(n / 128);
    size++;
  }
  return size;
}

interface Transfer {
  sender: string;
  count: number;
  totalBytes: number;
  sha256: Uint8Array;
  parts: (Uint8Array | undefined)[];
  received: number;
  bytes: number;
  lastSeen: number;
}

/** What a completed transfer came with: who sent it (the chunks' envelope sender) and the checked SHA-256. */
export interface TransferInfo {
  sender: string;
  sha256: Uint8Array;
}

export interface ReassemblerOptions {
  /** Refuse transfers larger than this (default 256 MiB). */
  maxBytes?: number;
  /** Bytes of unfinished transfers one sender may have in flight, counted at their declared size (default 512 MiB). */
  maxBytesPerSender?: number;
  /** Bytes of unfinished transfers from all senders together (default 2 GiB). */
  maxBytesTotal?: number;
  /** Unfinished transfers from all senders together (default 1024). */
  maxTransfers?: number;
  /** Drop incomplete transfers that received nothing for this long, on sweep (default 30 s). */
  timeoutMs?: number;
  onComplete(transferId: string, payload: Uint8Array, info: TransferInfo): void;
  onError?(transferId: string, reason: string, kind: 'failed' | 'over_capacity' | 'timeout'): void;
}

/**
 * Collects TensorChunks by (sender, transfer id); never throws on bad chunks, it reports them through onError.
 * Memory is bounded: a transfer is admitted at its first chunk only if its declared size fits the sender's and
 * the total budget of unfinished transfers, and unfinished transfers expire (sweep).
 */
export class Reassembler {
  private readonly maxBytes: number;
  private readonly timeoutMs: number;
  private readonly caps: { sender: number; total: number; transfers: number };
  private readonly pending = new Map<string, Transfer>();
  /** Declared bytes of unfinished transfers, by sender and in all. */
  private readonly reserved = new Map<string, number>();
  private reservedTotal = 0;
  // Transfers that finished (either way), so late duplicates are ignored instead of starting a new transfer.
  private readonly finished = new Map<string, number>();
  private counts = { completed: 0, failed: 0, dropped: 0, refused: 0 };

  constructor(private readonly opts: ReassemblerOptions) {
    this.maxBytes = opts.maxBytes ?? 256 * 1024 * 1024;
    this.timeoutMs = opts.timeoutMs ?? 30_000;
    this.caps = {
      sender: opts.maxBytesPerSender ?? 512 * 1024 * 1024,
      total: opts.maxBytesTotal ?? 2 * 1024 ** 3,
      transfers: opts.maxTransfers ?? 1024,
    };
  }

  get stats(): { completed: number; failed: number; dropped: number; pending: number } {
    const { refused: _refused, ...counts } = this.counts;
    return { ...counts, pending: this.pending.size };
  }

  /** Unfinished transfers' declared bytes (what the caps bound), and transfers refused for lack of room. */
  get load(): { bytes: number; refused: number } {
    return { bytes: this.reservedTotal, refused: this.counts.refused };
  }

  /** Takes one chunk; `sender` is its envelope's sender (transfers of different senders never mix). */
  accept(chunk: TensorChunkBody, sender = ''): void {
    const c: any = chunk;
    if (!c || typeof c !== 'object' || typeof c.transferId !== 'string' || c.transferId === '') {
      return this.fail('', 'chunk without a transfer id');
    }
    const key = `${sender}\u0000${c.transferId}`;
    const id: string = c.transferId;
    if (this.finished.has(key)) return;
    const bad = checkChunk(c, this.maxBytes);
    if (bad) return this.fail(key, bad);
    const now = Date.now();
    let t = this.pending.get(key);
    if (!t) {
      const mine = this.reserved.get(sender) ?? 0;
      const over =
        this.pending.size >= this.caps.transfers
          ? `${this.caps.transfers} unfinished transfers`
          : mine + c.totalBytes > this.caps.sender
            ? `${mine} bytes in flight from ${JSON.stringify(sender)} (cap ${this.caps.sender})`
            : this.reservedTotal + c.totalBytes > this.caps.total
              ? `${this.reservedTotal} bytes in flight (cap ${this.caps.total})`
              : null;
      if (over) {
        this.counts.refused++;
        this.finish(key, now);
        this.opts.onError?.(id, `refused a transfer of ${c.totalBytes} bytes: ${over}`, 'over_capacity');
        return;
      }
      t = {
        sender,
        count: c.count,
        totalBytes: c.totalBytes,
        sha256: c.sha256,
        parts: new Array(c.count),
        received: 0,
        bytes: 0,
        lastSeen: now,
      };
      this.pending.set(key, t);
      this.reserve(sender, c.totalBytes);
    } else {
      const diff =
        t.count !== c.count
          ? `count ${c.count} != ${t.count}`
          : t.totalBytes !== c.totalBytes
            ? `total_bytes ${c.totalBytes} != ${t.totalBytes}`
            : !Buffer.from(t.sha256).equals(c.sha256)
              ? 'sha256 differs'
              : null;
      if (diff) return this.fail(key, `inconsistent chunk header (${diff})`);
    }
    t.lastSeen = now;
    if (t.parts[c.index]) return; // duplicate delivery
    t.parts[c.index] = c.data;
    t.received++;
    t.bytes += c.data.length;
    if (t.bytes > t.totalBytes) return this.fail(key, `chunks add up to more than total_bytes ${t.totalBytes}`);
    if (t.received === t.count) this.complete(key, t);
  }

  /** Drops incomplete transfers idle for timeoutMs, and forgets finished ones after as long. */
  sweep(now = Date.now()): void {
    for (const [key, t] of this.pending) {
      if (now - t.lastSeen < this.timeoutMs) continue;
      this.drop(key, t);
      this.finish(key, now);
      this.counts.dropped++;
      this.opts.onError?.(
        idOf(key),
        `timed out after ${this.timeoutMs} ms with ${t.received} of ${t.count} chunks`,
        'timeout',
      );
    }
    for (const [id, at] of this.finished) if (now - at >= this.timeoutMs) this.finished.delete(id);
  }

  private complete(key: string, t: Transfer): void {
    if (t.bytes !== t.totalBytes) return this.fail(key, `chunks add up to ${t.bytes} bytes, expected ${t.totalBytes}`);
    const payload = Buffer.concat(t.parts as Uint8Array[], t.totalBytes);
    const sha = createHash('sha256').update(payload).digest();
    if (!sha.equals(t.sha256)) return this.fail(key, 'SHA-256 of the reassembled payload does not match');
    this.drop(key, t);
    this.finish(key, Date.now());
    this.counts.completed++;
    this.opts.onComplete(idOf(key), new Uint8Array(payload.buffer, payload.byteOffset, payload.byteLength), {
      sender: t.sender,
      sha256: sha,
    });
  }

  private fail(key: string, reason: string): void {
    if (key) {
      const t = this.pending.get(key);
      if (t) this.drop(key, t);
      this.finish(key, Date.now());
    }
    this.counts.failed++;
    this.opts.onError?.(idOf(key), reason, 'failed');
  }

  private reserve(sender: string, bytes: number): void {
    const left = (this.reserved.get(sender) ?? 0) + bytes;
    if (left > 0) this.reserved.set(sender, left);
    else this.reserved.delete(sender);
    this.reservedTotal += bytes;
  }

  private drop(key: string, t: Transfer): void {
    this.pending.delete(key);
    this.reserve(t.sender, -t.totalBytes);
  }

  private finish(key: string, at: number): void {
    this.finished.set(key, at);
    // Bound memory when sweep is rarely called: forget the oldest finished ids first (Map keeps insertion order).
    if (this.finished.size > 10_000) this.finished.delete(this.finished.keys().next().value!);
  }
}

const idOf = (key: string) => key.slice(key.indexOf('\u0000') + 1);

/** Checks one chunk on its own; consistency with the other chunks of its transfer is checked in accept. */
function checkChunk(c: any, maxBytes: number): string | null {
  if (!Number.isSafeInteger(c.count) || c.count < 1) return `invalid count ${c.count}`;
  if (!Number.isSafeInteger(c.index) || c.index < 0 || c.index >= c.count)
    return `index ${c.index} out of range for count ${c.count}`;
  if (!Number.isSafeInteger(c.totalBytes) || c.totalBytes < 0) return `invalid total_bytes ${c.totalBytes}`;
  if (c.totalBytes > maxBytes) return `transfer of ${c.totalBytes} bytes exceeds the limit of ${maxBytes}`;
  // Every chunk carries at least one byte (except the single chunk of an empty payload), so count <= total_bytes.
  if (c.count > Math.max(1, c.totalBytes)) return `count ${c.count} exceeds total_bytes ${c.totalBytes}`;
  if (!(c.sha256 instanceof Uint8Array) || c.sha256.length !== 32) return 'sha256 is not 32 bytes';
  if (!(c.data instanceof Uint8Array)) return 'data is not bytes';
  if (c.data.length > c.totalBytes) return `data of ${c.data.length} bytes exceeds total_bytes ${c.totalBytes}`;
  return null;
}
