// Property-based fuzzing (fast-check, bounded runs) of every decoder that takes bytes from another host: the
// bus envelope and its JSON fields, raw tensors, chunk reassembly and the member-result codec. Each never throws
// anything but its own error type, and never holds more than its declared caps.
import { strict as assert } from 'node:assert';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import fc from 'fast-check';
import protobuf from 'protobufjs';
import {
  DType,
  FIELD_LIMITS,
  PROTOCOL_VERSION,
  bytesToTensor,
  decodeEnvelope,
  encodeEnvelope,
  jsonField,
  parseJsonField,
  type EnvelopeBody,
} from '../bus/codec.ts';
import { Reassembler } from '../bus/chunking.ts';
import { encodeMemberResult, decodeMemberResult, ResultCodecError } from '../engine/ensemble/result-codec.ts';
import { fakeMemberResult } from './helpers/jobs.ts';

const here = path.dirname(fileURLToPath(import.meta.url));
const RawEnvelope = protobuf.loadSync(path.join(here, '../proto/cluster.proto')).lookupType('fleet.cluster.Envelope');
const RUNS = { numRuns: 300, seed: 16 };

/** Byte strings: random, or a valid envelope with flipped bytes, cut short or grown. */
const valid: EnvelopeBody[] = [
  {
    kind: 'result',
    value: {
      taskId: 'member-1',
      jobId: 'job-1',
      workerId: 'w1',
      ok: true,
      error: '',
      resultJson: jsonField({ a: 1 }),
      tensors: [{ name: 'result', shape: [2, 3], dtype: DType.FLOAT32, transferId: 'x' }],
      attempt: 1,
      leaseToken: 'tok',
      resultSha256: new Uint8Array(32),
    },
  },
  {
    kind: 'heartbeat',
    value: {
      workerId: 'w1',
      uptimeMs: 5,
      runningTaskIds: ['job-1/member-1'],
      samplesProcessed: 3,
      running: [{ jobId: 'job-1', taskId: 'member-1', attempt: 1, leaseToken: 'tok' }],
    },
  },
  {
    kind: 'chunk',
    value: {
      transferId: 't',
      index: 0,
      count: 2,
      totalBytes: 6,
      sha256: new Uint8Array(32),
      data: new Uint8Array([1, 2, 3]),
    },
  },
  {
    kind: 'lease',
    value: {
      taskId: 'member-1',
      jobId: 'job-1',
      attempt: 1,
      leaseMs: 10,
      taskJson: jsonField({ id: 'member-1' }),
      leaseToken: 'tok',
    },
  },
];
const mutated = (bytes: Uint8Array) =>
  fc
    .tuple(fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { maxLength: 8 }), fc.nat(), fc.boolean())
    .map(([flips, cut, shorten]) => {
      const b = Uint8Array.from(bytes);
      for (const [i, v] of flips) b[i % b.length] = v;
      return shorten ? b.subarray(0, cut % (b.length + 1)) : b;
    });
const envelopeBytes = fc.oneof(fc.uint8Array({ maxLength: 2000 }), ...valid.map(v => mutated(encodeEnvelope(v, 'w1'))));

