// Real fleet processes for the cluster tests: `node bin/fleet.js coordinator|worker|train ...` as child
// processes with their output captured (printed when a test fails), plus polling and HTTP helpers.
// Every process started through a ProcGroup is killed by group.killAll() (call it in afterEach/after).
import { spawn, type ChildProcess } from 'node:child_process';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const REPO_ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..', '..');

const MAX_LOG = 4 * 1024 * 1024;

/** Thrown inside a waitFor condition to stop waiting at once (e.g. the process it waits on has exited). */
export class WaitAbort extends Error {}

export class FleetProc {
  readonly child: ChildProcess;
  stdout = '';
  stderr = '';
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;

  /** prefix: a command that runs node for us, e.g. ['ip', 'netns', 'exec', NS] (it must exec, not fork). */
  constructor(
    readonly name: string,
    readonly args: string[],
    env: NodeJS.ProcessEnv = {},
    readonly prefix: string[] = [],
  ) {
    const argv = [...prefix, process.execPath, path.join(REPO_ROOT, 'bin', 'fleet.js'), ...args];
    this.child = spawn(argv[0], argv.slice(1), {
      cwd: REPO_ROOT,
      env: { ...process.env, FLEET_DEBUG: '1', ...env },
      stdio: ['ignore', 'pipe', 'pipe'],
    });
    this.child.stdout!.setEncoding('utf8').on('data', (d: string) => {
      this.stdout = (this.stdout + d).slice(-MAX_LOG);
    });
    this.child.stderr!.setEncoding('utf8').on('data', (d: string) => {
      this.stderr = (this.stderr + d).slice(-MAX_LOG);
    });
    this.exited = new Promise(resolve => {
      this.child.once('error', e => {
        this.stderr += `\n[spawn error: ${e.message}]`;
      });
      this.child.once('close', (code, signal) => {
        this.exit = { code, signal };
        resolve(this.exit);
      });
    });
  }

  get pid(): number {
    return this.child.pid!;
  }
  get alive(): boolean {
    return this.exit === null && this.child.exitCode === null && this.child.signalCode === null;
  }

  /** Waits until the captured stderr (or stdout) matches re; fails early if the process exits. */
  async waitForLog(re: RegExp, timeoutMs = 60_000, stream: 'stderr' | 'stdout' = 'stderr'): Promise<RegExpMatchArray> {
    return waitFor(
      () => {
        const m = this[stream].match(re);
        if (m) return m;
        if (!this.alive)
          throw new WaitAbort(`${this.name} exited (${JSON.stringify(this.exit)}) before its ${stream} matched ${re}`);
        return null;
      },
      timeoutMs,
      `${this.name}: ${stream} to match ${re}`,
    );
  }

  /** Sends a signal (SIGKILL by default) and waits for the process to be gone. */
  async kill(signal: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    this.child.kill(signal);
    await this.exited;
  }

  /** SIGTERM, then SIGKILL if it has not exited after graceMs. */
  async stop(graceMs = 5000): Promise<void> {
    if (!this.alive) return;
    this.child.kill('SIGTERM');
    const timer = setTimeout(() => this.child.kill('SIGKILL'), graceMs);
    await this.exited;
    clearTimeout(timer);
  }

  describe(tail = 6000): string {
    const cut = (s: string) => (s.length > tail ? `...${s.slice(-tail)}` : s);
    return (
      `----- ${this.name} (pid ${this.child.pid}, ${this.alive ? 'running' : `exited ${JSON.stringify(this.exit)}`}): ` +
      `${this.prefix.length ? `${this.prefix.join(' ')} ` : ''}node bin/fleet.js ${this.args.join(' ')}\n[stderr]\n${cut(this.stderr)}\n[stdout]\n${cut(this.stdout)}\n`
    );
  }
}

export interface Coord {
  proc: FleetProc;
  api: string;
  stateDir: string;
}

/** Every process a test starts, so that they are all killed afterwards (even when the test fails). */
export class ProcGroup {
  readonly procs: FleetProc[] = [];

  spawn(name: string, args: string[], env?: NodeJS.ProcessEnv, prefix?: string[]): FleetProc {
    const p = new FleetProc(name, args, env, prefix);
    this.procs.push(p);
    return p;
  }

  /** `fleet coordinator` on an OS-chosen HTTP port; resolves with the API base URL once it listens. */
  async coordinator(nats: string, stateDir: string, extra: string[] = [], name = 'coordinator'): Promise<Coord> {
    return { ...(await this.coordinatorWith(nats, ['--state', stateDir, ...extra], name)), stateDir };
  }

