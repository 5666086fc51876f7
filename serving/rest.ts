// The HTTP/REST binding of the KServe v2 / Open Inference Protocol over the same server as gRPC (the same
// repository, batchers, metrics and limits), with Triton's binary tensor data extension: tensors after the JSON
// header in the body, whose length the Inference-Header-Content-Length header gives. Errors are {"error": "..."}
// with the HTTP status that matches the gRPC one. Plain node:http: a dozen fixed routes need no framework.
//
//   GET  /v2                                          server metadata
//   GET  /v2/health/live, /v2/health/ready            200 (true) or 400 (false), empty body
//   GET  /v2/models/NAME[/versions/V]                 model metadata
//   GET  /v2/models/NAME[/versions/V]/ready           200 or 400
//   POST /v2/models/NAME[/versions/V]/infer           inference (JSON, or JSON + binary tensors)
// and Triton's extensions:
//   GET  /v2/models/NAME[/versions/V]/config          the model configuration (as Triton's ModelConfig)
//   GET  /v2/models[/NAME[/versions/V]]/stats         cumulative statistics ({"model_stats": [...]})
//   POST /v2/repository/index                         the repository's models and their states
//                                                     (body {"ready": true}: ready ones only)
//   POST /v2/repository/models/NAME/load|unload       load or unload a model (--model-control explicit)
import * as http from 'node:http';
import type { Metrics } from '../telemetry/metrics.ts';
import { metricsResponse } from '../telemetry/metrics-http.ts';
import { ServeError, Status, forClient, invalid, quote } from './errors.ts';
import { readOutput } from './outputs.ts';
import type { InferenceServer } from './grpc-server.ts';
import {
  boolParam,
  intParam,
  paramValue,
  stringParam,
  type InferParameter,
  type ModelInferRequest,
  type ModelInferResponse,
  type Parameters,
} from './protocol.ts';

export const HEADER_LENGTH = 'inference-header-content-length';

/** The HTTP status of a gRPC status (as Triton and KServe map them). */
export function httpStatus(code: Status): number {
  switch (code) {
    case Status.OK:
      return 200;
    case Status.INVALID_ARGUMENT:
    case Status.FAILED_PRECONDITION:
    case Status.OUT_OF_RANGE:
      return 400;
    case Status.NOT_FOUND:
      return 404;
    case Status.RESOURCE_EXHAUSTED:
      return 429;
    case Status.UNIMPLEMENTED:
      return 501;
    case Status.UNAVAILABLE:
      return 503;
    case Status.DEADLINE_EXCEEDED:
      return 504;
    default:
      return 500;
  }
}

class HttpError extends Error {
  constructor(
    readonly status: number,
    message: string,
  ) {
    super(message);
  }
}

type Route = {
  method: string;
  handle: (m: RegExpExecArray, body: () => Promise<Buffer>, req: http.IncomingMessage) => Promise<Reply>;
};
interface Reply {
  status: number;
  json?: unknown;
  binary?: Uint8Array[];
  empty?: boolean;
}

const MODEL = '/v2/models/([^/]+)(?:/versions/([^/]+))?';

/**
 * The REST handler over an InferenceServer; resolves true when it answered (a /v2 path), false otherwise (so
 * that /metrics and other routes can share the port). fleet serve --http mounts it; so can any node:http server.
 */
