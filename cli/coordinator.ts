// `fleet coordinator`: runs the coordinator on a NATS server until interrupted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, intOption, UsageError } from './args.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli } from './nats.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { serveHttp, parseHostPort } from '../coordinator/http.ts';
import { createMetrics } from '../dashboard/metrics.ts';
import { InferenceServer } from '../coordinator/serving/grpc-server.ts';
import { publishJobModel } from '../coordinator/serving/publish.ts';

const HELP = `usage: fleet coordinator --nats URL [options]

Accepts jobs (fleet train ... --nats URL), leases their tasks to workers (fleet worker), re-leases the tasks
of workers that stop heartbeating, keeps job state under --state so a restarted coordinator resumes, and
writes each finished job's outputs to <state>/jobs/<id>/out.

options:
${NATS_HELP}  --state DIR         job state and outputs (default ./fleet-state)
  --http HOST:PORT    the dashboard at /, /metrics, /api/cluster, /api/jobs (default 127.0.0.1:8080; "off" to disable)
  --runs DIR          also show the fleet train runs under DIR on the dashboard (e.g. ./runs; default: only jobs)
  --grpc HOST:PORT    serve every finished job's model (published to <state>/models/<job-id>/1) over KServe v2
                      gRPC, like fleet serve --models <state>/models (default off)
  --worker-timeout-ms N  a worker silent this long is lost and its task re-leased (default 10000)
  --max-attempts N    attempts before a failing task fails its job (default 3)
  -h, --help          this text
`;

export const OPTIONS = {
  ...NATS_OPTIONS, state: { type: 'string' }, http: { type: 'string' }, grpc: { type: 'string' }, runs: { type: 'string' }, 'worker-timeout-ms': { type: 'string' },
  'max-attempts': { type: 'string' }, help: { type: 'boolean', short: 'h' },
} as const;

export default async function coordinator(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) { process.stdout.write(HELP); return; }
  if (positionals.length) throw new UsageError(`coordinator: unexpected argument "${positionals[0]}"`);
  if (!values.nats) throw new UsageError('coordinator: --nats URL is required');
  const stateDir = path.resolve((values.state as string | undefined) ?? 'fleet-state');
  const httpAt = (values.http as string | undefined) ?? '127.0.0.1:8080';
  let host = '', port = 0;
  try { if (httpAt !== 'off') [host, port] = parseHostPort(httpAt, '--http'); } catch (e) { throw new UsageError((e as Error).message); }
  let grpcAt: [string, number] | null = null;
  try { if (values.grpc && values.grpc !== 'off') grpcAt = parseHostPort(values.grpc as string, '--grpc'); } catch (e) { throw new UsageError((e as Error).message); }
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  const bus = await connectFromCli(values, 'fleet-coordinator', log);
  const metrics = createMetrics();
  const c = new Coordinator(bus, {
    stateDir, workerTimeoutMs: intOption(values, 'worker-timeout-ms', 10_000, 100), maxAttempts: intOption(values, 'max-attempts', 3, 1), log,
    metrics,
    onJobDone: grpcAt ? jobId => { if (publishJobModel(stateDir, jobId)) log(`job ${jobId}: model published for serving`); } : undefined,
  });
  await c.start();
  // serving: jobs finished before this start (or before --grpc was given) are published too
  let inference: InferenceServer | null = null;
  if (grpcAt) {
    for (const job of c.jobs.values()) if (job.state === 'done') publishJobModel(stateDir, job.id);
    fs.mkdirSync(path.join(stateDir, 'models'), { recursive: true });
    inference = new InferenceServer({ models: path.join(stateDir, 'models'), bus, log, metrics });
    const bound = await inference.start(grpcAt[0], grpcAt[1]);
    log(`coordinator: serving the jobs' models over gRPC on ${grpcAt[0]}:${bound}`);
  }
  const server = httpAt === 'off' ? null : await serveHttp(c, host, port, { runsDir: values.runs === undefined ? undefined : path.resolve(values.runs as string) });
  const base = server ? `http://${host}:${(server.address() as { port: number }).port}` : '';
  log(`coordinator: state ${stateDir}${server ? `, ${base}/api/cluster (dashboard ${base}/, metrics ${base}/metrics)` : ''}`);
  await new Promise<void>(resolve => {
    const stop = () => resolve();
    process.once('SIGINT', stop);
    process.once('SIGTERM', stop);
  });
  log('coordinator: stopping');
  server?.close();
  await inference?.stop();
  await c.stop();
  await bus.close();
}
