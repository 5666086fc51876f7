// Encodes and decodes bus messages (proto/cluster.proto Envelopes) and raw tensor bytes.
// Decoding never throws: bytes come from the network, so every problem is a { ok: false, reason }.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = protobuf.loadSync(path.join(here, '../proto/cluster.proto'));
const EnvelopeType = root.lookupType('fleet.cluster.Envelope');

export const PROTOCOL_VERSION = 1;

/** Default cap on one envelope: NATS refuses payloads over 64 MiB anyway. */
export const DEFAULT_MAX_ENVELOPE_BYTES = 64 * 1024 * 1024;
/** Caps on decoded fields, so a hostile or broken peer cannot make us hold absurd values. */
export const FIELD_LIMITS = { id: 256, text: 64 * 1024, list: 10_000, rank: 16 } as const;

export const Device = { UNSPECIFIED: 0, CPU: 1, CUDA: 2 } as const;
export type Device = (typeof Device)[keyof typeof Device];
export const DType = { UNSPECIFIED: 0, FLOAT32: 1, INT64: 2, UINT8: 3 } as const;
export type DType = (typeof DType)[keyof typeof DType];

// Bodies as protobufjs gives them: camelCase, enums as numbers, 64-bit integers as numbers, bytes as Uint8Array.
export interface WorkerAnnounceBody {
  workerId: string;
  device: Device;
  threads: number;
  version: string;
  gpuName: string;
}
export interface RunningTaskBody {
  jobId: string;
  taskId: string;
  attempt: number;
  leaseToken: string;
}
export interface HeartbeatBody {
  workerId: string;
  uptimeMs: number;
  runningTaskIds: string[];
  samplesProcessed?: number;
  running?: RunningTaskBody[];
}
export interface TaskLeaseBody {
  taskId: string;
  jobId: string;
  attempt: number;
  leaseMs: number;
  taskJson: Uint8Array;
  leaseToken: string;
}
export interface TaskProgressBody {
  taskId: string;
  jobId: string;
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  metricsJson: Uint8Array;
  /** Set on the worker's report to the coordinator (fleet.task.progress); absent on the coordinator's republication. */
  attempt?: number;
  leaseToken?: string;
}
export interface TensorRefBody {
  name: string;
  shape: number[];
  dtype: DType;
  transferId: string;
}
export interface TaskResultBody {
  taskId: string;
  jobId: string;
  workerId: string;
  ok: boolean;
  error: string;
  resultJson: Uint8Array;
  tensors: TensorRefBody[];
  attempt: number;
  leaseToken: string;
  /** SHA-256 of the result transfer's payload (32 bytes on an ok result, empty otherwise). */
  resultSha256: Uint8Array;
}
export interface TensorChunkBody {
  transferId: string;
  index: number;
  count: number;
  totalBytes: number;
  sha256: Uint8Array;
  data: Uint8Array;
}
export interface ErrorReportBody {
  code: string;
  message: string;
}
export const DataParallelPhase = { UNSPECIFIED: 0, GRADIENT: 1, FORWARD: 2, BACKWARD: 3 } as const;
export type DataParallelPhase = (typeof DataParallelPhase)[keyof typeof DataParallelPhase];
export interface DataParallelWorkBody {
  jobId: string;
  workId: string;
  step: number;
  phase: DataParallelPhase;
  shard: number;
  shards: number;
  paramsTransferId: string;
  upstreamTransferId: string;
  specJson: Uint8Array;
}
export interface DataParallelResultBody {
  jobId: string;
  workId: string;
  workerId: string;
  step: number;
  phase: DataParallelPhase;
  shard: number;
  ok: boolean;
  error: string;
  tensors: TensorRefBody | null;
  loss: number;
  correct: number;
  computeMs: number;
  /** Optional worker-side timeline (JSON); empty when absent. */
  timelineJson?: Uint8Array;
}

