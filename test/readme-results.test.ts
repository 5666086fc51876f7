// `fleet bench results` (bench/results.ts) with a tiny experiment injected, and the README's generated tables
// (bench/readme-tables.ts): results file contents, resume, rerun on a changed command, an interrupted run, and
// every table between markers in README.md equal to what its results files give.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT, runFleet } from './helpers/cli.ts';
import { runExperiments, experimentRuns, listExperiments } from '../bench/results.ts';
import { EXPERIMENTS, selectExperiments, shownCommand, type Experiment } from '../bench/experiments.ts';
import { readResultsFile, resultsPath, type ResultsFile, type Json } from '../bench/results-file.ts';
import {
  renderBlock,
  readmeTables,
  readmeMismatches,
  regenerateReadme,
  chooseResults,
  type TableSource,
} from '../bench/readme-tables.ts';

const FIXTURES = path.join('test', 'fixtures', 'results');
const cnnTable = EXPERIMENTS.find(e => e.name === 'cnn')!.table;

/** Two tiny CNN runs (256 training images, 1 epoch, 1 thread); seeds of run b as given. */
function tiny(seedB = '2'): Experiment {
  const run = (dir: string, id: string, seed: string) => {
    const out = path.join(dir, id);
    return {
      id,
      minutes: 0.2,
      outDir: out,
      args: [
        'bin/fleet.js',
        'train',
        'cnn',
        '--limit-train',
        '256',
        '--limit-test',
        '128',
        '--epochs',
        '1',
        '--threads',
        '1',
        '--seed',
        seed,
        '--out',
        out,
        '--json',
      ],
      keep: { file: path.join(out, 'metrics.json'), fields: ['config.epochs', 'config.limitTrain', 'no.such.field'] },
    };
  };
  return {
    name: 'tiny',
    title: 'two tiny CNN runs',
    runs: (_mode, dir) => [run(dir, 'a', '1'), run(dir, 'b', seedB)],
    table: cnnTable,
  };
}

