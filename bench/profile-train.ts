// ONNX Runtime's profiler on the CNN training step: kernel time per op type and the slowest nodes.
//   npx tsx bench/profile-train.ts [batch=256] [iters=10]
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { CNN } from '../engine/model/classifiers.ts';
import { TensorSet } from '../engine/model/params.ts';
import { buildTrainGraph } from '../engine/train/classifier-graphs.ts';
import { createSession, ort } from '../engine/runtime.ts';
import { Rng } from '../engine/util/random.ts';

const N = Number(process.argv[2] ?? 256),
  iters = Number(process.argv[3] ?? 10);
const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-profile-'));
const params = TensorSet.init(CNN.params(), 1),
  buffers = TensorSet.init(CNN.buffers(), 1);
const s = await createSession(buildTrainGraph(CNN, N, { seed: 1 }), {
  threads: 2,
  profileFilePrefix: path.join(dir, 'prof'),
});
const rng = new Rng(2);
const feeds: Record<string, ort.Tensor> = {
  x: new ort.Tensor(
    'float32',
    Float32Array.from({ length: N * 784 }, () => rng.next() * 2 - 1),
    [N, 1, 28, 28],
  ),
  labels: new ort.Tensor(
    'int64',
    BigInt64Array.from({ length: N }, () => BigInt(rng.int(10))),
    [N],
  ),
};
params.names.forEach((n, i) => {
  feeds[n] = new ort.Tensor('float32', params.data[i], params.shapes[i]);
});
buffers.names.forEach((n, i) => {
  feeds[n] = new ort.Tensor('float32', buffers.data[i], buffers.shapes[i]);
});
for (let i = 0; i < iters; i++) await s.run(feeds);
s.endProfiling();
const file = path.join(
  dir,
  fs.readdirSync(dir).find(f => f.endsWith('.json'))!,
);
const events = JSON.parse(fs.readFileSync(file, 'utf8')) as {
  name: string;
  cat: string;
  dur: number;
  args: Record<string, any>;
}[];
fs.rmSync(dir, { recursive: true, force: true });
const runs = events.filter(e => e.name === 'model_run').length;
const kernels = events.filter(e => e.cat === 'Node' && e.name.endsWith('_kernel_time'));
const byOp = new Map<string, number>(),
  byNode = new Map<string, { us: number; what: string }>();
for (const e of kernels) {
  byOp.set(e.args.op_name, (byOp.get(e.args.op_name) ?? 0) + e.dur);
  const k = e.name.replace('_kernel_time', '');
  byNode.set(k, {
    us: (byNode.get(k)?.us ?? 0) + e.dur,
    what: `${e.args.op_name} ${JSON.stringify(e.args.output_type_shape ?? '')}`,
  });
}
const total = [...byOp.values()].reduce((a, b) => a + b, 0);
console.log(`batch ${N}, ${runs} runs, kernel time ${(total / 1000 / runs).toFixed(1)} ms per run`);
for (const [op, us] of [...byOp].sort((a, b) => b[1] - a[1]))
  console.log(
    `${op.padEnd(28)} ${(us / 1000 / runs).toFixed(2).padStart(8)} ms ${((100 * us) / total).toFixed(1).padStart(5)}%`,
  );
console.log('-- slowest nodes');
for (const [k, v] of [...byNode].sort((a, b) => b[1].us - a[1].us).slice(0, 30))
  console.log(
    `${(v.us / 1000 / runs).toFixed(2).padStart(8)} ms  ${k.slice(0, 44).padEnd(44)} ${v.what.slice(0, 110)}`,
  );
