// Experiment logging and the run folder, at the user's boundary: `fleet train` writes a per-step and per-epoch
// log (train-log.jsonl, steps.csv, epochs.csv) and per-step curves, keeps the checkpoints --keep-checkpoints asks
// for, and refuses a non-empty --out unless --resume or --overwrite. Plus the pieces on their own.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runFleet, lines, listFiles, type CliResult } from './helpers/cli.ts';
import { checkSvg, seriesGroups, all, hasClass } from './helpers/svg.ts';
import { RunLog, LOG_FILES } from '../engine/train/run-log.ts';
import { pruneCheckpoints, bestEpoch, checkpointEpochs } from '../engine/train/checkpoint-retention.ts';
import { stepCurves } from '../engine/report/plots.ts';

const show = (r: CliResult) => `exit ${r.code}\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;
const TINY = [
  'train',
  'cnn',
  '--limit-train',
  '256',
  '--limit-test',
  '64',
  '--batch-size',
  '64',
  '--threads',
  '1',
  '--json',
];
const STEPS_PER_EPOCH = 4; // 256 images less the 15% validation split, in batches of 64

function jsonl(dir: string): Array<Record<string, any>> {
  return fs
    .readFileSync(path.join(dir, LOG_FILES.jsonl), 'utf8')
    .split('\n')
    .filter(Boolean)
    .map(l => JSON.parse(l));
}
function csv(dir: string, file: string): Array<Record<string, string>> {
  const [header, ...rows] = fs.readFileSync(path.join(dir, file), 'utf8').split('\n').filter(Boolean);
  const cols = header.split(',');
  return rows.map(r => Object.fromEntries(r.split(',').map((v, i) => [cols[i], v])));
}
/** Number of points of a series in an SVG chart. */
function vertices(svg: string, title: string, series: string): number {
  const g = seriesGroups(checkSvg(svg, title)).find(s => s.attrs['data-name'] === series);
  assert.ok(g, `series ${series}`);
  // a lone point has no line, only its dot
  return Math.max(
    (all(g, hasClass('series-line'))[0].attrs.d.match(/[ML]/g) ?? []).length,
    all(g, hasClass('point')).length,
  );
}

describe('run folder: experiment log, checkpoints kept, --out protection (fleet train)', function () {
  this.timeout(600_000);
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-runlog-'));
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  it('logs every step (loss, learning rate, throughput) and every epoch; resumes the log; keeps the last checkpoint; plots per step', async () => {
    const out = path.join(tmp, 'run');
    const first = await runFleet([...TINY, '--epochs', '1', '--out', out]);
    assert.equal(first.code, 0, show(first));
    // as if the run had been killed during epoch 2: a step of epoch 2 in the log, no checkpoint of it
    fs.appendFileSync(
      path.join(out, LOG_FILES.jsonl),
      `${JSON.stringify({ type: 'step', epoch: 2, batch: 1, batches: 4, step: 5, loss: 99, time: 'x' })}\n{"type":"st`,
    );
    const r = await runFleet([...TINY, '--epochs', '2', '--out', out, '--resume', '--keep-checkpoints', 'last']);
    assert.equal(r.code, 0, show(r));

    const log = jsonl(out);
    const steps = log.filter(x => x.type === 'step'),
      epochs = log.filter(x => x.type === 'epoch');
    assert.deepEqual(
      steps.map(s => s.step),
      [1, 2, 3, 4, 5, 6, 7, 8],
      "one record per step, the killed epoch's dropped",
    );
    assert.deepEqual(
      steps.map(s => [s.epoch, s.batch, s.batches]),
      [1, 2].flatMap(e => [1, 2, 3, 4].map(b => [e, b, STEPS_PER_EPOCH])),
    );
    for (const s of steps) {
      assert.ok(Number.isFinite(s.loss) && s.loss > 0 && s.loss !== 99, JSON.stringify(s));
      assert.ok(s.lr > 0 && s.lr <= 3e-3, `lr ${s.lr}`);
      assert.ok(s.images_per_second > 0, JSON.stringify(s));
      assert.ok(!Number.isNaN(Date.parse(s.time)));
    }
    // the fleet recipe's warm-up + cosine: the learning rate falls towards 0 over the run
    assert.ok(steps.at(-1)!.lr < steps[0].lr);
    const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
    assert.deepEqual(
      epochs.map(e => e.epoch),
      [1, 2],
    );
    for (const [i, e] of epochs.entries()) {
      for (const k of [
        'train_loss',
        'train_accuracy',
        'val_loss',
        'val_accuracy',
        'test_loss',
        'test_accuracy',
        'lr',
        'seconds',
      ]) {
        assert.equal(e[k], metrics.history[i][k], `epoch ${e.epoch} ${k}`);
      }
    }
    // the same records as CSV
    const stepRows = csv(out, LOG_FILES.steps),
      epochRows = csv(out, LOG_FILES.epochs);
    assert.deepEqual(
      stepRows.map(x => [Number(x.step), Number(x.loss), Number(x.lr)]),
      steps.map(s => [s.step, s.loss, s.lr]),
    );
    assert.deepEqual(
      epochRows.map(x => [Number(x.epoch), Number(x.val_loss)]),
      epochs.map(e => [e.epoch, e.val_loss]),
    );
    // --keep-checkpoints last: only the newest
    assert.deepEqual(checkpointEpochs(path.join(out, 'checkpoints')), [2]);
    // the loss curve has a point per step (not one per epoch); the learning rate too
    const loss = fs.readFileSync(path.join(out, 'loss.svg'), 'utf8');
    assert.equal(vertices(loss, 'Loss per step', 'train'), 8);
    assert.equal(vertices(loss, 'Loss per step', 'validation'), 2);
    assert.equal(vertices(fs.readFileSync(path.join(out, 'lr.svg'), 'utf8'), 'Learning rate per step', 'lr'), 8);
  });

  it("--keep-checkpoints best keeps the lowest validation loss's checkpoint and the newest", async () => {
    const out = path.join(tmp, 'best');
    const r = await runFleet([...TINY, '--epochs', '3', '--out', out, '--keep-checkpoints', 'best']);
    assert.equal(r.code, 0, show(r));
    const history = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8')).history as {
      epoch: number;
      val_loss: number;
    }[];
    const best = history.reduce((a, b) => (b.val_loss < a.val_loss ? b : a)).epoch;
    assert.deepEqual(checkpointEpochs(path.join(out, 'checkpoints')), [...new Set([best, 3])].sort());
  });

  it('a non-empty --out is refused (exit 2, nothing touched) unless --resume or --overwrite', async () => {
    const run = path.join(tmp, 'run');
    const before = listFiles(run).map(f => [f, fs.statSync(path.join(run, f)).mtimeMs]);
    const refused = await runFleet([...TINY, '--epochs', '1', '--out', run]);
    assert.equal(refused.code, 2, show(refused));
    assert.match(
      lines(refused.stderr).at(-1)!,
      /^fleet: --out .* is not empty: add --resume to continue the run in it, or --overwrite to replace it$/,
    );
    assert.deepEqual(
      listFiles(run).map(f => [f, fs.statSync(path.join(run, f)).mtimeMs]),
      before,
    );
    // a folder that is not a run is never emptied
    const mine = path.join(tmp, 'my-files');
    fs.mkdirSync(mine);
    fs.writeFileSync(path.join(mine, 'notes.txt'), 'keep me');
    const notRun = await runFleet([...TINY, '--epochs', '1', '--out', mine, '--overwrite']);
    assert.equal(notRun.code, 2, show(notRun));
    assert.match(notRun.stderr, /--overwrite: .* is not a fleet run folder/);
    assert.equal(fs.readFileSync(path.join(mine, 'notes.txt'), 'utf8'), 'keep me');
    // --overwrite replaces a run: nothing of the old one is left (its checkpoints would confuse a later --resume)
    fs.writeFileSync(path.join(run, 'stale.txt'), 'old');
    const over = await runFleet([...TINY, '--epochs', '1', '--out', run, '--overwrite']);
    assert.equal(over.code, 0, show(over));
    assert.ok(!fs.existsSync(path.join(run, 'stale.txt')));
    assert.deepEqual(checkpointEpochs(path.join(run, 'checkpoints')), [1]);
    assert.equal(jsonl(run).filter(x => x.type === 'step').length, STEPS_PER_EPOCH);
  });

  it('usage errors: --overwrite with --resume, --keep-checkpoints on ensembles or an unknown policy', async () => {
    for (const [args, re] of [
      [['--out', path.join(tmp, 'x'), '--resume', '--overwrite'], /--overwrite: not with --resume/],
      [['--members', '2', '--keep-checkpoints', 'last'], /--keep-checkpoints: only for a single model/],
      [['--keep-checkpoints', 'some'], /--keep-checkpoints: expected one of all\|last\|best, got "some"/],
    ] as const) {
      const r = await runFleet([...TINY, ...args]);
      assert.equal(r.code, 2, show(r));
      assert.match(r.stderr, re);
    }
  });
});

