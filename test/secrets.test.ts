// Secrets never leave the process: a NATS password given in the --nats URLs of a coordinator, a worker and a
// submitting `fleet train` appears in none of their outputs (stdout JSON, logs), none of the files they write
// (the run's metrics.json, the job state and outputs) and none of the coordinator's API answers (/api/cluster,
// /api/jobs, /api/runs, a run's details, /metrics); where the URL is recorded it is redacted (util/redact.ts).
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { ProcGroup, getJson } from '../bench/harness/fleet-procs.ts';
import { startNatsServer, natsServerAvailable, type NatsServerHandle } from '../bench/harness/nats-server.ts';
import { redactUrl, redactUrls, urlSecrets } from '../util/redact.ts';
import { runFleet, listFiles } from './helpers/cli.ts';

const SECRET = 'Hunter2-s3cret-in-url';

const getText = (url: string) =>
  new Promise<string>((resolve, reject) => {
    http
      .get(url, res => {
        let t = '';
        res
          .setEncoding('utf8')
          .on('data', (d: string) => {
            t += d;
          })
          .on('end', () => resolve(t));
      })
      .on('error', reject);
  });

describe('secrets: redactUrl', () => {
  it('hides a password or a token in every URL of a text, and nothing else', () => {
    assert.equal(redactUrl('nats://fleet:pw@host:4222'), 'nats://fleet:***@host:4222');
    assert.equal(redactUrl('nats://tok3n@host:4222'), 'nats://***@host:4222');
    assert.equal(redactUrl('nats://host:4222'), 'nats://host:4222');
    assert.equal(redactUrl('nats://u:p@ss@host:4222'), 'nats://u:***@host:4222', 'an @ inside the password');
    assert.equal(
      redactUrls('servers nats://a:x1@h1:4222,tls://b:x2@h2:4222 and http://h3/p@q'),
      'servers nats://a:***@h1:4222,tls://b:***@h2:4222 and http://h3/p@q',
    );
    assert.deepEqual(urlSecrets('nats://u:p%40ss@h'), ['p%40ss', 'p@ss']);
  });
});

describe('secrets: a password in --nats URLs reaches no output, file or API', function () {
  this.timeout(600_000);
  if (!natsServerAvailable()) {
    it('needs nats-server on the PATH', () => assert.fail('nats-server is not installed'));
    return;
  }
  const group = new ProcGroup();
  let nats: NatsServerHandle, dir: string;
  before(async () => {
    nats = await startNatsServer({ user: 'fleet', pass: SECRET });
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-secrets-'));
  });
  afterEach(function () {
    if (this.currentTest?.state === 'failed') process.stderr.write(`\n${group.describe()}\n`);
  });
  after(async () => {
    await group.killAll();
    await nats?.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  it('coordinator, worker and fleet train with user:password@ in --nats: only nats://fleet:***@ is shown', async () => {
    const url = `nats://fleet:${SECRET}@127.0.0.1:${nats.port}`;
    const redacted = `nats://fleet:***@127.0.0.1:${nats.port}`;
    const state = path.join(dir, 'state'),
      runs = path.join(dir, 'runs'),
      out = path.join(runs, 'r1');
    // a run written by an older fleet, with the password in its metrics.json: the API still shows it redacted
    fs.mkdirSync(path.join(runs, 'old'), { recursive: true });
    const planted = path.join(runs, 'old', 'metrics.json');
    fs.writeFileSync(planted, JSON.stringify({ model: 'cnn', test_accuracy: 0.5, cluster: url }));
    const c = await group.coordinator(url, state, ['--runs', runs]);
    const w = await group.worker(url, 'w1');
    const r = await runFleet(
      [
        'train',
        'cnn',
        '--members',
        '2',
        '--epochs',
        '1',
        '--batch-size',
        '32',
        '--limit-train',
        '128',
        '--limit-test',
        '32',
        '--nats',
        url,
        '--out',
        out,
        '--json',
      ],
      { timeoutMs: 540_000 },
    );
    assert.equal(r.code, 0, r.stderr);

    // the URL is recorded where it was before, redacted: stdout JSON and the run's metrics.json
    const summary = JSON.parse(r.stdout.trim().split('\n').at(-1)!);
    assert.equal(summary.cluster, redacted);
    const metrics = fs.readFileSync(path.join(out, 'metrics.json'), 'utf8');
    assert.equal(JSON.parse(metrics).cluster, redacted);

    // the API serves that run (and the job), with no secret in any answer
    const api: string[] = [];
    const paths = [
      '/api/cluster',
      '/api/jobs',
      '/api/runs',
      '/api/runs/r1',
      '/api/runs/old',
      `/api/runs/${summary.job ?? ''}`,
    ];
    for (const p of paths) {
      const res = await getJson(`${c.api}${p}`).catch(e => ({ status: 0, body: String(e) }));
      api.push(`${p}: ${JSON.stringify(res.body)}`);
    }
    for (const run of ['r1', 'old']) {
      assert.ok(
        api.some(a => a.startsWith(`/api/runs/${run}:`) && a.includes(redacted)),
        `run ${run} is served with its redacted URL: ${api.join('\n')}`,
      );
    }
    api.push(await getText(`${c.api}/metrics`));
    for (const a of api) assert.ok(!a.includes(SECRET), `an API answer holds the password: ${a.slice(0, 300)}`);

    // no file written by anyone, and no output of any process
    const files = [...listFiles(runs).map(f => path.join(runs, f)), ...listFiles(state).map(f => path.join(state, f))];
    assert.ok(files.length > 5, files.join(', '));
    for (const f of files.filter(f => f !== planted)) {
      assert.ok(!fs.readFileSync(f).toString('latin1').includes(SECRET), `${f} holds the password`);
    }
    const outputs = [
      ['train stdout', r.stdout],
      ['train stderr', r.stderr],
      ['coordinator', c.proc.stderr + c.proc.stdout],
      ['worker', w.stderr + w.stdout],
    ];
    for (const [name, text] of outputs) {
      assert.ok(!text.includes(SECRET), `${name} printed the password`);
    }
  });
});
