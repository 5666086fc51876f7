// The epoch loop every trainer shares: resume from the newest checkpoint, then per epoch reseed the dropout,
// step through the batches with the learning rate of each step, measure, let the trainer evaluate, record the
// history, stop early, save a checkpoint. A trainer supplies only what differs: its batches, its step (the
// graph it runs) and its epoch metrics.
import type { Schedule } from '../optim/schedulers.ts';
import type { TrainState } from './train-state.ts';
import { SEEDS } from './seeds.ts';

/** What one training step returns: the batch's mean loss and the gradients of the parameters. */
export interface StepResult {
  loss: number;
  grads: Float32Array[];
  /** Examples the loss is the mean over (images, or MIL bags). */
  examples: number;
  /** Examples classified correctly (0 when the trainer does not count them). */
  correct?: number;
  /** Images processed, for throughput (default: examples). */
  images?: number;
}

/** Sums over one epoch's steps, from which a trainer builds its epoch metrics. */
export interface EpochTotals {
  epoch: number;
  /** The learning rate of the epoch's last step (0 when it had none). */
  lr: number;
  /** Wall time of the epoch's steps (evaluation excluded). */
  seconds: number;
  /** Sum of loss x examples over the steps. */
  lossSum: number;
  correct: number;
  examples: number;
}

export interface BatchProgress {
  epoch: number;
  batch: number;
  batches: number;
  loss: number;
  imagesPerSecond: number;
  /** Images in this batch. */
  images: number;
  /** The learning rate this step used. */
  lr: number;
}

export interface LoopOptions<B, H> {
  state: TrainState<H>;
  seed: number;
  /** Train until this epoch (1-based, inclusive); a resumed run starts after its checkpoint's epoch. */
  epochs: number;
  /** Steps per epoch and the learning rate of global step (epoch - 1) * itersPerEpoch + k. */
  itersPerEpoch: number;
  schedule: Schedule;
  /** Its training sessions are reseeded every epoch (SEEDS.dropout); absent when the graphs have no dropout. */
  runner?: { reseed(seed: number): Promise<void> };
  /** Per-epoch checkpoints in dir; `settings` must match on resume. Absent: none written, none read. */
  checkpoints?: { dir: string; settings: Record<string, unknown>; resume: boolean };
  /** The batches of one epoch, in training order. */
  batches: (epoch: number) => B[];
  step: (batch: B, epoch: number, k: number) => Promise<StepResult>;
  /** The epoch's history entry (the trainer's evaluation goes here). */
  endEpoch: (totals: EpochTotals) => Promise<H>;
  /** The value early stopping watches (lower is better; undefined: not this epoch). Needs state.early. */
  monitor?: (m: H) => number | undefined;
  /** Called after the resume and before the first epoch this call trains. */
  resumed?: () => Promise<void>;
  /** What a step is called in errors ('batch' or 'step'). */
  stepName?: string;
  onBatch?: (p: BatchProgress) => void;
  onEpoch?: (m: H) => void;
  log?: (line: string) => void;
}

/** Runs the epochs state has not trained yet; returns whether early stopping ended the run. */
export async function trainEpochs<B, H>(o: LoopOptions<B, H>): Promise<{ stoppedEarly: boolean }> {
  const { state, checkpoints: ck } = o;
  const log = o.log ?? (() => {});
  if (ck?.resume && !state.resume(ck.dir, ck.settings, o.epochs, log)) {
    log(`no checkpoint in ${ck.dir}: starting from scratch`);
  }
  await o.resumed?.();
  for (let epoch = state.epoch + 1; epoch <= o.epochs; epoch++) {
    await o.runner?.reseed(SEEDS.dropout(o.seed, epoch));
    const totals = await trainEpoch(o, epoch);
    state.trainSeconds += totals.seconds;
    const m = await o.endEpoch(totals);
    state.history.push(m);
    state.epoch = epoch;
    o.onEpoch?.(m);
    const watched = state.early ? o.monitor?.(m) : undefined;
    const verdict = watched !== undefined ? state.early!.update(watched) : null;
    if (ck) state.save(ck.dir, ck.settings, o.epochs);
    if (verdict?.stop) {
      log(`early stopping after epoch ${epoch} (best epoch ${state.early!.bestEpoch + 1})`);
      return { stoppedEarly: true };
    }
  }
  return { stoppedEarly: false };
}

/** One epoch's steps: gradients from the trainer, one optimizer step each at the schedule's rate. */
async function trainEpoch<B, H>(o: LoopOptions<B, H>, epoch: number): Promise<EpochTotals> {
  const { state } = o;
  const list = o.batches(epoch);
  let lossSum = 0,
    correct = 0,
    examples = 0,
    images = 0,
    lr = 0;
  const t0 = performance.now();
  for (let k = 0; k < list.length; k++) {
    const r = await o.step(list[k], epoch, k);
    if (!Number.isFinite(r.loss)) {
      throw new Error(`training diverged: loss is ${r.loss} at epoch ${epoch}, ${o.stepName ?? 'batch'} ${k + 1}`);
    }
    lr = o.schedule((epoch - 1) * o.itersPerEpoch + k);
    state.optimizer.step(state.params.data, r.grads, lr);
    const n = r.images ?? r.examples;
    lossSum += r.loss * r.examples;
    correct += r.correct ?? 0;
    examples += r.examples;
    images += n;
    const imagesPerSecond = images / ((performance.now() - t0) / 1000);
    o.onBatch?.({ epoch, batch: k + 1, batches: list.length, loss: r.loss, imagesPerSecond, images: n, lr });
  }
  state.trainImages += images;
  return { epoch, lr, seconds: (performance.now() - t0) / 1000, lossSum, correct, examples };
}