export interface BodyMap {
  announce: WorkerAnnounceBody;
  heartbeat: HeartbeatBody;
  lease: TaskLeaseBody;
  result: TaskResultBody;
  progress: TaskProgressBody;
  chunk: TensorChunkBody;
  error: ErrorReportBody;
  dpWork: DataParallelWorkBody;
  dpResult: DataParallelResultBody;
}
export type BodyKind = keyof BodyMap;
/** One body, tagged by its oneof name: `switch (body.kind)` narrows `body.value`. */
export type EnvelopeBody = { [K in BodyKind]: { kind: K; value: BodyMap[K] } }[BodyKind];
export interface Envelope {
  version: number;
  sender: string;
  sentAtMs: number;
  body: EnvelopeBody;
}

export type Result<T> = ({ ok: true } & T) | { ok: false; reason: string };

const BODY_KINDS: readonly string[] = [
  'announce',
  'heartbeat',
  'lease',
  'result',
  'progress',
  'chunk',
  'error',
  'dpWork',
  'dpResult',
];

/** Encodes a body in a versioned envelope; throws on an invalid body (a bug in the caller, not bad input). */
export function encodeEnvelope(body: EnvelopeBody, sender: string): Uint8Array {
  const env: Envelope = { version: PROTOCOL_VERSION, sender, sentAtMs: Date.now(), body };
  const reason = checkEnvelope(env);
  if (reason) throw new Error(`cannot encode ${body?.kind} envelope: ${reason}`);
  // protobufjs encodes plain objects directly; the oneof is selected by which member is set.
  return EnvelopeType.encode({
    version: env.version,
    sender,
    sentAtMs: env.sentAtMs,
    [body.kind]: body.value,
  }).finish();
}

export function decodeEnvelope(bytes: Uint8Array, limits: { maxBytes?: number } = {}): Result<{ envelope: Envelope }> {
  const maxBytes = limits.maxBytes ?? DEFAULT_MAX_ENVELOPE_BYTES;
  if (!(bytes instanceof Uint8Array)) return fail('envelope is not bytes');
  if (bytes.length > maxBytes) return fail(`envelope of ${bytes.length} bytes exceeds the limit of ${maxBytes}`);
  let obj: any;
  try {
    obj = EnvelopeType.toObject(EnvelopeType.decode(bytes), {
      longs: Number,
      enums: Number,
      defaults: true,
      arrays: true,
      oneofs: true,
    });
  } catch (e) {
    return fail(`malformed envelope: ${(e as Error).message}`);
  }
  if (obj.version !== PROTOCOL_VERSION) {
    return fail(
      `unsupported protocol version ${obj.version}${obj.version === 0 ? ' (missing)' : ''}, expected ${PROTOCOL_VERSION}`,
    );
  }
  if (!BODY_KINDS.includes(obj.body)) return fail('envelope has no body');
  // an optional field that came empty is absent, as the sender wrote it
  if (obj.body === 'dpResult' && !obj.dpResult.timelineJson?.length) delete obj.dpResult.timelineJson;
  if (obj.body === 'heartbeat' && !obj.heartbeat.running?.length) delete obj.heartbeat.running;
  if (obj.body === 'progress' && !obj.progress.leaseToken) {
    delete obj.progress.leaseToken;
    delete obj.progress.attempt;
  }
  const envelope = {
    version: obj.version,
    sender: obj.sender,
    sentAtMs: obj.sentAtMs,
    body: { kind: obj.body, value: obj[obj.body] },
  } as Envelope;
  const reason = checkEnvelope(envelope);
  return reason ? fail(reason) : { ok: true, envelope };
}

/** Parses a *_json bytes field; empty bytes mean "absent" (value undefined). */
export function parseJsonField(bytes: Uint8Array, what: string): Result<{ value: unknown }> {
  if (!(bytes instanceof Uint8Array)) return fail(`${what} is not bytes`);
  if (bytes.length === 0) return { ok: true, value: undefined };
  try {
    return { ok: true, value: JSON.parse(utf8.decode(bytes)) };
  } catch (e) {
    return fail(`${what} is not valid JSON: ${(e as Error).message}`);
  }
}

export function jsonField(value: unknown): Uint8Array {
  return value === undefined ? new Uint8Array(0) : new TextEncoder().encode(JSON.stringify(value));
}

