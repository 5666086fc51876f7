// Compiles adam-kernel.wat into adam-kernel.wasm (`npm run build:wasm`). The .wasm is committed, so running
// fleet needs no compiler; wabt (the WebAssembly Binary Toolkit, compiled to JavaScript) is a dev dependency.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import wabt from 'wabt';

export const KERNEL_WAT = fileURLToPath(new URL('./adam-kernel.wat', import.meta.url));
export const KERNEL_WASM = fileURLToPath(new URL('./adam-kernel.wasm', import.meta.url));

/** The binary that adam-kernel.wat compiles to. */
export async function compileKernel(): Promise<Uint8Array> {
  const w = await wabt();
  const module = w.parseWat(KERNEL_WAT, fs.readFileSync(KERNEL_WAT, 'utf8'), { simd: true });
  try {
    module.validate();
    return new Uint8Array(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  const bytes = await compileKernel();
  fs.writeFileSync(KERNEL_WASM, bytes);
  console.log(`wrote ${KERNEL_WASM} (${bytes.length} bytes)`);
}
