// Starts a real nats-server (from the PATH) on 127.0.0.1 and a free port, for transport and fault tests.
// Call dispose() in an after() hook; a process 'exit' hook kills whatever is left as a safety net.

import { spawn, spawnSync, type ChildProcess } from 'node:child_process';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { createConnection, createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

export interface NatsServerOptions {
  maxPayload?: number;
  user?: string;
  pass?: string;
  token?: string;
  tls?: { certFile: string; keyFile: string };
  /** Enable JetStream, stored in the server's temporary directory (kept across stop/restart, removed by dispose). */
  jetstream?: boolean;
  /**
   * A whole configuration file's text (e.g. deploy/k8s/base/nats.conf), used instead of the options above: the
   * server still listens on 127.0.0.1 and a free port (and a free monitoring port), its JetStream store_dir is
   * moved into the temporary directory, and `env` gives the variables the file reads ($NATS_..._PASSWORD).
   */
  config?: { text: string; env?: Record<string, string> };
}

export interface NatsServerHandle {
  url: string;
  port: number;
  /** Graceful stop (SIGTERM); restart() brings it back on the same port. */
  stop(): Promise<void>;
  /** Hard kill (SIGKILL), as if the machine died. */
  kill9(): Promise<void>;
  /** Stops it if running, then starts it again on the same port with the same config. */
  restart(): Promise<void>;
  /** Kills the server and removes its temporary files. */
  dispose(): Promise<void>;
}

const live = new Set<{ proc?: ChildProcess; dir: string }>();
process.on('exit', () => {
  for (const s of live) {
    s.proc?.kill('SIGKILL');
    rmSync(s.dir, { recursive: true, force: true });
  }
});

export function natsServerAvailable(): boolean {
  return spawnSync('nats-server', ['--version']).status === 0;
}

export async function startNatsServer(opts: NatsServerOptions = {}): Promise<NatsServerHandle> {
  const port = await freePort();
  const dir = mkdtempSync(join(tmpdir(), 'fleet-nats-'));
  const conf = join(dir, 'nats.conf');
  const q = JSON.stringify; // NATS config accepts JSON-style quoted strings
  const lines = [`listen: "127.0.0.1:${port}"`];
  if (opts.maxPayload !== undefined) lines.push(`max_payload: ${opts.maxPayload}`);
  if (opts.user !== undefined) lines.push(`authorization { user: ${q(opts.user)}, password: ${q(opts.pass ?? '')} }`);
  else if (opts.token !== undefined) lines.push(`authorization { token: ${q(opts.token)} }`);
  if (opts.jetstream) lines.push(`jetstream { store_dir: ${q(join(dir, 'jetstream'))} }`);
  if (opts.tls) lines.push(`tls { cert_file: ${q(opts.tls.certFile)}, key_file: ${q(opts.tls.keyFile)} }`);
  let args = ['-c', conf];
  if (opts.config) {
    const text = opts.config.text.replace(/^(\s*store_dir:\s*).*$/m, `$1${q(join(dir, 'jetstream'))}`);
    writeFileSync(conf, text);
    args = [...args, '-a', '127.0.0.1', '-p', String(port), '-m', String(await freePort())];
  } else writeFileSync(conf, lines.join('\n') + '\n');

  const state: { proc?: ChildProcess; dir: string } = { dir };
  live.add(state);

  const start = async () => {
    const env = opts.config?.env ? { ...process.env, ...opts.config.env } : process.env;
    const proc = spawn('nats-server', args, { stdio: ['ignore', 'ignore', 'pipe'], env });
    let log = '';
    proc.stderr!.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-4000)));
    state.proc = proc;
    const deadline = Date.now() + 10_000;
    while (!(await canConnect(port))) {
      if (proc.exitCode !== null || Date.now() > deadline) {
        proc.kill('SIGKILL');
        throw new Error(`nats-server did not start on port ${port}:\n${log}`);
      }
      await sleep(25);
    }
  };
  const signal = async (sig: NodeJS.Signals) => {
    const proc = state.proc;
    state.proc = undefined;
    if (!proc || proc.exitCode !== null || proc.signalCode !== null) return;
    const exited = new Promise<void>(resolve => proc.once('exit', () => resolve()));
    proc.kill(sig);
    await exited;
  };

  try {
    await start();
  } catch (err) {
    live.delete(state);
    rmSync(dir, { recursive: true, force: true });
    throw err;
  }
  return {
    url: `nats://127.0.0.1:${port}`,
    port,
    stop: () => signal('SIGTERM'),
    kill9: () => signal('SIGKILL'),
    restart: async () => {
      await signal('SIGTERM');
      await start();
    },
    dispose: async () => {
      await signal('SIGKILL');
      live.delete(state);
      rmSync(dir, { recursive: true, force: true });
    },
  };
}

/** A port the OS considers free right now (tiny race with other processes, acceptable for tests). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.unref();
    srv.on('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const { port } = srv.address() as { port: number };
      srv.close(() => resolve(port));
    });
  });
}

function canConnect(port: number): Promise<boolean> {
  return new Promise(resolve => {
    const sock = createConnection({ host: '127.0.0.1', port });
    sock.once('connect', () => {
      sock.destroy();
      resolve(true);
    });
    sock.once('error', () => resolve(false));
  });
}

function sleep(ms: number): Promise<void> {
  return new Promise(r => setTimeout(r, ms));
}
