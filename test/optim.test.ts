// Optimizers, schedulers and early stopping, checked against PyTorch golden values from
// test/fixtures/gen_optim_golden.py (which documents the input formulas reproduced here).
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import {
  Adam,
  AdamW,
  SGD,
  makeOptimizer,
  type AdamOptions,
  type Optimizer,
  type OptimizerName,
  type OptimizerState,
  type SGDOptions,
} from '../engine/optim/optimizers.ts';
import { cosineAnnealing, cyclicCosine, stepLR, warmupCosine } from '../engine/optim/schedulers.ts';
import { EarlyStopping } from '../engine/optim/early-stopping.ts';
import { compileKernels, KERNELS_WASM } from '../engine/kernels/build-kernels.ts';

interface OptimizerCase {
  name: string;
  optimizer: OptimizerName;
  lr: number;
  torch_kwargs: {
    betas?: [number, number];
    eps?: number;
    weight_decay?: number;
    momentum?: number;
    dampening?: number;
    nesterov?: boolean;
  };
  decay: boolean[];
  params_after_step: number[][][];
}
type SchedulerCase =
  | { scheduler: 'stepLR'; base: number; stepSize: number; gamma: number; lrs: number[] }
  | { scheduler: 'cosineAnnealing'; base: number; tMax: number; etaMin: number; lrs: number[] };
interface Golden {
  torch_version: string;
  sizes: number[];
  steps: number;
  optimizers: OptimizerCase[];
  schedulers: SchedulerCase[];
}

const golden: Golden = JSON.parse(fs.readFileSync(new URL('./fixtures/optim_golden.json', import.meta.url), 'utf8'));

// The same formulas as gen_optim_golden.py; Float32Array rounds them as the Python side does.
const initParam = (k: number, n: number) =>
  Float32Array.from({ length: n }, (_, i) => Math.sin(0.7 * i + 1.3 * k + 0.5));
const gradAt = (k: number, n: number, s: number) =>
  Float32Array.from({ length: n }, (_, i) => 0.1 * (1 + s) * Math.cos(0.37 * i * (s + 1) + 0.9 * k + 0.1 * s));
const lrAt = (lr: number, s: number) => lr * (1 - 0.1 * s);

function hyperOf(c: OptimizerCase): AdamOptions | SGDOptions {
  const kw = c.torch_kwargs;
  if (c.optimizer === 'sgd') {
    return {
      momentum: kw.momentum,
      dampening: kw.dampening,
      nesterov: kw.nesterov,
      weightDecay: kw.weight_decay,
      decay: c.decay,
    };
  }
  return { betas: kw.betas, eps: kw.eps, weightDecay: kw.weight_decay, decay: c.decay };
}

/** |actual - expected| <= rtol * |expected| + atol, elementwise, with a message naming the place. */
function assertClose(
  actual: ArrayLike<number>,
  expected: ArrayLike<number>,
  rtol: number,
  atol: number,
  where: string,
): void {
  assert.equal(actual.length, expected.length, `${where}: length`);
  for (let i = 0; i < expected.length; i++) {
    const a = actual[i],
      e = expected[i];
    assert.ok(
      Math.abs(a - e) <= rtol * Math.abs(e) + atol,
      `${where}[${i}]: got ${a}, expected ${e} (diff ${Math.abs(a - e)})`,
    );
  }
}

function freshParams(sizes: number[]): Float32Array[] {
  return sizes.map((n, k) => initParam(k, n));
}

function run(opt: Optimizer, params: Float32Array[], lr: number, from: number, to: number): void {
  for (let s = from; s < to; s++)
    opt.step(
      params,
      params.map((p, k) => gradAt(k, p.length, s)),
      lrAt(lr, s),
    );
}

