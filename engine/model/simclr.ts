// SimCLR: the CNN's conv encoder (2048 features) + an MLP projection head 2048 -> 2048 -> ReLU -> 128,
// L2-normalised; trained with NT-Xent (or SupCon) over two augmented views. Evaluated by a linear probe:
// a Linear 2048 -> 10 trained on the frozen encoder's features.
import { Graph, type Value } from '../graph/graph.ts';
import {
  encoderParams,
  encoderBuffers,
  encoderForward,
  linear,
  linearParams,
  bakeEncoder,
  bakeLinear,
  FEATURES,
  CLASSES,
  type TrainContext,
} from './cnn.ts';
import { TensorSet, type TensorSpec } from './params.ts';

export const PROJECTION_HIDDEN = 2048;
export const PROJECTION_DIM = 128;

export const simclrParams = (): TensorSpec[] => [
  ...encoderParams(),
  ...linearParams('head1', FEATURES, PROJECTION_HIDDEN),
  ...linearParams('head2', PROJECTION_HIDDEN, PROJECTION_DIM),
];
export const simclrBuffers = encoderBuffers;
export const probeParams = (): TensorSpec[] => linearParams('probe', FEATURES, CLASSES);

/** L2-normalised projections [N, 128] of images [N, 1, 28, 28]. */
export function projectionForward(ctx: TrainContext, x: Value): Value {
  const f = encoderForward(ctx, x);
  const z = linear(ctx, ctx.g.relu(linear(ctx, f, 'head1')), 'head2');
  return ctx.g.l2Normalize(z, 1);
}

/** The frozen encoder alone (eval BatchNorm, baked weights): input "input" [N,1,28,28] -> "features" [N, 2048]. */
export function exportEncoder(params: TensorSet, buffers: TensorSet): Uint8Array {
  const g = new Graph('fleet_simclr_encoder');
  const x = g.input('input', [1, 1, 28, 28], 'float32', { dynamicBatch: true });
  g.output(bakeEncoder(g, x, params, buffers), 'features');
  return g.toModel();
}

/** Encoder + linear probe as one classifier, with the same interface as the CNN's model.onnx. */
export function exportSimclrClassifier(
  params: TensorSet,
  buffers: TensorSet,
  probe: TensorSet,
  metadata: Record<string, string> = {},
): Uint8Array {
  const g = new Graph('fleet_simclr_classifier');
  const x = g.input('input', [1, 1, 28, 28], 'float32', { dynamicBatch: true });
  const logits = bakeLinear(g, bakeEncoder(g, x, params, buffers), probe, 'probe');
  g.output(g.softmax(logits, 1), 'probabilities');
  g.output(logits, 'logits');
  return g.toModel({
    docString: 'fleet SimCLR encoder + linear probe, input normalised as (x/255 - 0.5) / 0.5',
    metadata,
  });
}
