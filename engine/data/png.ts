// A PNG of any size and colour as one MNIST-style image: 28x28 grey bytes, white digit on black, prepared the
// way MNIST's digits were (LeCun et al.): the digit's bounding box is scaled to fit a 20x20 box, preserving the
// aspect ratio (area-averaged), and placed in the 28x28 field so that its centre of mass falls on the field's
// centre. Before that, colour is reduced to luminance (alpha composited over white paper), an image with a light
// background (mean border value above 127: a dark digit on paper) is inverted, and the background level (the
// border's mean plus two standard deviations, for grey paper and noise) is subtracted and the rest stretched to
// 0-255. An MNIST digit itself comes back unchanged (its box is already 20 pixels, its centre of mass within half
// a pixel of the centre, its brightest pixel 255) except for the few where one of these does not hold.
import * as fs from 'node:fs';
import { PNG } from 'pngjs';
import { ROWS, COLS } from './datasets.ts';

/** The long side of the digit's box in the 28x28 field, as in MNIST. */
export const DIGIT_BOX = 20;
/** Where MNIST puts the centre of mass, in pixel indices (the test set's mean is 14.01, 13.99). */
export const CENTRE = 14;

/** Limits checked from the file and its IHDR header before anything is decoded (a decompression bomb: a 1.5 KB
 * PNG can declare 30000x30000 pixels, 3.6 GB of RGBA and more as luminance). */
export const PNG_LIMITS = { maxFileBytes: 32 * 1024 * 1024, maxSide: 8192, maxPixels: 16 * 1024 * 1024 };

const SIGNATURE = [0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a];

/** Width and height from a PNG's IHDR chunk (the first one, right after the signature), checked against the limits. */
export function pngDimensions(bytes: Uint8Array, limits = PNG_LIMITS): { width: number; height: number } {
  if (bytes.length < 24 || SIGNATURE.some((b, i) => bytes[i] !== b)) throw new Error('not a PNG (no PNG signature)');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const first = String.fromCharCode(...bytes.subarray(12, 16));
  if (first !== 'IHDR') throw new Error('not a PNG (the first chunk is not IHDR)');
  const width = view.getUint32(16),
    height = view.getUint32(20);
  if (width < 1 || height < 1) throw new Error(`the header declares ${width}x${height} pixels`);
  if (width > limits.maxSide || height > limits.maxSide || width * height > limits.maxPixels) {
    throw new Error(
      `the header declares ${width}x${height} pixels; at most ${limits.maxSide} per side and ` +
        `${limits.maxPixels} pixels are read`,
    );
  }
  return { width, height };
}

export function readPngDigit(file: string, limits = PNG_LIMITS): Uint8Array {
  let png: PNG;
  try {
    const size = fs.statSync(file).size;
    if (size > limits.maxFileBytes) throw new Error(`${size} bytes; at most ${limits.maxFileBytes} are read`);
    const bytes = fs.readFileSync(file);
    pngDimensions(bytes, limits);
    png = PNG.sync.read(bytes);
  } catch (e) {
    throw new Error(`${file}: not a readable PNG: ${(e as Error).message}`);
  }
  return pngToDigit(png.data, png.width, png.height);
}

