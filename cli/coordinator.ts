// `fleet coordinator`: runs the coordinator on a NATS server until interrupted.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { parse, intOption, UsageError } from '../util/args.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli, natsSettings, checkNatsFiles } from './nats.ts';
import { Coordinator } from '../coordinator/coordinator.ts';
import { serveHttp, parseHostPort, readApiToken } from '../coordinator/http.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { listenError } from '../telemetry/listen.ts';
import { InferenceServer } from '../serving/grpc-server.ts';
import { restHandler } from '../serving/rest.ts';
import { publishJobModel } from '../serving/publish.ts';
import { DirStateStore, type StateStore } from '../coordinator/state-store.ts';
import { JetStreamStateStore, DEFAULT_STATE_BUCKET } from '../coordinator/jetstream-state-store.ts';
import { LeaderLease, fencedStore, DEFAULT_LEADER_BUCKET, DEFAULT_LEADER_TTL_MS } from '../coordinator/leader.ts';

const HELP = `usage: fleet coordinator --nats URL [options]

Accepts jobs (fleet train ... --nats URL), leases their tasks to workers (fleet worker), re-leases the tasks
of workers that stop heartbeating, and persists job state (job records, finished members' results,
parameter-server checkpoints) so that a restarted coordinator resumes its running jobs without retraining
finished members.

State lives in JetStream (a KV bucket, and an object store of the same name for results) unless --state
gives a directory. A finished job's outputs (model.onnx, member models, plots, metrics.json) are files:
<out-dir>/<job id>, or <state>/jobs/<job id>/out with --state and no --out-dir.

Exactly one coordinator leads: with JetStream state, a coordinator leads only while it holds the leader lease
(the KV bucket ${DEFAULT_LEADER_BUCKET}); another one started on the same NATS waits as a hot standby (serving
/api/cluster, taking no jobs) and takes over the running jobs within seconds when the leader dies. A leader
that loses its lease for good exits with status 1 (restart it: it comes back as a standby). With --state DIR
there is no lease and no standby: run one coordinator per NATS.

options:
${NATS_HELP}  --state DIR         keep job state in this directory instead of JetStream
  --state-bucket NAME JetStream bucket for job state (default ${DEFAULT_STATE_BUCKET}; the server needs -js)
  --out-dir DIR       where finished jobs' outputs go (default ./fleet-out, or <state>/jobs/<id>/out)
  --http HOST:PORT    the dashboard at /, /metrics, /api/cluster, /api/jobs (default 127.0.0.1:8080; "off" to disable)
  --api-token-file FILE  allow job changes over HTTP (POST /api/jobs, DELETE /api/jobs/<id>) with the
                      bearer token in FILE (default off: HTTP only reads)
  --runs DIR          also show the fleet train runs under DIR on the dashboard (e.g. ./runs; default: only jobs)
  --grpc HOST:PORT    serve every finished job's model (published to <models>/<job-id>/1, <models> being
                      <state>/models, or <out-dir>/models with JetStream state) over KServe v2 gRPC, like
                      fleet serve --models <models> (default off); --http then also speaks KServe v2
                      REST for them (/v2/...)
  --worker-timeout-ms N  a worker silent this long is lost and its task re-leased (default 10000, 100..3600000)
  --max-attempts N    attempts before a failing task fails its job (default 3, at most 100)
  --leader-ttl-ms N   the leader lease expires this long after its last renewal: a standby takes over about
                      this long after the leader died (default ${DEFAULT_LEADER_TTL_MS}, 1000..600000; JetStream state only)
  -h, --help          this text
`;

