// Reverse-mode automatic differentiation over a recorded Graph: walks the nodes backwards and
// emits each op's vector-Jacobian product as ONNX nodes into the same graph.
import { Graph, type Value, type Composite, type Node } from '../graph/graph.ts';
import { RULES } from './rules.ts';

/** A unit of the backward walk: a single node, or a composite with its own rule. */
type Unit = { kind: 'node'; node: Node } | { kind: 'composite'; c: Composite };

function units(g: Graph): Unit[] {
  const byStart = new Map(g.composites.map(c => [c.start, c]));
  const out: Unit[] = [];
  for (let i = 0; i < g.nodes.length;) {
    const c = byStart.get(i);
    if (c) {
      out.push({ kind: 'composite', c });
      i = c.end;
    } else {
      out.push({ kind: 'node', node: g.nodes[i] });
      i++;
    }
  }
  return out;
}

const unitInputs = (g: Graph, u: Unit) =>
  u.kind === 'node' ? u.node.inputs.map(n => (n ? g.value(n) : null)) : u.c.inputs;
const unitOutputs = (g: Graph, u: Unit) => (u.kind === 'node' ? u.node.outputs.map(n => g.value(n)) : u.c.outputs);

/**
 * Emits the gradients of `output` with respect to each of `wrt`.
 * The seed is dL/dL = 1 for a scalar output, or `seed` (a graph input holding an upstream gradient).
 * Tensors used several times get the sum of their gradient contributions.
 * A parameter the output does not depend on gets an all-zero gradient.
 */
export function gradients(g: Graph, output: Value, wrt: Value[], seed?: Value): Value[] {
  const all = units(g);
  // forward: which tensors depend on a wrt tensor
  const depends = new Set(wrt.map(v => v.name));
  for (const u of all) {
    if (unitInputs(g, u).some(v => v && depends.has(v.name))) for (const o of unitOutputs(g, u)) depends.add(o.name);
  }
  if (!depends.has(output.name)) throw new Error(`${output.name} does not depend on any of the requested tensors`);

  const contributions = new Map<string, Value[]>();
  const push = (name: string, v: Value) => {
    const l = contributions.get(name);
    l ? l.push(v) : contributions.set(name, [v]);
  };
  if (seed) {
    if (seed.shape.join() !== output.shape.join())
      throw new Error(`seed shape [${seed.shape}] differs from [${output.shape}]`);
    push(output.name, seed);
  } else {
    if (output.shape.reduce((a, b) => a * b, 1) !== 1)
      throw new Error(`${output.name} is not a scalar: pass a seed gradient`);
    push(output.name, g.constant([1], output.shape));
  }
  const total = (name: string): Value | null => {
    const l = contributions.get(name);
    if (!l) return null;
    if (l.length > 1) contributions.set(name, [g.sum(l)]);
    return contributions.get(name)![0];
  };

  for (let k = all.length - 1; k >= 0; k--) {
    const u = all[k];
    const outs = unitOutputs(g, u);
    const gOut = outs.map(o => total(o.name));
    if (gOut.every(x => x === null)) continue;
    const ins = unitInputs(g, u);
    const needed = ins.map(v => !!v && depends.has(v.name));
    if (!needed.some(Boolean)) continue;
    let gIn: (Value | null)[];
    if (u.kind === 'composite') {
      gIn = u.c.vjp(g, gOut, needed);
    } else {
      const rule = RULES[u.node.op];
      if (!rule) throw new Error(`no gradient rule for op ${u.node.op}`);
      gIn = rule(g, u.node, gOut, needed);
    }
    ins.forEach((v, i) => {
      if (v && needed[i] && gIn[i]) {
        if (gIn[i]!.shape.join() !== v.shape.join()) {
          throw new Error(
            `gradient rule of ${u.kind === 'node' ? u.node.op : u.c.label} gave shape [${gIn[i]!.shape}] for ${v.name} [${v.shape}]`,
          );
        }
        push(v.name, gIn[i]!);
      }
    });
  }
  return wrt.map(v => total(v.name) ?? g.node('ConstantOfShape', [g.ints(v.shape)], {}, undefined, v.shape, 'float32'));
}