  /** `fleet coordinator` with other state flags (e.g. JetStream: --state-bucket B --out-dir D). */
  async coordinatorWith(nats: string, args: string[], name = 'coordinator'): Promise<Omit<Coord, 'stateDir'>> {
    const proc = this.spawn(name, ['coordinator', '--nats', nats, '--http', '127.0.0.1:0', ...args]);
    const m = await proc.waitForLog(/coordinator: state .*?, (http:\/\/[\d.]+:\d+)\/api\/cluster/);
    return { proc, api: m[1] };
  }

  /** `fleet worker --threads 1 --id ID --heartbeat-ms 200`; resolves once it is connected. */
  async worker(nats: string, id: string, extra: string[] = [], prefix?: string[]): Promise<FleetProc> {
    const proc = this.spawn(
      id,
      ['worker', '--nats', nats, '--threads', '1', '--id', id, '--heartbeat-ms', '200', ...extra],
      undefined,
      prefix,
    );
    await proc.waitForLog(new RegExp(`worker ${id}: ready`));
    return proc;
  }

  describe(): string {
    return this.procs.map(p => p.describe()).join('\n');
  }

  async killAll(): Promise<void> {
    await Promise.all(this.procs.map(p => p.kill('SIGKILL').catch(() => {})));
    this.procs.length = 0;
  }
}

/** Polls fn every intervalMs until it returns something other than null/undefined/false; throws after timeoutMs. */
export async function waitFor<T>(
  fn: () => T | null | undefined | false | Promise<T | null | undefined | false>,
  timeoutMs: number,
  what: string,
  intervalMs = 100,
): Promise<T> {
  const deadline = Date.now() + timeoutMs;
  let last: unknown;
  for (;;) {
    try {
      const v = await fn();
      if (v !== null && v !== undefined && v !== false) return v as T;
    } catch (e) {
      if (e instanceof WaitAbort) throw e;
      last = e;
    }
    if (Date.now() > deadline)
      throw new Error(
        `timed out after ${timeoutMs} ms waiting for ${what}${last ? ` (last error: ${(last as Error).message})` : ''}`,
      );
    await sleep(intervalMs);
  }
}

export const sleep = (ms: number) => new Promise<void>(r => setTimeout(r, ms));

/** GET url; resolves with the status, content type and parsed JSON body. */
export function getJson(url: string, method = 'GET'): Promise<{ status: number; type: string; body: any }> {
  return new Promise((resolve, reject) => {
    const req = http.request(url, { method, timeout: 10_000 }, res => {
      let text = '';
      res.setEncoding('utf8').on('data', (d: string) => {
        text += d;
      });
      res.on('end', () => {
        try {
          resolve({
            status: res.statusCode ?? 0,
            type: String(res.headers['content-type'] ?? ''),
            body: JSON.parse(text),
          });
        } catch (e) {
          reject(new Error(`${method} ${url}: not JSON (${(e as Error).message}): ${text.slice(0, 200)}`));
        }
      });
    });
    req.on('timeout', () => req.destroy(new Error(`${method} ${url} timed out`)));
    req.on('error', reject);
    req.end();
  });
}

// ---- the coordinator's persisted job state (<state>/jobs/<id>/job.json)

export interface TaskState {
  task: { id: string };
  state: 'queued' | 'leased' | 'done' | 'failed' | 'cancelled';
  attempts: number;
  worker?: string;
  leasedAt?: number;
}
export interface JobState {
  id: string;
  state: 'running' | 'done' | 'failed' | 'cancelled';
  tasks: TaskState[];
  error?: string;
  summary?: Record<string, any>;
}

export function jobIds(stateDir: string): string[] {
  const dir = path.join(stateDir, 'jobs');
  return fs.existsSync(dir) ? fs.readdirSync(dir).filter(id => fs.existsSync(path.join(dir, id, 'job.json'))) : [];
}

/** The job's job.json (written atomically by the coordinator), or null while it does not exist. */
export function readJob(stateDir: string, id: string): JobState | null {
  const file = path.join(stateDir, 'jobs', id, 'job.json');
  if (!fs.existsSync(file)) return null;
  return JSON.parse(fs.readFileSync(file, 'utf8')) as JobState;
}

/** How many times a worker's log says it started training a task. */
export function trainingsOf(worker: FleetProc, taskId: string, jobId: string): number {
  return worker.stderr.split('\n').filter(l => l.includes(`task ${taskId} of job ${jobId} (attempt`)).length;
}