describe('fleet bench results (bench/results.ts)', function () {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-results-'));
  const outDir = path.join(tmp, 'results');
  const runsDir = path.join(tmp, 'runs');
  const file = resultsPath(outDir, 'tiny', 'quick');
  const quiet = { root: REPO_ROOT, outDir, runsDir, log: () => {}, childStderr: () => {} };
  after(() => fs.rmSync(tmp, { recursive: true, force: true }));

  it('writes the results file: commit, date, machine, versions, the exact command, the mode', async () => {
    const started = Date.now();
    const outcomes = await runExperiments({ ...quiet, experiments: [tiny()], mode: 'quick' });
    assert.deepEqual(
      outcomes.map(o => [o.name, o.trained, o.skipped, o.error]),
      [['tiny', 2, 0, undefined]],
    );
    const r = readResultsFile(file)!;
    assert.equal(r.experiment, 'tiny');
    assert.equal(r.mode, 'quick');
    assert.equal(r.complete, true);
    const head = execFileSync('git', ['rev-parse', 'HEAD'], { cwd: REPO_ROOT, encoding: 'utf8' }).trim();
    const specs = experimentRuns(tiny(), 'quick', runsDir);
    assert.deepEqual(
      r.runs.map(x => x.id),
      ['a', 'b'],
    );
    for (const [i, run] of r.runs.entries()) {
      assert.equal(run.commit, head);
      assert.equal(typeof run.dirty, 'boolean');
      assert.ok(Date.parse(run.date) >= started - 1000 && Date.parse(run.date) <= Date.now(), run.date);
      assert.equal(run.machine.node, process.version);
      assert.match(run.machine.onnxruntime_node, /^\d+\.\d+\.\d+/);
      assert.deepEqual(run.command, ['node', ...specs[i].args]);
      assert.equal(run.output.model, 'cnn');
      assert.ok(
        typeof run.output.test_accuracy === 'number' && run.output.test_accuracy >= 0 && run.output.test_accuracy <= 1,
      );
      assert.deepEqual(run.metrics, { config: { epochs: 1, limitTrain: 256 } });
      assert.ok(fs.existsSync(path.join(specs[i].outDir!, 'model.onnx')), 'the run wrote its outputs under its --out');
    }
    // the two seeds are two different runs, not one output copied
    assert.notDeepEqual(r.runs[0].output.test_loss, r.runs[1].output.test_loss);
  });

  it('a rerun with the same commands starts nothing and leaves the file as it was', async () => {
    const before = fs.readFileSync(file, 'utf8');
    let spawned = 0;
    const outcomes = await runExperiments({ ...quiet, experiments: [tiny()], mode: 'quick', onSpawn: () => spawned++ });
    assert.deepEqual(
      outcomes.map(o => [o.trained, o.skipped, o.error]),
      [[0, 2, undefined]],
    );
    assert.equal(spawned, 0);
    assert.equal(fs.readFileSync(file, 'utf8'), before);
  });

  it('a changed command is run again, and only that run', async () => {
    const before = readResultsFile(file)!;
    const outcomes = await runExperiments({ ...quiet, experiments: [tiny('3')], mode: 'quick' });
    assert.deepEqual(
      outcomes.map(o => [o.trained, o.skipped, o.error]),
      [[1, 1, undefined]],
    );
    const after = readResultsFile(file)!;
    assert.deepEqual(after.runs[0], before.runs[0], 'run a kept as it was');
    assert.equal(after.runs[1].command[after.runs[1].command.indexOf('--seed') + 1], '3');
    assert.notEqual(after.runs[1].date, before.runs[1].date);
  });

  it('a killed run writes nothing (no file, no partial file, the old one intact); the next one runs', async () => {
    const killed = (name: string, seedB: string): Experiment => ({ ...tiny(seedB), name });
    const kill = (child: import('node:child_process').ChildProcess) =>
      child.stderr!.once('data', () => child.kill('SIGKILL'));
    // a fresh experiment: its first run is killed once it has started training
    const fresh = await runExperiments({
      ...quiet,
      experiments: [killed('fresh', '2'), tiny('3')],
      mode: 'quick',
      onSpawn: kill,
    });
    assert.match(fresh[0].error ?? '', /killed by SIGKILL/);
    assert.equal(fresh[1].error, undefined);
    assert.equal(fs.existsSync(resultsPath(outDir, 'fresh', 'quick')), false);
    // an experiment with a results file: the rerun of its changed command is killed, the file stays byte for byte
    const before = fs.readFileSync(file, 'utf8');
    const changed = await runExperiments({ ...quiet, experiments: [tiny('4')], mode: 'quick', onSpawn: kill });
    assert.match(changed[0].error ?? '', /killed by SIGKILL/);
    assert.equal(fs.readFileSync(file, 'utf8'), before);
    assert.deepEqual(fs.readdirSync(outDir).sort(), ['tiny.quick.json'], 'no temporary or half-written file left');
  });

  it('--only picks experiments by name and refuses unknown ones; --list shows every command with its estimate', () => {
    assert.deepEqual(
      selectExperiments(EXPERIMENTS, 'speed,cnn').map(e => e.name),
      ['cnn', 'speed'],
    );
    assert.throws(() => selectExperiments(EXPERIMENTS, 'cnn,nope'), /unknown experiment "nope".*known: cnn/);
    const quick = listExperiments(EXPERIMENTS, 'quick');
    const full = listExperiments(EXPERIMENTS, 'full');
    assert.match(
      quick,
      /node bin\/fleet\.js train cnn --epochs 1 --out runs\/results\/quick\/cnn\/fleet-1-epoch --json/,
    );
    assert.doesNotMatch(quick, /--epochs 10/);
    assert.match(full, /--sizes 50,100,150,200,300,400,500 --seed-list 1,2,3,4,5 --poolings attention,gated,mean,max/);
    const total = (text: string) => {
      const m = /total \(--\w+\): ~([\d.]+) (min|h)/.exec(text)!;
      return Number(m[1]) * (m[2] === 'h' ? 60 : 1);
    };
    assert.ok(total(quick) <= 35, `--quick is about 30 minutes: ${total(quick)}`);
    assert.ok(total(full) > total(quick));
  });

  it('fleet bench results --list prints the commands; bad options exit 2 naming the option', async () => {
    const list = await runFleet(['bench', 'results', '--list', '--full', '--only', 'mil']);
    assert.equal(list.code, 0, list.stderr);
    assert.match(list.stdout, /^mil \(1 run, ~[\d.]+ h\)/);
    assert.match(list.stdout, /node bin\/fleet\.js bench mil-grid --sizes 50,100,150,200,300,400,500 /);
    for (const [args, message] of [
      [['--quick', '--full'], /--quick and --full/],
      [['--only', 'nope'], /unknown experiment "nope"/],
      [['--iters', '3'], /--iters: not an option of fleet bench results/],
      [['--readme', '--quick'], /--quick: not with --readme/],
    ] as const) {
      const r = await runFleet(['bench', 'results', ...args]);
      assert.equal(r.code, 2, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, message);
    }
  });

  it('an experiment whose run would write outside its folder is refused', () => {
    const bad: Experiment = {
      ...tiny(),
      runs: () => [{ id: 'x', minutes: 1, args: ['bin/fleet.js'], outDir: '/tmp' }],
    };
    assert.throws(() => experimentRuns(bad, 'quick', runsDir), /writes outside/);
  });
});

