// A small ONNX graph builder: records nodes with static shapes so that the autodiff pass
// (engine/autodiff) can emit gradient nodes into the same graph, then serialises a ModelProto.
import { DTYPE_CODE, encodeModel, type DType } from './onnx-proto.ts';

export type { DType } from './onnx-proto.ts';
export type Shape = number[];

/** A tensor in the graph: its name, static shape and element type. */
export interface Value {
  readonly name: string;
  readonly shape: Shape;
  readonly dtype: DType;
}

export type AttrValue =
  { int: number } | { float: number } | { ints: number[] } | { floats: number[] } | { string: string };

export interface Node {
  op: string;
  inputs: string[];
  outputs: string[];
  attrs: Record<string, AttrValue>;
}

export interface Initializer {
  name: string;
  dtype: DType;
  shape: Shape;
  data: Float32Array | BigInt64Array | Int32Array | Uint8Array;
}

/** Gradient rule of a composite: upstream gradients of its outputs -> gradients of its inputs. */
export type CompositeVjp = (g: Graph, gradOutputs: (Value | null)[], needed: boolean[]) => (Value | null)[];

/** A group of nodes differentiated as one unit with its own rule (e.g. im2col convolution). */
export interface Composite {
  start: number;
  end: number;
  inputs: Value[];
  outputs: Value[];
  vjp: CompositeVjp;
  label: string;
}

export const OPSET = 18;
export const IR_VERSION = 8;

export const size = (shape: Shape) => shape.reduce((a, b) => a * b, 1);

export function broadcastShapes(a: Shape, b: Shape): Shape {
  const n = Math.max(a.length, b.length);
  const out: Shape = [];
  for (let i = 0; i < n; i++) {
    const x = a[a.length - n + i] ?? 1,
      y = b[b.length - n + i] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Error(`shapes [${a}] and [${b}] do not broadcast`);
    out.push(Math.max(x, y));
  }
  return out;
}

const normAxis = (axis: number, rank: number) => (axis < 0 ? axis + rank : axis);

export class Graph {
  readonly nodes: Node[] = [];
  readonly inputs: Value[] = [];
  readonly outputs: Value[] = [];
  readonly initializers: Initializer[] = [];
  readonly composites: Composite[] = [];
  /** Graph inputs whose first dimension is a symbolic batch size in the saved model. */
  readonly dynamicBatch = new Set<string>();
  private readonly values = new Map<string, Value>();
  private readonly constCache = new Map<string, Value>();
  private counter = 0;

  constructor(readonly name = 'fleet') {}

  value(name: string): Value {
    const v = this.values.get(name);
    if (!v) throw new Error(`unknown tensor ${name}`);
    return v;
  }

  fresh(prefix: string): string {
    return `${prefix}_${this.counter++}`;
  }

  private define(name: string, shape: Shape, dtype: DType): Value {
    if (this.values.has(name)) throw new Error(`tensor ${name} defined twice`);
    const v = { name, shape: [...shape], dtype };
    this.values.set(name, v);
    return v;
  }

  input(name: string, shape: Shape, dtype: DType = 'float32', opts: { dynamicBatch?: boolean } = {}): Value {
    const v = this.define(name, shape, dtype);
    this.inputs.push(v);
    if (opts.dynamicBatch) this.dynamicBatch.add(name);
    return v;
  }

  /** Marks v as a graph output, under `name` if given (adds an Identity when renaming). */
  output(v: Value, name?: string): Value {
    const out = name && name !== v.name ? this.node('Identity', [v], {}, name) : v;
    this.outputs.push(out);
    return out;
  }

  initializer(name: string, data: Initializer['data'], shape: Shape, dtype: DType = 'float32'): Value {
    if (data.length !== size(shape)) throw new Error(`initializer ${name}: ${data.length} values for shape [${shape}]`);
    const v = this.define(name, shape, dtype);
    this.initializers.push({ name, dtype, shape: [...shape], data });
    return v;
  }

  /** A constant tensor, shared when the same values are asked for again. */
  constant(values: number[] | Float32Array, shape: Shape = [values.length], dtype: DType = 'float32'): Value {
    const key = `${dtype}|${shape}|${Array.from(values).join(',')}`;
    const hit = key.length < 400 ? this.constCache.get(key) : undefined;
    if (hit) return hit;
    const data =
      dtype === 'int64'
        ? BigInt64Array.from(Array.from(values), BigInt)
        : dtype === 'float32'
          ? Float32Array.from(values)
          : dtype === 'int32'
            ? Int32Array.from(values)
            : Uint8Array.from(values);
    const v = this.initializer(this.fresh('const'), data, shape, dtype);
    if (key.length < 400) this.constCache.set(key, v);
    return v;
  }

