import { strict as assert } from 'node:assert';
import {
  sampleCropBox,
  resizeCrop,
  randomResizedCrop,
  augmentView,
  twoViews,
  DEFAULT_CROP,
  type CropOptions,
  type AugmentOptions,
  type CropBox,
} from '../engine/data/simclr-augment.ts';
import { normalise } from '../engine/data/datasets.ts';
import { Rng } from '../engine/util/random.ts';

const S = 28,
  P = S * S;
const IDENTITY: AugmentOptions = { scale: [1, 1], ratio: [1, 1], flip: 0 };

function randomImages(n: number, seed: number): Uint8Array {
  const rng = new Rng(seed);
  return Uint8Array.from({ length: n * P }, () => rng.int(256));
}

/** Could rounding sqrt(area*ratio), sqrt(area/ratio) with area, ratio in the ranges have produced w x h? */
function consistent(b: CropBox, o: CropOptions): boolean {
  const [smin, smax] = o.scale,
    [rmin, rmax] = o.ratio;
  return (
    (b.w - 0.5) * (b.h - 0.5) <= smax * P + 1e-9 &&
    (b.w + 0.5) * (b.h + 0.5) >= smin * P - 1e-9 &&
    (b.w - 0.5) / (b.h + 0.5) <= rmax + 1e-9 &&
    (b.w + 0.5) / (b.h - 0.5) >= rmin - 1e-9
  );
}

