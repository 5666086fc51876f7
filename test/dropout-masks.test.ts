// Dropout masks drawn by the WebAssembly kernel (engine/train/dropout-masks.ts): the stream is xoshiro128++
// per lane, the masks have the right values and rate, keys and sites give independent masks, and the
// data-parallel shard graphs take them as inputs.
import assert from 'node:assert/strict';
import { DropoutMasks, type MaskSpec } from '../engine/train/dropout-masks.ts';
import { buildCnnShardGraph } from '../engine/train/data-parallel.ts';
import { splitmix32, mixSeeds } from '../engine/util/random.ts';

/** xoshiro128++ (Blackman and Vigna), one 32-bit output per call, as in the reference C code. */
function xoshiro128pp(s: Uint32Array): () => number {
  const rotl = (x: number, k: number) => ((x << k) | (x >>> (32 - k))) >>> 0;
  return () => {
    const result = (rotl((s[0] + s[3]) >>> 0, 7) + s[0]) >>> 0;
    const t = (s[1] << 9) >>> 0;
    s[2] ^= s[0];
    s[3] ^= s[1];
    s[1] ^= s[2];
    s[0] ^= s[3];
    s[2] ^= t;
    s[3] = rotl(s[3], 11);
    return result;
  };
}

describe('dropout masks', () => {
  const spec = (name: string, shape: number[], p: number): MaskSpec => ({ name, shape, p });

  it('are xoshiro128++ streams, one per lane, seeded from the key by splitmix32', () => {
    const p = 0.3,
      n = 1001; // not a multiple of 4: the last vector is cut
    const [mask] = new DropoutMasks([spec('m', [n], p)]).draw(7, 42);
    const next = splitmix32(mixSeeds(7, 42, 0)),
      words = Array.from({ length: 16 }, next);
    const lanes = [0, 1, 2, 3].map(l =>
      xoshiro128pp(Uint32Array.from([words[l], words[4 + l], words[8 + l], words[12 + l]])),
    );
    const threshold = Math.round(p * 2 ** 32),
      keep = Math.fround(1 / (1 - p));
    for (let i = 0; i < n; i++) assert.equal(mask[i], lanes[i % 4]() >= threshold ? keep : 0, `element ${i}`);
  });

  it('keep 1 - p of the elements at 1 / (1 - p), the rest 0, in every lane', () => {
    for (const p of [0.2, 0.5]) {
      const n = 400_000,
        [m] = new DropoutMasks([spec('m', [n], p)]).draw(1);
      const keep = Math.fround(1 / (1 - p)),
        perLane = [0, 0, 0, 0];
      for (let i = 0; i < n; i++) {
        assert.ok(m[i] === 0 || m[i] === keep, `value ${m[i]}`);
        if (m[i]) perLane[i % 4]++;
      }
      for (const k of perLane) {
        const share = k / (n / 4),
          sd = Math.sqrt((p * (1 - p)) / (n / 4));
        assert.ok(Math.abs(share - (1 - p)) < 5 * sd, `p=${p}: kept ${share}, expected ${1 - p} ± ${5 * sd}`);
      }
    }
  });

  it('the same key draws the same masks; other keys, other sites and neighbours are uncorrelated', () => {
    const n = 200_000,
      specs = [spec('a', [n], 0.5), spec('b', [n], 0.5)];
    const masks = new DropoutMasks(specs);
    const first = masks.draw(3, 9).map(m => m.slice());
    assert.deepEqual(masks.draw(3, 9), first);
    const other = masks.draw(3, 10).map(m => m.slice());
    // for independent fair masks, the share of equal elements is 1/2 with sd 1/(2 sqrt(n))
    const agree = (x: Float32Array, y: Float32Array, shift = 0) => {
      let k = 0;
      for (let i = 0; i + shift < n; i++) if ((x[i] === 0) === (y[i + shift] === 0)) k++;
      return k / (n - shift);
    };
    const tol = 5 / (2 * Math.sqrt(n));
    for (const [what, share] of [
      ['another key', agree(first[0], other[0])],
      ['another site', agree(first[0], first[1])],
      ['the next element', agree(first[0], first[0], 1)],
      ['the next vector', agree(first[0], first[0], 4)],
    ] as const)
      assert.ok(Math.abs(share - 0.5) < tol, `${what}: ${share} of elements agree`);
  });

  it('a data-parallel CNN shard graph has one mask input per dropout site', () => {
    const { masks } = buildCnnShardGraph(8, 16);
    assert.deepEqual(
      masks.map(s => [s.name, s.shape.join('x'), s.p]),
      [
        ['mask.0', '32x8x14x14', 0.2],
        ['mask.1', '64x8x7x7', 0.2],
        ['mask.2', '128x8x4x4', 0.2],
        ['mask.3', '8x625', 0.2],
      ],
    );
  });
});
