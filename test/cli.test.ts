// The fleet command line, run as a user runs it: `node bin/fleet.js ...` in a child process.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { runFleet, lines, helpOptions, listFiles, REPO_ROOT, type CliResult } from './helpers/cli.ts';
import { OPTIONS as TRAIN_OPTIONS } from '../cli/train.ts';
import { OPTIONS as BENCH_OPTIONS } from '../cli/bench.ts';
import { OPTIONS as COORDINATOR_OPTIONS } from '../cli/coordinator.ts';
import { OPTIONS as WORKER_OPTIONS } from '../cli/worker.ts';
import { OPTIONS as JOBS_OPTIONS } from '../cli/jobs.ts';
import { writeIdx } from '../engine/data/idx.ts';
import { FILES } from '../engine/data/datasets.ts';
import { readCheckpoint } from '../engine/checkpoint.ts';
import { checkSvg, seriesGroups, legendEntries, all, hasClass, textOf } from './helpers/svg.ts';

/** A plot a run wrote: well-formed, titled, both axes labelled, and one legend entry per named series. */
function checkRunPlot(file: string, title: string, axisLabels: [string, string], series: string[]): void {
  const root = checkSvg(fs.readFileSync(file, 'utf8'), title);
  assert.deepEqual(
    all(root, hasClass('axis-label')).map(textOf).sort(),
    [...axisLabels].sort(),
    `${file}: axis labels`,
  );
  assert.deepEqual(
    seriesGroups(root).map(g => g.attrs['data-name']),
    series,
    `${file}: series`,
  );
  assert.deepEqual(legendEntries(root), series, `${file}: legend`);
}

const show = (r: CliResult) =>
  `exit ${r.code} (${r.signal ?? 'no signal'})\n--- stdout\n${r.stdout}\n--- stderr\n${r.stderr}`;

/** The last stdout line, parsed as JSON. */
function lastJson(r: CliResult): Record<string, unknown> {
  const ls = lines(r.stdout);
  assert.ok(ls.length > 0, show(r));
  return JSON.parse(ls[ls.length - 1]) as Record<string, unknown>;
}

/** A failure: the exit code, and exactly one line on stderr (the `fleet: ...` message) matching each pattern. */
function assertFailure(r: CliResult, code: number, ...patterns: RegExp[]) {
  assert.equal(r.code, code, show(r));
  const err = lines(r.stderr);
  assert.equal(err.length, 1, `expected one stderr line\n${show(r)}`);
  assert.match(err[0], /^fleet: /);
  for (const p of patterns) assert.match(err[0], p);
  assert.equal(r.stdout, '', 'nothing on stdout');
}

