// One vector-Jacobian rule per ONNX op: given the upstream gradients of a node's outputs,
// emit the gradients of its inputs. Every rule is checked against finite differences (test/autodiff.test.ts).
import { Graph, type Value, type Node, type Shape, type AttrValue, size } from '../graph/graph.ts';

export type Rule = (g: Graph, node: Node, gOut: (Value | null)[], needed: boolean[]) => (Value | null)[];

const intAttr = (n: Node, k: string, d: number) =>
  n.attrs[k] && 'int' in n.attrs[k] ? (n.attrs[k] as { int: number }).int : d;
const intsAttr = (n: Node, k: string) =>
  n.attrs[k] && 'ints' in n.attrs[k] ? (n.attrs[k] as { ints: number[] }).ints : undefined;
const floatAttr = (n: Node, k: string, d: number) =>
  n.attrs[k] && 'float' in n.attrs[k] ? (n.attrs[k] as { float: number }).float : d;
const inp = (g: Graph, n: Node, i: number) => g.value(n.inputs[i]);
const out = (g: Graph, n: Node, i = 0) => g.value(n.outputs[i]);

/** Values of a constant int64 input (axes, shapes, pads). */
function constInts(g: Graph, name: string): number[] {
  const t = g.initializers.find(x => x.name === name);
  if (!t) throw new Error(`${name} must be a constant`);
  return Array.from(t.data as BigInt64Array, Number);
}

/** Sums a broadcast gradient back down to `shape` (the reverse of numpy broadcasting). */
export function sumToShape(g: Graph, grad: Value, shape: Shape): Value {
  if (grad.shape.join() === shape.join()) return grad;
  const lead = grad.shape.length - shape.length;
  const axes: number[] = [];
  grad.shape.forEach((d, i) => {
    if (i < lead || (shape[i - lead] === 1 && d !== 1)) axes.push(i);
  });
  const reduced = axes.length ? g.reduceSum(grad, axes, true) : grad;
  return reduced.shape.join() === shape.join() ? reduced : g.reshape(reduced, shape);
}

const zerosLike = (g: Graph, v: Value) =>
  g.node('ConstantOfShape', [g.ints(v.shape)], {}, undefined, v.shape, 'float32');

/** Gradient of a Slice: place the upstream gradient back into zeros of the input's shape, one axis at a time. */
function unslice(g: Graph, grad: Value, inShape: Shape, starts: number[], axes: number[], steps: number[]): Value {
  let cur = grad;
  axes.forEach((a0, k) => {
    const r = inShape.length,
      a = a0 < 0 ? a0 + r : a0,
      d = inShape[a];
    const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
    const s = clamp(starts[k]),
      n = cur.shape[a];
    const target = cur.shape.map((x, i) => (i === a ? d : x));
    if (steps[k] === 1) {
      const pads = new Array(2 * r).fill(0);
      pads[a] = s;
      pads[a + r] = d - s - n;
      cur = g.pad(cur, pads);
    } else {
      // strided slice: scatter along the axis with a static index tensor
      const idx = new BigInt64Array(size(cur.shape));
      const inner = size(cur.shape.slice(a + 1));
      for (let i = 0; i < idx.length; i++) idx[i] = BigInt(s + steps[k] * (Math.floor(i / inner) % n));
      const indices = g.initializer(g.fresh('scatter_idx'), idx, cur.shape, 'int64');
      const zeros = g.node('ConstantOfShape', [g.ints(target)], {}, undefined, target, 'float32');
      cur = g.node('ScatterElements', [zeros, indices, cur], { axis: { int: a } });
    }
  });
  return cur;
}

const elementwiseMask = (g: Graph, grad: Value, cond: Value) => g.where(cond, grad, g.scalar(0));

