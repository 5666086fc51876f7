// Finite-difference checks of the autodiff rules: compares the emitted gradients with central
// differences of a random projection of the output, along random directions, one input at a time.
import { Graph, type Value, type Shape, size } from '../../engine/graph/graph.ts';
import { gradients } from '../../engine/autodiff/autodiff.ts';
import { createSession, ort } from '../../engine/runtime.ts';
import { Rng } from '../../engine/util/random.ts';

export interface InputSpec {
  shape: Shape;
  dtype?: 'float32' | 'int64' | 'bool';
  /** Fixed values (labels, masks); float inputs default to N(0,1) (or |N|+0.5 when positive). */
  data?: Float32Array | BigInt64Array | Uint8Array;
  positive?: boolean;
  /** Differentiate with respect to this input (default: every float input). */
  diff?: boolean;
}

export interface GradcheckOptions {
  seed?: number;
  eps?: number;
  rtol?: number;
  atol?: number;
  directions?: number;
  /** New session per evaluation: for ops whose randomness advances per run (Dropout). */
  freshSession?: boolean;
}

export interface GradcheckResult {
  worst: number;
  failures: string[];
}

export async function gradcheck(
  build: (g: Graph, xs: Value[]) => Value,
  specs: InputSpec[],
  opts: GradcheckOptions = {},
): Promise<GradcheckResult> {
  const rng = new Rng(opts.seed ?? 1);
  const eps = opts.eps ?? 1e-2,
    rtol = opts.rtol ?? 5e-3,
    atol = opts.atol ?? 1e-3;
  const g = new Graph('gradcheck');
  const xs = specs.map((s, i) => g.input(`x${i}`, s.shape, s.dtype ?? 'float32'));
  const y = build(g, xs);
  const proj = Float32Array.from({ length: size(y.shape) }, () => rng.normal());
  const r = g.initializer('projection', proj, y.shape);
  const prod = g.mul(y, r);
  const loss = y.shape.length
    ? g.reduceSum(
        prod,
        y.shape.map((_, i) => i),
        false,
      )
    : prod;
  const diffIdx = specs.map((s, i) => ((s.diff ?? (s.dtype ?? 'float32') === 'float32') ? i : -1)).filter(i => i >= 0);
  const grads = gradients(
    g,
    loss,
    diffIdx.map(i => xs[i]),
  );
  g.output(loss, 'loss');
  grads.forEach((gr, k) => g.output(gr, `grad_${k}`));
  const model = g.toModel();

  const values = specs.map(
    s =>
      s.data ??
      Float32Array.from({ length: size(s.shape) }, () => (s.positive ? Math.abs(rng.normal()) + 0.5 : rng.normal())),
  );
  let shared: ort.InferenceSession | null = null;
  const run = async (vals: typeof values) => {
    const sess = opts.freshSession || !shared ? await createSession(model, { threads: 1 }) : shared;
    if (!opts.freshSession) shared = sess;
    const feeds: Record<string, ort.Tensor> = {};
    specs.forEach((s, i) => {
      feeds[`x${i}`] = new ort.Tensor(s.dtype ?? 'float32', vals[i] as any, s.shape);
    });
    const out = await sess.run(feeds);
    return {
      loss: (out.loss.data as Float32Array)[0],
      grads: diffIdx.map((_, k) => out[`grad_${k}`].data as Float32Array),
    };
  };

  const base = await run(values);
  const failures: string[] = [];
  let worst = 0;
  for (const [k, i] of diffIdx.entries()) {
    for (let d = 0; d < (opts.directions ?? 2); d++) {
      const dir = Float32Array.from({ length: size(specs[i].shape) }, () => rng.normal());
      const shift = (sign: number) =>
        values.map((v, j) => (j === i ? Float32Array.from(v as Float32Array, (x, t) => x + sign * eps * dir[t]) : v));
      const fd = ((await run(shift(1))).loss - (await run(shift(-1))).loss) / (2 * eps);
      let an = 0;
      base.grads[k].forEach((gv, t) => {
        an += gv * dir[t];
      });
      const err = Math.abs(fd - an) / (atol + rtol * Math.max(Math.abs(fd), Math.abs(an)));
      worst = Math.max(worst, err);
      if (err > 1)
        failures.push(
          `input ${i} direction ${d}: finite difference ${fd.toPrecision(6)} vs autodiff ${an.toPrecision(6)}`,
        );
    }
  }
  return { worst, failures };
}
