// A task's result as bytes (for the bus and the coordinator's state directory): the checkpoint format
// (JSON header + raw float32 tensors + SHA-256), with every member's weights and probability matrices.
import { encodeCheckpoint, decodeCheckpoint, CheckpointError } from '../checkpoint.ts';
import type { MemberResult, TrainedMember, TensorData, EvalData } from './tasks.ts';

interface MemberMeta {
  name: string;
  taskId: string;
  model: TrainedMember['model'];
  epoch: number;
  params: Omit<TensorData, 'data'>;
  buffers: Omit<TensorData, 'data'>;
  probe?: Omit<TensorData, 'data'>;
  val?: Omit<EvalData, 'probabilities'>;
  test?: Omit<EvalData, 'probabilities'>;
}
interface ResultMeta {
  format: 'fleet-member-result-1';
  taskId: string;
  seconds: number;
  history: MemberResult['history'];
  members: MemberMeta[];
}

export function encodeMemberResult(r: MemberResult): Uint8Array {
  const tensors = new Map<string, Float32Array>();
  const sets = (m: TrainedMember) =>
    ({ params: m.params, buffers: m.buffers, ...(m.probe ? { probe: m.probe } : {}) }) as Record<string, TensorData>;
  const members = r.members.map((m, i) => {
    for (const [kind, t] of Object.entries(sets(m))) {
      t.names.forEach((n, k) => tensors.set(`${i}/${kind}/${n}`, t.data[k]));
    }
    for (const split of ['val', 'test'] as const) if (m[split]) tensors.set(`${i}/${split}`, m[split]!.probabilities);
    const shape = (t?: TensorData) => (t ? { names: t.names, shapes: t.shapes } : undefined);
    const ev = (e?: EvalData) => (e ? { loss: e.loss, accuracy: e.accuracy } : undefined);
    return {
      name: m.name,
      taskId: m.taskId,
      model: m.model,
      epoch: m.epoch,
      params: shape(m.params)!,
      buffers: shape(m.buffers)!,
      probe: shape(m.probe),
      val: ev(m.val),
      test: ev(m.test),
    };
  });
  const meta: ResultMeta = {
    format: 'fleet-member-result-1',
    taskId: r.taskId,
    seconds: r.seconds,
    history: r.history,
    members,
  };
  return encodeCheckpoint(meta, tensors);
}

/** What decodeMemberResult throws: the bytes are not a complete, well-formed member result. */
export class ResultCodecError extends Error {}

/** Decodes and checks a result; throws a ResultCodecError naming `what` when the bytes are not a complete result. */
export function decodeMemberResult(bytes: Uint8Array, what = 'task result'): MemberResult {
  let decoded: { meta: ResultMeta; tensors: Map<string, Float32Array> };
  try {
    decoded = decodeCheckpoint<ResultMeta>(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), what);
  } catch (e) {
    if (e instanceof CheckpointError) throw new ResultCodecError(e.message);
    throw e;
  }
  const { meta, tensors } = decoded;
  const bad = (why: string) => new ResultCodecError(`${what}: not a member result (${why})`);
  if (!isObject(meta) || meta.format !== 'fleet-member-result-1' || !Array.isArray(meta.members)) throw bad('format');
  if (typeof meta.taskId !== 'string' || typeof meta.seconds !== 'number' || !Array.isArray(meta.history))
    throw bad('taskId, seconds or history');
  const take = (key: string) => {
    const t = tensors.get(key);
    if (!t) throw new ResultCodecError(`${what}: tensor ${key} is missing`);
    return t;
  };
  const members = meta.members.map((m, i): TrainedMember => {
    if (
      !isObject(m) ||
      typeof m.name !== 'string' ||
      typeof m.taskId !== 'string' ||
      typeof m.model !== 'string' ||
      !Number.isSafeInteger(m.epoch)
    )
      throw bad(`member ${i}`);
    const set = (kind: string, t?: Omit<TensorData, 'data'>) => {
      if (t === undefined || t === null) return undefined;
      if (
        !isObject(t) ||
        !Array.isArray(t.names) ||
        !Array.isArray(t.shapes) ||
        t.names.length !== t.shapes.length ||
        !t.names.every(n => typeof n === 'string') ||
        !t.shapes.every(sh => Array.isArray(sh) && sh.every(Number.isSafeInteger))
      ) {
        throw bad(`member ${i} ${kind}`);
      }
      return { names: t.names, shapes: t.shapes, data: t.names.map(n => take(`${i}/${kind}/${n}`)) };
    };
    const ev = (split: string, e?: Omit<EvalData, 'probabilities'>) => {
      if (e === undefined || e === null) return undefined;
      if (!isObject(e) || typeof e.loss !== 'number' || typeof e.accuracy !== 'number')
        throw bad(`member ${i} ${split}`);
      return { loss: e.loss, accuracy: e.accuracy, probabilities: take(`${i}/${split}`) };
    };
    const params = set('params', m.params),
      buffers = set('buffers', m.buffers);
    if (!params || !buffers) throw bad(`member ${i} has no params or buffers`);
    return {
      name: m.name,
      taskId: m.taskId,
      model: m.model,
      epoch: m.epoch,
      params,
      buffers,
      probe: set('probe', m.probe),
      val: ev('val', m.val),
      test: ev('test', m.test),
    };
  });
  return { taskId: meta.taskId, members, history: meta.history, seconds: meta.seconds };
}

const isObject = (v: unknown): v is Record<string, any> => typeof v === 'object' && v !== null && !Array.isArray(v);
