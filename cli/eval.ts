// `fleet eval`: a classifier over a whole test set, run here (an .onnx file, with ONNX Runtime) or asked of a
// KServe v2 server (a model name, over gRPC): accuracy, loss, the confusion matrix and per-class accuracy,
// printed and written as eval.json and confusion.svg.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as grpc from '@grpc/grpc-js';
import { parse, intOption, choiceOption, UsageError } from '../util/args.ts';
import { versions } from '../util/versions.ts';
import { DATASETS, IMAGE_SIZE, loadDataset, normalise } from '../engine/data/datasets.ts';
import { createSession, f32 } from '../engine/runtime.ts';
import { accuracy, confusionMatrix } from '../engine/metrics.ts';
import { confusionSvg } from '../engine/report/confusion.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { InferenceClient, type ModelInferResponse } from '../serving/protocol.ts';
import { readOutput } from '../serving/outputs.ts';
import { statusName } from '../serving/errors.ts';
import { hostPort } from './serve.ts';
import { clientCredentials } from './predict.ts';

const CLASSES = 10;

const HELP = `usage: fleet eval MODEL.onnx|NAME [--server HOST:PORT] [options]

Evaluates a classifier on a whole test set: accuracy, loss (the mean cross-entropy of its probabilities), the
confusion matrix and per-class accuracy, printed and written to --out as eval.json and confusion.svg.
MODEL.onnx (what fleet train writes) runs here with ONNX Runtime; NAME is a model of a KServe v2 server
(fleet serve or any other) asked over gRPC with --server.

options:
  --dataset mnist|fashion  the test set (default mnist)
  --data-dir DIR           where its IDX files are (default: the usual places)
  --server HOST:PORT       evaluate the served model NAME over gRPC
  --version V              with --server: the model version (default: the server's choice)
  --limit N                only the first N test images (default: all)
  --batch-size N           images per session run or request (default 256)
  --threads N              ONNX Runtime intra-op threads for MODEL.onnx (default: all cores)
  --device cpu|cuda
  --timeout-ms N           the deadline of each request with --server (default 60000)
  --tls-ca FILE            with --server: connect with TLS, trusting this CA ...
  --tls-cert FILE          ... a client certificate for mutual TLS ...
  --tls-key FILE           ... and its key
  --out DIR                where eval.json and confusion.svg go (default runs/eval-<model>-<time>)
  --json                   print one JSON object (the contents of eval.json) as the last line
  -h, --help               this text
`;

export const OPTIONS = {
  dataset: { type: 'string' },
  'data-dir': { type: 'string' },
  server: { type: 'string' },
  version: { type: 'string' },
  limit: { type: 'string' },
  'batch-size': { type: 'string' },
  threads: { type: 'string' },
  device: { type: 'string' },
  'timeout-ms': { type: 'string' },
  'tls-ca': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  out: { type: 'string' },
  json: { type: 'boolean' },
  help: { type: 'boolean', short: 'h' },
} as const;

type Probabilities = (pixels: Uint8Array, n: number) => Promise<Float32Array>;

/** MODEL.onnx run here: normalised images in, its "probabilities" out. */
async function local(file: string, threads: number, device: 'cpu' | 'cuda') {
  if (!fs.existsSync(file)) throw new Error(`${file}: no such file`);
  const session = await createSession(fs.readFileSync(file), { threads, device });
  if (!session.outputNames.includes('probabilities')) {
    await session.release();
    throw new Error(`${file}: has outputs ${session.outputNames.join(', ')}; a classifier has "probabilities"`);
  }
  const run: Probabilities = async (pixels, n) => {
    const out = await session.run({ input: f32(normalise(pixels, new Float32Array(pixels.length)), [n, 1, 28, 28]) }, [
      'probabilities',
    ]);
    return out.probabilities.data as Float32Array;
  };
  return { run, close: () => session.release() };
}

/** A served model: raw UINT8 images in, "probabilities" out. */
function remote(values: Record<string, unknown>, name: string) {
  const [host, port] = hostPort(values.server as string, '--server');
  const timeoutMs = intOption(values, 'timeout-ms', 60_000, 1);
  const client = new InferenceClient(`${host}:${port}`, clientCredentials(values), {
    'grpc.max_receive_message_length': 64 * 1024 * 1024,
  }) as unknown as {
    ModelInfer(
      req: object,
      opts: grpc.CallOptions,
      cb: (e: grpc.ServiceError | null, r: ModelInferResponse) => void,
    ): void;
    close(): void;
  };
  const run: Probabilities = async (pixels, n) => {
    try {
      const res = await new Promise<ModelInferResponse>((resolve, reject) =>
        client.ModelInfer(
          {
            model_name: name,
            model_version: (values.version as string | undefined) ?? '',
            inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMAGE_SIZE] }],
            raw_input_contents: [pixels],
            outputs: [{ name: 'probabilities' }],
          },
          { deadline: Date.now() + timeoutMs },
          (e, r) => (e ? reject(e) : resolve(r)),
        ),
      );
      return Float32Array.from(readOutput(res, 'probabilities').data as ArrayLike<number>);
    } catch (e) {
      const err = e as grpc.ServiceError;
      throw new Error(
        `eval: ${err.code === undefined ? err.message : `${statusName(err.code)}: ${err.details || err.message}`}`,
      );
    }
  };
  return { run, close: async () => client.close() };
}