  scalar(x: number, dtype: DType = 'float32'): Value {
    return this.constant([x], [], dtype);
  }
  ints(values: number[]): Value {
    return this.constant(values, [values.length], 'int64');
  }

  /** Adds one node with one output; the output shape is inferred by `outShape`. */
  node(
    op: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue> = {},
    outName?: string,
    outShape?: Shape,
    outDtype?: DType,
  ): Value {
    const [v] = this.nodeN(
      op,
      inputs,
      attrs,
      1,
      outName ? [outName] : undefined,
      outShape ? [outShape] : undefined,
      outDtype ? [outDtype] : undefined,
    );
    return v;
  }

  nodeN(
    op: string,
    inputs: (Value | null)[],
    attrs: Record<string, AttrValue>,
    nOut: number,
    outNames?: string[],
    outShapes?: Shape[],
    outDtypes?: DType[],
  ): Value[] {
    const shapes = outShapes ?? [inferShape(this, op, inputs, attrs)];
    const outs: Value[] = [];
    for (let i = 0; i < nOut; i++) {
      const dtype = outDtypes?.[i] ?? inferDtype(op, inputs);
      outs.push(this.define(outNames?.[i] ?? this.fresh(op.toLowerCase()), shapes[i] ?? shapes[0], dtype));
    }
    this.nodes.push({ op, inputs: inputs.map(v => (v ? v.name : '')), outputs: outs.map(o => o.name), attrs });
    return outs;
  }

  /** Records the nodes `body` adds as one unit with a custom gradient rule. */
  composite(label: string, inputs: Value[], body: () => Value[], vjp: (saved: Value[]) => CompositeVjp): Value[] {
    const start = this.nodes.length;
    const outputs = body();
    this.composites.push({ start, end: this.nodes.length, inputs, outputs, vjp: vjp(outputs), label });
    return outputs;
  }

  // ---- elementwise ----
  add(a: Value, b: Value) {
    return this.node('Add', [a, b]);
  }
  sub(a: Value, b: Value) {
    return this.node('Sub', [a, b]);
  }
  mul(a: Value, b: Value) {
    return this.node('Mul', [a, b]);
  }
  div(a: Value, b: Value) {
    return this.node('Div', [a, b]);
  }
  neg(x: Value) {
    return this.node('Neg', [x]);
  }
  relu(x: Value) {
    return this.node('Relu', [x]);
  }
  exp(x: Value) {
    return this.node('Exp', [x]);
  }
  log(x: Value) {
    return this.node('Log', [x]);
  }
  sqrt(x: Value) {
    return this.node('Sqrt', [x]);
  }
  tanh(x: Value) {
    return this.node('Tanh', [x]);
  }
  sigmoid(x: Value) {
    return this.node('Sigmoid', [x]);
  }
  reciprocal(x: Value) {
    return this.node('Reciprocal', [x]);
  }
  sum(xs: Value[]) {
    return xs.length === 1 ? xs[0] : this.node('Sum', xs);
  }
  clip(x: Value, min: number, max: number) {
    return this.node('Clip', [x, this.scalar(min), this.scalar(max)]);
  }
  greater(a: Value, b: Value) {
    return this.node('Greater', [a, b]);
  }
  greaterOrEqual(a: Value, b: Value) {
    return this.node('GreaterOrEqual', [a, b]);
  }
  lessOrEqual(a: Value, b: Value) {
    return this.node('LessOrEqual', [a, b]);
  }
  equal(a: Value, b: Value) {
    return this.node('Equal', [a, b]);
  }
  and(a: Value, b: Value) {
    return this.node('And', [a, b]);
  }
  where(c: Value, a: Value, b: Value) {
    return this.node('Where', [c, a, b]);
  }
  cast(x: Value, to: DType) {
    return this.node('Cast', [x], { to: { int: DTYPE_CODE[to] } }, undefined, x.shape, to);
  }

