// The coordinator's HTTP port: the cluster view and the jobs as JSON (bound to 127.0.0.1 unless told otherwise).
import * as http from 'node:http';
import type { Coordinator } from './coordinator.ts';
import { metricsResponse } from '../dashboard/metrics-http.ts';

export function serveHttp(c: Coordinator, host: string, port: number): Promise<http.Server> {
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(body, null, 2));
    };
    if (req.method !== 'GET') return send(405, { error: `method ${req.method} not allowed` });
    const url = new URL(req.url ?? '/', 'http://localhost');
    if (url.pathname === '/api/cluster') return send(200, c.clusterView());
    if (url.pathname === '/api/jobs') return send(200, c.jobsView());
    if (url.pathname === '/metrics' && c.o.metrics) {
      metricsResponse(c.o.metrics, req, res).catch(e => send(500, { error: `metrics failed: ${(e as Error).message}` }));
      return;
    }
    return send(404, { error: `no such path: ${url.pathname}`, paths: ['/api/cluster', '/api/jobs'] });
  });
  return new Promise((resolve, reject) => {
    server.once('error', reject);
    server.listen(port, host, () => resolve(server));
  });
}

/** "HOST:PORT" or "PORT" -> [host, port] (host defaults to 127.0.0.1). */
export function parseHostPort(s: string, what: string): [string, number] {
  const m = /^(?:(.+):)?(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`${what}: expected HOST:PORT or PORT, got "${s}"`);
  return [m[1] ?? '127.0.0.1', port];
}
