// `fleet predict`: one image (a PNG of any size and colour, or one image of an IDX file) to a KServe v2 server
// (fleet serve, fleet coordinator --grpc, or any other); prints the predicted class and the probabilities.
import * as fs from 'node:fs';
import * as grpc from '@grpc/grpc-js';
import { parse, intOption, UsageError } from '../util/args.ts';
import { hostPort } from './serve.ts';
import { readImages } from '../engine/data/idx.ts';
import { readPngDigit } from '../engine/data/png.ts';
import { IMAGE_SIZE } from '../engine/data/datasets.ts';
import { InferenceClient, paramValue, type ModelInferResponse } from '../serving/protocol.ts';
import { readOutput } from '../serving/outputs.ts';
import { statusName } from '../serving/errors.ts';

/** fleet serve's default gRPC address. */
const DEFAULT_SERVER = '127.0.0.1:8001';

const HELP = `usage: fleet predict [--server HOST:PORT] --model NAME (--image FILE.png | --idx FILE --index I) [options]

Sends one 28x28 grey image (UINT8, raw) to a KServe v2 gRPC server and prints the predicted class and the
class probabilities. A PNG of any size or colour is prepared the way MNIST's digits were: luminance (transparent
pixels count as white paper), inverted when the border is light (a dark digit on paper), the background level
subtracted and the ink stretched to 0-255, then the digit's bounding box scaled to fit 20x20 (aspect ratio
kept) and placed in the 28x28 field with its centre of mass at the centre.

options:
  --server HOST:PORT  the server (default ${DEFAULT_SERVER}, fleet serve's --grpc default)
  --model NAME        the model
  --version V         a model version (default: the server's choice, the highest ready one)
  --image FILE.png    a PNG image
  --idx FILE          an IDX image file (e.g. t10k-images-idx3-ubyte[.gz]) ...
  --index I           ... and the index of the image in it (from 0)
  --timeout-ms N      the request deadline (default 10000)
  --tls-ca FILE       connect with TLS, trusting this CA (PEM)
  --tls-cert FILE     client certificate for mutual TLS ...
  --tls-key FILE      ... and its key
  --json              print one JSON object: model, version, class, probabilities, parameters
  -h, --help          this text
`;

export const OPTIONS = {
  server: { type: 'string' },
  model: { type: 'string' },
  version: { type: 'string' },
  image: { type: 'string' },
  idx: { type: 'string' },
  index: { type: 'string' },
  'timeout-ms': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function clientCredentials(values: Record<string, unknown>): grpc.ChannelCredentials {
  const ca = values['tls-ca'] as string | undefined,
    cert = values['tls-cert'] as string | undefined,
    key = values['tls-key'] as string | undefined;
  if (!ca && !cert && !key) return grpc.credentials.createInsecure();
  if (!!cert !== !!key) throw new UsageError('--tls-cert and --tls-key go together');
  const read = (f: string | undefined) => (f ? fs.readFileSync(f) : null);
  return grpc.credentials.createSsl(read(ca), read(key), read(cert));
}

function loadImage(values: Record<string, unknown>): Uint8Array {
  const image = values.image as string | undefined,
    idx = values.idx as string | undefined;
  if (!!image === !!idx) throw new UsageError('predict: give --image FILE.png or --idx FILE --index I');
  if (image) {
    if (values.index !== undefined) throw new UsageError('--index goes with --idx');
    return readPngDigit(image);
  }
  if (values.index === undefined) throw new UsageError('--idx needs --index I');
  const i = intOption(values, 'index', 0, 0);
  const { count, rows, cols, pixels } = readImages(idx!);
  if (rows * cols !== IMAGE_SIZE) throw new Error(`${idx}: images are ${rows}x${cols}, not 28x28`);
  if (i >= count) throw new UsageError(`--index ${i}: ${idx} has ${count} images (0-${count - 1})`);
  return pixels.slice(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE);
}

export default async function predict(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length) throw new UsageError(`predict: unexpected argument "${positionals[0]}"`);
  if (!values.model) throw new UsageError('predict: --model NAME is required');
  const [host, port] = hostPort((values.server as string | undefined) ?? DEFAULT_SERVER, '--server');
  const timeoutMs = intOption(values, 'timeout-ms', 10_000, 1);
  const pixels = loadImage(values);
  const client = new InferenceClient(`${host}:${port}`, clientCredentials(values)) as unknown as {
    ModelInfer(
      req: object,
      opts: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, r: ModelInferResponse) => void,
    ): void;
    close(): void;
  };
  let res: ModelInferResponse;
  try {
    res = await new Promise((resolve, reject) =>
      client.ModelInfer(
        {
          model_name: values.model,
          model_version: values.version ?? '',
          inputs: [{ name: 'input', datatype: 'UINT8', shape: [1, IMAGE_SIZE] }],
          raw_input_contents: [pixels],
        },
        { deadline: Date.now() + timeoutMs },
        (e, r) => (e ? reject(e) : resolve(r)),
      ),
    );
  } catch (e) {
    const err = e as grpc.ServiceError;
    // the server's own answers (NOT_FOUND, INVALID_ARGUMENT, ...) as they are; no answer names where it was asked
    const unreached = err.code === grpc.status.UNAVAILABLE || err.code === grpc.status.DEADLINE_EXCEEDED;
    const where = unreached ? `no answer from ${host}:${port}: ` : '';
    throw new Error(`predict: ${where}${statusName(err.code)}: ${err.details || err.message}`);
  } finally {
    client.close();
  }
  const cls = Number(readOutput(res, 'predicted_class').data[0]);
  const parameters = Object.fromEntries(Object.entries(res.parameters ?? {}).map(([k, v]) => [k, paramValue(v)]));
  const isMil = res.outputs.some(o => o.name === 'probability');
  const probabilities = Array.from(readOutput(res, isMil ? 'probability' : 'probabilities').data as ArrayLike<number>);
  if (values.json) {
    process.stdout.write(
      `${JSON.stringify({ model: res.model_name, version: res.model_version, class: cls, probabilities, parameters })}\n`,
    );
    return;
  }
  process.stdout.write(`class ${cls} (model ${res.model_name} version ${res.model_version})\n`);
  if (isMil) process.stdout.write(`bag probability ${probabilities[0].toFixed(4)}\n`);
  else probabilities.forEach((p, c) => process.stdout.write(`  ${c}: ${p.toFixed(4)}${c === cls ? '  <-' : ''}\n`));
  for (const [k, v] of Object.entries(parameters)) process.stdout.write(`${k}: ${v}\n`);
}
