// Head-to-head benchmark: fleet (onnxruntime-node) against the PyTorch reference implementation of the same CNN.
//
//   npx tsx bench/compare.ts [--rounds 3] [--batch-size 256] [--threads 2] [--out bench/results/compare.json]
//
// Each round runs, one after another:
//   node bin/fleet.js bench train --json --batch-size B --threads T
//   node bin/fleet.js bench infer --json --batch-size B --threads T
//   /usr/bin/python3 bench/pytorch_cnn.py --json --batch-size B --threads T
// Every child prints its result as a JSON object on its last stdout line. The medians over the rounds
// are compared; ratios are fleet / pytorch throughput (above 1 means fleet is faster).
// The result is printed on stdout (one JSON document) and written atomically to --out.
// Also: --python <interpreter> (default /usr/bin/python3), --fleet <launcher> (default bin/fleet.js).
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath, pathToFileURL } from 'node:url';
import { parse, intOption, UsageError } from '../util/args.ts';
import { writeFileAtomic } from '../engine/util/atomic.ts';
import { median } from './stats.ts';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');

export type Json = Record<string, unknown>;

/** The last line of `stdout` that parses as a JSON object (tolerates log lines and blank lines before/after it). */
export function lastJsonObject(stdout: string): Json | undefined {
  const lines = stdout.split(/\r?\n/);
  for (let i = lines.length - 1; i >= 0; i--) {
    const line = lines[i].trim();
    if (!line.startsWith('{') || !line.endsWith('}')) continue;
    try {
      const v: unknown = JSON.parse(line);
      if (v !== null && typeof v === 'object' && !Array.isArray(v)) return v as Json;
    } catch {
      // not JSON after all: keep looking further up
    }
  }
  return undefined;
}

/** A finite number from the first of `keys` present in `obj`, else undefined. Numeric strings are accepted. */
export function numberField(obj: Json, ...keys: string[]): number | undefined {
  for (const k of keys) {
    const v = obj[k];
    const n = typeof v === 'number' ? v : typeof v === 'string' && v.trim() !== '' ? Number(v) : NaN;
    if (Number.isFinite(n)) return n;
  }
  return undefined;
}

function requireNumber(obj: Json, what: string, ...keys: string[]): number {
  const n = numberField(obj, ...keys);
  if (n === undefined) {
    throw new Error(`${what}: result has no numeric ${keys.join(' / ')}: ${JSON.stringify(obj).slice(0, 500)}`);
  }
  return n;
}

function round(x: number, digits = 3): number {
  const f = 10 ** digits;
  return Math.round(x * f) / f;
}

/** Runs a child process; stderr passes through (progress stays visible), stdout is captured and its last JSON line returned. */
export function runJson(cmd: string, args: string[], cwd = ROOT): Promise<Json> {
  const shown = [cmd === process.execPath ? 'node' : cmd, ...args].join(' ');
  process.stderr.write(`$ ${shown}\n`);
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let errTail = '';
    child.stdout.setEncoding('utf8');
    child.stderr.setEncoding('utf8');
    child.stdout.on('data', (d: string) => {
      out += d;
    });
    child.stderr.on('data', (d: string) => {
      process.stderr.write(d);
      errTail = (errTail + d).slice(-2000);
    });
    child.on('error', e => reject(new Error(`could not start "${shown}": ${e.message}`)));
    child.on('close', (code, signal) => {
      if (code !== 0) {
        const why = signal ? `was killed by ${signal}` : `exited with code ${code}`;
        const tail = (errTail.trim() || out.trim()).split('\n').slice(-5).join('\n');
        reject(new Error(`"${shown}" ${why}${tail ? `:\n${tail}` : ''}`));
        return;
      }
      const obj = lastJsonObject(out);
      if (!obj) {
        reject(
          new Error(
            `"${shown}" printed no JSON object on stdout; last output: ${out.trim().split('\n').slice(-3).join(' | ').slice(0, 500)}`,
          ),
        );
        return;
      }
      resolve(obj);
    });
  });
}

