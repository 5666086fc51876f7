// Where the wall time of a data-parallel step goes, for `fleet bench scale` and the step report: the
// coordinator and the workers record wall-clock instants (ms since the epoch, fractional), the workers send
// theirs with each result, and summariseStep() turns one step into consecutive intervals on its critical
// path (the shard whose result arrived last, per phase). Instants from different processes are comparable
// only on one machine (or with synchronised clocks); the per-process durations are exact anywhere.

/** Wall clock with sub-millisecond resolution. */
export const wallClock = (): number => performance.timeOrigin + performance.now();

/** What a worker reports for one work item (instants, except busMs). */
export interface WorkerTimeline {
  /** The work message arrived. */
  received: number;
  /** Its parameters (and upstream gradient) were there: after queueing behind earlier work and waiting for transfers. */
  ready: number;
  /** Parameters verified and copied into the sessions' inputs. */
  loaded: number;
  computed: number;
  /** The result transfer was published (flatten, checksum, envelopes). */
  published: number;
  /** Time in the bus handlers (decode, reassembly, checksums) since the previous result. */
  busMs: number;
}

export interface PhaseTimeline {
  phase: 'gradient' | 'forward' | 'backward';
  /** The coordinator had published the phase's work and transfers. */
  sent: number;
  shards: { shard: number; worker: string; arrived: number; w?: WorkerTimeline }[];
  /** Time in the coordinator's bus handler during the phase (decode, reassembly/summation, checksums). */
  busMs: number;
}

export interface StepTimeline {
  start: number;
  /** The parameter version was flattened. */
  flattened: number;
  /** ... and published (checksum, envelopes, publish). */
  published: number;
  phases: PhaseTimeline[];
  lossMs: number;
  /** Summation of the gradients that had not been summed as they arrived, BatchNorm mean, optimizer step. */
  sumMs: number;
  buffersMs: number;
  optimizerMs: number;
  end: number;
}

/**
 * path: consecutive intervals on the critical path of a step, in ms, in order; they add up to the step's wall
 * time. bus: time in the bus handlers (decode, reassembly, checksums) of the critical worker and of the
 * coordinator per phase, which overlaps the transit intervals.
 */
export function summariseStep(t: StepTimeline): { path: Record<string, number>; bus: Record<string, number> } {
  const out: Record<string, number> = {},
    bus: Record<string, number> = {};
  const add = (k: string, v: number) => {
    out[k] = (out[k] ?? 0) + v;
  };
  add('params_flatten', t.flattened - t.start);
  add('params_publish', t.published - t.flattened);
  let at = t.published;
  for (const p of t.phases) {
    if (!p.shards.length) continue;
    const last = p.shards.reduce((a, b) => (b.arrived > a.arrived ? b : a));
    add(`${p.phase}_dispatch`, p.sent - at);
    if (last.w) {
      const w = last.w;
      add(`${p.phase}_transit_down`, w.received - p.sent);
      add(`${p.phase}_worker_wait`, w.ready - w.received);
      add(`${p.phase}_params_load`, w.loaded - w.ready);
      add(`${p.phase}_compute`, w.computed - w.loaded);
      add(`${p.phase}_result_publish`, w.published - w.computed);
      add(`${p.phase}_transit_up`, last.arrived - w.published);
      bus[`${p.phase}_worker`] = w.busMs;
    } else {
      add(`${p.phase}_shard`, last.arrived - p.sent);
    }
    bus[`${p.phase}_coordinator`] = p.busMs;
    at = last.arrived;
    if (p.phase === 'forward') {
      add('loss', t.lossMs);
      at += t.lossMs;
    }
  }
  add('aggregate_sum', t.sumMs);
  add('aggregate_buffers', t.buffersMs);
  add('optimizer', t.optimizerMs);
  add('report', t.end - at - t.sumMs - t.buffersMs - t.optimizerMs);
  return { path: out, bus };
}
