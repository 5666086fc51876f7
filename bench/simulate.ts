// A model of data-parallel SimCLR beyond this machine (`fleet bench simulate`): the step time, the share of it
// spent in compute (efficiency) and the bytes each link carries per step, for W workers on links of a given
// bandwidth and latency, for the current design (a central parameter server) and for all-reduce designs.
// Every input is measured (bench/simulate-inputs.ts); the formulas are plain arithmetic, explained where they
// are computed and in docs/data-parallel.md ("A model of scale").
//
// Units: milliseconds and bytes. A link is full duplex: what it carries is counted in each direction apart.

/** The measured numbers the model scales (all from bench/results/scale.json or a bounded measurement). */
export interface ModelInputs {
  /** Forward + backward compute (incl. the backward graph's recomputed forward) per image on one worker. */
  computeMsPerImage: number;
  /** The part of that per image that is the backward pass proper (backward phase minus the forward phase). */
  backwardOnlyMsPerImage: number;
  /** The coordinator's NT-Xent loss graph over all projections, and the global batch it was measured at. */
  lossMs: number;
  lossGlobalBatch: number;
  /** Adding one received gradient into the sum, per byte. */
  sumMsPerByte: number;
  /** The optimizer step over all parameters (AdamW in JavaScript). */
  optimizerMs: number;
  /** float32 parameter bytes = gradient bytes, and the part of them that is head1's 2048x2048 weight. */
  paramBytes: number;
  head1WeightBytes: number;
  /** Bytes of head1's two factors per image: its input activations and its output gradient, both views. */
  head1FactorBytesPerImage: number;
  /** Projections z (2 views x 128 float32) per image: sent up to the loss, and dloss/dz sent back down. */
  projectionBytesPerImage: number;
  /** The software's own cost of moving a byte through a link (chunk envelopes, SHA-256, nats-server, copies). */
  softwareMsPerByte: number;
  /** The fixed software cost of one transfer (a message through nats-server and back to a subscriber). */
  messageMs: number;
}

/** A network: bandwidth of every host's link and the one-way latency a message adds per network hop. */
export interface Network {
  gbitPerSecond: number;
  latencyMs: number;
}

export const DESIGNS = [
  'ps',
  'allreduce-hub',
  'allreduce-ring',
  'allreduce-overlap',
  'allreduce-fp16',
  'allreduce-factored',
] as const;
export type Design = (typeof DESIGNS)[number];

export const DESIGN_TEXT: Record<Design, string> = {
  ps:
    'current: the coordinator (with the nats-server) publishes every parameter version to every worker ' +
    'and receives every full gradient',
  'allreduce-hub':
    'replicated parameters, reduce-scatter + all-gather by shards through one central nats-server (fp32)',
  'allreduce-ring':
    'replicated parameters, ring reduce-scatter + all-gather over per-host links (fp32, after the backward pass)',
  'allreduce-overlap': "allreduce-ring, the head bucket sent while the encoder's backward pass runs",
  'allreduce-fp16': 'allreduce-overlap with fp16/bf16 gradients (half the bytes; not exact)',
  'allreduce-factored':
    "allreduce-overlap, head1's gradient sent as its two factors (all-gathered), the rest reduced in fp32",
};

/**
 * measured: fleet's transport as measured here (its per-byte software cost, about 1 Gbit/s on this machine,
 * bounds every link); wire: a transport that keeps up with the link (per-byte software cost 0, the fixed cost
 * per transfer kept), i.e. what the design allows once the transport is no longer the bottleneck.
 */
export const TRANSPORTS = ['measured', 'wire'] as const;
export type Transport = (typeof TRANSPORTS)[number];

export interface Prediction {
  design: Design;
  transport: Transport;
  workers: number;
  gbit_per_second: number;
  latency_ms: number;
  step_ms: number;
  /** One worker's forward + backward compute. */
  compute_ms: number;
  /** The coordinator's loss graph over the global batch (the same in every design; quadratic in the batch). */
  loss_ms: number;
  /**
   * compute_ms / (step_ms - loss_ms): the share of a step in the workers' compute, the loss graph left out of both
   * (it is not transport, and at hundreds of workers it would otherwise hide the transport's cost).
   */
  efficiency: number;
  /** Bytes per step the busiest link sends and receives (the hub's for ps / allreduce-hub, a worker's otherwise). */
  link_bytes_sent: number;
  link_bytes_received: number;
}

/** Wire milliseconds per byte at a bandwidth: 8 bits per byte, 1e9 bits per second = 1e6 bits per ms. */
export const wireMsPerByte = (gbit: number) => 8 / (gbit * 1e6);

