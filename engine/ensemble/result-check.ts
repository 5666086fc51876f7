// Does a task's result fit the job that asked for it? A result comes from another host: its members must be
// the task's (names, model kind, count), with the tensors and probability matrices the job's models and data
// sets give, before anything is written or combined. Returns the first mismatch, or null.
import { loadDatasetCached } from '../data/datasets.ts';
import { validationSplit } from '../data/split.ts';
import { cnnParams, cnnBuffers, CLASSES } from '../model/cnn.ts';
import { simclrParams, simclrBuffers, probeParams } from '../model/simclr.ts';
import type { TensorSpec } from '../model/params.ts';
import type { EnsembleOptions } from './train-ensemble.ts';
import type { MemberTask, MemberResult, TensorData, EvalData } from './tasks.ts';

/** Rows of the probability matrices a member of this ensemble returns (validation rows absent without a split). */
export function expectedRows(
  o: Pick<EnsembleOptions, 'dataset' | 'dataDir' | 'limitTrain' | 'limitTest' | 'valFraction' | 'seed'>,
) {
  const data = loadDatasetCached(o.dataset, o.dataDir);
  const test = Math.min(data.test.count, o.limitTest ?? Infinity);
  const count = Math.min(data.train.count, o.limitTrain ?? Infinity);
  const val = o.valFraction > 0 ? validationSplit(count, o.valFraction, o.seed).val.length : 0;
  return { val, test };
}

/** The member names a task returns: its id, or one per snapshot. */
export function memberNames(task: Pick<MemberTask, 'id' | 'snapshots'>): string[] {
  return task.snapshots ? Array.from({ length: task.snapshots }, (_, i) => `${task.id}/snapshot-${i + 1}`) : [task.id];
}

export function checkMemberResult(
  task: MemberTask,
  r: MemberResult,
  rows: { val: number; test: number },
): string | null {
  if (r.taskId !== task.id) return `result of task ${JSON.stringify(r.taskId)}, expected ${task.id}`;
  if (!Number.isFinite(r.seconds) || r.seconds < 0) return `seconds ${r.seconds} is not a duration`;
  if (r.history.length > task.epochs + 1) return `${r.history.length} history entries for ${task.epochs} epochs`;
  const names = memberNames(task);
  if (r.members.length !== names.length) return `${r.members.length} member(s), expected ${names.length}`;
  const shapes =
    task.model === 'simclr'
      ? { params: simclrParams(), buffers: simclrBuffers(), probe: probeParams() }
      : { params: cnnParams(), buffers: cnnBuffers(), probe: null };
  for (const [i, m] of r.members.entries()) {
    const what = `member ${JSON.stringify(m.name)}`;
    if (m.name !== names[i]) return `${what}, expected ${names[i]}`;
    if (m.taskId !== task.id || m.model !== task.model)
      return `${what} is a ${m.model} of task ${m.taskId}, expected ${task.model} of ${task.id}`;
    if (!Number.isSafeInteger(m.epoch) || m.epoch < 0 || m.epoch > task.epochs) return `${what}: epoch ${m.epoch}`;
    const bad =
      tensors(m.params, shapes.params, `${what} params`) ??
      tensors(m.buffers, shapes.buffers, `${what} buffers`) ??
      (shapes.probe
        ? tensors(m.probe, shapes.probe, `${what} probe`)
        : m.probe
          ? `${what} has a probe, a ${task.model} has none`
          : null) ??
      probabilities(m.test, rows.test, `${what} test`) ??
      (rows.val
        ? probabilities(m.val, rows.val, `${what} val`)
        : m.val
          ? `${what} has validation results without a split`
          : null);
    if (bad) return bad;
  }
  return null;
}

function tensors(t: TensorData | undefined, specs: TensorSpec[], what: string): string | null {
  if (!t) return `${what} are missing`;
  if (t.names.length !== specs.length) return `${what}: ${t.names.length} tensors, expected ${specs.length}`;
  for (const [k, s] of specs.entries()) {
    if (t.names[k] !== s.name) return `${what}: tensor ${k} is ${JSON.stringify(t.names[k])}, expected ${s.name}`;
    if (t.shapes[k].join('x') !== s.shape.join('x'))
      return `${what}: ${s.name} has shape [${t.shapes[k]}], expected [${s.shape}]`;
    const size = s.shape.reduce((a, b) => a * b, 1);
    if (t.data[k].length !== size) return `${what}: ${s.name} has ${t.data[k].length} values, expected ${size}`;
  }
  return null;
}

function probabilities(e: EvalData | undefined, rows: number, what: string): string | null {
  if (!e) return `${what} results are missing`;
  if (!Number.isFinite(e.loss) || !(e.accuracy >= 0 && e.accuracy <= 1))
    return `${what}: loss ${e.loss}, accuracy ${e.accuracy}`;
  if (e.probabilities.length !== rows * CLASSES)
    return `${what}: ${e.probabilities.length} probabilities, expected ${rows} x ${CLASSES}`;
  return null;
}
