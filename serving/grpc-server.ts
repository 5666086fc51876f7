// The gRPC server: inference.GRPCInferenceService (KServe v2), grpc.health.v1.Health and server reflection
// (grpc.reflection.v1 and v1alpha, so grpcurl and similar tools need no proto files) over one model
// repository, optionally with TLS (server certificate; client certificates required when a client CA is
// given) and with the repository's models hosted on the bus. Every handler answers with a status and a
// message; nothing a client sends can throw out of a handler.
import * as fs from 'node:fs';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import { ReflectionService } from '@grpc/reflection';
import type { Transport } from '../bus/transport.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import type { RuntimeOptions } from '../engine/runtime.ts';
import { BusHost } from './bus-host.ts';
import { ServeError, Status, notFound } from './errors.ts';
import { Inference } from './inference.ts';
import { HEALTH_SERVICE, INFERENCE_SERVICE, definition, healthService, inferenceService, type ModelInferRequest, type ModelMetadataResponse } from './protocol.ts';
import { ModelRepository } from './repository.ts';

const require = createRequire(import.meta.url);
export const FLEET_VERSION = (require('../package.json') as { version: string }).version;

export interface TlsFiles { certFile: string; keyFile: string; clientCaFile?: string }

export interface InferenceServerOptions {
  /** The model repository directory. */
  models: string;
  pollMs?: number;
  settleMs?: number;
  runtime?: RuntimeOptions;
  /** When given, the models are hosted on fleet.infer.<model>, and ensembles can have remote members. */
  bus?: Transport;
  metrics?: Metrics;
  tls?: TlsFiles;
  /** Largest request message in bytes (default 16 MiB; larger ones get RESOURCE_EXHAUSTED from gRPC). */
  maxMessageBytes?: number;
  log?: (line: string) => void;
}

