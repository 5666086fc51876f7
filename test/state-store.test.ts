// The coordinator's StateStore contract, for both stores: a directory, and JetStream (KV + object store)
// on a real nats-server started with JetStream and a 64 KB max_payload, so that member-sized blobs must
// go through the object store.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { randomBytes } from 'node:crypto';
import { Objm } from '@nats-io/obj';
import { jetstreamManager } from '@nats-io/jetstream';
import { DirStateStore, type StateStore } from '../coordinator/state-store.ts';
import { JetStreamStateStore } from '../coordinator/jetstream-state-store.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';

const enc = (s: string) => new TextEncoder().encode(s);
const dec = (b: Uint8Array | null) => (b === null ? null : new TextDecoder().decode(b));
const MAX_PAYLOAD = 64 * 1024;

const BAD_KEYS = [
  '',
  '/abs',
  'trailing/',
  'a//b',
  '../up',
  'a/../b',
  'a/./b',
  '.hidden',
  'a.',
  'a..b',
  'back\\slash',
  'nul\u0000',
  'with space',
  'star*',
  'gt>',
  'caf\u00e9',
  'a\nb',
];

/** The contract every store keeps; `fresh` gives an empty store. */
function contract(name: string, fresh: () => Promise<StateStore>) {
  describe(`${name}: the StateStore contract`, () => {
    let s: StateStore;
    beforeEach(async () => {
      s = await fresh();
    });

    it('put/get round-trips bytes and strings; a missing key reads as null', async () => {
      assert.equal(await s.get('jobs/j1/job.json'), null);
      await s.put('jobs/j1/job.json', '{"id":"j1"}');
      const bytes = Uint8Array.from([0, 1, 2, 255, 0]);
      await s.put('jobs/j1/results/member-1.result', bytes);
      assert.equal(dec(await s.get('jobs/j1/job.json')), '{"id":"j1"}');
      assert.deepEqual(await s.get('jobs/j1/results/member-1.result'), bytes);
      await s.put('empty', new Uint8Array(0));
      assert.deepEqual(await s.get('empty'), new Uint8Array(0));
    });

    it('put replaces the value; list gives the keys under a folder, sorted; delete removes one key', async () => {
      for (const k of [
        'jobs/b/job.json',
        'jobs/a/job.json',
        'jobs/a/results/m-2.result',
        'jobs/a/results/m-1.result',
        'other/x',
      ])
        await s.put(k, k);
      await s.put('jobs/a/job.json', 'second');
      assert.equal(dec(await s.get('jobs/a/job.json')), 'second');
      assert.deepEqual(await s.list('jobs/'), [
        'jobs/a/job.json',
        'jobs/a/results/m-1.result',
        'jobs/a/results/m-2.result',
        'jobs/b/job.json',
      ]);
      assert.deepEqual(await s.list('jobs/a/results/'), ['jobs/a/results/m-1.result', 'jobs/a/results/m-2.result']);
      assert.deepEqual(await s.list('nothing/'), []);
      assert.equal((await s.list('')).length, 5);
      await s.delete('jobs/a/results/m-1.result');
      await s.delete('jobs/never/written'); // deleting what is not there is not an error
      assert.equal(await s.get('jobs/a/results/m-1.result'), null);
      assert.deepEqual(await s.list('jobs/a/results/'), ['jobs/a/results/m-2.result']);
      await assert.rejects(s.list('jobs'), /prefix/);
    });

    it('a blob 16x max_payload (1 MiB), and values around the inline limit, come back byte for byte, also when replaced', async () => {
      const big = randomBytes(16 * MAX_PAYLOAD);
      await s.put('jobs/j/results/member-1.result', big);
      assert.ok(Buffer.from((await s.get('jobs/j/results/member-1.result'))!).equals(big));
      for (const n of [MAX_PAYLOAD / 2 - 1, MAX_PAYLOAD / 2, MAX_PAYLOAD / 2 + 1, MAX_PAYLOAD + 1]) {
        const v = randomBytes(n);
        await s.put('edge', v);
        assert.ok(Buffer.from((await s.get('edge'))!).equals(v), `${n} bytes`);
      }
      // blob -> blob -> inline -> blob
      for (const v of [
        randomBytes(3 * MAX_PAYLOAD),
        randomBytes(2 * MAX_PAYLOAD),
        randomBytes(10),
        randomBytes(MAX_PAYLOAD),
      ]) {
        await s.put('jobs/j/results/member-1.result', v);
        assert.ok(Buffer.from((await s.get('jobs/j/results/member-1.result'))!).equals(v));
      }
    });

    it('replacing is atomic: readers racing with writers only ever see a whole old or new value', async () => {
      const values = [0, 1, 2, 3, 4, 5].map(i => Buffer.alloc(i % 2 ? 3 * MAX_PAYLOAD : 100, i + 1)); // blobs and inline values in turn
      await s.put('race', values[0]);
      const seen = new Set<number>();
      let writing = true;
      const reader = (async () => {
        while (writing) {
          const v = await s.get('race');
          assert.ok(v, 'the key never disappears while it is being replaced');
          const i = values.findIndex(x => x.equals(v!));
          assert.ok(i >= 0, `read a value that was never written (${v!.length} bytes, first byte ${v![0]})`);
          seen.add(i);
        }
      })();
      for (const v of values.slice(1)) await s.put('race', v);
      writing = false;
      await reader;
      assert.ok(Buffer.from((await s.get('race'))!).equals(values.at(-1)!));
      assert.ok(seen.size >= 1);
      await s.close(); // also ends the grace period of the replaced blobs
    });

    it('keys with odd characters, empty segments or . / .. are refused by put, get and delete; nothing is written', async () => {
      for (const k of BAD_KEYS) {
        await assert.rejects(s.put(k, 'x'), /invalid key/, `put ${JSON.stringify(k)}`);
        await assert.rejects(s.get(k), /invalid key/, `get ${JSON.stringify(k)}`);
        await assert.rejects(s.delete(k), /invalid key/, `delete ${JSON.stringify(k)}`);
      }
      assert.deepEqual(await s.list(''), []);
    });
  });
}