describe('optimizers vs PyTorch', () => {
  it(`golden file was made by torch (${golden.torch_version}) with ${golden.optimizers.length} optimizer cases`, () => {
    assert.ok(golden.optimizers.length >= 10);
    assert.ok(golden.steps >= 5);
  });

  for (const c of golden.optimizers) {
    it(`${c.optimizer}: ${c.name}`, () => {
      const opt = makeOptimizer(c.optimizer, golden.sizes, hyperOf(c));
      assert.equal(opt.name, c.optimizer);
      const params = freshParams(golden.sizes);
      for (let s = 0; s < golden.steps; s++) {
        opt.step(
          params,
          params.map((p, k) => gradAt(k, p.length, s)),
          lrAt(c.lr, s),
        );
        params.forEach((p, k) => assertClose(p, c.params_after_step[s][k], 1e-5, 1e-7, `step ${s + 1} param ${k}`));
      }
      assert.equal(opt.state().step, golden.steps);
    });
  }
});

// The update rules as plain float64 loops (what the WebAssembly kernel must reproduce bit for bit).
function referenceAdam(
  p: Float32Array[],
  g: Float32Array[],
  m: Float32Array[],
  v: Float32Array[],
  t: number,
  lr: number,
  o: { beta1: number; beta2: number; eps: number; wd: number; decoupled: boolean },
): void {
  const { beta1, beta2, eps } = o,
    oneMinusBeta1 = 1 - beta1,
    oneMinusBeta2 = 1 - beta2;
  const stepSize = lr / (1 - beta1 ** t),
    bc2Sqrt = Math.sqrt(1 - beta2 ** t);
  for (let k = 0; k < p.length; k++) {
    for (let i = 0; i < p[k].length; i++) {
      const pi = o.decoupled ? p[k][i] * (1 - lr * o.wd) : p[k][i];
      const gi = o.decoupled || o.wd === 0 ? g[k][i] : g[k][i] + o.wd * p[k][i];
      const mi = beta1 * m[k][i] + oneMinusBeta1 * gi;
      const vi = beta2 * v[k][i] + oneMinusBeta2 * gi * gi;
      m[k][i] = mi;
      v[k][i] = vi;
      p[k][i] = pi - (stepSize * mi) / (Math.sqrt(vi) / bc2Sqrt + eps);
    }
  }
}

describe('optimizers: the WebAssembly Adam kernel', () => {
  it('kernels.wasm is what kernels.wat compiles to (run npm run build:wasm after editing the .wat)', async () => {
    assert.deepEqual(new Uint8Array(fs.readFileSync(KERNELS_WASM)), await compileKernels());
  });

  // lengths around the 4-wide vector loop (tail of 0-3), values from tiny to large, exact zeros and -0
  const sizes = [0, 1, 3, 4, 5, 7, 8, 33, 1001];
  const values = (seed: number, n: number) =>
    Float32Array.from({ length: n }, (_, i) => {
      const r = Math.sin(seed * 12.9898 + i * 78.233) * 43758.5453;
      const u = r - Math.floor(r);
      return i % 11 === 0 ? 0 : i % 13 === 0 ? -0 : (u - 0.5) * 10 ** Math.floor(u * 12 - 8);
    });
  for (const [name, decoupled, wd] of [
    ['AdamW', true, 0.05],
    ['Adam with L2', false, 0.03],
    ['Adam', false, 0],
  ] as const) {
    it(`${name}: 6 steps are bit-identical to the float64 loop`, () => {
      const opts = { betas: [0.85, 0.995] as [number, number], eps: 1e-7, weightDecay: wd };
      const opt = decoupled ? new AdamW(sizes, opts) : new Adam(sizes, opts);
      const p = sizes.map((n, k) => values(k + 1, n)),
        ref = p.map(a => a.slice());
      const m = sizes.map(n => new Float32Array(n)),
        v = sizes.map(n => new Float32Array(n));
      for (let t = 1; t <= 6; t++) {
        const g = sizes.map((n, k) => values(100 * t + k, n)),
          lr = 1e-3 * (1 + 0.5 * t);
        opt.step(p, g, lr);
        referenceAdam(ref, g, m, v, t, lr, { beta1: 0.85, beta2: 0.995, eps: 1e-7, wd, decoupled });
      }
      const bits = (a: Float32Array) => Array.from(new Uint32Array(a.buffer, a.byteOffset, a.length));
      const st = opt.state();
      sizes.forEach((n, k) => {
        assert.deepEqual(bits(p[k]), bits(ref[k]), `parameter ${k} (${n} values)`);
        assert.deepEqual(bits(st.buffers.exp_avg[k]), bits(m[k]), `exp_avg ${k}`);
        assert.deepEqual(bits(st.buffers.exp_avg_sq[k]), bits(v[k]), `exp_avg_sq ${k}`);
      });
    });
  }

  it('two optimizers keep separate moments', () => {
    const a = new AdamW([5]),
      b = new AdamW([5]);
    const pa = new Float32Array(5).fill(1),
      pb = new Float32Array(5).fill(1);
    a.step([pa], [new Float32Array(5).fill(1)], 0.1);
    b.step([pb], [new Float32Array(5).fill(-1)], 0.1);
    assert.deepEqual(a.state().buffers.exp_avg[0], new Float32Array(5).fill(Math.fround(0.1)));
    assert.deepEqual(b.state().buffers.exp_avg[0], new Float32Array(5).fill(Math.fround(-0.1)));
  });
});

