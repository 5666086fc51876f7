// How long the coordinator's state writes take: a member result (the size of a real CNN member's result:
// 1.38M float32 parameters + buffers + probability matrices) and a job record, in the directory store and in
// JetStream (KV + object store, file storage, on a nats-server this script starts on loopback).
//
//   npx tsx bench/state-store.ts [--rounds 5] [--out bench/results/state-store.json]
//
// Rounds alternate between the two stores so that both see the same machine load; medians are reported,
// and the ratio JetStream / directory (above 1: JetStream is slower).
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { spawnSync } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { parse, intOption } from '../util/args.ts';
import { versions } from '../util/versions.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { DirStateStore, type StateStore } from '../coordinator/state-store.ts';
import { JetStreamStateStore } from '../coordinator/jetstream-state-store.ts';
import { connectNats } from '../bus/nats-transport.ts';
import { startNatsServer } from './harness/nats-server.ts';
import { median } from './stats.ts';

const { values } = parse(process.argv.slice(2), { rounds: { type: 'string' }, out: { type: 'string' } });
const rounds = intOption(values, 'rounds', 5, 1);
const outFile = (values.out as string | undefined) ?? 'bench/results/state-store.json';

const RESULT_BYTES = (1_380_000 + 1000) * 4 + 2 * 10_000 * 10 * 4; // parameters + buffers + val/test probabilities
const result = randomBytes(RESULT_BYTES);
const record = JSON.stringify(
  {
    id: 'job-x',
    tasks: Array.from({ length: 5 }, (_, i) => ({ task: { id: `member-${i + 1}` }, state: 'done', attempts: 1 })),
  },
  null,
  2,
);

const ms = async (fn: () => Promise<unknown>) => {
  const t0 = performance.now();
  await fn();
  return performance.now() - t0;
};

async function measure(s: StateStore, round: number) {
  const key = `jobs/bench/results/member-${round}.result`;
  return {
    result_put_ms: await ms(() => s.put(key, result)),
    result_get_ms: await ms(() => s.get(key)),
    record_put_ms: await ms(() => s.put('jobs/bench/job.json', record)),
  };
}

const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-bench-state-'));
const nats = await startNatsServer({ jetstream: true });
const bus = await connectNats(nats.url, { name: 'bench-state-store' });
try {
  const stores: Record<string, StateStore> = {
    directory: new DirStateStore(path.join(tmp, 'state')),
    jetstream: await JetStreamStateStore.open(bus.connection, { bucket: 'bench' }),
  };
  const runs: Record<string, Array<Awaited<ReturnType<typeof measure>>>> = { directory: [], jetstream: [] };
  await measure(stores.directory, 0);
  await measure(stores.jetstream, 0); // warm-up
  for (let r = 1; r <= rounds; r++)
    for (const name of Object.keys(stores)) runs[name].push(await measure(stores[name], r));
  const summary = (name: string) =>
    Object.fromEntries(
      (['result_put_ms', 'result_get_ms', 'record_put_ms'] as const).map(k => [
        k,
        Math.round(median(runs[name].map(x => x[k])) * 10) / 10,
      ]),
    );
  const dir = summary('directory'),
    js = summary('jetstream');
  const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
  const natsJs = (
    JSON.parse(fs.readFileSync(path.join(root, 'node_modules', '@nats-io', 'jetstream', 'package.json'), 'utf8')) as {
      version: string;
    }
  ).version;
  const natsServer = spawnSync('nats-server', ['--version'], { encoding: 'utf8' }).stdout.trim();
  const out = {
    bench: 'state-store',
    rounds,
    result_bytes: RESULT_BYTES,
    record_bytes: Buffer.byteLength(record),
    directory: dir,
    jetstream: js,
    jetstream_over_directory: Object.fromEntries(
      Object.keys(dir).map(k => [k, Math.round((js[k] / dir[k]) * 10) / 10]),
    ),
    machine: {
      ...versions(),
      nats_js: natsJs,
      nats_server: natsServer,
      load_average: os.loadavg().map(x => Math.round(x * 10) / 10),
    },
  };
  writeFileAtomic(outFile, JSON.stringify(out, null, 2) + '\n');
  process.stdout.write(`${JSON.stringify(out)}\n`);
} finally {
  await bus.close();
  await nats.dispose();
  fs.rmSync(tmp, { recursive: true, force: true });
}
