import { strict as assert } from 'node:assert';
import { createHash, randomBytes } from 'node:crypto';
import { Reassembler, chunkRoom, sendChunked } from '../bus/chunking.ts';
import { decodeEnvelope, type TensorChunkBody } from '../bus/codec.ts';
import type { BusMessage, Subscription, Transport } from '../bus/transport.ts';
import { Rng } from '../engine/util/random.ts';

/** Records published messages and delivers them to exact-subject subscribers; refuses oversized payloads like NATS. */
class FakeTransport implements Transport {
  readonly sent: BusMessage[] = [];
  private handlers: { subject: string; handler: (m: BusMessage) => void }[] = [];
  constructor(readonly maxPayload: number) {}
  publish(subject: string, data: Uint8Array): void {
    if (data.length > this.maxPayload) throw new Error(`payload of ${data.length} bytes exceeds ${this.maxPayload}`);
    const msg = { subject, data };
    this.sent.push(msg);
    for (const h of this.handlers) if (h.subject === subject) h.handler(msg);
  }
  subscribe(subject: string, handler: (m: BusMessage) => void): Subscription {
    const entry = { subject, handler };
    this.handlers.push(entry);
    return {
      unsubscribe: () => {
        this.handlers = this.handlers.filter(h => h !== entry);
      },
    };
  }
  request(): Promise<BusMessage> {
    return Promise.reject(new Error('not supported'));
  }
  respond(): void {}
  async flush(): Promise<void> {}
  async close(): Promise<void> {}
}

function chunkOf(msg: BusMessage): TensorChunkBody {
  const r = decodeEnvelope(msg.data);
  assert.ok(r.ok, r.ok ? '' : r.reason);
  assert.equal(r.envelope.body.kind, 'chunk');
  return r.envelope.body.value as TensorChunkBody;
}

/** A reassembler that records what it reports. */
function collector(opts: { maxBytes?: number; timeoutMs?: number } = {}) {
  const done = new Map<string, Uint8Array>();
  const errors: { id: string; reason: string }[] = [];
  const r = new Reassembler({
    ...opts,
    onComplete: (id, p) => done.set(id, p),
    onError: (id, reason) => errors.push({ id, reason }),
  });
  return { r, done, errors };
}

async function chunksFor(payload: Uint8Array, maxPayload: number, transferId = 't1'): Promise<TensorChunkBody[]> {
  const t = new FakeTransport(maxPayload);
  await sendChunked(t, 'data', payload, { transferId, sender: 'w1' });
  return t.sent.map(chunkOf);
}

