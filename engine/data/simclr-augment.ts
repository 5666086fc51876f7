// SimCLR view augmentation on 28x28 uint8 images: torchvision-style RandomResizedCrop (bilinear, no antialias)
// followed by a random horizontal flip, written straight into normalised model input.
import type { Rng } from '../util/random.ts';

const SIDE = 28;
const PIXELS = SIDE * SIDE;

export interface CropOptions {
  /** Range of the crop's area as a fraction of the image's. */
  scale: [number, number];
  /** Range of the crop's aspect ratio, width / height (sampled log-uniformly). */
  ratio: [number, number];
}
export interface AugmentOptions extends CropOptions {
  /** Probability of a horizontal flip. */
  flip: number;
}
export interface CropBox {
  x: number;
  y: number;
  w: number;
  h: number;
}

export const DEFAULT_CROP: CropOptions = { scale: [0.2, 1], ratio: [3 / 4, 4 / 3] };
export const DEFAULT_AUGMENT: AugmentOptions = { ...DEFAULT_CROP, flip: 0.5 };

/** torchvision RandomResizedCrop.get_params for a 28x28 image: 10 tries, then a central crop clamped to the ratio range. */
export function sampleCropBox(rng: Rng, opts: CropOptions = DEFAULT_CROP): CropBox {
  const [smin, smax] = opts.scale,
    [rmin, rmax] = opts.ratio;
  if (!(smin <= smax && rmin <= rmax && rmin > 0))
    throw new RangeError(`sampleCropBox: bad ranges scale=[${opts.scale}] ratio=[${opts.ratio}]`);
  const lmin = Math.log(rmin),
    lmax = Math.log(rmax);
  for (let attempt = 0; attempt < 10; attempt++) {
    const area = PIXELS * (smin + (smax - smin) * rng.next());
    const ratio = Math.exp(lmin + (lmax - lmin) * rng.next());
    const w = Math.round(Math.sqrt(area * ratio)),
      h = Math.round(Math.sqrt(area / ratio));
    if (w > 0 && w <= SIDE && h > 0 && h <= SIDE) return { x: rng.int(SIDE - w + 1), y: rng.int(SIDE - h + 1), w, h };
  }
  // Fallback: the image is square (ratio 1), so only a ratio range excluding 1 needs clamping.
  let w = SIDE,
    h = SIDE;
  if (1 < rmin) h = Math.round(w / rmin);
  else if (1 > rmax) w = Math.round(h * rmax);
  return { x: (SIDE - w) >> 1, y: (SIDE - h) >> 1, w, h };
}

// Per-axis source taps for one crop, reused across calls (single-threaded, so no allocation per image).
const xi0 = new Int32Array(SIDE),
  xi1 = new Int32Array(SIDE),
  xw = new Float64Array(SIDE);
const yi0 = new Int32Array(SIDE),
  yi1 = new Int32Array(SIDE),
  yw = new Float64Array(SIDE);

/** Bilinear taps, align_corners=false: source = (o + 0.5) * len/SIDE - 0.5, clamped to the crop like torch does. */
function taps(start: number, len: number, i0: Int32Array, i1: Int32Array, wt: Float64Array, reverse: boolean): void {
  const step = len / SIDE;
  for (let o = 0; o < SIDE; o++) {
    const s = Math.max((o + 0.5) * step - 0.5, 0);
    const f = Math.floor(s);
    const k = reverse ? SIDE - 1 - o : o; // a flip just mirrors the output positions
    i0[k] = start + f;
    i1[k] = start + Math.min(f + 1, len - 1);
    wt[k] = s - f;
  }
}

/**
 * Resizes the `box` region of the 28x28 image at src[srcOff..] to 28x28 into dst[dstOff..], optionally mirrored,
 * writing v * mul + add for each interpolated byte value v. A Uint8Array dst gets the value rounded.
 */
export function resizeCrop(
  src: Uint8Array,
  dst: Float32Array | Uint8Array,
  box: CropBox,
  flip = false,
  mul = 1,
  add = 0,
  srcOff = 0,
  dstOff = 0,
): void {
  if (box.w < 1 || box.h < 1 || box.x < 0 || box.y < 0 || box.x + box.w > SIDE || box.y + box.h > SIDE) {
    throw new RangeError(`resizeCrop: box ${JSON.stringify(box)} is not inside the ${SIDE}x${SIDE} image`);
  }
  if (dst instanceof Uint8Array) add += 0.5; // typed-array stores truncate; +0.5 makes that a rounding
  taps(box.x, box.w, xi0, xi1, xw, flip);
  taps(box.y, box.h, yi0, yi1, yw, false);
  let o = dstOff;
  for (let oy = 0; oy < SIDE; oy++) {
    const r0 = srcOff + yi0[oy] * SIDE,
      r1 = srcOff + yi1[oy] * SIDE,
      wy = yw[oy];
    for (let ox = 0; ox < SIDE; ox++) {
      const a0 = xi0[ox],
        a1 = xi1[ox],
        wx = xw[ox];
      const top = src[r0 + a0] + (src[r0 + a1] - src[r0 + a0]) * wx;
      const bot = src[r1 + a0] + (src[r1 + a1] - src[r1 + a0]) * wx;
      dst[o++] = (top + (bot - top) * wy) * mul + add;
    }
  }
}

/** One RandomResizedCrop of a 28x28 image (no flip), byte values kept; returns the box used. */
export function randomResizedCrop(
  src: Uint8Array,
  dst: Float32Array | Uint8Array,
  rng: Rng,
  opts: CropOptions = DEFAULT_CROP,
): CropBox {
  const box = sampleCropBox(rng, opts);
  resizeCrop(src, dst, box);
  return box;
}

/** Crop then flip with probability opts.flip, byte values kept; returns the box and whether it flipped. */
export function augmentView(
  src: Uint8Array,
  dst: Float32Array | Uint8Array,
  rng: Rng,
  opts: AugmentOptions = DEFAULT_AUGMENT,
): CropBox & { flipped: boolean } {
  const box = sampleCropBox(rng, opts);
  const flipped = rng.next() < opts.flip;
  resizeCrop(src, dst, box, flipped);
  return { ...box, flipped };
}

/**
 * Two independently augmented views of each of n images (n*784 bytes), normalised like the model input:
 * byte v -> v/127.5 - 1, applied after interpolating the byte values. Per image: view A's draws, then view B's.
 */
export function twoViews(
  images: Uint8Array,
  n: number,
  rng: Rng,
  outA: Float32Array,
  outB: Float32Array,
  opts: AugmentOptions = DEFAULT_AUGMENT,
): void {
  const len = n * PIXELS;
  if (images.length < len || outA.length < len || outB.length < len) {
    throw new RangeError(
      `twoViews: ${n} images need ${len} values (images ${images.length}, outA ${outA.length}, outB ${outB.length})`,
    );
  }
  const mul = 1 / 127.5;
  for (let k = 0; k < n; k++) {
    const off = k * PIXELS;
    const boxA = sampleCropBox(rng, opts);
    resizeCrop(images, outA, boxA, rng.next() < opts.flip, mul, -1, off, off);
    const boxB = sampleCropBox(rng, opts);
    resizeCrop(images, outB, boxB, rng.next() < opts.flip, mul, -1, off, off);
  }
}
