// The shared epoch loop (engine/train/loop.ts) on a tiny model whose gradients are computed in JavaScript:
// resume, early stopping, the learning rate of every step, divergence, reseeding. No ONNX session involved.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { trainEpochs, type LoopOptions, type StepResult } from '../engine/train/loop.ts';
import { TrainState, makeSchedule, checkpointFile, type Recipe } from '../engine/train/train-state.ts';
import { SEEDS } from '../engine/train/seeds.ts';
import { Rng } from '../engine/util/random.ts';

const RECIPE: Recipe = {
  name: 'test',
  optimizer: 'adam',
  lr: 0.05,
  weightDecay: 0,
  decayWeightsOnly: false,
  schedule: { kind: 'warmup-cosine', warmupFraction: 0.1 },
  shift: 0,
  batchSize: 3,
};
const SPECS = [{ name: 'w', shape: [4], init: { kind: 'uniform' as const, bound: 0.5 } }];
// 12 examples of a noisy linear target y = x . [1, -2, 0.5, 3]
const data = (() => {
  const rng = new Rng(7),
    truth = [1, -2, 0.5, 3];
  return Array.from({ length: 12 }, () => {
    const x = Array.from({ length: 4 }, () => rng.normal());
    return { x, y: x.reduce((s, v, i) => s + v * truth[i], 0) + 0.1 * rng.normal() };
  });
})();
const ITERS = 4;

interface Epoch {
  epoch: number;
  lr: number;
  loss: number;
  correct: number;
}

/** A trainer on the loop: squared error, gradient noise drawn from the per-epoch dropout seed. */
function trainer(state: TrainState<Epoch>, epochs: number, more: Partial<LoopOptions<number[], Epoch>> = {}) {
  let noiseSeed = -1;
  let noise = new Rng(0);
  const runner = {
    reseed: async (s: number) => {
      noiseSeed = s;
      noise = new Rng(s);
    },
  };
  const o: LoopOptions<number[], Epoch> = {
    state,
    seed: 5,
    epochs,
    itersPerEpoch: ITERS,
    schedule: makeSchedule(RECIPE, ITERS, epochs),
    runner,
    batches: epoch => {
      const order = new Rng(epoch).shuffle([...data.keys()]);
      return Array.from({ length: ITERS }, (_, k) => order.slice(3 * k, 3 * k + 3));
    },
    step: async (batch): Promise<StepResult> => {
      const w = state.params.data[0],
        g = new Float32Array(4);
      let loss = 0,
        correct = 0;
      for (const i of batch) {
        const { x, y } = data[i];
        const err = x.reduce((s, v, j) => s + v * w[j], 0) - y;
        loss += (err * err) / batch.length;
        if (Math.abs(err) < 1) correct++;
        x.forEach((v, j) => {
          g[j] += (2 * err * v) / batch.length + 0.01 * noise.normal();
        });
      }
      return { loss, grads: [g], examples: batch.length, correct, images: 2 * batch.length };
    },
    endEpoch: async t => ({ epoch: t.epoch, lr: t.lr, loss: t.lossSum / t.examples, correct: t.correct }),
    ...more,
  };
  return { run: () => trainEpochs(o), seedOf: () => noiseSeed };
}

const newState = (early?: { patience: number }) => new TrainState<Epoch>('toy', SPECS, [], RECIPE, 3, early);
const bits = (s: TrainState<Epoch>) => Buffer.from(s.params.data[0].buffer).toString('hex');

