// A task's result as bytes (for the bus and the coordinator's state directory): the checkpoint format
// (JSON header + raw float32 tensors + SHA-256), with every member's weights and probability matrices.
import { encodeCheckpoint, decodeCheckpoint } from '../checkpoint.ts';
import type { MemberResult, TrainedMember, TensorData, EvalData } from './tasks.ts';

interface MemberMeta {
  name: string; taskId: string; model: TrainedMember['model']; epoch: number;
  params: Omit<TensorData, 'data'>; buffers: Omit<TensorData, 'data'>; probe?: Omit<TensorData, 'data'>;
  val?: Omit<EvalData, 'probabilities'>; test?: Omit<EvalData, 'probabilities'>;
}
interface ResultMeta { format: 'fleet-member-result-1'; taskId: string; seconds: number; history: MemberResult['history']; members: MemberMeta[] }

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
    return { name: m.name, taskId: m.taskId, model: m.model, epoch: m.epoch, params: shape(m.params)!, buffers: shape(m.buffers)!,
      probe: shape(m.probe), val: ev(m.val), test: ev(m.test) };
  });
  const meta: ResultMeta = { format: 'fleet-member-result-1', taskId: r.taskId, seconds: r.seconds, history: r.history, members };
  return encodeCheckpoint(meta, tensors);
}

/** Decodes and checks a result; throws a clear error naming `what` when the bytes are not a complete result. */
export function decodeMemberResult(bytes: Uint8Array, what = 'task result'): MemberResult {
  const { meta, tensors } = decodeCheckpoint<ResultMeta>(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength), what);
  if (meta?.format !== 'fleet-member-result-1' || !Array.isArray(meta.members)) throw new Error(`${what}: not a member result`);
  const take = (key: string) => {
    const t = tensors.get(key);
    if (!t) throw new Error(`${what}: tensor ${key} is missing`);
    return t;
  };
  const members = meta.members.map((m, i): TrainedMember => {
    const set = (kind: string, t?: Omit<TensorData, 'data'>) => (t ? { ...t, data: t.names.map(n => take(`${i}/${kind}/${n}`)) } : undefined);
    const ev = (split: string, e?: Omit<EvalData, 'probabilities'>) => (e ? { ...e, probabilities: take(`${i}/${split}`) } : undefined);
    return { name: m.name, taskId: m.taskId, model: m.model, epoch: m.epoch, params: set('params', m.params)!, buffers: set('buffers', m.buffers)!,
      probe: set('probe', m.probe), val: ev('val', m.val), test: ev('test', m.test) };
  });
  return { taskId: meta.taskId, members, history: meta.history, seconds: meta.seconds };
}
