// Optimizers with the update rules of torch.optim (PyTorch 1.13, single-tensor path, no amsgrad,
// no maximize), over plain Float32Arrays updated in place.
//
// The learning rate is an argument of every step, so schedulers live outside the optimizer.
// Everything else (betas, eps, weight decay, momentum...) is fixed at construction and recorded in
// state(), which is plain data a checkpoint can serialise; load() validates and restores it.
//
// Arithmetic is done in float64 per element and stored back to float32, which is at least as
// accurate as PyTorch's float32 kernels. Adam and AdamW run as a WebAssembly SIMD kernel
// (adam-kernel.ts); the inner loops make one pass per parameter array and allocate nothing.

import { AdamKernel } from './adam-kernel.ts';

export interface OptimizerState {
  /** 'adam', 'adamw' or 'sgd'. */
  name: string;
  /** Number of steps taken so far (PyTorch's `state['step']`, the same for every parameter here). */
  step: number;
  /** Hyper-parameters other than the learning rate. */
  hyper: Record<string, number | boolean>;
  /** Per-parameter state arrays, one array per parameter, in parameter order. */
  buffers: Record<string, Float32Array[]>;
}

export interface Optimizer {
  readonly name: string;
  /** Update `params` in place from `grads` (same order and lengths as at construction). */
  step(params: Float32Array[], grads: Float32Array[], lr: number): void;
  /** A snapshot (copies) of the step count, hyper-parameters and buffers. */
  state(): OptimizerState;
  /** Restore a snapshot from state(); throws, naming the mismatch, if it does not fit. */
  load(state: OptimizerState): void;
}

export type OptimizerName = 'adam' | 'adamw' | 'sgd';

/** A parameter given by its element count, or by the array itself (only its length is used). */
export type ParamSize = number | { readonly length: number };

export interface AdamOptions {
  /** Coefficients of the running averages of the gradient and its square (default [0.9, 0.999]). */
  betas?: readonly [number, number];
  /** Added to the denominator (default 1e-8). */
  eps?: number;
  /** Adam: L2 penalty added to the gradient (default 0). AdamW: decoupled decay (default 1e-2). */
  weightDecay?: number;
  /** Per parameter: apply weight decay to it (default all true). */
  decay?: readonly boolean[];
}

export interface SGDOptions {
  /** Momentum factor (default 0). */
  momentum?: number;
  /** Dampening for momentum (default 0). */
  dampening?: number;
  /** Nesterov momentum (default false; needs momentum > 0 and dampening = 0). */
  nesterov?: boolean;
  /** L2 penalty added to the gradient (default 0). */
  weightDecay?: number;
  /** Per parameter: apply weight decay to it (default all true). */
  decay?: readonly boolean[];
}

function checkNumber(what: string, v: unknown, lo: number, hi: number, hiOpen = false): number {
  if (typeof v !== 'number' || !Number.isFinite(v) || v < lo || (hiOpen ? v >= hi : v > hi)) {
    throw new RangeError(`${what} must be a number in [${lo}, ${hi}${hiOpen ? ')' : ']'}, got ${String(v)}`);
  }
  return v;
}

function resolveSizes(name: string, sizes: readonly ParamSize[]): number[] {
  if (!Array.isArray(sizes)) throw new TypeError(`${name}: sizes must be an array`);
  return sizes.map((s, i) => {
    const n = typeof s === 'number' ? s : s?.length;
    if (typeof n !== 'number' || !Number.isInteger(n) || n < 0) {
      throw new RangeError(`${name}: size of parameter ${i} must be a non-negative integer, got ${String(n)}`);
    }
    return n;
  });
}

function resolveDecay(name: string, decay: readonly boolean[] | undefined, count: number): boolean[] {
  if (decay === undefined) return new Array<boolean>(count).fill(true);
  if (!Array.isArray(decay) || decay.length !== count) {
    throw new RangeError(
      `${name}: decay mask has ${Array.isArray(decay) ? decay.length : 'no'} entries, expected ${count} (one per parameter)`,
    );
  }
  decay.forEach((d, i) => {
    if (typeof d !== 'boolean') throw new TypeError(`${name}: decay[${i}] must be a boolean, got ${String(d)}`);
  });
  return decay.slice();
}

function checkKeys(name: string, what: string, opts: object | undefined, allowed: readonly string[]): void {
  if (opts === undefined) return;
  if (opts === null || typeof opts !== 'object') throw new TypeError(`${name}: ${what} must be an object`);
  for (const k of Object.keys(opts)) {
    if (!allowed.includes(k))
      throw new RangeError(`${name}: unknown ${what} '${k}' (expected one of ${allowed.join(', ')})`);
  }
}

abstract class BaseOptimizer implements Optimizer {
  abstract readonly name: OptimizerName;
  protected readonly sizes: readonly number[];
  protected readonly decay: readonly boolean[];
  protected t = 0;

