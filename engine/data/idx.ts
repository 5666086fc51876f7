// IDX file format (the MNIST container): a 4-byte magic, one big-endian uint32 per dimension, then the raw bytes.
// We only accept what this project trains on: unsigned bytes, 1-D (labels) or 3-D (images), raw or gzip.
import * as fs from 'node:fs';
import { gunzipSync, gzipSync } from 'node:zlib';
import { writeFileAtomic } from '../util/atomic.ts';

/** A malformed IDX file; the message always starts with the file path. */
export class IdxError extends Error {
  constructor(file: string, problem: string) {
    super(`${file}: ${problem}`);
    this.name = 'IdxError';
  }
}

const TYPE_UBYTE = 0x08;

export function isGzip(bytes: Uint8Array): boolean {
  return bytes.length >= 2 && bytes[0] === 0x1f && bytes[1] === 0x8b;
}

/** Parse IDX bytes (gzip or raw) already in memory; `file` is only used in error messages. */
export function parseIdx(bytes: Uint8Array, file: string): { dims: number[]; data: Uint8Array } {
  if (isGzip(bytes)) {
    try {
      bytes = gunzipSync(bytes);
    } catch (e) {
      throw new IdxError(file, `corrupt gzip data: ${(e as Error).message}`);
    }
  }
  if (bytes.length < 4) throw new IdxError(file, `truncated: ${bytes.length} bytes is too short for an IDX header`);
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const magic = view.getUint32(0);
  const hex = '0x' + magic.toString(16).padStart(8, '0');
  if (bytes[0] !== 0 || bytes[1] !== 0) throw new IdxError(file, `bad magic number ${hex}: not an IDX file`);
  if (bytes[2] !== TYPE_UBYTE) {
    throw new IdxError(
      file,
      `unsupported IDX type code 0x${bytes[2].toString(16).padStart(2, '0')} (magic ${hex}); only unsigned byte (0x08) is supported`,
    );
  }
  const nd = bytes[3];
  if (nd !== 1 && nd !== 3) {
    throw new IdxError(
      file,
      `unsupported number of dimensions ${nd} (magic ${hex}); expected 1 (labels, 0x00000801) or 3 (images, 0x00000803)`,
    );
  }
  const header = 4 + 4 * nd;
  if (bytes.length < header)
    throw new IdxError(file, `truncated: expected at least ${header} header bytes, found ${bytes.length}`);
  const dims: number[] = [];
  for (let i = 0; i < nd; i++) {
    const d = view.getUint32(4 + 4 * i);
    if (d === 0) throw new IdxError(file, `dimension ${i} is 0`);
    dims.push(d);
  }
  const expected = header + dims.reduce((a, b) => a * b, 1);
  if (bytes.length < expected) throw new IdxError(file, `truncated: expected ${expected} bytes, found ${bytes.length}`);
  if (bytes.length > expected)
    throw new IdxError(file, `extra bytes: expected ${expected} bytes, found ${bytes.length}`);
  return { dims, data: new Uint8Array(bytes.buffer, bytes.byteOffset + header, expected - header) };
}

export function readIdx(file: string): { dims: number[]; data: Uint8Array } {
  let bytes: Uint8Array;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    throw new IdxError(file, `cannot read: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  return parseIdx(bytes, file);
}

export function readImages(file: string): { count: number; rows: number; cols: number; pixels: Uint8Array } {
  const { dims, data } = readIdx(file);
  if (dims.length !== 3)
    throw new IdxError(file, `expected an image file (3-D, magic 0x00000803), found ${dims.length}-D`);
  return { count: dims[0], rows: dims[1], cols: dims[2], pixels: data };
}

export function readLabels(file: string): Uint8Array {
  const { dims, data } = readIdx(file);
  if (dims.length !== 1)
    throw new IdxError(file, `expected a label file (1-D, magic 0x00000801), found ${dims.length}-D`);
  return data;
}

/** Write an unsigned-byte IDX file, gzip-compressed when the name ends in .gz (used for test fixtures). */
export function writeIdx(file: string, dims: number[], data: Uint8Array): void {
  const n = dims.reduce((a, b) => a * b, 1);
  if (dims.length < 1 || dims.length > 255) throw new Error(`writeIdx: bad number of dimensions ${dims.length}`);
  if (data.length !== n) throw new Error(`writeIdx: dims ${dims.join('x')} need ${n} bytes, got ${data.length}`);
  const out = new Uint8Array(4 + 4 * dims.length + n);
  const view = new DataView(out.buffer);
  view.setUint32(0, (TYPE_UBYTE << 8) | dims.length);
  dims.forEach((d, i) => view.setUint32(4 + 4 * i, d));
  out.set(data, 4 + 4 * dims.length);
  writeFileAtomic(file, file.endsWith('.gz') ? gzipSync(out) : out);
}
