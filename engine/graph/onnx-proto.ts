// Loads proto/onnx.proto with protobufjs and converts between our plain records and ModelProto bytes.
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import protobuf from 'protobufjs';

const here = path.dirname(fileURLToPath(import.meta.url));
const root = protobuf.loadSync(path.join(here, '../../proto/onnx.proto'));
export const ModelProto = root.lookupType('onnx.ModelProto');

/** ONNX TensorProto.DataType codes for the element types fleet uses. */
export const DTYPE_CODE = { float32: 1, uint8: 2, int32: 6, int64: 7, bool: 9 } as const;
export type DType = keyof typeof DTYPE_CODE;

export function encodeModel(model: object): Uint8Array {
  const err = ModelProto.verify(model);
  if (err) throw new Error(`invalid ONNX model: ${err}`);
  return ModelProto.encode(ModelProto.fromObject(model)).finish();
}

export function decodeModel(bytes: Uint8Array): any {
  return ModelProto.toObject(ModelProto.decode(bytes), { longs: Number, bytes: Buffer, defaults: false });
}
