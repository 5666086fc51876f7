// Models served from an .onnx file of the repository, as `fleet train` writes them:
// - classifier: input [N,1,28,28] -> probabilities [N,10] (the CNN and SimCLR exports);
// - one-graph ensemble: the same plus member_probabilities [M,N,10]; served with the graph's own vote, or
//   re-aggregated from the members' probabilities (config `aggregation`);
// - MIL: one bag [L,1,28,28] -> probability [1], attention [L] (one bag per session run).
// Loading checks the graph's interface and runs one image through it, so that a model that would fail at
// request time fails here instead, with the file named.
import * as fs from 'node:fs';
import { createSession, f32, type RuntimeOptions, type ort } from '../engine/runtime.ts';
import { ModelProto } from '../engine/graph/onnx-proto.ts';
import { CLASSES } from '../engine/model/cnn.ts';
import { IMAGE_SIZE } from '../engine/data/datasets.ts';
import { Batcher, type BatchResult } from './batcher.ts';
import { aggregate } from './aggregate.ts';
import { deadline as deadlineError } from './errors.ts';
import type { DecodedImages } from './inputs.ts';
import type { ModelConfig } from './model-config.ts';
import type { OutputTensor } from './outputs.ts';
import type { Parameters, TensorMetadata } from './protocol.ts';
import type { ServedModel, ServingHooks } from './served-model.ts';
import { stringParam } from './protocol.ts';

export const PLATFORM_ONNX = 'onnxruntime_onnx';
const IMAGE_INPUT: TensorMetadata = { name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] };

function metadataOf(bytes: Uint8Array): Record<string, string> {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const m = ModelProto.decode(bytes) as any;
  return Object.fromEntries(((m.metadataProps ?? []) as { key: string; value: string }[]).map(p => [p.key, p.value]));
}

/** Loads and checks an .onnx file; throws naming the file when it is not a model fleet can serve. */
export async function loadOnnxModel(
  file: string,
  name: string,
  version: string,
  config: ModelConfig,
  runtime: RuntimeOptions,
  hooks: ServingHooks = {},
): Promise<ServedModel> {
  const bytes = fs.readFileSync(file);
  let session: ort.InferenceSession;
  try {
    session = await createSession(bytes, runtime);
  } catch (e) {
    throw new Error(
      `${file}: not a loadable ONNX model (truncated or corrupt?): ${(e as Error).message.split('\n')[0]}`,
    );
  }
  try {
    const outs = session.outputNames;
    if (!session.inputNames.includes('input'))
      throw new Error(`has inputs ${session.inputNames.join(', ')}; expected "input"`);
    let model: ServedModel;
    if (outs.includes('probability') && outs.includes('attention')) {
      model = new OnnxMil(session, name, version, config, hooks);
    } else if (outs.includes('probabilities')) {
      const meta = outs.includes('member_probabilities') ? metadataOf(bytes) : {};
      model = new OnnxClassifier(session, name, version, config, outs.includes('member_probabilities'), meta, hooks);
    } else {
      throw new Error(
        `has outputs ${outs.join(', ')}; expected probabilities (a classifier or ensemble) or probability and attention (MIL)`,
      );
    }
    await (model as OnnxClassifier | OnnxMil).check();
    return model;
  } catch (e) {
    await session.release().catch(() => {});
    throw new Error(`${file}: ${(e as Error).message}`);
  }
}

const argmaxRows = (p: Float32Array): Int32Array => {
  const n = p.length / CLASSES,
    out = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let c = 1; c < CLASSES; c++) if (p[i * CLASSES + c] > p[i * CLASSES + best]) best = c;
    out[i] = best;
  }
  return out;
};

/** A classifier or one-graph ensemble behind a dynamic batcher. */
class OnnxClassifier implements ServedModel {
  readonly platform = PLATFORM_ONNX;
  readonly kind: 'classifier' | 'ensemble';
  readonly inputs = [IMAGE_INPUT];
  readonly outputs: TensorMetadata[];
  private readonly batcher: Batcher;
  private readonly memberCount: number;
  private readonly weights: number[];
  private readonly fetches: string[];