describe('cli: fleet', function () {
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-cli-'));
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('help', () => {
    it('fleet help (and no arguments) prints the usage and exits 0', async () => {
      for (const args of [['help'], [], ['--help']]) {
        const r = await runFleet(args);
        assert.equal(r.code, 0, show(r));
        assert.match(r.stdout, /^fleet: /);
        for (const cmd of ['train cnn', 'data download', 'bench train', 'help'])
          assert.ok(r.stdout.includes(`fleet ${cmd}`), `mentions fleet ${cmd}`);
        assert.equal(r.stderr, '');
      }
    });

    const commands: [string[], Record<string, { type: string; short?: string }>][] = [
      [['train', 'cnn'], TRAIN_OPTIONS.cnn],
      [['train', 'simclr'], TRAIN_OPTIONS.simclr],
      [['train', 'mil'], TRAIN_OPTIONS.mil],
      [['bench'], BENCH_OPTIONS],
      [['coordinator'], COORDINATOR_OPTIONS],
      [['worker'], WORKER_OPTIONS],
      [['jobs'], JOBS_OPTIONS],
    ];
    for (const [cmd, declared] of commands) {
      it(`fleet ${cmd.join(' ')} --help lists exactly the options the command accepts`, async () => {
        const r = await runFleet([...cmd, '--help']);
        assert.equal(r.code, 0, show(r));
        assert.match(r.stdout, new RegExp(`^usage: fleet ${cmd.join(' ')}`));
        const listed = helpOptions(r.stdout);
        // Every accepted option is documented, and every documented option is accepted.
        assert.deepEqual([...listed].sort(), Object.keys(declared).sort(), `help lists ${listed.join(' ')}`);
        for (const [name, o] of Object.entries(declared))
          if (o.short) assert.match(r.stdout, new RegExp(`-${o.short}, --${name}\\b`));
        // -h is the same as --help
        const h = await runFleet([...cmd, '-h']);
        assert.equal(h.code, 0, show(h));
        assert.equal(h.stdout, r.stdout);
      });
    }

    it('fleet train --help without a model describes every model', async () => {
      const r = await runFleet(['train', '--help']);
      assert.equal(r.code, 0, show(r));
      for (const m of ['cnn', 'simclr', 'mil']) assert.match(r.stdout, new RegExp(`usage: fleet train ${m}`));
    });
  });

  it("fleet --version (and fleet version) prints fleet's version and exits 0", async () => {
    const pkg = JSON.parse(fs.readFileSync(path.join(REPO_ROOT, 'package.json'), 'utf8')) as { version: string };
    for (const args of [['--version'], ['version'], ['-V']]) {
      const r = await runFleet(args);
      assert.equal(r.code, 0, show(r));
      assert.match(
        r.stdout,
        new RegExp(
          `^fleet ${pkg.version.replace(/\./g, '\\.')} \\(node v\\d+\\.\\d+\\.\\d+, onnxruntime-node \\d+\\.\\d+\\.\\d+\\)\n$`,
        ),
      );
      assert.equal(r.stderr, '');
    }
  });

  it('fleet predict: --server defaults to what its help says; a server that does not answer is named in the error', async () => {
    const help = await runFleet(['predict', '--help']);
    const def = /--server HOST:PORT\s+the server \(default ([\d.]+):(\d+)/.exec(help.stdout);
    assert.ok(def, help.stdout);
    // something that accepts and hangs up at the default address (skipped where a real server already listens)
    const sink = net.createServer(sock => sock.destroy());
    const bound = await new Promise<boolean>(resolve => {
      sink.once('error', () => resolve(false));
      sink.listen(Number(def[2]), def[1], () => resolve(true));
    });
    if (!bound) return;
    try {
      const idx = path.join(tmp, 'one-image-idx3-ubyte');
      writeIdx(idx, [1, 28, 28], new Uint8Array(784));
      const r = await runFleet(['predict', '--model', 'm', '--idx', idx, '--index', '0', '--timeout-ms', '3000']);
      assertFailure(
        r,
        1,
        new RegExp(
          `^fleet: predict: no answer from ${def[1].replace(/\./g, '\\.')}:${def[2]}: (UNAVAILABLE|DEADLINE_EXCEEDED): \\S`,
        ),
      );
    } finally {
      await new Promise(resolve => sink.close(resolve));
    }
  });

  describe('usage errors exit 2 with one line naming the problem', () => {
    const cases: [string, string[], RegExp[]][] = [
      ['unknown command', ['nope'], [/unknown command/, /"nope"/]],
      ['unknown model', ['train', 'foo'], [/unknown model/, /"foo"/]],
      ['no model', ['train'], [/which model/]],
      ['non-integer --epochs', ['train', 'cnn', '--epochs', 'abc'], [/--epochs/, /"abc"/]],
      ['--epochs 0', ['train', 'cnn', '--epochs', '0'], [/--epochs/, /at least 1/]],
      ['unknown --dataset', ['train', 'cnn', '--dataset', 'nope'], [/--dataset/, /"nope"/, /mnist/]],
      ['unknown option', ['train', 'cnn', '--bogus'], [/unknown option --bogus \(see --help\)$/]],
      [
        'a typo of an option',
        ['train', 'cnn', '--epoch', '2'],
        [/unknown option --epoch \(did you mean --epochs\?\)$/],
      ],
      [
        'a typo of a two-word option',
        ['train', 'mil', '--batchsize=4'],
        [/unknown option --batchsize \(did you mean --batch-size\?\)/],
      ],
      ['a typo of a data option', ['data', 'download', '--mirorr', 'x'], [/did you mean --mirror\?/]],
      ['a typo of a command', ['trian', 'cnn'], [/unknown command "trian"/, /did you mean "fleet train"\?/]],
      ['--resume without --out', ['train', 'cnn', '--resume'], [/--resume/, /--out/]],
      ['non-positive --lr', ['train', 'cnn', '--lr', '0'], [/--lr/]],
      ['--val-fraction 1', ['train', 'cnn', '--val-fraction', '1'], [/--val-fraction/]],
      ['unknown bench', ['bench', 'nope'], [/train, infer or augment/, /"nope"/]],
      ['bench --iters 0', ['bench', 'train', '--iters', '0'], [/--iters/]],
      ['simclr batch size below 2', ['train', 'simclr', '--batch-size', '1'], [/--batch-size/, /at least 2/]],
      ['simclr option on cnn', ['train', 'cnn', '--supervised'], [/--supervised/]],
      ['mil target digit outside 0-9', ['train', 'mil', '--target', '12'], [/--target/, /0-9/, /12/]],
      ['mil unknown pooling', ['train', 'mil', '--pooling', 'sum'], [/--pooling/, /"sum"/, /attention/]],
      ['mil zero bags', ['train', 'mil', '--bags', '0'], [/--bags/, /at least 1/]],
      ['mil negative bag std', ['train', 'mil', '--bag-std', '-1'], [/--bag-std/]],
      [
        'unknown ensemble',
        ['train', 'cnn', '--members', '3', '--ensemble', 'stacking'],
        [/--ensemble/, /"stacking"/, /voting/],
      ],
      [
        'selection option on voting',
        ['train', 'cnn', '--members', '3', '--objective', 'loss'],
        [/--objective/, /selection/],
      ],
      ['ensemble option without members', ['train', 'cnn', '--workers', '2'], [/--workers/, /--members/]],
      [
        '--ensemble without --members',
        ['train', 'cnn', '--ensemble', 'bagging'],
        [/--ensemble bagging: needs --members K/],
      ],
      [
        'simclr --ensemble without --members',
        ['train', 'simclr', '--ensemble', 'voting'],
        [/--ensemble voting: needs --members K/],
      ],
      [
        'snapshot epochs not a multiple',
        ['train', 'cnn', '--members', '2', '--ensemble', 'snapshot', '--epochs', '3'],
        [/--epochs/, /multiple/],
      ],
      [
        'init size above members',
        ['train', 'cnn', '--members', '2', '--ensemble', 'selection', '--init-size', '3'],
        [/--init-size/],
      ],
      [
        'simclr bagging',
        ['train', 'simclr', '--members', '2', '--ensemble', 'bagging'],
        [/--ensemble/, /"bagging"/, /voting\|selection/],
      ],
      ['coordinator without --nats', ['coordinator'], [/--nats URL is required/]],
      ['worker without --nats', ['worker'], [/--nats URL is required/]],
      ['jobs without --nats', ['jobs', 'list'], [/jobs: --nats URL is required/]],
      ['--detach without --nats', ['train', 'cnn', '--members', '2', '--detach'], [/--detach: only with --nats URL/]],
      [
        '--detach for data-parallel',
        ['train', 'simclr', '--nats', 'nats://127.0.0.1:1', '--detach'],
        [/--detach: only for ensemble jobs/],
      ],
      ['a NATS option without --nats', ['train', 'cnn', '--nats-ca', 'ca.pem'], [/--nats-ca: only with --nats URL/]],
      [
        'coordinator bad --http',
        ['coordinator', '--nats', 'nats://127.0.0.1:1', '--http', 'nowhere'],
        [/--http/, /HOST:PORT/],
      ],
      [
        'simclr ensemble option without members',
        ['train', 'simclr', '--val-fraction', '0.1'],
        [/--val-fraction/, /--members/],
      ],
      ['--http without members', ['train', 'cnn', '--http', '127.0.0.1:0'], [/--http/, /--members/]],
      [
        '--http with --nats',
        ['train', 'cnn', '--members', '2', '--nats', 'nats://127.0.0.1:1', '--http', '0'],
        [/--http/, /embedded/],
      ],
      ['bad --http', ['train', 'simclr', '--members', '2', '--http', 'nowhere'], [/--http/, /HOST:PORT/, /nowhere/]],
    ];
    for (const [what, args, patterns] of cases) {
      it(`${what}: fleet ${args.join(' ')}`, async () => {
        assertFailure(await runFleet(args), 2, ...patterns);
      });
    }
  });

  describe('data errors exit 1 with one line naming the path', () => {
    it('a missing data directory', async () => {
      const missing = path.join(tmp, 'no-such-dir');
      const r = await runFleet(['train', 'cnn', '--data-dir', missing, '--out', path.join(tmp, 'unused-1')]);
      assertFailure(
        r,
        1,
        new RegExp(`data directory ${missing.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')} does not exist`),
      );
      assert.ok(!fs.existsSync(path.join(tmp, 'unused-1')), 'no output directory created');
    });

    function writeFixture(dir: string, nTrain: number, nTest: number) {
      const img = (n: number) => Uint8Array.from({ length: n * 784 }, (_, i) => (i * 31 + (i >> 7)) & 255);
      const lbl = (n: number) => Uint8Array.from({ length: n }, (_, i) => i % 10);
      writeIdx(path.join(dir, FILES.trainImages), [nTrain, 28, 28], img(nTrain));
      writeIdx(path.join(dir, FILES.trainLabels), [nTrain], lbl(nTrain));
      writeIdx(path.join(dir, `${FILES.testImages}.gz`), [nTest, 28, 28], img(nTest));
      writeIdx(path.join(dir, `${FILES.testLabels}.gz`), [nTest], lbl(nTest));
    }

    it('a truncated IDX images file', async () => {
      const dir = path.join(tmp, 'idx-truncated');
      writeFixture(dir, 20, 10);
      const file = path.join(dir, FILES.trainImages);
      fs.truncateSync(file, fs.statSync(file).size - 100);
      const r = await runFleet(['train', 'cnn', '--data-dir', dir, '--out', path.join(tmp, 'unused-2')]);
      assertFailure(r, 1, new RegExp(`^fleet: ${file.replace(/[.*+?^${}()|[\]\\]/g, '\\$&')}: truncated`));
    });

    it('labels that do not match the images', async () => {
      const dir = path.join(tmp, 'idx-mismatch');
      writeFixture(dir, 20, 10);
      writeIdx(path.join(dir, FILES.trainLabels), [19], new Uint8Array(19));
      const r = await runFleet(['train', 'cnn', '--data-dir', dir, '--out', path.join(tmp, 'unused-3')]);
      assertFailure(r, 1, new RegExp(FILES.trainImages), new RegExp(FILES.trainLabels));
    });

    it('a valid IDX directory given with --data-dir trains (raw and .gz files)', async () => {
      const dir = path.join(tmp, 'idx-ok');
      writeFixture(dir, 24, 10);
      const out = path.join(tmp, 'idx-ok-run');
      const r = await runFleet([
        'train',
        'cnn',
        '--data-dir',
        dir,
        '--batch-size',
        '8',
        '--val-fraction',
        '0',
        '--out',
        out,
        '--json',
      ]);
      assert.equal(r.code, 0, show(r));
      const s = lastJson(r);
      assert.equal(s.epochs, 1);
      assert.equal(typeof s.test_accuracy, 'number');
      assert.ok(fs.existsSync(path.join(out, 'model.onnx')));
    });
  });

  describe('fleet train cnn end to end', () => {
    let out: string;
    let r: CliResult;
    const args = (...more: string[]) => [
      'train',
      'cnn',
      '--limit-train',
      '512',
      '--limit-test',
      '256',
      '--batch-size',
      '64',
      '--out',
      out,
      '--json',
      ...more,
    ];
    before(async () => {
      out = path.join(tmp, 'run');
      r = await runFleet(args('--epochs', '1'));
    });

    it('exits 0 and prints the summary as JSON on the last stdout line', () => {
      assert.equal(r.code, 0, show(r));
      const s = lastJson(r);
      assert.equal(s.model, 'cnn');
      assert.equal(s.epochs, 1);
      for (const k of ['test_accuracy', 'test_loss', 'seconds', 'images_per_second']) {
        assert.equal(typeof s[k], 'number', `${k}: ${s[k]}`);
        assert.ok(Number.isFinite(s[k]), `${k}: ${s[k]}`);
      }
      assert.ok((s.test_accuracy as number) >= 0 && (s.test_accuracy as number) <= 1);
      assert.ok((s.images_per_second as number) > 0 && (s.seconds as number) > 0);
      assert.equal(s.out, out);
      assert.equal(s.dataset, 'mnist');
      assert.equal(s.recipe, 'fleet');
      // Progress and per-epoch lines go to stderr, not stdout.
      assert.match(r.stderr, /epoch 1\/1/);
    });

    it('writes model.onnx, metrics.json, the plots and one checkpoint, and no temporary files', () => {
      const files = listFiles(out);
      for (const f of [
        'model.onnx',
        'metrics.json',
        'loss.svg',
        'accuracy.svg',
        'lr.svg',
        'train-log.jsonl',
        'steps.csv',
        'epochs.csv',
        path.join('checkpoints', 'epoch-001.ckpt'),
      ]) {
        assert.ok(files.includes(f), `${f} in ${files.join(', ')}`);
      }
      assert.deepEqual(
        files.filter(f => f.includes('.tmp-')),
        [],
      );
      const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      assert.equal(metrics.model, 'cnn');
      assert.equal(metrics.history.length, 1);
      assert.equal(metrics.history[0].epoch, 1);
      assert.equal(metrics.config.limitTrain, 512);
      assert.equal(metrics.config.batchSize, 64);
      assert.deepEqual(metrics.test_accuracy, lastJson(r).test_accuracy);
      checkRunPlot(path.join(out, 'loss.svg'), 'Loss per step', ['epoch', 'loss'], ['train', 'validation', 'test']);
      checkRunPlot(
        path.join(out, 'accuracy.svg'),
        'Accuracy per epoch',
        ['epoch', 'accuracy'],
        ['train', 'validation', 'test'],
      );
      // the confusion matrix and most confident mistakes the dashboard shows
      assert.equal(
        metrics.test_errors.confusion.flat().reduce((a: number, b: number) => a + b, 0),
        metrics.config.limitTest,
      );
      assert.equal(metrics.test_errors.errors, Math.round((1 - metrics.test_accuracy) * metrics.config.limitTest));
      assert.ok(fs.statSync(path.join(out, 'model.onnx')).size > 1_000_000);
    });

    it('--resume continues the run from its newest checkpoint', async () => {
      const r2 = await runFleet(args('--epochs', '2', '--resume'));
      assert.equal(r2.code, 0, show(r2));
      assert.match(r2.stderr, /resumed from .*epoch-001\.ckpt \(epoch 1\)/);
      assert.doesNotMatch(r2.stderr, /epoch 1\/2/, 'epoch 1 is not trained again');
      assert.equal(lastJson(r2).epochs, 2);
      const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      assert.deepEqual(
        metrics.history.map((h: { epoch: number }) => h.epoch),
        [1, 2],
      );
      const files = listFiles(out);
      assert.ok(files.includes(path.join('checkpoints', 'epoch-002.ckpt')), files.join(', '));
      assert.deepEqual(
        files.filter(f => f.includes('.tmp-')),
        [],
      );
      const m1 = readCheckpoint<{ optimizer: { step: number } }>(path.join(out, 'checkpoints', 'epoch-001.ckpt')).meta;
      const m2 = readCheckpoint<{ optimizer: { step: number } }>(path.join(out, 'checkpoints', 'epoch-002.ckpt')).meta;
      assert.equal(m2.optimizer.step, 2 * m1.optimizer.step);
    });
  });

  describe('fleet train simclr and mil end to end', () => {
    it('simclr: JSON summary with the linear-evaluation accuracy, and its files', async () => {
      const out = path.join(tmp, 'simclr');
      const r = await runFleet([
        'train',
        'simclr',
        '--limit-train',
        '128',
        '--limit-test',
        '100',
        '--batch-size',
        '32',
        '--epochs',
        '1',
        '--probe-epochs',
        '1',
        '--threads',
        '1',
        '--json',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, show(r));
      const j = lastJson(r);
      assert.equal(j.model, 'simclr');
      assert.equal(j.epochs, 1);
      assert.equal(typeof j.linear_eval_accuracy, 'number');
      assert.ok((j.linear_eval_accuracy as number) >= 0 && (j.linear_eval_accuracy as number) <= 1);
      for (const f of ['model.onnx', 'encoder.onnx', 'metrics.json', 'loss.svg', 'checkpoints/epoch-001.ckpt'])
        assert.ok(fs.existsSync(path.join(out, f)), f);
      assert.equal(listFiles(out).filter(f => f.includes('.tmp-')).length, 0);
    });
    it('mil: JSON summary with the test AUC and accuracy, and the attention of the test bags in metrics.json', async () => {
      const out = path.join(tmp, 'mil');
      const r = await runFleet([
        'train',
        'mil',
        '--bags',
        '8',
        '--test-bags',
        '24',
        '--epochs',
        '1',
        '--threads',
        '1',
        '--json',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, show(r));
      const j = lastJson(r);
      assert.equal(j.model, 'mil');
      assert.equal(j.pooling, 'attention');
      assert.ok((j.test_auc as number) >= 0 && (j.test_auc as number) <= 1, `test_auc ${j.test_auc}`);
      assert.equal(typeof j.test_accuracy, 'number');
      const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      assert.equal(metrics.test_bags.length, 24);
      for (const b of metrics.test_bags) assert.equal(b.attention.length, b.digits.length);
      for (const f of ['model.onnx', 'auc.svg', 'loss.svg', 'checkpoints/epoch-001.ckpt'])
        assert.ok(fs.existsSync(path.join(out, f)), f);
      for (const b of metrics.test_bags) assert.equal(b.indices.length, b.digits.length);
      checkRunPlot(path.join(out, 'auc.svg'), 'Test bag AUC per epoch', ['epoch', 'AUC'], ['test']);
      checkRunPlot(path.join(out, 'loss.svg'), 'Loss per step', ['epoch', 'loss'], ['train', 'test']);
    });
  });

  describe('fleet train cnn --members (ensembles) end to end', () => {
    it('selection: JSON with the ensemble, best member and average; one-graph model.onnx, member models and plots', async () => {
      const out = path.join(tmp, 'ensemble');
      const r = await runFleet([
        'train',
        'cnn',
        '--members',
        '2',
        '--ensemble',
        'selection',
        '--epochs',
        '1',
        '--limit-train',
        '400',
        '--limit-test',
        '100',
        '--batch-size',
        '64',
        '--threads',
        '1',
        '--json',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, show(r));
      const j = lastJson(r);
      assert.equal(j.model, 'cnn');
      assert.equal(j.ensemble, 'selection');
      assert.equal(j.members, 2);
      for (const k of [
        'test_accuracy',
        'test_loss',
        'best_member_test_accuracy',
        'average_test_accuracy',
        'hard_vote_test_accuracy',
      ])
        assert.equal(typeof j[k], 'number', k);
      assert.ok(Math.abs((j.weights as number[]).reduce((a, b) => a + b, 0) - 1) < 1e-3);
      for (const f of [
        'model.onnx',
        'members/member-1/model.onnx',
        'members/member-2/model.onnx',
        'members-loss.svg',
        'members-accuracy.svg',
        'selection.svg',
        'selection-weights.svg',
        'metrics.json',
        'members/member-1/checkpoints/epoch-001.ckpt',
      ])
        assert.ok(fs.existsSync(path.join(out, f)), f);
      const metrics = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
      assert.equal(metrics.member_results.length, 2);
      assert.ok(metrics.selection.steps.length > 0);
      checkRunPlot(path.join(out, 'members-loss.svg'), 'Loss per member', ['member', 'loss'], ['validation', 'test']);
      checkRunPlot(
        path.join(out, 'members-accuracy.svg'),
        'Accuracy per member',
        ['member', 'accuracy'],
        ['validation', 'test'],
      );
      checkRunPlot(
        path.join(out, 'selection.svg'),
        'Ensemble validation loss per selection step',
        ['selection step', 'validation loss'],
        ['ensemble', 'best member', 'average'],
      );
      const picked = ['member-1', 'member-2'].filter((_, m) =>
        metrics.selection.steps.some((st: { weights: number[] }) => st.weights[m] > 0),
      );
      checkRunPlot(
        path.join(out, 'selection-weights.svg'),
        'Member weights per selection step',
        ['selection step', 'weight'],
        picked,
      );
    });
  });

  describe('fleet train simclr --members (ensembles) end to end', () => {
    it('voting over SimCLR members: encoder + probe members in one graph', async () => {
      const out = path.join(tmp, 'simclr-ensemble');
      const r = await runFleet([
        'train',
        'simclr',
        '--members',
        '2',
        '--epochs',
        '1',
        '--limit-train',
        '128',
        '--limit-test',
        '100',
        '--batch-size',
        '32',
        '--probe-epochs',
        '2',
        '--threads',
        '1',
        '--json',
        '--out',
        out,
      ]);
      assert.equal(r.code, 0, show(r));
      const j = lastJson(r);
      assert.equal(j.model, 'simclr');
      assert.equal(j.ensemble, 'voting');
      assert.deepEqual(j.weights, [0.5, 0.5]);
      for (const f of ['model.onnx', 'members/member-1/model.onnx', 'members/member-2/model.onnx', 'metrics.json'])
        assert.ok(fs.existsSync(path.join(out, f)), f);
    });
  });

  describe('fleet bench', () => {
    for (const kind of ['train', 'infer'] as const) {
      it(`bench ${kind} --json reports a positive throughput`, async () => {
        const r = await runFleet(['bench', kind, '--json', '--batch-size', '32', '--iters', '2', '--warmup', '1']);
        assert.equal(r.code, 0, show(r));
        const s = lastJson(r);
        assert.equal(s.bench, kind);
        assert.equal(s.batch_size, 32);
        const ips = s[`${kind}_images_per_second`];
        assert.equal(typeof ips, 'number');
        assert.ok((ips as number) > 0, `${kind}_images_per_second = ${ips}`);
      });
    }

    it('bench augment --json reports augmentation throughput and its share of a SimCLR step', async () => {
      const r = await runFleet([
        'bench',
        'augment',
        '--json',
        '--batch-size',
        '16',
        '--iters',
        '2',
        '--warmup',
        '1',
        '--threads',
        '1',
      ]);
      assert.equal(r.code, 0, show(r));
      const j = lastJson(r);
      assert.ok((j.augment_images_per_second as number) > 0 && (j.simclr_step_ms_median as number) > 0);
      assert.ok((j.augment_share_of_step as number) > 0 && (j.augment_share_of_step as number) < 1);
    });
    it('bench --out writes the result to a file', async () => {
      const file = path.join(tmp, 'bench', 'infer.json');
      const r = await runFleet(['bench', 'infer', '--batch-size', '8', '--iters', '1', '--warmup', '0', '--out', file]);
      assert.equal(r.code, 0, show(r));
      assert.match(r.stdout, /^infer: \d+ img\/s/);
      const s = JSON.parse(fs.readFileSync(file, 'utf8'));
      assert.ok(s.infer_images_per_second > 0);
      assert.deepEqual(fs.readdirSync(path.dirname(file)), ['infer.json']);
    });
  });
});