export const RULES: Record<string, Rule> = {
  Identity: (_g, _n, [gy]) => [gy],
  Neg: (g, _n, [gy]) => [g.neg(gy!)],
  Add: (g, n, [gy]) => [sumToShape(g, gy!, inp(g, n, 0).shape), sumToShape(g, gy!, inp(g, n, 1).shape)],
  Sub: (g, n, [gy], need) => [
    sumToShape(g, gy!, inp(g, n, 0).shape),
    need[1] ? sumToShape(g, g.neg(gy!), inp(g, n, 1).shape) : null,
  ],
  Mul: (g, n, [gy], need) => {
    const [a, b] = [inp(g, n, 0), inp(g, n, 1)];
    return [
      need[0] ? sumToShape(g, g.mul(gy!, b), a.shape) : null,
      need[1] ? sumToShape(g, g.mul(gy!, a), b.shape) : null,
    ];
  },
  Div: (g, n, [gy], need) => {
    const [a, b, y] = [inp(g, n, 0), inp(g, n, 1), out(g, n)];
    return [
      need[0] ? sumToShape(g, g.div(gy!, b), a.shape) : null,
      need[1] ? sumToShape(g, g.neg(g.div(g.mul(gy!, y), b)), b.shape) : null,
    ];
  },
  Sum: (g, n, [gy]) => n.inputs.map(name => sumToShape(g, gy!, g.value(name).shape)),
  Relu: (g, n, [gy]) => [elementwiseMask(g, gy!, g.greater(out(g, n), g.scalar(0)))],
  Exp: (g, n, [gy]) => [g.mul(gy!, out(g, n))],
  Log: (g, n, [gy]) => [g.div(gy!, inp(g, n, 0))],
  Sqrt: (g, n, [gy]) => [g.div(g.mul(gy!, g.scalar(0.5)), out(g, n))],
  Reciprocal: (g, n, [gy]) => {
    const y = out(g, n);
    return [g.neg(g.mul(gy!, g.mul(y, y)))];
  },
  Tanh: (g, n, [gy]) => {
    const y = out(g, n);
    return [g.mul(gy!, g.sub(g.scalar(1), g.mul(y, y)))];
  },
  Sigmoid: (g, n, [gy]) => {
    const y = out(g, n);
    return [g.mul(gy!, g.mul(y, g.sub(g.scalar(1), y)))];
  },
  Clip: (g, n, [gy]) => {
    const x = inp(g, n, 0);
    let cond: Value | null = null;
    if (n.inputs[1]) cond = g.greaterOrEqual(x, inp(g, n, 1));
    if (n.inputs[2]) {
      const c = g.lessOrEqual(x, inp(g, n, 2));
      cond = cond ? g.and(cond, c) : c;
    }
    return [cond ? elementwiseMask(g, gy!, cond) : gy, null, null];
  },
  Where: (g, n, [gy], need) => {
    const c = inp(g, n, 0),
      zero = g.scalar(0);
    return [
      null,
      need[1] ? sumToShape(g, g.where(c, gy!, zero), inp(g, n, 1).shape) : null,
      need[2] ? sumToShape(g, g.where(c, zero, gy!), inp(g, n, 2).shape) : null,
    ];
  },
  Cast: (g, n, [gy]) => [inp(g, n, 0).dtype === 'float32' && out(g, n).dtype === 'float32' ? gy : null],
  Softmax: (g, n, [gy]) => {
    const y = out(g, n),
      axis = intAttr(n, 'axis', -1);
    return [g.mul(y, g.sub(gy!, g.reduceSum(g.mul(gy!, y), [axis], true)))];
  },
  LogSoftmax: (g, n, [gy]) => {
    const y = out(g, n),
      axis = intAttr(n, 'axis', -1);
    return [g.sub(gy!, g.mul(g.exp(y), g.reduceSum(gy!, [axis], true)))];
  },
  LpNormalization: (g, n, [gy]) => {
    if (intAttr(n, 'p', 2) !== 2) throw new Error('LpNormalization: only p=2 is differentiable here');
    const x = inp(g, n, 0),
      y = out(g, n),
      axis = intAttr(n, 'axis', -1);
    const norm = g.reduceL2(x, [axis], true);
    return [g.div(g.sub(gy!, g.mul(y, g.reduceSum(g.mul(gy!, y), [axis], true))), norm)];
  },
  Reshape: (g, n, [gy]) => [g.reshape(gy!, inp(g, n, 0).shape), null],
  Flatten: (g, n, [gy]) => [g.reshape(gy!, inp(g, n, 0).shape)],
  Expand: (g, n, [gy]) => [sumToShape(g, gy!, inp(g, n, 0).shape), null],
  Transpose: (g, n, [gy]) => {
    const perm = intsAttr(n, 'perm')!;
    const inv = perm.map((_, i) => perm.indexOf(i));
    return [g.transpose(gy!, inv)];
  },
  Concat: (g, n, [gy]) => {
    const axis = intAttr(n, 'axis', 0);
    const ins = n.inputs.map(name => g.value(name));
    const a = axis < 0 ? axis + gy!.shape.length : axis;
    return g.split(
      gy!,
      axis,
      ins.map(v => v.shape[a]),
    );
  },
  Split: (g, n, gys) => {
    const axis = intAttr(n, 'axis', 0);
    const parts = n.outputs.map((name, i) => gys[i] ?? zerosLike(g, g.value(name)));
    return [g.concat(parts, axis), null];
  },
  Slice: (g, n, [gy]) => {
    const x = inp(g, n, 0);
    const starts = constInts(g, n.inputs[1]); // the ends follow from the gradient's extent
    const axes = n.inputs[3] ? constInts(g, n.inputs[3]) : starts.map((_, i) => i);
    const steps = n.inputs[4] ? constInts(g, n.inputs[4]) : starts.map(() => 1);
    return [unslice(g, gy!, x.shape, starts, axes, steps), null, null, null, null];
  },
  Pad: (g, n, [gy]) => {
    const x = inp(g, n, 0),
      pads = constInts(g, n.inputs[1]),
      r = x.shape.length;
    const axes = x.shape.map((_, i) => i).filter(i => pads[i] !== 0 || pads[i + r] !== 0);
    if (axes.some(i => pads[i] < 0 || pads[i + r] < 0))
      throw new Error('Pad: negative pads are not differentiable here');
    return [
      axes.length
        ? g.slice(
            gy!,
            axes.map(i => pads[i]),
            axes.map(i => pads[i] + x.shape[i]),
            axes,
          )
        : gy,
      null,
      null,
    ];
  },
  ReduceSum: (g, n, [gy]) => {
    const x = inp(g, n, 0);
    const axes = constInts(g, n.inputs[1]);
    const kept = x.shape.map((d, i) => (axes.map(a => (a < 0 ? a + x.shape.length : a)).includes(i) ? 1 : d));
    return [g.expand(g.reshape(gy!, kept), x.shape), null];
  },
  ReduceMean: (g, n, [gy]) => {
    const x = inp(g, n, 0);
    const axes = constInts(g, n.inputs[1]).map(a => (a < 0 ? a + x.shape.length : a));
    const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const count = axes.reduce((c, a) => c * x.shape[a], 1);
    return [g.expand(g.reshape(g.mul(gy!, g.scalar(1 / count)), kept), x.shape), null];
  },
  ReduceMax: (g, n, [gy]) => {
    // the gradient is shared equally among tied maxima (a subgradient; ties after a ReLU carry none anyway)
    const x = inp(g, n, 0),
      y = out(g, n);
    const axes = constInts(g, n.inputs[1]).map(a => (a < 0 ? a + x.shape.length : a));
    const kept = x.shape.map((d, i) => (axes.includes(i) ? 1 : d));
    const hit = g.cast(g.equal(x, g.reshape(y, kept)), 'float32');
    const share = g.div(g.reshape(gy!, kept), g.reduceSum(hit, axes, true));
    return [g.mul(hit, share), null];
  },
  MatMul: (g, n, [gy], need) => {
    const [a, b] = [inp(g, n, 0), inp(g, n, 1)];
    const swap = (v: Value) => {
      const r = v.shape.length;
      const p = v.shape.map((_, i) => i);
      [p[r - 2], p[r - 1]] = [p[r - 1], p[r - 2]];
      return g.transpose(v, p);
    };
    return [
      need[0] ? sumToShape(g, g.matmul(gy!, swap(b)), a.shape) : null,
      need[1] ? sumToShape(g, g.matmul(swap(a), gy!), b.shape) : null,
    ];
  },
  Gemm: (g, n, [gy], need) => {
    const [a, b] = [inp(g, n, 0), inp(g, n, 1)];
    const tA = intAttr(n, 'transA', 0) === 1,
      tB = intAttr(n, 'transB', 0) === 1;
    const alpha = floatAttr(n, 'alpha', 1),
      beta = floatAttr(n, 'beta', 1);
    // Y = alpha * op(A) op(B) + beta * C
    const gA = !need[0]
      ? null
      : tA
        ? g.gemm(b, gy!, null, { transA: tB, transB: true, alpha })
        : g.gemm(gy!, b, null, { transB: !tB, alpha });
    const gB = !need[1]
      ? null
      : tB
        ? g.gemm(gy!, a, null, { transA: true, transB: tA, alpha })
        : g.gemm(a, gy!, null, { transA: !tA, alpha });
    let gC: Value | null = null;
    if (n.inputs[2] && need[2]) {
      gC = sumToShape(g, gy!, inp(g, n, 2).shape);
      if (beta !== 1) gC = g.mul(gC, g.scalar(beta));
    }
    return [gA, gB, gC];
  },
  MaxPool: (g, n, [gy]) => {
    if (!n.outputs[1]) throw new Error('MaxPool backward needs the Indices output (use Graph.maxPool)');
    const x = inp(g, n, 0);
    // MaxUnpool sends each gradient to the first maximum of its window (Indices), like PyTorch
    const attrs: Record<string, AttrValue> = { kernel_shape: n.attrs.kernel_shape };
    if (n.attrs.strides) attrs.strides = n.attrs.strides;
    if (n.attrs.pads) attrs.pads = n.attrs.pads;
    return [g.node('MaxUnpool', [gy!, out(g, n, 1), g.ints(x.shape)], attrs, undefined, x.shape)];
  },
  Dropout: (g, n, [gy]) => {
    const ratio = g.initializers.find(t => t.name === n.inputs[1])?.data[0] as number;
    return [g.where(out(g, n, 1), g.mul(gy!, g.scalar(1 / (1 - ratio))), g.scalar(0)), null, null];
  },
  SoftmaxCrossEntropyLoss: (g, n, [gLoss]) => {
    const logits = inp(g, n, 0),
      labels = inp(g, n, 1),
      logp = out(g, n, 1);
    const reduction = n.attrs.reduction && 'string' in n.attrs.reduction ? n.attrs.reduction.string : 'mean';
    const [N, C] = logits.shape;
    const onehot = g.node(
      'OneHot',
      [labels, g.constant([C], [], 'int64'), g.constant([0, 1])],
      { axis: { int: -1 } },
      undefined,
      [N, C],
      'float32',
    );
    let d = g.sub(g.exp(logp), onehot);
    if (reduction === 'none') d = g.mul(d, g.reshape(gLoss!, [N, 1]));
    else d = g.mul(d, reduction === 'mean' ? g.mul(gLoss!, g.scalar(1 / N)) : gLoss!);
    return [d, null, null];
  },
  BatchNormalization: (g, n, [gy], need) => {
    // inference mode: y = (x - mean) * scale / sqrt(var + eps) + bias, channel axis 1
    if (intAttr(n, 'training_mode', 0) !== 0)
      throw new Error('BatchNormalization: use batchNormTraining for training mode');
    const [x, scale, , mean, variance] = [0, 1, 2, 3, 4].map(i => inp(g, n, i));
    const eps = floatAttr(n, 'epsilon', 1e-5);
    const bshape = x.shape.map((d, i) => (i === 1 ? d : 1));
    const invstd = g.reciprocal(g.sqrt(g.add(variance, g.scalar(eps))));
    const axes = x.shape.map((_, i) => i).filter(i => i !== 1);
    const gx = need[0] ? g.mul(gy!, g.reshape(g.mul(scale, invstd), bshape)) : null;
    const xhat = need[1] ? g.mul(g.sub(x, g.reshape(mean, bshape)), g.reshape(invstd, bshape)) : null;
    return [
      gx,
      xhat ? g.reduceSum(g.mul(gy!, xhat), axes, false) : null,
      need[2] ? g.reduceSum(gy!, axes, false) : null,
      null,
      null,
    ];
  },
};
