// Ensemble jobs as the cluster tests submit them: the spec `fleet train cnn --members K ...` sends, and
// submitting one straight to a coordinator on the bus.
import { strict as assert } from 'node:assert';
import type { Transport } from '../../bus/transport.ts';
import { SUBJECTS } from '../../bus/subjects.ts';
import { RECIPES } from '../../engine/train/train-classifier.ts';
import type { JobSpec } from '../../coordinator/coordinator.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The job `fleet train cnn --members K --epochs 1 --batch-size 64 --limit-test 100 ...` submits. */
export function voting(members: number, limitTrain: number, seed = 1): JobSpec {
  return {
    kind: 'voting', model: 'cnn', members, epochs: 1, batchSize: 64, recipe: { ...RECIPES.fleet, batchSize: 64 }, seed, valFraction: 0,
    dataset: 'mnist', limitTrain, limitTest: 100, selection: { objective: 'loss', initSize: 0, maxIter: 50, bags: 1 },
  };
}

export async function submit(bus: Transport, spec: JobSpec): Promise<string> {
  const reply = await bus.request(SUBJECTS.jobSubmit, enc(JSON.stringify(spec)), 15_000);
  const answer = JSON.parse(dec(reply.data)) as { ok: boolean; jobId?: string; error?: string };
  assert.ok(answer.ok && answer.jobId, `the coordinator refused the job: ${answer.error}`);
  return answer.jobId!;
}

