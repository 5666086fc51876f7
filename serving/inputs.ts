// Decoding the image input of a ModelInferRequest into the model's input: N images of 28x28, normalised as
// (x/255 - 0.5)/0.5, in one Float32Array. Accepted: FP32 [N,1,28,28], [N,28,28] or [N,784] with values in
// 0-1 (default), 0-255 or already normalised (parameter input_range = "0-1" | "0-255" | "normalised", on the
// tensor or the request), and UINT8 in the same shapes (0-255); as typed contents (fp32_contents,
// uint_contents) or raw_input_contents (little-endian). FP32 values must be finite and inside the declared
// range (the default 0-1 when none is declared): pixels 0-255 sent without input_range would otherwise be
// answered with confident garbage. Every problem is an INVALID_ARGUMENT (or RESOURCE_EXHAUSTED for too many
// images) that names the field and the value.
import { IMAGE_SIZE, normalise } from '../engine/data/datasets.ts';
import { invalid, quote, tooLarge } from './errors.ts';
import { paramValue, type ModelInferRequest } from './protocol.ts';

export const INPUT_NAME = 'input';
export const INPUT_RANGES = ['0-1', '0-255', 'normalised'] as const;
type InputRange = (typeof INPUT_RANGES)[number];
/** The values each input_range allows, and x -> (x/scale - 0.5)/0.5 = x * a + b. */
const RANGES: Record<InputRange, { lo: number; hi: number; a: number; b: number }> = {
  '0-1': { lo: 0, hi: 1, a: 2, b: -1 },
  '0-255': { lo: 0, hi: 255, a: 2 / 255, b: -1 },
  normalised: { lo: -1, hi: 1, a: 1, b: 0 },
};

export interface DecodedImages {
  /** n * 784 normalised values. */
  data: Float32Array;
  n: number;
  /** Whether the request used raw_input_contents (the response then answers in raw form too). */
  raw: boolean;
}

const SHAPES = '[N,1,28,28], [N,28,28] or [N,784]';

/** The number of images a shape describes, or an error naming the shape. */
function imageCount(shape: number[]): number {
  const ok = shape.every(d => Number.isInteger(d) && d >= 0);
  const [n, ...rest] = shape;
  const per = rest.join(',');
  if (!ok || shape.length < 2 || !(per === '1,28,28' || per === '28,28' || per === '784')) {
    throw invalid(`input "${INPUT_NAME}": shape [${shape.join(',')}] is not one of ${SHAPES}`);
  }
  if (n < 1) throw invalid(`input "${INPUT_NAME}": shape [${shape.join(',')}] has no images (N must be at least 1)`);
  return n;
}

function inputRange(req: ModelInferRequest, tensorParams: ModelInferRequest['parameters']): InputRange {
  const v = paramValue(tensorParams?.input_range) ?? paramValue(req.parameters?.input_range) ?? '0-1';
  if (!(INPUT_RANGES as readonly unknown[]).includes(v)) {
    throw invalid(`parameter input_range: expected one of ${INPUT_RANGES.join(', ')}, got ${quote(v)}`);
  }
  return v as InputRange;
}