/**
 * One transfer of `bytes` over a link, `hops` network hops: a fixed software cost per transfer, the latency of
 * each hop, and per byte the slower of software and wire (the chunks pipeline: while one chunk is on the wire
 * the next is being encoded, so the slower stage sets the pace rather than their sum).
 */
export function transferMs(m: ModelInputs, net: Network, bytes: number, hops: number): number {
  return m.messageMs + hops * net.latencyMs + bytes * Math.max(m.softwareMsPerByte, wireMsPerByte(net.gbitPerSecond));
}

/** Per-step bytes the busiest link sends and receives (see `predict` for when each moves). */
export function linkBytes(
  m: ModelInputs,
  design: Design,
  workers: number,
  perWorkerBatch: number,
): { sent: number; received: number } {
  const W = workers,
    P = m.paramBytes,
    z = m.projectionBytesPerImage * perWorkerBatch;
  switch (design) {
    // the coordinator's host (it runs the nats-server): out W copies of the parameters and W slices of dloss/dz;
    // in W gradients and W projections: 2 x P x W in all (down and up happen at different times of the step)
    case 'ps':
      return { sent: W * (P + z), received: W * (P + z) };
    // each shard phase moves (W-1)/W of the data per worker, and through one nats-server all W workers' traffic
    // crosses the server's link: W x 2 x P x (W-1)/W = 2 x P x (W-1) each way (+ the projections to the loss)
    case 'allreduce-hub':
      return { sent: 2 * P * (W - 1) + W * z, received: 2 * P * (W - 1) + W * z };
    // a worker's link: the ring's 2 x P x (W-1)/W each way, its projections up and its dloss/dz down
    case 'allreduce-ring':
    case 'allreduce-overlap':
      return both(ringBytes(P, W) + z);
    case 'allreduce-fp16':
      return both(ringBytes(P / 2, W) + z);
    // head1's factors cannot be summed on the way: every worker receives the other W-1 workers' factors
    case 'allreduce-factored':
      return both(ringBytes(P - m.head1WeightBytes, W) + (W - 1) * m.head1FactorBytesPerImage * perWorkerBatch + z);
  }
}

const both = (b: number) => ({ sent: b, received: b });

/** Ring all-reduce: reduce-scatter then all-gather, each W-1 steps of P/W bytes: 2 x P x (W-1)/W per worker. */
export const ringBytes = (P: number, W: number) => (2 * P * (W - 1)) / W;

/**
 * The predicted step of one design on W workers with `perWorkerBatch` images each (weak scaling: the global
 * batch grows with W, as the issue's peers scale).
 */
export function predict(
  measured: ModelInputs,
  design: Design,
  workers: number,
  net: Network,
  perWorkerBatch: number,
  transport: Transport = 'measured',
): Prediction {
  const m = transport === 'wire' ? { ...measured, softwareMsPerByte: 0 } : measured;
  const W = workers,
    P = m.paramBytes,
    z = m.projectionBytesPerImage * perWorkerBatch;
  const workerCompute = m.computeMsPerImage * perWorkerBatch;
  // NT-Xent over all 2B projections builds a 2B x 2B similarity matrix: quadratic in the global batch
  const loss = m.lossMs * ((W * perWorkerBatch) / m.lossGlobalBatch) ** 2;
  // every design gathers the projections at the coordinator and sends each worker its dloss/dz (W slices of z)
  const projections = 2 * transferMs(m, net, W * z, 1);
  let comm: number, aggregate: number;
  if (design === 'ps') {
    // down: the server writes W copies of P on its link; up: W gradients arrive on it; then the coordinator sums
    // W gradients and steps the optimizer, all on the critical path
    comm = transferMs(m, net, W * P, 1) + transferMs(m, net, W * P, 1);
    aggregate = W * P * m.sumMsPerByte + m.optimizerMs;
  } else if (design === 'allreduce-hub') {
    // 2(W-1) exchanges, each of W x P/W bytes across the server's link, two hops (worker -> server -> worker)
    comm = 2 * (W - 1) * transferMs(m, net, P, 2);
    aggregate = ((W - 1) / W) * P * m.sumMsPerByte + m.optimizerMs;
  } else {
    const bytesP = design === 'allreduce-fp16' ? P / 2 : design === 'allreduce-factored' ? P - m.head1WeightBytes : P;
    // ring: 2(W-1) steps in sequence, each moving P/W bytes to the neighbour (one hop) while receiving as much
    const ring = 2 * (W - 1) * transferMs(m, net, bytesP / W, 1);
    // head1 as factors: an all-gather of W-1 workers' factors (ring: W-1 steps of one worker's factors)
    const factors =
      design === 'allreduce-factored'
        ? (W - 1) * transferMs(m, net, m.head1FactorBytesPerImage * perWorkerBatch, 1)
        : 0;
    const total = ring + factors;
    if (design === 'allreduce-ring') comm = total;
    else {
      // bucketed: head1 is the last layer forward, so its gradient is the first one backward; its bucket (head1's
      // share of the bytes) goes while the rest of the backward pass runs, which hides up to that much time
      const headShare = design === 'allreduce-factored' ? factors / Math.max(total, 1e-9) : m.head1WeightBytes / P;
      const window = m.backwardOnlyMsPerImage * perWorkerBatch;
      comm = total - Math.min(headShare * total, window);
    }
    // each worker sums (W-1)/W of the gradient (its shard, W-1 incoming pieces) and steps the full optimizer
    aggregate = ((W - 1) / W) * bytesP * m.sumMsPerByte + m.optimizerMs;
  }
  const step = workerCompute + loss + projections + comm + aggregate;
  const link = linkBytes(m, design, W, perWorkerBatch);
  return {
    design,
    transport,
    workers: W,
    gbit_per_second: net.gbitPerSecond,
    latency_ms: net.latencyMs,
    step_ms: round(step, 1),
    compute_ms: round(workerCompute, 1),
    loss_ms: round(loss, 1),
    efficiency: round(workerCompute / (step - loss), 3),
    link_bytes_sent: Math.round(link.sent),
    link_bytes_received: Math.round(link.received),
  };
}

