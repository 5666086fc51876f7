// Learning-rate schedules as pure functions of the epoch or iteration index (0-based): the value
// for index t is the learning rate to use for step/epoch t. They match the closed forms of
// PyTorch's schedulers, so they hold no state and need nothing in a checkpoint.

export type Schedule = (t: number) => number;

function check(what: string, v: unknown, ok: (v: number) => boolean, need: string): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || !ok(v))
    throw new RangeError(`${what} must be ${need}, got ${String(v)}`);
  return v;
}

const nonNegative = (v: number) => v >= 0;
const positiveInt = (v: number) => Number.isInteger(v) && v > 0;

function checkT(name: string, t: number): void {
  if (!(t >= 0) || !Number.isFinite(t))
    throw new RangeError(`${name}: index must be a finite number >= 0, got ${String(t)}`);
}

/** torch StepLR: base * gamma ^ floor(epoch / stepSize). */
export function stepLR(base: number, stepSize: number, gamma = 0.1): Schedule {
  check('stepLR: base', base, nonNegative, '>= 0');
  check('stepLR: stepSize', stepSize, positiveInt, 'a positive integer');
  check('stepLR: gamma', gamma, nonNegative, '>= 0');
  return (epoch: number) => {
    checkT('stepLR', epoch);
    return base * gamma ** Math.floor(epoch / stepSize);
  };
}

/**
 * torch CosineAnnealingLR closed form: etaMin + (base - etaMin) * (1 + cos(pi * t / tMax)) / 2.
 * Like PyTorch's, it is periodic past tMax (it rises again towards base until 2 * tMax).
 */
export function cosineAnnealing(base: number, tMax: number, etaMin = 0): Schedule {
  check('cosineAnnealing: base', base, nonNegative, '>= 0');
  check('cosineAnnealing: tMax', tMax, v => v > 0, '> 0');
  check('cosineAnnealing: etaMin', etaMin, nonNegative, '>= 0');
  return (t: number) => {
    checkT('cosineAnnealing', t);
    return etaMin + ((base - etaMin) * (1 + Math.cos((Math.PI * t) / tMax))) / 2;
  };
}

export interface WarmupCosineOptions {
  /** Peak learning rate, reached at the end of the warm-up. */
  base: number;
  /** Warm-up length in iterations (0 for none). */
  warmup: number;
  /** Iteration at which the cosine reaches minLr (>= warmup); the rate stays at minLr after it. */
  total: number;
  /** Final learning rate (default 0). */
  minLr?: number;
}

/**
 * Linear warm-up then cosine decay, per iteration t:
 *   t < warmup:           base * (t + 1) / warmup          (base / warmup at t = 0, base at t = warmup - 1)
 *   warmup <= t <= total: minLr + (base - minLr) * (1 + cos(pi * (t - warmup) / (total - warmup))) / 2
 *   t > total:            minLr
 * Non-decreasing up to t = warmup, non-increasing after it.
 */
export function warmupCosine({ base, warmup, total, minLr = 0 }: WarmupCosineOptions): Schedule {
  check('warmupCosine: base', base, nonNegative, '>= 0');
  check('warmupCosine: warmup', warmup, v => Number.isInteger(v) && v >= 0, 'a non-negative integer');
  check('warmupCosine: total', total, v => v >= warmup, `>= warmup (${warmup})`);
  check('warmupCosine: minLr', minLr, v => v >= 0 && v <= base, `in [0, base]`);
  const span = total - warmup;
  return (t: number) => {
    checkT('warmupCosine', t);
    if (t < warmup) return (base * (t + 1)) / warmup;
    if (t >= total) return minLr;
    return minLr + ((base - minLr) * (1 + Math.cos((Math.PI * (t - warmup)) / span))) / 2;
  };
}

export interface CyclicCosineOptions {
  /** Learning rate at the start of each cycle. */
  base: number;
  /** Iterations per cycle. */
  cycleLength: number;
  /** Floor the cosine decays towards (default 0, as in the paper). */
  minLr?: number;
}

/**
 * Snapshot-ensemble schedule (Huang et al. 2017, "Snapshot Ensembles: Train 1, get M for free"):
 *   lr(t) = minLr + (base - minLr) / 2 * (cos(pi * mod(t, cycleLength) / cycleLength) + 1)
 * with t 0-based (the paper's mod(t - 1, .) for 1-based t). It restarts at base when
 * t is a multiple of cycleLength; the last iteration of a cycle, t = k * cycleLength - 1, has the
 * lowest rate and is where a snapshot is taken.
 */
export function cyclicCosine({ base, cycleLength, minLr = 0 }: CyclicCosineOptions): Schedule {
  check('cyclicCosine: base', base, nonNegative, '>= 0');
  check('cyclicCosine: cycleLength', cycleLength, positiveInt, 'a positive integer');
  check('cyclicCosine: minLr', minLr, v => v >= 0 && v <= base, 'in [0, base]');
  return (t: number) => {
    checkT('cyclicCosine', t);
    return minLr + ((base - minLr) / 2) * (Math.cos((Math.PI * (t % cycleLength)) / cycleLength) + 1);
  };
}
