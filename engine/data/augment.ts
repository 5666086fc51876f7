// Light augmentation for digit classifiers: random integer translations (background-filled), on uint8 images.
import type { Rng } from '../util/random.ts';

const SIDE = 28;

/** Copies n 28x28 images from src to dst, each shifted by up to maxShift pixels in x and y. */
export function randomShift(src: Uint8Array, dst: Uint8Array, n: number, maxShift: number, rng: Rng): void {
  if (maxShift <= 0) {
    dst.set(src.subarray(0, n * SIDE * SIDE));
    return;
  }
  const span = 2 * maxShift + 1;
  for (let k = 0; k < n; k++) {
    const dx = rng.int(span) - maxShift,
      dy = rng.int(span) - maxShift;
    const base = k * SIDE * SIDE;
    dst.fill(0, base, base + SIDE * SIDE);
    for (let y = Math.max(0, dy); y < Math.min(SIDE, SIDE + dy); y++) {
      const sy = y - dy;
      const x0 = Math.max(0, dx),
        x1 = Math.min(SIDE, SIDE + dx);
      dst.set(src.subarray(base + sy * SIDE + x0 - dx, base + sy * SIDE + x1 - dx), base + y * SIDE + x0);
    }
  }
}