  // ---- shape ----
  reshape(x: Value, shape: Shape) {
    return this.node('Reshape', [x, this.ints(shape)]);
  }
  flatten(x: Value, axis = 1) {
    return this.node('Flatten', [x], { axis: { int: axis } });
  }
  transpose(x: Value, perm: number[]) {
    return this.node('Transpose', [x], { perm: { ints: perm } });
  }
  expand(x: Value, shape: Shape) {
    return this.node('Expand', [x, this.ints(shape)]);
  }
  concat(xs: Value[], axis: number) {
    return xs.length === 1 ? xs[0] : this.node('Concat', xs, { axis: { int: axis } });
  }
  split(x: Value, axis: number, sizes: number[]): Value[] {
    const ax = normAxis(axis, x.shape.length);
    const shapes = sizes.map(s => x.shape.map((d, i) => (i === ax ? s : d)));
    return this.nodeN('Split', [x, this.ints(sizes)], { axis: { int: axis } }, sizes.length, undefined, shapes);
  }
  slice(x: Value, starts: number[], ends: number[], axes: number[], steps?: number[]) {
    const ins = [x, this.ints(starts), this.ints(ends), this.ints(axes)];
    if (steps) ins.push(this.ints(steps));
    return this.node('Slice', ins);
  }
  pad(x: Value, pads: number[], value = 0) {
    return this.node('Pad', [x, this.ints(pads), this.scalar(value, x.dtype)]);
  }

  // ---- reductions ----
  reduceSum(x: Value, axes: number[], keepdims = true) {
    return this.node('ReduceSum', [x, this.ints(axes)], { keepdims: { int: keepdims ? 1 : 0 } });
  }
  reduceMean(x: Value, axes: number[], keepdims = true) {
    return this.node('ReduceMean', [x, this.ints(axes)], { keepdims: { int: keepdims ? 1 : 0 } });
  }
  reduceMax(x: Value, axes: number[], keepdims = true) {
    return this.node('ReduceMax', [x, this.ints(axes)], { keepdims: { int: keepdims ? 1 : 0 } });
  }
  reduceL2(x: Value, axes: number[], keepdims = true) {
    return this.node('ReduceL2', [x, this.ints(axes)], { keepdims: { int: keepdims ? 1 : 0 } });
  }
  argMax(x: Value, axis: number, keepdims = false) {
    return this.node('ArgMax', [x], { axis: { int: axis }, keepdims: { int: keepdims ? 1 : 0 } });
  }

  // ---- neural network ops ----
  matmul(a: Value, b: Value) {
    return this.node('MatMul', [a, b]);
  }
  gemm(
    a: Value,
    b: Value,
    c: Value | null,
    o: { transA?: boolean; transB?: boolean; alpha?: number; beta?: number } = {},
  ) {
    const attrs: Record<string, AttrValue> = {};
    if (o.transA) attrs.transA = { int: 1 };
    if (o.transB) attrs.transB = { int: 1 };
    if (o.alpha !== undefined && o.alpha !== 1) attrs.alpha = { float: o.alpha };
    if (o.beta !== undefined && o.beta !== 1) attrs.beta = { float: o.beta };
    return this.node('Gemm', c ? [a, b, c] : [a, b], attrs);
  }
  softmax(x: Value, axis = -1) {
    return this.node('Softmax', [x], { axis: { int: axis } });
  }
  logSoftmax(x: Value, axis = -1) {
    return this.node('LogSoftmax', [x], { axis: { int: axis } });
  }
  l2Normalize(x: Value, axis = -1) {
    return this.node('LpNormalization', [x], { axis: { int: axis }, p: { int: 2 } });
  }

  /** MaxPool with its Indices output (flat over the whole input), which the backward pass routes through. */
  maxPool(x: Value, kernel: number[], strides: number[], pads: number[]): [Value, Value] {
    const [y, idx] = this.nodeN(
      'MaxPool',
      [x],
      { kernel_shape: { ints: kernel }, strides: { ints: strides }, pads: { ints: pads } },
      2,
      undefined,
      undefined,
      ['float32', 'int64'],
    );
    return [y, idx];
  }

  conv(x: Value, w: Value, b: Value | null, o: { strides?: number[]; pads?: number[] } = {}) {
    const attrs: Record<string, AttrValue> = { kernel_shape: { ints: w.shape.slice(2) } };
    if (o.strides) attrs.strides = { ints: o.strides };
    if (o.pads) attrs.pads = { ints: o.pads };
    return this.node('Conv', b ? [x, w, b] : [x, w], attrs);
  }

  /** Dropout in training mode; returns the output and the boolean keep-mask. */
  dropout(x: Value, ratio: number, seed: number): [Value, Value] {
    const [y, m] = this.nodeN(
      'Dropout',
      [x, this.scalar(ratio), this.constant([1], [], 'bool')],
      { seed: { int: seed } },
      2,
      undefined,
      [x.shape, x.shape],
      ['float32', 'bool'],
    );
    return [y, m];
  }

