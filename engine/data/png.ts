// A PNG of any size and colour as one MNIST-style image: 28x28 grey bytes, white digit on black. Colour is
// reduced to luminance (alpha composited over the background), an image with a light background (mean border
// value above 127: a dark digit on paper) is inverted, and other sizes are padded to a square with the
// background and area-averaged down (or sampled up) to 28x28. The digit is not re-centred: crop it roughly.
import * as fs from 'node:fs';
import { PNG } from 'pngjs';
import { ROWS, COLS } from './datasets.ts';

export function readPngDigit(file: string): Uint8Array {
  let png: PNG;
  try {
    png = PNG.sync.read(fs.readFileSync(file));
  } catch (e) {
    throw new Error(`${file}: not a readable PNG: ${(e as Error).message}`);
  }
  return pngToDigit(png.data, png.width, png.height);
}

/** RGBA bytes (width x height) -> 784 grey bytes. */
export function pngToDigit(rgba: Uint8Array, width: number, height: number): Uint8Array {
  if (!(width > 0 && height > 0) || rgba.length !== width * height * 4) throw new Error(`image: ${rgba.length} bytes for ${width}x${height} RGBA`);
  // luminance over a white background for transparent pixels (a transparent canvas reads as paper)
  const grey = new Float64Array(width * height);
  for (let i = 0; i < grey.length; i++) {
    const a = rgba[i * 4 + 3] / 255;
    const lum = 0.299 * rgba[i * 4] + 0.587 * rgba[i * 4 + 1] + 0.114 * rgba[i * 4 + 2];
    grey[i] = lum * a + 255 * (1 - a);
  }
  let border = 0, count = 0;
  for (let x = 0; x < width; x++) { border += grey[x] + grey[(height - 1) * width + x]; count += 2; }
  for (let y = 0; y < height; y++) { border += grey[y * width] + grey[y * width + width - 1]; count += 2; }
  const invert = border / count > 127;
  if (invert) for (let i = 0; i < grey.length; i++) grey[i] = 255 - grey[i];

  // pad to a square with the background (0 after inversion), centred
  const side = Math.max(width, height), ox = Math.floor((side - width) / 2), oy = Math.floor((side - height) / 2);
  const at = (x: number, y: number) => {
    const sx = x - ox, sy = y - oy;
    return sx >= 0 && sx < width && sy >= 0 && sy < height ? grey[sy * width + sx] : 0;
  };
  const out = new Uint8Array(ROWS * COLS);
  const scale = side / ROWS;
  for (let y = 0; y < ROWS; y++) {
    for (let x = 0; x < COLS; x++) {
      // the source pixels whose centres fall in this output pixel's area (at least the nearest one)
      const x0 = Math.floor(x * scale), x1 = Math.max(x0 + 1, Math.floor((x + 1) * scale));
      const y0 = Math.floor(y * scale), y1 = Math.max(y0 + 1, Math.floor((y + 1) * scale));
      let sum = 0;
      for (let yy = y0; yy < y1; yy++) for (let xx = x0; xx < x1; xx++) sum += at(xx, yy);
      out[y * COLS + x] = Math.min(255, Math.max(0, Math.round(sum / ((x1 - x0) * (y1 - y0)))));
    }
  }
  return out;
}
