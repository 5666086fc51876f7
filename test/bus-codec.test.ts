import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';
import {
  DType,
  Device,
  PROTOCOL_VERSION,
  bytesToTensor,
  decodeEnvelope,
  dtypeOf,
  encodeEnvelope,
  jsonField,
  parseJsonField,
  tensorToBytes,
  type EnvelopeBody,
} from '../bus/codec.ts';
import { Rng } from '../engine/util/random.ts';

// The raw protobufjs types, to craft envelopes that encodeEnvelope would refuse to write.
const here = path.dirname(fileURLToPath(import.meta.url));
const root = protobuf.loadSync(path.join(here, '../proto/cluster.proto'));
const RawEnvelope = root.lookupType('fleet.cluster.Envelope');
const raw = (obj: object) => RawEnvelope.encode(RawEnvelope.fromObject(obj)).finish();

const sha = new Uint8Array(32).map((_, i) => i);
const samples: EnvelopeBody[] = [
  { kind: 'announce', value: { workerId: 'w1', device: Device.CUDA, threads: 8, version: '0.1.0', gpuName: 'H200' } },
  {
    kind: 'heartbeat',
    value: { workerId: 'w1', uptimeMs: 2 ** 40 + 3, runningTaskIds: ['t1', 't2'], samplesProcessed: 2 ** 33 + 7 },
  },
  {
    kind: 'lease',
    value: {
      taskId: 't1',
      jobId: 'j1',
      attempt: 2,
      leaseMs: 30000,
      taskJson: jsonField({ kind: 'cnn', epochs: 3 }),
      leaseToken: 'tok',
    },
  },
  {
    kind: 'heartbeat',
    value: {
      workerId: 'w1',
      uptimeMs: 5,
      runningTaskIds: ['j1/t1'],
      samplesProcessed: 0,
      running: [{ jobId: 'j1', taskId: 't1', attempt: 2, leaseToken: 'tok' }],
    },
  },
  {
    kind: 'progress',
    value: {
      taskId: 't1',
      jobId: 'j1',
      epoch: 1,
      batch: 10,
      batches: 100,
      loss: 0.25,
      metricsJson: jsonField({}),
      attempt: 2,
      leaseToken: 'tok',
    },
  },
  {
    kind: 'progress',
    value: {
      taskId: 't1',
      jobId: 'j1',
      epoch: 1,
      batch: 10,
      batches: 100,
      loss: 0.25,
      metricsJson: jsonField({ acc: 0.9 }),
    },
  },
  {
    kind: 'result',
    value: {
      taskId: 't1',
      jobId: 'j1',
      workerId: 'w1',
      ok: true,
      error: '',
      resultJson: jsonField({ accuracy: 0.99 }),
      tensors: [
        { name: 'probs', shape: [10000, 10], dtype: DType.FLOAT32, transferId: 'x1' },
        { name: 'ids', shape: [], dtype: DType.INT64, transferId: 'x2' },
      ],
      attempt: 2,
      leaseToken: 'tok',
      resultSha256: sha,
    },
  },
  {
    kind: 'chunk',
    value: { transferId: 'x1', index: 3, count: 4, totalBytes: 1000, sha256: sha, data: new Uint8Array([1, 2, 3]) },
  },
  { kind: 'error', value: { code: 'BAD_TASK', message: 'no such task' } },
];

/** Uint8Array and Buffer compare by content. */
function plain(x: any): any {
  if (x instanceof Uint8Array) return Array.from(x);
  if (Array.isArray(x)) return x.map(plain);
  if (x && typeof x === 'object') return Object.fromEntries(Object.entries(x).map(([k, v]) => [k, plain(v)]));
  return x;
}

function expectFail(bytes: Uint8Array, pattern?: RegExp, limits?: { maxBytes?: number }): string {
  const r = decodeEnvelope(bytes, limits);
  assert.equal(r.ok, false, 'expected decoding to fail');
  if (r.ok) throw new Error('unreachable');
  assert.ok(r.reason.length > 0);
  if (pattern) assert.match(r.reason, pattern);
  return r.reason;
}