  constructor(name: string, sizes: readonly ParamSize[], decay: readonly boolean[] | undefined) {
    this.sizes = resolveSizes(name, sizes);
    this.decay = resolveDecay(name, decay, this.sizes.length);
  }

  /** Number of steps taken so far. */
  get steps(): number {
    return this.t;
  }

  abstract step(params: Float32Array[], grads: Float32Array[], lr: number): void;
  protected abstract hyper(): Record<string, number | boolean>;
  /** Validate and apply hyper-parameters from a state (all keys present, same types). */
  protected abstract setHyper(h: Record<string, number | boolean>): void;
  /** The buffers the optimizer keeps under its current hyper-parameters (live arrays). */
  protected abstract liveBuffers(): Record<string, Float32Array[]>;

  protected alloc(): Float32Array[] {
    return this.sizes.map(n => new Float32Array(n));
  }

  protected checkStep(params: Float32Array[], grads: Float32Array[], lr: number): void {
    if (typeof lr !== 'number' || !(lr >= 0) || !Number.isFinite(lr)) {
      throw new RangeError(`${this.name}: learning rate must be a finite number >= 0, got ${String(lr)}`);
    }
    const n = this.sizes.length;
    if (params.length !== n) throw new RangeError(`${this.name}: got ${params.length} parameter arrays, expected ${n}`);
    if (grads.length !== n) throw new RangeError(`${this.name}: got ${grads.length} gradient arrays, expected ${n}`);
    for (let k = 0; k < n; k++) {
      if (params[k].length !== this.sizes[k])
        throw new RangeError(
          `${this.name}: parameter ${k} has ${params[k].length} elements, expected ${this.sizes[k]}`,
        );
      if (grads[k].length !== this.sizes[k])
        throw new RangeError(`${this.name}: gradient ${k} has ${grads[k].length} elements, expected ${this.sizes[k]}`);
    }
  }

  state(): OptimizerState {
    const buffers: Record<string, Float32Array[]> = {};
    for (const [key, arrays] of Object.entries(this.liveBuffers())) buffers[key] = arrays.map(a => a.slice());
    return { name: this.name, step: this.t, hyper: this.hyper(), buffers };
  }

  load(state: OptimizerState): void {
    const where = `${this.name}.load`;
    if (state === null || typeof state !== 'object') throw new TypeError(`${where}: state must be an object`);
    if (state.name !== this.name)
      throw new Error(`${where}: state is for optimizer '${String(state.name)}', not '${this.name}'`);
    if (!Number.isInteger(state.step) || state.step < 0)
      throw new RangeError(`${where}: step must be a non-negative integer, got ${String(state.step)}`);
    if (state.hyper === null || typeof state.hyper !== 'object')
      throw new TypeError(`${where}: hyper must be an object`);
    if (state.buffers === null || typeof state.buffers !== 'object')
      throw new TypeError(`${where}: buffers must be an object`);

    // Check everything before changing anything, so a failed load leaves the optimizer as it was.
    const before = this.hyper();
    const expectedHyper = Object.keys(before);
    for (const k of Object.keys(state.hyper)) {
      if (!expectedHyper.includes(k))
        throw new Error(`${where}: unknown hyper-parameter '${k}' (expected ${expectedHyper.join(', ')})`);
    }
    for (const k of expectedHyper) {
      if (!(k in state.hyper)) throw new Error(`${where}: hyper-parameter '${k}' missing`);
      if (typeof state.hyper[k] !== typeof before[k])
        throw new TypeError(
          `${where}: hyper-parameter '${k}' is a ${typeof state.hyper[k]}, expected a ${typeof before[k]}`,
        );
    }
    this.setHyper(state.hyper); // validates ranges; throws before touching anything on bad values
    let live: Record<string, Float32Array[]>;
    try {
      live = this.liveBuffers();
      const expectedBuffers = Object.keys(live);
      for (const k of Object.keys(state.buffers)) {
        if (!expectedBuffers.includes(k))
          throw new Error(
            `${where}: unexpected buffer '${k}' (expected ${expectedBuffers.length ? expectedBuffers.join(', ') : 'none'})`,
          );
      }
      for (const k of expectedBuffers) {
        const arrays = state.buffers[k];
        if (!Array.isArray(arrays)) throw new Error(`${where}: buffer '${k}' missing`);
        if (arrays.length !== this.sizes.length)
          throw new Error(
            `${where}: buffer '${k}' has ${arrays.length} arrays, expected ${this.sizes.length} (one per parameter)`,
          );
        arrays.forEach((a, i) => {
          const len = a?.length;
          if (len !== this.sizes[i])
            throw new Error(`${where}: buffer '${k}'[${i}] has ${String(len)} elements, expected ${this.sizes[i]}`);
        });
      }
    } catch (e) {
      this.setHyper(before);
      throw e;
    }
    for (const [k, arrays] of Object.entries(live)) arrays.forEach((a, i) => a.set(state.buffers[k][i]));
    this.t = state.step;
  }
}

