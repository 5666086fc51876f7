// fleet predict --image: a PNG of any size and colour becomes an MNIST-style 28x28 digit (engine/data/png.ts):
// white on black, the bounding box fitted into 20x20 preserving its aspect ratio, the centre of mass at the
// centre of the field. Checked against real MNIST digits drawn large, dark, off-centre on light canvases.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as zlib from 'node:zlib';
import { PNG } from 'pngjs';
import { pngToDigit, readPngDigit, pngDimensions, DIGIT_BOX, CENTRE, PNG_LIMITS } from '../engine/data/png.ts';
import { readImages } from '../engine/data/idx.ts';
import { resolveDataDir, FILES } from '../engine/data/datasets.ts';
import { Rng } from '../engine/util/random.ts';

const IMG = 784;
const mnist = readImages(path.join(resolveDataDir('mnist'), FILES.testImages)).pixels;
const digitAt = (k: number) => mnist.slice(k * IMG, (k + 1) * IMG);

/** A width x height RGBA canvas whose pixel (x, y) is colour(x, y). */
function canvas(
  width: number,
  height: number,
  colour: (x: number, y: number) => [number, number, number, number],
): Uint8Array {
  const b = new Uint8Array(width * height * 4);
  for (let y = 0; y < height; y++) for (let x = 0; x < width; x++) b.set(colour(x, y), (y * width + x) * 4);
  return b;
}

/** A 28x28 digit drawn `scale` times larger with its top-left corner at (ox, oy); null outside it. */
function drawn(digit: Uint8Array, scale: number, ox: number, oy: number) {
  return (x: number, y: number): number | null => {
    const sx = Math.floor((x - ox) / scale),
      sy = Math.floor((y - oy) / scale);
    return sx >= 0 && sx < 28 && sy >= 0 && sy < 28 ? digit[sy * 28 + sx] : null;
  };
}

function box(img: Uint8Array) {
  let x0 = 28,
    x1 = -1,
    y0 = 28,
    y1 = -1,
    m = 0,
    mx = 0,
    my = 0;
  for (let y = 0; y < 28; y++)
    for (let x = 0; x < 28; x++) {
      const v = img[y * 28 + x];
      if (v) {
        x0 = Math.min(x0, x);
        x1 = Math.max(x1, x);
        y0 = Math.min(y0, y);
        y1 = Math.max(y1, y);
        m += v;
        mx += v * x;
        my += v * y;
      }
    }
  return { width: x1 - x0 + 1, height: y1 - y0 + 1, cx: mx / m, cy: my / m };
}

const meanAbsDiff = (a: Uint8Array, b: Uint8Array) => a.reduce((s, v, i) => s + Math.abs(v - b[i]), 0) / a.length;

describe('png: any PNG as an MNIST-style digit', () => {
  it('an MNIST digit comes back unchanged, as a 28x28 grey PNG and 10x larger dark on white', () => {
    for (const k of [0, 3, 7]) {
      const d = digitAt(k),
        draw = drawn(d, 10, 0, 0);
      assert.deepEqual(
        pngToDigit(
          canvas(28, 28, (x, y) => [d[y * 28 + x], d[y * 28 + x], d[y * 28 + x], 255]),
          28,
          28,
        ),
        d,
        `digit ${k}, 28x28`,
      );
      assert.deepEqual(
        pngToDigit(
          canvas(280, 280, (x, y) => {
            const v = 255 - draw(x, y)!;
            return [v, v, v, 255];
          }),
          280,
          280,
        ),
        d,
        `digit ${k}, 280x280 inverted`,
      );
    }
  });

  it('a dark-blue digit drawn 7x larger in the corner of a 500x300 light-grey, noisy canvas comes out centred and matching', () => {
    const d = digitAt(3),
      draw = drawn(d, 7, 12, 25),
      rng = new Rng(5);
    const img = canvas(500, 300, (x, y) => {
      const v = draw(x, y) ?? 0,
        paper = 225 + Math.floor(rng.next() * 10);
      // blue ink on grey paper: luminance falls from the paper's to the ink's as the MNIST value rises
      const t = v / 255;
      return [
        Math.round(paper * (1 - t) + 10 * t),
        Math.round(paper * (1 - t) + 20 * t),
        Math.round(paper * (1 - t) + 90 * t),
        255,
      ];
    });
    const got = pngToDigit(img, 500, 300),
      b = box(got);
    assert.ok(
      Math.abs(b.cx - CENTRE) <= 0.5 && Math.abs(b.cy - CENTRE) <= 0.5,
      `centre of mass at (${b.cx.toFixed(2)}, ${b.cy.toFixed(2)})`,
    );
    assert.equal(Math.max(b.width, b.height), DIGIT_BOX);
    assert.ok(meanAbsDiff(got, d) < 2, `mean difference to the MNIST digit ${meanAbsDiff(got, d).toFixed(2)}`);
  });

  it('a digit at a scale that is not a whole multiple (9.3x), off-centre on a tall canvas, matches within tolerance', () => {
    const d = digitAt(7),
      scale = 9.3,
      draw = drawn(d, scale, 150, 40);
    const got = pngToDigit(
        canvas(420, 700, (x, y) => {
          const v = 255 - (draw(x, y) ?? 0);
          return [v, v, v, 255];
        }),
        420,
        700,
      ),
      b = box(got);
    assert.ok(
      Math.abs(b.cx - CENTRE) <= 0.5 && Math.abs(b.cy - CENTRE) <= 0.5,
      `centre of mass at (${b.cx.toFixed(2)}, ${b.cy.toFixed(2)})`,
    );
    assert.equal(Math.max(b.width, b.height), DIGIT_BOX);
    assert.ok(meanAbsDiff(got, d) < 3, `mean difference to the MNIST digit ${meanAbsDiff(got, d).toFixed(2)}`);
  });

  it('keeps the aspect ratio: a 40x200 white bar on black becomes 4x20, centred', () => {
    const got = pngToDigit(
      canvas(600, 400, (x, y) => {
        const v = x >= 500 && x < 540 && y >= 10 && y < 210 ? 255 : 0;
        return [v, v, v, 255];
      }),
      600,
      400,
    );
    const b = box(got);
    assert.deepEqual([b.width, b.height], [4, 20]);
    assert.ok(Math.abs(b.cx - CENTRE) <= 0.5 && Math.abs(b.cy - CENTRE) <= 0.5, `centre of mass at (${b.cx}, ${b.cy})`);
    assert.ok(got.every(v => v === 0 || v === 255));
  });

  it('a transparent canvas reads as paper; a blank image stays blank; a wrong buffer length is an error', () => {
    const d = digitAt(0),
      draw = drawn(d, 4, 200, 200);
    // black ink whose opacity is the MNIST value, on a fully transparent canvas
    assert.ok(
      meanAbsDiff(
        pngToDigit(
          canvas(400, 400, (x, y) => [0, 0, 0, draw(x, y) ?? 0]),
          400,
          400,
        ),
        d,
      ) < 2,
    );
    assert.ok(
      pngToDigit(
        canvas(50, 30, () => [240, 240, 240, 255]),
        50,
        30,
      ).every(v => v === 0),
    );
    assert.throws(() => pngToDigit(new Uint8Array(10), 2, 2), /10 bytes for 2x2 RGBA/);
  });
});