describe('optimizers: weight-decay mask', () => {
  const sizes = [4, 4];
  const zeroGrads = () => sizes.map(n => new Float32Array(n));

  it('AdamW with zero gradients shrinks only the decayed parameter, by 1 - lr*wd', () => {
    const opt = new AdamW(sizes, { weightDecay: 0.5, decay: [true, false] });
    const params = freshParams(sizes);
    const before = params.map(p => p.slice());
    opt.step(params, zeroGrads(), 0.1);
    assertClose(
      params[0],
      Array.from(before[0], x => x * 0.95),
      1e-6,
      0,
      'decayed',
    );
    assert.deepEqual(params[1], before[1]);
  });

  for (const [name, make] of [
    ['adam', (d: boolean[]) => new Adam(sizes, { weightDecay: 0.3, decay: d })],
    ['sgd', (d: boolean[]) => new SGD(sizes, { momentum: 0.9, weightDecay: 0.3, decay: d })],
  ] as const) {
    it(`${name}: a masked parameter moves exactly as with weightDecay 0`, () => {
      const masked = make([true, false]);
      const plain = name === 'adam' ? new Adam(sizes) : new SGD(sizes, { momentum: 0.9 });
      const a = freshParams(sizes),
        b = freshParams(sizes);
      run(masked, a, 0.05, 0, 4);
      run(plain, b, 0.05, 0, 4);
      assert.deepEqual(a[1], b[1]);
      assert.notDeepEqual(a[0], b[0]);
    });
  }

  it('rejects a mask of the wrong length', () => {
    assert.throws(() => new Adam(sizes, { decay: [true] }), /decay mask has 1 entries, expected 2/);
  });
});