const ADAM_OPTION_KEYS = ['betas', 'eps', 'weightDecay', 'decay'] as const;

/** Shared by Adam and AdamW; `decoupled` selects AdamW's decay. */
abstract class AdamBase extends BaseOptimizer {
  protected beta1: number;
  protected beta2: number;
  protected eps: number;
  protected weightDecay: number;
  /** Holds the moments (exp_avg, exp_avg_sq) and runs the update (engine/optim/adam-kernel.ts). */
  private readonly kernel: AdamKernel;
  protected abstract readonly decoupled: boolean;

  constructor(name: OptimizerName, sizes: readonly ParamSize[], opts: AdamOptions, defaultWeightDecay: number) {
    checkKeys(name, 'option', opts, ADAM_OPTION_KEYS);
    super(name, sizes, opts.decay);
    const betas = opts.betas ?? [0.9, 0.999];
    if (!Array.isArray(betas) || betas.length !== 2) throw new TypeError(`${name}: betas must be a pair of numbers`);
    this.beta1 = checkNumber(`${name}: betas[0]`, betas[0], 0, 1, true);
    this.beta2 = checkNumber(`${name}: betas[1]`, betas[1], 0, 1, true);
    this.eps = checkNumber(`${name}: eps`, opts.eps ?? 1e-8, 0, Infinity);
    this.weightDecay = checkNumber(`${name}: weightDecay`, opts.weightDecay ?? defaultWeightDecay, 0, Infinity);
    this.kernel = new AdamKernel(this.sizes);
  }

  protected hyper(): Record<string, number | boolean> {
    return { beta1: this.beta1, beta2: this.beta2, eps: this.eps, weightDecay: this.weightDecay };
  }

  protected setHyper(h: Record<string, number | boolean>): void {
    const beta1 = checkNumber(`${this.name}.load: beta1`, h.beta1, 0, 1, true);
    const beta2 = checkNumber(`${this.name}.load: beta2`, h.beta2, 0, 1, true);
    const eps = checkNumber(`${this.name}.load: eps`, h.eps, 0, Infinity);
    const weightDecay = checkNumber(`${this.name}.load: weightDecay`, h.weightDecay, 0, Infinity);
    this.beta1 = beta1;
    this.beta2 = beta2;
    this.eps = eps;
    this.weightDecay = weightDecay;
  }

  protected liveBuffers(): Record<string, Float32Array[]> {
    return { exp_avg: this.kernel.expAvg, exp_avg_sq: this.kernel.expAvgSq };
  }

  step(params: Float32Array[], grads: Float32Array[], lr: number): void {
    this.checkStep(params, grads, lr);
    const t = ++this.t;
    // torch: step_size = lr / bc1; denom = sqrt(v) / sqrt(bc2) + eps; p -= step_size * m / denom
    const args = {
      beta1: this.beta1,
      beta2: this.beta2,
      eps: this.eps,
      stepSize: lr / (1 - this.beta1 ** t),
      bc2Sqrt: Math.sqrt(1 - this.beta2 ** t),
    };
    for (let k = 0; k < params.length; k++) {
      const wd = this.decay[k] ? this.weightDecay : 0;
      // AdamW: p *= 1 - lr * wd, then the Adam update from the raw gradient; Adam: g += wd * p (L2), and
      // without decay the decoupled form with factor 1 (exactly p) skips the penalty's arithmetic
      if (this.decoupled || wd === 0) this.kernel.step(k, params[k], grads[k], false, 1 - lr * wd, args);
      else this.kernel.step(k, params[k], grads[k], true, wd, args);
    }
  }
}

/** torch.optim.Adam: weight decay is an L2 penalty added to the gradient (g += wd * p). */
export class Adam extends AdamBase {
  readonly name = 'adam' as const;
  protected readonly decoupled = false;
  constructor(sizes: readonly ParamSize[], opts: AdamOptions = {}) {
    super('adam', sizes, opts, 0);
  }
}

/** torch.optim.AdamW: decoupled weight decay (p *= 1 - lr * wd), default weightDecay 1e-2. */
export class AdamW extends AdamBase {
  readonly name = 'adamw' as const;
  protected readonly decoupled = true;
  constructor(sizes: readonly ParamSize[], opts: AdamOptions = {}) {
    super('adamw', sizes, opts, 1e-2);
  }
}

const SGD_OPTION_KEYS = ['momentum', 'dampening', 'nesterov', 'weightDecay', 'decay'] as const;

