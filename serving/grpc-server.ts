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
import { ServeError, Status, forClient, notFound, quote } from './errors.ts';
import { DEFAULT_MAX_RESPONSE_BYTES, Inference } from './inference.ts';
import {
  HEALTH_SERVICE,
  INFERENCE_SERVICE,
  definition,
  healthService,
  inferenceService,
  type ModelInferRequest,
  type ModelMetadataResponse,
} from './protocol.ts';
import { ModelRepository, type ModelControl } from './repository.ts';
import { ModelStatisticsBook } from './statistics.ts';
import { tritonModelConfig } from './model-config-triton.ts';

const require = createRequire(import.meta.url);
export const FLEET_VERSION = (require('../package.json') as { version: string }).version;

/** What ServerMetadata lists (the REST binding's binary tensors are Triton's binary_tensor_data extension). */
export const SERVER_EXTENSIONS = ['binary_tensor_data'];

export interface TlsFiles {
  certFile: string;
  keyFile: string;
  clientCaFile?: string;
}

export interface InferenceServerOptions {
  /** The model repository directory. */
  models: string;
  pollMs?: number;
  settleMs?: number;
  /** poll (default): the repository is polled; explicit: loaded at the start, then by RepositoryModelLoad/Unload. */
  modelControl?: ModelControl;
  runtime?: RuntimeOptions;
  /** When given, the models are hosted on fleet.infer.<model>, and ensembles can have remote members. */
  bus?: Transport;
  metrics?: Metrics;
  tls?: TlsFiles;
  /** Largest request message in bytes (default 16 MiB; larger ones get RESOURCE_EXHAUSTED from gRPC). */
  maxMessageBytes?: number;
  /** Largest response tensors in bytes (default 32 MiB; checked before a response is built). */
  maxResponseBytes?: number;
  log?: (line: string) => void;
}

type Unary = (call: grpc.ServerUnaryCall<any, any>, cb: grpc.sendUnaryData<any>) => void; // eslint-disable-line @typescript-eslint/no-explicit-any

export class InferenceServer {
  readonly repo: ModelRepository;
  readonly inference: Inference;
  readonly statistics = new ModelStatisticsBook();
  private readonly busHost?: BusHost;
  private readonly server: grpc.Server;
  private readonly log: (line: string) => void;

  constructor(private readonly o: InferenceServerOptions) {
    this.log = o.log ?? (() => {});
    const m = o.metrics,
      stats = this.statistics;
    this.repo = new ModelRepository(o.models, {
      pollMs: o.pollMs,
      settleMs: o.settleMs,
      runtime: o.runtime,
      bus: o.bus,
      log: this.log,
      modelControl: o.modelControl,
      hooks: {
        onBatch: (model, images) => m?.inferBatchSize.observe({ model }, images),
        onQueued: (model, s, version) => {
          m?.inferQueue.observe({ model }, s);
          stats.queued(model, version, s);
        },
        onRun: (model, version, images, s) => stats.executed(model, version, images, s),
        onMemberUnavailable: model => m?.membersUnavailable.inc({ model }),
        onLoadFailure: model => m?.modelLoadFailures.inc({ model }),
        onUnload: model => stats.forget(model),
      },
    });
    const maxResponse = o.maxResponseBytes ?? DEFAULT_MAX_RESPONSE_BYTES;
    this.inference = new Inference(this.repo, m, maxResponse, stats);
    if (o.bus) this.busHost = new BusHost(o.bus, this.repo, this.inference, m, this.log);
    this.server = new grpc.Server({
      'grpc.max_receive_message_length': this.maxMessageBytes,
      // room for the tensors plus the response's own fields
      'grpc.max_send_message_length': maxResponse + 1024 * 1024,
    });
    this.server.addService(inferenceService, this.inferenceHandlers());
    this.server.addService(healthService, this.healthHandlers());
    new ReflectionService(definition).addToServer(this.server);
  }

  /** Largest request in bytes (the REST binding bounds its bodies by the same number). */
  get maxMessageBytes(): number {
    return this.o.maxMessageBytes ?? 16 * 1024 * 1024;
  }

