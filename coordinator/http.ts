// The coordinator's HTTP port (bound to 127.0.0.1 unless told otherwise): the cluster view and the jobs as
// JSON, Prometheus /metrics, the built-in dashboard at / (plain files from dashboard/web and uPlot from
// node_modules, no CDN), a server-sent event stream of progress and cluster changes, and the runs it knows.
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as path from 'node:path';
import { createHash, timingSafeEqual } from 'node:crypto';
import { createRequire } from 'node:module';
import { fileURLToPath } from 'node:url';
import type { Coordinator } from './coordinator.ts';
import { isDataParallelSpec } from './data-parallel-job.ts';
import { metricsResponse } from '../telemetry/metrics-http.ts';
import { listen } from '../telemetry/listen.ts';
import { redactUrls } from '../util/redact.ts';
import { runsIn, runSummary, runDetails, runErrors, milBag, RunError, type RunRef } from '../dashboard/runs.ts';

export interface HttpOptions {
  /** A directory of `fleet train --out` runs (e.g. ./runs) the dashboard may show, besides the jobs' outputs. */
  runsDir?: string;
  /** The bearer token that allows job mutations (POST /api/jobs, DELETE /api/jobs/<id>); without one they are off. */
  apiToken?: string;
  /** Who leads (the leader lease: coordinator/leader.ts), shown as `leader` in /api/cluster. */
  leader?: () => object;
  /** The KServe v2 REST binding for /v2/... when the coordinator serves models (wired by the CLI: the coordinator
   *  does not import serving/); resolves false for a path it does not know. */
  inference?: (req: http.IncomingMessage, res: http.ServerResponse) => Promise<boolean>;
}

/** A submitted job spec over HTTP: at most this many bytes. */
const MAX_SUBMIT_BYTES = 64 * 1024;

const WEB = path.join(path.dirname(fileURLToPath(import.meta.url)), '../dashboard/web');
const UPLOT = path.dirname(createRequire(import.meta.url).resolve('uplot/package.json'));
/** Every file the dashboard serves: a fixed table, so no request path ever reaches the file system. */
const ASSETS: Record<string, [file: string, type: string]> = {
  '/': [path.join(WEB, 'index.html'), 'text/html; charset=utf-8'],
  '/dashboard.js': [path.join(WEB, 'dashboard.js'), 'text/javascript; charset=utf-8'],
  '/charts.js': [path.join(WEB, 'charts.js'), 'text/javascript; charset=utf-8'],
  '/style.css': [path.join(WEB, 'style.css'), 'text/css; charset=utf-8'],
  '/vendor/uPlot.iife.min.js': [path.join(UPLOT, 'dist/uPlot.iife.min.js'), 'text/javascript; charset=utf-8'],
  '/vendor/uPlot.min.css': [path.join(UPLOT, 'dist/uPlot.min.css'), 'text/css; charset=utf-8'],
};
const API_PATHS = [
  '/api/cluster',
  '/api/jobs',
  '/api/jobs/<id>',
  '/api/events',
  '/api/runs',
  '/api/runs/<id>',
  '/api/runs/<id>/errors',
  '/api/runs/<id>/bags/<n>',
  '/metrics',
  '/',
];
/** Server-sent event streams at once, and the unsent bytes a slow one may hold before it is closed (it reconnects). */
const MAX_STREAMS = 64;
const MAX_STREAM_BACKLOG = 4 * 1024 * 1024;