  /** Softmax cross-entropy on logits [N, C] with int64 labels [N]; returns the loss and the log-probabilities. */
  softmaxCrossEntropy(logits: Value, labels: Value, reduction: 'mean' | 'sum' | 'none' = 'mean'): [Value, Value] {
    const lossShape = reduction === 'none' ? [logits.shape[0]] : [];
    const [loss, logp] = this.nodeN(
      'SoftmaxCrossEntropyLoss',
      [logits, labels],
      { reduction: { string: reduction } },
      2,
      undefined,
      [lossShape, logits.shape],
      ['float32', 'float32'],
    );
    return [loss, logp];
  }

  // ---- serialisation ----
  toModel(opts: { docString?: string; metadata?: Record<string, string> } = {}): Uint8Array {
    const valueInfo = (v: Value) => ({
      name: v.name,
      type: {
        tensorType: {
          elemType: DTYPE_CODE[v.dtype],
          shape: {
            dim: v.shape.map((d, i) =>
              i === 0 && this.dynamicBatch.size > 0 && this.isBatched(v) ? { dimParam: 'N' } : { dimValue: d },
            ),
          },
        },
      },
    });
    const attr = (name: string, a: AttrValue) => {
      if ('int' in a) return { name, type: 2, i: a.int };
      if ('float' in a) return { name, type: 1, f: a.float };
      if ('ints' in a) return { name, type: 7, ints: a.ints };
      if ('floats' in a) return { name, type: 6, floats: a.floats };
      return { name, type: 3, s: Buffer.from(a.string) };
    };
    const tensor = (t: Initializer) => ({
      name: t.name,
      dims: t.shape,
      dataType: DTYPE_CODE[t.dtype],
      rawData: Buffer.from(t.data.buffer, t.data.byteOffset, t.data.byteLength),
    });
    return encodeModel({
      irVersion: IR_VERSION,
      opsetImport: [{ domain: '', version: OPSET }],
      producerName: 'fleet',
      producerVersion: '0.1.0',
      docString: opts.docString ?? '',
      metadataProps: Object.entries(opts.metadata ?? {}).map(([key, value]) => ({ key, value })),
      graph: {
        name: this.name,
        node: this.nodes.map((n, i) => ({
          name: `n${i}_${n.op}`,
          opType: n.op,
          input: n.inputs,
          output: n.outputs,
          attribute: Object.entries(n.attrs).map(([k, a]) => attr(k, a)),
        })),
        initializer: this.initializers.map(tensor),
        input: this.inputs.map(valueInfo),
        output: this.outputs.map(valueInfo),
      },
    });
  }

  /** Outputs share the symbolic batch dimension when the graph declares one (first dim of a dynamic input). */
  private isBatched(v: Value): boolean {
    if (this.dynamicBatch.has(v.name)) return true;
    const batch = this.inputs.find(i => this.dynamicBatch.has(i.name))?.shape[0];
    return this.outputs.includes(v) && v.shape.length > 0 && v.shape[0] === batch;
  }
}

// ---- static shape inference for the ops the builder emits ----

function inferDtype(op: string, inputs: (Value | null)[]): DType {
  if (['Greater', 'GreaterOrEqual', 'LessOrEqual', 'Equal', 'And'].includes(op)) return 'bool';
  if (op === 'ArgMax') return 'int64';
  if (op === 'Where') return inputs[1]!.dtype;
  return inputs[0]?.dtype ?? 'float32';
}

function constInts(g: Graph, v: Value | null): number[] {
  if (!v) throw new Error('missing constant input');
  const init = g.initializers.find(t => t.name === v.name);
  if (!init) throw new Error(`${v.name} must be a constant for static shape inference`);
  return Array.from(init.data as BigInt64Array, Number);
}

function reduceShape(shape: Shape, axes: number[], keep: boolean): Shape {
  const ax = axes.map(a => normAxis(a, shape.length));
  return keep ? shape.map((d, i) => (ax.includes(i) ? 1 : d)) : shape.filter((_, i) => !ax.includes(i));
}

