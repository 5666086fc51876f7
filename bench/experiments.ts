// The experiments behind every number the README publishes, as `fleet bench results` runs them: each is a list
// of command lines (fleet CLI invocations with --json, or a bench script) for --quick and for --full, and how
// its results file becomes a table (bench/readme-tables.ts). Estimated minutes are for this project's 2-core
// machine when quiet, from the README's timings: a CNN epoch 34-45 s, SimCLR 1 epoch ~90 s plus the probe, a
// MIL run 1.2-1.7 s per training bag (2 min at 100 bags, 14 min at 500), a member-epoch ~45 s on 2 workers.
import * as path from 'node:path';
import { pick, isObject, type Mode, type ResultsFile, type RunRecord, type Json } from './results-file.ts';

export interface RunSpec {
  /** The run's name within its experiment ([a-z0-9-]). */
  id: string;
  /** node's arguments from the repository root: `bin/fleet.js ...` or `--import tsx bench/SCRIPT.ts ...`. */
  args: string[];
  /** The run's --out directory: emptied before the run starts, so a rerun never mixes two runs' files. */
  outDir?: string;
  /** Fields (dotted paths) of a JSON file the run writes, kept with its --json output. */
  keep?: { file: string; fields: string[] };
  /** Estimated minutes on the 2-core machine when quiet. */
  minutes: number;
}

export interface TableRow {
  cells: string[];
  run: RunRecord;
}
export interface Table {
  header: string[];
  rows: TableRow[];
}

export interface Experiment {
  name: string;
  title: string;
  /** The runs in a mode; dir is this experiment's folder for run outputs (runs/results/MODE/NAME by default). */
  runs(mode: Mode, dir: string): RunSpec[];
  /** What the machine needs beyond the npm install (shown by --list). */
  needs?: string;
  /** The table of a results file (without the source column, which the generator adds). */
  table(file: ResultsFile): Table;
}

// ---- command lines

/** A `fleet train ...` run writing its outputs to dir/id. */
function trainRun(dir: string, id: string, minutes: number, args: string[], keepMetrics?: string[]): RunSpec {
  const out = path.join(dir, id);
  const keep = keepMetrics && { file: path.join(out, 'metrics.json'), fields: keepMetrics };
  return {
    id,
    args: ['bin/fleet.js', 'train', ...args, '--out', out, '--json'],
    outDir: out,
    minutes,
    ...(keep ? { keep } : {}),
  };
}

/** How a command reads in a table: `fleet ...` without the output path and --json. */
export function shownCommand(command: string[]): string {
  const a = command[0] === 'node' ? command.slice(1) : [...command];
  const shown: string[] = [];
  for (let i = 0; i < a.length; i++) {
    if (a[i] === '--json') continue;
    if (a[i] === '--out') {
      i++;
      continue;
    }
    shown.push(a[i]);
  }
  if (shown[0] === 'bin/fleet.js') return ['fleet', ...shown.slice(1)].join(' ');
  if (shown[0] === '--import' && shown[1] === 'tsx') return ['npx tsx', ...shown.slice(2)].join(' ');
  return ['node', ...shown].join(' ');
}

// ---- formatting

const num = (v: unknown): number | undefined => (typeof v === 'number' && Number.isFinite(v) ? v : undefined);
const pct = (v: unknown) => (num(v) === undefined ? '—' : `${(100 * num(v)!).toFixed(2)}%`);
const fixed = (v: unknown, digits: number) => (num(v) === undefined ? '—' : num(v)!.toFixed(digits));
export function duration(v: unknown): string {
  const s = num(v);
  if (s === undefined || s <= 0) return '—';
  return s < 120 ? `${Math.round(s)} s` : s < 7200 ? `${(s / 60).toFixed(1)} min` : `${(s / 3600).toFixed(1)} h`;
}
const code = (command: string[]) => `\`${shownCommand(command)}\``;

const EPOCH_MINUTES = 0.75;

// ---- the experiments

const cnn: Experiment = {
  name: 'cnn',
  title: 'CNN on MNIST: the fleet recipe (1 and 10 epochs) and the reference recipe (1 epoch), seed 1',
  runs: (mode, dir) => [
    trainRun(dir, 'fleet-1-epoch', EPOCH_MINUTES + 0.1, ['cnn', '--epochs', '1']),
    trainRun(dir, 'reference-1-epoch', 1.1, ['cnn', '--recipe', 'reference', '--epochs', '1']),
    ...(mode === 'full' ? [trainRun(dir, 'fleet-10-epochs', 8, ['cnn', '--epochs', '10'])] : []),
  ],
  table: classifierTable,
};

function classifierTable(file: ResultsFile): Table {
  return {
    header: ['run', 'test accuracy', 'test loss', 'training time'],
    rows: file.runs.map(run => ({
      run,
      cells: [
        code(run.command),
        pct(run.output.test_accuracy),
        fixed(run.output.test_loss, 4),
        `${duration(run.output.seconds)} (${duration(run.output.wall_seconds)} wall)`,
      ],
    })),
  };
}