describe('optimizers: state() and load()', () => {
  const sizes = golden.sizes;
  const configs: [OptimizerName, AdamOptions | SGDOptions][] = [
    ['adam', { betas: [0.8, 0.99], weightDecay: 0.1 }],
    ['adamw', { weightDecay: 0.05, decay: [true, false, true] }],
    ['sgd', { momentum: 0.9, nesterov: true, weightDecay: 1e-3 }],
    ['sgd', { weightDecay: 1e-2 }],
  ];

  for (const [name, hyper] of configs) {
    it(`${name} ${JSON.stringify(hyper)}: a loaded copy continues identically`, () => {
      const a = makeOptimizer(name, sizes, hyper);
      const pa = freshParams(sizes);
      run(a, pa, 0.05, 0, 2);
      const saved = a.state();
      const pb = pa.map(p => p.slice());
      // a fresh optimizer built with other hyper-parameters takes them from the state
      const b = makeOptimizer(
        name,
        sizes,
        name === 'sgd' ? { momentum: (hyper as SGDOptions).momentum } : { decay: (hyper as AdamOptions).decay },
      );
      b.load(saved);
      assert.deepEqual(b.state(), saved);
      run(a, pa, 0.05, 2, 5);
      run(b, pb, 0.05, 2, 5);
      pa.forEach((p, k) => assert.deepEqual(pb[k], p, `param ${k}`));
      assert.deepEqual(b.state(), a.state());
    });
  }

  it('state() is a snapshot, not a view of live buffers', () => {
    const opt = new Adam(sizes);
    const params = freshParams(sizes);
    run(opt, params, 0.01, 0, 1);
    const s = opt.state();
    const copy = s.buffers.exp_avg.map(b => b.slice());
    run(opt, params, 0.01, 1, 2);
    assert.deepEqual(s.buffers.exp_avg, copy);
    assert.equal(s.step, 1);
  });

  it('state has the PyTorch buffer names and plain hyper-parameters', () => {
    const adam = new AdamW(sizes, { betas: [0.8, 0.9], eps: 1e-6, weightDecay: 0.2 }).state();
    assert.deepEqual(Object.keys(adam.buffers).sort(), ['exp_avg', 'exp_avg_sq']);
    assert.deepEqual(adam.hyper, { beta1: 0.8, beta2: 0.9, eps: 1e-6, weightDecay: 0.2 });
    assert.deepEqual(Object.keys(new SGD(sizes, { momentum: 0.5 }).state().buffers), ['momentum_buffer']);
    assert.deepEqual(new SGD(sizes).state().buffers, {});
  });

  describe('load() rejects a state that does not fit', () => {
    let saved: OptimizerState;
    beforeEach(() => {
      const opt = new Adam(sizes);
      run(opt, freshParams(sizes), 0.01, 0, 2);
      saved = opt.state();
    });
    const cases: [string, (s: OptimizerState) => OptimizerState, RegExp][] = [
      ['another optimizer', s => ({ ...s, name: 'adamw' }), /state is for optimizer 'adamw', not 'adam'/],
      [
        'a wrong buffer length',
        s => ({
          ...s,
          buffers: {
            ...s.buffers,
            exp_avg_sq: [s.buffers.exp_avg_sq[0], new Float32Array(4), s.buffers.exp_avg_sq[2]],
          },
        }),
        /buffer 'exp_avg_sq'\[1\] has 4 elements, expected 3/,
      ],
      [
        'too few buffer arrays',
        s => ({ ...s, buffers: { ...s.buffers, exp_avg: s.buffers.exp_avg.slice(0, 2) } }),
        /buffer 'exp_avg' has 2 arrays, expected 3/,
      ],
      ['a missing buffer', s => ({ ...s, buffers: { exp_avg: s.buffers.exp_avg } }), /buffer 'exp_avg_sq' missing/],
      [
        'an unexpected buffer',
        s => ({ ...s, buffers: { ...s.buffers, momentum_buffer: s.buffers.exp_avg } }),
        /unexpected buffer 'momentum_buffer'/,
      ],
      ['a bad step', s => ({ ...s, step: -1 }), /step must be a non-negative integer/],
      [
        'a missing hyper-parameter',
        s => ({ ...s, hyper: { beta1: 0.9, beta2: 0.999, eps: 1e-8 } }),
        /hyper-parameter 'weightDecay' missing/,
      ],
      [
        'an unknown hyper-parameter',
        s => ({ ...s, hyper: { ...s.hyper, momentum: 0.9 } }),
        /unknown hyper-parameter 'momentum'/,
      ],
      [
        'an out-of-range hyper-parameter',
        s => ({ ...s, hyper: { ...s.hyper, beta2: 1 } }),
        /beta2 must be a number in \[0, 1\)/,
      ],
    ];
    for (const [what, mutate, message] of cases) {
      it(what, () => {
        const target = new Adam(sizes, { betas: [0.5, 0.6] });
        const before = target.state();
        assert.throws(() => target.load(mutate(saved)), message);
        assert.deepEqual(target.state(), before, 'a failed load leaves the optimizer unchanged');
      });
    }

    it('an SGD state into an SGD of other sizes', () => {
      const sgd = new SGD(sizes, { momentum: 0.9 });
      run(sgd, freshParams(sizes), 0.01, 0, 1);
      assert.throws(
        () => new SGD([7, 3, 6], { momentum: 0.9 }).load(sgd.state()),
        /buffer 'momentum_buffer'\[2\] has 5 elements, expected 6/,
      );
      assert.throws(
        () => new SGD([7, 3], { momentum: 0.9 }).load(sgd.state()),
        /buffer 'momentum_buffer' has 3 arrays, expected 2/,
      );
    });

    it('a failed SGD load keeps the momentum buffer', () => {
      const sgd = new SGD(sizes, { momentum: 0.9 });
      run(sgd, freshParams(sizes), 0.01, 0, 2);
      const before = sgd.state();
      const bad = {
        ...before,
        hyper: { ...before.hyper, momentum: 0 },
        buffers: { momentum_buffer: before.buffers.momentum_buffer },
      };
      assert.throws(() => sgd.load(bad), /unexpected buffer 'momentum_buffer'/);
      assert.deepEqual(sgd.state(), before);
    });
  });
});

