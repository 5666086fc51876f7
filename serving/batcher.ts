// Dynamic batching: requests for one model queue here and are merged (in arrival order) into one session run
// of up to maxBatchSize images. A batch starts when the session is free and either enough images wait or the
// oldest request has waited maxQueueDelayMs (0: at once; requests that arrive while a batch runs are merged
// into the next one). A request whose deadline passes while it waits is answered DEADLINE_EXCEEDED and never run.
import { deadline as deadlineError, tooLarge, unavailable } from './errors.ts';
import { IMAGE_SIZE } from '../engine/data/datasets.ts';

/** What one run over n images returns: per-image rows (row-major, `rowSize` values per image) by output name. */
export type BatchRows = Record<string, { data: Float32Array | Int32Array; rowSize: number }>;
export interface BatchResult {
  rows: BatchRows;
  /** Parameters every request of the batch reports (ensembles: missing members). */ info?: Record<
    string,
    string | number
  >;
}

export interface BatcherOptions {
  maxBatchSize: number;
  maxQueueDelayMs: number;
  maxQueueImages: number;
  /** Runs the model on n images (n * 784 normalised values). */
  /** Runs one batch; deadline is the earliest deadline of its requests (epoch ms, Infinity for none). */
  run: (x: Float32Array, n: number, deadline: number) => Promise<BatchResult>;
  onBatch?: (images: number) => void;
  onQueued?: (seconds: number) => void;
  onRun?: (images: number, seconds: number) => void;
}

interface Item {
  x: Float32Array;
  n: number;
  enqueued: number;
  deadline: number;
  resolve: (r: BatchResult) => void;
  reject: (e: Error) => void;
}

export class Batcher {
  private queue: Item[] = [];
  private queuedImages = 0;
  private running = false;
  private scheduled = false;
  private closed = false;
  private idle?: () => void;
  readonly stats = { batches: 0, images: 0, largestBatch: 0, expired: 0 };

  constructor(private readonly o: BatcherOptions) {}

  /** Queues n images; resolves with this request's own rows of the batch it ran in. */
  submit(x: Float32Array, n: number, deadline = Infinity): Promise<BatchResult> {
    if (this.closed) return Promise.reject(unavailable('this model version is being unloaded; retry'));
    if (this.queuedImages + n > this.o.maxQueueImages) {
      return Promise.reject(
        tooLarge(
          `the queue is full (${this.queuedImages} images waiting, at most ${this.o.maxQueueImages}); retry later`,
        ),
      );
    }
    return new Promise((resolve, reject) => {
      this.queue.push({ x, n, enqueued: Date.now(), deadline, resolve, reject });
      this.queuedImages += n;
      this.schedule();
    });
  }

  /** Stops taking requests; resolves once the queued ones have run (a reloaded model drains, then goes). */
  close(): Promise<void> {
    this.closed = true;
    if (!this.running && this.queue.length === 0) return Promise.resolve();
    return new Promise(resolve => {
      this.idle = resolve;
    });
  }

  private schedule(): void {
    if (this.running || this.scheduled || this.queue.length === 0) return;
    const waited = Date.now() - this.queue[0].enqueued;
    const delay = this.queuedImages >= this.o.maxBatchSize ? 0 : Math.max(0, this.o.maxQueueDelayMs - waited);
    this.scheduled = true;
    // setImmediate even for 0: requests that arrived in the same turn of the event loop join this batch
    const go = () => {
      this.scheduled = false;
      void this.flush();
    };
    if (delay === 0) setImmediate(go);
    else setTimeout(go, delay);
  }

  private async flush(): Promise<void> {
    if (this.running) return;
    const now = Date.now();
    const batch: Item[] = [];
    let images = 0;
    while (this.queue.length) {
      const it = this.queue[0];
      if (it.deadline <= now) {
        this.queue.shift();
        this.queuedImages -= it.n;
        this.stats.expired++;
        it.reject(
          deadlineError(
            `the deadline passed after ${now - it.enqueued} ms in the queue, before the request's batch ran`,
          ),
        );
        continue;
      }
      // a request larger than the batch size runs alone
      if (batch.length && images + it.n > this.o.maxBatchSize) break;
      this.queue.shift();
      this.queuedImages -= it.n;
      batch.push(it);
      images += it.n;
    }
    if (!batch.length) {
      if (this.closed) this.idle?.();
      return;
    }
    this.running = true;
    for (const it of batch) this.o.onQueued?.((now - it.enqueued) / 1000);
    this.o.onBatch?.(images);
    this.stats.batches++;
    this.stats.images += images;
    this.stats.largestBatch = Math.max(this.stats.largestBatch, images);
    try {
      const x = batch.length === 1 ? batch[0].x : concat(batch, images);
      const t0 = performance.now();
      const r = await this.o.run(x, images, Math.min(...batch.map(it => it.deadline)));
      this.o.onRun?.(images, (performance.now() - t0) / 1000);
      let row = 0;
      for (const it of batch) {
        const rows: BatchRows = {};
        for (const [k, v] of Object.entries(r.rows))
          rows[k] = { data: v.data.slice(row * v.rowSize, (row + it.n) * v.rowSize), rowSize: v.rowSize };
        it.resolve({ rows, info: r.info });
        row += it.n;
      }
    } catch (e) {
      for (const it of batch) it.reject(e as Error);
    } finally {
      this.running = false;
      if (this.closed && this.queue.length === 0) this.idle?.();
      else this.schedule();
    }
  }
}

function concat(items: Item[], images: number): Float32Array {
  const x = new Float32Array(images * IMAGE_SIZE);
  let at = 0;
  for (const it of items) {
    x.set(it.x, at);
    at += it.x.length;
  }
  return x;
}