/** Serves the HTTP port; resolves once listening, rejects with a ListenError (address, `--http`, cause) otherwise. */
export function serveHttp(c: Coordinator, host: string, port: number, opts: HttpOptions = {}): Promise<http.Server> {
  let streams = 0;
  const runs = (): RunRef[] => [
    ...[...c.jobs.values()]
      .filter(j => j.state === 'done')
      .map(j => ({ id: j.id, dir: c.outDir(j.id), source: 'job' as const })),
    ...runsIn(opts.runsDir),
  ];
  const server = http.createServer((req, res) => {
    const send = (status: number, body: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      // no secret in an answer, e.g. a run's metrics.json written before fleet redacted URLs
      res.end(redactUrls(JSON.stringify(body, null, 2)));
    };
    const url = new URL(req.url ?? '/', 'http://localhost');
    const p = url.pathname;
    if (p === '/v2' || p.startsWith('/v2/')) {
      const rest = opts.inference;
      if (!rest) return send(404, { error: 'this coordinator serves no models (start it with --grpc HOST:PORT)' });
      void rest(req, res).then(
        handled => {
          if (!handled) send(404, { error: 'not found' });
        },
        () => {
          if (!res.headersSent) send(500, { error: 'internal error' });
        },
      );
      return;
    }
    if (req.method !== 'GET') {
      if (/^\/api\/jobs(\/[^/]+)?$/.test(p) && (req.method === 'POST' || req.method === 'DELETE'))
        return mutateJobs(c, req, p, opts.apiToken, send);
      return send(405, { error: `method ${req.method} not allowed` });
    }
    const asset = ASSETS[p === '/index.html' ? '/' : p];
    try {
      if (asset) return serveAsset(asset, res, send);
      if (p === '/api/cluster') {
        return send(200, opts.leader ? { ...c.clusterView(), leader: opts.leader() } : c.clusterView());
      }
      if (p === '/api/jobs') return send(200, c.jobsView());
      const job = /^\/api\/jobs\/([^/]+)$/.exec(p);
      if (job) {
        const status = c.jobStatus(decodeURIComponent(job[1]));
        return status ? send(200, status) : send(404, { error: `no such job: ${decodeURIComponent(job[1])}` });
      }
      if (p === '/metrics') {
        c.monitor?.refresh();
        return void metricsResponse(c.metrics, req, res).catch(e =>
          send(500, { error: `metrics failed: ${(e as Error).message}` }),
        );
      }
      if (p === '/api/events') {
        if (!c.monitor) return send(503, { error: 'the coordinator has not started' });
        if (streams >= MAX_STREAMS) return send(503, { error: `too many event streams (${MAX_STREAMS})` });
        streams++;
        return eventStream(c, req, res, () => streams--);
      }
      if (p === '/api/runs')
        return send(
          200,
          runs()
            .map(runSummary)
            .sort((a, b) => (b.mtime ?? 0) - (a.mtime ?? 0)),
        );
      const m = /^\/api\/runs\/([^/]+)(?:\/(errors|bags\/(\d+)))?$/.exec(p);
      if (m) return runRoute(c, m, runs(), send);
      return send(404, { error: `no such path: ${p}`, paths: API_PATHS });
    } catch (e) {
      if (e instanceof RunError) return send(e.status, { error: e.message });
      if (e instanceof URIError) return send(400, { error: `bad path: ${p}` });
      return send(500, { error: (e as Error).message });
    }
  });
  return listen(server, host, port, '--http');
}

/** A dashboard file (asset: its path and content type). */
function serveAsset(
  asset: readonly [string, string],
  res: http.ServerResponse,
  send: (status: number, body: unknown) => void,
) {
  fs.readFile(asset[0], (err, data) => {
    if (err) return send(500, { error: `dashboard file ${asset[0]} is missing` });
    res.writeHead(200, { 'content-type': asset[1], 'cache-control': 'no-cache' });
    res.end(data);
  });
}

/** /api/runs/<id>, /api/runs/<id>/errors and /api/runs/<id>/bags/<n> (m: the path's match). */
function runRoute(c: Coordinator, m: RegExpExecArray, runs: RunRef[], send: (status: number, body: unknown) => void) {
  const id = decodeURIComponent(m[1]);
  const ref = runs.find(r => r.id === id);
  if (!ref) return send(404, { error: `no such run: ${id}` });
  if (!m[2]) return send(200, { ...runDetails(ref), curves: c.monitor?.jobCurves(id) ?? {} });
  if (m[2] === 'errors') return send(200, runErrors(ref));
  return send(200, milBag(ref, Number(m[3])));
}

/**
 * POST /api/jobs (submit a job spec) and DELETE /api/jobs/<id> (cancel): only with the bearer token the coordinator
 * was given (--api-token-file); off without one. The token is compared in constant time and never logged.
 */
