// A fan-out ensemble: a model with no graph of its own whose members are other models, local ones (in this
// repository, through their own batchers) or remote ones (asked over the bus on fleet.infer.<member>, answered
// by whichever `fleet serve --nats` in the queue group hosts it). Each batch goes to every member at once with
// a deadline; members that fail or do not answer in time are missing. With at least `quorum` answers the votes
// of those that answered are aggregated (weights renormalised) and the response parameters say who was
// missing and why; with fewer the request fails: DEADLINE_EXCEEDED when a member timed out, else UNAVAILABLE.
import type { Transport } from '../bus/transport.ts';
import { inferSubject } from '../bus/subjects.ts';
import { CLASSES } from '../engine/model/cnn.ts';
import { IMAGE_SIZE } from '../engine/data/datasets.ts';
import { Batcher, type BatchResult } from './batcher.ts';
import { aggregate } from './aggregate.ts';
import { ServeError, Status, deadline as deadlineError, unavailable } from './errors.ts';
import type { DecodedImages } from './inputs.ts';
import type { EnsembleMemberConfig, ModelConfig, EnsembleConfig } from './model-config.ts';
import type { ServedModel, ServingHooks } from './served-model.ts';
import { readOutput, type OutputTensor } from './outputs.ts';
import { decodeStreamResponse, encodeInferRequest, intParam, stringParam, type Parameters } from './protocol.ts';

/** The request parameter that carries a bus request's deadline (epoch ms) to the server that answers it. */
export const DEADLINE_PARAM = 'fleet_deadline_ms';

export const PLATFORM_ENSEMBLE = 'ensemble';

export interface EnsembleDeps {
  /** A local model of the repository (throws a ServeError when it is not there or not ready). */
  local: (name: string, version: string) => ServedModel;
  bus?: Transport;
  hooks?: ServingHooks & { onMemberUnavailable?: (model: string, member: string) => void };
}

type MemberAnswer = { ok: true; probs: Float32Array } | { ok: false; reason: string; timedOut: boolean };

