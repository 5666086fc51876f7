// The listen step of every long-running command's servers (HTTP dashboards, /metrics, any net.Server): it
// resolves only once the socket listens and otherwise rejects with one line naming the address, the option
// and the cause, e.g. "cannot listen on 127.0.0.1:9464 (--metrics): address already in use". The caller
// lets that error end the process (cli/main.ts exits non-zero), so a supervisor sees the failure at once.
// Lives in telemetry/ (a leaf) so that the /metrics listener here and every layer above can share it.
import type { Server } from 'node:net';

/** Readable causes for the errors listen() can meet. */
const CAUSES: Record<string, string> = {
  EADDRINUSE: 'address already in use',
  EACCES: 'permission denied (ports below 1024 need privileges)',
  EADDRNOTAVAIL: 'address not available on this host',
  ENOTFOUND: 'no such host',
  EAI_AGAIN: 'host name lookup failed',
  EAI_FAIL: 'host name lookup failed',
};

export class ListenError extends Error {
  constructor(
    readonly address: string,
    readonly what: string,
    readonly code: string | undefined,
    cause: string,
  ) {
    super(`cannot listen on ${address} (${what}): ${cause}`);
  }
}

/** "host:port", with IPv6 hosts in brackets. */
export const hostPort = (host: string, port: number) => `${host.includes(':') ? `[${host}]` : host}:${port}`;

/** The ListenError for a failed bind of host:port (what: the option that asked for it, e.g. "--http"). */
export function listenError(host: string, port: number, what: string, err: unknown): ListenError {
  const code = (err as NodeJS.ErrnoException)?.code;
  const text = err instanceof Error ? err.message : String(err);
  return new ListenError(hostPort(host, port), what, code, (code && CAUSES[code]) ?? text);
}

/** Starts server listening on host:port; resolves with it once listening, rejects with a ListenError. */
export function listen<S extends Server>(server: S, host: string, port: number, what: string): Promise<S> {
  return new Promise((resolve, reject) => {
    const onError = (err: unknown) => reject(listenError(host, port, what, err));
    server.once('error', onError);
    server.listen(port, host, () => {
      server.off('error', onError);
      resolve(server);
    });
  });
}