describe('README result tables (bench/readme-tables.ts)', () => {
  const fixtures: TableSource = { root: REPO_ROOT, resultsDir: FIXTURES, experiments: EXPERIMENTS };

  it('a results file becomes the fixture table: rows with file, mode and date; commit, machine, versions', () => {
    const block = renderBlock('cnn', fixtures);
    assert.equal(block, fs.readFileSync(path.join(REPO_ROOT, FIXTURES, 'cnn.quick.md'), 'utf8'));
    assert.ok(
      block.includes(
        '| `fleet train cnn --epochs 1` | 98.86% | 0.0347 | 34 s (40 s wall) | cnn.quick.json, quick, 2026-12-06 |',
      ),
    );
    assert.match(
      block,
      /commit d1ff957aa1b2, 2026-12-06; AMD EPYC, 2 cores, Node v20\.20\.2, onnxruntime-node 1\.30\.0/,
    );
  });

  it('a complete --full file is preferred to --quick; an incomplete one is not', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-readme-'));
    try {
      const quick = JSON.parse(
        fs.readFileSync(path.join(REPO_ROOT, FIXTURES, 'cnn.quick.json'), 'utf8'),
      ) as ResultsFile;
      fs.writeFileSync(path.join(dir, 'cnn.quick.json'), JSON.stringify(quick));
      const full = { ...quick, mode: 'full', complete: false, runs: quick.runs.slice(0, 1) };
      fs.writeFileSync(path.join(dir, 'cnn.full.json'), JSON.stringify(full));
      const src = { ...fixtures, root: dir, resultsDir: '.' };
      assert.equal(chooseResults('cnn', src)!.results.mode, 'quick');
      fs.writeFileSync(path.join(dir, 'cnn.full.json'), JSON.stringify({ ...full, complete: true }));
      assert.equal(chooseResults('cnn', src)!.results.mode, 'full');
      const block = renderBlock('cnn', src);
      assert.match(block, /\| cnn\.full\.json, full, 2026-12-06 \|/);
      assert.doesNotMatch(block, /quick/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it('an edited row between markers is found, and regenerating puts the generated table back', () => {
    const readme = `# x\n\n<!-- results:cnn -->\n${renderBlock('cnn', fixtures)}<!-- /results:cnn -->\n\nmore text\n`;
    assert.deepEqual(readmeMismatches(readme, fixtures), []);
    const edited = readme.replace('| 98.86% |', '| 98.96% |');
    assert.notEqual(edited, readme);
    assert.deepEqual(
      readmeMismatches(edited, fixtures).map(m => m.name),
      ['cnn'],
    );
    assert.equal(regenerateReadme(edited, fixtures), readme);
    assert.equal(
      regenerateReadme(`a\n<!-- results:cnn -->\n<!-- /results:cnn -->\nb\n`, fixtures),
      `a\n<!-- results:cnn -->\n${renderBlock('cnn', fixtures)}<!-- /results:cnn -->\nb\n`,
    );
  });

  it('markers that do not pair up or name no experiment are errors', () => {
    assert.throws(() => readmeTables('<!-- results:cnn -->\nx\n', fixtures), /1 results markers opened, 0 closed/);
    assert.throws(
      () => readmeTables('<!-- results:cnn -->\nx\n<!-- /results:simclr -->\n', fixtures),
      /closed by \/results:simclr/,
    );
    assert.throws(
      () => readmeTables('<!-- results:nope -->\n<!-- /results:nope -->\n', fixtures),
      /no such experiment/,
    );
  });

  it('a malformed results file is refused, naming the file', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-readme-'));
    try {
      const f = path.join(dir, 'cnn.quick.json');
      fs.writeFileSync(f, '{"format": 1, "experiment": "cnn"');
      assert.throws(
        () => readResultsFile(f),
        (e: Error) => e.message.startsWith(f) && /not JSON/.test(e.message),
      );
      const quick = JSON.parse(
        fs.readFileSync(path.join(REPO_ROOT, FIXTURES, 'cnn.quick.json'), 'utf8'),
      ) as ResultsFile;
      fs.writeFileSync(f, JSON.stringify({ ...quick, runs: [{ ...quick.runs[0], command: 'rm -rf /' }] }));
      assert.throws(() => readResultsFile(f), /runs\[0\]\.command is not a list of strings/);
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });

  it("every experiment's table shows its runs' numbers", () => {
    const fixture = JSON.parse(
      fs.readFileSync(path.join(REPO_ROOT, FIXTURES, 'cnn.quick.json'), 'utf8'),
    ) as ResultsFile;
    const render = (name: string, mode: 'quick' | 'full', outputs: Array<{ output: Json; metrics?: Json }>) => {
      const e = EXPERIMENTS.find(x => x.name === name)!;
      const specs = experimentRuns(e, mode, 'runs/results');
      const runs = outputs.map((o, i) => ({
        ...fixture.runs[0],
        id: specs[i].id,
        command: ['node', ...specs[i].args],
        ...o,
      }));
      return e.table({ ...fixture, experiment: name, mode, runs }).rows.map(r => r.cells);
    };
    assert.deepEqual(
      render('simclr', 'quick', [
        { output: { linear_eval_accuracy: 0.9278, seconds: 0 } },
        { output: { linear_eval_accuracy: 0.98354, seconds: 87.4 } },
      ]),
      [
        ['`fleet train simclr --epochs 0`', '92.78%', '—'],
        ['`fleet train simclr`', '98.35%', '87 s'],
      ],
    );
    const cells = [0.978, 0.973, 0.922].map((auc, i) => ({ size: 100, seed: i + 1, pooling: 'attention', auc }));
    const table = {
      '100': { attention: { mean: 0.958, std: 0.031, n: 3 } },
      '500': { attention: { mean: 0.984, std: 0.011, n: 3 } },
    };
    assert.deepEqual(render('mil', 'quick', [{ output: { table }, metrics: { cells } }]), [
      ['100', '0.958 ± 0.031 (3), 0.922'],
      ['500', '0.984 ± 0.011 (3), —'],
    ]);
    const ensemble = {
      test_accuracy: 0.9965,
      test_loss: 0.01112,
      best_member_test_accuracy: 0.9966,
      average_test_accuracy: 0.9964,
      hard_vote_test_accuracy: 0.9963,
      seconds: 2280,
    };
    assert.deepEqual(render('ensemble', 'full', [{ output: ensemble }]), [
      [
        '`fleet train cnn --members 5 --epochs 10 --workers 2`',
        '99.65% (0.0111)',
        '99.66%',
        '99.64%',
        '99.63%',
        '38.0 min',
      ],
    ]);
    const selected = {
      weights: [0.56, 0.27, 0.17, 0],
      test_loss: 0.03138,
      average_test_loss: 0.03106,
      test_accuracy: 0.9898,
      average_test_accuracy: 0.9899,
      best_member_test_accuracy: 0.9891,
    };
    assert.deepEqual(
      render('selection', 'full', [
        { output: selected, metrics: { selection: { val_score: 0.0405 }, average: { val_loss: 0.0411 } } },
      ]),
      [['1', '0.56, 0.27, 0.17, 0.00', '0.0405 / 0.0411', '0.03138 / 0.03106', '98.98% / 98.99% / 98.91%']],
    );
    const speed = {
      fleet: {
        train_images_per_second: 2003,
        step_ms_median: 127.8,
        infer_images_per_second: 21561,
        infer_ms_median: 11.9,
      },
      pytorch: {
        version: '1.13.0a0',
        train_images_per_second: 1463,
        step_ms_median: 175,
        infer_images_per_second: 5370,
        infer_ms_median: 47.7,
      },
      ratios: { train: 1.37, infer: 4.02 },
    };
    assert.deepEqual(render('speed', 'quick', [{ output: speed }]), [
      ['training step (`npx tsx bench/compare.ts --rounds 1`)', '2003 img/s (128 ms)', '1463 img/s (175 ms)', '1.37×'],
      ['inference of the exported model', '21561 img/s (12 ms)', '5370 img/s (48 ms)', '4.02×'],
    ]);
  });

  it('tables show commands as a user types them', () => {
    assert.equal(
      shownCommand(['node', 'bin/fleet.js', 'train', 'cnn', '--epochs', '1', '--out', 'runs/x', '--json']),
      'fleet train cnn --epochs 1',
    );
    assert.equal(
      shownCommand(['node', '--import', 'tsx', 'bench/compare.ts', '--rounds', '3', '--out', 'x.json']),
      'npx tsx bench/compare.ts --rounds 3',
    );
  });

  it('README.md: every table between results markers is what the results files it names give', () => {
    const readme = fs.readFileSync(path.join(REPO_ROOT, 'README.md'), 'utf8');
    const tables = readmeTables(readme);
    assert.ok(tables.length >= 6, `README has results markers (found ${tables.length})`);
    for (const t of tables) {
      assert.equal(
        t.actual,
        t.expected,
        `README table results:${t.name} differs from its results file: run fleet bench results --readme`,
      );
    }
  });
});