/** Envelopes protobuf can encode but whose fields are anything: long strings, huge numbers, missing parts. */
const anyString = fc.oneof(
  fc.string({ maxLength: 20 }),
  fc.string({ minLength: 250, maxLength: 400 }),
  fc.constant(''),
);
const anyNumber = fc.oneof(fc.nat(), fc.constant(2 ** 53 + 2), fc.constant(0xffffffff + 1), fc.integer());
const rawEnvelope = fc
  .record({
    version: fc.oneof(fc.constant(PROTOCOL_VERSION), fc.nat(3)),
    sender: anyString,
    sentAtMs: anyNumber,
    body: fc.constantFrom(
      'announce',
      'heartbeat',
      'lease',
      'result',
      'progress',
      'chunk',
      'error',
      'dpWork',
      'dpResult',
    ),
    id: anyString,
    n: anyNumber,
    list: fc.array(anyString, { maxLength: 5 }),
    bytes: fc.uint8Array({ maxLength: 40 }),
  })
  .map(r => {
    const v: Record<string, unknown> = {
      workerId: r.id,
      taskId: r.id,
      jobId: r.id,
      transferId: r.id,
      workId: r.id,
      code: r.id,
      name: r.id,
      leaseToken: r.id,
      attempt: r.n,
      index: r.n,
      count: r.n,
      totalBytes: r.n,
      step: r.n,
      shard: r.n,
      shards: r.n,
      threads: r.n,
      uptimeMs: r.n,
      runningTaskIds: r.list,
      data: r.bytes,
      sha256: r.bytes,
      taskJson: r.bytes,
      resultJson: r.bytes,
      metricsJson: r.bytes,
      specJson: r.bytes,
      resultSha256: r.bytes,
      tensors:
        r.body === 'dpResult'
          ? { name: r.id, shape: [r.n], transferId: r.id, dtype: 1 }
          : [{ name: r.id, shape: [r.n, r.n], dtype: 1 }],
      running: [{ jobId: r.id, taskId: r.id, attempt: r.n, leaseToken: r.id }],
    };
    try {
      return RawEnvelope.encode(
        RawEnvelope.fromObject({ version: r.version, sender: r.sender, sentAtMs: r.sentAtMs, [r.body]: v }),
      ).finish();
    } catch {
      return new Uint8Array([8, r.version]); // protobufjs refused the object: a bare version is still an input
    }
  });

