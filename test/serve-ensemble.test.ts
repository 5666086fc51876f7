// Fan-out ensembles on a real nats-server: a server whose ensemble has a local member, a member hosted by a
// second server over the bus, a member nobody hosts and one that never answers. The aggregated answers equal
// the members run directly; the quorum policy decides between an answer (with the missing members reported
// in the response parameters and counted) and UNAVAILABLE / DEADLINE_EXCEEDED.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import * as grpc from '@grpc/grpc-js';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { connectNats, type NatsTransport } from '../bus/nats-transport.ts';
import { inferSubject } from '../bus/subjects.ts';
import { InferenceServer } from '../serving/grpc-server.ts';
import { decodeStreamResponse } from '../serving/protocol.ts';
import { createMetrics, type Metrics } from '../telemetry/metrics.ts';
import { hardVote } from '../engine/ensemble/combine.ts';
import {
  connect,
  expectStatus,
  cnnModel,
  images,
  direct,
  output,
  maxAbsDiff,
  param,
  IMG,
  type Clients,
} from './helpers/serve.ts';

const S = grpc.status;
const available = natsServerAvailable();

describe('serve: fan-out ensembles with remote members over NATS', function () {
  if (!available) {
    it('needs nats-server on the PATH (apt-get install nats-server)', () =>
      assert.fail('nats-server is not installed'));
    return;
  }
  let nats: NatsServerHandle, busA: NatsTransport, busB: NatsTransport, hung: NatsTransport;
  let dir: string, serverA: InferenceServer, serverB: InferenceServer, metrics: Metrics, c: Clients;
  const a = cnnModel(31),
    b = cnnModel(32);

  const model = (repo: string, name: string, bytes?: Uint8Array, config?: string) => {
    fs.mkdirSync(path.join(repo, name, '1'), { recursive: true });
    if (bytes) fs.writeFileSync(path.join(repo, name, '1', 'model.onnx'), bytes);
    else fs.rmdirSync(path.join(repo, name, '1'));
    if (config) fs.writeFileSync(path.join(repo, name, 'config.yaml'), config);
  };
  const ensemble = (members: string, extra = '') => `ensemble:\n  members:\n${members}${extra}`;
  const infer = (name: string, pixels: Uint8Array, n: number) =>
    c.call('ModelInfer', {
      model_name: name,
      inputs: [{ name: 'input', datatype: 'UINT8', shape: [n, IMG] }],
      raw_input_contents: [Buffer.from(pixels)],
    });
  const unavailableCount = async (m: string) =>
    (await metrics.membersUnavailable.get()).values.filter(v => v.labels.model === m).reduce((s, v) => s + v.value, 0);

  before(async () => {
    // a small max_payload: 40 images (125 KB) must go to a remote member as several messages
    nats = await startNatsServer({ maxPayload: 64 * 1024 });
    [busA, busB, hung] = await Promise.all([connectNats(nats.url), connectNats(nats.url), connectNats(nats.url)]);
    // a member that takes requests and never answers
    hung.subscribe(inferSubject('h'), () => {}, { queue: 'fleet-serve' });
    await hung.flush();
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-serve-ens-'));
    const repoA = path.join(dir, 'a'),
      repoB = path.join(dir, 'b');
    model(repoA, 'a', a);
    model(repoB, 'b', b);
    const abc =
      '    - { name: a, weight: 0.6 }\n    - { name: b, weight: 0.4, remote: true }\n    - { name: c, weight: 1, remote: true }\n';
    model(repoA, 'ens', undefined, ensemble(abc, '  aggregation: weighted\n  quorum: 2\n  deadline_ms: 5000\n'));
    model(repoA, 'ens-strict', undefined, ensemble(abc, '  quorum: 3\n  deadline_ms: 5000\n'));
    model(
      repoA,
      'ens-hung',
      undefined,
      ensemble('    - { name: a }\n    - { name: h, remote: true }\n', '  deadline_ms: 400\n'),
    );
    model(
      repoA,
      'ens-hard',
      undefined,
      ensemble(
        '    - { name: a, weight: 0.6 }\n    - { name: b, weight: 0.4, remote: true }\n',
        '  aggregation: hard\n',
      ),
    );
    // two ensembles that ask each other over the bus: a loop that only the propagated deadline ends
    model(
      repoA,
      'loop-x',
      undefined,
      ensemble('    - { name: a }\n    - { name: loop-y, remote: true }\n', '  deadline_ms: 1500\n'),
    );
    model(repoA, 'loop-y', undefined, ensemble('    - { name: loop-x, remote: true }\n', '  deadline_ms: 1500\n'));
    model(
      repoA,
      'ens-soft',
      undefined,
      ensemble(
        '    - { name: a, weight: 0.9 }\n    - { name: b, weight: 0.1, remote: true }\n',
        '  aggregation: soft\n',
      ),
    );
    const old = new Date(Date.now() - 60_000);
    for (const r of [repoA, repoB])
      for (const f of fs.readdirSync(r, { recursive: true }) as string[]) fs.utimesSync(path.join(r, f), old, old);
    metrics = createMetrics({ defaultMetrics: false });
    serverB = new InferenceServer({ models: repoB, bus: busB, runtime: { threads: 1 }, pollMs: 200 });
    await serverB.start('127.0.0.1', 0);
    serverA = new InferenceServer({ models: repoA, bus: busA, runtime: { threads: 1 }, pollMs: 200, metrics });
    c = connect(`127.0.0.1:${await serverA.start('127.0.0.1', 0)}`);
    await busB.flush();
  });

  after(async () => {
    c?.close();
    await serverA?.stop();
    await serverB?.stop();
    for (const bus of [busA, busB, hung]) await bus?.close();
    await nats?.dispose();
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  it('quorum 2 of 3 with member c hosted nowhere: the weighted vote of a (local) and b (remote), c reported missing and counted', async () => {
    const n = 3,
      { pixels } = images(n, 1);
    const [pa, pb] = [(await direct(a, pixels, n)).probabilities, (await direct(b, pixels, n)).probabilities];
    const r = await infer('ens', pixels, n);
    const want = pa.map((p, i) => 0.6 * p + 0.4 * pb[i]);
    assert.ok(maxAbsDiff(output(r, 'probabilities').data, want) < 1e-5);
    assert.equal(param(r, 'ensemble_members_answered'), 2);
    assert.equal(param(r, 'ensemble_members_total'), 3);
    assert.equal(param(r, 'ensemble_members_used'), 'a,b');
    assert.match(String(param(r, 'ensemble_members_missing')), /^c \(no responders/);
    assert.equal(param(r, 'ensemble_quorum'), 2);
    assert.ok((await unavailableCount('ens')) >= 1);
  });

  it('a batch larger than one NATS message goes to the remote member in parts and comes back whole', async () => {
    const n = 40,
      { pixels } = images(n, 2);
    const [pa, pb] = [(await direct(a, pixels, n)).probabilities, (await direct(b, pixels, n)).probabilities];
    const r = await infer('ens', pixels, n);
    assert.ok(
      maxAbsDiff(
        output(r, 'probabilities').data,
        pa.map((p, i) => 0.6 * p + 0.4 * pb[i]),
      ) < 1e-5,
    );
  });

  it('hard and soft aggregation over a local and a remote member', async () => {
    const n = 6,
      { pixels } = images(n, 3);
    const [pa, pb] = [(await direct(a, pixels, n)).probabilities, (await direct(b, pixels, n)).probabilities];
    const hard = await infer('ens-hard', pixels, n);
    assert.deepEqual(output(hard, 'predicted_class').data, Array.from(hardVote([pa, pb], 10, [0.6, 0.4])));
    assert.equal(param(hard, 'ensemble_aggregation'), 'hard');
    const soft = await infer('ens-soft', pixels, n);
    assert.ok(
      maxAbsDiff(
        output(soft, 'probabilities').data,
        pa.map((p, i) => (p + pb[i]) / 2),
      ) < 1e-5,
      'soft ignores the weights',
    );
  });

  it('quorum 3 of 3 with c missing: UNAVAILABLE, naming the member and why', async () => {
    await expectStatus(
      infer('ens-strict', images(1, 4).pixels, 1),
      S.UNAVAILABLE,
      /2 of 3 members answered.*quorum is 3; missing: c \(no responders/,
    );
  });

  it('a member that takes the request and never answers: DEADLINE_EXCEEDED after deadline_ms', async () => {
    await expectStatus(
      infer('ens-hung', images(1, 5).pixels, 1),
      S.DEADLINE_EXCEEDED,
      /missing: h \(.*(400 ms|timed out)/,
    );
    assert.ok((await unavailableCount('ens-hung')) >= 1);
  });

  it("ensembles that ask each other in a loop: the asker's deadline travels with each request, so the loop stops", async () => {
    let asked = 0;
    const spy = hung.subscribe(inferSubject('loop-x'), () => {
      asked++;
    });
    await hung.flush();
    try {
      const t0 = Date.now();
      await expectStatus(infer('loop-x', images(1, 8).pixels, 1), S.DEADLINE_EXCEEDED, /loop-y/);
      assert.ok(Date.now() - t0 < 5000, `answered after ${Date.now() - t0} ms`);
      await new Promise(r => setTimeout(r, 300));
      const after = asked;
      await new Promise(r => setTimeout(r, 2000));
      assert.equal(asked, after, 'requests went on circling after the first one was answered');
    } finally {
      spy.unsubscribe();
    }
  });

  it('a malformed request on fleet.infer.b gets an error answer; then the remote server goes down and the ensemble loses its quorum', async () => {
    const reply = decodeStreamResponse(
      (await busA.request(inferSubject('b'), new Uint8Array([0xff, 0xff, 0xff, 0x01, 0x02]), 5000)).data,
    );
    assert.match(reply.error_message, /not a ModelInferRequest/);
    const ok = await infer('ens', images(1, 6).pixels, 1);
    assert.equal(param(ok, 'ensemble_members_answered'), 2, 'b still answers');

    await serverB.stop();
    await busB.flush();
    await expectStatus(
      infer('ens', images(1, 7).pixels, 1),
      S.UNAVAILABLE,
      /1 of 3 members answered.*b \(no responders.*c \(no responders/,
    );
  });
});