function inferShape(g: Graph, op: string, ins: (Value | null)[], attrs: Record<string, AttrValue>): Shape {
  const x = ins[0]!;
  const int = (k: string, d: number) => (attrs[k] && 'int' in attrs[k] ? (attrs[k] as { int: number }).int : d);
  const ints = (k: string) => (attrs[k] && 'ints' in attrs[k] ? (attrs[k] as { ints: number[] }).ints : undefined);
  switch (op) {
    case 'Add':
    case 'Sub':
    case 'Mul':
    case 'Div':
    case 'Greater':
    case 'GreaterOrEqual':
    case 'LessOrEqual':
    case 'Equal':
    case 'And':
      return broadcastShapes(x.shape, ins[1]!.shape);
    case 'Where':
      return broadcastShapes(broadcastShapes(x.shape, ins[1]!.shape), ins[2]!.shape);
    case 'Sum':
    case 'Max':
      return ins.reduce((s, v) => broadcastShapes(s, v!.shape), [] as Shape);
    case 'Neg':
    case 'Relu':
    case 'Exp':
    case 'Log':
    case 'Sqrt':
    case 'Tanh':
    case 'Sigmoid':
    case 'Reciprocal':
    case 'Identity':
    case 'Clip':
    case 'Softmax':
    case 'LogSoftmax':
    case 'LpNormalization':
    case 'Abs':
      return x.shape;
    case 'Reshape': {
      const target = constInts(g, ins[1]);
      const out = target.map((d, i) => (d === 0 ? x.shape[i] : d));
      const known = out.filter(d => d !== -1).reduce((a, b) => a * b, 1);
      const res = out.map(d => (d === -1 ? size(x.shape) / known : d));
      if (size(res) !== size(x.shape)) throw new Error(`cannot reshape [${x.shape}] to [${target}]`);
      return res;
    }
    case 'Flatten': {
      const a = normAxis(int('axis', 1), x.shape.length);
      return [size(x.shape.slice(0, a)), size(x.shape.slice(a))];
    }
    case 'Transpose':
      return ints('perm')!.map(p => x.shape[p]);
    case 'Expand':
      return broadcastShapes(x.shape, constInts(g, ins[1]));
    case 'Concat': {
      const a = normAxis(int('axis', 0), x.shape.length);
      return x.shape.map((d, i) => (i === a ? ins.reduce((s, v) => s + v!.shape[i], 0) : d));
    }
    case 'Slice': {
      const [starts, ends, axes] = [constInts(g, ins[1]), constInts(g, ins[2]), constInts(g, ins[3])];
      const steps = ins[4] ? constInts(g, ins[4]) : starts.map(() => 1);
      const out = [...x.shape];
      axes.forEach((a0, k) => {
        const a = normAxis(a0, x.shape.length),
          d = x.shape[a];
        const clamp = (v: number) => Math.min(Math.max(v < 0 ? v + d : v, 0), d);
        const s = clamp(starts[k]),
          e = clamp(ends[k]);
        if (steps[k] <= 0) throw new Error('Slice: only positive steps are supported');
        out[a] = Math.max(0, Math.ceil((e - s) / steps[k]));
      });
      return out;
    }
    case 'Pad': {
      const pads = constInts(g, ins[1]),
        r = x.shape.length;
      return x.shape.map((d, i) => d + pads[i] + pads[i + r]);
    }
    case 'ReduceSum':
    case 'ReduceMean':
    case 'ReduceL2':
    case 'ReduceMax':
    case 'ReduceSumSquare':
      return reduceShape(x.shape, constInts(g, ins[1]), int('keepdims', 1) === 1);
    case 'ArgMax':
      return reduceShape(x.shape, [int('axis', 0)], int('keepdims', 1) === 1);
    case 'MatMul': {
      const a = x.shape,
        b = ins[1]!.shape;
      if (a.length < 2 || b.length < 2) throw new Error('MatMul: operands must have rank >= 2');
      if (a[a.length - 1] !== b[b.length - 2]) throw new Error(`MatMul: [${a}] x [${b}]`);
      const batch = broadcastShapes(a.slice(0, -2), b.slice(0, -2));
      return [...batch, a[a.length - 2], b[b.length - 1]];
    }
    case 'Gemm': {
      const a = x.shape,
        b = ins[1]!.shape;
      const [m, k] = int('transA', 0) ? [a[1], a[0]] : [a[0], a[1]];
      const [k2, n] = int('transB', 0) ? [b[1], b[0]] : [b[0], b[1]];
      if (k !== k2) throw new Error(`Gemm: inner dimensions ${k} and ${k2} differ`);
      return [m, n];
    }
    case 'MaxPool':
    case 'Conv': {
      const k = ints('kernel_shape') ?? ins[1]!.shape.slice(2);
      const s = ints('strides') ?? k.map(() => 1);
      const p = ints('pads') ?? [...k, ...k].map(() => 0);
      const sp = x.shape.slice(2);
      const r = k.length;
      const outSp = sp.map((d, i) => Math.floor((d + p[i] + p[i + r] - k[i]) / s[i]) + 1);
      return [x.shape[0], op === 'Conv' ? ins[1]!.shape[0] : x.shape[1], ...outSp];
    }
    case 'BatchNormalization':
      return x.shape;
    case 'ScatterElements':
      return x.shape;
    default:
      throw new Error(`no shape rule for op ${op}`);
  }
}
