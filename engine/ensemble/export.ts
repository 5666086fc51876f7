// One ONNX graph for a weighted ensemble: every member's weights are baked in (BatchNorm folded, like the
// single-model exports), under its own initializer prefix, and the members' softmax probabilities are combined
// in the graph.
//
// Interface (the same input as the single-model model.onnx, so the ensemble is a drop-in replacement):
//   input                 [N, 1, 28, 28]  float32, normalised as (x/255 - 0.5) / 0.5, N symbolic
//   probabilities         [N, 10]         the combined prediction (see below)
//   member_probabilities  [M, N, 10]      each included member's own softmax probabilities, in member order
//
// Votes:
// - 'soft' (default): probabilities = sum_m w_m * p_m, with w normalised to sum to 1 (a weighted average, so
//   rows still sum to 1). With selection weights (how often greedy selection picked each member) this is
//   exactly the selection-weighted soft vote.
// - 'hard': every member votes for its argmax class with its normalised weight; probabilities[n, c] is the
//   weighted share of votes class c received. Ties are broken by the soft (weighted mean) probability: classes
//   whose vote share is within HARD_VOTE_TIE_TOLERANCE of the top share count as tied, and each of them gets
//   HARD_VOTE_TIE_BREAK * softmean[n, c] added. Only tied classes get the bonus, so a class with fewer votes can
//   never overtake one with more, and argmax(probabilities) is the rule "most (weighted) votes, then highest
//   mean probability, then lowest class index". Values therefore exceed the vote share by at most
//   HARD_VOTE_TIE_BREAK for the tied classes (rows sum to at most 1 + HARD_VOTE_TIE_BREAK). The tie-break factor
//   is not tiny on purpose: in float32 a value near 0.5 resolves ~6e-8, so 1e-3 still separates mean
//   probabilities that differ by ~1e-4, where 1e-6 would lose differences below ~0.1.
//
// Members with weight 0 are left out of the graph (they are neither computed nor listed in
// member_probabilities); their prefixes keep the original member index (m0., m2., ...), and the model's
// metadata records which members are included (ensemble.members) and their normalised weights.
import { Graph, type Value } from '../graph/graph.ts';
import { ModelProto } from '../graph/onnx-proto.ts';
import { bakeCnnLogits, bakeEncoder, bakeLinear, CLASSES } from '../model/cnn.ts';
import type { TensorSet } from '../model/params.ts';

export type EnsembleMember =
  | { kind: 'cnn'; params: TensorSet; buffers: TensorSet }
  | { kind: 'simclr'; params: TensorSet; buffers: TensorSet; probe: TensorSet };

export type EnsembleVote = 'soft' | 'hard';

export interface EnsembleExportOptions {
  vote?: EnsembleVote;
  /** Extra metadata_props; the ensemble.* keys are set by the export. */
  metadata?: Record<string, string>;
}

/** Weight of the soft mean added to the classes tied for the most votes (hard vote). */
export const HARD_VOTE_TIE_BREAK = 1e-3;
/** Vote shares (normalised weights sum to 1) within this of the top share count as tied (float32 summation noise). */
export const HARD_VOTE_TIE_TOLERANCE = 1e-6;

/** Validates the weights and returns the included members' indices with their normalised weights. */
export function normaliseEnsembleWeights(
  memberCount: number,
  weights: number[],
): Array<{ index: number; weight: number }> {
  if (memberCount === 0) throw new Error('exportEnsemble: no members');
  if (weights.length !== memberCount)
    throw new Error(`exportEnsemble: ${weights.length} weights for ${memberCount} members`);
  weights.forEach((w, i) => {
    if (typeof w !== 'number' || !Number.isFinite(w) || w < 0)
      throw new Error(`exportEnsemble: weight ${i} is ${w}; weights must be finite and >= 0`);
  });
  const total = weights.reduce((a, b) => a + b, 0);
  if (!(total > 0)) throw new Error('exportEnsemble: at least one member needs a positive weight');
  return weights.flatMap((w, index) => (w > 0 ? [{ index, weight: w / total }] : []));
}

