// Training and evaluation graphs for a classifier whose parameters and buffers are graph inputs.
// Train:    x, labels, params, buffers -> loss (mean), correct, grad.<param>..., new.<buffer>...
// Evaluate: x, labels, params, buffers -> loss_sum, correct, probabilities
import { Graph, type Value } from '../graph/graph.ts';
import { gradients } from '../autodiff/autodiff.ts';
import { correctCount } from '../losses.ts';
import type { TensorSpec } from '../model/params.ts';
import type { TrainContext } from '../model/cnn.ts';
import { graphContext, outputGradientsAndBuffers } from './graph-context.ts';

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

export function buildTrainGraph(def: ClassifierDef, batch: number, opts: GraphOptions = {}): Uint8Array {
  const g = new Graph(`${def.name}_train`);
  const x = g.input('x', [batch, 1, 28, 28]);
  const labels = g.input('labels', [batch], 'int64');
  const gc = graphContext(g, def.params(), def.buffers(), true, opts.seed ?? 0);
  const logits = def.forward(gc.ctx, x);
  const [loss] = g.softmaxCrossEntropy(logits, labels, 'mean');
  const grads = gradients(g, loss, [...gc.params.values()]);
  g.output(loss, 'loss');
  g.output(correctCount(g, logits, labels), 'correct');
  outputGradientsAndBuffers(g, gc, grads, def.buffers());
  return g.toModel();
}

export function buildEvalGraph(def: ClassifierDef, batch: number): Uint8Array {
  const g = new Graph(`${def.name}_eval`);
  const x = g.input('x', [batch, 1, 28, 28]);
  const labels = g.input('labels', [batch], 'int64');
  const logits = def.forward(graphContext(g, def.params(), def.buffers(), false, 0).ctx, x);
  const [lossSum] = g.softmaxCrossEntropy(logits, labels, 'sum');
  g.output(lossSum, 'loss_sum');
  g.output(correctCount(g, logits, labels), 'correct');
  g.output(g.softmax(logits, 1), 'probabilities');
  return g.toModel();
}
