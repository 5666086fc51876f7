// Training and evaluation graphs for a classifier whose parameters and buffers are graph inputs.
// Train:    x, labels, params, buffers -> loss (mean), correct, grad.<param>..., new.<buffer>...
// Evaluate: x, labels, params, buffers -> loss_sum, correct, probabilities
import { Graph, type Value } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { correctCount } from '../losses.ts';
import type { TensorSpec } from '../model/params.ts';
import type { TrainContext } from '../model/cnn.ts';

export interface ClassifierDef {
  name: string;
  params(): TensorSpec[];
  buffers(): TensorSpec[];
  /** Logits [N, classes] from input [N, 1, 28, 28]. */
  forward(ctx: TrainContext, x: Value): Value;
  classes: number;
}

export interface GraphOptions {
  /** Base seed of the in-graph dropout generators. */
  seed?: number;
}

function context(g: Graph, def: ClassifierDef, training: boolean, seed: number) {
  const params = new Map<string, Value>(), buffers = new Map<string, Value>(), updates = new Map<string, Value>();
  let dropouts = 0;
  for (const s of def.params()) params.set(s.name, g.input(s.name, s.shape));
  for (const s of def.buffers()) buffers.set(s.name, g.input(s.name, s.shape));
  const ctx: TrainContext = {
    g, training,
    param: name => params.get(name) ?? (() => { throw new Error(`${def.name}: unknown parameter ${name}`); })(),
    buffer: name => buffers.get(name) ?? (() => { throw new Error(`${def.name}: unknown buffer ${name}`); })(),
    updateBuffer: (name, v) => { updates.set(name, v); },
    dropout: (x, p) => (training && p > 0 ? g.dropout(x, p, (seed * 7919 + ++dropouts) % 2147483647)[0] : x),
  };
  return { ctx, params, updates };
}

export function buildTrainGraph(def: ClassifierDef, batch: number, opts: GraphOptions = {}): Uint8Array {
  const g = new Graph(`${def.name}_train`);
  const x = g.input('x', [batch, 1, 28, 28]);
  const labels = g.input('labels', [batch], 'int64');
  const { ctx, params, updates } = context(g, def, true, opts.seed ?? 0);
  const logits = def.forward(ctx, x);
  const [loss] = g.softmaxCrossEntropy(logits, labels, 'mean');
  const names = [...params.keys()];
  const grads = gradients(g, loss, names.map(n => params.get(n)!));
  g.output(loss, 'loss');
  g.output(correctCount(g, logits, labels), 'correct');
  names.forEach((n, i) => g.output(grads[i], `grad.${n}`));
  for (const s of def.buffers()) g.output(updates.get(s.name) ?? ctx.buffer(s.name), `new.${s.name}`);
  return g.toModel();
}

export function buildEvalGraph(def: ClassifierDef, batch: number): Uint8Array {
  const g = new Graph(`${def.name}_eval`);
  const x = g.input('x', [batch, 1, 28, 28]);
  const labels = g.input('labels', [batch], 'int64');
  const { ctx } = context(g, def, false, 0);
  const logits = def.forward(ctx, x);
  const [lossSum] = g.softmaxCrossEntropy(logits, labels, 'sum');
  g.output(lossSum, 'loss_sum');
  g.output(correctCount(g, logits, labels), 'correct');
  g.output(g.softmax(logits, 1), 'probabilities');
  return g.toModel();
}
