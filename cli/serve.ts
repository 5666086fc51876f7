// `fleet serve`: the KServe v2 inference server over a model repository, over gRPC and HTTP/REST (with /metrics
// on the HTTP port) and, with --nats, the repository's models hosted on the bus (and ensembles with remote
// members). What stops it from starting (an address in use, an unreadable TLS file) ends it at once, named.
import * as os from 'node:os';
import * as path from 'node:path';
import { parse, intOption, choiceOption, UsageError } from '../util/args.ts';
import { NATS_OPTIONS, NATS_HELP, connectFromCli } from './nats.ts';
import { parseHostPort } from '../coordinator/http.ts';
import { InferenceServer, type TlsFiles } from '../serving/grpc-server.ts';
import { listenHttp } from '../serving/rest.ts';
import { MODEL_CONTROL } from '../serving/repository.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import type { Transport } from '../bus/transport.ts';

const HELP = `usage: fleet serve --models DIR [options]

Serves the models of a repository with the KServe v2 / Open Inference Protocol over gRPC
(inference.GRPCInferenceService: ServerLive, ServerReady, ModelReady, ServerMetadata, ModelMetadata,
ModelInfer, ModelStreamInfer), grpc.health.v1 health checks and server reflection, and over HTTP/REST on the
HTTP address (/v2, /v2/health/live|ready, /v2/models/NAME[/versions/V][/ready|/infer], JSON or binary
tensors) beside Prometheus metrics (/metrics).

The repository (--models DIR) holds one folder per model (names: letters, digits, _ and -):
  DIR/NAME/1/model.onnx, DIR/NAME/2/model.onnx   numbered versions (requests without a version get the highest ready one)
  DIR/NAME/model.onnx ...                         a fleet train --out run directory, served as version 1
  DIR/NAME/config.yaml                            optional: batching limits, aggregation; or an ensemble of
                                                  other models (members: local or remote over --nats)
Put a run's model in with: fleet models add RUN_DIR --models DIR [--name NAME]. New models and versions are
picked up without a restart (polled every --poll-ms); files still being written are left for the next poll,
and a broken model is reported (log, ModelReady false, UNAVAILABLE with the reason), not served.

Inputs: "input" as FP32 [N,1,28,28], [N,28,28] or [N,784] (0-1; parameter input_range "0-255" or
"normalised" for other scales; values outside the range are refused) or UINT8 [N,784] (0-255), as typed
contents or raw_input_contents.
Outputs: "probabilities" FP32 [N,10], "predicted_class" INT64 [N] (ensembles also "member_probabilities";
MIL models: "probability" [1], "attention" [L], "predicted_class" [1]); raw when the inputs were raw.

options:
  --models DIR          the model repository (required)
  --grpc HOST:PORT      the gRPC address (default 127.0.0.1:8001)
  --http HOST:PORT      REST (/v2/...) and /metrics (default 127.0.0.1:8002; "off" to disable)
  --max-message-bytes N largest gRPC request and REST body (default 16777216)
${NATS_HELP}                        with --nats: every ready model answers fleet.infer.<model> (queue group
                        fleet-serve), and ensembles may have remote members
  --threads N           ONNX Runtime intra-op threads per model (default: all cores)
  --device cpu|cuda
  --poll-ms N           how often the repository is scanned (default 1000)
  --model-control MODE  poll (default): new, changed and removed files go live by themselves; explicit: every
                        model loads at the start, then only RepositoryModelLoad / RepositoryModelUnload (gRPC) or
                        POST /v2/repository/models/NAME/load|unload (REST) change what is served
  --tls-cert FILE       serve TLS with this certificate (PEM) ...
  --tls-key FILE        ... and key
  --tls-client-ca FILE  require client certificates signed by this CA (mutual TLS)
  -h, --help            this text
`;

export const OPTIONS = {
  ...NATS_OPTIONS,
  models: { type: 'string' },
  grpc: { type: 'string' },
  http: { type: 'string' },
  threads: { type: 'string' },
  device: { type: 'string' },
  'poll-ms': { type: 'string' },
  'max-message-bytes': { type: 'string' },
  'model-control': { type: 'string' },
  'tls-cert': { type: 'string' },
  'tls-key': { type: 'string' },
  'tls-client-ca': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

export function hostPort(value: string, flag: string): [string, number] {
  try {
    return parseHostPort(value, flag);
  } catch (e) {
    throw new UsageError((e as Error).message);
  }
}

export function tlsOption(values: Record<string, unknown>): TlsFiles | undefined {
  const cert = values['tls-cert'] as string | undefined,
    key = values['tls-key'] as string | undefined,
    ca = values['tls-client-ca'] as string | undefined;
  if (!cert && !key && !ca) return undefined;
  if (!cert || !key) throw new UsageError('--tls-cert and --tls-key go together');
  return { certFile: cert, keyFile: key, clientCaFile: ca };
}

export default async function serve(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  if (positionals.length) throw new UsageError(`serve: unexpected argument "${positionals[0]}"`);
  if (!values.models) throw new UsageError('serve: --models DIR is required');
  const [grpcHost, grpcPort] = hostPort((values.grpc as string | undefined) ?? '127.0.0.1:8001', '--grpc');
  const httpAt = (values.http as string | undefined) ?? '127.0.0.1:8002';
  const http = httpAt === 'off' ? null : hostPort(httpAt, '--http');
  const runtime = {
    threads: intOption(values, 'threads', os.availableParallelism(), 1),
    device: choiceOption(values, 'device', ['cpu', 'cuda'] as const, 'cpu'),
  };
  const pollMs = intOption(values, 'poll-ms', 1000, 10);
  const modelControl = choiceOption(values, 'model-control', MODEL_CONTROL, 'poll');
  const maxMessageBytes = intOption(values, 'max-message-bytes', 16 * 1024 * 1024, 1024);
  const tls = tlsOption(values);
  const log = (line: string) => process.stderr.write(`${new Date().toISOString()} ${line}\n`);

  const metrics = createMetrics();
  const bus: Transport | undefined = values.nats ? await connectFromCli(values, 'fleet-serve', log) : undefined;
  const server = new InferenceServer({
    models: path.resolve(values.models as string),
    pollMs,
    runtime,
    bus,
    metrics,
    tls,
    log,
    maxMessageBytes,
    modelControl,
  });
  let httpServer: Awaited<ReturnType<typeof listenHttp>> | null = null;
  let port: number;
  try {
    // the HTTP port first: REST answers "not ready" while the models load
    httpServer = http ? await listenHttp(server, http[0], http[1], metrics) : null;
    port = await server.start(grpcHost, grpcPort);
  } catch (e) {
    httpServer?.close();
    await server.stop().catch(() => {});
    await bus?.close();
    throw e;
  }
  const httpUrl = httpServer && `http://${http![0]}:${(httpServer.address() as { port: number }).port}`;
  log(
    `serve: gRPC${tls ? ' (TLS)' : ''} on ${grpcHost}:${port}, ${server.repo.readyModels().length} model(s) ready` +
      `${httpUrl ? `, metrics on ${httpUrl}/metrics, REST on ${httpUrl}/v2` : ''}${bus ? ', hosting on the bus' : ''}`,
  );
  await new Promise<void>(resolve => {
    process.once('SIGINT', () => resolve());
    process.once('SIGTERM', () => resolve());
  });
  log('serve: stopping');
  httpServer?.close();
  await server.stop();
  await bus?.close();
}
