// `fleet worker`: trains the tasks a coordinator leases to it, until interrupted.
import * as os from 'node:os';
import { parse, intOption, choiceOption, UsageError, OPTION_MAX } from '../util/args.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli, natsSettings, checkNatsFiles } from './nats.ts';
import { startWorker } from '../worker/worker.ts';
import { subjectToken } from '../bus/subjects.ts';
import { checkCuda } from '../engine/runtime.ts';
import { detectGpuName } from '../worker/gpu.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { serveMetrics } from '../telemetry/metrics-http.ts';
import { parseHostPort } from '../coordinator/http.ts';

const HELP = `usage: fleet worker --nats URL [options]

Announces itself to the coordinator, heartbeats, and trains one leased task at a time.

options:
${NATS_HELP}  --device cpu|cuda   execution provider (default cpu)
  --threads N         ONNX Runtime intra-op threads (default: all cores)
  --id NAME           worker id (default host-pid-random)
  --heartbeat-ms N    heartbeat period (default 1000, 50..60000)
  --http HOST:PORT    serve Prometheus /metrics there (default off; the same flag as coordinator and serve)
  --metrics HOST:PORT deprecated name of --http (prints a warning)
  -h, --help          this text
`;

export const OPTIONS = {
  ...NATS_OPTIONS,
  device: { type: 'string' },
  threads: { type: 'string' },
  id: { type: 'string' },
  'heartbeat-ms': { type: 'string' },
  http: { type: 'string' },
  metrics: { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export default async function worker(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length) throw new UsageError(`worker: unexpected argument "${positionals[0]}"`);
  if (!values.nats) throw new UsageError('worker: --nats URL is required');
  const device = choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu');
  let metricsAt: [string, number] | null = null;
  const [flag, at] = metricsFlag(values);
  try {
    if (at !== undefined) metricsAt = parseHostPort(at, flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  try {
    if (values.id !== undefined) subjectToken(values.id as string);
  } catch (e) {
    throw new UsageError(`--id: ${(e as Error).message}`);
  }
  const threads = intOption(values, 'threads', os.availableParallelism(), 1, OPTION_MAX.threads);
  const heartbeatMs = intOption(values, 'heartbeat-ms', 1000, 50, 60_000);
  const nats = natsSettings(values);
  checkNatsFiles(nats); // a bad TLS or credentials file fails before anything else starts
  if (device === 'cuda') checkCuda();
  const gpuName = device === 'cuda' ? detectGpuName() : '';
  const metrics = createMetrics();
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Listen first: a worker whose /metrics port is taken must exit before it announces itself and is leased a
  // task (any failure here ends the process non-zero, cli/main.ts).
  const server = metricsAt ? await serveMetrics(metrics, ...metricsAt, '--metrics') : null;
  const bus = await connectFromCli(values, 'fleet-worker', log);
  const id = values.id as string | undefined;
  const w = startWorker(bus, { id, runtime: { device, threads }, heartbeatMs, log, gpuName, metrics });
  log(
    `worker ${w.id}: ready (${device}${gpuName ? `, ${gpuName}` : ''})${server ? `, metrics at http://${metricsAt![0]}:${(server.address() as { port: number }).port}/metrics` : ''}`,
  );
  await new Promise<void>(resolve => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  server?.close();
  await w.stop();
  await bus.close();
}

/** --http, or its deprecated name --metrics (with a warning): the flag used and its HOST:PORT. */
function metricsFlag(values: { http?: string; metrics?: string }): [string, string | undefined] {
  if (values.metrics === undefined) return ['--http', values.http];
  if (values.http !== undefined) throw new UsageError('worker: --metrics is the old name of --http: give one of them');
  process.stderr.write('fleet worker: --metrics is deprecated, use --http HOST:PORT (as coordinator and serve do)\n');
  return ['--metrics', values.metrics];
}
