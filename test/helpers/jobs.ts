// Ensemble jobs as the cluster tests submit them: the spec `fleet train cnn --members K ...` sends, and
// submitting one straight to a coordinator on the bus.
import { strict as assert } from 'node:assert';
import type { Transport } from '../../bus/transport.ts';
import { SUBJECTS } from '../../bus/subjects.ts';
import { RECIPES } from '../../engine/train/train-classifier.ts';
import type { JobSpec } from '../../coordinator/coordinator.ts';
import type { MemberResult, TrainedMember } from '../../engine/ensemble/tasks.ts';
import { cnnParams, cnnBuffers } from '../../engine/model/cnn.ts';
import { simclrParams, probeParams } from '../../engine/model/simclr.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array) => new TextDecoder().decode(b);

/** The job `fleet train cnn --members K --epochs 1 --batch-size 64 --limit-test 100 ...` submits. */
export function voting(members: number, limitTrain: number, seed = 1): JobSpec {
  return {
    kind: 'voting',
    model: 'cnn',
    members,
    epochs: 1,
    batchSize: 64,
    recipe: { ...RECIPES.fleet, batchSize: 64 },
    seed,
    valFraction: 0,
    dataset: 'mnist',
    limitTrain,
    limitTest: 100,
    selection: { objective: 'loss', initSize: 0, maxIter: 50, bags: 1 },
  };
}

export async function submit(bus: Transport, spec: JobSpec): Promise<string> {
  const reply = await bus.request(SUBJECTS.jobSubmit, enc(JSON.stringify(spec)), 15_000);
  const answer = JSON.parse(dec(reply.data)) as { ok: boolean; jobId?: string; error?: string };
  assert.ok(answer.ok && answer.jobId, `the coordinator refused the job: ${answer.error}`);
  return answer.jobId!;
}

/**
 * A member result that fits a CNN task of a job (right names, shapes and rows) with every value 0.1: what a worker
 * holding the lease could send without training. `rows` are the job's probability rows (expectedRows).
 */
export function fakeMemberResult(
  taskId: string,
  rows: { val: number; test: number },
  opts: { name?: string; model?: 'cnn' | 'simclr' } = {},
): MemberResult {
  const model = opts.model ?? 'cnn';
  const set = (specs: { name: string; shape: number[] }[]) => ({
    names: specs.map(s => s.name),
    shapes: specs.map(s => s.shape),
    data: specs.map(s => new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(0.1)),
  });
  const probs = (n: number) => ({ loss: 2.3, accuracy: 0.1, probabilities: new Float32Array(n * 10).fill(0.1) });
  const member: TrainedMember = {
    name: opts.name ?? taskId,
    taskId,
    model,
    epoch: 1,
    params: set(model === 'simclr' ? simclrParams() : cnnParams()),
    buffers: set(cnnBuffers()),
    probe: model === 'simclr' ? set(probeParams()) : undefined,
    test: probs(rows.test),
    val: rows.val ? probs(rows.val) : undefined,
  };
  return { taskId, members: [member], history: [], seconds: 1 };
}