  constructor(
    private readonly session: ort.InferenceSession,
    readonly name: string,
    readonly version: string,
    readonly config: ModelConfig,
    private readonly hasMembers: boolean,
    private readonly meta: Record<string, string>,
    hooks: ServingHooks,
  ) {
    this.kind = hasMembers ? 'ensemble' : 'classifier';
    this.weights = hasMembers ? parseWeights(meta['ensemble.weights']) : [];
    this.memberCount = this.weights.length;
    if (config.aggregation && !hasMembers)
      throw new Error(
        `config sets aggregation: ${config.aggregation}, but the model is not an ensemble (no member_probabilities output)`,
      );
    this.fetches = hasMembers ? ['probabilities', 'member_probabilities'] : ['probabilities'];
    this.outputs = [
      { name: 'probabilities', datatype: 'FP32', shape: [-1, CLASSES] },
      { name: 'predicted_class', datatype: 'INT64', shape: [-1] },
      ...(hasMembers
        ? [{ name: 'member_probabilities', datatype: 'FP32', shape: [this.memberCount, -1, CLASSES] }]
        : []),
    ];
    this.batcher = new Batcher({
      maxBatchSize: config.maxBatchSize,
      maxQueueDelayMs: config.maxQueueDelayMs,
      maxQueueImages: config.maxQueueImages,
      run: (x, n) => this.run(x, n),
      onBatch: images => hooks.onBatch?.(name, images),
      onQueued: s => hooks.onQueued?.(name, s, version),
      onRun: (images, s) => hooks.onRun?.(name, version, images, s),
    });
  }

  /** Runs one image and checks the output shapes. */
  async check(): Promise<void> {
    const r = await this.run(new Float32Array(IMAGE_SIZE), 1);
    if (r.rows.probabilities.data.length !== CLASSES)
      throw new Error(
        `probabilities has ${r.rows.probabilities.data.length} values for one image; expected ${CLASSES}`,
      );
    if (this.hasMembers && r.rows.members.data.length !== this.memberCount * CLASSES) {
      throw new Error(
        `member_probabilities has ${r.rows.members.data.length} values for one image, but the metadata (ensemble.weights) lists ${this.memberCount} members`,
      );
    }
  }

  private async run(x: Float32Array, n: number): Promise<BatchResult> {
    const out = await this.session.run({ input: f32(x, [n, 1, 28, 28]) }, this.fetches);
    let probabilities = out.probabilities.data as Float32Array;
    let predicted: Int32Array | undefined;
    const rows: BatchResult['rows'] = {};
    if (this.hasMembers) {
      const mp = out.member_probabilities.data as Float32Array,
        M = this.memberCount;
      // [M,n,10] -> per-image rows [n, M*10], so that the batcher can hand each request its own rows
      const t = new Float32Array(mp.length);
      for (let m = 0; m < M; m++)
        for (let i = 0; i < n; i++)
          t.set(mp.subarray((m * n + i) * CLASSES, (m * n + i + 1) * CLASSES), (i * M + m) * CLASSES);
      rows.members = { data: t, rowSize: M * CLASSES };
      if (this.config.aggregation && this.config.aggregation !== 'weighted') {
        const members = Array.from({ length: M }, (_, m) => mp.subarray(m * n * CLASSES, (m + 1) * n * CLASSES));
        ({ probabilities, predicted } = aggregate(members, this.weights, this.config.aggregation));
      }
    }
    rows.probabilities = { data: probabilities, rowSize: CLASSES };
    // the exported hard vote folds its tie-break into probabilities: argmax is the graph's prediction either way
    rows.predicted = { data: predicted ?? argmaxRows(probabilities), rowSize: 1 };
    return { rows };
  }

  async classProbabilities(x: Float32Array, n: number, deadline: number): Promise<Float32Array> {
    return (await this.batcher.submit(x, n, deadline)).rows.probabilities.data as Float32Array;
  }

