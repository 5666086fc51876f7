// The floor under the data-parallel step's transport: the same bytes as one step's parameters and gradients
// through the same nats-server with nothing else to do. The coordinator side (this process) broadcasts one
// payload, chunked as the parameter versions are; each echo process (bench/transport-echo.ts, as many as the
// step has workers) reassembles and checks it, acknowledges, and sends it back (the size of a worker's
// gradient); the bytes that come back are compared with those sent (a memcmp, ~2 ms for 18 MB). No compute,
// no protobuf beyond the chunk envelopes, no optimizer.
import * as path from 'node:path';
import { spawn, type ChildProcess } from 'node:child_process';
import { fileURLToPath } from 'node:url';
import { randomBytes } from 'node:crypto';
import { connectNats } from '../bus/nats-transport.ts';
import { sendChunked, Reassembler } from '../bus/chunking.ts';
import { decodeEnvelope } from '../bus/codec.ts';
import type { BusMessage } from '../bus/transport.ts';
import { median } from './stats.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
export const FLOOR_SUBJECTS = {
  down: 'bench.floor.down',
  ack: 'bench.floor.ack',
  up: 'bench.floor.up',
  ready: 'bench.floor.ready',
};

export interface TransportFloor {
  payload_bytes: number;
  receivers: number;
  rounds: number;
  down_ms_median: number;
  round_trip_ms_median: number;
  round_trip_ms: number[];
}

/** Rounds of: broadcast `bytes` to `receivers` echo processes, each sends as many bytes back. Times per round. */
export async function transportFloor(
  url: string,
  bytes: number,
  receivers: number,
  rounds: number,
): Promise<TransportFloor> {
  const bus = await connectNats(url, { name: 'bench-floor' });
  const procs: ChildProcess[] = [];
  const payload = randomBytes(bytes);
  let stopping = false;
  try {
    let onReady = () => {},
      onAck = () => {},
      onUp = () => {},
      onFail = (_: Error) => {};
    const ready = new Set<string>();
    bus.subscribe(FLOOR_SUBJECTS.ready, m => {
      ready.add(new TextDecoder().decode(m.data));
      onReady();
    });
    bus.subscribe(FLOOR_SUBJECTS.ack, () => onAck());
    const up = new Reassembler({
      maxBytes: bytes + 1,
      onComplete: (_, back) =>
        Buffer.from(back.buffer, back.byteOffset, back.byteLength).equals(payload)
          ? onUp()
          : onFail(new Error('transport floor: an echo sent back other bytes')),
      onError: (_, reason) => onFail(new Error(`transport floor: ${reason}`)),
    });
    bus.subscribe(FLOOR_SUBJECTS.up, chunksTo(up));
    await bus.flush();
    const readyAll = new Promise<void>((resolve, reject) => {
      onReady = () => {
        if (ready.size === receivers) resolve();
      };
      onFail = reject;
    });
    for (let i = 0; i < receivers; i++) {
      const child = spawn(
        process.execPath,
        ['--import', 'tsx', path.join(ROOT, 'bench', 'transport-echo.ts'), url, `echo-${i}`, String(bytes)],
        { cwd: ROOT, stdio: ['ignore', 'ignore', 'inherit'] },
      );
      // an echo that dies fails the measurement at once instead of after the round's timeout
      child.once('exit', code => {
        if (!stopping) onFail(new Error(`transport floor: echo-${i} exited (${code})`));
      });
      procs.push(child);
    }
    await withTimeout(readyAll, 60_000, 'echo processes to start');
    const down: number[] = [],
      roundTrip: number[] = [];
    for (let r = 0; r < rounds; r++) {
      let acks = 0,
        ups = 0;
      const t0 = performance.now();
      const acked = new Promise<void>(resolve => {
        onAck = () => {
          if (++acks === receivers) {
            down.push(performance.now() - t0);
            resolve();
          }
        };
      });
      const back = new Promise<void>((resolve, reject) => {
        onUp = () => {
          if (++ups === receivers) {
            roundTrip.push(performance.now() - t0);
            resolve();
          }
        };
        onFail = reject;
      });
      await sendChunked(bus, FLOOR_SUBJECTS.down, payload, { sender: 'bench-floor' });
      await withTimeout(Promise.all([acked, back]), 60_000, `round ${r} of the transport floor`);
    }
    // the first round warms up connections and buffers, like the step benchmark's warm-up steps
    const counted = roundTrip.slice(1),
      countedDown = down.slice(1);
    return {
      payload_bytes: bytes,
      receivers,
      rounds: counted.length,
      down_ms_median: round1(median(countedDown)),
      round_trip_ms_median: round1(median(counted)),
      round_trip_ms: counted.map(round1),
    };
  } finally {
    stopping = true;
    for (const p of procs) p.kill('SIGTERM');
    await bus.close();
  }
}

/** A subscription handler that feeds the chunk envelopes on a subject to a Reassembler (anything else is a bug here). */
export const chunksTo = (r: Reassembler) => (m: BusMessage) => {
  const d = decodeEnvelope(m.data);
  if (d.ok && d.envelope.body.kind === 'chunk') r.accept(d.envelope.body.value);
  else throw new Error(`transport floor: not a chunk on ${m.subject}`);
};

const round1 = (x: number) => Math.round(x * 10) / 10;

function withTimeout<T>(p: Promise<T>, ms: number, what: string): Promise<T> {
  let timer: NodeJS.Timeout;
  return Promise.race([
    p,
    new Promise<never>((_, reject) => {
      timer = setTimeout(() => reject(new Error(`timed out after ${ms} ms waiting for ${what}`)), ms);
    }),
  ]).finally(() => clearTimeout(timer));
}
