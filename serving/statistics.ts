// Cumulative per-model, per-version statistics as Triton's ModelStatistics reports them: requests that succeeded
// and failed (count, total time), time in the batcher's queue, session runs (compute_infer, and per batch size),
// images inferred, the time of the last inference. Kept in memory from the server's start; bounded by the
// repository's models (names that are not models are never recorded).

export interface Duration {
  count: number;
  ns: number;
}

interface VersionStats {
  lastInference: number;
  inferenceCount: number;
  executionCount: number;
  success: Duration;
  fail: Duration;
  queue: Duration;
  computeInfer: Duration;
  batches: Map<number, Duration>;
}

/** Distinct batch sizes kept per version (a batch size is at most the model's max_batch_size, 4096). */
const MAX_BATCH_SIZES = 4096;

const zero = (): Duration => ({ count: 0, ns: 0 });
const add = (d: Duration, seconds: number) => {
  d.count++;
  d.ns += Math.round(seconds * 1e9);
};

export class ModelStatisticsBook {
  private readonly stats = new Map<string, Map<string, VersionStats>>();

  private of(model: string, version: string): VersionStats {
    let versions = this.stats.get(model);
    if (!versions) this.stats.set(model, (versions = new Map()));
    let s = versions.get(version);
    if (!s) {
      s = {
        lastInference: 0,
        inferenceCount: 0,
        executionCount: 0,
        success: zero(),
        fail: zero(),
        queue: zero(),
        computeInfer: zero(),
        batches: new Map(),
      };
      versions.set(version, s);
    }
    return s;
  }

  /** A request answered (ok or not) after `seconds`; `images` counted when it succeeded. */
  request(model: string, version: string, ok: boolean, seconds: number, images: number): void {
    const s = this.of(model, version);
    add(ok ? s.success : s.fail, seconds);
    if (ok) {
      s.inferenceCount += images;
      s.lastInference = Date.now();
    }
  }

  queued(model: string, version: string, seconds: number): void {
    add(this.of(model, version).queue, seconds);
  }

  /** One session run over `images` images. */
  executed(model: string, version: string, images: number, seconds: number): void {
    const s = this.of(model, version);
    s.executionCount++;
    add(s.computeInfer, seconds);
    let b = s.batches.get(images);
    if (!b && s.batches.size < MAX_BATCH_SIZES) s.batches.set(images, (b = zero()));
    if (b) add(b, seconds);
  }

  /** Forgets a model (unloaded or removed), so that the book stays bounded by the repository. */
  forget(model: string): void {
    this.stats.delete(model);
  }

  /** Triton's ModelStatistics messages for these (model, version) pairs; never-used versions report zeros. */
  report(pairs: { model: string; version: string }[]) {
    return pairs.map(({ model, version }) => {
      const s = this.stats.get(model)?.get(version) ?? this.of(model, version);
      return {
        name: model,
        version,
        last_inference: s.lastInference,
        inference_count: s.inferenceCount,
        execution_count: s.executionCount,
        inference_stats: {
          success: s.success,
          fail: s.fail,
          queue: s.queue,
          compute_input: zero(),
          compute_infer: s.computeInfer,
          compute_output: zero(),
          cache_hit: zero(),
          cache_miss: zero(),
        },
        batch_stats: [...s.batches]
          .sort((a, b) => a[0] - b[0])
          .map(([size, d]) => ({
            batch_size: size,
            compute_input: zero(),
            compute_infer: d,
            compute_output: zero(),
          })),
      };
    });
  }
}
