// The built-in dashboard, as the embedded default serves it: a Coordinator and workers on the in-process bus
// in this process, serveHttp on a free port, and a real headless Chromium (Debian `chromium`, driven by
// playwright-core). The page follows a tiny selection ensemble live over server-sent events; the test checks
// what was drawn (chart points, canvas pixels, the digits' pixels against the MNIST test set), then saves a
// screenshot under test-artifacts/. Without a browser only the HTTP checks run.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import type * as http from 'node:http';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { startEmbedded, tinyJob, waitJobDone, type Embedded } from './helpers/embedded.ts';
import { waitFor, getJson } from '../bench/harness/fleet-procs.ts';
import { runFleet, REPO_ROOT } from './helpers/cli.ts';
import { serveHttp } from '../coordinator/http.ts';
import { loadDataset, IMAGE_SIZE } from '../engine/data/datasets.ts';

const CHROMIUM = '/usr/bin/chromium';
const ARTIFACTS = path.join(REPO_ROOT, 'test-artifacts');
const MEMBERS = 3,
  EPOCHS = 2,
  LIMIT_TRAIN = 256,
  LIMIT_TEST = 100,
  BATCH = 32;

function get(url: string): Promise<{ status: number; type: string; body: string }> {
  return fetch(url).then(async r => ({
    status: r.status,
    type: r.headers.get('content-type') ?? '',
    body: await r.text(),
  }));
}

