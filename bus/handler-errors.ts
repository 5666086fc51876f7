// What both transports do with a subscription handler that fails: count it and report it, so that one bad
// handler (or message) never breaks delivery to the others.
import type { BusMessage } from './transport.ts';

export class HandlerErrors {
  /** Handler failures caught so far. */
  count = 0;

  constructor(private readonly onError?: (err: unknown, subject: string) => void) {}

  /** Runs `handler` on `msg`; a throw or a rejected promise is reported, never passed on. */
  run(handler: (msg: BusMessage) => void, msg: BusMessage): void {
    try {
      const r = handler(msg) as unknown;
      // Async handlers: a rejected promise is reported the same way as a throw.
      if (r instanceof Promise) r.catch(err => this.report(err, msg.subject));
    } catch (err) {
      this.report(err, msg.subject);
    }
  }

  /** Counts one failure and hands it to onError (default: one line on stderr). */
  report(err: unknown, subject: string): void {
    this.count++;
    try {
      if (this.onError) this.onError(err, subject);
      else console.error(`bus: handler for ${subject} failed: ${err instanceof Error ? err.message : String(err)}`);
    } catch {
      // A failing error hook must not break delivery either.
    }
  }
}