describe('optimizers: argument checks', () => {
  it('step() checks counts, lengths and the learning rate', () => {
    const opt = new Adam([3, 2]);
    const p = [new Float32Array(3), new Float32Array(2)];
    assert.throws(() => opt.step(p.slice(0, 1), p, 0.1), /got 1 parameter arrays, expected 2/);
    assert.throws(
      () => opt.step(p, [new Float32Array(3), new Float32Array(3)], 0.1),
      /gradient 1 has 3 elements, expected 2/,
    );
    assert.throws(() => opt.step(p, p, NaN), /learning rate/);
    assert.throws(() => opt.step(p, p, -1), /learning rate/);
    assert.equal(opt.state().step, 0, 'a rejected step does not count');
  });

  it('constructors and makeOptimizer validate hyper-parameters like torch', () => {
    assert.throws(
      () => new SGD([1], { nesterov: true }),
      /nesterov momentum requires a momentum > 0 and zero dampening/,
    );
    assert.throws(() => new SGD([1], { nesterov: true, momentum: 0.9, dampening: 0.1 }), /nesterov/);
    assert.throws(() => new Adam([1], { betas: [1, 0.9] }), /betas\[0\]/);
    assert.throws(() => new AdamW([1], { eps: -1 }), /eps/);
    assert.throws(() => makeOptimizer('adam', [1], { momentum: 0.9 } as AdamOptions), /unknown option 'momentum'/);
    assert.throws(() => makeOptimizer('rmsprop' as OptimizerName, [1]), /unknown optimizer 'rmsprop'/);
  });

  it('accepts the parameter arrays themselves as sizes', () => {
    const params = freshParams([5, 2]);
    const opt = new SGD(params, { momentum: 0.9 });
    run(opt, params, 0.1, 0, 2);
    assert.deepEqual(
      opt.state().buffers.momentum_buffer.map(b => b.length),
      [5, 2],
    );
  });

  it('defaults are PyTorch defaults', () => {
    assert.deepEqual(new Adam([1]).state().hyper, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 0 });
    assert.deepEqual(new AdamW([1]).state().hyper, { beta1: 0.9, beta2: 0.999, eps: 1e-8, weightDecay: 1e-2 });
    assert.deepEqual(new SGD([1]).state().hyper, { momentum: 0, dampening: 0, nesterov: false, weightDecay: 0 });
  });
});

describe('schedulers vs PyTorch', () => {
  for (const c of golden.schedulers) {
    const label =
      c.scheduler === 'stepLR'
        ? `stepLR(${c.base}, ${c.stepSize}, ${c.gamma}) over ${c.lrs.length} epochs`
        : `cosineAnnealing(${c.base}, ${c.tMax}, ${c.etaMin}) over ${c.lrs.length} epochs`;
    it(label, () => {
      const f =
        c.scheduler === 'stepLR' ? stepLR(c.base, c.stepSize, c.gamma) : cosineAnnealing(c.base, c.tMax, c.etaMin);
      assertClose(
        c.lrs.map((_, t) => f(t)),
        c.lrs,
        1e-9,
        1e-15,
        label,
      );
    });
  }

  it('cosineAnnealing reaches etaMin at tMax', () => {
    assert.ok(Math.abs(cosineAnnealing(0.1, 10, 0.001)(10) - 0.001) < 1e-15);
    assert.equal(cosineAnnealing(0.1, 10)(0), 0.1);
  });
});