describe('simclr-augment', () => {
  it('crop with scale [1,1], ratio [1,1] and no flip is the identity, exactly', () => {
    const img = randomImages(1, 1),
      rng = new Rng(2);
    const u8 = new Uint8Array(P),
      f32 = new Float32Array(P);
    assert.deepEqual(randomResizedCrop(img, u8, rng, IDENTITY), { x: 0, y: 0, w: S, h: S });
    assert.deepEqual(u8, img);
    augmentView(img, f32, rng, IDENTITY);
    assert.deepEqual(f32, Float32Array.from(img));
  });

  it('a flipped view is the mirror image', () => {
    const img = randomImages(1, 3),
      out = new Uint8Array(P);
    const r = augmentView(img, out, new Rng(4), { ...IDENTITY, flip: 1 });
    assert.equal(r.flipped, true);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) assert.equal(out[y * S + x], img[y * S + S - 1 - x]);
    // flip then crop geometry: mirroring the output of any box
    const box = { x: 3, y: 5, w: 14, h: 20 },
      a = new Float32Array(P),
      b = new Float32Array(P);
    resizeCrop(img, a, box);
    resizeCrop(img, b, box, true);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) assert.equal(b[y * S + x], a[y * S + S - 1 - x]);
  });

  it('bilinear resize keeps a constant image constant', () => {
    const img = new Uint8Array(P).fill(173),
      out = new Float32Array(P),
      rng = new Rng(5);
    for (let t = 0; t < 50; t++) {
      resizeCrop(img, out, sampleCropBox(rng), rng.next() < 0.5);
      for (const v of out) assert.ok(Math.abs(v - 173) < 1e-4);
    }
  });

  it('bilinear resize of a linear ramp is the ramp at half-pixel-centre source points (clamped at crop edges)', () => {
    const ramp = (x: number, y: number) => 4 * x + 3 * y + 10; // <= 199, fits a byte
    const img = new Uint8Array(P);
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) img[y * S + x] = ramp(x, y);
    // source coordinate of output pixel o: (o + 0.5) * len/28 - 0.5 inside the crop, clamped to [0, len-1]
    const src = (o: number, start: number, len: number) =>
      start + Math.min(Math.max(((o + 0.5) * len) / S - 0.5, 0), len - 1);
    const out = new Float32Array(P),
      rng = new Rng(6);
    const boxes = [
      { x: 0, y: 0, w: S, h: S },
      { x: 2, y: 7, w: 25, h: 9 },
      { x: 10, y: 0, w: 1, h: 28 },
    ];
    for (let t = 0; t < 50; t++) boxes.push(sampleCropBox(rng));
    for (const b of boxes) {
      resizeCrop(img, out, b);
      for (let y = 0; y < S; y++)
        for (let x = 0; x < S; x++) {
          assert.ok(
            Math.abs(out[y * S + x] - ramp(src(x, b.x, b.w), src(y, b.y, b.h))) < 1e-4,
            `box ${JSON.stringify(b)} at ${x},${y}`,
          );
        }
      // away from the clamped edges, neighbouring outputs step by a constant
      const dx = (4 * b.w) / S;
      for (let x = 1; x < S; x++) {
        const s0 = ((x - 0.5) * b.w) / S - 0.5,
          s1 = ((x + 0.5) * b.w) / S - 0.5;
        if (s0 >= 0 && s1 <= b.w - 1) assert.ok(Math.abs(out[x] - out[x - 1] - dx) < 1e-4);
      }
    }
  });

  it('crop boxes lie inside the image and respect the scale and ratio ranges', () => {
    const rng = new Rng(7);
    for (const o of [
      DEFAULT_CROP,
      { scale: [0.08, 1], ratio: [0.5, 2] },
      { scale: [0.5, 0.6], ratio: [1, 1.5] },
    ] as CropOptions[]) {
      let minArea = Infinity,
        maxArea = 0,
        minR = Infinity,
        maxR = 0;
      for (let t = 0; t < 20000; t++) {
        const b = sampleCropBox(rng, o);
        for (const v of [b.x, b.y, b.w, b.h]) assert.ok(Number.isInteger(v));
        assert.ok(b.w >= 1 && b.h >= 1 && b.x >= 0 && b.y >= 0 && b.x + b.w <= S && b.y + b.h <= S, JSON.stringify(b));
        assert.ok(consistent(b, o), `${JSON.stringify(b)} for ${JSON.stringify(o)}`);
        minArea = Math.min(minArea, b.w * b.h);
        maxArea = Math.max(maxArea, b.w * b.h);
        minR = Math.min(minR, b.w / b.h);
        maxR = Math.max(maxR, b.w / b.h);
      }
      // the ranges are actually explored, not just respected
      assert.ok(minArea < (o.scale[0] + 0.05) * P && maxArea > (o.scale[1] - 0.05) * P, `${minArea}..${maxArea}`);
      assert.ok(minR < o.ratio[0] * 1.1 && maxR > o.ratio[1] / 1.1, `${minR}..${maxR}`);
    }
  });

  it('crop positions cover every offset', () => {
    const rng = new Rng(8),
      seen = new Set<number>();
    for (let t = 0; t < 5000; t++) {
      const b = sampleCropBox(rng, { scale: [0.25, 0.25], ratio: [1, 1] });
      seen.add(b.y * S + b.x);
    }
    assert.equal(seen.size, 15 * 15); // 14x14 crop: x, y each in 0..14
  });

  it('falls back to a central crop clamped to the ratio range when no attempt fits', () => {
    const rng = new Rng(9);
    // area >= 0.9 of the image with ratio >= 2 never fits: full width, height 28/2
    assert.deepEqual(sampleCropBox(rng, { scale: [0.9, 1], ratio: [2, 3] }), { x: 0, y: 7, w: 28, h: 14 });
    // ratio <= 1/2: full height, width 28/2
    assert.deepEqual(sampleCropBox(rng, { scale: [0.9, 1], ratio: [0.25, 0.5] }), { x: 7, y: 0, w: 14, h: 28 });
    // ratio range containing 1 but area too large: whole image (scale > 1 can never fit)
    assert.deepEqual(sampleCropBox(rng, { scale: [1.5, 2], ratio: [0.9, 1.1] }), { x: 0, y: 0, w: 28, h: 28 });
    assert.throws(() => sampleCropBox(rng, { scale: [1, 0.5], ratio: [1, 1] }), RangeError);
  });

  it('twoViews: same seed gives the same views, different seeds differ, A differs from B, values in [-1, 1]', () => {
    const n = 16,
      imgs = randomImages(n, 10);
    const run = (seed: number) => {
      const a = new Float32Array(n * P),
        b = new Float32Array(n * P);
      twoViews(imgs, n, new Rng(seed), a, b);
      return { a, b };
    };
    const r1 = run(11),
      r2 = run(11),
      r3 = run(12);
    assert.deepEqual(r1.a, r2.a);
    assert.deepEqual(r1.b, r2.b);
    assert.notDeepEqual(r1.a, r3.a);
    assert.notDeepEqual(r1.b, r3.b);
    for (let k = 0; k < n; k++) {
      assert.notDeepEqual(r1.a.subarray(k * P, (k + 1) * P), r1.b.subarray(k * P, (k + 1) * P), `image ${k}`);
    }
    for (const v of [...r1.a, ...r1.b]) assert.ok(v >= -1 && v <= 1, String(v));
  });

  it('twoViews normalises like the model input (identity crop equals normalise)', () => {
    const n = 3,
      imgs = randomImages(n, 13);
    imgs[0] = 0;
    imgs[1] = 255;
    const a = new Float32Array(n * P),
      b = new Float32Array(n * P),
      want = normalise(imgs, new Float32Array(n * P));
    twoViews(imgs, n, new Rng(14), a, b, IDENTITY);
    for (let i = 0; i < n * P; i++) {
      assert.ok(Math.abs(a[i] - want[i]) < 1e-6);
      assert.equal(a[i], b[i]);
    }
    assert.equal(a[0], -1);
    assert.equal(a[1], 1);
  });

  it('twoViews rejects buffers that are too small', () => {
    assert.throws(
      () => twoViews(new Uint8Array(P), 2, new Rng(1), new Float32Array(2 * P), new Float32Array(2 * P)),
      RangeError,
    );
    assert.throws(
      () => twoViews(new Uint8Array(2 * P), 2, new Rng(1), new Float32Array(2 * P), new Float32Array(P)),
      RangeError,
    );
  });
});
