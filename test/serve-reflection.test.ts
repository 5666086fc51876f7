// gRPC server reflection (grpc.reflection.v1) on the inference server, asked by a client built at run time
// from the reflection proto: the services are listed and their schema is served, as grpcurl would ask.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createRequire } from 'node:module';
import * as grpc from '@grpc/grpc-js';
import * as protoLoader from '@grpc/proto-loader';
import protobuf from 'protobufjs';
import { InferenceServer } from '../serving/grpc-server.ts';
import { HEALTH_SERVICE, INFERENCE_SERVICE } from '../serving/protocol.ts';

const require = createRequire(import.meta.url);
const FileDescriptorProto = protobuf
  .loadSync(require.resolve('protobufjs/google/protobuf/descriptor.proto'))
  .lookupType('google.protobuf.FileDescriptorProto');
const REFLECTION_PROTO = path.join(
  path.dirname(require.resolve('@grpc/reflection')),
  '..',
  'proto',
  'grpc',
  'reflection',
  'v1',
  'reflection.proto',
);

interface ReflectionResponse {
  list_services_response?: { service: { name: string }[] };
  file_descriptor_response?: { file_descriptor_proto: Buffer[] };
  error_response?: { error_code: number; error_message: string };
}

describe('serve: gRPC server reflection', () => {
  let dir: string, server: InferenceServer, client: grpc.Client & Record<string, any>; // eslint-disable-line @typescript-eslint/no-explicit-any

  before(async () => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-reflection-'));
    server = new InferenceServer({ models: dir, pollMs: 60_000 });
    const port = await server.start('127.0.0.1', 0);
    const def = protoLoader.loadSync(REFLECTION_PROTO, { keepCase: true, defaults: true, oneofs: true });
    const Reflection = grpc.makeGenericClientConstructor(
      def['grpc.reflection.v1.ServerReflection'] as grpc.ServiceDefinition,
      'ServerReflection',
    );
    client = new Reflection(`127.0.0.1:${port}`, grpc.credentials.createInsecure()) as typeof client;
  });
  after(async () => {
    client?.close();
    await server?.stop();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  const ask = (request: object) =>
    new Promise<ReflectionResponse>((resolve, reject) => {
      const call = client.ServerReflectionInfo();
      call.on('data', (r: ReflectionResponse) => {
        resolve(r);
        call.end();
      });
      call.on('error', reject);
      call.write(request);
    });

  it('lists the inference and health services', async () => {
    const r = await ask({ list_services: '' });
    const names = r.list_services_response!.service.map(s => s.name);
    assert.ok(names.includes(INFERENCE_SERVICE) && names.includes(HEALTH_SERVICE), names.join(', '));
  });

  it('serves the file that defines ModelInfer, with its request and response messages', async () => {
    const r = await ask({ file_containing_symbol: INFERENCE_SERVICE });
    const files = r.file_descriptor_response!.file_descriptor_proto.map(
      b =>
        FileDescriptorProto.decode(b) as unknown as {
          package: string;
          service: { name: string; method: { name: string; inputType: string; outputType: string }[] }[];
        },
    );
    const svc = files
      .flatMap(f => f.service.map(s => ({ pkg: f.package, ...s })))
      .find(s => `${s.pkg}.${s.name}` === INFERENCE_SERVICE);
    assert.ok(svc, 'the inference service is in the returned files');
    const infer = svc.method.find(m => m.name === 'ModelInfer')!;
    assert.equal(infer.inputType, '.inference.ModelInferRequest');
    assert.equal(infer.outputType, '.inference.ModelInferResponse');
  });

  it('answers NOT_FOUND for an unknown symbol', async () => {
    const r = await ask({ file_containing_symbol: 'no.such.Service' });
    assert.equal(r.error_response?.error_code, grpc.status.NOT_FOUND);
  });
});