export function restHandler(
  server: InferenceServer,
): (req: http.IncomingMessage, res: http.ServerResponse) => Promise<boolean> {
  const maxBody = server.maxMessageBytes;
  const routes: [RegExp, Route[]][] = [
    [/^\/v2\/?$/, [{ method: 'GET', handle: async () => ({ status: 200, json: server.serverMetadata() }) }]],
    [/^\/v2\/health\/live$/, [{ method: 'GET', handle: async () => ({ status: 200, empty: true }) }]],
    [
      /^\/v2\/health\/ready$/,
      [{ method: 'GET', handle: async () => ({ status: server.serving() ? 200 : 400, empty: true }) }],
    ],
    [
      /^\/v2\/models\/stats$/,
      [{ method: 'GET', handle: async () => ({ status: 200, json: server.modelStatistics() }) }],
    ],
    [
      new RegExp(`^${MODEL}/config$`),
      [{ method: 'GET', handle: async m => ({ status: 200, json: server.modelConfig(m[1], m[2] ?? '').config }) }],
    ],
    [
      new RegExp(`^${MODEL}/stats$`),
      [{ method: 'GET', handle: async m => ({ status: 200, json: server.modelStatistics(m[1], m[2] ?? '') }) }],
    ],
    [
      /^\/v2\/repository\/index$/,
      [
        {
          method: 'POST',
          handle: async (_m, body) => ({ status: 200, json: server.repositoryIndex(readyFlag(await body())).models }),
        },
      ],
    ],
    [
      /^\/v2\/repository\/models\/([^/]+)\/(load|unload)$/,
      [
        {
          method: 'POST',
          handle: async m => {
            await (m[2] === 'load' ? server.repo.loadModel(m[1]) : server.repo.unloadModel(m[1]));
            return { status: 200, empty: true };
          },
        },
      ],
    ],
    [
      new RegExp(`^${MODEL}$`),
      [{ method: 'GET', handle: async m => ({ status: 200, json: server.modelMetadata(m[1], m[2] ?? '') }) }],
    ],
    [
      new RegExp(`^${MODEL}/ready$`),
      [
        {
          method: 'GET',
          handle: async m => ({ status: server.modelReady(m[1], m[2] ?? '') ? 200 : 400, empty: true }),
        },
      ],
    ],
    [
      new RegExp(`^${MODEL}/infer$`),
      [
        {
          method: 'POST',
          handle: async (m, body, req) => infer(server, m[1], m[2] ?? '', await body(), req.headers[HEADER_LENGTH]),
        },
      ],
    ],
  ];

  return async (req, res) => {
    let pathname: string;
    try {
      pathname = new URL(req.url ?? '/', 'http://localhost').pathname;
    } catch {
      return false;
    }
    if (pathname !== '/v2' && !pathname.startsWith('/v2/')) return false;
    let reply: Reply;
    try {
      const hit = routes.map(([re, rs]) => [re.exec(pathname), rs] as const).find(([m]) => m);
      if (!hit) throw new HttpError(404, `no such path: ${quote(pathname)}`);
      const [m, rs] = hit as readonly [RegExpExecArray, Route[]];
      const route = rs.find(r => r.method === req.method);
      if (!route) {
        res.setHeader('allow', rs.map(r => r.method).join(', '));
        throw new HttpError(405, `${quote(req.method)} is not allowed here; use ${rs.map(r => r.method).join(' or ')}`);
      }
      const decoded = [...m].map(s => (s === undefined ? s : decodeSegment(s))) as unknown as RegExpExecArray;
      reply = await route.handle(decoded, () => readBody(req, maxBody), req);
    } catch (e) {
      const status = e instanceof HttpError ? e.status : e instanceof ServeError ? httpStatus(e.code) : 500;
      const message =
        e instanceof HttpError || e instanceof ServeError
          ? // a REST client sent "data", not gRPC's typed contents
            e.message.replace(/\b(?:fp32|uint|int)_contents\b/g, 'data')
          : `internal error: ${(e as Error)?.message ?? String(e)}`;
      reply = { status, json: { error: forClient(message) } };
    }
    req.resume(); // a body not read (an error, a refused size) is discarded, not kept
    send(res, reply);
    return true;
  };
}