export const WORKER_COUNTS = [2, 4, 8, 16, 32, 64, 128, 256];
export const BANDWIDTHS_GBIT = [1, 10, 100];

/** Every transport x design x bandwidth x worker count. */
export function simulate(
  m: ModelInputs,
  o: { latencyMs: number; perWorkerBatch: number; workers?: number[]; gbit?: number[] },
): Prediction[] {
  const out: Prediction[] = [];
  for (const transport of TRANSPORTS) {
    for (const design of DESIGNS) {
      for (const gbit of o.gbit ?? BANDWIDTHS_GBIT) {
        for (const W of o.workers ?? WORKER_COUNTS) {
          out.push(predict(m, design, W, { gbitPerSecond: gbit, latencyMs: o.latencyMs }, o.perWorkerBatch, transport));
        }
      }
    }
  }
  return out;
}

/** Markdown: per transport and bandwidth, step ms (efficiency %) by design x workers; then MB per link. */
export function markdownTable(rows: Prediction[]): string {
  const workers = [...new Set(rows.map(r => r.workers))];
  const head = (first: string) =>
    `| ${first} | ${workers.map(w => `${w}`).join(' | ')} |\n|---|${workers.map(() => '---:').join('|')}|\n`;
  let md = '';
  for (const transport of TRANSPORTS) {
    for (const gbit of [...new Set(rows.map(r => r.gbit_per_second))]) {
      md += `\n**${gbit} Gbit/s, ${transport} transport**: predicted step ms (efficiency %) by workers\n\n`;
      md += head('design');
      for (const design of DESIGNS) {
        const cells = workers
          .map(w =>
            rows.find(
              r => r.design === design && r.workers === w && r.gbit_per_second === gbit && r.transport === transport,
            ),
          )
          .map(r => (r ? `${fmtMs(r.step_ms)} (${Math.round(100 * r.efficiency)})` : ''));
        md += `| ${design} | ${cells.join(' | ')} |\n`;
      }
    }
  }
  md +=
    `\nThe coordinator's loss graph in every step above (ms, quadratic in the global batch): ` +
    workers.map(w => `${w}: ${fmtMs(rows.find(r => r.workers === w)?.loss_ms ?? NaN)}`).join(', ') +
    '\n';
  md += `\n**MB per step on the busiest link, sent + received** (the same at every bandwidth)\n\n${head('design')}`;
  for (const design of DESIGNS) {
    const cells = workers
      .map(w => rows.find(r => r.design === design && r.workers === w))
      .map(r => (r ? mb(r.link_bytes_sent + r.link_bytes_received) : ''));
    md += `| ${design} | ${cells.join(' | ')} |\n`;
  }
  return md;
}

const mb = (b: number) => (b / 1e6).toFixed(b < 1e8 ? 1 : 0);
const fmtMs = (ms: number) => (ms >= 10_000 ? ms.toFixed(0) : ms >= 100 ? ms.toFixed(0) : ms.toFixed(1));
const round = (x: number, d: number) => Math.round(x * 10 ** d) / 10 ** d;