describe('dashboard (embedded coordinator + workers, headless Chromium)', function () {
  this.timeout(300_000);
  let e: Embedded, server: http.Server, base: string, runsDir: string;
  let context: BrowserContext | null = null,
    page: Page;
  let userDataDir: string;
  const test = loadDataset('mnist').test;

  before(async () => {
    runsDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-dash-runs-'));
    // a real MIL run for the bag view, and an unreadable run directory the list must survive
    const mil = await runFleet(
      [
        'train',
        'mil',
        '--bags',
        '10',
        '--test-bags',
        '6',
        '--epochs',
        '1',
        '--threads',
        '1',
        '--out',
        path.join(runsDir, 'mil-tiny'),
      ],
      { timeoutMs: 180_000 },
    );
    assert.equal(mil.code, 0, mil.stderr);
    fs.mkdirSync(path.join(runsDir, 'broken'));
    fs.writeFileSync(path.join(runsDir, 'broken', 'metrics.json'), '{"model": "cnn", "test_acc');
    e = startEmbedded(2, { batchProgressMs: 0 });
    server = await serveHttp(e.c, '127.0.0.1', 0, { runsDir });
    base = `http://127.0.0.1:${(server.address() as { port: number }).port}`;
  });
  after(async () => {
    await context?.close();
    server?.close();
    await e?.stop();
    for (const d of [runsDir, userDataDir]) if (d) fs.rmSync(d, { recursive: true, force: true });
  });

  it('serves the page, its modules and uPlot from node_modules (no CDN), and nothing else from disk', async () => {
    const index = await get(`${base}/`);
    assert.equal(index.status, 200);
    assert.match(index.type, /text\/html/);
    assert.doesNotMatch(index.body, /https?:\/\//, 'no external URLs');
    for (const src of [...index.body.matchAll(/(?:src|href)="(\/[^"]+)"/g)].map(m => m[1])) {
      const r = await get(`${base}${src}`);
      assert.equal(r.status, 200, src);
    }
    const uplot = await get(`${base}/vendor/uPlot.iife.min.js`);
    assert.equal(
      uplot.body,
      fs.readFileSync(path.join(REPO_ROOT, 'node_modules/uplot/dist/uPlot.iife.min.js'), 'utf8'),
    );
    for (const p of [
      '/../package.json',
      '/vendor/../../package.json',
      '/dashboard/web/index.html',
      '/node_modules/uplot/package.json',
    ]) {
      assert.equal((await get(`${base}${p}`)).status, 404, p);
    }
    assert.equal((await getJson(`${base}/api/runs/nope`)).status, 404);
    assert.equal((await getJson(`${base}/api/runs/..%2F..%2Fetc`)).status, 404);
  });

  it('lists the runs it knows; an unreadable metrics.json is reported, not fatal', async () => {
    const runs = (await getJson(`${base}/api/runs`)).body as { id: string; kind: string; error?: string }[];
    assert.equal(runs.find(r => r.id === 'mil-tiny')?.kind, 'mil');
    const broken = runs.find(r => r.id === 'broken')!;
    assert.equal(broken.kind, 'unreadable');
    assert.match(broken.error!, /broken\/metrics\.json: not a valid metrics\.json/);
    const r = await getJson(`${base}/api/runs/broken`);
    assert.equal(r.status, 422);
    assert.equal((await getJson(`${base}/api/runs/mil-tiny/bags/6`)).status, 404);
    assert.match((await getJson(`${base}/api/runs/mil-tiny/bags/6`)).body.error, /test bags 0\.\.5/);
  });

  it("the MIL bag endpoint gives the instances' pixels from the test set, with attention summing to 1", async () => {
    const m = JSON.parse(fs.readFileSync(path.join(runsDir, 'mil-tiny', 'metrics.json'), 'utf8'));
    const b = (await getJson(`${base}/api/runs/mil-tiny/bags/2`)).body;
    assert.equal(b.instances.length, m.test_bags[2].indices.length);
    m.test_bags[2].indices.forEach((i: number, k: number) => {
      assert.deepEqual(
        Buffer.from(b.instances[k].pixels, 'base64'),
        Buffer.from(test.images.subarray(i * IMAGE_SIZE, (i + 1) * IMAGE_SIZE)),
      );
      assert.equal(b.instances[k].digit, test.labels[i]);
    });
    const sum = b.instances.reduce((a: number, x: { attention: number }) => a + x.attention, 0);
    assert.ok(Math.abs(sum - 1) < 1e-5, `attention sums to ${sum}`);
  });

  it('follows a selection ensemble live, then shows weights, baselines, the confusion matrix, digits and a MIL bag', async function () {
    assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} is missing (apt-get install chromium; .ci/run does)`);
    userDataDir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-chromium-'));
    context = await chromium.launchPersistentContext(userDataDir, {
      executablePath: CHROMIUM,
      headless: true,
      viewport: { width: 1400, height: 1000 },
      args: [
        '--headless',
        '--no-sandbox',
        '--disable-gpu',
        '--disable-background-networking',
        '--disable-quic',
        '--no-first-run',
        '--disable-component-update',
        '--disable-sync',
      ],
    });
    page = context.pages()[0] ?? (await context.newPage());
    const pageErrors: string[] = [];
    page.on('pageerror', err => pageErrors.push(err.message));
    page.on('console', msg => {
      if (msg.type() === 'error') pageErrors.push(msg.text());
    });
    await page.goto(`${base}/`);
    await page.waitForFunction(() => document.getElementById('conn')?.textContent === 'live');
    await page.waitForFunction(
      () =>
        document.querySelectorAll('#workers tr').length === 2 &&
        document.getElementById('workers')!.textContent!.includes('cpu'),
    );

    // no polling: after the page has loaded, requests are one-off fetches of finished runs, not a stream of them
    const requests: string[] = [];
    page.on('request', r => requests.push(new URL(r.url()).pathname));
    const job = e.c.submit(tinyJob('selection', MEMBERS, EPOCHS, LIMIT_TRAIN, LIMIT_TEST));
    // live: curve points arrive while the job is still running
    await page.waitForFunction(() => (window as any).fleet.charts.loss.pointCount > 0);
    const liveWhileRunning = job.state === 'running';
    const barWhileRunning = await page.locator('.job.running .bar').count();
    await waitJobDone(e.c, job, 240_000);
    assert.ok(liveWhileRunning, 'the page had curve points before the job finished');
    assert.equal(barWhileRunning, 1, 'a progress bar for the running job');
    await page.waitForFunction(
      () => (window as any).fleet.state.ready.errors && (window as any).fleet.state.ready.bag,
      undefined,
      { timeout: 60_000 },
    );
    await page.waitForFunction(() => document.querySelector('.job.done .bar')?.getAttribute('aria-valuenow') === '100');
    fs.mkdirSync(ARTIFACTS, { recursive: true });
    await page.screenshot({ path: path.join(ARTIFACTS, 'dashboard.png'), fullPage: true });

    // every per-batch event (all but each epoch's last batch) and every epoch's validation loss and accuracies
    const batches = Math.ceil((LIMIT_TRAIN * 0.75) / BATCH);
    const points = await page.evaluate(() => ({
      loss: (window as any).fleet.charts.loss.pointCount,
      acc: (window as any).fleet.charts.acc.pointCount,
    }));
    assert.equal(points.loss, MEMBERS * EPOCHS * (batches - 1) + MEMBERS * EPOCHS);
    assert.equal(points.acc, MEMBERS * EPOCHS * 2);

    // the charts' canvases hold the series colours, not only axes
    const inked = await page.evaluate(() =>
      [...document.querySelectorAll('.uplot canvas, #compare-chart, #weights-chart')].map(c => {
        const cv = c as HTMLCanvasElement,
          d = cv.getContext('2d')!.getImageData(0, 0, cv.width, cv.height).data;
        let blue = 0,
          other = 0;
        for (let i = 0; i < d.length; i += 4) {
          if (d[i + 3] < 128) continue;
          if (Math.abs(d[i] - 47) < 30 && Math.abs(d[i + 1] - 111) < 30 && Math.abs(d[i + 2] - 222) < 30) blue++;
          else if (Math.abs(d[i] - d[i + 1]) > 40 || Math.abs(d[i + 1] - d[i + 2]) > 40) other++;
        }
        return { blue, other };
      }),
    );
    assert.equal(inked.length, 4);
    for (const [i, c] of inked.entries()) assert.ok(c.blue > 100 && c.other > 100, `canvas ${i}: ${JSON.stringify(c)}`);

    // the confusion matrix counts every test image; the digits are the test set's pixels (drawn ink-dark on white)
    const errors = (await getJson(`${base}/api/runs/${job.id}/errors`)).body;
    const m = JSON.parse(fs.readFileSync(path.join(e.c.outDir(job.id), 'metrics.json'), 'utf8'));
    const cells = await page.$$eval('#confusion tr', rows =>
      rows.slice(1).map(r => [...r.querySelectorAll('td')].map(td => Number(td.textContent || 0))),
    );
    assert.equal(
      cells.flat().reduce((a, b) => a + b, 0),
      LIMIT_TEST,
    );
    assert.equal(
      cells.reduce((a, row, i) => a + row[i], 0),
      Math.round(m.test_accuracy * LIMIT_TEST),
    );
    assert.deepEqual(cells, errors.confusion);
    const digits = await page.$$eval('#digits figure', figs =>
      figs.map(f => {
        const cv = f.querySelector('canvas') as HTMLCanvasElement;
        return {
          index: Number(f.getAttribute('data-index')),
          caption: f.textContent,
          grey: [...cv.getContext('2d')!.getImageData(0, 0, 28, 28).data].filter((_, i) => i % 4 === 0),
        };
      }),
    );
    assert.equal(digits.length, Math.min(40, Math.round((1 - m.test_accuracy) * LIMIT_TEST)));
    assert.ok(digits.length > 0, 'a 1-epoch ensemble on 192 images makes mistakes on 100 test images');
    for (const d of digits) {
      const want = Array.from(test.images.subarray(d.index * IMAGE_SIZE, (d.index + 1) * IMAGE_SIZE), v => 255 - v);
      assert.deepEqual(d.grey, want, `digit ${d.index}`);
      assert.ok(d.caption!.startsWith(`${test.labels[d.index]} → `), d.caption!);
    }

    // the MIL bag: one image per instance, not blank, with an attention bar
    const bag = await page.$$eval('#bag figure', figs =>
      figs.map(f => {
        const cv = f.querySelector('canvas') as HTMLCanvasElement,
          d = cv.getContext('2d')!.getImageData(0, 0, 28, 28).data;
        let dark = 0;
        for (let i = 0; i < d.length; i += 4) if (d[i] < 128) dark++;
        return { dark, bar: (f.querySelector('.att > div') as HTMLElement).style.width };
      }),
    );
    const mil = JSON.parse(fs.readFileSync(path.join(runsDir, 'mil-tiny', 'metrics.json'), 'utf8'));
    const shown = await page.$eval('#mil-bag', s => Number((s as HTMLSelectElement).value));
    assert.equal(bag.length, mil.test_bags[shown].indices.length);
    for (const b of bag) assert.ok(b.dark > 20, `instance image has ink (${b.dark} dark pixels)`);
    assert.ok(
      bag.some(b => /^100(\.0)?%$/.test(b.bar)),
      `the most attended instance has the full bar: ${bag.map(b => b.bar)}`,
    );

    assert.deepEqual(pageErrors, []);
    assert.deepEqual(
      requests.filter(r => r === '/api/cluster' || r === '/api/jobs'),
      [],
    );
    assert.ok(requests.length <= 8, `requests while the job ran: ${requests.join(' ')}`);
  });

  it('the event stream starts with a hello holding the cluster and the curves so far', async () => {
    const res = await fetch(`${base}/api/events`);
    assert.match(res.headers.get('content-type')!, /text\/event-stream/);
    const reader = res.body!.getReader();
    let text = '';
    await waitFor(
      async () => {
        text += new TextDecoder().decode((await reader.read()).value);
        return /event: hello\ndata: .*\n\n/.test(text);
      },
      10_000,
      'hello',
    );
    await reader.cancel();
    const hello = JSON.parse(/event: hello\ndata: (.*)\n\n/.exec(text)![1]);
    assert.equal(hello.cluster.workers.length, 2);
    assert.ok(Array.isArray(hello.cluster.jobs));
  });
});