describe('warmupCosine', () => {
  const base = 0.1,
    warmup = 10,
    total = 100,
    minLr = 1e-3;
  const f = warmupCosine({ base, warmup, total, minLr });

  it('warms up linearly from ~0 to base', () => {
    assert.ok(Math.abs(f(0) - base / warmup) < 1e-15);
    assert.ok(f(0) < base);
    assert.ok(Math.abs(f(warmup - 1) - base) < 1e-15);
    assert.ok(Math.abs(f(4) - f(3) - base / warmup) < 1e-15, 'linear steps of base / warmup');
    assert.equal(f(warmup), base);
  });

  it('decays by cosine to minLr at total and stays there', () => {
    assert.ok(Math.abs(f(total) - minLr) < 1e-15);
    assert.equal(f(total + 50), minLr);
    const mid = warmup + (total - warmup) / 2;
    assert.ok(Math.abs(f(mid) - (base + minLr) / 2) < 1e-15);
  });

  it('is non-decreasing during warm-up and non-increasing after', () => {
    for (let t = 1; t <= warmup; t++) assert.ok(f(t) >= f(t - 1), `warm-up at ${t}`);
    for (let t = warmup + 1; t <= total + 5; t++) assert.ok(f(t) <= f(t - 1), `decay at ${t}`);
    for (let t = 0; t <= total + 5; t++) assert.ok(f(t) >= minLr && f(t) <= base, `bounds at ${t}`);
  });

  it('without warm-up it is cosineAnnealing with tMax = total', () => {
    const g = warmupCosine({ base, warmup: 0, total, minLr });
    const c = cosineAnnealing(base, total, minLr);
    for (let t = 0; t <= total; t++) assert.ok(Math.abs(g(t) - c(t)) < 1e-15, `t=${t}`);
  });

  it('rejects total < warmup and minLr > base', () => {
    assert.throws(() => warmupCosine({ base, warmup: 10, total: 5 }), /total/);
    assert.throws(() => warmupCosine({ base, warmup: 1, total: 5, minLr: 1 }), /minLr/);
  });
});

describe('cyclicCosine', () => {
  const base = 0.2,
    cycleLength = 8;

  it('restarts at base on every cycle boundary and is lowest on the last iteration of a cycle', () => {
    const f = cyclicCosine({ base, cycleLength });
    for (const k of [0, 1, 2, 5]) {
      assert.equal(f(k * cycleLength), base, `start of cycle ${k}`);
      if (k > 0) {
        const last = f(k * cycleLength - 1);
        assert.ok(Math.abs(last - (base / 2) * (Math.cos((Math.PI * (cycleLength - 1)) / cycleLength) + 1)) < 1e-15);
        assert.ok(last > 0 && last < 0.05 * base && last < f(k * cycleLength - 2));
      }
    }
    assert.ok(Math.abs(f(cycleLength / 2) - base / 2) < 1e-15, 'half way is base / 2');
    assert.ok(Math.abs(f(3 * cycleLength + 3) - f(3)) < 1e-15, 'periodic');
    for (let t = 1; t < cycleLength; t++) assert.ok(f(t) < f(t - 1), `decreasing within a cycle at ${t}`);
  });

  it('matches the formula of Huang et al. with a floor', () => {
    const f = cyclicCosine({ base, cycleLength: 5, minLr: 0.01 });
    for (let t = 0; t < 20; t++) {
      const expected = 0.01 + ((base - 0.01) / 2) * (Math.cos((Math.PI * (t % 5)) / 5) + 1);
      assert.ok(Math.abs(f(t) - expected) < 1e-15, `t=${t}`);
    }
    assert.equal(f(10), base);
  });
});