// ---- validation: each helper returns null when fine, so checks chain with `??` and stop at the first reason.

type Reason = string | null;

function checkEnvelope(env: Envelope): Reason {
  return (
    u32(env.version, 'version') ??
    str(env.sender, 'sender', FIELD_LIMITS.id, false) ??
    u64(env.sentAtMs, 'sent_at_ms') ??
    checkBody(env.body)
  );
}

function checkBody(body: EnvelopeBody): Reason {
  const v: any = body?.value;
  if (!v || typeof v !== 'object') return 'envelope has no body';
  const k = body.kind;
  switch (k) {
    case 'announce':
      return (
        id(v.workerId, `${k}.worker_id`) ??
        known(v.device, `${k}.device`, Device, 'Device') ??
        u32(v.threads, `${k}.threads`) ??
        str(v.version, `${k}.version`, FIELD_LIMITS.id, false) ??
        str(v.gpuName, `${k}.gpu_name`, FIELD_LIMITS.id, false)
      );
    case 'heartbeat':
      return (
        id(v.workerId, `${k}.worker_id`) ??
        u64(v.uptimeMs, `${k}.uptime_ms`) ??
        list(v.runningTaskIds, `${k}.running_task_ids`, (x, w) => id(x, w)) ??
        (v.samplesProcessed === undefined ? null : u64(v.samplesProcessed, `${k}.samples_processed`)) ??
        (v.running === undefined ? null : list(v.running, `${k}.running`, checkRunningTask))
      );
    case 'lease':
      return (
        id(v.taskId, `${k}.task_id`) ??
        id(v.jobId, `${k}.job_id`) ??
        u32(v.attempt, `${k}.attempt`) ??
        u32(v.leaseMs, `${k}.lease_ms`) ??
        json(v.taskJson, `${k}.task_json`, true) ??
        id(v.leaseToken, `${k}.lease_token`)
      );
    case 'progress':
      return (
        id(v.taskId, `${k}.task_id`) ??
        id(v.jobId, `${k}.job_id`) ??
        u32(v.epoch, `${k}.epoch`) ??
        u32(v.batch, `${k}.batch`) ??
        u32(v.batches, `${k}.batches`) ??
        (typeof v.loss === 'number' ? null : `${k}.loss is not a number`) ??
        json(v.metricsJson, `${k}.metrics_json`, false) ??
        (v.leaseToken === undefined ? null : (id(v.leaseToken, `${k}.lease_token`) ?? u32(v.attempt, `${k}.attempt`)))
      );
    case 'result':
      return (
        id(v.taskId, `${k}.task_id`) ??
        id(v.jobId, `${k}.job_id`) ??
        id(v.workerId, `${k}.worker_id`) ??
        (typeof v.ok === 'boolean' ? null : `${k}.ok is not a boolean`) ??
        str(v.error, `${k}.error`, FIELD_LIMITS.text, false) ??
        json(v.resultJson, `${k}.result_json`, false) ??
        list(v.tensors, `${k}.tensors`, checkTensorRef) ??
        u32(v.attempt, `${k}.attempt`) ??
        id(v.leaseToken, `${k}.lease_token`) ??
        bytes(v.resultSha256, `${k}.result_sha256`) ??
        (v.resultSha256.length === (v.ok ? 32 : 0)
          ? null
          : `${k}.result_sha256 has ${v.resultSha256.length} bytes, expected ${v.ok ? 32 : 0}`)
      );
    case 'chunk':
      return (
        id(v.transferId, `${k}.transfer_id`) ??
        u32(v.index, `${k}.index`) ??
        u32(v.count, `${k}.count`) ??
        u64(v.totalBytes, `${k}.total_bytes`) ??
        bytes(v.sha256, `${k}.sha256`) ??
        bytes(v.data, `${k}.data`) ??
        (v.count > 0 ? null : `${k}.count is 0`) ??
        (v.index < v.count ? null : `${k}.index ${v.index} is not below count ${v.count}`) ??
        (v.sha256.length === 32 ? null : `${k}.sha256 has ${v.sha256.length} bytes, expected 32`) ??
        (v.data.length <= v.totalBytes
          ? null
          : `${k}.data (${v.data.length} bytes) exceeds total_bytes ${v.totalBytes}`)
      );
    case 'error':
      return (
        str(v.code, `${k}.code`, FIELD_LIMITS.id, true) ?? str(v.message, `${k}.message`, FIELD_LIMITS.text, false)
      );
    case 'dpWork':
      return (
        id(v.jobId, `${k}.job_id`) ??
        id(v.workId, `${k}.work_id`) ??
        u64(v.step, `${k}.step`) ??
        known(v.phase, `${k}.phase`, DataParallelPhase, 'DataParallelPhase') ??
        u32(v.shard, `${k}.shard`) ??
        u32(v.shards, `${k}.shards`) ??
        (v.shards > 0 && v.shard < v.shards ? null : `${k}.shard ${v.shard} is not below shards ${v.shards}`) ??
        id(v.paramsTransferId, `${k}.params_transfer_id`) ??
        str(v.upstreamTransferId, `${k}.upstream_transfer_id`, FIELD_LIMITS.id, false) ??
        (v.phase !== DataParallelPhase.BACKWARD || v.upstreamTransferId
          ? null
          : `${k}.upstream_transfer_id is empty for a BACKWARD step`) ??
        json(v.specJson, `${k}.spec_json`, true)
      );
    case 'dpResult':
      return (
        id(v.jobId, `${k}.job_id`) ??
        id(v.workId, `${k}.work_id`) ??
        id(v.workerId, `${k}.worker_id`) ??
        u64(v.step, `${k}.step`) ??
        known(v.phase, `${k}.phase`, DataParallelPhase, 'DataParallelPhase') ??
        u32(v.shard, `${k}.shard`) ??
        (typeof v.ok === 'boolean' ? null : `${k}.ok is not a boolean`) ??
        str(v.error, `${k}.error`, FIELD_LIMITS.text, false) ??
        (v.tensors === null ? (v.ok ? `${k}.tensors is missing` : null) : checkTensorRef(v.tensors, `${k}.tensors`)) ??
        finite(v.loss, `${k}.loss`) ??
        u32(v.correct, `${k}.correct`) ??
        finite(v.computeMs, `${k}.compute_ms`) ??
        (v.timelineJson === undefined ? null : json(v.timelineJson, `${k}.timeline_json`, false))
      );
    default:
      return `unknown body kind ${String(k)}`;
  }
}

