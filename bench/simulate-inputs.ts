// The measured inputs of the scale model (bench/simulate.ts): compute, aggregation and transport costs from a
// `fleet bench scale` results file (bench/results/scale.json), model sizes from the SimCLR model definition,
// and the one cost that file lacks, the fixed cost of a transfer, from a short run of the transport floor
// (bench/transport-floor.ts) with a payload of one small message. The results file is untrusted input: every
// field used is checked, and a missing or wrong one is an error naming it.
import * as fs from 'node:fs';
import { simclrParams, PROJECTION_DIM, PROJECTION_HIDDEN } from '../engine/model/simclr.ts';
import { FEATURES } from '../engine/model/cnn.ts';
import { size } from '../engine/graph/graph.ts';
import { startNatsServer } from './harness/nats-server.ts';
import { transportFloor } from './transport-floor.ts';
import type { ModelInputs } from './simulate.ts';

const MAX_FILE_BYTES = 4 * 2 ** 20;
const F32 = 4;
/** Where each input came from, recorded next to the predictions. */
export type InputSources = Record<keyof ModelInputs, string>;

/** The data-parallel part of a scale results file, as the model needs it. */
export interface ScaleMeasurement {
  workers: number;
  globalBatch: number;
  computeMs: number;
  lossMs: number;
  forwardMs: number;
  backwardMs: number;
  sumMs: number;
  optimizerMs: number;
  floor: { payloadBytes: number; receivers: number; roundTripMs: number };
  /** The measured fixed cost of one transfer, when the file has it (transport_floor.message_round_trip_ms_median). */
  messageRoundTripMs?: number;
  date: string;
}

export function readScaleResults(file: string): ScaleMeasurement {
  if (!fs.existsSync(file)) throw new Error(`${file}: not found (run fleet bench scale first, or give --inputs FILE)`);
  if (fs.statSync(file).size > MAX_FILE_BYTES) throw new Error(`${file}: larger than ${MAX_FILE_BYTES} bytes`);
  let v: unknown;
  try {
    v = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new Error(`${file}: not JSON (${(e as Error).message})`);
  }
  const num = (dotted: string, min = 0): number => {
    let x: unknown = v;
    for (const k of dotted.split('.'))
      x = x !== null && typeof x === 'object' ? (x as Record<string, unknown>)[k] : undefined;
    if (typeof x !== 'number' || !Number.isFinite(x) || x < min)
      throw new Error(`${file}: ${dotted} must be a number >= ${min}, got ${JSON.stringify(x)}`);
    return x;
  };
  const d = 'data_parallel_simclr',
    t = `${d}.timeline_ms_median`,
    f = `${d}.transport_floor`;
  const hasMessage =
    (v as { [d]?: { transport_floor?: Record<string, unknown> } })[d]?.transport_floor?.message_round_trip_ms_median !==
    undefined;
  const date = (v as { machine?: { date?: unknown } }).machine?.date;
  return {
    workers: num(`${d}.workers`, 1),
    globalBatch: num(`${d}.global_batch`, 1),
    computeMs: num(`${d}.compute_ms_median`),
    lossMs: num(`${t}.loss`),
    forwardMs: num(`${t}.forward_compute`),
    backwardMs: num(`${t}.backward_compute`),
    sumMs: num(`${t}.aggregate_sum`),
    optimizerMs: num(`${t}.optimizer`),
    floor: {
      payloadBytes: num(`${f}.payload_bytes`, 1),
      receivers: num(`${f}.receivers`, 1),
      roundTripMs: num(`${f}.round_trip_ms_median`),
    },
    messageRoundTripMs: hasMessage ? num(`${f}.message_round_trip_ms_median`) : undefined,
    date: typeof date === 'string' ? date : 'unknown',
  };
}

/** The round trip of one small message through a fresh local nats-server to `receivers` echo processes. */
export async function measureMessageRoundTrip(receivers: number, rounds = 8): Promise<number> {
  const nats = await startNatsServer();
  try {
    return (await transportFloor(nats.url, 1024, receivers, rounds)).round_trip_ms_median;
  } finally {
    await nats.dispose();
  }
}

/** SimCLR's sizes from its model definition: parameter bytes, head1's weight and the factor/projection bytes. */
export function simclrSizes() {
  const specs = simclrParams();
  const paramBytes = specs.reduce((a, s) => a + size(s.shape) * F32, 0);
  const head1 = specs.find(s => s.name === 'head1.weight');
  if (!head1) throw new Error('simclrParams() has no head1.weight: the model changed, update bench/simulate-inputs.ts');
  return {
    paramBytes,
    head1WeightBytes: size(head1.shape) * F32,
    // per image two views; head1's weight gradient = X^T G with X [views, FEATURES] and G [views, HIDDEN]
    head1FactorBytesPerImage: 2 * (FEATURES + PROJECTION_HIDDEN) * F32,
    projectionBytesPerImage: 2 * PROJECTION_DIM * F32,
  };
}

/** The model's inputs from a measurement, and where each came from. */
export function modelInputs(
  s: ScaleMeasurement,
  messageRoundTripMs: number,
  file: string,
): { inputs: ModelInputs; sources: InputSources } {
  const sizes = simclrSizes();
  const perWorker = s.globalBatch / s.workers;
  // a round trip of the floor is two transfers (down to the echoes, back up); its fixed part is two message costs
  const messageMs = messageRoundTripMs / 2;
  // the floor's hub link carried receivers x payload down and as much up; what is beyond the fixed costs is per byte
  const hubBytes = 2 * s.floor.receivers * s.floor.payloadBytes;
  const softwareMsPerByte = Math.max(0, s.floor.roundTripMs - messageRoundTripMs) / hubBytes;
  const inputs: ModelInputs = {
    computeMsPerImage: (s.computeMs - s.lossMs) / perWorker,
    backwardOnlyMsPerImage: Math.max(0, s.backwardMs - s.forwardMs) / perWorker,
    lossMs: s.lossMs,
    lossGlobalBatch: s.globalBatch,
    sumMsPerByte: s.sumMs / (s.workers * sizes.paramBytes),
    optimizerMs: s.optimizerMs,
    ...sizes,
    softwareMsPerByte,
    messageMs,
  };
  const dp = `${file} data_parallel_simclr`;
  const sources: InputSources = {
    computeMsPerImage: `(${dp}.compute_ms_median - timeline loss) / (global_batch / workers)`,
    backwardOnlyMsPerImage: `(${dp} timeline backward_compute - forward_compute) / images per worker`,
    lossMs: `${dp} timeline loss`,
    lossGlobalBatch: `${dp}.global_batch`,
    sumMsPerByte: `${dp} timeline aggregate_sum / (workers x parameter bytes)`,
    optimizerMs: `${dp} timeline optimizer`,
    paramBytes: 'simclrParams() (engine/model/simclr.ts), float32',
    head1WeightBytes: 'simclrParams() head1.weight, float32',
    head1FactorBytesPerImage: '2 views x (FEATURES + PROJECTION_HIDDEN) float32',
    projectionBytesPerImage: '2 views x PROJECTION_DIM float32',
    softwareMsPerByte:
      `(${dp}.transport_floor.round_trip_ms_median - message round trip)` + ' / (2 x receivers x payload_bytes)',
    messageMs:
      s.messageRoundTripMs !== undefined
        ? `${dp}.transport_floor.message_round_trip_ms_median / 2`
        : 'a 1 KB transport floor round trip (bench/transport-floor.ts, measured by this run) / 2',
  };
  return { inputs, sources };
}
