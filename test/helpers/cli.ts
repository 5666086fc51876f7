// Runs the fleet CLI launcher (node bin/fleet.js ...) as a child process and collects its output.
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

export const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

export interface CliResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
}

/** Runs `node bin/fleet.js ...args` with cwd = the repository root. */
export function runFleet(
  args: string[],
  opts: { env?: NodeJS.ProcessEnv; timeoutMs?: number } = {},
): Promise<CliResult> {
  return new Promise((resolve, reject) => {
    const child = spawn(process.execPath, [path.join(REPO_ROOT, 'bin', 'fleet.js'), ...args], {
      cwd: REPO_ROOT,
      env: { ...process.env, FLEET_DEBUG: '', ...opts.env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    let stdout = '',
      stderr = '';
    child.stdout.setEncoding('utf8').on('data', (d: string) => {
      stdout += d;
    });
    child.stderr.setEncoding('utf8').on('data', (d: string) => {
      stderr += d;
    });
    const timer = setTimeout(() => child.kill('SIGKILL'), opts.timeoutMs ?? 120_000);
    child.on('error', e => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr });
    });
  });
}

/** The non-empty lines of a stream's text. */
export const lines = (s: string) => s.split('\n').filter(l => l.trim() !== '');

/** The option names a help text lists (lines starting with --name or -x, --name). */
export function helpOptions(help: string): string[] {
  return [...help.matchAll(/^\s+(?:-\w,\s*)?--([\w-]+)/gm)].map(m => m[1]);
}

/** Every file under dir (relative paths, recursive). */
export function listFiles(dir: string): string[] {
  return (fs.readdirSync(dir, { recursive: true }) as string[])
    .filter(f => fs.statSync(path.join(dir, f)).isFile())
    .sort();
}