function checkRunningTask(t: any, what: string): Reason {
  if (!t || typeof t !== 'object') return `${what} is not a RunningTask`;
  return (
    id(t.jobId, `${what}.job_id`) ??
    id(t.taskId, `${what}.task_id`) ??
    u32(t.attempt, `${what}.attempt`) ??
    id(t.leaseToken, `${what}.lease_token`)
  );
}

function checkTensorRef(t: any, what: string): Reason {
  if (!t || typeof t !== 'object') return `${what} is not a TensorRef`;
  return (
    id(t.name, `${what}.name`) ??
    known(t.dtype, `${what}.dtype`, DType, 'DType') ??
    id(t.transferId, `${what}.transfer_id`) ??
    (Array.isArray(t.shape) && t.shape.length <= FIELD_LIMITS.rank
      ? null
      : `${what}.shape has more than ${FIELD_LIMITS.rank} dimensions`) ??
    list(t.shape, `${what}.shape`, u64) ??
    (Number.isSafeInteger(t.shape.reduce((a: number, b: number) => a * b, 1))
      ? null
      : `${what}.shape has too many elements`)
  );
}

function str(v: unknown, what: string, max: number, required: boolean): Reason {
  if (typeof v !== 'string') return `${what} is not a string`;
  if (required && v.length === 0) return `${what} is empty`;
  return v.length <= max ? null : `${what} is longer than ${max} characters`;
}
const id = (v: unknown, what: string): Reason => str(v, what, FIELD_LIMITS.id, true);