describe('bus codec', () => {
  it('enum constants match proto/cluster.proto', () => {
    assert.deepEqual(
      { ...root.lookupEnum('fleet.cluster.Device').values },
      { DEVICE_UNSPECIFIED: 0, DEVICE_CPU: Device.CPU, DEVICE_CUDA: Device.CUDA },
    );
    assert.deepEqual(
      { ...root.lookupEnum('fleet.cluster.DType').values },
      { DTYPE_UNSPECIFIED: 0, DTYPE_FLOAT32: DType.FLOAT32, DTYPE_INT64: DType.INT64, DTYPE_UINT8: DType.UINT8 },
    );
  });

  it('round-trips every body kind', () => {
    for (const body of samples) {
      const before = Date.now();
      const r = decodeEnvelope(encodeEnvelope(body, 'coordinator'));
      assert.ok(r.ok, r.ok ? '' : r.reason);
      assert.equal(r.envelope.version, PROTOCOL_VERSION);
      assert.equal(r.envelope.sender, 'coordinator');
      assert.ok(r.envelope.sentAtMs >= before && r.envelope.sentAtMs <= Date.now());
      assert.deepEqual(plain(r.envelope.body), plain(body), body.kind);
    }
  });

  it('round-trips defaults (zeros, empty strings and lists, failed results)', () => {
    const body: EnvelopeBody = {
      kind: 'result',
      value: {
        taskId: 't',
        jobId: 'j',
        workerId: 'w',
        ok: false,
        error: 'out of memory',
        resultJson: new Uint8Array(0),
        tensors: [],
        attempt: 0,
        leaseToken: 't',
        resultSha256: new Uint8Array(0),
      },
    };
    const r = decodeEnvelope(encodeEnvelope(body, ''));
    assert.ok(r.ok);
    assert.deepEqual(plain(r.envelope.body), plain(body));
    const hb = decodeEnvelope(
      encodeEnvelope({ kind: 'heartbeat', value: { workerId: 'w', uptimeMs: 0, runningTaskIds: [] } }, 'w'),
    );
    assert.ok(hb.ok && hb.envelope.body.kind === 'heartbeat');
    assert.deepEqual(hb.envelope.body.value.runningTaskIds, []);
    assert.equal(
      hb.envelope.body.value.samplesProcessed,
      0,
      'a heartbeat without samples_processed (an older worker) reads as 0',
    );
  });

  it('parses JSON fields', () => {
    const lease = decodeEnvelope(encodeEnvelope(samples[2], 'c'));
    assert.ok(lease.ok && lease.envelope.body.kind === 'lease');
    assert.deepEqual(parseJsonField(lease.envelope.body.value.taskJson, 'task_json'), {
      ok: true,
      value: { kind: 'cnn', epochs: 3 },
    });
    assert.deepEqual(parseJsonField(new Uint8Array(0), 'x'), { ok: true, value: undefined });
    const bad = parseJsonField(new TextEncoder().encode('{"a":'), 'task_json');
    assert.ok(!bad.ok && /task_json is not valid JSON/.test(bad.reason));
    const notUtf8 = parseJsonField(new Uint8Array([0x22, 0xff, 0x22]), 'metrics_json');
    assert.ok(!notUtf8.ok && /metrics_json/.test(notUtf8.reason));
  });

  it('rejects a wrong or missing version, naming both versions', () => {
    const reason = expectFail(raw({ version: 2, sender: 's', heartbeat: { workerId: 'w' } }), /version 2/);
    assert.match(reason, new RegExp(`expected ${PROTOCOL_VERSION}`));
    expectFail(raw({ sender: 's', heartbeat: { workerId: 'w' } }), /version 0 \(missing\), expected 1/);
  });

  it('rejects a missing body, out-of-range enums and unspecified enums', () => {
    expectFail(raw({ version: 1, sender: 's' }), /no body/);
    expectFail(raw({ version: 1, announce: { workerId: 'w', device: 7 } }), /announce\.device 7 is not a known Device/);
    expectFail(raw({ version: 1, announce: { workerId: 'w' } }), /announce\.device is unspecified/);
    const tensors = [{ name: 'p', shape: [2], dtype: 9, transferId: 'x' }];
    expectFail(
      raw({ version: 1, result: { taskId: 't', jobId: 'j', workerId: 'w', tensors } }),
      /tensors\[0\]\.dtype 9/,
    );
  });

  it('rejects missing ids, oversized fields and unsafe 64-bit integers', () => {
    expectFail(raw({ version: 1, heartbeat: {} }), /heartbeat\.worker_id is empty/);
    expectFail(raw({ version: 1, heartbeat: { workerId: 'w'.repeat(10_000) } }), /worker_id is longer than/);
    expectFail(
      raw({
        version: 1,
        heartbeat: { workerId: 'w', runningTaskIds: Array.from({ length: 10_001 }, (_, i) => `t${i}`) },
      }),
      /more than 10000 entries/,
    );
    expectFail(raw({ version: 1, error: { code: 'E', message: 'm'.repeat(70_000) } }), /error\.message is longer/);
    expectFail(
      raw({ version: 1, heartbeat: { workerId: 'w', uptimeMs: '18446744073709551615' } }),
      /uptime_ms is not a uint64 below 2\^53/,
    );
    expectFail(
      raw({ version: 1, heartbeat: { workerId: 'w', samplesProcessed: '18446744073709551615' } }),
      /samples_processed is not a uint64 below 2\^53/,
    );
    const shape = new Array(17).fill(1);
    expectFail(
      raw({
        version: 1,
        result: { taskId: 't', jobId: 'j', workerId: 'w', tensors: [{ name: 'p', shape, dtype: 1, transferId: 'x' }] },
      }),
      /more than 16 dimensions/,
    );
    const big = encodeEnvelope(
      {
        kind: 'chunk',
        value: { transferId: 'x', index: 0, count: 1, totalBytes: 5000, sha256: sha, data: new Uint8Array(5000) },
      },
      's',
    );
    expectFail(big, /exceeds the limit of 4096/, { maxBytes: 4096 });
    assert.ok(decodeEnvelope(big, { maxBytes: 8192 }).ok);
  });

  it('rejects JSON fields that do not parse and inconsistent chunks', () => {
    const bad = new TextEncoder().encode('{oops');
    expectFail(
      raw({ version: 1, lease: { taskId: 't', jobId: 'j', taskJson: bad } }),
      /lease\.task_json is not valid JSON/,
    );
    expectFail(raw({ version: 1, lease: { taskId: 't', jobId: 'j' } }), /lease\.task_json is empty/);
    expectFail(raw({ version: 1, progress: { taskId: 't', jobId: 'j', metricsJson: bad } }), /progress\.metrics_json/);
    expectFail(
      raw({ version: 1, result: { taskId: 't', jobId: 'j', workerId: 'w', resultJson: bad } }),
      /result\.result_json/,
    );
    expectFail(
      raw({ version: 1, chunk: { transferId: 'x', index: 4, count: 4, totalBytes: 9, sha256: sha } }),
      /index 4 is not below count 4/,
    );
    expectFail(
      raw({ version: 1, chunk: { transferId: 'x', index: 0, count: 1, totalBytes: 9, sha256: sha.subarray(1) } }),
      /sha256 has 31 bytes/,
    );
  });

  it('encodeEnvelope throws on an invalid body', () => {
    assert.throws(
      () =>
        encodeEnvelope(
          { kind: 'announce', value: { workerId: '', device: Device.CPU, threads: 1, version: '', gpuName: '' } },
          's',
        ),
      /worker_id is empty/,
    );
    assert.throws(
      () =>
        encodeEnvelope(
          {
            kind: 'lease',
            value: { taskId: 't', jobId: 'j', attempt: -1, leaseMs: 1, taskJson: jsonField({}), leaseToken: 't' },
          },
          's',
        ),
      /attempt/,
    );
    assert.throws(() => encodeEnvelope({ kind: 'nope' } as any, 's'));
  });

  it('never throws on random garbage, truncations or flipped bytes (fuzz)', () => {
    const rng = new Rng(7);
    for (let i = 0; i < 3000; i++) {
      const bytes = new Uint8Array(rng.int(200)).map(() => rng.int(256));
      expectFail(bytes);
    }
    const encoded = samples.map(b => encodeEnvelope(b, 'fuzzer'));
    for (const e of encoded) for (let n = 0; n < e.length; n++) expectFail(e.subarray(0, n));
    for (let i = 0; i < 3000; i++) {
      const e = encoded[rng.int(encoded.length)].slice();
      for (let k = 1 + rng.int(3); k > 0; k--) e[rng.int(e.length)] = rng.int(256);
      const r = decodeEnvelope(e);
      // Whatever survives the checks must be a valid body: the decoder and the encoder agree on validity.
      if (r.ok) assert.ok(encodeEnvelope(r.envelope.body, r.envelope.sender).length > 0);
      else assert.ok(r.reason.length > 0);
    }
    assert.deepEqual(decodeEnvelope('not bytes' as any), { ok: false, reason: 'envelope is not bytes' });
  });

  it('tensor bytes round-trip without copies for every dtype', () => {
    const f = new Float32Array([1.5, -2, Math.PI, 0, 1e-30, -Infinity]);
    const fb = tensorToBytes(f);
    assert.equal(fb.buffer, f.buffer);
    assert.deepEqual(Array.from(fb.subarray(0, 4)), [0, 0, 0xc0, 0x3f]); // 1.5 little-endian
    const rf = bytesToTensor(fb, dtypeOf(f), [2, 3]);
    assert.ok(rf.ok);
    assert.deepEqual(rf.tensor, f);
    assert.equal(rf.tensor.buffer, f.buffer);

    const l = new BigInt64Array([1n, -2n, 2n ** 62n]);
    const rl = bytesToTensor(tensorToBytes(l), DType.INT64, [3]);
    assert.ok(rl.ok && rl.tensor instanceof BigInt64Array);
    assert.deepEqual(Array.from(rl.tensor as BigInt64Array), [1n, -2n, 2n ** 62n]);

    const u = new Uint8Array([0, 255, 7]);
    const ru = bytesToTensor(tensorToBytes(u), DType.UINT8, [1, 3]);
    assert.ok(ru.ok);
    assert.deepEqual(ru.tensor, u);
    assert.equal(dtypeOf(u), DType.UINT8);
    assert.equal(dtypeOf(l), DType.INT64);
  });

  it('copies unaligned bytes into an aligned buffer', () => {
    const f = new Float32Array([1, 2, 3]);
    const padded = new Uint8Array(13);
    padded.set(tensorToBytes(f), 1);
    const r = bytesToTensor(padded.subarray(1), DType.FLOAT32, [3]);
    assert.ok(r.ok);
    assert.deepEqual(Array.from(r.tensor as Float32Array), [1, 2, 3]);
    const l = new BigInt64Array([5n, -6n]);
    const padded8 = new Uint8Array(20);
    padded8.set(tensorToBytes(l), 4);
    const rl = bytesToTensor(padded8.subarray(4), DType.INT64, [2]);
    assert.ok(rl.ok);
    assert.deepEqual(Array.from(rl.tensor as BigInt64Array), [5n, -6n]);
  });

  it('rejects tensor bytes that do not match the shape or dtype', () => {
    const b = tensorToBytes(new Float32Array(6));
    const r = bytesToTensor(b, DType.FLOAT32, [2, 4]);
    assert.ok(!r.ok && /needs 32 bytes, got 24/.test(r.reason));
    assert.ok(!bytesToTensor(b, DType.INT64, [2]).ok);
    assert.ok(bytesToTensor(b, DType.INT64, [3]).ok); // same 24 bytes, read as 3 int64
    assert.ok(!bytesToTensor(b, DType.FLOAT32, [-6, -1]).ok);
    assert.ok(!bytesToTensor(b, DType.FLOAT32, [6.5]).ok);
    assert.ok(!bytesToTensor(b, DType.UNSPECIFIED, [6]).ok);
    assert.ok(!bytesToTensor(b, 42 as any, [24]).ok);
    assert.ok(bytesToTensor(new Uint8Array(0), DType.FLOAT32, [0, 5]).ok);
  });
});
