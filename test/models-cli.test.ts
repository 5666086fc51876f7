// `fleet models add|list|remove` as processes over a temporary repository: version limits checked at add,
// --members all or nothing, list showing what the server serves and skips, remove of a version and a model;
// and the repository's warning for a symlinked model folder.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { runFleet, lines } from './helpers/cli.ts';
import { cnnModel } from './helpers/serve.ts';
import { ModelRepository } from '../serving/repository.ts';

describe('models: fleet models add, list, remove', function () {
  let dir: string, repo: string, run: string;
  const listed = async () =>
    (await runFleet(['models', 'list', '--models', repo, '--json'])).stdout
      .trim()
      .split('\n')
      .filter(Boolean)
      .map(l => JSON.parse(l));

  before(() => {
    dir = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-models-'));
    repo = path.join(dir, 'models');
    fs.mkdirSync(repo);
    // an ensemble run directory: the one-graph model and two members
    run = path.join(dir, 'ens');
    const model = cnnModel(1);
    fs.mkdirSync(run);
    fs.writeFileSync(path.join(run, 'model.onnx'), model);
    for (const m of ['m0', 'm1']) {
      fs.mkdirSync(path.join(run, 'members', m), { recursive: true });
      fs.writeFileSync(path.join(run, 'members', m, 'model.onnx'), model);
    }
  });
  after(() => fs.rmSync(dir, { recursive: true, force: true }));

  it('add refuses versions that would never be served (usage error, nothing written)', async () => {
    for (const v of ['99999999999', '1000000000', '0', '-3', '1.5', 'two']) {
      const r = await runFleet(['models', 'add', run, '--models', repo, `--version=${v}`]);
      assert.equal(r.code, 2, `--version ${v}: ${r.stderr}`);
      assert.match(r.stderr, /versions are whole numbers from 1 to 999999999/);
      assert.equal(lines(r.stderr).length, 1);
    }
    assert.deepEqual(fs.readdirSync(repo), []);
    const ok = await runFleet(['models', 'add', run, '--models', repo, '--version', '999999999']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok(fs.existsSync(path.join(repo, 'ens', '999999999', 'model.onnx')));
    // the next automatic version would be out of range: refused, not written
    const next = await runFleet(['models', 'add', run, '--models', repo]);
    assert.equal(next.code, 1);
    assert.match(next.stderr, /next version would be 1000000000/);
    fs.rmSync(path.join(repo, 'ens'), { recursive: true });
  });

  it('add --members is all or nothing: a member that cannot be copied leaves the repository as it was', async () => {
    const bad = path.join(dir, 'ens-bad');
    fs.cpSync(run, bad, { recursive: true });
    fs.rmSync(path.join(bad, 'members', 'm1', 'model.onnx'));
    fs.mkdirSync(path.join(bad, 'members', 'm1', 'model.onnx')); // there, but not a file: the copy fails
    const r = await runFleet(['models', 'add', bad, '--models', repo, '--name', 'ens', '--members']);
    assert.equal(r.code, 1, r.stdout);
    assert.match(r.stderr, /EISDIR/);
    assert.equal(r.stdout, '');
    for (const m of ['ens', 'ens-m0', 'ens-m1']) {
      const left = fs.existsSync(path.join(repo, m)) ? fs.readdirSync(path.join(repo, m)) : [];
      assert.deepEqual(left, [], `${m}: ${left.join(', ')} left behind`);
    }
    for (const m of fs.readdirSync(repo)) fs.rmSync(path.join(repo, m), { recursive: true });
    const ok = await runFleet(['models', 'add', run, '--models', repo, '--members']);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(
      lines(ok.stdout).map(l => l.split(' (')[0]),
      ['added ens version 1', 'added ens-m0 version 1', 'added ens-m1 version 1'],
    );
    assert.deepEqual(fs.readdirSync(repo).sort(), ['ens', 'ens-m0', 'ens-m1']);
    assert.deepEqual(fs.readdirSync(path.join(repo, 'ens')), ['1'], 'no temporary folders left');
  });

  it('list shows versions, run directories and skipped folders; remove takes a version, then a model', async () => {
    assert.equal((await runFleet(['models', 'add', run, '--models', repo, '--name', 'ens'])).code, 0); // version 2
    fs.mkdirSync(path.join(repo, 'a-run'));
    fs.writeFileSync(path.join(repo, 'a-run', 'model.onnx'), 'x');
    fs.symlinkSync(path.join(repo, 'ens'), path.join(repo, 'linked'));
    const rows = Object.fromEntries((await listed()).map(r => [r.name, r]));
    assert.deepEqual(rows.ens.versions, ['1', '2']);
    assert.equal(rows['a-run'].kind, 'run directory');
    assert.match(rows.linked.skipped, /symbolic link/);

    const r1 = await runFleet(['models', 'remove', 'ens', '--models', repo, '--version', '1']);
    assert.equal(r1.code, 0, r1.stderr);
    assert.deepEqual(Object.fromEntries((await listed()).map(r => [r.name, r])).ens.versions, ['2']);
    assert.equal((await runFleet(['models', 'remove', 'ens-m0', '--models', repo])).code, 0);
    assert.ok(!(await listed()).some(r => r.name === 'ens-m0'));
    assert.ok(
      fs.readdirSync(repo).every(f => !f.startsWith('.')),
      'nothing hidden left behind',
    );
    const missing = await runFleet(['models', 'remove', 'nope', '--models', repo]);
    assert.equal(missing.code, 1);
    assert.match(missing.stderr, /nope: no such model/);
    const traversal = await runFleet(['models', 'remove', '../models', '--models', repo]);
    assert.equal(traversal.code, 2);
    assert.match(traversal.stderr, /not a model name/);
    assert.ok(fs.existsSync(repo));
    const wrong = await runFleet(['models', 'list', '--models', repo, '--members']);
    assert.equal(wrong.code, 2);
  });

  it('the server warns once about a symlinked model folder and does not serve it', async () => {
    const log: string[] = [];
    const r = new ModelRepository(repo, { pollMs: 50, settleMs: 10, runtime: { threads: 1 }, log: l => log.push(l) });
    try {
      await r.start();
      await r.scan();
      assert.equal(log.filter(l => /skipping "linked": it is a symbolic link/.test(l)).length, 1, log.join('\n'));
      assert.ok(!r.status().some(v => v.model === 'linked'));
    } finally {
      await r.close();
    }
  });
});
