// The TrainContext of a graph whose parameters and buffers are graph inputs (training and evaluation graphs).
import type { Graph, Value } from '../graph/graph.ts';
import type { TensorSpec } from '../model/params.ts';
import type { TrainContext } from '../model/cnn.ts';

export interface GraphContext {
  ctx: TrainContext;
  params: Map<string, Value>;
  updates: Map<string, Value>;
}

export function graphContext(
  g: Graph,
  paramSpecs: TensorSpec[],
  bufferSpecs: TensorSpec[],
  training: boolean,
  seed: number,
  label = g.name,
): GraphContext {
  const params = new Map<string, Value>(),
    buffers = new Map<string, Value>(),
    updates = new Map<string, Value>();
  let dropouts = 0;
  for (const s of paramSpecs) params.set(s.name, g.input(s.name, s.shape));
  for (const s of bufferSpecs) buffers.set(s.name, g.input(s.name, s.shape));
  const lookup = (m: Map<string, Value>, kind: string, name: string) => {
    const v = m.get(name);
    if (!v) throw new Error(`${label}: unknown ${kind} ${name}`);
    return v;
  };
  const ctx: TrainContext = {
    g,
    training,
    param: name => lookup(params, 'parameter', name),
    buffer: name => lookup(buffers, 'buffer', name),
    updateBuffer: (name, v) => {
      updates.set(name, v);
    },
    // a distinct seed per dropout site; the trainer reseeds per epoch (see ModelRunner.reseed)
    dropout: (x, p) => (training && p > 0 ? g.dropout(x, p, (seed * 7919 + ++dropouts) % 2147483647)[0] : x),
  };
  return { ctx, params, updates };
}

/** Outputs "grad.<param>" for each parameter and "new.<buffer>" for each buffer (updated or unchanged). */
export function outputGradientsAndBuffers(g: Graph, gc: GraphContext, grads: Value[], bufferSpecs: TensorSpec[]): void {
  [...gc.params.keys()].forEach((n, i) => g.output(grads[i], `grad.${n}`));
  for (const s of bufferSpecs) g.output(gc.updates.get(s.name) ?? gc.ctx.buffer(s.name), `new.${s.name}`);
}
