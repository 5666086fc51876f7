// The machine and software versions recorded with every result.
import * as os from 'node:os';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

export function versions() {
  return {
    cpu: os.cpus()[0]?.model ?? 'unknown',
    cores: os.availableParallelism(),
    memory_gib: Math.round(os.totalmem() / 2 ** 30),
    platform: `${os.platform()} ${os.release()}`,
    node: process.version,
    onnxruntime_node: (require('onnxruntime-node/package.json') as { version: string }).version,
    date: new Date().toISOString(),
  };
}

/** fleet's own version (package.json). */
export function fleetVersion(): string {
  return (require('../package.json') as { version: string }).version;
}
