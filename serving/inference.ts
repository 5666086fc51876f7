// One inference request, from a decoded ModelInferRequest to a ModelInferResponse or a ServeError, counted
// in the metrics. The gRPC handlers (ModelInfer, ModelStreamInfer) and the bus (ensemble members asked over
// fleet.infer.<model>) all come through here.
import type { Metrics } from '../telemetry/metrics.ts';
import { ServeError, Status, codeOf, invalid, statusName } from './errors.ts';
import { decodeImages } from './inputs.ts';
import { buildResponse, checkRequestedOutputs, checkResponseSize, selectOutputs } from './outputs.ts';
import type { ModelInferRequest, ModelInferResponse } from './protocol.ts';
import type { ModelRepository } from './repository.ts';
import type { ModelStatisticsBook } from './statistics.ts';

/** The metric label for names that are not models of the repository (unbounded label values are not allowed). */
export const UNKNOWN_MODEL_LABEL = '_unknown';

/** Default bound on the tensor bytes of one response (the gRPC send limit is set to match). */
export const DEFAULT_MAX_RESPONSE_BYTES = 32 * 1024 * 1024;

export class Inference {
  constructor(
    private readonly repo: ModelRepository,
    private readonly metrics?: Metrics,
    readonly maxResponseBytes = DEFAULT_MAX_RESPONSE_BYTES,
    private readonly stats?: ModelStatisticsBook,
  ) {}

  /** Answers one request; deadline is an epoch time in ms (Infinity for none). Rejects with a ServeError. */
  async infer(req: ModelInferRequest, deadline = Infinity): Promise<ModelInferResponse> {
    const started = process.hrtime.bigint();
    let label = UNKNOWN_MODEL_LABEL,
      version = '',
      images = 0;
    try {
      if (typeof req?.model_name !== 'string' || req.model_name === '') throw invalid('model_name is empty');
      const model = this.repo.get(req.model_name, req.model_version ?? '');
      label = model.name;
      version = model.version;
      checkRequestedOutputs(
        req,
        model.outputs.map(o => o.name),
      );
      const decoded = decodeImages(req, model.config.maxRequestImages);
      images = decoded.n;
      // (for a MIL model the N images are the instances of one bag)
      const r = await model.infer(decoded, deadline);
      const outputs = selectOutputs(req, r.outputs);
      checkResponseSize(outputs, this.maxResponseBytes);
      const res = buildResponse(req, model.version, outputs, decoded.raw, r.parameters);
      this.count(label, version, Status.OK, started, images);
      return res;
    } catch (e) {
      this.count(label, version, codeOf(e), started, 0);
      throw e instanceof ServeError
        ? e
        : new ServeError(Status.INTERNAL, `inference failed: ${(e as Error)?.message ?? String(e)}`);
    }
  }

  private count(model: string, version: string, code: Status, started: bigint, images: number) {
    const seconds = Number(process.hrtime.bigint() - started) / 1e9;
    // statistics only for versions that exist (a request for an unknown version of a known model has none)
    if (version) this.stats?.request(model, version, code === Status.OK, seconds, images);
    if (!this.metrics) return;
    this.metrics.inferRequests.inc({ model, version, status: statusName(code) });
    if (model !== UNKNOWN_MODEL_LABEL) this.metrics.inferLatency.observe({ model, version }, seconds);
  }
}
