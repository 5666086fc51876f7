// `fleet bench train|infer`: throughput benchmarks; results go to stdout (--json) and optionally a file.
import * as os from 'node:os';
import { parse, intOption, choiceOption, UsageError } from './args.ts';
import { benchTrain, benchInfer } from '../bench/throughput.ts';
import { versions } from './versions.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';

const HELP = `usage: fleet bench train|infer [options]

train   images per second of a full CNN training step (forward, loss, all gradients, AdamW update)
infer   images per second of the exported CNN model (BatchNorm folded, weights baked in)

options:
  --batch-size N   batch size (default 256)
  --threads N      ONNX Runtime intra-op threads (default: all cores)
  --device cpu|cuda
  --warmup N       untimed iterations first (default 3)
  --iters N        timed iterations (default 20); the median is reported
  --out FILE       also write the result (JSON) to FILE
  --json           print the result as one JSON object on the last stdout line
  -h, --help       this text

To compare with PyTorch on the same machine: npx tsx bench/compare.ts (see the README).
`;

export const OPTIONS = {
  'batch-size': { type: 'string' }, threads: { type: 'string' }, device: { type: 'string' }, warmup: { type: 'string' },
  iters: { type: 'string' }, out: { type: 'string' }, json: { type: 'boolean' }, help: { type: 'boolean', short: 'h' },
} as const;

export default async function bench(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) { process.stdout.write(HELP); return; }
  const kind = positionals[0];
  if (kind !== 'train' && kind !== 'infer') throw new UsageError(`bench: expected train or infer, got ${kind ? `"${kind}"` : 'nothing'}`);
  const threads = intOption(values, 'threads', os.availableParallelism(), 1);
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  const o = {
    batchSize: intOption(values, 'batch-size', 256, 1), warmup: intOption(values, 'warmup', 3, 0),
    iters: intOption(values, 'iters', 20, 1), runtime: { threads, device },
  };
  const r = kind === 'train' ? await benchTrain(o) : await benchInfer(o);
  const result = { bench: kind, threads, device, ...r, machine: versions() };
  if (values.out) writeFileAtomic(values.out, JSON.stringify(result, null, 2) + '\n');
  if (values.json) process.stdout.write(`${JSON.stringify(result)}\n`);
  else if ('train_images_per_second' in r) process.stdout.write(`train: ${r.train_images_per_second} img/s, step ${r.step_ms_median} ms (batch ${r.batch_size}, ${threads} threads)\n`);
  else process.stdout.write(`infer: ${r.infer_images_per_second} img/s, ${r.infer_ms_median} ms per batch of ${r.batch_size} (${threads} threads)\n`);
}
