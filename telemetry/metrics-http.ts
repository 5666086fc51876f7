// A small HTTP server for processes whose only HTTP duty is /metrics (workers with --http, fleet serve).
// The coordinator's richer HTTP port (coordinator/http.ts) serves /metrics through metricsResponse too.
import * as http from 'node:http';
import { exposition, type Metrics } from './metrics.ts';
import { listen } from './listen.ts';

/** Answers GET /metrics with the registry's exposition text; returns false for any other path. */
export async function metricsResponse(
  m: Metrics,
  req: http.IncomingMessage,
  res: http.ServerResponse,
): Promise<boolean> {
  if (new URL(req.url ?? '/', 'http://localhost').pathname !== '/metrics') return false;
  const { contentType, body } = await exposition(m);
  res.writeHead(200, { 'content-type': contentType });
  res.end(body);
  return true;
}

/**
 * Serves /metrics on host:port (bind to 127.0.0.1 unless told otherwise); resolves once listening, rejects
 * with a ListenError naming the address, `what` (the option that asked for it) and the cause.
 */
export function serveMetrics(m: Metrics, host: string, port: number, what = '/metrics'): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    metricsResponse(m, req, res).then(
      done => {
        if (!done) {
          res.writeHead(404, { 'content-type': 'text/plain' });
          res.end('only /metrics here\n');
        }
      },
      e => {
        res.writeHead(500, { 'content-type': 'text/plain' });
        res.end(`metrics failed: ${(e as Error).message}\n`);
      },
    );
  });
  return listen(server, host, port, what);
}
