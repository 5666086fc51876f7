// What the server needs of any served model: ONNX ones (onnx-models.ts) and fan-out ensembles (ensemble.ts).
import type { DecodedImages } from './inputs.ts';
import type { ModelConfig } from './model-config.ts';
import type { OutputTensor } from './outputs.ts';
import type { Parameters, TensorMetadata } from './protocol.ts';

export interface ServingHooks {
  onBatch?: (model: string, images: number) => void;
  onQueued?: (model: string, seconds: number, version: string) => void;
  /** One session run (or fan-out) over `images` images took `seconds`. */
  onRun?: (model: string, version: string, images: number, seconds: number) => void;
}

export interface ServedModel {
  readonly name: string;
  readonly version: string;
  readonly platform: string;
  readonly kind: 'classifier' | 'mil' | 'ensemble';
  readonly config: ModelConfig;
  readonly inputs: TensorMetadata[];
  readonly outputs: TensorMetadata[];
  infer(images: DecodedImages, deadline: number): Promise<{ outputs: OutputTensor[]; parameters: Parameters }>;
  /** Class probabilities [n,10] of n normalised images (how an ensemble asks its local members). */
  classProbabilities?(x: Float32Array, n: number, deadline: number): Promise<Float32Array>;
  close(): Promise<void>;
}
