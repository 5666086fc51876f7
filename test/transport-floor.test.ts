// The transport floor of fleet bench scale (bench/transport-floor.ts): the payload must really travel to every
// echo process and back intact, through a real nats-server with a small max_payload (many chunks).
import { strict as assert } from 'node:assert';
import { startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { transportFloor } from '../bench/transport-floor.ts';

describe('bench: the transport floor of fleet bench scale', function () {
  let nats: NatsServerHandle;
  before(async () => {
    nats = await startNatsServer({ maxPayload: 64 * 1024 });
  });
  after(async () => {
    await nats.dispose();
  });

  it('sends 300 KB to 2 echo processes and gets the same bytes back from each, every round', async () => {
    const r = await transportFloor(nats.url, 300_000, 2, 3);
    assert.equal(r.payload_bytes, 300_000);
    assert.equal(r.receivers, 2);
    assert.equal(r.rounds, 2); // the first round is a warm-up
    assert.equal(r.round_trip_ms.length, 2);
    for (const ms of r.round_trip_ms) assert.ok(ms > 0 && Number.isFinite(ms), `round trip ${ms} ms`);
    assert.ok(
      r.round_trip_ms_median >= r.down_ms_median,
      `round trip ${r.round_trip_ms_median} ms < down ${r.down_ms_median} ms`,
    );
  });
});