export const OPTIONS = {
  ...NATS_OPTIONS,
  state: { type: 'string' },
  'state-bucket': { type: 'string' },
  'out-dir': { type: 'string' },
  http: { type: 'string' },
  grpc: { type: 'string' },
  runs: { type: 'string' },
  'api-token-file': { type: 'string' },
  'worker-timeout-ms': { type: 'string' },
  'leader-ttl-ms': { type: 'string' },
  'max-attempts': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export default async function coordinator(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length) throw new UsageError(`coordinator: unexpected argument "${positionals[0]}"`);
  if (!values.nats) throw new UsageError('coordinator: --nats URL is required');
  if (values.state !== undefined && values['state-bucket'] !== undefined)
    throw new UsageError('--state-bucket: only without --state (state is either a directory or JetStream)');
  const stateDir = values.state === undefined ? null : path.resolve(values.state as string);
  const outDir =
    values['out-dir'] === undefined
      ? stateDir
        ? null
        : path.resolve('fleet-out')
      : path.resolve(values['out-dir'] as string);
  const jobOut = (id: string) => (outDir ? path.join(outDir, id) : path.join(stateDir!, 'jobs', id, 'out'));
  const modelsDir = stateDir ? path.join(stateDir, 'models') : path.join(outDir!, 'models');
  const httpAt = (values.http as string | undefined) ?? '127.0.0.1:8080';
  let host = '',
    port = 0;
  try {
    if (httpAt !== 'off') [host, port] = parseHostPort(httpAt, '--http');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  let grpcAt: [string, number] | null = null;
  try {
    if (values.grpc && values.grpc !== 'off') grpcAt = parseHostPort(values.grpc as string, '--grpc');
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
  const workerTimeoutMs = intOption(values, 'worker-timeout-ms', 10_000, 100, 3_600_000);
  const maxAttempts = intOption(values, 'max-attempts', 3, 1, 100);
  const tokenFile = values['api-token-file'] as string | undefined;
  const apiToken = tokenFile === undefined ? undefined : readApiToken(tokenFile); // a bad file fails before connecting
  if (stateDir && values['leader-ttl-ms'] !== undefined) {
    throw new UsageError('--leader-ttl-ms: only with JetStream state (there is no leader lease with --state DIR)');
  }
  const leaderTtlMs = intOption(values, 'leader-ttl-ms', DEFAULT_LEADER_TTL_MS, 1000, 600_000);
  const nats = natsSettings(values);
  checkNatsFiles(nats); // a bad TLS or credentials file fails before anything else starts
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);
  // Any failure from here on (NATS unreachable, a port in use) ends the process non-zero (cli/main.ts).
  const bus = await connectFromCli(values, 'fleet-coordinator', log);
  const metrics = createMetrics();
  let store: StateStore;
  let js: JetStreamStateStore | null = null;
  let lease: LeaderLease | null = null;
  if (stateDir) store = new DirStateStore(stateDir);
  else {
    try {
      const bucket = values['state-bucket'] as string | undefined;
      store = js = await JetStreamStateStore.open(bus.connection, { bucket });
      lease = await LeaderLease.open(bus.connection, { ttlMs: leaderTtlMs, log, metrics });
    } catch (e) {
      await bus.close(); // else the open connection keeps the process alive after the error
      throw e;
    }
  }
  const c = new Coordinator(bus, {
    // a leader whose lease lapsed neither acts nor writes job state (another coordinator may lead by then)
    store: lease ? fencedStore(store, lease) : store,
    leading: lease ? () => lease.leading : undefined,
    outputDir: jobOut,
    workerTimeoutMs,
    maxAttempts,
    log,
    metrics,
    onJobDone: grpcAt
      ? jobId => {
          if (publishJobModel(modelsDir, jobId, jobOut(jobId))) log(`job ${jobId}: model published for serving`);
        }
      : undefined,
  });
  // Listen before the coordinator takes part on the bus: a port in use must not leave a half-started coordinator
  // that already accepted jobs or leased tasks.
  const runsDir = values.runs === undefined ? undefined : path.resolve(values.runs as string);
  const leader = lease ? () => lease.view() : undefined;
  let inference: InferenceServer | null = null;
  if (grpcAt) {
    fs.mkdirSync(modelsDir, { recursive: true });
    inference = new InferenceServer({ models: modelsDir, bus, log, metrics });
  }
  // the jobs' models over REST on the same --http port (KServe v2 /v2/...), from the same server as gRPC
  const rest = inference ? restHandler(inference) : undefined;
  const server =
    httpAt === 'off' ? null : await serveHttp(c, host, port, { runsDir, apiToken, leader, inference: rest });
  if (inference && grpcAt) {
    const bound = await inference.start(grpcAt[0], grpcAt[1]).catch(e => {
      throw listenError(grpcAt![0], grpcAt![1], '--grpc', grpcCause(e));
    });
    log(`coordinator: serving the jobs' models over gRPC on ${grpcAt[0]}:${bound}`);
  }
  /** Starts acting: once at start-up, or when this coordinator becomes leader (a standby reads the jobs then). */
  const lead = async () => {
    // only the leader removes blobs no key points to: a standby would remove those the leader is writing
    const orphans = js ? await js.removeOrphanBlobs() : 0;
    if (orphans) log(`coordinator: removed ${orphans} unreferenced blob(s) from ${js!.description}`);
    await c.start();
    // serving: jobs finished before this start (or before --grpc was given) are published too
    const done = grpcAt ? [...c.jobs.values()].filter(j => j.state === 'done') : [];
    for (const job of done) publishJobModel(modelsDir, job.id, jobOut(job.id));
  };
  let failure: Error | null = null;
  let wake = () => {},
    signalled = false;
  const fail = (e: Error) => {
    failure ??= e;
    wake();
  };
  let started: Promise<void> | null = null;
  const leadOrFail = () => (started = lead().catch(e => fail(e as Error)));
  const stop = () => {
    signalled = true;
    wake();
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  if (!lease) await leadOrFail();
  else {
    // its jobs are now another coordinator's: this one must not act again (a restart comes back as a standby)
    const lost = (why: string) => fail(new Error(`coordinator: lost the leader lease (${why}); exiting`));
    await lease.start(() => void leadOrFail(), lost);
    await started; // a coordinator that leads at once has started when the line below says where it is
  }
  const base = server ? `http://${host}:${(server.address() as { port: number }).port}` : '';
  log(
    `coordinator: state ${store.description}, outputs ${outDir ?? path.join(stateDir!, 'jobs', '<id>', 'out')}${server ? `, ${base}/api/cluster (dashboard ${base}/, metrics ${base}/metrics)` : ''}`,
  );
  if (!failure && !signalled)
    await new Promise<void>(resolve => {
      wake = resolve;
    });
  log(failure ? `coordinator: stopping: ${(failure as Error).message}` : 'coordinator: stopping');
  server?.close();
  await inference?.stop();
  if (failure)
    await Promise.race([c.stop(), new Promise(r => setTimeout(r, 2000))]); // its writes are refused anyway
  else await c.stop();
  await lease?.stop();
  await store.close();
  await bus.close();
  if (failure) throw failure;
}

/** grpc-js reports a failed bind as "No address added out of total 1 resolved" plus the errno text: keep the cause. */
function grpcCause(e: unknown): Error {
  const text = (e as Error).message ?? String(e);
  const code = /EADDRINUSE|EACCES|EADDRNOTAVAIL|ENOTFOUND/.exec(text)?.[0];
  return Object.assign(new Error(text), { code });
}