function mutateJobs(
  c: Coordinator,
  req: http.IncomingMessage,
  p: string,
  token: string | undefined,
  send: (status: number, body: unknown) => void,
) {
  if (!token) {
    req.resume();
    return send(405, {
      error: `${req.method} ${p}: job changes over HTTP are off (start the coordinator with --api-token-file FILE)`,
    });
  }
  const m = /^Bearer (\S+)$/.exec(req.headers.authorization ?? '');
  if (!m) {
    req.resume();
    return send(401, { error: 'an Authorization: Bearer <token> header is required' });
  }
  if (!sameToken(m[1], token)) {
    req.resume();
    return send(403, { error: 'wrong token' });
  }
  if (req.method === 'DELETE') {
    req.resume();
    const id = /^\/api\/jobs\/([^/]+)$/.exec(p)?.[1];
    if (!id) return send(405, { error: 'DELETE needs a job: /api/jobs/<id>' });
    let jobId: string;
    try {
      jobId = decodeURIComponent(id);
    } catch {
      return send(400, { error: `bad path: ${p}` });
    }
    const r = c.cancel(jobId, 'the HTTP API');
    if (r.ok) return send(200, { ok: true, job: jobId, state: r.state });
    return send(/^no such job/.test(r.error) ? 404 : 409, { ok: false, error: r.error });
  }
  if (p !== '/api/jobs') {
    req.resume();
    return send(405, { error: 'POST a job spec to /api/jobs' });
  }
  const chunks: Buffer[] = [];
  let size = 0;
  req.on('data', (b: Buffer) => {
    size += b.length;
    if (size <= MAX_SUBMIT_BYTES) chunks.push(b);
  });
  req.on('end', () => {
    if (size > MAX_SUBMIT_BYTES) return send(413, { error: `a job spec is at most ${MAX_SUBMIT_BYTES} bytes` });
    try {
      const spec = JSON.parse(Buffer.concat(chunks).toString('utf8'));
      const jobId = isDataParallelSpec(spec) ? c.dataParallel.submit(spec).id : c.submit(spec).id;
      void c.persisted().then(() => send(201, { ok: true, jobId }));
    } catch (e) {
      send(400, { ok: false, error: (e as Error).message });
    }
  });
}

/** Constant-time comparison (of digests, so that the lengths match too). */
function sameToken(given: string, token: string): boolean {
  const h = (s: string) => createHash('sha256').update(s).digest();
  return timingSafeEqual(h(given), h(token));
}

/** Reads the API token file: one line, at least 16 characters; throws naming the file. */
export function readApiToken(file: string): string {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(
      `--api-token-file ${file}: cannot read it (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`,
    );
  }
  const token = text.trim();
  if (token.length < 16 || /\s/.test(token))
    throw new Error(`--api-token-file ${file}: the token must be one word of at least 16 characters`);
  return token;
}

/** text/event-stream: a `hello` with the cluster and every curve so far, then `progress`, `cluster` and `job` events. */
function eventStream(c: Coordinator, req: http.IncomingMessage, res: http.ServerResponse, closed: () => void) {
  res.writeHead(200, { 'content-type': 'text/event-stream', 'cache-control': 'no-cache', connection: 'keep-alive' });
  const write = (type: string, data: unknown) => {
    if (res.writableLength > MAX_STREAM_BACKLOG) {
      res.end();
      return;
    }
    res.write(`event: ${type}\ndata: ${redactUrls(JSON.stringify(data))}\n\n`);
  };
  res.write('retry: 2000\n\n');
  write('hello', { cluster: c.monitor!.snapshot(), curves: c.monitor!.allCurves() });
  const off = c.monitor!.listen(e => write(e.type, e));
  let done = false;
  const close = () => {
    if (done) return;
    done = true;
    off();
    closed();
  };
  req.on('close', close);
  res.on('close', close);
}

/** "HOST:PORT" or "PORT" -> [host, port] (host defaults to 127.0.0.1). */
export function parseHostPort(s: string, what: string): [string, number] {
  const m = /^(?:(.+):)?(\d{1,5})$/.exec(s);
  const port = m ? Number(m[2]) : NaN;
  if (!m || port > 65535) throw new Error(`${what}: expected HOST:PORT or PORT, got "${s}"`);
  return [m[1] ?? '127.0.0.1', port];
}
