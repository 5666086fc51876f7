// A real Prometheus (Debian's `prometheus` binary) scrapes a real `fleet coordinator` and `fleet worker` with the
// shipped deploy/prometheus/prometheus.yml (only the targets rewritten to this test's ports and the interval
// shortened) while two tiny jobs run, then its HTTP API is asked what it stored: per-job series keep their
// `fleet_job` label apart (Prometheus owns `job`: a fleet label of that name would be renamed exported_job), the
// Grafana dashboard's job variable lists both jobs, and every Grafana panel's query returns data, except the
// panels listed in NEEDS_WORKLOAD with the workload this test does not run.
import { strict as assert } from 'node:assert';
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from './helpers/cli.ts';
import { ProcGroup, waitFor, type Coord } from '../bench/harness/fleet-procs.ts';
import { natsServerAvailable, startNatsServer, type NatsServerHandle } from '../bench/harness/nats-server.ts';

const PROMETHEUS = '/usr/bin/prometheus';
const SCRAPE_S = 1;
/** Grafana's $__rate_interval for a 1 s scrape interval (at least 4 scrapes). */
const RATE_INTERVAL = '5s';
/** Panels whose queries have no data without a workload this test does not run, and why. */
const NEEDS_WORKLOAD: Record<string, string> = {
  'Leading coordinator': 'a coordinator on JetStream state (the leader lease; test/standby.test.ts)',
  'Gradient aggregation': 'a data-parallel job',
  'Inference requests': 'inference requests (fleet serve / predict)',
  'Inference error ratio': 'inference requests',
  'Inference latency': 'inference requests',
  'Queue time (dynamic batching)': 'inference requests',
  'Batch size': 'inference requests',
  'Ensemble members unavailable': 'an ensemble served over the bus with a missing member',
  'Model load failures': 'a model repository with a broken model',
};

interface Series {
  metric: Record<string, string>;
  values?: [number, string][];
  value?: [number, string];
}

function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer().on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as net.AddressInfo;
      srv.close(() => resolve(port));
    });
  });
}

/** The shipped scrape configuration with its targets pointed at this test's processes. */
function scrapeConfig(coordinator: string, worker: string): string {
  const doc = YAML.parse(fs.readFileSync(path.join(REPO_ROOT, 'deploy/prometheus/prometheus.yml'), 'utf8'));
  doc.global.scrape_interval = `${SCRAPE_S}s`;
  doc.global.evaluation_interval = `${SCRAPE_S}s`;
  const jobs = new Map<string, any>(doc.scrape_configs.map((j: any) => [j.job_name, j]));
  assert.deepEqual([...jobs.keys()].sort(), ['fleet-coordinator', 'fleet-workers'], 'the shipped scrape jobs');
  jobs.get('fleet-coordinator').static_configs = [{ targets: [coordinator] }];
  const w = jobs.get('fleet-workers');
  assert.equal(w.dns_sd_configs[0].port, 9464, 'workers are scraped on the port their image exposes');
  delete w.dns_sd_configs;
  w.static_configs = [{ targets: [worker] }];
  return YAML.stringify(doc);
}

