// Atomic file writes: write to a temporary file in the same directory, fsync, rename.
// A crash leaves either the old file or the new one, never a partial file that looks complete.
import * as fs from 'node:fs';
import * as path from 'node:path';

/** A temporary name next to file: same directory (so rename is atomic), unique even for concurrent async writes. */
let written = 0;
const tmpPath = (file: string) => `${file}.tmp-${process.pid}-${Date.now()}-${++written}`;

export function writeFileAtomic(file: string, data: string | Uint8Array): void {
  fs.mkdirSync(path.dirname(file), { recursive: true });
  const tmp = tmpPath(file);
  const fd = fs.openSync(tmp, 'w');
  try {
    fs.writeFileSync(fd, data); // loops until every byte is written
    fs.fsyncSync(fd);
  } finally {
    fs.closeSync(fd);
  }
  fs.renameSync(tmp, file);
}

/** The same, with the write and the fsync on libuv's thread pool: several files sync at once while the caller computes. */
export async function writeFileAtomicAsync(file: string, data: string | Uint8Array): Promise<void> {
  await fs.promises.mkdir(path.dirname(file), { recursive: true });
  const tmp = tmpPath(file);
  const handle = await fs.promises.open(tmp, 'w');
  try {
    await handle.writeFile(data);
    await handle.sync();
  } finally {
    await handle.close();
  }
  await fs.promises.rename(tmp, file);
}