/**
 * torch.optim.SGD: d = g + wd * p; with momentum, buf = d on the first step, then
 * buf = momentum * buf + (1 - dampening) * d; d = nesterov ? d + momentum * buf : buf; p -= lr * d.
 */
export class SGD extends BaseOptimizer {
  readonly name = 'sgd' as const;
  private momentum: number;
  private dampening: number;
  private nesterov: boolean;
  private weightDecay: number;
  /** Used only while momentum != 0 (PyTorch keeps no buffer without momentum). */
  private buf: Float32Array[] | null = null;

  constructor(sizes: readonly ParamSize[], opts: SGDOptions = {}) {
    checkKeys('sgd', 'option', opts, SGD_OPTION_KEYS);
    super('sgd', sizes, opts.decay);
    this.momentum = 0;
    this.dampening = 0;
    this.nesterov = false;
    this.weightDecay = 0;
    this.setHyper(
      {
        momentum: opts.momentum ?? 0,
        dampening: opts.dampening ?? 0,
        nesterov: opts.nesterov ?? false,
        weightDecay: opts.weightDecay ?? 0,
      },
      'sgd',
    );
  }

  protected hyper(): Record<string, number | boolean> {
    return {
      momentum: this.momentum,
      dampening: this.dampening,
      nesterov: this.nesterov,
      weightDecay: this.weightDecay,
    };
  }

  protected setHyper(h: Record<string, number | boolean>, where = 'sgd.load'): void {
    const momentum = checkNumber(`${where}: momentum`, h.momentum, 0, Infinity);
    const dampening = checkNumber(`${where}: dampening`, h.dampening, -Infinity, Infinity);
    const weightDecay = checkNumber(`${where}: weightDecay`, h.weightDecay, 0, Infinity);
    const nesterov = h.nesterov;
    if (typeof nesterov !== 'boolean')
      throw new TypeError(`${where}: nesterov must be a boolean, got ${String(nesterov)}`);
    if (nesterov && (momentum <= 0 || dampening !== 0)) {
      throw new RangeError(`${where}: nesterov momentum requires a momentum > 0 and zero dampening`);
    }
    this.momentum = momentum;
    this.dampening = dampening;
    this.nesterov = nesterov;
    this.weightDecay = weightDecay;
    // Allocated on first need and then kept, so a failed load() that restores the previous
    // hyper-parameters cannot lose the buffer's contents.
    if (momentum !== 0 && this.buf === null) this.buf = this.alloc();
  }

  protected liveBuffers(): Record<string, Float32Array[]> {
    return this.momentum !== 0 && this.buf ? { momentum_buffer: this.buf } : {};
  }

  step(params: Float32Array[], grads: Float32Array[], lr: number): void {
    this.checkStep(params, grads, lr);
    const first = this.t === 0;
    this.t++;
    const momentum = this.momentum,
      nesterov = this.nesterov;
    const oneMinusDampening = 1 - this.dampening;
    for (let k = 0; k < params.length; k++) {
      const p = params[k],
        g = grads[k];
      const wd = this.decay[k] ? this.weightDecay : 0;
      const n = p.length;
      if (momentum === 0 || this.buf === null) {
        if (wd !== 0)
          for (let i = 0; i < n; i++) {
            const pi = p[i];
            p[i] = pi - lr * (g[i] + wd * pi);
          }
        else for (let i = 0; i < n; i++) p[i] -= lr * g[i];
        continue;
      }
      const b = this.buf[k];
      for (let i = 0; i < n; i++) {
        const pi = p[i];
        const d = wd !== 0 ? g[i] + wd * pi : g[i];
        const bi = first ? d : momentum * b[i] + oneMinusDampening * d;
        b[i] = bi;
        p[i] = pi - lr * (nesterov ? d + momentum * bi : bi);
      }
    }
  }
}

export type OptimizerHyper = AdamOptions | SGDOptions;

/** Build an optimizer by name; unknown names and unknown option keys throw. */
export function makeOptimizer(name: 'adam' | 'adamw', sizes: readonly ParamSize[], hyper?: AdamOptions): Optimizer;
export function makeOptimizer(name: 'sgd', sizes: readonly ParamSize[], hyper?: SGDOptions): Optimizer;
export function makeOptimizer(name: OptimizerName, sizes: readonly ParamSize[], hyper?: OptimizerHyper): Optimizer;
export function makeOptimizer(name: OptimizerName, sizes: readonly ParamSize[], hyper: OptimizerHyper = {}): Optimizer {
  switch (name) {
    case 'adam':
      return new Adam(sizes, hyper as AdamOptions);
    case 'adamw':
      return new AdamW(sizes, hyper as AdamOptions);
    case 'sgd':
      return new SGD(sizes, hyper as SGDOptions);
    default:
      throw new RangeError(`unknown optimizer '${String(name)}' (expected adam, adamw or sgd)`);
  }
}
