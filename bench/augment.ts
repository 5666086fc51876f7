// Throughput of SimCLR augmentation (twoViews: two cropped, resized, flipped, normalised views per image)
// on real MNIST training images. Run: npx tsx bench/augment.ts [batch] [iters]
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { loadDataset, IMAGE_SIZE } from '../engine/data/datasets.ts';
import { twoViews } from '../engine/data/simclr-augment.ts';
import { Rng } from '../engine/util/random.ts';

/** Images per second (each producing two views), over `iters` consecutive batches after a short warm-up. */
export function benchAugment(batch = 256, iters = 20): { images_per_second: number } {
  const { train } = loadDataset('mnist');
  const rng = new Rng(1);
  const outA = new Float32Array(batch * IMAGE_SIZE),
    outB = new Float32Array(batch * IMAGE_SIZE);
  const batchAt = (i: number) => {
    const start = (i * batch) % (train.count - batch + 1); // walk through the set so the cache is not unrealistically hot
    return train.images.subarray(start * IMAGE_SIZE, (start + batch) * IMAGE_SIZE);
  };
  for (let i = 0; i < 3; i++) twoViews(batchAt(i), batch, rng, outA, outB); // let the JIT optimise first
  const t0 = performance.now();
  for (let i = 0; i < iters; i++) twoViews(batchAt(i), batch, rng, outA, outB);
  const seconds = (performance.now() - t0) / 1000;
  return { images_per_second: (batch * iters) / seconds };
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  const [batch, iters] = process.argv.slice(2).map(Number);
  console.log(JSON.stringify(benchAugment(batch || undefined, iters || undefined)));
}