type Unary = (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

export class InferenceServer {
  readonly repo: ModelRepository;
  readonly inference: Inference;
  private readonly busHost?: BusHost;
  private readonly server: grpc.Server;
  private readonly log: (line: string) => void;

  constructor(private readonly o: InferenceServerOptions) {
    this.log = o.log ?? (() => {});
    const m = o.metrics;
    this.repo = new ModelRepository(o.models, {
      pollMs: o.pollMs, settleMs: o.settleMs, runtime: o.runtime, bus: o.bus, log: this.log,
      hooks: m && {
        onBatch: (model, images) => m.inferBatchSize.observe({ model }, images),
        onQueued: (model, s) => m.inferQueue.observe({ model }, s),
        onMemberUnavailable: model => m.membersUnavailable.inc({ model }),
        onLoadFailure: model => m.modelLoadFailures.inc({ model }),
      },
    });
    this.inference = new Inference(this.repo, m);
    if (o.bus) this.busHost = new BusHost(o.bus, this.repo, this.inference, m, this.log);
    const max = o.maxMessageBytes ?? 16 * 1024 * 1024;
    this.server = new grpc.Server({ 'grpc.max_receive_message_length': max });
    this.server.addService(inferenceService, this.inferenceHandlers());
    this.server.addService(healthService, this.healthHandlers());
    new ReflectionService(definition).addToServer(this.server);
  }

  /** Loads the repository, then listens; resolves with the bound port (port 0 picks a free one). */
  async start(host: string, port: number): Promise<number> {
    await this.repo.start();
    this.busHost?.start();
    const creds = this.o.tls ? grpc.ServerCredentials.createSsl(
      this.o.tls.clientCaFile ? fs.readFileSync(this.o.tls.clientCaFile) : null,
      [{ cert_chain: fs.readFileSync(this.o.tls.certFile), private_key: fs.readFileSync(this.o.tls.keyFile) }],
      !!this.o.tls.clientCaFile,
    ) : grpc.ServerCredentials.createInsecure();
    return new Promise((resolve, reject) => {
      this.server.bindAsync(`${host.includes(':') ? `[${host}]` : host}:${port}`, creds, (err, bound) => (err ? reject(err) : resolve(bound)));
    });
  }

  async stop(): Promise<void> {
    this.busHost?.stop();
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => { this.server.forceShutdown(); resolve(); }, 2000);
      this.server.tryShutdown(() => { clearTimeout(timer); resolve(); });
    });
    await this.repo.close();
  }

  private serving(): boolean { return this.repo.ready; }

  private inferenceHandlers(): grpc.UntypedServiceImplementation {
    const unary = (fn: (req: any) => unknown): Unary => (call, cb) => { // eslint-disable-line @typescript-eslint/no-explicit-any
      Promise.resolve().then(() => fn(call.request)).then(r => cb(null, r), e => cb(toGrpc(e)));
    };
    return {
      ServerLive: unary(() => ({ live: true })),
      ServerReady: unary(() => ({ ready: this.serving() })),
      ModelReady: unary((r: { name: string; version: string }) => {
        if (!this.repo.versionsOf(r.name).length) this.repo.get(r.name); // NOT_FOUND with the list of models
        if (r.version && !this.repo.versionsOf(r.name).includes(r.version)) throw notFound(`model "${r.name}" has no version "${r.version}"`);
        try { this.repo.get(r.name, r.version); return { ready: true }; } catch { return { ready: false }; }
      }),
      ServerMetadata: unary(() => ({ name: 'fleet', version: FLEET_VERSION, extensions: [] })),
      ModelMetadata: unary((r: { name: string; version: string }): ModelMetadataResponse => {
        const model = this.repo.get(r.name, r.version);
        return { name: model.name, versions: this.repo.versionsOf(model.name), platform: model.platform, inputs: model.inputs, outputs: model.outputs };
      }),
      ModelInfer: ((call: grpc.ServerUnaryCall<ModelInferRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.inference.infer(call.request, deadlineOf(call)).then(r => cb(null, r), e => cb(toGrpc(e)));
      }) as Unary,
      ModelStreamInfer: (call: grpc.ServerDuplexStream<ModelInferRequest, unknown>) => {
        let pending = 0, ended = false;
        const done = () => { if (ended && pending === 0) call.end(); };
        call.on('data', (req: ModelInferRequest) => {
          pending++;
          this.inference.infer(req, deadlineOf(call))
            .then(r => call.write({ error_message: '', infer_response: r }), e => call.write({ error_message: (e as Error).message, infer_response: null }))
            .catch(() => {}) // the client went away
            .finally(() => { pending--; done(); });
        });
        call.on('end', () => { ended = true; done(); });
        call.on('error', () => {});
      },
    };
  }

  private healthHandlers(): grpc.UntypedServiceImplementation {
    const known = (service: string) => service === '' || service === INFERENCE_SERVICE || service === HEALTH_SERVICE;
    const statusOf = (service: string) => !known(service) ? 'SERVICE_UNKNOWN' : this.serving() ? 'SERVING' : 'NOT_SERVING';
    return {
      Check: ((call, cb) => {
        const service = String(call.request?.service ?? '');
        if (!known(service)) return cb(toGrpc(notFound(`unknown service "${service}" (this server has "", "${INFERENCE_SERVICE}" and "${HEALTH_SERVICE}")`)));
        cb(null, { status: statusOf(service) });
      }) as Unary,
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        const service = String(call.request?.service ?? '');
        let last = '';
        const send = () => {
          const s = statusOf(service);
          if (s !== last) { last = s; call.write({ status: s }); }
        };
        send();
        const timer = setInterval(send, 500);
        call.on('cancelled', () => clearInterval(timer));
        call.on('close', () => clearInterval(timer));
      },
    };
  }
}

function deadlineOf(call: { getDeadline(): grpc.Deadline }): number {
  const d = call.getDeadline();
  return d instanceof Date ? d.getTime() : Number.isFinite(d) ? d : Infinity;
}

/** A ServeError as a gRPC status; anything else as INTERNAL with its message (never a crash). */
function toGrpc(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof ServeError) return { code: e.code, details: e.message };
  return { code: Status.INTERNAL, details: `internal error: ${(e as Error)?.message ?? String(e)}` };
}

