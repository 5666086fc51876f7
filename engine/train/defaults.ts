// The engine's training defaults, in one place: each trainer's recipe (optimizer, peak learning rate, weight
// decay, schedule, batch size) and the settings a trainer falls back on when its caller leaves them out.
// Learning rates are per optimizer step at the schedule's peak; batch sizes count images (MIL: bags);
// epochs are full passes over the training split. The command-line defaults live in cli/ and name these.
import type { Recipe } from './train-state.ts';

/** CNN recipes: `fleet` is the default, `reference` reproduces the reference implementation's setup. */
export const RECIPES: Record<string, Recipe> = {
  fleet: {
    name: 'fleet',
    optimizer: 'adamw',
    lr: 3e-3,
    weightDecay: 0.05,
    decayWeightsOnly: true,
    schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 },
    shift: 2,
    batchSize: 128,
  },
  reference: {
    name: 'reference',
    optimizer: 'adam',
    lr: 1e-3,
    weightDecay: 1e-3,
    decayWeightsOnly: false,
    schedule: { kind: 'step', stepSize: 5, gamma: 0.5 },
    shift: 0,
    batchSize: 256,
  },
};

/** SimCLR pre-training (batch 256 images = 512 views). */
export const SIMCLR_RECIPE: Recipe = {
  name: 'simclr',
  optimizer: 'adamw',
  lr: 1e-3,
  weightDecay: 1e-4,
  decayWeightsOnly: true,
  schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 },
  shift: 0,
  batchSize: 256,
};

/** SimCLR's linear probe on the frozen encoder's features: AdamW on every parameter, 5% warm-up then cosine. */
export const PROBE_RECIPE = {
  name: 'probe',
  optimizer: 'adamw',
  lr: 1e-3,
  weightDecay: 1e-4,
  decayWeightsOnly: false,
  schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 },
  shift: 0,
  batchSize: 256,
} satisfies Recipe;

/** Epochs of linear-probe training when the caller gives none. */
export const PROBE_EPOCHS = 10;

/** Images per run of the frozen encoder when computing the probe's features (memory, not results). */
export const ENCODE_CHUNK = 500;

/** Attention MIL: Adam with the reference's L2 weight decay and learning rate, a short warm-up, a cosine decay;
 * its batch size is the bags per optimizer step when the caller gives none (1, as the reference). */
export const MIL_RECIPE: Recipe = {
  name: 'mil',
  optimizer: 'adam',
  lr: 5e-4,
  weightDecay: 1e-4,
  decayWeightsOnly: false,
  schedule: { kind: 'warmup-cosine', warmupFraction: 0.05 },
  shift: 0,
  batchSize: 1,
};
