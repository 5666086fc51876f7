// What every trainer keeps between steps and across restarts: parameters, buffers, optimizer state, early
// stopping and the per-epoch history; saved as one checkpoint per epoch and restored by --resume.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { TensorSet, type TensorSpec } from '../model/params.ts';
import { makeOptimizer, type Optimizer, type OptimizerName, type OptimizerState } from '../optim/optimizers.ts';
import { stepLR, warmupCosine, type Schedule } from '../optim/schedulers.ts';
import { EarlyStopping, type EarlyStoppingState } from '../optim/early-stopping.ts';
import { readCheckpoint, writeCheckpoint } from '../checkpoint.ts';

export interface Recipe {
  name: string;
  optimizer: OptimizerName;
  lr: number;
  weightDecay: number;
  /** Apply weight decay to weights only (not biases and BatchNorm parameters). */
  decayWeightsOnly: boolean;
  schedule: { kind: 'warmup-cosine'; warmupFraction: number } | { kind: 'step'; stepSize: number; gamma: number };
  /** Random translation of up to this many pixels (0: none); used by the supervised trainer. */
  shift: number;
  /** Default mini-batch size. */
  batchSize: number;
}

/** Learning rate per iteration: warm-up + cosine over the whole run, or StepLR per epoch. */
export function makeSchedule(recipe: Recipe, itersPerEpoch: number, epochs: number): Schedule {
  if (recipe.schedule.kind === 'step') {
    const s = stepLR(recipe.lr, recipe.schedule.stepSize, recipe.schedule.gamma);
    return t => s(Math.floor(t / itersPerEpoch));
  }
  const total = Math.max(1, itersPerEpoch * epochs);
  return warmupCosine({
    base: recipe.lr,
    warmup: Math.max(1, Math.round(recipe.schedule.warmupFraction * total)),
    total,
    minLr: 0,
  });
}

export const checkpointFile = (dir: string, epoch: number) =>
  path.join(dir, `epoch-${String(epoch).padStart(3, '0')}.ckpt`);

/** The newest checkpoint in dir (by epoch number), or null. */
export function latestCheckpoint(dir: string): string | null {
  if (!fs.existsSync(dir)) return null;
  const epochOf = (f: string) => Number(/^epoch-(\d+)\.ckpt$/.exec(f)?.[1] ?? -1);
  const files = fs
    .readdirSync(dir)
    .filter(f => epochOf(f) >= 0)
    .sort((a, b) => epochOf(a) - epochOf(b));
  return files.length ? path.join(dir, files[files.length - 1]) : null;
}

export type OptimizerMeta = Omit<OptimizerState, 'buffers'> & { bufferNames: string[] };

interface CheckpointMeta<H> {
  format: 'fleet-train-1';
  model: string;
  epoch: number;
  /** Everything that must not change when a run is resumed (seed, batch size, recipe...). */
  settings: Record<string, unknown>;
  /** The number of epochs the run planned (may be extended on resume). */
  epochs: number;
  history: H[];
  optimizer: OptimizerMeta;
  earlyStopping?: EarlyStoppingState;
  trainSeconds: number;
  trainImages: number;
}

/** The parameters and buffers stored in a checkpoint file, as new TensorSets. */
export function readWeights(
  file: string,
  paramSpecs: TensorSpec[],
  bufferSpecs: TensorSpec[],
): { params: TensorSet; buffers: TensorSet } {
  const ck = readCheckpoint(file);
  const take = (specs: TensorSpec[], kind: string) =>
    new TensorSet(
      specs,
      specs.map(sp => {
        const t = ck.tensors.get(`${kind}/${sp.name}`);
        if (!t) throw new Error(`${file}: checkpoint has no tensor ${sp.name}`);
        if (t.length !== sp.shape.reduce((a, b) => a * b, 1))
          throw new Error(`${file}: tensor ${sp.name} has ${t.length} values, the model needs [${sp.shape}]`);
        return t;
      }),
    );
  return { params: take(paramSpecs, 'param'), buffers: take(bufferSpecs, 'buffer') };
}

export class TrainState<H> {
  readonly params: TensorSet;
  readonly buffers: TensorSet;
  readonly optimizer: Optimizer;
  readonly early: EarlyStopping | null;
  history: H[] = [];
  /** The last finished epoch (0 before training). */
  epoch = 0;
  trainSeconds = 0;
  trainImages = 0;

