// Early stopping on a validation metric.
//
// An epoch improves when its value beats the best so far by more than minDelta (below best - minDelta
// in 'min' mode, above best + minDelta in 'max' mode); NaN never improves. Training should stop
// after `patience` consecutive epochs without improvement; an improving epoch never stops.

export type EarlyStoppingMode = 'min' | 'max';

export interface EarlyStoppingOptions {
  /** Consecutive epochs without improvement after which to stop (integer >= 0). */
  patience: number;
  /** Margin by which a value must beat the best to count as an improvement (default 0). */
  minDelta?: number;
  /** 'min' for a loss, 'max' for an accuracy (default 'min'). */
  mode?: EarlyStoppingMode;
}

/** Plain data for a checkpoint. `best` is null before the first improvement (JSON has no Infinity). */
export interface EarlyStoppingState {
  mode: EarlyStoppingMode;
  patience: number;
  minDelta: number;
  best: number | null;
  /** Index (0-based count of update() calls) of the epoch that set best; -1 before any. */
  bestEpoch: number;
  /** Number of update() calls so far. */
  epochs: number;
  /** Consecutive epochs without improvement so far. */
  wait: number;
}

export class EarlyStopping {
  readonly patience: number;
  readonly minDelta: number;
  readonly mode: EarlyStoppingMode;
  private bestValue: number;
  private bestAt = -1;
  private epochs = 0;
  private waitCount = 0;

  constructor({ patience, minDelta = 0, mode = 'min' }: EarlyStoppingOptions) {
    if (!Number.isInteger(patience) || patience < 0)
      throw new RangeError(`EarlyStopping: patience must be an integer >= 0, got ${String(patience)}`);
    if (typeof minDelta !== 'number' || !Number.isFinite(minDelta) || minDelta < 0)
      throw new RangeError(`EarlyStopping: minDelta must be a finite number >= 0, got ${String(minDelta)}`);
    if (mode !== 'min' && mode !== 'max')
      throw new RangeError(`EarlyStopping: mode must be 'min' or 'max', got ${String(mode)}`);
    this.patience = patience;
    this.minDelta = minDelta;
    this.mode = mode;
    this.bestValue = mode === 'min' ? Infinity : -Infinity;
  }

  /** Best value so far (Infinity in 'min' mode, -Infinity in 'max' mode, before any). */
  get best(): number {
    return this.bestValue;
  }
  /** Epoch index (0-based count of update() calls) of the best value; -1 before any. */
  get bestEpoch(): number {
    return this.bestAt;
  }

  /** Record one epoch's value. */
  update(value: number): { improved: boolean; stop: boolean } {
    const epoch = this.epochs++;
    const improved =
      this.mode === 'min' ? value < this.bestValue - this.minDelta : value > this.bestValue + this.minDelta;
    if (improved) {
      this.bestValue = value;
      this.bestAt = epoch;
      this.waitCount = 0;
      return { improved: true, stop: false };
    }
    this.waitCount++;
    return { improved: false, stop: this.waitCount >= this.patience };
  }

  state(): EarlyStoppingState {
    return {
      mode: this.mode,
      patience: this.patience,
      minDelta: this.minDelta,
      best: this.bestAt < 0 ? null : this.bestValue,
      bestEpoch: this.bestAt,
      epochs: this.epochs,
      wait: this.waitCount,
    };
  }

  /**
   * Restore the progress (best, bestEpoch, epochs, wait) from state(). The mode must match; patience
   * and minDelta stay as constructed, so a resumed run may change them.
   */
  load(state: EarlyStoppingState): void {
    if (state === null || typeof state !== 'object') throw new TypeError('EarlyStopping.load: state must be an object');
    if (state.mode !== this.mode)
      throw new Error(`EarlyStopping.load: state is for mode '${String(state.mode)}', not '${this.mode}'`);
    const { best, bestEpoch, epochs, wait } = state;
    if (!Number.isInteger(epochs) || epochs < 0)
      throw new RangeError(`EarlyStopping.load: epochs must be an integer >= 0, got ${String(epochs)}`);
    if (!Number.isInteger(bestEpoch) || bestEpoch < -1 || bestEpoch >= epochs)
      throw new RangeError(
        `EarlyStopping.load: bestEpoch must be an integer in [-1, epochs), got ${String(bestEpoch)}`,
      );
    if ((best === null) !== (bestEpoch === -1))
      throw new RangeError('EarlyStopping.load: best must be null exactly when bestEpoch is -1');
    if (best !== null && (typeof best !== 'number' || Number.isNaN(best)))
      throw new RangeError(`EarlyStopping.load: best must be a number or null, got ${String(best)}`);
    if (!Number.isInteger(wait) || wait < 0 || wait > epochs)
      throw new RangeError(`EarlyStopping.load: wait must be an integer in [0, epochs], got ${String(wait)}`);
    this.bestValue = best ?? (this.mode === 'min' ? Infinity : -Infinity);
    this.bestAt = bestEpoch;
    this.epochs = epochs;
    this.waitCount = wait;
  }
}