/** A PNG chunk: length, type, data, CRC-32 of type and data (written here from the PNG specification). */
function chunk(type: string, data: Uint8Array): Buffer {
  const body = Buffer.concat([Buffer.from(type, 'latin1'), data]);
  let crc = ~0;
  for (const b of body) {
    crc ^= b;
    for (let k = 0; k < 8; k++) crc = (crc >>> 1) ^ (0xedb88320 & -(crc & 1));
  }
  const len = Buffer.alloc(4),
    sum = Buffer.alloc(4);
  len.writeUInt32BE(data.length);
  sum.writeUInt32BE(~crc >>> 0);
  return Buffer.concat([len, body, sum]);
}

/** A grey 8-bit PNG whose header declares width x height, with `rows` rows of zeros actually compressed. */
function declaredPng(width: number, height: number, rows: number): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(width, 0);
  ihdr.writeUInt32BE(height, 4);
  ihdr[8] = 8;
  ihdr[9] = 0;
  const idat = zlib.deflateSync(Buffer.alloc(rows * (width + 1)), { level: 9 });
  return Buffer.concat([
    Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]),
    chunk('IHDR', ihdr),
    chunk('IDAT', idat),
    chunk('IEND', new Uint8Array(0)),
  ]);
}

describe('png: sizes checked from the header before decoding', () => {
  let dir: string;
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-png-'));
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('a small PNG declaring 30000x30000 pixels (a decompression bomb) is refused from its header, naming the limit', () => {
    const bomb = declaredPng(30000, 30000, 20);
    assert.ok(bomb.length < 4096, `${bomb.length} bytes`);
    const file = path.join(dir, 'bomb.png');
    fs.writeFileSync(file, bomb);
    assert.throws(
      () => readPngDigit(file),
      new RegExp(
        `bomb\\.png: not a readable PNG: the header declares 30000x30000 pixels; at most ${PNG_LIMITS.maxSide} per side`,
      ),
    );
    // within each side's limit but over the pixel count
    assert.throws(() => pngDimensions(declaredPng(8000, 8000, 1)), /8000x8000 pixels.*16777216 pixels/);
    assert.throws(() => pngDimensions(Buffer.from('GIF89a not a png at all, padded out')), /no PNG signature/);
  });

  it('a PNG within the limits still decodes: the header check agrees with pngjs', () => {
    const png = new PNG({ width: 300, height: 200 });
    png.data.fill(255);
    const file = path.join(dir, 'ok.png');
    fs.writeFileSync(file, PNG.sync.write(png));
    assert.deepEqual(pngDimensions(fs.readFileSync(file)), { width: 300, height: 200 });
    assert.equal(readPngDigit(file).length, 784);
    // a tighter limit refuses the same file, so the limit is what decides
    assert.throws(() => readPngDigit(file, { ...PNG_LIMITS, maxSide: 100 }), /300x200 pixels; at most 100 per side/);
  });
});