describe('Prometheus scrapes a coordinator and a worker with the shipped configuration', function () {
  this.timeout(240_000);
  if (!fs.existsSync(PROMETHEUS) || !natsServerAvailable()) {
    it('needs prometheus and nats-server (apt-get install prometheus nats-server; .ci/run does)', () =>
      assert.fail('not installed'));
    return;
  }
  const group = new ProcGroup();
  let nats: NatsServerHandle;
  let tmp: string;
  let prom: ChildProcess | undefined;
  let promLog = '';
  let api = '';
  let c: Coord;
  let started = 0;
  const jobIds: string[] = [];

  const query = async (pathAndQuery: string): Promise<any> => {
    const r = await fetch(`${api}${pathAndQuery}`);
    const body = (await r.json()) as { status: string; data: any; error?: string };
    assert.equal(body.status, 'success', `${pathAndQuery}: ${body.error}`);
    return body.data;
  };
  const range = async (expr: string): Promise<Series[]> =>
    (
      await query(
        `/api/v1/query_range?${new URLSearchParams({
          query: expr,
          start: String(started / 1000),
          end: String(Date.now() / 1000),
          step: '1',
        })}`,
      )
    ).result;
  const finite = (s: Series[]) => s.some(x => (x.values ?? []).some(([, v]) => Number.isFinite(Number(v))));

  before(async function () {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-prometheus-'));
    nats = await startNatsServer();
    c = await group.coordinator(nats.url, path.join(tmp, 'state'));
    const w = await group.worker(nats.url, 'pw', ['--http', '127.0.0.1:0']);
    const workerUrl = new URL((await w.waitForLog(/metrics at (http:\/\/[\d.]+:\d+\/metrics)/))[1]);
    const dir = path.join(tmp, 'prometheus');
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, 'prometheus.yml'), scrapeConfig(new URL(c.api).host, workerUrl.host));
    fs.copyFileSync(path.join(REPO_ROOT, 'deploy/prometheus/alerts.yml'), path.join(dir, 'alerts.yml'));
    const port = await freePort();
    api = `http://127.0.0.1:${port}`;
    started = Date.now();
    prom = spawn(
      PROMETHEUS,
      [
        `--config.file=${path.join(dir, 'prometheus.yml')}`,
        `--storage.tsdb.path=${path.join(dir, 'data')}`,
        `--web.listen-address=127.0.0.1:${port}`,
        '--log.level=warn',
      ],
      { stdio: ['ignore', 'pipe', 'pipe'] },
    );
    prom.stdout!.on('data', d => {
      promLog += d;
    });
    prom.stderr!.on('data', d => {
      promLog = (promLog + d).slice(-20_000);
    });
    await waitFor(
      async () => {
        if (prom!.exitCode !== null) throw new Error(`prometheus exited ${prom!.exitCode}: ${promLog}`);
        return (await fetch(`${api}/-/ready`)).status === 200;
      },
      30_000,
      'prometheus to be ready',
    );
    // two tiny jobs, one after the other, submitted as a user would
    for (const [i, members] of [
      [1, 1],
      [2, 2],
    ]) {
      const p = group.spawn(`submit ${i}`, [
        'train',
        'cnn',
        '--members',
        String(members),
        '--epochs',
        '1',
        '--limit-train',
        '1024',
        '--limit-test',
        '64',
        '--batch-size',
        '64',
        '--seed',
        String(i),
        '--nats',
        nats.url,
        '--out',
        path.join(tmp, `run-${i}`),
      ]);
      assert.equal((await p.exited).code, 0, p.stderr);
      jobIds.push(/submitted job (\S+)/.exec(p.stderr)![1]);
    }
    // a few scrapes after the last job, so that rates over the end of the run exist
    const last = Date.now();
    await waitFor(
      async () => {
        const up = (await query(`/api/v1/query?query=${encodeURIComponent('up')}`)).result as Series[];
        const scraped = await query(`/api/v1/query?query=${encodeURIComponent('timestamp(up)')}`);
        return (
          up.length === 2 &&
          up.every(s => s.value![1] === '1') &&
          (scraped.result as Series[]).every(s => Number(s.value![1]) * 1000 > last + 3000 * SCRAPE_S)
        );
      },
      30_000,
      'both targets up and scraped after the jobs',
    );
  });

  afterEach(function () {
    if (this.currentTest?.state === 'failed')
      process.stderr.write(`\n${group.describe()}\n----- prometheus\n${promLog}\n`);
  });

  after(async () => {
    if (prom && prom.exitCode === null) {
      const gone = new Promise(r => prom!.once('exit', r));
      prom.kill('SIGTERM');
      const t = setTimeout(() => prom!.kill('SIGKILL'), 5000);
      await gone;
      clearTimeout(t);
    }
    await group.killAll();
    await nats?.dispose();
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('per-job series keep their fleet_job label apart (not renamed exported_job); job is the scrape job', async () => {
    assert.equal(new Set(jobIds).size, 2);
    const series = (await query(
      `/api/v1/series?${new URLSearchParams({ 'match[]': 'fleet_training_loss', start: String(started / 1000) })}`,
    )) as Record<string, string>[];
    assert.ok(series.length > 0, 'no fleet_training_loss series');
    for (const s of series) {
      assert.equal(s.exported_job, undefined, `renamed by Prometheus: ${JSON.stringify(s)}`);
      assert.equal(s.job, 'fleet-coordinator', JSON.stringify(s));
      assert.ok(jobIds.includes(s.fleet_job), `fleet_job ${s.fleet_job} is not one of ${jobIds.join(', ')}`);
    }
    // the second job had two members, the first one
    const members = (id: string) => new Set(series.filter(s => s.fleet_job === id).map(s => s.member)).size;
    assert.deepEqual(jobIds.map(members), [1, 2]);
    // the Grafana variable's query (label_values(fleet_training_loss, fleet_job)) lists both jobs
    const dash = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'dashboard/grafana/fleet.json'), 'utf8'));
    const variable = dash.templating.list.find((v: any) => v.name === 'fleet_job');
    assert.ok(variable, 'the dashboard has a fleet_job variable');
    const [, metric, label] = /^label_values\((\w+),\s*(\w+)\)$/.exec(variable.query.query ?? variable.query)!;
    const values = await query(
      `/api/v1/label/${label}/values?${new URLSearchParams({ 'match[]': metric, start: String(started / 1000) })}`,
    );
    assert.deepEqual([...values].sort(), [...jobIds].sort());
    // filtering by one job keeps only that job's series
    const one = await range(`fleet_training_accuracy_ratio{fleet_job=~"${jobIds[0]}"}`);
    assert.ok(
      one.length > 0 && one.every(s => s.metric.fleet_job === jobIds[0]),
      JSON.stringify(one.map(s => s.metric)),
    );
  });

  it("every Grafana panel's query returns data, except the panels that need a workload this test does not run", async () => {
    const dash = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'dashboard/grafana/fleet.json'), 'utf8'));
    const panels: { title: string; exprs: string[] }[] = [];
    const walk = (ps: any[]) => {
      for (const p of ps ?? []) {
        if (p.targets?.length) panels.push({ title: p.title, exprs: p.targets.map((t: any) => t.expr) });
        walk(p.panels);
      }
    };
    walk(dash.panels);
    for (const t of Object.keys(NEEDS_WORKLOAD))
      assert.ok(
        panels.some(p => p.title === t),
        `NEEDS_WORKLOAD names no panel "${t}"`,
      );
    const empty: string[] = [],
      unexpected: string[] = [];
    for (const p of panels) {
      let data = false;
      for (const e of p.exprs) {
        const expr = e.replace(/\$__rate_interval/g, RATE_INTERVAL).replace(/\$\{?fleet_job\}?|\$\{?model\}?/g, '.*');
        assert.doesNotMatch(expr, /\$/, `panel "${p.title}": a variable this test does not know: ${e}`);
        if (finite(await range(expr))) data = true;
      }
      if (!data && !NEEDS_WORKLOAD[p.title]) empty.push(p.title);
      if (data && NEEDS_WORKLOAD[p.title]) unexpected.push(p.title);
    }
    assert.deepEqual(empty, [], 'panels without data');
    assert.deepEqual(unexpected, [], 'panels listed as needing a workload, yet with data (take them off the list)');
  });

  it('the shipped alert rules load and evaluate', async () => {
    const groups = (await query('/api/v1/rules')).groups as {
      name: string;
      rules: { name: string; health: string; lastError?: string }[];
    }[];
    assert.ok(groups.length > 0);
    for (const g of groups)
      for (const r of g.rules) assert.notEqual(r.health, 'err', `${g.name}/${r.name}: ${r.lastError}`);
  });
});
