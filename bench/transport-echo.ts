// One echo process of bench/transport-floor.ts: receives each broadcast payload (reassembled and checked as
// a worker does), acknowledges it, and sends it back (as many bytes as a worker's gradient).
// Usage: node --import tsx bench/transport-echo.ts NATS_URL ID BYTES
import { connectNats } from '../bus/nats-transport.ts';
import { sendChunked, Reassembler } from '../bus/chunking.ts';
import { FLOOR_SUBJECTS, chunksTo } from './transport-floor.ts';

const [url, id, size] = process.argv.slice(2);
const bytes = Number(size);
const bus = await connectNats(url, { name: id });
const down = new Reassembler({
  maxBytes: bytes + 1,
  onComplete: (_, payload) => {
    bus.publish(FLOOR_SUBJECTS.ack, new TextEncoder().encode(id));
    void sendChunked(bus, FLOOR_SUBJECTS.up, payload, { sender: id }); // the same bytes back: the sender checks them
  },
  onError: (_, reason) => {
    process.stderr.write(`${id}: ${reason}\n`);
    process.exit(1);
  },
});
bus.subscribe(FLOOR_SUBJECTS.down, chunksTo(down));
await bus.flush();
bus.publish(FLOOR_SUBJECTS.ready, new TextEncoder().encode(id));
process.on('SIGTERM', () => {
  void bus.close().then(() => process.exit(0));
});