/** runs/x/model.onnx -> x, models/cnn/2/model.onnx -> cnn-2, other.onnx -> other. */
function fileLabel(file: string): string {
  const base = path.basename(file, '.onnx');
  if (base !== 'model') return base;
  const dir = path.dirname(path.resolve(file)),
    parent = path.basename(dir);
  return /^\d+$/.test(parent) ? `${path.basename(path.dirname(dir))}-${parent}` : parent;
}

export default async function evaluate(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const [model, ...extra] = positionals;
  if (!model) throw new UsageError('eval: MODEL.onnx or NAME is required');
  if (extra.length) throw new UsageError(`eval: unexpected argument "${extra[0]}"`);
  const isFile = model.endsWith('.onnx');
  if (isFile && values.server) throw new UsageError('eval: --server goes with a model NAME, not an .onnx file');
  if (!isFile && !values.server)
    throw new UsageError(`eval: "${model}" is not an .onnx file; give --server HOST:PORT to evaluate a served model`);
  if (values.version !== undefined && !values.server) throw new UsageError('eval: --version goes with --server');
  const dataset = choiceOption(values, 'dataset', DATASETS, 'mnist');
  const batchSize = intOption(values, 'batch-size', 256, 1);
  const threads = intOption(values, 'threads', os.availableParallelism(), 1);
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  const test = loadDataset(dataset, values['data-dir'] as string | undefined).test;
  const n = Math.min(test.count, intOption(values, 'limit', test.count, 1));
  const label = isFile ? fileLabel(model) : model;
  const out = path.resolve(
    (values.out as string | undefined) ??
      path.join(
        'runs',
        `eval-${label.replace(/[^A-Za-z0-9_-]/g, '-')}-${new Date().toISOString().replace(/[:.]/g, '-')}`,
      ),
  );

  const source = isFile ? await local(model, threads, device) : remote(values, model);
  const probabilities = new Float32Array(n * CLASSES);
  const t0 = performance.now();
  try {
    for (let at = 0; at < n; at += batchSize) {
      const k = Math.min(batchSize, n - at);
      const p = await source.run(test.images.subarray(at * IMAGE_SIZE, (at + k) * IMAGE_SIZE), k);
      if (p.length !== k * CLASSES)
        throw new Error(`eval: ${p.length} probabilities for ${k} images (not a ${CLASSES}-class classifier?)`);
      probabilities.set(p, at * CLASSES);
      if (!values.json) process.stderr.write(`\r${at + k}/${n} images`);
    }
  } finally {
    await source.close();
  }
  if (!values.json) process.stderr.write('\n');
  const seconds = (performance.now() - t0) / 1000;
  const labels = test.labels.subarray(0, n);
  const confusion = confusionMatrix(probabilities, labels, CLASSES);
  let loss = 0;
  for (let i = 0; i < n; i++) loss -= Math.log(Math.max(probabilities[i * CLASSES + labels[i]], 1e-12));
  const result = {
    model,
    source: isFile ? 'local' : `server ${values.server as string}`,
    dataset,
    images: n,
    accuracy: accuracy(probabilities, labels, CLASSES),
    loss: loss / n,
    per_class_accuracy: confusion.map((row, c) => {
      const total = row.reduce((s, v) => s + v, 0);
      return total ? row[c] / total : null;
    }),
    confusion,
    seconds: Math.round(seconds * 100) / 100,
    images_per_second: Math.round(n / seconds),
    machine: versions(),
  };
  fs.mkdirSync(out, { recursive: true });
  writeFileAtomic(path.join(out, 'eval.json'), `${JSON.stringify(result, null, 2)}\n`);
  writeFileAtomic(
    path.join(out, 'confusion.svg'),
    confusionSvg(
      confusion,
      `${label} on the ${dataset} test set: ${(100 * result.accuracy).toFixed(2)}% (${n} images)`,
    ),
  );
  if (values.json) {
    process.stdout.write(`${JSON.stringify(result)}\n`);
    return;
  }
  process.stdout.write(
    `${label}: accuracy ${(100 * result.accuracy).toFixed(2)}%, loss ${result.loss.toFixed(4)} on ${n} ${dataset} test images ` +
      `(${result.images_per_second} img/s); per class: ${result.per_class_accuracy.map((a, c) => `${c} ${a === null ? '-' : (100 * a).toFixed(1)}`).join(', ')}\n` +
      `wrote ${path.join(out, 'eval.json')} and confusion.svg\n`,
  );
}
