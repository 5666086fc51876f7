// The layer rule of docs/design.md: every relative import of a shipped file must point to its own folder or to
// a folder below it. A new import that breaks the rule fails here, naming the file and the target.
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { IMPORT, LAYERS, layerViolations, sourceFiles } from './helpers/layers.ts';
import { REPO_ROOT } from './helpers/cli.ts';

describe('layers (docs/design.md)', () => {
  it('every shipped import points to its own folder or a folder below it', () => {
    assert.deepEqual(layerViolations(), []);
  });

  it('the check sees imports of every form (static, dynamic, worker URLs)', () => {
    const forms = [
      "import { a } from '../x/y.ts';",
      "const m = await import('../x/y.ts');",
      "import '../x/y.ts';",
      "new URL('../x/y.js', import.meta.url)",
    ];
    for (const f of forms) assert.equal([...f.matchAll(IMPORT)].length, 1, f);
  });

  it('every top-level folder with source code has a place in the rule', () => {
    const tops = fs
      .readdirSync(REPO_ROOT, { withFileTypes: true })
      .filter(
        d =>
          d.isDirectory() &&
          !d.name.startsWith('.') &&
          !['node_modules', 'test', 'docs', 'deploy', 'proto', 'runs'].includes(d.name),
      )
      .filter(d => sourceFiles(d.name).length > 0)
      .map(d => d.name);
    for (const t of tops)
      assert.ok(
        t in LAYERS,
        `${t}/ holds source code but docs/design.md's layer rule (test/layers.test.ts) does not place it`,
      );
  });
});

describe('the repository is self-contained', () => {
  it('no tracked text file points at ../shared (the design document is docs/design.md)', () => {
    const files = (fs.readdirSync(REPO_ROOT, { recursive: true }) as string[])
      .filter(f => !/^(node_modules|\.git|runs|test-artifacts)(\/|$)/.test(f))
      .filter(
        f =>
          /\.(ts|js|mjs|md|ya?ml|json|conf)$|Dockerfile/.test(f) &&
          f !== 'package-lock.json' &&
          f !== 'test/layers.test.ts',
      );
    const bad = files.filter(
      f =>
        fs.existsSync(path.join(REPO_ROOT, f)) &&
        /\.\.\/shared\/|shared\/DESIGN\.md/.test(fs.readFileSync(path.join(REPO_ROOT, f), 'utf8')),
    );
    assert.deepEqual(bad, []);
  });
});

describe('npm run test:unit (.mocharc.unit.json)', () => {
  it('lists only test files that start no process and no server', () => {
    const spec = (JSON.parse(fs.readFileSync(path.join(REPO_ROOT, '.mocharc.unit.json'), 'utf8')) as { spec: string[] })
      .spec;
    assert.ok(spec.length > 10);
    const starts = /node:child_process|node:net|node:http|worker_threads|nats-server|fleet-procs|grpc|runFleet/;
    for (const f of spec.filter(f => f !== 'test/layers.test.ts')) {
      const src = fs.readFileSync(path.join(REPO_ROOT, f), 'utf8');
      assert.doesNotMatch(src, starts, `${f} starts processes or servers: leave it out of the unit subset`);
    }
  });
});