/** RGBA bytes (width x height) -> 784 grey bytes. */
export function pngToDigit(rgba: Uint8Array, width: number, height: number): Uint8Array {
  if (!(width > 0 && height > 0) || rgba.length !== width * height * 4)
    throw new Error(`image: ${rgba.length} bytes for ${width}x${height} RGBA`);
  // luminance over a white background for transparent pixels (a transparent canvas reads as paper)
  const grey = new Float64Array(width * height);
  for (let i = 0; i < grey.length; i++) {
    const a = rgba[i * 4 + 3] / 255;
    const lum = 0.299 * rgba[i * 4] + 0.587 * rgba[i * 4 + 1] + 0.114 * rgba[i * 4 + 2];
    grey[i] = lum * a + 255 * (1 - a);
  }
  const border: number[] = [];
  for (let x = 0; x < width; x++) border.push(grey[x], grey[(height - 1) * width + x]);
  for (let y = 0; y < height; y++) border.push(grey[y * width], grey[y * width + width - 1]);
  const mean = border.reduce((s, v) => s + v, 0) / border.length;
  const invert = mean > 127;
  if (invert) for (let i = 0; i < grey.length; i++) grey[i] = 255 - grey[i];
  const bgMean = invert ? 255 - mean : mean;
  const sd = Math.sqrt(border.reduce((s, v) => s + (v - mean) ** 2, 0) / border.length);
  const bg = bgMean + 2 * sd;
  let top = 0;
  for (let i = 0; i < grey.length; i++) top = Math.max(top, grey[i]);
  if (top - bg < 1) return new Uint8Array(ROWS * COLS); // nothing but background
  // MNIST's strokes are saturated: the darkest ink becomes 255 (pencil, blue ink, a grey photo)
  for (let i = 0; i < grey.length; i++) grey[i] = (Math.max(0, grey[i] - bg) * 255) / (top - bg);

  // the digit's bounding box (any ink left after the background); a blank image stays blank
  let x0 = width,
    x1 = -1,
    y0 = height,
    y1 = -1;
  for (let y = 0; y < height; y++)
    for (let x = 0; x < width; x++) {
      if (grey[y * width + x] > 0) {
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
      }
    }
  const out = new Uint8Array(ROWS * COLS);
  if (x1 < 0) return out;
  const w = x1 - x0 + 1,
    h = y1 - y0 + 1;
  const scale = DIGIT_BOX / Math.max(w, h);
  const dw = Math.max(1, Math.round(w * scale)),
    dh = Math.max(1, Math.round(h * scale));
  const digit = resample(grey, width, x0, y0, w, h, dw, dh);

  // centre of mass onto the field's centre (a whole-pixel shift, kept inside the field)
  let m = 0,
    mx = 0,
    my = 0;
  for (let y = 0; y < dh; y++)
    for (let x = 0; x < dw; x++) {
      const v = digit[y * dw + x];
      m += v;
      mx += v * x;
      my += v * y;
    }
  const ox = Math.min(COLS - dw, Math.max(0, Math.round(CENTRE - mx / m)));
  const oy = Math.min(ROWS - dh, Math.max(0, Math.round(CENTRE - my / m)));
  for (let y = 0; y < dh; y++)
    for (let x = 0; x < dw; x++) {
      out[(oy + y) * COLS + ox + x] = Math.min(255, Math.max(0, Math.round(digit[y * dw + x])));
    }
  return out;
}

/**
 * The w x h region at (x0, y0) of a grey image `stride` wide, resized to dw x dh by area averaging: each output
 * pixel is the mean of the source it covers, partly covered source pixels weighted by the part (enlarging
 * repeats pixels).
 */
function resample(
  src: Float64Array,
  stride: number,
  x0: number,
  y0: number,
  w: number,
  h: number,
  dw: number,
  dh: number,
): Float64Array {
  const sx = w / dw,
    sy = h / dh;
  const out = new Float64Array(dw * dh);
  for (let y = 0; y < dh; y++) {
    const ya = y * sy,
      yb = (y + 1) * sy;
    for (let x = 0; x < dw; x++) {
      const xa = x * sx,
        xb = (x + 1) * sx;
      let sum = 0;
      for (let yy = Math.floor(ya); yy < Math.min(h, Math.ceil(yb)); yy++) {
        const fy = Math.min(yb, yy + 1) - Math.max(ya, yy);
        for (let xx = Math.floor(xa); xx < Math.min(w, Math.ceil(xb)); xx++) {
          const fx = Math.min(xb, xx + 1) - Math.max(xa, xx);
          sum += fx * fy * src[(y0 + yy) * stride + x0 + xx];
        }
      }
      out[y * dw + x] = sum / (sx * sy);
    }
  }
  return out;
}