describe('state stores', function () {
  this.timeout(60_000);
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-store-'));
  let n = 0;
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  contract('directory', async () => new DirStateStore(path.join(tmp, `dir-${++n}`)));

  it('directory: keys are paths under the directory (the layout of --state DIR)', async () => {
    const dir = path.join(tmp, 'layout');
    const s = new DirStateStore(dir);
    await s.put('jobs/job-1/job.json', '{}');
    assert.equal(fs.readFileSync(path.join(dir, 'jobs', 'job-1', 'job.json'), 'utf8'), '{}');
    fs.writeFileSync(path.join(dir, 'jobs', 'job-1', 'job.json.tmp-1-2'), 'half'); // an interrupted atomic write
    assert.deepEqual(await s.list('jobs/'), ['jobs/job-1/job.json']);
  });

  describe('JetStream', () => {
    if (!natsServerAvailable()) {
      it('needs nats-server on the PATH', () => assert.fail('nats-server is not installed'));
      return;
    }
    let nats: NatsServerHandle;
    let bus: NatsTransport;
    before(async () => {
      nats = await startNatsServer({ jetstream: true, maxPayload: MAX_PAYLOAD });
      bus = await connectNats(nats.url, { name: 'state-store-test' });
    });
    after(async () => {
      await bus?.close();
      await nats?.dispose();
    });

    contract('JetStream', async () => JetStreamStateStore.open(bus.connection, { bucket: `contract-${++n}` }));

    it('the state survives a new connection and a restart of the nats-server', async () => {
      const s = await JetStreamStateStore.open(bus.connection, { bucket: 'durable' });
      const big = randomBytes(5 * MAX_PAYLOAD);
      await s.put('jobs/j/job.json', '{"state":"running"}');
      await s.put('jobs/j/results/member-1.result', big);
      await bus.close();
      await nats.restart();
      bus = await connectNats(nats.url, { name: 'state-store-test' });
      const again = await JetStreamStateStore.open(bus.connection, { bucket: 'durable' });
      assert.equal(dec(await again.get('jobs/j/job.json')), '{"state":"running"}');
      assert.ok(Buffer.from((await again.get('jobs/j/results/member-1.result'))!).equals(big));
      assert.deepEqual(await again.list('jobs/'), ['jobs/j/job.json', 'jobs/j/results/member-1.result']);
    });

    it('replaced and deleted blobs leave nothing behind; removeOrphanBlobs deletes a blob no key points to', async () => {
      const s = await JetStreamStateStore.open(bus.connection, { bucket: 'orphans', retireAfterMs: 0 });
      const objects = await new Objm(bus.connection).open('orphans');
      const live = async () => (await objects.list()).filter(i => !i.deleted).map(i => i.name);
      await s.put('a', randomBytes(2 * MAX_PAYLOAD));
      await s.put('a', randomBytes(2 * MAX_PAYLOAD));
      await s.put('b', randomBytes(2 * MAX_PAYLOAD));
      await s.put('b', 'small now');
      assert.equal((await live()).length, 1, `one blob for key a: ${await live()}`);
      await s.delete('a');
      assert.deepEqual(await live(), []);
      // a crash after the blob was written and before its key pointed to it
      await s.put('c', randomBytes(2 * MAX_PAYLOAD));
      await objects.putBlob({ name: 'c#crashed' }, randomBytes(100));
      assert.equal(await s.removeOrphanBlobs(), 1);
      assert.equal((await live()).length, 1);
      assert.equal((await s.get('c'))!.length, 2 * MAX_PAYLOAD);
    });

    it('a blob whose chunks vanish while it is read is a clear error, not a read that waits forever', async () => {
      const s = await JetStreamStateStore.open(bus.connection, { bucket: 'vanishing', readStallMs: 300 });
      await s.put('jobs/j/results/m.result', randomBytes(3 * MAX_PAYLOAD));
      const objects = await new Objm(bus.connection).open('vanishing');
      const [info] = await objects.list();
      // what a reader sees when a writer purges the blob between the reader's pointer and its chunks: meta, no chunks
      const jsm = await jetstreamManager(bus.connection);
      await jsm.streams.purge('OBJ_vanishing', { filter: `$O.vanishing.C.${info.nuid}` });
      await assert.rejects(s.get('jobs/j/results/m.result'), /jobs\/j\/results\/m\.result: its blob is missing/);
    });

    it('refuses a bad bucket name, and a server without JetStream, with a clear error', async () => {
      await assert.rejects(JetStreamStateStore.open(bus.connection, { bucket: 'no.dots' }), /invalid name "no\.dots"/);
      const plain = await startNatsServer();
      const b = await connectNats(plain.url, { name: 'no-js' });
      try {
        await assert.rejects(JetStreamStateStore.open(b.connection), /JetStream is not available.*-js.*--state DIR/);
      } finally {
        await b.close();
        await plain.dispose();
      }
    });
  });
});