  /**
   * Listens, then loads the repository; resolves with the bound port (port 0 picks a free one) once the models
   * are loaded. What stops a start (an unreadable TLS file, an address in use) fails first, naming the cause.
   */
  async start(host: string, port: number): Promise<number> {
    const creds = this.credentials();
    const address = `${host.includes(':') ? `[${host}]` : host}:${port}`;
    const bound = await new Promise<number>((resolve, reject) => {
      this.server.bindAsync(address, creds, (err, p) => {
        if (err) reject(new Error(`gRPC: cannot listen on ${address}: ${bindCause(err)}`));
        else resolve(p);
      });
    });
    try {
      await this.repo.start();
    } catch (e) {
      this.server.forceShutdown();
      throw e;
    }
    this.busHost?.start();
    return bound;
  }

  private credentials(): grpc.ServerCredentials {
    const tls = this.o.tls;
    if (!tls) return grpc.ServerCredentials.createInsecure();
    const read = (file: string, what: string) => {
      try {
        return fs.readFileSync(file);
      } catch (e) {
        throw new Error(`TLS ${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
      }
    };
    const ca = tls.clientCaFile ? read(tls.clientCaFile, 'client CA') : null;
    const cert = read(tls.certFile, 'certificate'),
      key = read(tls.keyFile, 'key');
    try {
      return grpc.ServerCredentials.createSsl(ca, [{ cert_chain: cert, private_key: key }], !!tls.clientCaFile);
    } catch (e) {
      throw new Error(`TLS: ${tls.certFile} / ${tls.keyFile}: ${(e as Error).message}`);
    }
  }

  async stop(): Promise<void> {
    this.busHost?.stop();
    await new Promise<void>(resolve => {
      const timer = setTimeout(() => {
        this.server.forceShutdown();
        resolve();
      }, 2000);
      this.server.tryShutdown(() => {
        clearTimeout(timer);
        resolve();
      });
    });
    await this.repo.close();
  }

  /** Whether the server takes requests: the repository's first scan is done (ServerReady, /v2/health/ready). */
  serving(): boolean {
    return this.repo.ready;
  }

  serverMetadata() {
    return { name: 'fleet', version: FLEET_VERSION, extensions: SERVER_EXTENSIONS };
  }

  /** Whether a model (version) is ready; NOT_FOUND for unknown models and versions. */
  modelReady(name: string, version = ''): boolean {
    if (!this.repo.versionsOf(name).length) this.repo.get(name); // NOT_FOUND
    if (version && !this.repo.versionsOf(name).includes(version)) {
      throw notFound(`model ${quote(name)} has no version ${quote(version)}`);
    }
    try {
      this.repo.get(name, version);
      return true;
    } catch {
      return false;
    }
  }

  /** Triton's ModelConfig of a model (version). */
  modelConfig(name: string, version = '') {
    return { config: tritonModelConfig(this.repo.get(name, version)) };
  }

  /** Triton's ModelStatistics: every model's when name is empty, every version's when version is empty. */
  modelStatistics(name = '', version = '') {
    const names = name ? [name] : this.repo.readyModels();
    const pairs = names.flatMap(model => {
      if (!this.repo.versionsOf(model).length) this.repo.get(model); // NOT_FOUND
      if (version && !this.repo.versionsOf(model).includes(version)) {
        throw notFound(`model ${quote(model)} has no version ${quote(version)}`);
      }
      return (version ? [version] : this.repo.versionsOf(model)).map(v => ({ model, version: v }));
    });
    return { model_stats: this.statistics.report(pairs) };
  }

  repositoryIndex(readyOnly = false) {
    const rows = this.repo.index().filter(m => !readyOnly || m.state === 'READY');
    return { models: rows.map(m => ({ ...m, reason: forClient(m.reason) })) };
  }

  modelMetadata(name: string, version = ''): ModelMetadataResponse {
    const model = this.repo.get(name, version);
    return {
      name: model.name,
      versions: this.repo.versionsOf(model.name),
      platform: model.platform,
      inputs: model.inputs,
      outputs: model.outputs,
    };
  }

  private inferenceHandlers(): grpc.UntypedServiceImplementation {
    const unary =
      (fn: (req: any) => unknown): Unary =>
      (call, cb) => {
        // eslint-disable-line @typescript-eslint/no-explicit-any
        Promise.resolve()
          .then(() => fn(call.request))
          .then(
            r => cb(null, r),
            e => cb(toGrpc(e)),
          );
      };
    return {
      ServerLive: unary(() => ({ live: true })),
      ServerReady: unary(() => ({ ready: this.serving() })),
      ModelReady: unary((r: { name: string; version: string }) => ({ ready: this.modelReady(r.name, r.version) })),
      ServerMetadata: unary(() => this.serverMetadata()),
      ModelMetadata: unary((r: { name: string; version: string }) => this.modelMetadata(r.name, r.version)),
      ModelConfig: unary((r: { name: string; version: string }) => this.modelConfig(r.name, r.version)),
      ModelStatistics: unary((r: { name: string; version: string }) => this.modelStatistics(r.name, r.version)),
      RepositoryIndex: unary((r: { ready: boolean }) => this.repositoryIndex(r.ready)),
      RepositoryModelLoad: unary((r: { model_name: string }) => this.repo.loadModel(r.model_name).then(() => ({}))),
      RepositoryModelUnload: unary((r: { model_name: string }) => this.repo.unloadModel(r.model_name).then(() => ({}))),
      ModelInfer: ((call: grpc.ServerUnaryCall<ModelInferRequest, unknown>, cb: grpc.sendUnaryData<unknown>) => {
        this.inference.infer(call.request, deadlineOf(call)).then(
          r => cb(null, r),
          e => cb(toGrpc(e)),
        );
      }) as Unary,
      ModelStreamInfer: (call: grpc.ServerDuplexStream<ModelInferRequest, unknown>) => {
        let pending = 0,
          ended = false;
        const done = () => {
          if (ended && pending === 0) call.end();
        };
        call.on('data', (req: ModelInferRequest) => {
          pending++;
          this.inference
            .infer(req, deadlineOf(call))
            .then(
              r => call.write({ error_message: '', infer_response: r }),
              e => call.write({ error_message: forClient((e as Error).message), infer_response: null }),
            )
            .catch(() => {}) // the client went away
            .finally(() => {
              pending--;
              done();
            });
        });
        call.on('end', () => {
          ended = true;
          done();
        });
        call.on('error', () => {});
      },
    };
  }

  private healthHandlers(): grpc.UntypedServiceImplementation {
    const known = (service: string) => service === '' || service === INFERENCE_SERVICE || service === HEALTH_SERVICE;
    const statusOf = (service: string) =>
      !known(service) ? 'SERVICE_UNKNOWN' : this.serving() ? 'SERVING' : 'NOT_SERVING';
    return {
      Check: ((call, cb) => {
        const service = String(call.request?.service ?? '');
        if (!known(service)) {
          return cb(
            toGrpc(
              notFound(
                `unknown service ${quote(service)} (this server has "", "${INFERENCE_SERVICE}" and "${HEALTH_SERVICE}")`,
              ),
            ),
          );
        }
        cb(null, { status: statusOf(service) });
      }) as Unary,
      Watch: (call: grpc.ServerWritableStream<{ service: string }, unknown>) => {
        const service = String(call.request?.service ?? '');
        let last = '';
        const send = () => {
          const s = statusOf(service);
          if (s !== last) {
            last = s;
            call.write({ status: s });
          }
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

/** A ServeError as a gRPC status; anything else as INTERNAL with its message (never a crash); bounded, no paths. */
function toGrpc(e: unknown): Partial<grpc.StatusObject> {
  if (e instanceof ServeError) return { code: e.code, details: forClient(e.message) };
  return { code: Status.INTERNAL, details: forClient(`internal error: ${(e as Error)?.message ?? String(e)}`) };
}

/** grpc-js's bind error says "No address added ..."; the cause (EADDRINUSE, EACCES) is in its list. */
function bindCause(err: Error): string {
  const m = /errors: \[(.*)\]/.exec(err.message);
  return m ? m[1] : err.message;
}
