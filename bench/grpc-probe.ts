// A minimal gRPC client for latency measurements: unary calls over one node:http2 session with the request
// encoded once, in the role of Triton's C++ perf_analyzer. The grpc-js client allocates ~30 KB per call and its
// scavenges (5-15 ms) land in its own measured latencies (docs/serving.md); this client measures the server.
// It speaks plain gRPC: POST /package.Service/Method, content-type application/grpc, te: trailers, each
// message a 5-byte prefix (compressed flag, big-endian length) plus the protobuf bytes; the status comes in the
// trailers (or in the headers of a trailers-only answer).
import * as http2 from 'node:http2';

export class GrpcStatusError extends Error {
  constructor(
    readonly code: number,
    message: string,
  ) {
    super(message);
  }
}

export interface GrpcProbe {
  /** One unary call with an already encoded request; resolves with the response's protobuf bytes. */
  call(path: string, request: Uint8Array): Promise<Buffer>;
  close(): void;
}

export function connectProbe(address: string): GrpcProbe {
  const session = http2.connect(`http://${address}`);
  session.on('error', () => {}); // each call reports its own failure
  const frames = new WeakMap<Uint8Array, Buffer>();
  const framed = (request: Uint8Array) => {
    let f = frames.get(request);
    if (!f) {
      f = Buffer.alloc(5 + request.length);
      f.writeUInt32BE(request.length, 1);
      f.set(request, 5);
      frames.set(request, f);
    }
    return f;
  };
  return {
    call: (path, request) =>
      new Promise((resolve, reject) => {
        const stream = session.request({
          ':method': 'POST',
          ':path': path,
          'content-type': 'application/grpc',
          te: 'trailers',
        });
        const parts: Buffer[] = [];
        let status: string | undefined,
          message = '';
        const take = (h: http2.IncomingHttpHeaders) => {
          if (h['grpc-status'] !== undefined) {
            status = String(h['grpc-status']);
            message = decodeURIComponent(String(h['grpc-message'] ?? ''));
          }
        };
        stream.on('response', headers => {
          if (headers[':status'] !== 200) {
            stream.close();
            reject(new Error(`${path}: HTTP status ${headers[':status']}`));
          }
          take(headers);
        });
        stream.on('trailers', take);
        stream.on('data', (d: Buffer) => parts.push(d));
        stream.on('error', reject);
        stream.on('end', () => {
          if (status !== '0') {
            reject(new GrpcStatusError(Number(status ?? 2), `${path}: gRPC status ${status ?? '(none)'}: ${message}`));
            return;
          }
          const body = parts.length === 1 ? parts[0] : Buffer.concat(parts);
          const length = body.length >= 5 ? body.readUInt32BE(1) : -1;
          if (body[0] !== 0 || length !== body.length - 5) {
            reject(new Error(`${path}: expected one uncompressed message, got ${body.length} bytes`));
            return;
          }
          resolve(body.subarray(5));
        });
        stream.end(framed(request));
      }),
    close: () => session.close(),
  };
}
