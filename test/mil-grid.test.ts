// `fleet bench mil-grid` (bench/mil-grid.ts): a tiny grid trains each (size, seed, pooling) once, writes the
// results JSON, the markdown table and the SVG chart; a rerun with the same settings retrains nothing, an
// interrupted sweep resumes with only the missing runs, and a changed setting starts over.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  runMilGrid,
  summarise,
  stat,
  markdownTable,
  gridChart,
  companionPaths,
  type MilGridFile,
  type MilGridSummary,
} from '../bench/mil-grid.ts';
import { MIL_RECIPE } from '../engine/train/train-mil.ts';
import { MIL_MODEL } from '../engine/model/mil.ts';
import { runFleet, lines, type CliResult } from './helpers/cli.ts';
import { checkSvg, seriesGroups, legendEntries, all, hasClass, textOf } from './helpers/svg.ts';

const show = (r: CliResult) => `exit ${r.code}\nstdout:\n${r.stdout}\nstderr:\n${r.stderr}`;
const read = (f: string) => fs.readFileSync(f, 'utf8');

describe('bench mil-grid', function () {
  this.timeout(300_000);
  let tmp: string;
  before(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-mil-grid-'));
  });
  after(() => {
    if (tmp) fs.rmSync(tmp, { recursive: true, force: true });
  });

  describe('statistics and table (no training)', () => {
    it('mean and sample standard deviation per (size, pooling) over the requested seeds', () => {
      assert.deepEqual(stat([]), { mean: null, std: null, n: 0 });
      assert.deepEqual(stat([0.8]), { mean: 0.8, std: 0, n: 1 });
      const s = stat([0.7, 0.8, 0.9]);
      assert.ok(Math.abs(s.mean! - 0.8) < 1e-12 && Math.abs(s.std! - 0.1) < 1e-12 && s.n === 3);
      const cells = [
        { size: 50, seed: 1, pooling: 'mean' as const, auc: 0.7, accuracy: 0.6, seconds: 1 },
        { size: 50, seed: 2, pooling: 'mean' as const, auc: 0.9, accuracy: 0.8, seconds: 1 },
        { size: 50, seed: 3, pooling: 'mean' as const, auc: null, accuracy: 0.5, seconds: 1 }, // one-class test bags
        { size: 50, seed: 9, pooling: 'mean' as const, auc: 0.1, accuracy: 0.1, seconds: 1 }, // seed not requested
      ];
      const table = summarise(cells, [50, 100], ['mean', 'max'], [1, 2, 3]);
      assert.equal(table['50'].mean.n, 2);
      assert.ok(Math.abs(table['50'].mean.mean! - 0.8) < 1e-12);
      assert.deepEqual(table['100'].max, { mean: null, std: null, n: 0 });
      const md = markdownTable(table, [50, 100], ['mean', 'max'], {
        dataset: 'mnist',
        model: MIL_MODEL,
        epochs: 20,
        testBags: 250,
        bagMean: 10,
        bagStd: 2,
        target: 9,
        recipe: MIL_RECIPE,
      });
      assert.match(md, /^\| training bags \| mean \| max \|$/m);
      assert.match(md, /^\| 50 \| 0\.800 ± 0\.141 \(2 seeds\) \| — \|$/m);
      assert.match(md, /^\| 100 \| — \| — \|$/m);
    });

    it('the AUC grid chart: titled, labelled axes, one line per pooling, cells without runs left out', () => {
      const settings = {
        dataset: 'mnist' as const,
        model: MIL_MODEL,
        epochs: 40,
        testBags: 250,
        bagMean: 10,
        bagStd: 2,
        target: 9,
        recipe: MIL_RECIPE,
      };
      const table = {
        50: { attention: { mean: 0.91, std: 0.02, n: 3 }, max: { mean: 0.88, std: 0.05, n: 3 } },
        100: { attention: { mean: 0.958, std: 0.03, n: 3 }, max: { mean: null, std: null, n: 0 } },
        500: { attention: { mean: 0.984, std: 0.01, n: 3 }, max: { mean: 0.97, std: 0.01, n: 3 } },
      };
      const root = checkSvg(
        gridChart(table, [500, 50, 100], ['attention', 'max'], settings),
        'MNIST-bags: test AUC (mean over seeds, 40 epochs)',
      );
      assert.deepEqual(all(root, hasClass('axis-label')).map(textOf).sort(), ['test AUC', 'training bags']);
      const series = seriesGroups(root);
      assert.deepEqual(
        series.map(g => g.attrs['data-name']),
        ['attention', 'max'],
      );
      assert.deepEqual(legendEntries(root), ['attention', 'max']);
      // one vertex per size with a mean: 3 for attention, 2 for max (its 100-bag cell has no runs)
      const vertices = series.map(
        g =>
          all(g, n => n.name === 'path')[0]
            .attrs.d.split(/[ML]/)
            .filter(x => x.trim()).length,
      );
      assert.deepEqual(vertices, [3, 2]);
    });
  });

  describe('a tiny grid: 2 sizes x 1 seed x 2 poolings, 1 epoch, 20 test bags', () => {
    let out: string;
    let first: MilGridSummary;
    let firstLog: string[];
    const grid = {
      sizes: [8, 12],
      seeds: [1],
      poolings: ['attention', 'mean'] as ('attention' | 'mean')[],
      epochs: 1,
      testBags: 20,
      threads: 1,
    };
    const run = async (o: Partial<typeof grid> = {}) => {
      const log: string[] = [];
      const summary = await runMilGrid({ ...grid, ...o, out, log: l => log.push(l) });
      return {
        summary,
        log,
        trained: log.filter(l => /^cell \d+\/\d+: [^:]*: AUC /.test(l)),
        skipped: log.filter(l => /^cell \d+\/\d+: [^:]*: skipped/.test(l)),
      };
    };

    before(async () => {
      out = path.join(tmp, 'results', 'grid.json');
      const r = await run();
      first = r.summary;
      firstLog = r.log;
    });

    it('trains every cell once and writes the JSON results file, the .md table and the .svg chart', () => {
      const trained = firstLog.filter(l => /^cell \d\/4: [^:]*: AUC /.test(l));
      assert.equal(trained.length, 4, firstLog.join('\n'));
      assert.ok(!firstLog.some(l => /^cell .*: skipped/.test(l)), firstLog.join('\n'));
      assert.equal(first.trained, 4);
      assert.equal(first.skipped, 0);

      const file = JSON.parse(read(out)) as MilGridFile;
      assert.equal(file.bench, 'mil-grid');
      assert.deepEqual(
        { ...file.settings, recipe: undefined },
        {
          dataset: 'mnist',
          model: MIL_MODEL,
          epochs: 1,
          testBags: 20,
          bagMean: 10,
          bagStd: 2,
          target: 9,
          recipe: undefined,
        },
      );
      assert.equal(file.settings.recipe.name, 'mil');
      assert.ok(file.machine.cores >= 1 && typeof file.machine.node === 'string');
      assert.equal(file.threads, 1);
      const keys = file.cells.map(c => `${c.size}/${c.seed}/${c.pooling}`).sort();
      assert.deepEqual(keys, ['12/1/attention', '12/1/mean', '8/1/attention', '8/1/mean']);
      for (const c of file.cells) {
        assert.ok(c.auc === null || (c.auc >= 0 && c.auc <= 1), `auc ${c.auc}`);
        assert.ok(c.accuracy >= 0 && c.accuracy <= 1 && c.seconds > 0);
      }

      const { markdown, svg } = companionPaths(out);
      assert.equal(first.markdown, markdown);
      const md = read(markdown);
      assert.match(md, /^\| training bags \| attention \| mean \|$/m);
      const rows = md.split('\n').filter(l => /^\| \d+ \|/.test(l));
      assert.deepEqual(
        rows.map(r => r.split('|')[1].trim()),
        ['8', '12'],
      );
      for (const r of rows) {
        const cols = r
          .split('|')
          .slice(2, -1)
          .map(s => s.trim());
        assert.equal(cols.length, 2, r);
        for (const c of cols) assert.match(c, /^(0|1)\.\d{3} ± 0\.000 \(1 seed\)$|^—$/, r);
      }
      const chart = read(svg);
      assert.match(chart, /^<svg[\s>]/);
      assert.ok(!/NaN|Infinity/.test(chart));
      assert.match(chart, /data-name="attention"/);
      assert.match(chart, /data-name="mean"/);

      assert.deepEqual(Object.keys(first.table), ['8', '12']);
      for (const size of ['8', '12']) assert.deepEqual(Object.keys(first.table[size]), ['attention', 'mean']);
    });

    it('a rerun with the same settings retrains nothing and leaves the results unchanged', async () => {
      const before = read(out);
      const r = await run();
      assert.equal(r.trained.length, 0, r.log.join('\n'));
      assert.equal(r.skipped.length, 4, r.log.join('\n'));
      assert.equal(r.summary.trained, 0);
      assert.equal(r.summary.skipped, 4);
      assert.equal(read(out), before);
      assert.deepEqual(r.summary.table, first.table);
    });

    it('the CLI resumes the same file and prints the summary table as JSON on the last stdout line', async () => {
      const before = read(out);
      const r = await runFleet([
        'bench',
        'mil-grid',
        '--sizes',
        '8,12',
        '--seed-list',
        '1',
        '--poolings',
        'attention,mean',
        '--epochs',
        '1',
        '--test-bags',
        '20',
        '--threads',
        '1',
        '--out',
        out,
        '--json',
      ]);
      assert.equal(r.code, 0, show(r));
      const summary = JSON.parse(lines(r.stdout).at(-1)!) as MilGridSummary;
      assert.equal(summary.bench, 'mil-grid');
      assert.equal(summary.trained, 0);
      assert.equal(summary.skipped, 4);
      assert.deepEqual(summary.table, first.table);
      assert.match(r.stderr, /cell 1\/4: 8 bags, seed 1, attention: skipped/);
      assert.equal(read(out), before);
    });

    it("a call for part of the grid keeps the file's other finished runs in the table and the chart", async () => {
      const r = await run({ sizes: [8], poolings: ['mean'] });
      assert.equal(r.trained.length, 0, r.log.join('\n'));
      assert.equal(r.skipped.length, 1);
      assert.deepEqual(r.summary.sizes, [8, 12]);
      assert.deepEqual(r.summary.poolings, ['attention', 'mean']);
      assert.deepEqual(r.summary.table, first.table);
      const md = read(companionPaths(out).markdown);
      assert.match(md, /^\| training bags \| attention \| mean \|$/m);
      assert.deepEqual(
        md
          .split('\n')
          .filter(l => /^\| \d+ \|/.test(l))
          .map(l => l.split('|')[1].trim()),
        ['8', '12'],
      );
      assert.match(read(companionPaths(out).svg), /data-name="attention"/);
    });

    it('an interrupted sweep resumes with only the missing run', async () => {
      const file = JSON.parse(read(out)) as MilGridFile;
      const kept = file.cells.filter(c => !(c.size === 12 && c.pooling === 'mean'));
      fs.writeFileSync(out, JSON.stringify({ ...file, cells: kept }, null, 2) + '\n');
      const r = await run();
      assert.equal(r.trained.length, 1, r.log.join('\n'));
      assert.match(r.trained[0], /^cell 4\/4: 12 bags, seed 1, mean: AUC /);
      assert.equal(r.skipped.length, 3);
      const now = JSON.parse(read(out)) as MilGridFile;
      assert.equal(now.cells.length, 4);
      assert.deepEqual(now.cells.slice(0, 3), kept); // finished runs are kept as they were
    });

    it('a changed setting (epochs) starts over', async () => {
      const r = await run({ sizes: [8], poolings: ['mean'], epochs: 2 });
      assert.ok(
        r.log.some(l => /starting over/.test(l) && /epochs 1 -> 2/.test(l)),
        r.log.join('\n'),
      );
      assert.equal(r.trained.length, 1, r.log.join('\n'));
      assert.equal(r.skipped.length, 0);
      const file = JSON.parse(read(out)) as MilGridFile;
      assert.equal(file.settings.epochs, 2);
      assert.deepEqual(
        file.cells.map(c => `${c.size}/${c.seed}/${c.pooling}`),
        ['8/1/mean'],
      );
      assert.deepEqual(
        read(companionPaths(out).markdown)
          .split('\n')
          .filter(l => /^\| \d+ \|/.test(l)).length,
        1,
      );
    });
  });

  describe('CLI usage errors name the option and the value (exit 2)', () => {
    const cases: [string[], RegExp[]][] = [
      [
        ['--sizes', '50,abc'],
        [/--sizes/, /"abc"/],
      ],
      [
        ['--sizes', '0'],
        [/--sizes/, /0/],
      ],
      [
        ['--seed-list', '1,x'],
        [/--seed-list/, /"x"/],
      ],
      [
        ['--poolings', 'attention,foo'],
        [/--poolings/, /"foo"/],
      ],
      [
        ['--seeds', '3', '--seed-list', '1,2'],
        [/--seeds/, /--seed-list/],
      ],
      [
        ['--iters', '3'],
        [/--iters/, /mil-grid/],
      ],
    ];
    for (const [args, patterns] of cases) {
      it(`fleet bench mil-grid ${args.join(' ')}`, async () => {
        const r = await runFleet(['bench', 'mil-grid', ...args, '--out', path.join(tmp, 'never.json')]);
        assert.equal(r.code, 2, show(r));
        assert.equal(r.stdout, '');
        assert.equal(lines(r.stderr).length, 1, r.stderr);
        for (const p of patterns) assert.match(r.stderr, p);
        assert.ok(!fs.existsSync(path.join(tmp, 'never.json')));
      });
    }
  });
});
