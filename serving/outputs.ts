// Building a ModelInferResponse from a model's output tensors: only the requested outputs (all when none are
// named), as raw_output_contents when the request sent raw inputs (what Triton's clients read) and as typed
// contents (fp32_contents, int64_contents) otherwise.
import { invalid } from './errors.ts';
import type { InferOutputTensor, ModelInferRequest, ModelInferResponse, Parameters } from './protocol.ts';

export interface OutputTensor {
  name: string;
  datatype: 'FP32' | 'INT64';
  shape: number[];
  data: Float32Array | Int32Array;
}

/** The outputs the request asks for, in the order asked; an unknown name is INVALID_ARGUMENT. */
export function selectOutputs(req: ModelInferRequest, available: OutputTensor[]): OutputTensor[] {
  const wanted = req.outputs ?? [];
  if (wanted.length === 0) return available;
  return wanted.map(w => {
    const t = available.find(o => o.name === w.name);
    if (!t) throw invalid(`unknown output "${w.name}": this model has ${available.map(o => `"${o.name}"`).join(', ')}`);
    return t;
  });
}

function rawBytes(t: OutputTensor): Uint8Array {
  if (t.datatype === 'FP32') return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return new Uint8Array(BigInt64Array.from(t.data as Int32Array, v => BigInt(v)).buffer);
}

export function buildResponse(req: ModelInferRequest, version: string, outputs: OutputTensor[], raw: boolean, parameters: Parameters = {}): ModelInferResponse {
  const tensors: InferOutputTensor[] = outputs.map(t => ({
    name: t.name, datatype: t.datatype, shape: t.shape, parameters: {},
    contents: raw ? null : t.datatype === 'FP32' ? { fp32_contents: Array.from(t.data) } : { int64_contents: Array.from(t.data) },
  }));
  return {
    model_name: req.model_name, model_version: version, id: req.id ?? '', parameters,
    outputs: tensors, raw_output_contents: raw ? outputs.map(rawBytes) : [],
  };
}

/** Reads an output back from a response, typed or raw (clients: fleet predict, the ensemble's remote members, tests). */
export function readOutput(res: ModelInferResponse, name: string): { shape: number[]; data: Float32Array | number[] } {
  const i = res.outputs.findIndex(o => o.name === name);
  if (i < 0) throw new Error(`the response has no output "${name}" (it has ${res.outputs.map(o => o.name).join(', ') || 'none'})`);
  const o = res.outputs[i];
  const shape = o.shape.map(Number);
  const raw = res.raw_output_contents?.[i];
  if (raw && raw.length) {
    const b = new Uint8Array(raw); // a copy: a Buffer's slice() is a view into a shared pool
    if (o.datatype === 'FP32') return { shape, data: new Float32Array(b.buffer, 0, b.length / 4) };
    if (o.datatype === 'INT64') return { shape, data: Array.from(new BigInt64Array(b.buffer, 0, b.length / 8), Number) };
    throw new Error(`output "${name}": datatype ${o.datatype} is not read here`);
  }
  if (o.datatype === 'FP32') return { shape, data: Float32Array.from(o.contents?.fp32_contents ?? []) };
  return { shape, data: (o.contents?.int64_contents ?? []).map(Number) };
}
