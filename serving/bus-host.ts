// Hosting this repository's models on the bus: for every ready model, a subscription to fleet.infer.<model>
// in the queue group "fleet-serve" (so several servers hosting a model share its requests, and a server is
// only asked for the models it has). Requests are ModelInferRequest bytes, answers ModelStreamInferResponse
// bytes (the result, or error_message); a malformed request is answered with an error and counted.
import type { Transport, Subscription } from '../bus/transport.ts';
import { inferSubject } from '../bus/subjects.ts';
import type { Metrics } from '../telemetry/metrics.ts';
import { forClient, quote } from './errors.ts';
import type { Inference } from './inference.ts';
import { decodeInferRequest, encodeStreamResponse, paramValue, type ModelInferRequest } from './protocol.ts';
import { DEADLINE_PARAM } from './ensemble.ts';
import type { ModelRepository } from './repository.ts';

export const INFER_QUEUE_GROUP = 'fleet-serve';
/** The longest a request over the bus may wait for its answer here (ms). */
const MAX_BUS_REQUEST_MS = 60_000;

export class BusHost {
  private readonly subs = new Map<string, Subscription>();
  private readonly onChange = () => this.sync();

  constructor(
    private readonly bus: Transport,
    private readonly repo: ModelRepository,
    private readonly inference: Inference,
    private readonly metrics?: Metrics,
    private readonly log: (line: string) => void = () => {},
  ) {}

  start(): void {
    this.repo.on('change', this.onChange);
    this.sync();
  }

  /** Models hosted on the bus right now. */
  get hosted(): string[] {
    return [...this.subs.keys()].sort();
  }

  private sync(): void {
    const ready = new Set(this.repo.readyModels());
    for (const name of ready) {
      if (this.subs.has(name)) continue;
      this.subs.set(
        name,
        this.bus.subscribe(
          inferSubject(name),
          msg => {
            void this.answer(name, msg);
          },
          { queue: INFER_QUEUE_GROUP },
        ),
      );
      this.log(`bus: hosting ${name} on ${inferSubject(name)}`);
    }
    for (const [name, sub] of this.subs) {
      if (!ready.has(name)) {
        sub.unsubscribe();
        this.subs.delete(name);
        this.log(`bus: no longer hosting ${name}`);
      }
    }
  }

  private async answer(name: string, msg: { subject: string; data: Uint8Array; reply?: string }): Promise<void> {
    if (!msg.reply) return;
    let reply: Uint8Array;
    try {
      let req: ModelInferRequest;
      try {
        req = decodeInferRequest(msg.data);
      } catch (e) {
        this.metrics?.malformed.inc({ kind: 'infer_request' });
        throw new Error(`not a ModelInferRequest: ${(e as Error).message}`);
      }
      if (req.model_name !== name) {
        throw new Error(`a request for model ${quote(req.model_name)} on the subject of "${name}"`);
      }
      // the asker's deadline (a fan-out ensemble sends it), capped so that a request cannot hold a batcher slot
      const asked = Number(paramValue(req.parameters?.[DEADLINE_PARAM]));
      const deadline = Math.min(
        Date.now() + MAX_BUS_REQUEST_MS,
        Number.isFinite(asked) && asked > 0 ? asked : Infinity,
      );
      if (deadline <= Date.now()) throw new Error("the asker's deadline has passed");
      const res = await this.inference.infer(req, deadline);
      reply = encodeStreamResponse({ error_message: '', infer_response: res });
    } catch (e) {
      reply = encodeStreamResponse({ error_message: forClient((e as Error).message), infer_response: null });
    }
    try {
      this.bus.respond(msg as { subject: string; data: Uint8Array; reply: string }, reply);
    } catch (e) {
      this.log(`bus: answering on ${msg.subject} failed: ${(e as Error).message}`);
    }
  }

  stop(): void {
    this.repo.off('change', this.onChange);
    for (const sub of this.subs.values()) sub.unsubscribe();
    this.subs.clear();
  }
}
