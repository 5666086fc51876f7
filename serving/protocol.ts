// The KServe v2 protocol (proto/inference.proto) and gRPC health (proto/health.proto), loaded at run time with
// @grpc/proto-loader, and the TypeScript shapes of the messages as proto-loader presents them (snake_case field
// names, int64 as Number, bytes as Buffer, oneofs named).
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';

export const PROTO_DIR = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', 'proto');
export const INFERENCE_SERVICE = 'inference.GRPCInferenceService';
export const HEALTH_SERVICE = 'grpc.health.v1.Health';

export const LOADER_OPTIONS: protoLoader.Options = {
  keepCase: true,
  longs: Number,
  enums: String,
  defaults: true,
  oneofs: true,
};

/** Both services' definitions (also what server reflection describes). */
export const definition = protoLoader.loadSync(
  [path.join(PROTO_DIR, 'inference.proto'), path.join(PROTO_DIR, 'health.proto')],
  LOADER_OPTIONS,
);

export const inferenceService = definition[INFERENCE_SERVICE] as grpc.ServiceDefinition;
export const healthService = definition[HEALTH_SERVICE] as grpc.ServiceDefinition;

/** A client constructor for the inference service (fleet predict, the benchmark). */
export const InferenceClient = grpc.makeGenericClientConstructor(inferenceService, 'GRPCInferenceService');

export interface InferParameter {
  parameter_choice?: 'bool_param' | 'int64_param' | 'string_param' | 'double_param' | 'uint64_param';
  bool_param?: boolean;
  int64_param?: number;
  string_param?: string;
  double_param?: number;
  uint64_param?: number;
}
export type Parameters = Record<string, InferParameter>;

export interface TensorContents {
  bool_contents?: boolean[];
  int_contents?: number[];
  int64_contents?: number[];
  uint_contents?: number[];
  uint64_contents?: number[];
  fp32_contents?: number[];
  fp64_contents?: number[];
  bytes_contents?: Uint8Array[];
}

export interface InferInputTensor {
  name: string;
  datatype: string;
  shape: number[];
  parameters?: Parameters;
  contents?: TensorContents | null;
}
export interface InferOutputTensor {
  name: string;
  datatype: string;
  shape: number[];
  parameters?: Parameters;
  contents?: TensorContents | null;
}

export interface ModelInferRequest {
  model_name: string;
  model_version?: string;
  id?: string;
  parameters?: Parameters;
  inputs: InferInputTensor[];
  outputs?: { name: string; parameters?: Parameters }[];
  raw_input_contents?: Uint8Array[];
}

export interface ModelInferResponse {
  model_name: string;
  model_version: string;
  id: string;
  parameters: Parameters;
  outputs: InferOutputTensor[];
  raw_output_contents: Uint8Array[];
}

export interface ModelStreamInferResponse {
  error_message: string;
  infer_response: ModelInferResponse | null;
}

export interface TensorMetadata {
  name: string;
  datatype: string;
  shape: number[];
}
export interface ModelMetadataResponse {
  name: string;
  versions: string[];
  platform: string;
  inputs: TensorMetadata[];
  outputs: TensorMetadata[];
}

// The bus carries the same messages (fleet.infer.<model>): encode and decode them with the service's codecs.
const infer = inferenceService.ModelInfer;
const stream = inferenceService.ModelStreamInfer;
export const encodeInferRequest = (r: ModelInferRequest): Buffer => infer.requestSerialize(r);
export const decodeInferRequest = (b: Uint8Array): ModelInferRequest =>
  infer.requestDeserialize(Buffer.from(b.buffer, b.byteOffset, b.byteLength));
export const encodeStreamResponse = (r: ModelStreamInferResponse): Buffer => stream.responseSerialize(r);
export const decodeStreamResponse = (b: Uint8Array): ModelStreamInferResponse =>
  stream.responseDeserialize(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/** Parameter helpers: read a string or number whatever the sender's choice, and make typed ones. */
export function paramValue(p: InferParameter | undefined): string | number | boolean | undefined {
  if (!p) return undefined;
  const k = p.parameter_choice;
  return k ? p[k] : undefined;
}
export const stringParam = (v: string): InferParameter => ({ parameter_choice: 'string_param', string_param: v });
export const intParam = (v: number): InferParameter => ({ parameter_choice: 'int64_param', int64_param: v });
export const boolParam = (v: boolean): InferParameter => ({ parameter_choice: 'bool_param', bool_param: v });