describe('fuzzing the bus decoders and the result codec (fast-check)', () => {
  it('decodeEnvelope never throws; what it accepts respects the field caps; over-long input is refused before parsing', () => {
    fc.assert(
      fc.property(fc.oneof(envelopeBytes, rawEnvelope), bytes => {
        const d = decodeEnvelope(bytes);
        if (!d.ok) {
          assert.equal(typeof d.reason, 'string');
          return;
        }
        const v = d.envelope.body.value as unknown as Record<string, unknown>;
        assert.ok(d.envelope.sender.length <= FIELD_LIMITS.id);
        for (const [k, x] of Object.entries(v)) {
          if (typeof x === 'string')
            assert.ok(
              x.length <= (k === 'error' || k === 'message' ? FIELD_LIMITS.text : FIELD_LIMITS.id),
              `${k} too long`,
            );
          if (Array.isArray(x)) assert.ok(x.length <= FIELD_LIMITS.list, `${k} too long`);
          if (typeof x === 'number') assert.ok(Number.isFinite(x), `${k} is ${x}`);
        }
        const small = decodeEnvelope(bytes, { maxBytes: 10 });
        assert.equal(small.ok, bytes.length <= 10 && d.ok);
      }),
      RUNS,
    );
  });

  it('parseJsonField never throws', () => {
    fc.assert(
      fc.property(
        fc.oneof(
          fc.uint8Array({ maxLength: 200 }),
          fc.json().map(j => new TextEncoder().encode(j)),
        ),
        bytes => {
          const r = parseJsonField(bytes, 'field');
          assert.ok(r.ok || typeof r.reason === 'string');
        },
      ),
      RUNS,
    );
  });

  it('bytesToTensor never throws and never allocates more than the bytes it was given', () => {
    const dims = fc.oneof(fc.nat(40), fc.constant(-1), fc.constant(2 ** 40), fc.double());
    fc.assert(
      fc.property(
        fc.uint8Array({ maxLength: 256 }),
        fc.integer({ min: -1, max: 5 }),
        fc.array(dims, { maxLength: 5 }),
        (bytes, dtype, shape) => {
          const r = bytesToTensor(bytes, dtype as DType, shape);
          if (r.ok) assert.equal(r.tensor.byteLength, bytes.byteLength);
          else assert.equal(typeof r.reason, 'string');
        },
      ),
      RUNS,
    );
  });

  it('the reassembler never throws and holds at most its byte caps in unfinished transfers', () => {
    const chunk = fc.record({
      transferId: fc.constantFrom('a', 'b', 'c', ''),
      index: fc.oneof(fc.nat(5), fc.integer()),
      count: fc.oneof(fc.nat(5), fc.integer()),
      totalBytes: fc.oneof(fc.nat(3000), fc.constant(2 ** 60)),
      sha256: fc.uint8Array({ minLength: 31, maxLength: 33 }),
      data: fc.uint8Array({ maxLength: 600 }),
    });
    fc.assert(
      fc.property(fc.array(fc.tuple(chunk, fc.constantFrom('s1', 's2', '')), { maxLength: 40 }), chunks => {
        const r = new Reassembler({
          maxBytes: 2000,
          maxBytesPerSender: 2500,
          maxBytesTotal: 4000,
          onComplete: () => {},
          onError: () => {},
        });
        for (const [c, sender] of chunks) {
          r.accept(c as never, sender);
          assert.ok(r.load.bytes <= 4000, `${r.load.bytes} bytes in flight`);
        }
      }),
      RUNS,
    );
  });

  it('decodeMemberResult throws only ResultCodecError, and its tensors never exceed the input', () => {
    const good = encodeMemberResult({ ...fakeMemberResult('member-1', { val: 2, test: 3 }), history: [] });
    // a small result, so that the mutations hit the header as often as the data
    const small = encodeMemberResult({
      taskId: 't',
      seconds: 1,
      history: [],
      members: [
        {
          name: 't',
          taskId: 't',
          model: 'cnn',
          epoch: 1,
          params: { names: ['w'], shapes: [[2]], data: [new Float32Array([1, 2])] },
          buffers: { names: [], shapes: [], data: [] },
          test: { loss: 1, accuracy: 0.5, probabilities: new Float32Array(10) },
        },
      ],
    });
    const header = (json: string) => {
      const h = new TextEncoder().encode(json);
      const len = new Uint8Array(4);
      new DataView(len.buffer).setUint32(0, h.length, true);
      return new Uint8Array([...new TextEncoder().encode('FLEETCKPT1\n'), ...len, ...h]);
    };
    const hostileHeaders = fc
      .oneof(
        fc.json(),
        fc.constantFrom(
          '{"meta":null,"tensors":[],"bytes":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}',
          '{"meta":{},"tensors":[{"name":"x","offset":0,"length":1e12}],"bytes":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}',
          '{"meta":{"format":"fleet-member-result-1","members":[{}]},"tensors":{},"bytes":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}',
          // a whole result whose table claims a 40 MB tensor in an empty body
          `{"meta":{"format":"fleet-member-result-1","taskId":"t","seconds":1,"history":[],"members":[{"name":"t","taskId":"t","model":"cnn","epoch":1,` +
            `"params":{"names":["w"],"shapes":[[1]]},"buffers":{"names":[],"shapes":[]}}]},"tensors":[{"name":"0/params/w","offset":0,"length":10000000}],` +
            `"bytes":0,"sha256":"e3b0c44298fc1c149afbf4c8996fb92427ae41e4649b934ca495991b7852b855"}`,
        ),
      )
      .map(header);
    fc.assert(
      fc.property(
        fc.oneof(mutated(small), mutated(good.subarray(0, 4096)), fc.uint8Array({ maxLength: 300 }), hostileHeaders),
        bytes => {
          try {
            const r = decodeMemberResult(bytes);
            let floats = 0;
            for (const m of r.members)
              for (const t of [m.params, m.buffers, m.probe]) for (const d of t?.data ?? []) floats += d.length;
            assert.ok(floats * 4 <= bytes.length);
          } catch (e) {
            assert.ok(
              e instanceof ResultCodecError,
              `threw ${(e as Error)?.constructor?.name}: ${(e as Error)?.message}`,
            );
          }
        },
      ),
      RUNS,
    );
    assert.equal(decodeMemberResult(good).members[0].name, 'member-1'); // and a whole result still decodes
  });
});
