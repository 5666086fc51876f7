// The coordinator's store writes, in the order they were made (a job record never overtakes the result it refers
// to), each retried a few times (a store on NATS can be briefly unreachable).
import type { StateStore } from './state-store.ts';
import * as D from './defaults.ts';

export class WriteQueue {
  private tail: Promise<unknown> = Promise.resolve();

  /** onFailure: a write failed for good (after D.WRITE_ATTEMPTS), to count it. */
  constructor(
    private readonly store: StateStore,
    private readonly log: (line: string) => void,
    private readonly onFailure: () => void,
  ) {}

  /** Queues a write behind the earlier ones; false (logged and counted) when it failed for good. */
  write(key: string, data: Uint8Array | string): Promise<boolean> {
    const done = this.tail.then(() => this.attempt(key, data));
    this.tail = done;
    return done;
  }

  /** Resolves when every write queued so far has finished (or failed, logged and counted). */
  async settled(): Promise<void> {
    await this.tail;
  }

  private async attempt(key: string, data: Uint8Array | string): Promise<boolean> {
    for (let i = 1; ; i++) {
      try {
        await this.store.put(key, data);
        return true;
      } catch (e) {
        if (i === D.WRITE_ATTEMPTS) {
          this.onFailure();
          this.log(`${this.store.description}: writing ${key} failed after ${i} attempts: ${(e as Error).message}`);
          return false;
        }
        await new Promise(r => setTimeout(r, D.WRITE_RETRY_MS * 2 ** (i - 1)));
      }
    }
  }
}
