// Checkpoint files: a JSON header (metadata and a tensor table) followed by raw little-endian float32 data,
// with a SHA-256 of the data so truncation and corruption are detected. Written atomically.
//
//   "FLEETCKPT1\n" | uint32 LE header length | header JSON | tensor bytes
import * as fs from 'node:fs';
import { createHash } from 'node:crypto';
import { writeFileAtomic } from './util/atomic.ts';

const MAGIC = Buffer.from('FLEETCKPT1\n');

export class CheckpointError extends Error {}

interface TensorEntry {
  name: string;
  offset: number;
  length: number;
}

export interface Checkpoint<M = Record<string, unknown>> {
  meta: M;
  tensors: Map<string, Float32Array>;
}

export function encodeCheckpoint(meta: unknown, tensors: Map<string, Float32Array>): Buffer {
  const entries: TensorEntry[] = [];
  let offset = 0;
  for (const [name, t] of tensors) {
    entries.push({ name, offset, length: t.length });
    offset += t.length * 4;
  }
  const body = Buffer.alloc(offset);
  for (const e of entries) {
    const t = tensors.get(e.name)!;
    body.set(new Uint8Array(t.buffer, t.byteOffset, t.byteLength), e.offset);
  }
  const sha256 = createHash('sha256').update(body).digest('hex');
  const header = Buffer.from(JSON.stringify({ meta, tensors: entries, bytes: offset, sha256 }));
  const len = Buffer.alloc(4);
  len.writeUInt32LE(header.length);
  return Buffer.concat([MAGIC, len, header, body]);
}

export function decodeCheckpoint<M>(buf: Buffer, file = 'checkpoint'): Checkpoint<M> {
  if (buf.length < MAGIC.length + 4 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) {
    throw new CheckpointError(`${file}: not a fleet checkpoint (bad magic)`);
  }
  const hlen = buf.readUInt32LE(MAGIC.length);
  const start = MAGIC.length + 4 + hlen;
  if (start > buf.length) throw new CheckpointError(`${file}: truncated header (${buf.length} bytes)`);
  let header: { meta: M; tensors: TensorEntry[]; bytes: number; sha256: string };
  try {
    header = JSON.parse(buf.subarray(MAGIC.length + 4, start).toString('utf8'));
  } catch {
    throw new CheckpointError(`${file}: corrupt header`);
  }
  const body = buf.subarray(start);
  if (!header || typeof header !== 'object') throw new CheckpointError(`${file}: corrupt header`);
  if (body.length !== header.bytes)
    throw new CheckpointError(`${file}: truncated: expected ${header.bytes} data bytes, found ${body.length}`);
  if (createHash('sha256').update(body).digest('hex') !== header.sha256)
    throw new CheckpointError(`${file}: checksum mismatch (corrupt data)`);
  // the header is untrusted too (checkpoints and task results arrive from other hosts): every entry must lie in the body
  if (!header || typeof header !== 'object' || !Array.isArray(header.tensors))
    throw new CheckpointError(`${file}: corrupt header (no tensor table)`);
  for (const e of header.tensors) {
    const ok =
      e &&
      typeof e === 'object' &&
      typeof e.name === 'string' &&
      Number.isSafeInteger(e.offset) &&
      Number.isSafeInteger(e.length) &&
      e.offset >= 0 &&
      e.length >= 0 &&
      e.offset + e.length * 4 <= body.length;
    if (!ok)
      throw new CheckpointError(
        `${file}: corrupt header (tensor entry ${JSON.stringify(e)?.slice(0, 100)} outside the data)`,
      );
  }
  const tensors = new Map<string, Float32Array>();
  for (const e of header.tensors) {
    const copy = new Float32Array(e.length);
    new Uint8Array(copy.buffer).set(body.subarray(e.offset, e.offset + e.length * 4));
    tensors.set(e.name, copy);
  }
  return { meta: header.meta, tensors };
}

export function writeCheckpoint(file: string, meta: unknown, tensors: Map<string, Float32Array>): void {
  writeFileAtomic(file, encodeCheckpoint(meta, tensors));
}

export function readCheckpoint<M>(file: string): Checkpoint<M> {
  let buf: Buffer;
  try {
    buf = fs.readFileSync(file);
  } catch (e) {
    throw new CheckpointError(`${file}: ${(e as Error).message}`);
  }
  return decodeCheckpoint<M>(buf, file);
}
