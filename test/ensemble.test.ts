// Ensembles end to end on a small MNIST subset, trained in this thread (test/embedded.test.ts compares the
// embedded run on worker threads with it): tasks, voting, bagging, snapshots and selection, and the combined predictions.
import { strict as assert } from 'node:assert';
import {
  trainEnsemble,
  ensembleTasks,
  type EnsembleOptions,
  type EnsembleResult,
} from '../engine/ensemble/train-ensemble.ts';
import { weightedAverage, accuracyOf, nll } from '../engine/ensemble/combine.ts';
import { RECIPES } from '../engine/train/train-classifier.ts';
import { loadDataset } from '../engine/data/datasets.ts';
import { CLASSES } from '../engine/model/cnn.ts';

const base = (o: Partial<EnsembleOptions>): EnsembleOptions => ({
  kind: 'voting',
  members: 3,
  epochs: 2,
  batchSize: 64,
  recipe: { ...RECIPES.fleet, lr: 2e-3 },
  seed: 5,
  valFraction: 0,
  dataset: 'mnist',
  limitTrain: 1000,
  limitTest: 200,
  runtime: { threads: 1 },
  ...o,
});

describe('ensembles on a small MNIST subset', function () {
  const testLabels = loadDataset('mnist').test.labels.subarray(0, 200);
  const runs = new Map<string, EnsembleResult>();
  const run = async (name: string, o: Partial<EnsembleOptions>) => {
    if (!runs.has(name)) runs.set(name, await trainEnsemble(base(o)));
    return runs.get(name)!;
  };

  it('tasks: one per member with distinct seeds, one run for a snapshot ensemble', () => {
    const voting = ensembleTasks(base({}));
    assert.equal(voting.length, 3);
    assert.equal(new Set(voting.map(t => t.seed)).size, 3);
    assert.ok(voting.every(t => !t.bootstrap && !t.keepBest && t.snapshots === 0 && t.splitSeed === 5));
    assert.ok(ensembleTasks(base({ kind: 'bagging' })).every(t => t.bootstrap));
    assert.ok(ensembleTasks(base({ kind: 'selection', valFraction: 0.15 })).every(t => t.keepBest));
    const snap = ensembleTasks(base({ kind: 'snapshot', members: 2 }));
    assert.equal(snap.length, 1);
    assert.equal(snap[0].snapshots, 2);
  });

  it("voting: equal weights; the ensemble is the mean of the members' test probabilities", async () => {
    const r = await run('voting', {});
    assert.equal(r.members.length, 3);
    assert.deepEqual(r.weights, [1 / 3, 1 / 3, 1 / 3]);
    const mean = weightedAverage(r.members.map(m => m.test!.probabilities));
    assert.equal(r.test.accuracy, accuracyOf(mean, testLabels, CLASSES));
    assert.ok(Math.abs(r.test.loss - nll(mean, testLabels, CLASSES)) < 1e-9);
    assert.equal(r.test.accuracy, r.average.test_accuracy);
    assert.ok(r.test.accuracy > 0.5, `ensemble accuracy ${r.test.accuracy}`);
    assert.ok(r.memberSummaries.some(m => m.test_accuracy === r.bestMember.test_accuracy));
    // members differ (different seeds)
    assert.notDeepEqual(r.members[0].test!.probabilities, r.members[1].test!.probabilities);
  });

  it('bagging: members trained on different bootstrap samples', async () => {
    const r = await run('bagging', { kind: 'bagging', members: 2 });
    assert.equal(r.members.length, 2);
    assert.ok(r.test.accuracy > 0.5, `ensemble accuracy ${r.test.accuracy}`);
  });

  it('snapshot: one run gives one member per learning-rate cycle', async () => {
    const r = await run('snapshot', { kind: 'snapshot', members: 2 });
    assert.deepEqual(
      r.members.map(m => m.epoch),
      [1, 2],
    );
    assert.deepEqual(
      r.members.map(m => m.name),
      ['snapshot-run/snapshot-1', 'snapshot-run/snapshot-2'],
    );
    assert.notDeepEqual(r.members[0].test!.probabilities, r.members[1].test!.probabilities);
  });

  it('selection: best epochs by validation loss, Caruana weights from validation, no worse than the average on validation', async () => {
    const r = await run('selection', { kind: 'selection', members: 3, valFraction: 0.2 });
    assert.ok(r.members.every(m => m.val && m.val.probabilities.length === 200 * CLASSES));
    assert.ok(Math.abs(r.weights.reduce((a, b) => a + b, 0) - 1) < 1e-9);
    assert.equal(r.bestMember.chosen_by, 'validation loss');
    // greedy selection minimises validation loss over prefixes; its best is never worse than the best single member
    const valLabels = r.valLabels!;
    const bestSingle = Math.min(...r.members.map(m => nll(m.val!.probabilities, valLabels, CLASSES)));
    assert.ok(
      r.selection!.val_score <= bestSingle + 1e-9,
      `selected ${r.selection!.val_score} vs best member ${bestSingle}`,
    );
    for (const m of r.members) {
      const h = r.histories[m.taskId];
      const bestEpoch = h.reduce((b, e) => (e.val_loss! < b.val_loss! ? e : b), h[0]).epoch;
      assert.equal(m.epoch, bestEpoch, `${m.name} is its best epoch`);
    }
  });

  it('refuses selection without a validation split and an empty ensemble', async () => {
    await assert.rejects(trainEnsemble(base({ kind: 'selection', valFraction: 0 })), /validation split/);
    await assert.rejects(trainEnsemble(base({ members: 0 })), /at least 1 member/);
  });
});
