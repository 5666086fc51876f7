// The container images leave test/ out (.dockerignore): every command must load from a tree without it.
// Copies the shipped tree (no test/, no .git) to a temporary folder and runs each command's --help there.
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { REPO_ROOT } from './helpers/cli.ts';

const COMMANDS = [
  ['--help'],
  ['train', '--help'],
  ['data', '--help'],
  ['bench', '--help'],
  ['coordinator', '--help'],
  ['worker', '--help'],
  ['serve', '--help'],
  ['models', '--help'],
  ['predict', '--help'],
];

describe('a tree without test/ (as in the container images)', function () {
  this.timeout(180_000);
  let dir = '';
  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-image-tree-'));
    const skip = new Set(['test', '.git', 'node_modules', 'runs', 'bench/results']);
    fs.cpSync(REPO_ROOT, dir, { recursive: true, filter: src => !skip.has(path.relative(REPO_ROOT, src)) });
    fs.symlinkSync(path.join(REPO_ROOT, 'node_modules'), path.join(dir, 'node_modules'));
  });
  after(() => {
    if (dir) fs.rmSync(dir, { recursive: true, force: true });
  });

  for (const args of COMMANDS) {
    it(`fleet ${args.join(' ')} works`, () => {
      assert.ok(!fs.existsSync(path.join(dir, 'test')));
      const r = spawnSync(process.execPath, [path.join(dir, 'bin', 'fleet.js'), ...args], {
        cwd: dir,
        encoding: 'utf8',
        timeout: 60_000,
      });
      assert.equal(r.status, 0, `exit ${r.status}: ${r.stderr}`);
      assert.match(r.stdout, /usage|fleet/i);
    });
  }
});