  async infer(images: DecodedImages, deadline: number) {
    const { rows } = await this.batcher.submit(images.data, images.n, deadline);
    const n = images.n;
    const outputs: OutputTensor[] = [
      { name: 'probabilities', datatype: 'FP32', shape: [n, CLASSES], data: rows.probabilities.data },
      { name: 'predicted_class', datatype: 'INT64', shape: [n], data: rows.predicted.data },
    ];
    const parameters: Parameters = {};
    if (this.hasMembers) {
      const M = this.memberCount,
        t = rows.members.data as Float32Array,
        mp = new Float32Array(t.length);
      for (let i = 0; i < n; i++)
        for (let m = 0; m < M; m++)
          mp.set(t.subarray((i * M + m) * CLASSES, (i * M + m + 1) * CLASSES), (m * n + i) * CLASSES);
      outputs.push({ name: 'member_probabilities', datatype: 'FP32', shape: [M, n, CLASSES], data: mp });
      parameters.ensemble_aggregation = stringParam(
        this.config.aggregation ?? `graph (${this.meta['ensemble.vote'] ?? 'soft'}, selection-weighted)`,
      );
    }
    return { outputs, parameters };
  }

  async close(): Promise<void> {
    await this.batcher.close();
    await this.session.release();
  }
}

function parseWeights(s: string | undefined): number[] {
  let w: unknown;
  try {
    w = JSON.parse(s ?? '');
  } catch {
    w = undefined;
  }
  if (!Array.isArray(w) || !w.length || !w.every(x => typeof x === 'number' && x >= 0)) {
    throw new Error(
      `has member_probabilities but its metadata ensemble.weights is ${JSON.stringify(s)}, not a list of weights`,
    );
  }
  return w as number[];
}

/** A MIL model: one bag per request and per session run (bags differ in length), runs one at a time. */
class OnnxMil implements ServedModel {
  readonly platform = PLATFORM_ONNX;
  readonly kind = 'mil' as const;
  readonly inputs = [{ name: 'input', datatype: 'FP32', shape: [-1, 1, 28, 28] }];
  readonly outputs = [
    { name: 'probability', datatype: 'FP32', shape: [1] },
    { name: 'attention', datatype: 'FP32', shape: [-1] },
    { name: 'predicted_class', datatype: 'INT64', shape: [1] },
  ];
  private chain: Promise<unknown> = Promise.resolve();

  constructor(
    private readonly session: ort.InferenceSession,
    readonly name: string,
    readonly version: string,
    readonly config: ModelConfig,
    private readonly hooks: ServingHooks = {},
  ) {}

  async check(): Promise<void> {
    const r = await this.run(new Float32Array(2 * IMAGE_SIZE), 2);
    if (r.probability.length !== 1 || r.attention.length !== 2)
      throw new Error(
        `a bag of 2 gave probability of ${r.probability.length} and attention of ${r.attention.length} values; expected 1 and 2`,
      );
  }

  private async run(x: Float32Array, n: number) {
    const out = await this.session.run({ input: f32(x, [n, 1, 28, 28]) });
    return { probability: out.probability.data as Float32Array, attention: out.attention.data as Float32Array };
  }

  infer(images: DecodedImages, deadline: number) {
    const next = this.chain.then(async () => {
      if (Date.now() >= deadline) throw deadlineError('the deadline passed while the bag waited for the model');
      const t0 = performance.now();
      const r = await this.run(images.data, images.n);
      this.hooks.onRun?.(this.name, this.version, 1, (performance.now() - t0) / 1000); // one bag per run
      const outputs: OutputTensor[] = [
        { name: 'probability', datatype: 'FP32', shape: [1], data: r.probability },
        { name: 'attention', datatype: 'FP32', shape: [images.n], data: r.attention },
        {
          name: 'predicted_class',
          datatype: 'INT64',
          shape: [1],
          data: Int32Array.of(r.probability[0] >= 0.5 ? 1 : 0),
        },
      ];
      return { outputs, parameters: {} as Parameters };
    });
    this.chain = next.catch(() => {});
    return next;
  }

  async close(): Promise<void> {
    await this.chain;
    await this.session.release();
  }
}