const simclr: Experiment = {
  name: 'simclr',
  title: 'SimCLR and SupCon linear evaluation, and the probe on a random encoder (--epochs 0), seed 1',
  runs: (_mode, dir) => [
    trainRun(dir, 'random-encoder', 1, ['simclr', '--epochs', '0']),
    trainRun(dir, 'simclr', 2.5, ['simclr']),
    trainRun(dir, 'supcon', 3, ['simclr', '--supervised']),
  ],
  table: file => ({
    header: ['run', 'linear-evaluation test accuracy', 'pre-training time'],
    rows: file.runs.map(run => ({
      run,
      cells: [code(run.command), pct(run.output.linear_eval_accuracy), duration(run.output.seconds)],
    })),
  }),
};

const MIL_SIZES = [50, 100, 150, 200, 300, 400, 500];
const MIL_POOLINGS = ['attention', 'gated', 'mean', 'max'];
/** Measured: 115-125 s for 100 bags, 840-890 s for 500 (bench/results/mil-grid.json). */
const milSecondsPerBag = (size: number) => (size <= 100 ? 1.2 : 1.7);

const mil: Experiment = {
  name: 'mil',
  title: 'MIL on MNIST-bags (fleet bench mil-grid): test AUC per pooling and number of training bags over seeds',
  runs: (mode, dir) => {
    const sizes = mode === 'full' ? MIL_SIZES : [100];
    const seeds = mode === 'full' ? [1, 2, 3, 4, 5] : [1, 2];
    const poolings = mode === 'full' ? MIL_POOLINGS : ['attention', 'gated'];
    const out = path.join(dir, 'mil-grid.json'); // mil-grid resumes from its own file: not emptied
    const seconds = sizes.reduce((a, size) => a + size * milSecondsPerBag(size), 0) * seeds.length * poolings.length;
    return [
      {
        id: 'grid',
        minutes: Math.round(seconds / 60),
        args: [
          'bin/fleet.js',
          'bench',
          'mil-grid',
          '--sizes',
          sizes.join(','),
          '--seed-list',
          seeds.join(','),
          '--poolings',
          poolings.join(','),
          '--out',
          out,
          '--json',
        ],
        keep: { file: out, fields: ['cells'] },
      },
    ];
  },
  table: file => {
    const run = file.runs[0];
    if (!run) return { header: ['training bags'], rows: [] };
    const table = isObject(run.output.table) ? run.output.table : {};
    const sizes = Object.keys(table)
      .map(Number)
      .filter(Number.isFinite)
      .sort((a, b) => a - b);
    const present = new Set(sizes.flatMap(s => Object.keys(isObject(table[s]) ? (table[s] as Json) : {})));
    const poolings = MIL_POOLINGS.filter(p => present.has(p));
    const cells = Array.isArray(pick(run, 'metrics.cells')) ? (pick(run, 'metrics.cells') as Json[]) : [];
    const lowest = (size: number, pooling: string) => {
      const aucs = cells
        .filter(c => c.size === size && c.pooling === pooling)
        .map(c => num(c.auc))
        .filter(a => a !== undefined);
      return aucs.length ? Math.min(...aucs) : undefined;
    };
    return {
      header: ['training bags', ...poolings.map(p => `${p}: mean ± std (seeds), lowest`)],
      rows: sizes.map(size => ({
        run,
        cells: [
          String(size),
          ...poolings.map(p => {
            const c = pick(table, `${size}.${p}`) as Json | undefined;
            if (!c || num(c.mean) === undefined) return '—';
            return `${fixed(c.mean, 3)} ± ${fixed(c.std ?? 0, 3)} (${c.n}), ${fixed(lowest(size, p), 3)}`;
          }),
        ],
      })),
    };
  },
};

const ensembleColumns = ['run', 'ensemble test accuracy (loss)', 'best member', 'equal average', 'hard vote', 'time'];
const ensembleCells = (run: RunRecord) => [
  code(run.command),
  `${pct(run.output.test_accuracy)} (${fixed(run.output.test_loss, 4)})`,
  pct(run.output.best_member_test_accuracy),
  pct(run.output.average_test_accuracy),
  pct(run.output.hard_vote_test_accuracy),
  duration(run.output.seconds),
];

const ensemble: Experiment = {
  name: 'ensemble',
  title: '5-member voting ensemble of CNNs on MNIST (fleet recipe), seed 1',
  runs: (mode, dir) => {
    const epochs = mode === 'full' ? 10 : 1;
    return [
      trainRun(dir, `members-5-epochs-${epochs}`, 5 * epochs * EPOCH_MINUTES + 1, [
        'cnn',
        '--members',
        '5',
        '--epochs',
        String(epochs),
        '--workers',
        '2',
      ]),
    ];
  },
  table: file => ({ header: ensembleColumns, rows: file.runs.map(run => ({ run, cells: ensembleCells(run) })) }),
};