/** The "ready" flag of a repository index request body (an empty body: false). */
function readyFlag(body: Buffer): boolean {
  if (body.length === 0) return false;
  let r: unknown;
  try {
    r = JSON.parse(body.toString('utf8'));
  } catch (e) {
    throw invalid(`the request is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(r) || (r.ready !== undefined && typeof r.ready !== 'boolean'))
    throw invalid('the request must be {"ready": true|false}');
  return r.ready === true;
}

function decodeSegment(s: string): string {
  try {
    return decodeURIComponent(s);
  } catch {
    throw new HttpError(400, `bad percent-encoding in the path: ${quote(s)}`);
  }
}

function send(res: http.ServerResponse, r: Reply): void {
  if (r.empty) {
    res.writeHead(r.status, { 'content-length': 0 });
    res.end();
    return;
  }
  const header = Buffer.from(JSON.stringify(r.json));
  if (!r.binary?.length) {
    res.writeHead(r.status, { 'content-type': 'application/json', 'content-length': header.length });
    res.end(header);
    return;
  }
  const total = r.binary.reduce((s, b) => s + b.length, header.length);
  res.writeHead(r.status, {
    'content-type': 'application/octet-stream',
    'content-length': total,
    [HEADER_LENGTH]: header.length,
  });
  res.write(header);
  for (const b of r.binary) res.write(b);
  res.end();
}

/** The request body, at most maxBytes (413 beyond, without reading the rest). */
function readBody(req: http.IncomingMessage, maxBytes: number): Promise<Buffer> {
  const declared = Number(req.headers['content-length']);
  if (declared > maxBytes)
    return Promise.reject(new HttpError(413, `the body is ${declared} bytes; at most ${maxBytes} are read`));
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let size = 0;
    req.on('data', (c: Buffer) => {
      size += c.length;
      if (size > maxBytes) {
        req.removeAllListeners('data');
        chunks.length = 0;
        reject(new HttpError(413, `the body is over ${maxBytes} bytes`));
        return;
      }
      chunks.push(c);
    });
    req.on('end', () => resolve(Buffer.concat(chunks)));
    req.on('error', reject);
  });
}

// ---- infer: JSON (+ binary) <-> ModelInferRequest / ModelInferResponse

const isObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function jsonParams(v: unknown, where: string): Parameters {
  if (v === undefined) return {};
  if (!isObject(v)) throw invalid(`${where}: parameters must be an object`);
  const out: Parameters = {};
  for (const [k, x] of Object.entries(v)) {
    if (typeof x === 'string') out[k] = stringParam(x);
    else if (typeof x === 'boolean') out[k] = boolParam(x);
    else if (typeof x === 'number' && Number.isInteger(x)) out[k] = intParam(x);
    else if (typeof x === 'number') out[k] = { parameter_choice: 'double_param', double_param: x };
    else throw invalid(`${where}: parameter ${quote(k)} must be a string, number or boolean`);
  }
  return out;
}

const paramsJson = (p: Parameters = {}) =>
  Object.fromEntries(Object.entries(p).map(([k, v]) => [k, paramValue(v as InferParameter)]));

/** A tensor's "data": flat or nested arrays of numbers, row-major (depth bounded, every element a number). */
function flatten(data: unknown, name: string): number[] {
  const out: number[] = [];
  const walk = (v: unknown, depth: number) => {
    if (typeof v === 'number') {
      out.push(v);
      return;
    }
    if (!Array.isArray(v) || depth > 8)
      throw invalid(`input ${quote(name)}: data must be an array of numbers (flat or nested)`);
    for (const x of v) walk(x, depth + 1);
  };
  walk(data, 0);
  return out;
}

async function infer(
  server: InferenceServer,
  model: string,
  version: string,
  body: Buffer,
  headerLength: string | string[] | undefined,
): Promise<Reply> {
  let jsonBytes: Buffer = body,
    binary: Buffer = Buffer.alloc(0);
  if (headerLength !== undefined) {
    const n = Number(headerLength);
    if (!Number.isInteger(n) || n < 0 || n > body.length) {
      throw invalid(
        `Inference-Header-Content-Length ${quote(headerLength)}: must be a whole number ` +
          `up to the body length ${body.length}`,
      );
    }
    jsonBytes = body.subarray(0, n);
    binary = body.subarray(n);
  }
  let r: unknown;
  try {
    r = JSON.parse(jsonBytes.toString('utf8'));
  } catch (e) {
    throw invalid(`the request is not JSON: ${(e as Error).message}`);
  }
  if (!isObject(r)) throw invalid('the request must be a JSON object');
  if (!Array.isArray(r.inputs)) throw invalid('the request has no "inputs" array');
  if (r.outputs !== undefined && !Array.isArray(r.outputs)) throw invalid('"outputs" must be an array');
  if (r.id !== undefined && typeof r.id !== 'string') throw invalid('"id" must be a string');

  const req: ModelInferRequest = {
    model_name: model,
    model_version: version,
    id: (r.id as string | undefined) ?? '',
    parameters: jsonParams(r.parameters, 'the request'),
    inputs: [],
  };
  const raws: Uint8Array[] = [];
  let at = 0;
  for (const [i, t] of (r.inputs as unknown[]).entries()) {
    if (!isObject(t) || typeof t.name !== 'string' || typeof t.datatype !== 'string' || !Array.isArray(t.shape)) {
      throw invalid(`inputs[${i}]: needs "name", "datatype" and "shape"`);
    }
    const shape = t.shape.map(Number);
    const parameters = jsonParams(t.parameters, `input ${quote(t.name)}`);
    const size = paramValue(parameters.binary_data_size);
    delete parameters.binary_data_size;
    if (size !== undefined) {
      if (typeof size !== 'number' || !Number.isInteger(size) || size < 0 || at + size > binary.length) {
        throw invalid(
          `input ${quote(t.name)}: binary_data_size ${typeof size === 'number' ? size : quote(size)} ` +
            `does not fit the ${binary.length - at} binary bytes left`,
        );
      }
      raws.push(binary.subarray(at, at + size));
      at += size;
      req.inputs.push({ name: t.name, datatype: t.datatype, shape, parameters });
    } else {
      if (t.data === undefined) throw invalid(`input ${quote(t.name)}: no "data" and no binary_data_size`);
      const values = flatten(t.data, t.name);
      const contents =
        t.datatype === 'FP32'
          ? { fp32_contents: values }
          : t.datatype === 'UINT8'
            ? { uint_contents: values }
            : { int_contents: values };
      req.inputs.push({ name: t.name, datatype: t.datatype, shape, parameters, contents });
    }
  }
  if (at !== binary.length)
    throw invalid(`the body has ${binary.length - at} binary bytes that no input's binary_data_size accounts for`);
  if (raws.length && raws.length !== req.inputs.length) throw invalid('either every input is binary or none is');
  if (raws.length) req.raw_input_contents = raws;

  const allBinary = paramValue(req.parameters?.binary_data_output) === true;
  const binaryOut = new Map<string, boolean>();
  req.outputs = ((r.outputs ?? []) as unknown[]).map((o, i) => {
    if (!isObject(o) || typeof o.name !== 'string') throw invalid(`outputs[${i}]: needs a "name"`);
    const p = jsonParams(o.parameters, `output ${quote(o.name)}`);
    const b = paramValue(p.binary_data);
    binaryOut.set(o.name, b === undefined ? allBinary : b === true);
    return { name: o.name };
  });

  const res = await server.inference.infer(req);
  return inferReply(res, name => binaryOut.get(name) ?? allBinary);
}

function inferReply(res: ModelInferResponse, asBinary: (name: string) => boolean): Reply {
  const binary: Uint8Array[] = [];
  const outputs = res.outputs.map(o => {
    const { shape, data } = readOutput(res, o.name);
    const base = { name: o.name, datatype: o.datatype, shape };
    if (!asBinary(o.name)) return { ...base, parameters: {}, data: Array.from(data as ArrayLike<number>) };
    const bytes =
      o.datatype === 'INT64'
        ? new Uint8Array(BigInt64Array.from(data as number[], v => BigInt(v)).buffer)
        : new Uint8Array(
            (data as Float32Array).buffer,
            (data as Float32Array).byteOffset,
            (data as Float32Array).byteLength,
          );
    binary.push(bytes);
    return { ...base, parameters: { binary_data_size: bytes.length } };
  });
  return {
    status: 200,
    binary,
    json: {
      model_name: res.model_name,
      model_version: res.model_version,
      id: res.id,
      parameters: paramsJson(res.parameters),
      outputs,
    },
  };
}

/**
 * An HTTP server on host:port with the REST binding and, given metrics, /metrics; other paths answer 404.
 * Resolves once listening; fails naming the address when it cannot listen (in use, no permission).
 */
export function listenHttp(
  server: InferenceServer,
  host: string,
  port: number,
  metrics?: Metrics,
): Promise<http.Server> {
  const rest = restHandler(server);
  const httpServer = http.createServer((req, res) => {
    void (async () => {
      if (await rest(req, res)) return;
      if (metrics && (await metricsResponse(metrics, req, res))) return;
      send(res, { status: 404, json: { error: 'not found: this server has /v2/... (KServe v2 REST) and /metrics' } });
    })().catch(e => {
      if (!res.headersSent)
        send(res, { status: 500, json: { error: forClient(`internal error: ${(e as Error).message}`) } });
      else res.destroy();
    });
  });
  httpServer.requestTimeout = 60_000; // a client that trickles its body cannot hold a socket for ever
  httpServer.headersTimeout = 10_000;
  return new Promise((resolve, reject) => {
    httpServer.once('error', (e: NodeJS.ErrnoException) =>
      reject(new Error(`HTTP: cannot listen on ${host}:${port}: ${e.code ?? e.message}`)),
    );
    httpServer.listen(port, host, () => resolve(httpServer));
  });
}
