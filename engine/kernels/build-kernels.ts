// Compiles kernels.wat into kernels.wasm (`npm run build:wasm`). The .wasm is committed, so running fleet
// needs no compiler; wabt (the WebAssembly Binary Toolkit, compiled to JavaScript) is a dev dependency.
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';
import wabt from 'wabt';

export const KERNELS_WAT = fileURLToPath(new URL('./kernels.wat', import.meta.url));
export const KERNELS_WASM = fileURLToPath(new URL('./kernels.wasm', import.meta.url));

/** The binary that kernels.wat compiles to. */
export async function compileKernels(): Promise<Uint8Array> {
  const w = await wabt();
  const module = w.parseWat(KERNELS_WAT, fs.readFileSync(KERNELS_WAT, 'utf8'), { simd: true });
  try {
    module.validate();
    return new Uint8Array(module.toBinary({}).buffer);
  } finally {
    module.destroy();
  }
}

if (process.argv[1] && fileURLToPath(import.meta.url) === fs.realpathSync(process.argv[1])) {
  const bytes = await compileKernels();
  fs.writeFileSync(KERNELS_WASM, bytes);
  console.log(`wrote ${KERNELS_WASM} (${bytes.length} bytes)`);
}