describe('bus chunking', () => {
  const payload = randomBytes(1 << 20);

  for (const maxPayload of [65536, 1024]) {
    it(`sends 1 MB through maxPayload ${maxPayload} and reassembles it identically`, async () => {
      const t = new FakeTransport(maxPayload);
      const { r, done, errors } = collector();
      t.subscribe('data', m => r.accept(chunkOf(m)));
      const { transferId, chunks } = await sendChunked(t, 'data', payload, { sender: 'w1' });
      assert.equal(t.sent.length, chunks);
      for (const m of t.sent) assert.ok(m.data.length <= maxPayload, `${m.data.length} > ${maxPayload}`);
      // The overhead is measured, not guessed: chunks are nearly full.
      assert.ok(t.sent[0].data.length > maxPayload - 16, `first chunk only ${t.sent[0].data.length} bytes`);
      assert.ok(chunks <= Math.ceil(payload.length / (maxPayload - 200)));
      assert.deepEqual(errors, []);
      assert.ok(Buffer.from(done.get(transferId)!).equals(payload));
      assert.deepEqual(r.stats, { completed: 1, failed: 0, dropped: 0, pending: 0 });
    });
  }

  it('sends empty and one-byte payloads as a single chunk', async () => {
    for (const p of [new Uint8Array(0), new Uint8Array([42])]) {
      const chunks = await chunksFor(p, 1024);
      assert.equal(chunks.length, 1);
      const { r, done } = collector();
      r.accept(chunks[0]);
      assert.deepEqual(Array.from(done.get('t1')!), Array.from(p));
    }
  });

  it('refuses a maxPayload too small for the chunk header', async () => {
    await assert.rejects(sendChunked(new FakeTransport(60), 'data', payload), /leaves no room/);
    assert.ok(chunkRoom(1024, 'x', '', 10, new Uint8Array(32)) > 900);
  });

  it('reassembles out-of-order and duplicated delivery', async () => {
    const chunks = await chunksFor(payload, 1024);
    const rng = new Rng(3);
    const shuffled = [...chunks, ...chunks.slice(0, 50)];
    for (let i = shuffled.length - 1; i > 0; i--) {
      const j = rng.int(i + 1);
      [shuffled[i], shuffled[j]] = [shuffled[j], shuffled[i]];
    }
    const { r, done, errors } = collector();
    for (const c of shuffled) r.accept(c);
    assert.deepEqual(errors, []);
    assert.ok(Buffer.from(done.get('t1')!).equals(payload));
    assert.equal(r.stats.completed, 1);
    assert.equal(r.stats.pending, 0);
  });

  it('reassembles interleaved transfers', async () => {
    const a = await chunksFor(payload.subarray(0, 5000), 1024, 'a');
    const b = await chunksFor(payload.subarray(5000, 9000), 1024, 'b');
    const { r, done } = collector();
    for (let i = 0; i < Math.max(a.length, b.length); i++) {
      if (b[i]) r.accept(b[i]);
      if (a[i]) r.accept(a[i]);
    }
    assert.ok(Buffer.from(done.get('a')!).equals(payload.subarray(0, 5000)));
    assert.ok(Buffer.from(done.get('b')!).equals(payload.subarray(5000, 9000)));
  });

  it('fails the SHA-256 check when one byte is flipped', async () => {
    const chunks = await chunksFor(payload.subarray(0, 100_000), 4096);
    const bad = chunks[5].data.slice();
    bad[17] ^= 0x01;
    chunks[5] = { ...chunks[5], data: bad };
    const { r, done, errors } = collector();
    for (const c of chunks) r.accept(c);
    assert.equal(done.size, 0);
    assert.equal(errors.length, 1);
    assert.equal(errors[0].id, 't1');
    assert.match(errors[0].reason, /SHA-256/);
    assert.deepEqual(r.stats, { completed: 0, failed: 1, dropped: 0, pending: 0 });
  });

  it('drops a transfer missing a chunk after the timeout, on sweep', async () => {
    const chunks = await chunksFor(payload.subarray(0, 10_000), 1024);
    const { r, done, errors } = collector({ timeoutMs: 1000 });
    for (const c of chunks) if (c.index !== 3) r.accept(c);
    r.sweep(Date.now() + 500);
    assert.equal(r.stats.pending, 1);
    r.sweep(Date.now() + 1001);
    assert.equal(done.size, 0);
    assert.deepEqual(r.stats, { completed: 0, failed: 0, dropped: 1, pending: 0 });
    assert.match(errors[0].reason, new RegExp(`timed out .* ${chunks.length - 1} of ${chunks.length} chunks`));
    // The missing chunk arriving late does not resurrect the transfer.
    r.accept(chunks[3]);
    assert.equal(done.size, 0);
    assert.equal(r.stats.pending, 0);
  });

  it('refuses a transfer larger than maxBytes', async () => {
    const chunks = await chunksFor(payload.subarray(0, 10_000), 1024);
    const { r, done, errors } = collector({ maxBytes: 9_999 });
    for (const c of chunks) r.accept(c);
    assert.equal(done.size, 0);
    assert.equal(errors.length, 1, 'reported once, later chunks ignored');
    assert.match(errors[0].reason, /10000 bytes exceeds the limit of 9999/);
    assert.deepEqual(r.stats, { completed: 0, failed: 1, dropped: 0, pending: 0 });
  });

  it('rejects inconsistent chunk headers', async () => {
    const chunks = await chunksFor(payload.subarray(0, 10_000), 1024);
    const cases: [Partial<TensorChunkBody>, RegExp][] = [
      [{ count: chunks.length + 1 }, /inconsistent chunk header \(count/],
      [{ totalBytes: 10_001 }, /inconsistent chunk header \(total_bytes/],
      [{ sha256: createHash('sha256').update('other').digest() }, /inconsistent chunk header \(sha256/],
    ];
    for (const [change, reason] of cases) {
      const { r, done, errors } = collector();
      r.accept(chunks[0]);
      r.accept({ ...chunks[1], ...change });
      for (const c of chunks.slice(2)) r.accept(c);
      assert.equal(done.size, 0);
      assert.equal(errors.length, 1);
      assert.match(errors[0].reason, reason);
      assert.equal(r.stats.failed, 1);
      assert.equal(r.stats.pending, 0);
    }
  });

  it('rejects malformed chunks and sizes that do not add up, without throwing', () => {
    const sha256 = createHash('sha256').update(new Uint8Array(10)).digest();
    const base: TensorChunkBody = {
      transferId: 'x',
      index: 0,
      count: 2,
      totalBytes: 10,
      sha256,
      data: new Uint8Array(5),
    };
    const cases: [any, RegExp][] = [
      [null, /without a transfer id/],
      [{ ...base, transferId: '' }, /without a transfer id/],
      [{ ...base, count: 0 }, /invalid count 0/],
      [{ ...base, index: 2 }, /index 2 out of range/],
      [{ ...base, index: -1 }, /index -1 out of range/],
      [{ ...base, totalBytes: -5 }, /invalid total_bytes/],
      [{ ...base, count: 11 }, /count 11 exceeds total_bytes 10/],
      [{ ...base, sha256: new Uint8Array(3) }, /sha256 is not 32 bytes/],
      [{ ...base, data: 'abc' }, /data is not bytes/],
      [{ ...base, data: new Uint8Array(11) }, /exceeds total_bytes/],
    ];
    for (const [chunk, reason] of cases) {
      const { r, errors } = collector();
      r.accept(chunk);
      assert.equal(errors.length, 1, String(reason));
      assert.match(errors[0].reason, reason);
    }
    // Two chunks of 6 bytes overflow total_bytes 10; two of 4 fall short of it.
    for (const [size, reason] of [
      [6, /more than total_bytes 10/],
      [4, /add up to 8 bytes, expected 10/],
    ] as const) {
      const { r, errors } = collector();
      r.accept({ ...base, data: new Uint8Array(size) });
      r.accept({ ...base, index: 1, data: new Uint8Array(size) });
      assert.match(errors[0].reason, reason);
      assert.deepEqual(r.stats, { completed: 0, failed: 1, dropped: 0, pending: 0 });
    }
    // Without onError, failures are only counted.
    const quiet = new Reassembler({ onComplete: () => assert.fail('should not complete') });
    quiet.accept({ ...base, count: 0 });
    assert.equal(quiet.stats.failed, 1);
  });
});
