// The random streams of training, each derived from the run's seed. Their values are frozen: a resumed run
// is bit-identical to an uninterrupted one, and a data-parallel run to its single-process reference, only
// while every stream is drawn from exactly the same number. Change a derivation and old checkpoints no longer
// resume to the same result.
//
// Streams derived inside their own module (with a salt there) take the run's seed as it is here:
//   image order per epoch   epochOrder(indices, SEEDS.order(seed), epoch)      engine/data/split.ts
//   validation split        validationSplit(count, fraction, SEEDS.split(...))  engine/data/split.ts
//   bootstrap sample        bootstrap(indices, seed)                            engine/data/split.ts
//   initial weights         TensorSet.init(specs, seed)                         engine/model/params.ts
//   in-graph dropout sites  (dropout seed * 7919 + site) per graph              engine/train/graph-context.ts
import { mixSeeds } from '../util/random.ts';

export const SEEDS = {
  /** In-graph Dropout of epoch e (every trainer reseeds its training sessions with it, ModelRunner.reseed). */
  dropout: (seed: number, epoch: number) => (seed * 1000003 + epoch) >>> 0,
  /** CNN random shifts of epoch e (the same number as `dropout`, a different generator). */
  shift: (seed: number, epoch: number) => (seed * 1000003 + epoch) >>> 0,
  /** SimCLR's two augmented views of epoch e. */
  views: (seed: number, epoch: number) => (seed * 7654321 + epoch) >>> 0,
  /** MIL: the order of the training bags in epoch e. */
  bagOrder: (seed: number, epoch: number) => (seed * 31337 + epoch) >>> 0,
  /** MIL: which images make the training bags, and the test bags. */
  trainBags: (seed: number) => seed,
  testBags: (seed: number) => seed + 1,
  /** The seed handed to epochOrder for the images of the CNN and SimCLR trainers. */
  order: (seed: number) => seed,
  /** SimCLR's linear probe: its image order per epoch (epochOrder's seed). */
  probeOrder: (seed: number) => seed + 17,
  /** The validation split: its own seed when given (ensemble members share one split), else the run's. */
  split: (seed: number, splitSeed?: number) => splitSeed ?? seed,
  /** Data-parallel: a shard's augmentation at a global step (mixed with the purpose "data"). */
  shardData: (seed: number, step: number, shard: number) => mixSeeds(seed, step, shard, 0x64617461),
  /** Data-parallel: the key of a shard's dropout masks at a global step (DropoutMasks.draw; purpose "mask"). */
  shardMasks: (seed: number, step: number, shard: number) => [seed, step, shard, 0x6d61736b] as const,
};