const selection: Experiment = {
  name: 'selection',
  title: 'Caruana selection against the equal-weight average of the same pool (4 members of 1 epoch, 15% validation)',
  runs: (mode, dir) =>
    (mode === 'full' ? [1, 2, 3] : [1]).map(seed =>
      trainRun(
        dir,
        `seed-${seed}`,
        4 * EPOCH_MINUTES + 0.5,
        ['cnn', '--members', '4', '--ensemble', 'selection', '--epochs', '1', '--seed', String(seed)],
        ['selection.val_score', 'average.val_loss'],
      ),
    ),
  table: file => ({
    header: [
      'seed',
      'weights',
      'validation loss: selected / average',
      'test loss: selected / average',
      'test accuracy: selected / average / best member',
    ],
    rows: file.runs.map(run => {
      const o = run.output;
      const seed = run.command[run.command.indexOf('--seed') + 1] ?? '—';
      const weights = Array.isArray(o.weights) ? o.weights.map(w => fixed(w, 2)).join(', ') : '—';
      return {
        run,
        cells: [
          seed,
          weights,
          `${fixed(pick(run, 'metrics.selection.val_score'), 4)} / ${fixed(pick(run, 'metrics.average.val_loss'), 4)}`,
          `${fixed(o.test_loss, 5)} / ${fixed(o.average_test_loss, 5)}`,
          `${pct(o.test_accuracy)} / ${pct(o.average_test_accuracy)} / ${pct(o.best_member_test_accuracy)}`,
        ],
      };
    }),
  }),
};

const fashion: Experiment = {
  name: 'fashion',
  title: 'CNN on Fashion-MNIST (fleet recipe): 1 and 10 epochs, and a 5-member ensemble (--full), seed 1',
  needs: 'Fashion-MNIST in /usr/share/datasets/fashion-mnist (apt-get install dataset-fashion-mnist)',
  runs: (mode, dir) => [
    trainRun(dir, 'fleet-1-epoch', EPOCH_MINUTES + 0.1, ['cnn', '--dataset', 'fashion', '--epochs', '1']),
    ...(mode === 'full'
      ? [
          trainRun(dir, 'fleet-10-epochs', 8, ['cnn', '--dataset', 'fashion', '--epochs', '10']),
          trainRun(dir, 'members-5-epochs-10', 5 * 10 * EPOCH_MINUTES + 1, [
            'cnn',
            '--dataset',
            'fashion',
            '--members',
            '5',
            '--epochs',
            '10',
            '--workers',
            '2',
          ]),
        ]
      : []),
  ],
  table: file => ({
    header: ['run', 'test accuracy', 'test loss', 'best member', 'training time'],
    rows: file.runs.map(run => ({
      run,
      cells: [
        code(run.command),
        pct(run.output.test_accuracy),
        fixed(run.output.test_loss, 4),
        run.output.best_member_test_accuracy === undefined ? '—' : pct(run.output.best_member_test_accuracy),
        duration(run.output.seconds),
      ],
    })),
  }),
};

const torchHeader = (file: ResultsFile) => {
  const v = pick(file.runs[0]?.output, 'pytorch.version');
  return typeof v === 'string' ? `PyTorch ${v}` : 'PyTorch';
};

const speed: Experiment = {
  name: 'speed',
  title:
    'Training step and inference against PyTorch on the same machine (bench/compare.ts: batch 256, 2 threads each)',
  needs: '/usr/bin/python3 with PyTorch (Debian python3-torch)',
  runs: (mode, dir) => {
    const rounds = mode === 'full' ? 3 : 1;
    return [
      {
        id: `rounds-${rounds}`,
        minutes: 0.8 * rounds + 0.2,
        args: [
          '--import',
          'tsx',
          'bench/compare.ts',
          '--rounds',
          String(rounds),
          '--out',
          path.join(dir, 'compare.json'),
        ],
      },
    ];
  },
  table: file => ({
    header: ['', 'fleet (ONNX Runtime)', torchHeader(file), 'ratio'],
    rows: file.runs.flatMap(run => {
      const o = run.output;
      const side = (who: string, what: 'train' | 'infer') => {
        const perSecond = fixed(pick(o, `${who}.${what}_images_per_second`), 0);
        const ms = fixed(pick(o, `${who}.${what === 'train' ? 'step' : 'infer'}_ms_median`), 0);
        return `${perSecond} img/s (${ms} ms)`;
      };
      return (['train', 'infer'] as const).map(what => ({
        run,
        cells: [
          what === 'train' ? `training step (${code(run.command)})` : 'inference of the exported model',
          side('fleet', what),
          side('pytorch', what),
          `${fixed(pick(o, `ratios.${what}`), 2)}×`,
        ],
      }));
    }),
  }),
};

export const EXPERIMENTS: readonly Experiment[] = [cnn, simclr, mil, ensemble, selection, fashion, speed];

/** The experiments named in a comma-separated list (all when undefined); an unknown name is an error. */
export function selectExperiments(all: readonly Experiment[], only: string | undefined): Experiment[] {
  if (only === undefined) return [...all];
  const names = only
    .split(',')
    .map(s => s.trim())
    .filter(Boolean);
  if (names.length === 0) throw new Error(`--only: no experiment named in "${only}"`);
  for (const n of names) {
    if (!all.some(e => e.name === n))
      throw new Error(`--only: unknown experiment "${n}" (known: ${all.map(e => e.name).join(', ')})`);
  }
  return all.filter(e => names.includes(e.name));
}
