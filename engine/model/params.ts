// Named parameter and buffer tensors, initialised like PyTorch's defaults.
import { Rng } from '../util/random.ts';
import { size } from '../graph/graph.ts';

export type Init =
  | { kind: 'uniform'; bound: number } // kaiming_uniform(a=sqrt(5)) and bias defaults: U(-1/sqrt(fan_in), 1/sqrt(fan_in))
  | { kind: 'const'; value: number };

export interface TensorSpec {
  name: string;
  shape: number[];
  init: Init;
  /** Weight decay applies (weights yes; biases and BatchNorm parameters no). */
  decay?: boolean;
}

/** PyTorch's default initialisation for Linear and Conv weights and biases. */
export const fanInUniform = (fanIn: number): Init => ({ kind: 'uniform', bound: 1 / Math.sqrt(fanIn) });

/** A set of named float tensors (parameters, or buffers such as running statistics). */
export class TensorSet {
  readonly names: string[];
  readonly shapes: number[][];
  readonly data: Float32Array[];

  constructor(specs: TensorSpec[], data?: Float32Array[]) {
    this.names = specs.map(s => s.name);
    this.shapes = specs.map(s => s.shape);
    this.data = data ?? specs.map(s => new Float32Array(size(s.shape)));
  }

  static init(specs: TensorSpec[], seed: number): TensorSet {
    const rng = new Rng(seed);
    const set = new TensorSet(specs);
    specs.forEach((s, i) => {
      const a = set.data[i];
      if (s.init.kind === 'const') a.fill(s.init.value);
      else for (let k = 0; k < a.length; k++) a[k] = (rng.next() * 2 - 1) * s.init.bound;
    });
    return set;
  }

  get(name: string): Float32Array {
    const i = this.names.indexOf(name);
    if (i < 0) throw new Error(`no tensor named ${name}`);
    return this.data[i];
  }

  clone(): TensorSet {
    return new TensorSet(
      this.names.map((name, i) => ({ name, shape: this.shapes[i], init: { kind: 'const', value: 0 } })),
      this.data.map(d => d.slice()),
    );
  }

  count(): number {
    return this.data.reduce((n, d) => n + d.length, 0);
  }
}
