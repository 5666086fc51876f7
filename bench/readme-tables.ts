// The README's result tables, generated from the results files of `fleet bench results`. Each table sits between
// `<!-- results:NAME -->` and `<!-- /results:NAME -->`; NAME is an experiment of bench/experiments.ts, and the
// table comes from its --full results file when that is complete, else from its --quick one. Every row names its
// file, mode and date; a line under the table gives the commit, machine and versions.
//
//   fleet bench results --readme          (or: npx tsx bench/readme-tables.ts [--check])
//
// test/readme-results.test.ts fails when a table between markers differs from what this generates.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { pathToFileURL } from 'node:url';
import { EXPERIMENTS, type Experiment } from './experiments.ts';
import { readResultsFile, resultsPath, MODES, type ResultsFile } from './results-file.ts';
import { ROOT, RESULTS_DIR } from './results.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';

const MARKER = /<!-- results:([a-z0-9-]+) -->\n([\s\S]*?)<!-- \/results:([a-z0-9-]+) -->/g;

export interface TableSource {
  root: string;
  resultsDir: string;
  experiments: readonly Experiment[];
}
const defaults: TableSource = { root: ROOT, resultsDir: RESULTS_DIR, experiments: EXPERIMENTS };

/** The results file a table is made from: full when complete, else quick, else an incomplete full run. */
export function chooseResults(
  name: string,
  src: TableSource = defaults,
): { file: string; results: ResultsFile } | null {
  const found = MODES.map(mode => {
    const file = resultsPath(src.resultsDir, name, mode);
    const results = readResultsFile(path.resolve(src.root, file));
    return results && { file, results };
  });
  const [quick, full] = [found[MODES.indexOf('quick')], found[MODES.indexOf('full')]];
  return (full?.results.complete ? full : null) ?? quick ?? full ?? null;
}

const posix = (p: string) => p.split(path.sep).join('/');
const cell = (s: string) => s.replace(/\|/g, '\\|').replace(/\n/g, ' ');

/** What goes between an experiment's markers (starting and ending with a newline-terminated line). */
export function renderBlock(name: string, src: TableSource = defaults): string {
  const e = src.experiments.find(x => x.name === name);
  if (!e)
    throw new Error(
      `README marker results:${name}: no such experiment (known: ${src.experiments.map(x => x.name).join(', ')})`,
    );
  const chosen = chooseResults(name, src);
  const pattern = posix(path.join(src.resultsDir, `${name}.{quick,full}.json`));
  if (!chosen) {
    return (
      `_Not yet measured by \`fleet bench results\`: no ${pattern}. ` +
      `Run \`fleet bench results --quick --only ${name}\`, then \`fleet bench results --readme\`._\n`
    );
  }
  const { file, results } = chosen;
  const table = e.table(results);
  const base = path.basename(file);
  const lines = [
    `| ${[...table.header, 'source'].map(cell).join(' | ')} |`,
    `|${[...table.header, 'source'].map(() => '---').join('|')}|`,
    ...table.rows.map(
      r => `| ${[...r.cells, `${base}, ${results.mode}, ${r.run.date.slice(0, 10)}`].map(cell).join(' | ')} |`,
    ),
  ];
  const m = results.machine as Record<string, unknown>;
  const commit = results.commit
    ? `commit ${results.commit.slice(0, 12)}${results.dirty ? ' (tree modified)' : ''}`
    : 'commit unknown';
  const missing = results.complete ? '' : ` Incomplete: ${results.runs.length} run(s) finished so far.`;
  lines.push(
    '',
    `_${e.title}. From [${posix(file)}](${posix(file)}) (\`fleet bench results --${results.mode}\`, ${commit}, ` +
      `${results.date.slice(0, 10)}; ${m.cpu}, ${m.cores} cores, Node ${m.node}, ` +
      `onnxruntime-node ${m.onnxruntime_node}).${missing}_`,
  );
  return lines.join('\n') + '\n';
}

export interface Mismatch {
  name: string;
  expected: string;
  actual: string;
}

/** Every marked table of a README, with what it holds and what the results files give. */
export function readmeTables(
  readme: string,
  src: TableSource = defaults,
): Array<Mismatch & { start: number; end: number }> {
  const opens = [...readme.matchAll(/<!-- results:([a-z0-9-]+) -->/g)].length;
  const blocks = [...readme.matchAll(MARKER)].map(m => {
    if (m[1] !== m[3]) throw new Error(`README: marker results:${m[1]} is closed by /results:${m[3]}`);
    const start = m.index! + m[0].indexOf('\n') + 1;
    return { name: m[1], actual: m[2], expected: renderBlock(m[1], src), start, end: start + m[2].length };
  });
  if (blocks.length !== opens) throw new Error(`README: ${opens} results markers opened, ${blocks.length} closed`);
  return blocks;
}

/** The tables whose text differs from what the results files give. */
export const readmeMismatches = (readme: string, src: TableSource = defaults): Mismatch[] =>
  readmeTables(readme, src)
    .filter(b => b.actual !== b.expected)
    .map(({ name, expected, actual }) => ({ name, expected, actual }));

/** The README with every marked table regenerated. */
export function regenerateReadme(readme: string, src: TableSource = defaults): string {
  let out = '';
  let at = 0;
  for (const b of readmeTables(readme, src)) {
    out += readme.slice(at, b.start) + b.expected;
    at = b.end;
  }
  return out + readme.slice(at);
}

/** Rewrites README.md under root; returns the names of the tables that changed. */
export function updateReadme(src: TableSource = defaults): string[] {
  const file = path.join(src.root, 'README.md');
  const readme = fs.readFileSync(file, 'utf8');
  const changed = readmeMismatches(readme, src).map(m => m.name);
  if (changed.length) writeFileAtomic(file, regenerateReadme(readme, src));
  return changed;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  try {
    if (process.argv.includes('--check')) {
      const bad = readmeMismatches(fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8'));
      for (const m of bad) process.stderr.write(`README table results:${m.name} differs from its results file\n`);
      process.exit(bad.length ? 1 : 0);
    }
    const changed = updateReadme();
    process.stdout.write(
      changed.length ? `README.md: regenerated ${changed.join(', ')}\n` : 'README.md: every table is up to date\n',
    );
  } catch (e) {
    process.stderr.write(`readme-tables: ${(e as Error).message}\n`);
    process.exit(1);
  }
}