describe('training loop (engine/train/loop.ts)', () => {
  let dir: string;
  beforeEach(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-loop-'));
  });
  afterEach(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('trains every epoch, reseeds each with SEEDS.dropout, checkpoints each and sums the steps', async () => {
    const state = newState();
    const t = trainer(state, 3, { checkpoints: { dir, settings: { a: 1 }, resume: false } });
    const before = bits(state);
    assert.deepEqual(await t.run(), { stoppedEarly: false });
    assert.notEqual(bits(state), before);
    assert.deepEqual(
      state.history.map(h => h.epoch),
      [1, 2, 3],
    );
    assert.equal(state.epoch, 3);
    assert.equal(t.seedOf(), SEEDS.dropout(5, 3));
    assert.equal(state.trainImages, 3 * 12 * 2, 'images counted from every step');
    for (const e of [1, 2, 3]) assert.ok(fs.existsSync(checkpointFile(dir, e)), `checkpoint of epoch ${e}`);
    // the first epoch's loss starts high (random weights) and the last is lower
    assert.ok(state.history[2].loss < state.history[0].loss, JSON.stringify(state.history));
  });

  it('gives every step the learning rate of its global index, and the epoch the last one', async () => {
    const seen: number[] = [];
    const schedule = makeSchedule(RECIPE, ITERS, 3);
    const state = newState();
    await trainer(state, 3, {
      schedule: t => {
        seen.push(t);
        return schedule(t);
      },
    }).run();
    assert.deepEqual(
      seen,
      Array.from({ length: 3 * ITERS }, (_, i) => i),
    );
    state.history.forEach((h, e) => assert.equal(h.lr, schedule((e + 1) * ITERS - 1)));
  });

  it('a run resumed from its epoch-2 checkpoint ends bit-identical to the uninterrupted run', async () => {
    const whole = newState();
    await trainer(whole, 4, { checkpoints: { dir: path.join(dir, 'a'), settings: { a: 1 }, resume: false } }).run();

    const b = path.join(dir, 'b');
    // the same 4-epoch plan, killed during epoch 3 (before its checkpoint)
    const interrupt = (m: Epoch) => {
      if (m.epoch === 3) throw new Error('killed');
    };
    const ck = { dir: b, settings: { a: 1 }, resume: false };
    const killed = trainer(newState(), 4, { checkpoints: ck, onEpoch: interrupt });
    await assert.rejects(killed.run(), /killed/);
    assert.ok(fs.existsSync(checkpointFile(b, 2)) && !fs.existsSync(checkpointFile(b, 3)));
    const resumed = newState(),
      log: string[] = [];
    let resumedAt = -1;
    await trainer(resumed, 4, {
      checkpoints: { dir: b, settings: { a: 1 }, resume: true },
      log: l => log.push(l),
      resumed: async () => {
        resumedAt = resumed.epoch;
      },
    }).run();
    assert.equal(resumedAt, 2, 'the resumed hook runs after the restore, before epoch 3');
    assert.ok(
      log.some(l => l.startsWith(`resumed from ${checkpointFile(b, 2)}`)),
      log.join('\n'),
    );
    assert.equal(bits(resumed), bits(whole));
    assert.deepEqual(resumed.history, whole.history);
    assert.equal(resumed.optimizer.state().step, whole.optimizer.state().step);
  });

  it('refuses to resume a checkpoint written with other settings, and starts afresh when there is none', async () => {
    await trainer(newState(), 1, { checkpoints: { dir, settings: { a: 1 }, resume: false } }).run();
    const other = trainer(newState(), 2, { checkpoints: { dir, settings: { a: 2 }, resume: true } });
    await assert.rejects(other.run(), /cannot resume.* a 1/);
    const log: string[] = [];
    const empty = path.join(dir, 'none');
    const state = newState();
    await trainer(state, 1, { checkpoints: { dir: empty, settings: {}, resume: true }, log: l => log.push(l) }).run();
    assert.deepEqual(log, [`no checkpoint in ${empty}: starting from scratch`]);
    assert.equal(state.epoch, 1);
  });

  describe('early stopping', () => {
    // the watched value per epoch: improves at 1 and 2, then not for two epochs
    const watched = [3, 2, 2.5, 2.4, 1, 0.5];
    const monitor = (m: Epoch) => watched[m.epoch - 1];

    it('stops after `patience` epochs without improvement, checkpointing the last', async () => {
      const state = newState({ patience: 2 }),
        log: string[] = [];
      const ck = { dir, settings: {}, resume: false };
      const t = trainer(state, 6, { monitor, checkpoints: ck, log: l => log.push(l) });
      const r = await t.run();
      assert.deepEqual(r, { stoppedEarly: true });
      assert.equal(state.epoch, 4);
      assert.deepEqual(
        state.history.map(h => h.epoch),
        [1, 2, 3, 4],
      );
      assert.ok(fs.existsSync(checkpointFile(dir, 4)) && !fs.existsSync(checkpointFile(dir, 5)));
      assert.deepEqual(log, ['early stopping after epoch 4 (best epoch 2)']);
    });

    it('does not stop with a larger patience, without early stopping, or when the monitor has no value', async () => {
      const cases = [
        [newState({ patience: 3 }), monitor],
        [newState(), monitor],
        [newState({ patience: 1 }), () => undefined],
      ] as const;
      for (const [state, mon] of cases) {
        const r = await trainer(state, 6, { monitor: mon }).run();
        assert.deepEqual(r, { stoppedEarly: false });
        assert.equal(state.epoch, 6);
      }
    });

    it('a run resumed before the stop stops at the same epoch (early stopping is in the checkpoint)', async () => {
      await trainer(newState({ patience: 2 }), 3, { monitor, checkpoints: { dir, settings: {}, resume: false } }).run();
      const state = newState({ patience: 2 });
      const r = await trainer(state, 6, { monitor, checkpoints: { dir, settings: {}, resume: true } }).run();
      assert.deepEqual(r, { stoppedEarly: true });
      assert.equal(state.epoch, 4);
    });
  });

  it('fails on a non-finite loss naming the epoch and step, before the optimizer uses its gradients', async () => {
    const state = newState();
    let calls = 0,
      atFailure = '';
    await assert.rejects(
      trainer(state, 3, {
        step: async (batch, epoch, k) => {
          calls++;
          if (epoch === 2 && k === 2) {
            atFailure = bits(state);
            return { loss: NaN, grads: [new Float32Array(4).fill(1)], examples: batch.length };
          }
          return { loss: 1, grads: [new Float32Array(4).fill(0.1)], examples: batch.length };
        },
        stepName: 'step',
      }).run(),
      /training diverged: loss is NaN at epoch 2, step 3/,
    );
    assert.equal(calls, ITERS + 3);
    assert.equal(bits(state), atFailure, 'the diverged step changed no parameter');
    assert.equal(state.epoch, 1);
  });
});