/** Decodes and validates the request's one input; maxImages bounds N before any contents are read. */
export function decodeImages(req: ModelInferRequest, maxImages: number): DecodedImages {
  const inputs = req.inputs ?? [];
  const raws = req.raw_input_contents ?? [];
  if (inputs.length === 0) throw invalid(`missing input "${INPUT_NAME}" (the request has no inputs)`);
  const unknown = inputs.find(t => t.name !== INPUT_NAME);
  if (unknown) throw invalid(`unknown input ${quote(unknown.name)}: the model has one input, "${INPUT_NAME}"`);
  if (inputs.length > 1) throw invalid(`input "${INPUT_NAME}" is given ${inputs.length} times`);
  const t = inputs[0];
  const raw = raws.length > 0;
  if (raw && raws.length !== inputs.length)
    throw invalid(`raw_input_contents has ${raws.length} entries for ${inputs.length} input(s)`);
  const contents = t.contents;
  const typedCount = contents ? Object.values(contents).reduce((s, v) => s + (Array.isArray(v) ? v.length : 0), 0) : 0;
  if (raw && typedCount > 0)
    throw invalid(`input "${INPUT_NAME}": both contents and raw_input_contents are set; use one`);

  const n = imageCount((t.shape ?? []).map(Number));
  if (n > maxImages)
    throw tooLarge(`input "${INPUT_NAME}": ${n} images in one request; this model takes at most ${maxImages}`);
  const count = n * IMAGE_SIZE;
  const data = new Float32Array(count);

  if (t.datatype === 'UINT8') {
    let pixels: Uint8Array;
    if (raw) {
      pixels = raws[0];
      if (pixels.length !== count)
        throw invalid(
          `input "${INPUT_NAME}": raw UINT8 contents hold ${pixels.length} bytes, shape [${t.shape.join(',')}] needs ${count}`,
        );
    } else {
      const v = contents?.uint_contents ?? [];
      if (v.length !== count)
        throw invalid(
          `input "${INPUT_NAME}": uint_contents holds ${v.length} values, shape [${t.shape.join(',')}] needs ${count}`,
        );
      pixels = new Uint8Array(count);
      for (let i = 0; i < count; i++) {
        const p = v[i];
        if (!(Number.isInteger(p) && p >= 0 && p <= 255)) {
          throw invalid(`input "${INPUT_NAME}": uint_contents[${i}] = ${p} is not a UINT8 value (0-255)`);
        }
        pixels[i] = p;
      }
    }
    normalise(pixels, data);
    return { data, n, raw };
  }
  if (t.datatype !== 'FP32') {
    throw invalid(`input "${INPUT_NAME}": datatype ${quote(t.datatype)} is not supported; use FP32 or UINT8`);
  }

  let values: ArrayLike<number>;
  if (raw) {
    const b = raws[0];
    if (b.length !== count * 4)
      throw invalid(
        `input "${INPUT_NAME}": raw FP32 contents hold ${b.length} bytes, shape [${t.shape.join(',')}] needs ${count * 4}`,
      );
    // a view needs 4-byte alignment; protobuf decoding gives no such promise
    values =
      b.byteOffset % 4 === 0
        ? new Float32Array(b.buffer, b.byteOffset, count)
        : new Float32Array(new Uint8Array(b).buffer);
  } else {
    values = contents?.fp32_contents ?? [];
    if (values.length !== count)
      throw invalid(
        `input "${INPUT_NAME}": fp32_contents holds ${values.length} values, shape [${t.shape.join(',')}] needs ${count}`,
      );
  }
  const range = inputRange(req, t.parameters);
  const { lo, hi, a, b } = RANGES[range];
  const slack = (hi - lo) * 1e-4; // float rounding of values computed by the client
  for (let i = 0; i < count; i++) {
    const x = values[i];
    if (!Number.isFinite(x)) throw invalid(`input "${INPUT_NAME}": value ${i} is ${x}; inputs must be finite`);
    if (x < lo - slack || x > hi + slack) throw outOfRange(i, x, range, req, t.parameters);
    data[i] = x * a + b;
  }
  return { data, n, raw };
}

type Params = ModelInferRequest['parameters'];

function outOfRange(i: number, x: number, range: InputRange, req: ModelInferRequest, tensorParams: Params) {
  const declared = paramValue(tensorParams?.input_range) ?? paramValue(req.parameters?.input_range);
  const { lo, hi } = RANGES[range];
  const hint =
    declared === undefined
      ? `no input_range was given, so ${range} applies; set the parameter input_range to "0-255" for pixel values ` +
        'or "normalised" for (x/255-0.5)/0.5'
      : `the parameter input_range is "${range}"`;
  return invalid(`input "${INPUT_NAME}": value ${i} is ${x}, outside ${lo} to ${hi} (${hint})`);
}