function onnxruntimeVersion(): string | null {
  try {
    const pkg = JSON.parse(
      fs.readFileSync(path.join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8'),
    );
    return typeof pkg.version === 'string' ? pkg.version : null;
  } catch {
    return null;
  }
}

export async function main(argv: string[]): Promise<Json> {
  const { values } = parse(argv, {
    rounds: { type: 'string' },
    'batch-size': { type: 'string' },
    threads: { type: 'string' },
    out: { type: 'string' },
    python: { type: 'string' },
    fleet: { type: 'string' },
  });
  const rounds = intOption(values, 'rounds', 3, 1);
  const batch = intOption(values, 'batch-size', 256, 1);
  const threads = intOption(values, 'threads', 2, 1);
  const out = path.resolve(
    typeof values.out === 'string' ? values.out : path.join(ROOT, 'bench', 'results', 'compare.json'),
  );
  const python = typeof values.python === 'string' ? values.python : '/usr/bin/python3';

  const common = ['--json', '--batch-size', String(batch), '--threads', String(threads)];
  const fleetBin = path.resolve(typeof values.fleet === 'string' ? values.fleet : path.join(ROOT, 'bin', 'fleet.js'));
  const fleetTrain: Json[] = [];
  const fleetInfer: Json[] = [];
  const torch: Json[] = [];

  for (let r = 1; r <= rounds; r++) {
    process.stderr.write(`-- round ${r}/${rounds}\n`);
    fleetTrain.push(await runJson(process.execPath, [fleetBin, 'bench', 'train', ...common]));
    fleetInfer.push(await runJson(process.execPath, [fleetBin, 'bench', 'infer', ...common]));
    torch.push(await runJson(python, [path.join(ROOT, 'bench', 'pytorch_cnn.py'), ...common]));
  }

  const fleet = {
    train_images_per_second: round(
      median(
        fleetTrain.map(o => requireNumber(o, 'fleet bench train', 'train_images_per_second', 'images_per_second')),
      ),
      2,
    ),
    step_ms_median: round(median(fleetTrain.map(o => requireNumber(o, 'fleet bench train', 'step_ms_median')))),
    infer_images_per_second: round(
      median(
        fleetInfer.map(o => requireNumber(o, 'fleet bench infer', 'infer_images_per_second', 'images_per_second')),
      ),
      2,
    ),
    infer_ms_median: round(
      median(fleetInfer.map(o => requireNumber(o, 'fleet bench infer', 'infer_ms_median', 'step_ms_median'))),
    ),
    rounds: { train: fleetTrain, infer: fleetInfer },
  };
  const pytorch = {
    version: torch.map(o => o.version).find(v => typeof v === 'string') ?? null,
    train_images_per_second: round(median(torch.map(o => requireNumber(o, 'pytorch', 'train_images_per_second'))), 2),
    step_ms_median: round(median(torch.map(o => requireNumber(o, 'pytorch', 'step_ms_median')))),
    infer_images_per_second: round(median(torch.map(o => requireNumber(o, 'pytorch', 'infer_images_per_second'))), 2),
    infer_ms_median: round(median(torch.map(o => requireNumber(o, 'pytorch', 'infer_ms_median')))),
    rounds: torch,
  };
  const cpus = os.cpus();
  const result: Json = {
    date: new Date().toISOString(),
    config: { rounds, batch_size: batch, threads },
    machine: {
      cpu_model: cpus[0]?.model ?? null,
      cores: cpus.length,
      total_memory_bytes: os.totalmem(),
      total_memory_gib: round(os.totalmem() / 2 ** 30, 2),
      platform: `${os.platform()} ${os.release()} ${os.arch()}`,
      node: process.version,
      onnxruntime_node: onnxruntimeVersion(),
      torch: pytorch.version,
      python: torch.map(o => o.python).find(v => typeof v === 'string') ?? null,
    },
    fleet,
    pytorch,
    // fleet / pytorch throughput: > 1 means fleet is faster.
    ratios: {
      train: round(fleet.train_images_per_second / pytorch.train_images_per_second),
      infer: round(fleet.infer_images_per_second / pytorch.infer_images_per_second),
    },
  };
  writeFileAtomic(out, JSON.stringify(result, null, 2) + '\n');
  process.stderr.write(
    `train: fleet ${fleet.train_images_per_second} img/s vs pytorch ${pytorch.train_images_per_second} img/s (x${(result.ratios as Json).train})\n` +
      `infer: fleet ${fleet.infer_images_per_second} img/s vs pytorch ${pytorch.infer_images_per_second} img/s (x${(result.ratios as Json).infer})\n` +
      `wrote ${path.relative(process.cwd(), out).startsWith('..') ? out : path.relative(process.cwd(), out)}\n`,
  );
  process.stdout.write(JSON.stringify(result) + '\n');
  return result;
}

if (process.argv[1] && import.meta.url === pathToFileURL(path.resolve(process.argv[1])).href) {
  main(process.argv.slice(2)).catch((e: unknown) => {
    if (e instanceof UsageError) {
      process.stderr.write(`compare: ${e.message}\n`);
      process.exit(2);
    }
    process.stderr.write(`compare: ${(e as Error).message}\n`);
    process.exit(1);
  });
}