  constructor(
    readonly model: string,
    paramSpecs: TensorSpec[],
    bufferSpecs: TensorSpec[],
    recipe: Recipe,
    seed: number,
    early?: { patience: number; minDelta?: number },
  ) {
    this.params = TensorSet.init(paramSpecs, seed);
    this.buffers = TensorSet.init(bufferSpecs, seed);
    const decay = paramSpecs.map(s => !recipe.decayWeightsOnly || !!s.decay);
    this.optimizer = makeOptimizer(
      recipe.optimizer,
      this.params.data,
      recipe.optimizer === 'sgd'
        ? { weightDecay: recipe.weightDecay, momentum: 0.9, decay }
        : { weightDecay: recipe.weightDecay, decay },
    );
    this.early = early ? new EarlyStopping({ patience: early.patience, minDelta: early.minDelta, mode: 'min' }) : null;
  }

  save(dir: string, settings: Record<string, unknown>, epochs: number): void {
    const { tensors, optimizer } = this.snapshot();
    const meta: CheckpointMeta<H> = {
      format: 'fleet-train-1',
      model: this.model,
      epoch: this.epoch,
      settings,
      epochs,
      history: this.history,
      optimizer,
      earlyStopping: this.early?.state(),
      trainSeconds: this.trainSeconds,
      trainImages: this.trainImages,
    };
    writeCheckpoint(checkpointFile(dir, this.epoch), meta, tensors);
  }

  /** Parameters, buffers and optimizer state as checkpoint tensors plus the optimizer's metadata. */
  snapshot(): { tensors: Map<string, Float32Array>; optimizer: OptimizerMeta } {
    const st = this.optimizer.state();
    const tensors = new Map<string, Float32Array>();
    this.params.names.forEach((n, i) => tensors.set(`param/${n}`, this.params.data[i]));
    this.buffers.names.forEach((n, i) => tensors.set(`buffer/${n}`, this.buffers.data[i]));
    for (const [b, arrs] of Object.entries(st.buffers))
      this.params.names.forEach((n, i) => tensors.set(`optim/${b}/${n}`, arrs[i]));
    return {
      tensors,
      optimizer: { name: st.name, step: st.step, hyper: st.hyper, bufferNames: Object.keys(st.buffers) },
    };
  }

  /** Restores what snapshot() captured; errors name `what` (the file or key it came from). */
  restoreSnapshot(what: string, tensors: Map<string, Float32Array>, optimizer: OptimizerMeta): void {
    const restore = (set: TensorSet, kind: string) =>
      set.names.forEach((n, i) => {
        const src = tensors.get(`${kind}/${n}`);
        if (!src) throw new Error(`${what}: checkpoint has no tensor ${n}`);
        if (src.length !== set.data[i].length)
          throw new Error(`${what}: tensor ${n} has ${src.length} values, the model needs ${set.data[i].length}`);
        set.data[i].set(src);
      });
    restore(this.params, 'param');
    restore(this.buffers, 'buffer');
    const bufs: Record<string, Float32Array[]> = {};
    for (const b of optimizer.bufferNames) {
      bufs[b] = this.params.names.map(n => {
        const t = tensors.get(`optim/${b}/${n}`);
        if (!t) throw new Error(`${what}: checkpoint has no optimizer state ${b} of ${n}`);
        return t;
      });
    }
    this.optimizer.load({ name: optimizer.name, step: optimizer.step, hyper: optimizer.hyper, buffers: bufs });
  }

  /** Restores the newest checkpoint in dir; returns its file, or null when there is none. */
  resume(
    dir: string,
    settings: Record<string, unknown>,
    epochs: number,
    log: (line: string) => void = () => {},
  ): string | null {
    const file = latestCheckpoint(dir);
    if (!file) return null;
    const ck = readCheckpoint<CheckpointMeta<H>>(file);
    const mismatch = (what: string, was: unknown, now: unknown) =>
      new Error(
        `${file}: cannot resume: the checkpoint was trained with ${what} ${JSON.stringify(was)}, this run asks for ${JSON.stringify(now)}`,
      );
    if (ck.meta.model !== this.model) throw mismatch('model', ck.meta.model, this.model);
    for (const key of new Set([...Object.keys(settings), ...Object.keys(ck.meta.settings ?? {})])) {
      if (JSON.stringify(ck.meta.settings?.[key]) !== JSON.stringify(settings[key]))
        throw mismatch(key, ck.meta.settings?.[key], settings[key]);
    }
    if (ck.meta.epochs !== epochs)
      log(
        `note: the learning-rate schedule now spans ${epochs} epochs (the checkpoint's run planned ${ck.meta.epochs})`,
      );
    this.restoreSnapshot(file, ck.tensors, ck.meta.optimizer);
    if (this.early && ck.meta.earlyStopping) this.early.load(ck.meta.earlyStopping);
    this.history = ck.meta.history;
    this.epoch = ck.meta.epoch;
    this.trainSeconds = ck.meta.trainSeconds;
    this.trainImages = ck.meta.trainImages;
    log(`resumed from ${file} (epoch ${ck.meta.epoch})`);
    return file;
  }
}