export class FanOutEnsemble implements ServedModel {
  readonly platform = PLATFORM_ENSEMBLE;
  readonly kind = 'ensemble' as const;
  readonly inputs = [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }];
  readonly outputs = [
    { name: 'probabilities', datatype: 'FP32', shape: [-1, CLASSES] },
    { name: 'predicted_class', datatype: 'INT64', shape: [-1] },
  ];
  private readonly batcher: Batcher;
  private readonly e: EnsembleConfig;

  constructor(
    readonly name: string,
    readonly version: string,
    readonly config: ModelConfig,
    private readonly deps: EnsembleDeps,
  ) {
    this.e = config.ensemble!;
    if (this.e.members.some(m => m.remote) && !deps.bus) {
      throw new Error(
        `has remote members (${this.e.members
          .filter(m => m.remote)
          .map(m => m.name)
          .join(', ')}) but the server has no bus (start it with --nats URL)`,
      );
    }
    if (this.e.members.some(m => m.name === name))
      throw new Error('lists itself as a member (a remote member of its own name asks this server again)');
    this.batcher = new Batcher({
      maxBatchSize: config.maxBatchSize,
      maxQueueDelayMs: config.maxQueueDelayMs,
      maxQueueImages: config.maxQueueImages,
      run: (x, n, deadline) => this.run(x, n, deadline),
      onBatch: images => deps.hooks?.onBatch?.(name, images),
      onQueued: s => deps.hooks?.onQueued?.(name, s, version),
      onRun: (images, s) => deps.hooks?.onRun?.(name, version, images, s),
    });
  }

  private async run(x: Float32Array, n: number, requestDeadline = Infinity): Promise<BatchResult> {
    // never later than the requests' own deadline: a request that came over the bus carries its asker's, so a
    // loop of ensembles asking each other ends when the first deadline passes
    const deadline = Math.min(Date.now() + this.e.deadlineMs, requestDeadline);
    const answers = await Promise.all(this.e.members.map(m => this.ask(m, x, n, deadline)));
    const answered = this.e.members.flatMap((m, i) =>
      answers[i].ok ? [{ m, probs: (answers[i] as { probs: Float32Array }).probs }] : [],
    );
    const missing = this.e.members.flatMap((m, i) => {
      const a = answers[i];
      return a.ok ? [] : [{ m, reason: a.reason, timedOut: a.timedOut }];
    });
    for (const x of missing) this.deps.hooks?.onMemberUnavailable?.(this.name, x.m.name);
    const report = missing.map(x => `${x.m.name} (${x.reason})`).join('; ');
    if (answered.length < this.e.quorum || !answered.some(a => a.m.weight > 0)) {
      const msg =
        `ensemble ${this.name}: ${answered.length} of ${this.e.members.length} members answered within ${this.e.deadlineMs} ms, ` +
        `the quorum is ${this.e.quorum}; missing: ${report}`;
      throw missing.some(x => x.timedOut) ? deadlineError(msg) : unavailable(msg);
    }
    const { probabilities, predicted } = aggregate(
      answered.map(a => a.probs),
      answered.map(a => a.m.weight),
      this.e.aggregation,
    );
    return {
      rows: { probabilities: { data: probabilities, rowSize: CLASSES }, predicted: { data: predicted, rowSize: 1 } },
      info: {
        ensemble_members_total: this.e.members.length,
        ensemble_members_answered: answered.length,
        ensemble_members_used: answered.map(a => a.m.name).join(','),
        ensemble_members_missing: report,
        ensemble_quorum: this.e.quorum,
        ensemble_aggregation: this.e.aggregation,
      },
    };
  }

  /** One member's probabilities for the batch, or why it has none. */
  private async ask(m: EnsembleMemberConfig, x: Float32Array, n: number, deadline: number): Promise<MemberAnswer> {
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<MemberAnswer>(resolve => {
      timer = setTimeout(
        () => resolve({ ok: false, reason: `no answer within ${this.e.deadlineMs} ms`, timedOut: true }),
        Math.max(0, deadline - Date.now()),
      );
    });
    const work = (async (): Promise<MemberAnswer> => {
      const probs = m.remote ? await this.askRemote(m, x, n, deadline) : await this.askLocal(m, x, n, deadline);
      if (probs.length !== n * CLASSES) throw new Error(`answered ${probs.length} probabilities for ${n} images`);
      return { ok: true, probs };
    })().catch((e: Error): MemberAnswer => ({
      ok: false,
      reason: e.message,
      timedOut: (e instanceof ServeError && e.code === Status.DEADLINE_EXCEEDED) || /timed out/.test(e.message),
    }));
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }

  private askLocal(m: EnsembleMemberConfig, x: Float32Array, n: number, deadline: number): Promise<Float32Array> {
    const model = this.deps.local(m.name, m.version);
    // local fan-out ensembles of ensembles could wait on each other's batchers; ask those over the bus
    if (!model.classProbabilities)
      throw new Error(
        `local model ${m.name} is a ${model.platform === PLATFORM_ENSEMBLE ? 'fan-out ensemble' : model.kind} model, not a classifier`,
      );
    return model.classProbabilities(x, n, deadline);
  }

  /** Asks the bus; a batch larger than one message allows goes as several requests. */
  private async askRemote(
    m: EnsembleMemberConfig,
    x: Float32Array,
    n: number,
    deadline: number,
  ): Promise<Float32Array> {
    const bus = this.deps.bus!;
    const per = Math.max(1, Math.floor((bus.maxPayload - 16 * 1024) / (IMAGE_SIZE * 4)));
    const parts: Promise<Float32Array>[] = [];
    for (let start = 0; start < n; start += per) {
      const rows = Math.min(per, n - start);
      const slice = x.subarray(start * IMAGE_SIZE, (start + rows) * IMAGE_SIZE);
      const req = encodeInferRequest({
        model_name: m.name,
        model_version: m.version,
        id: '',
        parameters: { [DEADLINE_PARAM]: intParam(deadline) },
        inputs: [
          {
            name: 'input',
            datatype: 'FP32',
            shape: [rows, 1, 28, 28],
            parameters: { input_range: stringParam('normalised') },
          },
        ],
        outputs: [{ name: 'probabilities' }],
        raw_input_contents: [new Uint8Array(slice.buffer, slice.byteOffset, slice.byteLength)],
      });
      parts.push(
        bus.request(inferSubject(m.name), req, Math.max(1, deadline - Date.now())).then(msg => {
          const r = decodeStreamResponse(msg.data);
          if (r.error_message) throw new Error(`remote: ${r.error_message}`);
          if (!r.infer_response) throw new Error('remote: an empty answer');
          return readOutput(r.infer_response, 'probabilities').data as Float32Array;
        }),
      );
    }
    const got = await Promise.all(parts);
    if (got.length === 1) return got[0];
    const out = new Float32Array(n * CLASSES);
    let at = 0;
    for (const g of got) {
      out.set(g, at);
      at += g.length;
    }
    return out;
  }

  async infer(images: DecodedImages, deadline: number) {
    const r = await this.batcher.submit(images.data, images.n, deadline);
    const outputs: OutputTensor[] = [
      { name: 'probabilities', datatype: 'FP32', shape: [images.n, CLASSES], data: r.rows.probabilities.data },
      { name: 'predicted_class', datatype: 'INT64', shape: [images.n], data: r.rows.predicted.data },
    ];
    const parameters: Parameters = {};
    for (const [k, v] of Object.entries(r.info ?? {}))
      parameters[k] = typeof v === 'number' ? intParam(v) : stringParam(v);
    return { outputs, parameters };
  }

  close(): Promise<void> {
    return this.batcher.close();
  }
}
