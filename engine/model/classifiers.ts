// The classifier definitions the train command knows, by name.
import type { ClassifierDef } from '../train/classifier-graphs.ts';
import { cnnParams, cnnBuffers, cnnForward, CLASSES } from './cnn.ts';

export const CNN: ClassifierDef = {
  name: 'cnn',
  params: cnnParams,
  buffers: cnnBuffers,
  forward: cnnForward,
  classes: CLASSES,
};
