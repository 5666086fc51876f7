// What an ensemble run writes and reports, wherever its members were trained (locally or on cluster workers):
// the one-graph model, each member's model, the plots, and the summary and details for metrics.json.
import { exportEnsemble, type EnsembleMember } from './export.ts';
import { toTensorSet, type TrainedMember } from './tasks.ts';
import type { EnsembleOptions, EnsembleResult } from './train-ensemble.ts';
import { exportCnn, CLASSES } from '../model/cnn.ts';
import { exportSimclrClassifier } from '../model/simclr.ts';
import { testErrors } from '../metrics.ts';
import { memberBars, selectionCurve, selectionWeights } from '../report/ensemble-plots.ts';
import { checkId, pathUnder } from '../../util/ids.ts';

export function ensembleMember(m: TrainedMember): EnsembleMember {
  return m.model === 'simclr'
    ? { kind: 'simclr', params: toTensorSet(m.params), buffers: toTensorSet(m.buffers), probe: toTensorSet(m.probe!) }
    : { kind: 'cnn', params: toTensorSet(m.params), buffers: toTensorSet(m.buffers) };
}

const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;

/**
 * Where a member's own model file goes in the run's directory. A member name is a task id, or `<task>/snapshot-<k>`
 * for snapshot members: each part is checked, so that no name (from a worker's result) leaves the run's directory.
 */
export function memberModelPath(name: string): string {
  const parts = typeof name === 'string' ? name.split('/') : [name];
  if (parts.length > 2) throw new Error(`invalid member name ${JSON.stringify(name)}: at most one '/'`);
  for (const p of parts) checkId('member name', p);
  return `members/${parts.join('/')}/model.onnx`;
}

/** The file `name` (a key of memberFiles() or ensembleOutputs().files) under the run's directory `root`; throws if outside. */
export const outputPath = (root: string, name: string) => pathUnder(root, ...name.split('/'));

/** One member's own model file, `members/<name>/model.onnx` (it does not depend on the other members). */
export function memberFiles(o: Pick<EnsembleOptions, 'dataset'>, m: TrainedMember): Record<string, Uint8Array> {
  const metadata = { dataset: o.dataset };
  const t = ensembleMember(m);
  return {
    [memberModelPath(m.name)]:
      t.kind === 'simclr'
        ? exportSimclrClassifier(t.params, t.buffers, t.probe, metadata)
        : exportCnn(t.params, t.buffers, metadata),
  };
}

/** The run's files; opts.members false leaves out memberFiles() (a coordinator writes those as each member arrives). */
export function ensembleOutputs(o: EnsembleOptions, r: EnsembleResult, opts: { members?: boolean } = {}) {
  const metadata = { dataset: o.dataset };
  const files: Record<string, string | Uint8Array> = {
    'model.onnx': exportEnsemble(r.members.map(ensembleMember), r.weights, {
      metadata: { ...metadata, ensemble: o.kind },
    }),
    ...memberBars(r.memberSummaries),
  };
  if (opts.members ?? true) for (const m of r.members) Object.assign(files, memberFiles(o, m));
  if (r.selection) {
    const loss = r.selection.objective === 'loss';
    const bestMember = loss
      ? Math.min(...r.memberSummaries.map(m => m.val_loss!))
      : Math.max(...r.memberSummaries.map(m => m.val_accuracy!));
    files['selection.svg'] = selectionCurve(
      r.selection.steps,
      { best_member: bestMember, average: (loss ? r.average.val_loss : r.average.val_accuracy)! },
      `validation ${r.selection.objective}`,
    );
    files['selection-weights.svg'] = selectionWeights(
      r.selection.steps,
      r.memberSummaries.map(m => m.name),
    );
  }
  const summary = {
    model: o.model ?? 'cnn',
    ensemble: o.kind,
    members: r.members.length,
    epochs: o.epochs,
    seconds: round(r.seconds, 2),
    test_accuracy: r.test.accuracy,
    test_loss: r.test.loss,
    hard_vote_test_accuracy: r.test.hard_vote_accuracy,
    best_member_test_accuracy: r.bestMember.test_accuracy,
    average_test_accuracy: r.average.test_accuracy,
    average_test_loss: r.average.test_loss,
    weights: r.weights.map(w => round(w, 4)),
    recipe: o.recipe.name,
  };
  const { runtime: _runtime, onBatch: _b, onEpoch: _e, log: _l, ...config } = o;
  const details = {
    config,
    member_results: r.memberSummaries,
    best_member: r.bestMember,
    average: r.average,
    ensemble_test: { accuracy: r.test.accuracy, loss: r.test.loss, hard_vote_accuracy: r.test.hard_vote_accuracy },
    weights: r.weights,
    selection: r.selection,
    histories: r.histories,
    // the ensemble's confusion matrix and its most confident mistakes (test-set indices), for the dashboard
    test_errors: testErrors(r.test.probabilities, r.test.labels, CLASSES),
  };
  return { files, summary, details };
}
