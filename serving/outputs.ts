// Building a ModelInferResponse from a model's output tensors: only the requested outputs (all when none are
// named), as raw_output_contents when the request sent raw inputs (what Triton's clients read) and as typed
// contents (fp32_contents, int64_contents) otherwise.
import { invalid, quote, tooLarge } from './errors.ts';
import type { InferOutputTensor, ModelInferRequest, ModelInferResponse, Parameters } from './protocol.ts';

export interface OutputTensor {
  name: string;
  datatype: 'FP32' | 'INT64';
  shape: number[];
  data: Float32Array | Int32Array;
}

/**
 * Checks the outputs a request names against the model's before anything runs: an unknown or repeated name, or
 * more names than the model has outputs, is INVALID_ARGUMENT (a name repeated 100,000 times would otherwise
 * build a response of 100,000 copies of the tensor).
 */
export function checkRequestedOutputs(req: ModelInferRequest, names: string[]): void {
  const wanted = req.outputs ?? [];
  if (wanted.length > names.length) {
    const list = names.map(n => `"${n}"`).join(', ');
    throw invalid(`the request names ${wanted.length} outputs; this model has ${names.length} (${list})`);
  }
  const seen = new Set<string>();
  for (const w of wanted) {
    if (!names.includes(w?.name)) {
      throw invalid(`unknown output ${quote(w?.name)}: this model has ${names.map(n => `"${n}"`).join(', ')}`);
    }
    if (seen.has(w.name)) throw invalid(`output "${w.name}" is named more than once`);
    seen.add(w.name);
  }
}

/** The outputs the request asks for, in the order asked (all when none are named); checked as above. */
export function selectOutputs(req: ModelInferRequest, available: OutputTensor[]): OutputTensor[] {
  checkRequestedOutputs(
    req,
    available.map(o => o.name),
  );
  const wanted = req.outputs ?? [];
  if (wanted.length === 0) return available;
  return wanted.map(w => available.find(o => o.name === w.name)!);
}

/** Bytes the outputs take on the wire (raw; typed contents are about the same); refused above maxBytes. */
export function checkResponseSize(outputs: OutputTensor[], maxBytes: number): void {
  const bytes = outputs.reduce((s, t) => s + t.data.length * (t.datatype === 'INT64' ? 8 : 4), 0);
  if (bytes > maxBytes) {
    throw tooLarge(
      `the response would hold ${bytes} bytes of tensors; at most ${maxBytes} are sent (ask for fewer images or outputs)`,
    );
  }
}

function rawBytes(t: OutputTensor): Uint8Array {
  if (t.datatype === 'FP32') return new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
  return new Uint8Array(BigInt64Array.from(t.data as Int32Array, v => BigInt(v)).buffer);
}

export function buildResponse(
  req: ModelInferRequest,
  version: string,
  outputs: OutputTensor[],
  raw: boolean,
  parameters: Parameters = {},
): ModelInferResponse {
  const tensors: InferOutputTensor[] = outputs.map(t => ({
    name: t.name,
    datatype: t.datatype,
    shape: t.shape,
    parameters: {},
    contents: raw
      ? null
      : t.datatype === 'FP32'
        ? { fp32_contents: Array.from(t.data) }
        : { int64_contents: Array.from(t.data) },
  }));
  return {
    model_name: req.model_name,
    model_version: version,
    id: req.id ?? '',
    parameters,
    outputs: tensors,
    raw_output_contents: raw ? outputs.map(rawBytes) : [],
  };
}

/** Reads an output back from a response, typed or raw (clients: fleet predict, the ensemble's remote members, tests). */
export function readOutput(res: ModelInferResponse, name: string): { shape: number[]; data: Float32Array | number[] } {
  const i = res.outputs.findIndex(o => o.name === name);
  if (i < 0)
    throw new Error(
      `the response has no output "${name}" (it has ${res.outputs.map(o => o.name).join(', ') || 'none'})`,
    );
  const o = res.outputs[i];
  const shape = o.shape.map(Number);
  const raw = res.raw_output_contents?.[i];
  if (raw && raw.length) {
    const b = new Uint8Array(raw); // a copy: a Buffer's slice() is a view into a shared pool
    if (o.datatype === 'FP32') return { shape, data: new Float32Array(b.buffer, 0, b.length / 4) };
    if (o.datatype === 'INT64')
      return { shape, data: Array.from(new BigInt64Array(b.buffer, 0, b.length / 8), Number) };
    throw new Error(`output "${name}": datatype ${o.datatype} is not read here`);
  }
  if (o.datatype === 'FP32') return { shape, data: Float32Array.from(o.contents?.fp32_contents ?? []) };
  return { shape, data: (o.contents?.int64_contents ?? []).map(Number) };
}