describe('run log, checkpoint retention and step curves as functions', () => {
  let tmp: string;
  beforeEach(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-runlog-unit-'));
  });
  afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('RunLog: members count their own steps; CSV quotes what needs quoting; a resumed log keeps epochs up to the checkpoint', () => {
    const log = new RunLog(tmp);
    for (const m of ['member-1', 'member-2'])
      for (let b = 1; b <= 2; b++) log.step({ epoch: 1, batch: b, batches: 2, loss: 1 / b, lr: 0.1 }, m);
    log.epoch({ epoch: 1, train_loss: 0.5, note: 'a,"b"' } as { epoch: number }, 'member-1');
    assert.deepEqual(
      log.steps.map(s => [s.member, s.step]),
      [
        ['member-1', 1],
        ['member-1', 2],
        ['member-2', 1],
        ['member-2', 2],
      ],
    );
    const rows = fs.readFileSync(path.join(tmp, LOG_FILES.epochs), 'utf8').split('\n');
    assert.equal(rows[0], 'member,epoch,train_loss,note,time');
    assert.match(rows[1], /^member-1,1,0\.5,"a,""b""",\d{4}-/);
    log.step({ epoch: 2, batch: 1, batches: 2, loss: 3 }, 'member-1');
    const resumed = new RunLog(tmp, 1);
    assert.equal(resumed.steps.length, 4);
    assert.equal(fs.readFileSync(path.join(tmp, LOG_FILES.steps), 'utf8').trim().split('\n').length, 5);
    resumed.step({ epoch: 2, batch: 1, batches: 2, loss: 3 }, 'member-1');
    assert.equal(resumed.steps.at(-1)!.step, 3, 'step numbers continue after a resume');
    // a fresh log starts empty
    assert.equal(new RunLog(tmp).steps.length, 0);
    assert.equal(fs.readFileSync(path.join(tmp, LOG_FILES.jsonl), 'utf8'), '');
  });

  it('pruneCheckpoints: all keeps everything, last the newest, best the best and the newest; bestEpoch falls back to training loss', () => {
    const dir = path.join(tmp, 'checkpoints');
    const make = () => {
      fs.mkdirSync(dir, { recursive: true });
      for (const e of [1, 2, 3, 4]) fs.writeFileSync(path.join(dir, `epoch-00${e}.ckpt`), '');
    };
    const history = [
      { epoch: 1, val_loss: 0.5 },
      { epoch: 2, val_loss: 0.2 },
      { epoch: 3, val_loss: 0.3 },
      { epoch: 4, val_loss: 0.4 },
    ];
    make();
    assert.deepEqual(pruneCheckpoints(dir, 'all', history), []);
    assert.deepEqual(pruneCheckpoints(dir, 'best', history), [1, 3]);
    assert.deepEqual(checkpointEpochs(dir), [2, 4]);
    assert.deepEqual(pruneCheckpoints(dir, 'last', history), [2]);
    assert.deepEqual(checkpointEpochs(dir), [4]);
    assert.equal(
      bestEpoch([
        { epoch: 1, train_loss: 0.3 },
        { epoch: 2, train_loss: 0.1 },
        { epoch: 3, train_loss: 0.2 },
      ]),
      2,
    );
    assert.equal(bestEpoch([]), undefined);
  });

  it('stepCurves: x in epochs (step k of n at e - 1 + k/n); long runs thinned to at most 2000 points, the last step kept', () => {
    const steps = Array.from({ length: 5000 }, (_, i) => ({
      epoch: Math.floor(i / 1000) + 1,
      batch: (i % 1000) + 1,
      batches: 1000,
      loss: 1 + i,
      lr: 1,
    }));
    const out = stepCurves(steps, [{ epoch: 5, val_loss: 2 }]);
    const n = vertices(out['loss.svg'], 'Loss per step', 'train');
    assert.ok(n <= 2000 && n >= 1000, String(n));
    assert.equal(vertices(out['loss.svg'], 'Loss per step', 'validation'), 1);
    const two = stepCurves(
      [
        { epoch: 1, batch: 1, batches: 2, loss: 1 },
        { epoch: 1, batch: 2, batches: 2, loss: 2 },
      ],
      [],
    );
    assert.equal(vertices(two['loss.svg'], 'Loss per step', 'train'), 2);
    assert.equal(two['lr.svg'], undefined, 'no learning rate, no lr.svg');
  });
});