describe('EarlyStopping', () => {
  it("'min' mode: improvements must beat best by more than minDelta", () => {
    const es = new EarlyStopping({ patience: 2, minDelta: 0.1, mode: 'min' });
    assert.deepEqual(es.update(1.0), { improved: true, stop: false });
    assert.deepEqual(es.update(0.95), { improved: false, stop: false }, 'within minDelta');
    assert.deepEqual(es.update(0.85), { improved: true, stop: false }, 'more than minDelta below 1.0');
    assert.equal(es.best, 0.85);
    assert.equal(es.bestEpoch, 2);
    assert.deepEqual(es.update(0.75), { improved: false, stop: false }, 'exactly minDelta is not enough');
    assert.deepEqual(es.update(0.9), { improved: false, stop: true }, 'second epoch without improvement');
    assert.equal(es.best, 0.85);
    assert.equal(es.bestEpoch, 2);
  });

  it("'max' mode with minDelta 0: any increase improves, equal does not", () => {
    const es = new EarlyStopping({ patience: 3, minDelta: 0, mode: 'max' });
    assert.equal(es.best, -Infinity);
    assert.equal(es.bestEpoch, -1);
    assert.equal(es.update(0.9).improved, true);
    assert.equal(es.update(0.9).improved, false);
    assert.deepEqual(es.update(0.91), { improved: true, stop: false });
    assert.deepEqual(es.update(0.5), { improved: false, stop: false });
    assert.deepEqual(es.update(0.91), { improved: false, stop: false });
    assert.deepEqual(es.update(0.905), { improved: false, stop: true });
    assert.equal(es.best, 0.91);
    assert.equal(es.bestEpoch, 2);
  });

  it("'max' mode with minDelta: needs more than best + minDelta", () => {
    const es = new EarlyStopping({ patience: 1, minDelta: 0.01, mode: 'max' });
    es.update(0.9);
    assert.deepEqual(es.update(0.905), { improved: false, stop: true });
  });

  it('an improvement resets the patience count; NaN never improves', () => {
    const es = new EarlyStopping({ patience: 2, minDelta: 0, mode: 'min' });
    es.update(1);
    assert.equal(es.update(NaN).improved, false);
    assert.deepEqual(es.update(0.5), { improved: true, stop: false });
    assert.deepEqual(es.update(0.6), { improved: false, stop: false });
    assert.deepEqual(es.update(0.7), { improved: false, stop: true });
  });

  it('patience 0 stops at the first epoch without improvement', () => {
    const es = new EarlyStopping({ patience: 0, mode: 'min' });
    assert.deepEqual(es.update(1), { improved: true, stop: false });
    assert.deepEqual(es.update(1), { improved: false, stop: true });
  });

  it('state() survives JSON and load() continues identically', () => {
    const a = new EarlyStopping({ patience: 3, minDelta: 0.01, mode: 'min' });
    const fresh = JSON.parse(JSON.stringify(new EarlyStopping({ patience: 3, mode: 'min' }).state()));
    assert.equal(fresh.best, null);
    for (const v of [1, 0.8, 0.85]) a.update(v);
    const b = new EarlyStopping({ patience: 3, minDelta: 0.01, mode: 'min' });
    b.load(JSON.parse(JSON.stringify(a.state())));
    assert.deepEqual(b.state(), a.state());
    for (const v of [0.795, 0.9, 0.7, 0.71, 0.72, 0.73]) assert.deepEqual(b.update(v), a.update(v));
    assert.equal(b.best, 0.7);
    assert.equal(b.bestEpoch, 5);
    const c = new EarlyStopping({ patience: 3, mode: 'min' });
    c.load(fresh);
    assert.equal(c.best, Infinity);
  });

  it('load() rejects another mode or inconsistent counters', () => {
    const s = new EarlyStopping({ patience: 1, mode: 'min' }).state();
    assert.throws(() => new EarlyStopping({ patience: 1, mode: 'max' }).load(s), /mode 'min', not 'max'/);
    assert.throws(
      () => new EarlyStopping({ patience: 1, mode: 'min' }).load({ ...s, best: 1 }),
      /best must be null exactly when bestEpoch is -1/,
    );
    assert.throws(
      () => new EarlyStopping({ patience: 1, mode: 'min' }).load({ ...s, bestEpoch: 3, best: 1, epochs: 2 }),
      /bestEpoch/,
    );
  });

  it('rejects bad options', () => {
    assert.throws(() => new EarlyStopping({ patience: -1, mode: 'min' }), /patience/);
    assert.throws(() => new EarlyStopping({ patience: 1, minDelta: -0.1, mode: 'min' }), /minDelta/);
    assert.throws(() => new EarlyStopping({ patience: 1, mode: 'up' as 'min' }), /mode/);
  });
});