function u32(v: unknown, what: string): Reason {
  return Number.isInteger(v) && (v as number) >= 0 && (v as number) <= 0xffffffff
    ? null
    : `${what} is not a uint32: ${v}`;
}
// uint64 fields must stay exact as JavaScript numbers.
function u64(v: unknown, what: string): Reason {
  return Number.isSafeInteger(v) && (v as number) >= 0 ? null : `${what} is not a uint64 below 2^53: ${v}`;
}
function finite(v: unknown, what: string): Reason {
  return typeof v === 'number' && Number.isFinite(v) ? null : `${what} is not a finite number: ${v}`;
}
function bytes(v: unknown, what: string): Reason {
  return v instanceof Uint8Array ? null : `${what} is not bytes`;
}
function known(v: unknown, what: string, values: Record<string, number>, name: string): Reason {
  if (v === 0) return `${what} is unspecified`;
  return Object.values(values).includes(v as number) ? null : `${what} ${v} is not a known ${name}`;
}
function list(v: unknown, what: string, check: (x: any, what: string) => Reason): Reason {
  if (!Array.isArray(v)) return `${what} is not a list`;
  if (v.length > FIELD_LIMITS.list) return `${what} has more than ${FIELD_LIMITS.list} entries`;
  for (let i = 0; i < v.length; i++) {
    const r = check(v[i], `${what}[${i}]`);
    if (r) return r;
  }
  return null;
}
function json(v: unknown, what: string, required: boolean): Reason {
  if (!(v instanceof Uint8Array)) return `${what} is not bytes`;
  if (v.length === 0) return required ? `${what} is empty` : null;
  const r = parseJsonField(v, what);
  return r.ok ? null : r.reason;
}

function fail(reason: string): { ok: false; reason: string } {
  return { ok: false, reason };
}

// fatal: invalid UTF-8 in a JSON field is an error, not silently replaced characters.
const utf8 = new TextDecoder('utf-8', { fatal: true });

// ---- tensors as raw little-endian bytes

export type TensorArray = Float32Array | BigInt64Array | Uint8Array;

// The wire format is little-endian and we reinterpret memory in place, so refuse big-endian hosts outright.
if (new Uint8Array(new Uint16Array([1]).buffer)[0] !== 1) throw new Error('fleet requires a little-endian host');

export function dtypeOf(t: TensorArray): DType {
  return t instanceof Float32Array ? DType.FLOAT32 : t instanceof BigInt64Array ? DType.INT64 : DType.UINT8;
}

/** A view of the tensor's memory (no copy). */
export function tensorToBytes(t: TensorArray): Uint8Array {
  return new Uint8Array(t.buffer, t.byteOffset, t.byteLength);
}

const ELEMENT_BYTES: Record<number, number> = { [DType.FLOAT32]: 4, [DType.INT64]: 8, [DType.UINT8]: 1 };

/** Views bytes as a typed array of `shape`; copies only when the bytes are not aligned for the element type. */
export function bytesToTensor(
  bytes: Uint8Array,
  dtype: DType,
  shape: readonly number[],
): Result<{ tensor: TensorArray }> {
  const size = ELEMENT_BYTES[dtype];
  if (!size) return fail(`unsupported dtype ${dtype}`);
  if (!(bytes instanceof Uint8Array)) return fail('tensor data is not bytes');
  let n = 1;
  for (const d of shape) {
    if (!Number.isSafeInteger(d) || d < 0) return fail(`invalid dimension ${d} in shape [${shape}]`);
    n *= d;
  }
  if (!Number.isSafeInteger(n * size) || n * size !== bytes.byteLength) {
    return fail(`tensor of shape [${shape}] needs ${n * size} bytes, got ${bytes.byteLength}`);
  }
  // Typed arrays need byteOffset to be a multiple of the element size; slice() copies into a fresh buffer.
  const b = bytes.byteOffset % size === 0 ? bytes : bytes.slice();
  const tensor =
    dtype === DType.FLOAT32
      ? new Float32Array(b.buffer, b.byteOffset, n)
      : dtype === DType.INT64
        ? new BigInt64Array(b.buffer, b.byteOffset, n)
        : new Uint8Array(b.buffer, b.byteOffset, n);
  return { ok: true, tensor };
}