/** A member's logits [N, 10] baked into g under `prefix`. */
function bakeMemberLogits(g: Graph, x: Value, m: EnsembleMember, prefix: string): Value {
  if (m.kind === 'cnn') return bakeCnnLogits(g, x, m.params, m.buffers, prefix);
  if (m.kind === 'simclr')
    return bakeLinear(g, bakeEncoder(g, x, m.params, m.buffers, prefix), m.probe, 'probe', prefix);
  throw new Error(`exportEnsemble: unknown member kind ${(m as { kind: unknown }).kind}`);
}

/**
 * Serialises the weighted ensemble of `members` as one ONNX model (see the header for its interface and votes).
 * `weights` are non-negative, one per member, at least one positive; they are normalised to sum to 1.
 */
export function exportEnsemble(
  members: EnsembleMember[],
  weights: number[],
  opts: EnsembleExportOptions = {},
): Uint8Array {
  const vote = opts.vote ?? 'soft';
  if (vote !== 'soft' && vote !== 'hard')
    throw new Error(`exportEnsemble: vote must be 'soft' or 'hard', not ${String(vote)}`);
  const included = normaliseEnsembleWeights(members.length, weights);
  for (const { index } of included) {
    const m = members[index];
    if (!m || (m.kind !== 'cnn' && m.kind !== 'simclr'))
      throw new Error(
        `exportEnsemble: member ${index} has unknown kind ${String((m as { kind?: unknown } | undefined)?.kind)}`,
      );
    if (m.kind === 'simclr' && !m.probe) throw new Error(`exportEnsemble: simclr member ${index} has no probe`);
  }

  const g = new Graph('fleet_ensemble');
  const x = g.input('input', [1, 1, 28, 28], 'float32', { dynamicBatch: true });
  const batch = x.shape[0];
  const probs = included.map(({ index }) => g.softmax(bakeMemberLogits(g, x, members[index], `m${index}.`), 1));
  const weighted = (vs: Value[]) => g.sum(vs.map((v, k) => g.mul(v, g.scalar(included[k].weight))));
  const soft = weighted(probs);

  let combined: Value;
  if (vote === 'soft') {
    combined = soft;
  } else {
    const depth = g.constant([CLASSES], [1], 'int64');
    const onOff = g.constant([0, 1], [2], 'float32');
    const votes = weighted(
      probs.map(p =>
        g.node(
          'OneHot',
          [g.argMax(p, 1, false), depth, onOff],
          { axis: { int: -1 } },
          undefined,
          [batch, CLASSES],
          'float32',
        ),
      ),
    );
    const top = g.reduceMax(votes, [1], true);
    const tied = g.greaterOrEqual(votes, g.sub(top, g.scalar(HARD_VOTE_TIE_TOLERANCE)));
    const bonus = g.where(tied, g.mul(soft, g.scalar(HARD_VOTE_TIE_BREAK)), g.scalar(0));
    combined = g.add(votes, bonus);
  }
  g.output(combined, 'probabilities');

  const stacked = g.concat(
    probs.map(p => g.node('Unsqueeze', [p, g.ints([0])], {}, undefined, [1, ...p.shape])),
    0,
  );
  g.output(stacked, 'member_probabilities');

  const metadata: Record<string, string> = {
    ...(opts.metadata ?? {}),
    'ensemble.vote': vote,
    'ensemble.members': JSON.stringify(included.map(i => i.index)),
    'ensemble.kinds': JSON.stringify(included.map(i => members[i.index].kind)),
    'ensemble.weights': JSON.stringify(included.map(i => i.weight)),
  };
  const doc =
    `fleet ensemble of ${included.length} member(s), ${vote} vote, for 28x28 grey images normalised as (x/255 - 0.5) / 0.5; ` +
    'outputs probabilities [N,10] and member_probabilities [M,N,10]';
  return withDimensions(g.toModel({ docString: doc, metadata }), {
    member_probabilities: [included.length, 'N', CLASSES],
    probabilities: ['N', CLASSES],
  });
}

/**
 * Rewrites the declared shapes of graph outputs (the builder only makes the first dimension symbolic, and
 * member_probabilities has its batch dimension second).
 */
function withDimensions(bytes: Uint8Array, dims: Record<string, Array<number | string>>): Uint8Array {
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const model = ModelProto.decode(bytes) as any;
  for (const out of model.graph.output) {
    const want = dims[out.name];
    if (!want) continue;
    out.type.tensorType.shape.dim = want.map(d => (typeof d === 'string' ? { dimParam: d } : { dimValue: d }));
  }
  return ModelProto.encode(model).finish();
}
