// Which per-epoch checkpoints a run keeps (`fleet train --keep-checkpoints all|last|best`): a CNN checkpoint is
// about 16.5 MB, one per epoch. The newest is always kept (--resume continues from it).
import * as fs from 'node:fs';
import { checkpointFile } from './train-state.ts';

export const KEEP_CHECKPOINTS = ['all', 'last', 'best'] as const;
export type KeepCheckpoints = (typeof KEEP_CHECKPOINTS)[number];
export interface EpochLosses {
  epoch: number;
  val_loss?: number;
  train_loss?: number;
}

/** The epochs of the checkpoints in dir (epoch-NNN.ckpt), ascending. */
export function checkpointEpochs(dir: string): number[] {
  if (!fs.existsSync(dir)) return [];
  return fs
    .readdirSync(dir)
    .map(f => Number(/^epoch-(\d+)\.ckpt$/.exec(f)?.[1] ?? NaN))
    .filter(Number.isInteger)
    .sort((a, b) => a - b);
}

/**
 * The best epoch of a history: lowest validation loss where the run has a validation split, else lowest
 * training loss (ties: the earlier epoch); undefined for an empty history.
 */
export function bestEpoch(history: EpochLosses[]): number | undefined {
  const byVal = history.some(x => typeof x.val_loss === 'number');
  const score = (h: EpochLosses) => (byVal ? h.val_loss : h.train_loss) ?? Infinity;
  let best: { epoch: number; s: number } | undefined;
  for (const h of history) if (!best || score(h) < best.s) best = { epoch: h.epoch, s: score(h) };
  return best?.epoch;
}

/**
 * Deletes the checkpoints in dir that the policy does not keep: `last` keeps the newest, `best` the best epoch's
 * (of `history`) and the newest, `all` everything. Returns the epochs deleted.
 */
export function pruneCheckpoints(dir: string, policy: KeepCheckpoints, history: EpochLosses[]): number[] {
  if (policy === 'all') return [];
  const epochs = checkpointEpochs(dir);
  if (!epochs.length) return [];
  const keep = new Set([epochs[epochs.length - 1]]);
  if (policy === 'best') {
    const best = bestEpoch(history.filter(h => epochs.includes(h.epoch)));
    if (best !== undefined) keep.add(best);
  }
  const gone = epochs.filter(e => !keep.has(e));
  for (const e of gone) fs.rmSync(checkpointFile(dir, e), { force: true });
  return gone;
}
