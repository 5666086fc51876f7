// The deployment files against the code: every manifest parses, and every `fleet ...` command line, port,
// probe, environment variable, volume and metric name in deploy/ (Dockerfiles, compose, Kubernetes) and in
// docs/deploy.md agrees with what the CLI accepts (each cli/*.ts exports its OPTIONS table), what the
// processes listen on, and what telemetry/metrics.ts exports. No Docker engine or Kubernetes cluster is
// needed: images and pods are checked statically; nats.conf and the health-check script are run for real.
import { LAYERS } from './helpers/layers.ts';
import { strict as assert } from 'node:assert';
import { spawn } from 'node:child_process';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as http from 'node:http';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  repo,
  read,
  yamlDocs,
  filesUnder,
  dockerfile,
  execForm,
  dockerIgnored,
  dockerignoreRules,
  kubectlAvailable,
  kustomize,
  podSpec,
  podContainers,
  parseFleet,
  type Cli,
  type Obj,
  type DockerInstr,
} from './helpers/deploy-files.ts';
import { OPTIONS as COORDINATOR_OPTIONS } from '../cli/coordinator.ts';
import { OPTIONS as WORKER_OPTIONS } from '../cli/worker.ts';
import { OPTIONS as TRAIN_OPTIONS } from '../cli/train.ts';
import { parseHostPort } from '../coordinator/http.ts';
import { createMetrics } from '../telemetry/metrics.ts';
import { serveMetrics } from '../telemetry/metrics-http.ts';
import { connectNats } from '../bus/nats-transport.ts';
import { natsServerAvailable } from '../bench/harness/nats-server.ts';
import { waitFor, WaitAbort } from '../bench/harness/fleet-procs.ts';
import type { OptionSpec } from '../util/args.ts';

/**
 * Flags of the CLI contract (docs/design.md) that other branches add: allowed in the deploy files before
 * their code is merged, reported as pending while cli/*.ts lacks them. Once merged, the code's table decides.
 */
const CONTRACT: Record<string, string[]> = {
  coordinator: ['nats', 'state', 'http', 'grpc'],
  worker: ['nats', 'device', 'threads', 'http'],
  serve: ['models', 'grpc', 'http'],
};
/** The flags whose HOST:PORT a process listens on, and which of them serve /metrics. */
const LISTEN_FLAGS = ['http', 'grpc', 'metrics'];
const METRICS_FLAGS = ['http', 'metrics'];
const NATS_SECRET = 'fleet-nats';
/** The NATS user (nats.conf) each fleet command logs in as: one per role, docs/security.md. */
const ROLE_OF: Record<string, string> = {
  coordinator: 'coordinator',
  worker: 'worker',
  train: 'submitter',
  serve: 'server',
};

interface Listening {
  ports: Map<number, string>;
  metricsPorts: Set<number>;
  grpcPort?: number;
  values: Record<string, unknown>;
}

async function loadCli(): Promise<Cli> {
  const specs: Record<string, OptionSpec> = { coordinator: { ...COORDINATOR_OPTIONS }, worker: { ...WORKER_OPTIONS } };
  for (const [model, spec] of Object.entries(TRAIN_OPTIONS)) specs[`train ${model}`] = { ...spec };
  // fleet serve arrives with the serving branch; its module exports OPTIONS like the others
  if (fs.existsSync(repo('cli', 'serve.ts'))) specs.serve = { ...(await import(repo('cli', 'serve.ts'))).OPTIONS };
  const pending = new Set<string>();
  for (const [command, flags] of Object.entries(CONTRACT)) {
    specs[command] ??= {};
    for (const f of flags)
      if (!specs[command][f]) {
        specs[command][f] = { type: 'string' };
        pending.add(`fleet ${command} --${f}`);
      }
  }
  return { specs, pending, used: new Set() };
}

/** Runs a command in the repository root; its exit code and output. */
function run(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
): Promise<{ code: number | null; stdout: string; stderr: string }> {
  return new Promise((resolve, reject) => {
    const p = spawn(cmd, args, { cwd: repo(), env, stdio: ['ignore', 'pipe', 'pipe'] });
    let stdout = '',
      stderr = '';
    p.stdout.on('data', d => {
      stdout += d;
    });
    p.stderr.on('data', d => {
      stderr += d;
    });
    p.on('error', reject);
    p.on('close', code => resolve({ code, stdout, stderr }));
  });
}

/** Environment variables the code reads (process.env.X or env.X in the sources, and the health-check script). */
function envReadByCode(): Set<string> {
  const files = ['cli', 'bus', 'coordinator', 'worker', 'engine', 'dashboard', 'bin']
    .flatMap(filesUnder)
    .filter(f => /\.(ts|js|mjs)$/.test(f));
  files.push('deploy/docker/healthcheck.mjs');
  const names = new Set<string>();
  for (const f of files)
    for (const m of read(f).matchAll(/\b(?:process\.)?env(?:\.([A-Z][A-Z0-9_]+)|\[['"]([A-Z][A-Z0-9_]+)['"]\])/g))
      names.add(m[1] ?? m[2]);
  return names;
}

/** nats.conf's ports, store directory and the $VARIABLES it takes from the environment. */
function natsConf() {
  const text = read('deploy/k8s/base/nats.conf');
  const code = text.replace(/#.*$/gm, ''); // without comments
  const num = (key: string) => Number(new RegExp(`^\\s*${key}:\\s*(\\d+)`, 'm').exec(text)?.[1]);
  return {
    text,
    port: num('port'),
    httpPort: num('http_port'),
    storeDir: /^\s*store_dir:\s*(\S+)/m.exec(text)?.[1],
    // variables are unquoted: "$JS.API.>" in a permission is a subject
    vars: [...new Set([...code.replace(/"[^"]*"/g, '""').matchAll(/\$([A-Z][A-Z0-9_]*)/g)].map(m => m[1]))].sort(),
    /** user -> the environment variable holding its password */
    users: new Map(
      [...code.matchAll(/\buser:\s*"?([\w-]+)"?\s+password:\s*\$([A-Z][A-Z0-9_]*)/g)].map(m => [m[1], m[2]]),
    ),
  };
}

describe('deployment files (deploy/, .dockerignore, docs/deploy.md) against the code', function () {
  this.timeout(60_000);
  let cli: Cli;
  let envRead: Set<string>;
  const notes: string[] = [];
  const conf = natsConf();

  before(async () => {
    cli = await loadCli();
    envRead = envReadByCode();
  });
  after(() => {
    if (cli?.used.size)
      notes.unshift(
        `flags of the CLI contract used here that this branch's cli/*.ts lacks yet: ${[...cli.used].join(', ')}`,
      );
    for (const n of notes) console.log(`      note: ${n}`);
  });

  /** Checks a fleet process's command line; returns what it listens on. natsAt: the NATS host names reachable there. */
  function fleetProcess(where: string, argv: string[], natsAt: Map<string, number>): Listening {
    const { command, values } = parseFleet(cli, argv, where);
    if (command === 'worker' || command === 'coordinator')
      assert.ok(values.nats, `${where}: fleet ${command} without --nats`);
    if (values.nats) {
      const u = new URL(String(values.nats));
      assert.ok(['nats:', 'tls:'].includes(u.protocol), `${where}: --nats ${values.nats}: expected nats:// or tls://`);
      assert.ok(
        natsAt.has(u.hostname),
        `${where}: --nats ${values.nats}: no NATS service named ${u.hostname} (have ${[...natsAt.keys()].join(', ')})`,
      );
      assert.equal(
        Number(u.port || 4222),
        natsAt.get(u.hostname),
        `${where}: --nats ${values.nats}: NATS listens on ${natsAt.get(u.hostname)}`,
      );
      assert.equal(u.username, '', `${where}: credentials belong in NATS_USER/NATS_PASSWORD, not in the URL`);
    }
    if (values.device !== undefined)
      assert.ok(['cpu', 'cuda'].includes(String(values.device)), `${where}: --device ${values.device}`);
    if (values.threads !== undefined)
      assert.match(String(values.threads), /^[1-9]\d*$/, `${where}: --threads ${values.threads}`);
    const l: Listening = { ports: new Map(), metricsPorts: new Set(), values };
    for (const flag of LISTEN_FLAGS) {
      if (values[flag] === undefined) continue;
      const [host, port] = parseHostPort(String(values[flag]), `${where}: --${flag}`);
      // in a container, 127.0.0.1 is unreachable from probes, Services and other containers
      assert.equal(host, '0.0.0.0', `${where}: --${flag} ${values[flag]} must bind 0.0.0.0 inside a container`);
      l.ports.set(port, flag);
      if (METRICS_FLAGS.includes(flag)) l.metricsPorts.add(port);
      if (flag === 'grpc') l.grpcPort = port;
    }
    return l;
  }

  const checkEnv = (where: string, names: string[]) => {
    for (const n of names)
      assert.ok(
        envRead.has(n),
        `${where}: sets ${n}, which no fleet code reads (it reads ${[...envRead].sort().join(', ')})`,
      );
  };

  it('every YAML file under deploy/ parses (compose, Kubernetes, Grafana, Prometheus)', () => {
    const files = filesUnder('deploy').filter(f => /\.ya?ml$/.test(f));
    assert.ok(
      files.includes('deploy/compose.yaml') && files.includes('deploy/k8s/base/kustomization.yaml'),
      files.join(', '),
    );
    for (const f of files) assert.ok(yamlDocs(f).length > 0, `${f}: no documents`);
    for (const f of filesUnder('dashboard/grafana').filter(f => f.endsWith('.json'))) JSON.parse(read(f));
  });

  // ---- images

  const finalStage = (instrs: DockerInstr[]) => instrs.filter(i => i.stage === Math.max(...instrs.map(x => x.stage)));
  const one = (instrs: DockerInstr[], op: string, where: string) => {
    const found = instrs.filter(i => i.op === op);
    assert.equal(found.length, 1, `${where}: expected one ${op}, found ${found.length}`);
    return found[0];
  };

  function checkImage(rel: string, base: RegExp, defaultHealthUrl: string) {
    const all = dockerfile(rel);
    const froms = all.filter(i => i.op === 'FROM');
    assert.ok(froms.length >= 2, `${rel}: multi-stage (dependencies, then runtime)`);
    assert.match(froms.at(-1)!.args, base, `${rel}: runtime base image`);
    const ci = all.find(i => i.op === 'RUN' && /\bnpm ci\b/.test(i.args));
    assert.ok(ci && /--omit=dev/.test(ci.args), `${rel}: npm ci --omit=dev`);
    // tsx runs the sources (no build step), so it must survive --omit=dev
    assert.ok(JSON.parse(read('package.json')).dependencies.tsx, 'tsx is a runtime dependency');
    const fin = finalStage(all);
    const user = one(fin, 'USER', rel);
    assert.doesNotMatch(user.args, /^(root|0)(:|$)/, `${rel}: USER ${user.args} is root`);
    const uid = /--uid (\d+)/.exec(fin.find(i => i.op === 'RUN' && /useradd/.test(i.args))?.args ?? '')?.[1];
    assert.equal(uid, '10001', `${rel}: the fleet user's fixed uid (the Kubernetes manifests' runAsUser)`);
    assert.ok(fin.indexOf(user) < fin.indexOf(one(fin, 'ENTRYPOINT', rel)), `${rel}: USER before ENTRYPOINT`);
    const hc = one(fin, 'HEALTHCHECK', rel);
    const hcCmd = execForm(hc.args.replace(/^(--\S+\s+)*/, ''));
    assert.equal(hcCmd[0], 'node');
    const script = path.relative('/app', hcCmd[1]);
    assert.ok(fs.existsSync(repo(script)), `${rel}: HEALTHCHECK runs ${hcCmd[1]}, not in the repository`);
    assert.ok(!dockerIgnored(dockerignoreRules(), script), `${rel}: .dockerignore leaves out ${script}`);
    const entry = execForm(one(fin, 'ENTRYPOINT', rel).args);
    assert.deepEqual(entry, ['node', '/app/bin/fleet.js'], `${rel}: ENTRYPOINT`);
    assert.ok(
      fin.some(i => i.op === 'WORKDIR' && i.args === '/app'),
      `${rel}: WORKDIR /app`,
    );
    const cmd = execForm(one(fin, 'CMD', rel).args);
    const l = fleetProcess(`${rel} CMD`, cmd, new Map([['nats', conf.port]]));
    // the image's health check must hit the default command's /metrics port
    const envUrl = fin
      .filter(i => i.op === 'ENV')
      .map(i => /FLEET_HEALTH_URL=(\S+)/.exec(i.args)?.[1])
      .find(Boolean);
    const url = new URL(envUrl ?? defaultHealthUrl);
    assert.equal(url.pathname, '/metrics');
    assert.ok(
      l.metricsPorts.has(Number(url.port)),
      `${rel}: the health check asks ${url}, the CMD serves /metrics on ${[...l.metricsPorts].join(', ') || 'no port'}`,
    );
    const exposed = fin.filter(i => i.op === 'EXPOSE').flatMap(i => i.args.split(/\s+/).map(Number));
    for (const p of l.ports.keys())
      assert.ok(exposed.includes(p), `${rel}: CMD listens on ${p}, not EXPOSEd (${exposed.join(' ')})`);
    checkEnv(
      rel,
      fin.filter(i => i.op === 'ENV').flatMap(i => [...i.args.matchAll(/([A-Z][A-Z0-9_]*)=/g)].map(m => m[1])),
    );
    return { all, fin, cmd };
  }

  const healthDefault = () => /FLEET_HEALTH_URL \|\| '([^']+)'/.exec(read('deploy/docker/healthcheck.mjs'))![1];

  it("the CPU image: multi-stage node:22/24 LTS slim, npm ci --omit=dev, a non-root user, a health check on the CMD's /metrics", () => {
    const { all } = checkImage('deploy/docker/Dockerfile', /^node:(22|24)(\.\d+)*-(\w+-)?slim$/, healthDefault());
    // onnxruntime-node's CPU libraries are in its npm package: the install script must not download the CUDA ones
    assert.ok(all.some(i => i.op === 'ENV' && /ONNXRUNTIME_NODE_INSTALL=skip/.test(i.args) && i.stage === 0));
  });

  it('the CUDA image: a CUDA 12 + cuDNN 9 runtime base, Node 22/24 LTS, onnxruntime-node installed with ONNXRUNTIME_NODE_INSTALL=cuda12', () => {
    const { all, fin, cmd } = checkImage(
      'deploy/docker/Dockerfile.cuda',
      /^nvidia\/cuda:12\.\d+(\.\d+)?-cudnn(9)?-runtime-ubuntu\d+\.\d+$/,
      healthDefault(),
    );
    const ciStage = all.find(i => i.op === 'RUN' && /\bnpm ci\b/.test(i.args))!.stage;
    const flag = all.find(i => i.op === 'ENV' && i.stage === ciStage && /ONNXRUNTIME_NODE_INSTALL=/.test(i.args));
    assert.match(
      flag?.args ?? '',
      /ONNXRUNTIME_NODE_INSTALL=cuda12\b/,
      'the npm ci stage sets ONNXRUNTIME_NODE_INSTALL=cuda12',
    );
    // the flag is one this onnxruntime-node version's install script accepts here, and it installs the CUDA provider
    const ort = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    assert.match(
      fs.readFileSync(path.join(ort, 'script', 'install-utils.js'), 'utf8'),
      /process\.env\.ONNXRUNTIME_NODE_INSTALL\b/,
    );
    const meta = createRequire(import.meta.url)(path.join(ort, 'script', 'install-metadata.js'));
    assert.ok(meta.requirements['linux/x64'].includes('cuda12'));
    const installs = Object.keys(meta.manifests['linux/x64:cuda12']).map(f => path.basename(f));
    assert.ok(installs.includes('libonnxruntime_providers_cuda.so'), installs.join(', '));
    // ... and the build verifies that those files arrived (where engine/runtime.ts's checkCuda looks for them)
    const ci = all.find(i => i.op === 'RUN' && /\bnpm ci\b/.test(i.args))!.args;
    for (const f of ['libonnxruntime_providers_cuda.so', 'libonnxruntime_providers_shared.so']) {
      assert.match(
        ci,
        new RegExp(`test -f node_modules/onnxruntime-node/bin/napi-v6/linux/x64/${f.replace(/\./g, '\\.')}`),
      );
    }
    assert.ok(
      fin.some(i => i.op === 'COPY' && /--from=\S+ \/usr\/local\/bin\/node /.test(i.args)),
      'Node.js copied into the CUDA image',
    );
    assert.match(all.find(i => i.op === 'FROM' && i.stage === 0)!.args, /^node:(22|24)\b[.\w-]* AS \w+$/);
    assert.equal(cmd[0], 'worker');
    assert.equal(cmd[cmd.indexOf('--device') + 1], 'cuda', 'the GPU image runs workers with --device cuda');
  });

  it("plain npm ci skips onnxruntime-node's CUDA download (.npmrc); ONNXRUNTIME_NODE_INSTALL=cuda12 opts in", async function () {
    this.timeout(60_000);
    const ort = path.dirname(createRequire(import.meta.url).resolve('onnxruntime-node/package.json'));
    // the flag onnxruntime-node's install script reads, in the environment npm gives lifecycle scripts here
    const flag = async (extra: Record<string, string>) => {
      const env: Record<string, string> = { ...(process.env as Record<string, string>), ...extra };
      for (const k of Object.keys(env)) if (/^(npm_config_)?onnxruntime_node_install/i.test(k)) delete env[k];
      Object.assign(env, extra);
      const npm = await run('npm', ['run', '--silent', 'env'], env);
      assert.equal(npm.code, 0, npm.stderr);
      const scriptEnv = Object.fromEntries(
        npm.stdout
          .split('\n')
          .filter(l => l.includes('='))
          .map(l => [l.slice(0, l.indexOf('=')), l.slice(l.indexOf('=') + 1)]),
      );
      const js = `process.stdout.write(JSON.stringify(require(${JSON.stringify(path.join(ort, 'script', 'install-utils.js'))}).parseInstallFlag() ?? null))`;
      const node = await run(process.execPath, ['-e', js], scriptEnv);
      assert.equal(node.code, 0, node.stderr);
      return { npmConfig: scriptEnv.npm_config_onnxruntime_node_install, parsed: JSON.parse(node.stdout) };
    };
    const plain = await flag({});
    assert.equal(plain.npmConfig, 'skip', 'the project .npmrc sets onnxruntime-node-install=skip');
    assert.equal(plain.parsed, false, "onnxruntime-node's install script exits without downloading");
    const gpu = await flag({ ONNXRUNTIME_NODE_INSTALL: 'cuda12' });
    assert.notEqual(gpu.parsed, false, 'ONNXRUNTIME_NODE_INSTALL=cuda12 wins over the .npmrc');
    for (const doc of ['README.md', 'docs/deploy.md'])
      assert.match(read(doc), /ONNXRUNTIME_NODE_INSTALL=cuda12 npm ci/, doc);
  });

  it('.dockerignore keeps node_modules, tests, state and secrets out and every runtime source in', () => {
    const rules = dockerignoreRules();
    for (const out of [
      'node_modules',
      'node_modules/x/y.js',
      '.git',
      'test/cluster.test.ts',
      'fleet-state/jobs',
      'runs/cnn-1/model.onnx',
      'deploy/.env',
      'a/b.creds',
      'certs/server.key',
    ]) {
      assert.ok(dockerIgnored(rules, out), `${out} would be sent to the build`);
    }
    // every folder of the layer rule (all that bin/fleet.js can import at run time), the protocol files and the web dashboard
    const needed = [
      'package.json',
      'package-lock.json',
      'tsconfig.json',
      'bin/fleet.js',
      'deploy/docker/healthcheck.mjs',
      ...[...Object.keys(LAYERS), 'dashboard', 'proto']
        .flatMap(filesUnder)
        .filter(f => !f.startsWith('bench/results/')),
    ];
    for (const f of needed) assert.ok(!dockerIgnored(rules, f), `.dockerignore leaves out ${f}, which the image needs`);
  });

  it('the health-check script: healthy on 200 from /metrics, unhealthy (exit 1, one line) on 404 or a closed port', async () => {
    const server = await serveMetrics(createMetrics({ defaultMetrics: false }), '127.0.0.1', 0);
    const port = (server.address() as { port: number }).port;
    const check = (url: string) =>
      new Promise<{ code: number | null; err: string }>(resolve => {
        const p = spawn(process.execPath, [repo('deploy/docker/healthcheck.mjs')], {
          env: { ...process.env, FLEET_HEALTH_URL: url },
        });
        let err = '';
        p.stderr.setEncoding('utf8').on('data', (d: string) => {
          err += d;
        });
        p.on('close', code => resolve({ code, err }));
      });
    try {
      assert.deepEqual(await check(`http://127.0.0.1:${port}/metrics`), { code: 0, err: '' });
      const notFound = await check(`http://127.0.0.1:${port}/nope`);
      assert.equal(notFound.code, 1);
      assert.equal(notFound.err, `unhealthy: GET http://127.0.0.1:${port}/nope answered 404\n`);
    } finally {
      await new Promise(r => server.close(r));
    }
    const closed = await check(`http://127.0.0.1:${port}/metrics`);
    assert.equal(closed.code, 1);
    assert.match(closed.err, /^unhealthy: GET .*: .*ECONNREFUSED.*\n$/);
  });

  // ---- compose

  it('compose: fleet command lines, ports, volumes, credentials, a scalable worker pool and a GPU pool', () => {
    const compose = yamlDocs('deploy/compose.yaml')[0];
    const services: Record<string, Obj> = compose.services;
    const natsAt = new Map([['nats', conf.port]]);
    const fleetServices = Object.entries(services).filter(([, s]) => /^fleet(-cuda)?(:|$)/.test(s.image ?? ''));
    assert.deepEqual(fleetServices.map(([n]) => n).sort(), ['coordinator', 'worker', 'worker-gpu']);
    const built = new Map<string, Obj>();
    for (const [name, s] of Object.entries(services)) {
      if (!s.build) continue;
      const dockerfilePath = path.join('deploy', s.build.context, s.build.dockerfile);
      assert.equal(
        path.resolve(repo('deploy', s.build.context)),
        repo(),
        `${name}: build context is the repository root`,
      );
      assert.ok(fs.existsSync(repo(dockerfilePath)), `${name}: ${dockerfilePath} missing`);
      built.set(s.image, dockerfilePath);
    }
    assert.equal(built.get('fleet:latest'), 'deploy/docker/Dockerfile');
    assert.equal(built.get('fleet-cuda:latest'), 'deploy/docker/Dockerfile.cuda');
    const nats = services.nats;
    for (const [name, s] of fleetServices) {
      const where = `compose service ${name}`;
      assert.ok(built.has(s.image), `${where}: image ${s.image} is built by no service`);
      const l = fleetProcess(where, s.command, natsAt);
      for (const p of s.ports ?? []) {
        const [ip, host, container] = String(p).split(':');
        assert.equal(ip, '127.0.0.1', `${where}: ${p} publishes beyond localhost`);
        assert.ok(
          host && l.ports.has(Number(container)),
          `${where}: publishes ${container}, which the command does not listen on`,
        );
      }
      const env: Record<string, string> = s.environment;
      checkEnv(where, Object.keys(env));
      const health = new URL(env.FLEET_HEALTH_URL);
      assert.ok(
        health.pathname === '/metrics' && l.metricsPorts.has(Number(health.port)),
        `${where}: FLEET_HEALTH_URL ${health} is not the command's /metrics`,
      );
      // its role's user, with that user's password (the same variable the NATS server reads for it)
      const role = ROLE_OF[s.command[0]];
      assert.equal(env.NATS_USER, role, `${where}: logs in as the ${role} user`);
      assert.ok(conf.users.has(role), `${where}: nats.conf has no user ${role}`);
      const passwordVar = conf.users.get(role)!;
      assert.equal(env.NATS_PASSWORD, nats.environment[passwordVar], `${where}: NATS_PASSWORD is ${passwordVar}`);
      assert.ok(s.depends_on?.nats, `${where}: waits for NATS`);
    }
    // one user per role, and no password has a default: compose refuses to start without them
    assert.deepEqual([...conf.users.keys()].sort(), Object.values(ROLE_OF).sort(), 'nats.conf: a user per role');
    for (const v of conf.users.values()) assert.match(nats.environment[v], new RegExp(`^\\$\\{${v}:\\?[^}]+\\}$`), v);
    assert.equal(new Set(conf.users.values()).size, conf.users.size, 'nats.conf: each user its own password');
    assert.deepEqual(
      Object.keys(nats.environment).sort(),
      conf.vars,
      'the NATS server gets exactly the variables nats.conf uses',
    );
    // NATS: the config file mounted where -c reads it, JetStream's store on a named volume
    const natsConfMount = nats.volumes
      .map((v: string) => v.split(':'))
      .find((v: string[]) => v[0].endsWith('nats.conf'));
    assert.equal(path.resolve(repo('deploy', natsConfMount[0])), repo('deploy/k8s/base/nats.conf'));
    assert.equal(natsConfMount[1], nats.command[nats.command.indexOf('-c') + 1]);
    const volumeAt = (s: Obj, target: string) =>
      (s.volumes ?? []).map((v: string) => v.split(':')).find((v: string[]) => v[1] === target)?.[0];
    assert.ok(
      compose.volumes[volumeAt(nats, conf.storeDir!)] !== undefined,
      `NATS's JetStream store ${conf.storeDir} is not on a named volume`,
    );
    const coord = services.coordinator;
    const state = coord.command[coord.command.indexOf('--state') + 1];
    assert.ok(
      compose.volumes[volumeAt(coord, state)] !== undefined,
      `the coordinator's --state ${state} is not on a named volume`,
    );
    // workers scale: no fixed name, no host port
    for (const w of ['worker', 'worker-gpu']) {
      assert.equal(services[w].container_name, undefined, `${w}: container_name prevents --scale`);
      assert.equal(services[w].ports, undefined, `${w}: host ports prevent --scale`);
    }
    const gpu = services['worker-gpu'];
    assert.ok(gpu.profiles.includes('gpu'), 'the GPU pool is opt-in (--profile gpu)');
    assert.equal(gpu.command[gpu.command.indexOf('--device') + 1], 'cuda');
    const devices = gpu.deploy.resources.reservations.devices;
    assert.ok(
      devices.some(
        (d: Obj) => d.driver === 'nvidia' && d.capabilities.includes('gpu') && (d.count === 'all' || d.count >= 1),
      ),
      JSON.stringify(devices),
    );
    assert.ok(!JSON.stringify(services.worker).includes('cuda'), 'the CPU pool does not ask for CUDA');
    for (const [name, s] of Object.entries(services)) {
      for (const p of s.ports ?? [])
        assert.match(String(p), /^127\.0\.0\.1:/, `${name}: ${p} publishes beyond localhost`);
    }
  });

  it('compose: Prometheus gets deploy/prometheus/ (scrape config, alert rules) and Grafana its datasource and the fleet dashboard', () => {
    const compose = yamlDocs('deploy/compose.yaml')[0];
    const services: Record<string, Obj> = compose.services;
    const prom = services.prometheus;
    const flag = (s: Obj, name: string) => s.command.find((a: string) => a.startsWith(`--${name}=`))?.split('=')[1];
    const promMount = prom.volumes.map((v: string) => v.split(':')).find((v: string[]) => v[0] === './prometheus');
    assert.ok(promMount, 'deploy/prometheus/ is mounted into Prometheus');
    const configFile = flag(prom, 'config.file');
    assert.equal(path.dirname(configFile), promMount[1]);
    const promPort = Number(flag(prom, 'web.listen-address').split(':')[1]);
    assert.equal(Number(prom.ports[0].split(':')[2]), promPort);

    // Grafana: the provisioned datasource is the compose Prometheus; the provider reads the mounted dashboard folder
    const graf = services.grafana;
    const mountOf = (src: string) =>
      graf.volumes.map((v: string) => v.split(':')).find((v: string[]) => v[0] === src)?.[1];
    assert.equal(mountOf('./grafana/provisioning'), '/etc/grafana/provisioning');
    const ds = yamlDocs('deploy/grafana/provisioning/datasources/prometheus.yaml')[0].datasources[0];
    const dsUrl = new URL(ds.url);
    assert.ok(
      services[dsUrl.hostname] === prom && Number(dsUrl.port) === promPort,
      `Grafana's datasource ${ds.url} is not the compose Prometheus`,
    );
    const provider = yamlDocs('deploy/grafana/provisioning/dashboards/fleet.yaml')[0].providers[0];
    assert.equal(
      mountOf('../dashboard/grafana'),
      provider.options.path,
      'the dashboard provider reads the folder dashboard/grafana is mounted at',
    );
    assert.equal(
      graf.environment.GF_SECURITY_ADMIN_PASSWORD.startsWith('${GRAFANA_ADMIN_PASSWORD:?'),
      true,
      'no default Grafana admin password',
    );

    // the monitoring branch's files: checked when present (they are written there, not here)
    const dash = filesUnder('dashboard/grafana').filter(f => f.endsWith('.json'));
    if (dash.length)
      for (const f of dash)
        assert.ok(Array.isArray(JSON.parse(read(f)).panels), `${f}: a Grafana dashboard with panels`);
    else
      notes.push(
        'dashboard/grafana/*.json is not on this branch yet (monitoring): the provisioned dashboard folder is empty here',
      );
    if (!fs.existsSync(repo('deploy/prometheus/prometheus.yml'))) {
      notes.push(
        'deploy/prometheus/prometheus.yml is not on this branch yet (monitoring): its scrape targets and rule files were not checked',
      );
      return;
    }
    const cfg = yamlDocs('deploy/prometheus/prometheus.yml')[0];
    for (const rule of cfg.rule_files ?? []) {
      const rel = path.isAbsolute(rule) ? path.relative(promMount[1], rule) : rule;
      assert.ok(
        !rel.startsWith('..') && fs.existsSync(repo('deploy/prometheus', rel)),
        `prometheus.yml: rule file ${rule} is not in deploy/prometheus/`,
      );
    }
    const listening = new Map<string, Set<number>>(
      Object.entries(services).map(([n, s]) => {
        if (/^fleet/.test(s.image ?? ''))
          return [n, new Set(fleetProcess(`compose ${n}`, s.command, new Map([['nats', conf.port]])).ports.keys())];
        return [
          n,
          new Set(
            n === 'prometheus' ? [promPort] : n === 'nats' ? [conf.port, conf.httpPort] : n === 'grafana' ? [3000] : [],
          ),
        ];
      }),
    );
    let targets = 0;
    for (const job of cfg.scrape_configs ?? []) {
      const hosts: string[] = [
        ...(job.static_configs ?? []).flatMap((s: Obj) => s.targets),
        ...(job.dns_sd_configs ?? []).flatMap((d: Obj) => d.names.map((n: string) => `${n}:${d.port}`)),
      ];
      for (const t of hosts) {
        const [host, port] = t.split(':');
        if (host === 'localhost' || host === '127.0.0.1') continue; // Prometheus scraping itself
        targets++;
        assert.ok(listening.has(host), `prometheus.yml job ${job.job_name}: target ${t} is no compose service`);
        assert.ok(
          listening.get(host)!.has(Number(port)),
          `prometheus.yml job ${job.job_name}: ${host} does not listen on ${port}`,
        );
      }
    }
    assert.ok(targets > 0, 'prometheus.yml scrapes at least one compose service');
  });

  // ---- Kubernetes

  it('kustomize: every resource, patch and generated file exists, and every overlay builds', () => {
    const dirs = filesUnder('deploy/k8s')
      .filter(f => f.endsWith('kustomization.yaml'))
      .map(path.dirname);
    assert.deepEqual(dirs.sort(), [
      'deploy/k8s/base',
      'deploy/k8s/monitoring',
      'deploy/k8s/overlays/cpu',
      'deploy/k8s/overlays/gpu',
    ]);
    for (const dir of dirs) {
      const k = yamlDocs(path.join(dir, 'kustomization.yaml'))[0];
      assert.equal(k.kind, 'Kustomization');
      const refs = [
        ...(k.resources ?? []),
        ...(k.patches ?? []).map((p: Obj) => p.path),
        ...(k.configMapGenerator ?? []).flatMap((g: Obj) => g.files),
      ];
      for (const r of refs) {
        const p = repo(dir, r);
        assert.ok(fs.existsSync(p), `${dir}/kustomization.yaml: ${r} does not exist`);
        if (fs.statSync(p).isDirectory())
          assert.ok(fs.existsSync(path.join(p, 'kustomization.yaml')), `${dir}: ${r} has no kustomization.yaml`);
      }
    }
    // both builds (ours, and kubectl's when installed) succeed and agree on what objects exist
    const useKubectl = kubectlAvailable();
    for (const o of ['deploy/k8s/overlays/cpu', 'deploy/k8s/overlays/gpu']) {
      const names = (objs: Obj[]) => objs.map(x => `${x.kind}/${x.metadata.name.replace(/-[a-z0-9]{10}$/, '')}`).sort();
      const ours = kustomize(o, false);
      if (useKubectl)
        assert.deepEqual(names(kustomize(o, true)), names(ours), `${o}: kubectl kustomize and the test's build differ`);
    }
    if (!useKubectl)
      notes.push(
        'kubectl is not installed: the overlays were built by the test (resources + strategic-merge patches), not by kustomize',
      );
  });

  for (const overlay of ['cpu', 'gpu'] as const) {
    it(`kubernetes (${overlay} overlay): fleet command lines, ports, probes, Services, Secrets, volumes and scraping agree`, () => {
      const objs = kustomize(`deploy/k8s/overlays/${overlay}`, kubectlAvailable());
      const byKind = (kind: string) => objs.filter(o => o.kind === kind);
      const services = byKind('Service');
      const workloads = objs.filter(o => podSpec(o));
      const natsAt = new Map<string, number>();
      for (const s of services) {
        const client = s.spec.ports.find((p: Obj) => p.name === 'client');
        if (client)
          for (const h of [
            s.metadata.name,
            `${s.metadata.name}.${s.metadata.namespace}`,
            `${s.metadata.name}.${s.metadata.namespace}.svc.cluster.local`,
          ])
            natsAt.set(h, client.port);
      }
      assert.ok(natsAt.has('nats'), 'a Service named nats with a client port');
      for (const o of objs)
        if (o.kind !== 'Namespace')
          assert.equal(o.metadata.namespace, 'fleet', `${o.kind}/${o.metadata.name}: namespace`);

      const fleetContainers: { w: Obj; c: Obj; l: Listening }[] = [];
      for (const w of workloads) {
        for (const c of podContainers(w)) {
          if (!/^fleet(-cuda)?(:|$)/.test(c.image)) continue;
          const where = `${w.kind}/${w.metadata.name} container ${c.name}`;
          assert.equal(c.command, undefined, `${where}: keep the image's ENTRYPOINT (node bin/fleet.js); pass args`);
          const l = fleetProcess(where, c.args, natsAt);
          fleetContainers.push({ w, c, l });
          // declared ports are exactly the ports the command listens on
          const declared = new Map<string, number>((c.ports ?? []).map((p: Obj) => [p.name, p.containerPort]));
          assert.deepEqual(
            [...declared.values()].sort(),
            [...l.ports.keys()].sort(),
            `${where}: containerPorts vs listening ports`,
          );
          const portOf = (p: string | number) => (typeof p === 'number' ? p : declared.get(p));
          for (const kind of ['readinessProbe', 'livenessProbe', 'startupProbe']) {
            const probe = c[kind];
            if (!probe) continue;
            if (probe.grpc)
              assert.equal(
                probe.grpc.port,
                l.grpcPort,
                `${where}: ${kind} asks gRPC health on ${probe.grpc.port}, --grpc is ${l.grpcPort}`,
              );
            else {
              assert.equal(probe.httpGet?.path, '/metrics', `${where}: ${kind}`);
              assert.ok(
                l.metricsPorts.has(portOf(probe.httpGet.port)!),
                `${where}: ${kind} on port ${probe.httpGet.port}, which serves no /metrics`,
              );
            }
          }
          assert.ok(c.readinessProbe && c.livenessProbe, `${where}: readiness and liveness probes`);
          const ann = w.spec.template.metadata.annotations ?? {};
          assert.equal(ann['prometheus.io/scrape'], 'true', `${where}: scrape annotation`);
          assert.ok(
            l.metricsPorts.has(Number(ann['prometheus.io/port'])) && ann['prometheus.io/path'] === '/metrics',
            `${where}: prometheus.io/port ${ann['prometheus.io/port']}`,
          );
          // its role's user, the password only from the Secret (the key the NATS server reads for that user)
          checkEnv(
            where,
            (c.env ?? []).map((e: Obj) => e.name),
          );
          const env = new Map<string, Obj>((c.env ?? []).map((e: Obj) => [e.name, e]));
          const role = ROLE_OF[c.args[0]];
          assert.equal(env.get('NATS_USER')?.value, role, `${where}: NATS_USER is its role's user (${role})`);
          const secretRef = env.get('NATS_PASSWORD')?.valueFrom?.secretKeyRef;
          assert.deepEqual(
            secretRef,
            { name: NATS_SECRET, key: conf.users.get(role) },
            `${where}: NATS_PASSWORD from Secret ${NATS_SECRET} key ${conf.users.get(role)}`,
          );
          assert.deepEqual([...env.keys()].sort(), ['NATS_PASSWORD', 'NATS_USER'], `${where}: NATS credentials`);
          // the image's user, a read-only root with a writable /tmp (tsx caches compiled sources there)
          const sc = podSpec(w).securityContext;
          assert.ok(sc.runAsNonRoot && sc.runAsUser === 10001, `${where}: runs as the image's fleet user (10001)`);
          if (c.securityContext?.readOnlyRootFilesystem)
            assert.ok(
              c.volumeMounts.some((m: Obj) => m.mountPath === '/tmp'),
              `${where}: read-only root needs /tmp`,
            );
          if (l.values.threads)
            assert.equal(
              String(c.resources.requests.cpu),
              String(l.values.threads),
              `${where}: CPU request = --threads`,
            );
          assert.ok(c.resources?.requests?.memory && c.resources?.limits?.memory, `${where}: memory request and limit`);
          if (l.values.state) {
            const m = c.volumeMounts.find((v: Obj) => v.mountPath === l.values.state);
            assert.ok(
              m && w.kind === 'StatefulSet' && w.spec.volumeClaimTemplates.some((t: Obj) => t.metadata.name === m.name),
              `${where}: --state ${l.values.state} on a PersistentVolumeClaim`,
            );
          }
        }
      }
      const commands = fleetContainers.map(x => x.c.args[0]).sort();
      assert.deepEqual(commands, ['coordinator', 'worker']);
      assert.ok(
        fleetContainers.some(x => x.l.grpcPort !== undefined && x.c.args[0] === 'coordinator'),
        'the coordinator serves gRPC',
      );

      // every Service selects pods, and its target ports exist on them
      for (const s of services) {
        const sel = s.spec.selector;
        const pods = workloads.filter(w =>
          Object.entries(sel).every(([k, v]) => w.spec.template.metadata.labels?.[k] === v),
        );
        assert.ok(pods.length > 0, `Service ${s.metadata.name} selects no pods`);
        for (const p of s.spec.ports) {
          const ok = pods.some(w =>
            podContainers(w).some(c =>
              (c.ports ?? []).some((cp: Obj) => cp.name === p.targetPort || cp.containerPort === p.targetPort),
            ),
          );
          assert.ok(ok, `Service ${s.metadata.name}: targetPort ${p.targetPort} is no container port of its pods`);
        }
      }

      // NATS: nats.conf from the generated ConfigMap, its ports declared, JetStream on a claim, credentials from the Secret
      const nats = byKind('StatefulSet').find(w => w.metadata.name === 'nats');
      const nc = podContainers(nats)[0];
      assert.equal(
        nc.args[nc.args.indexOf('-c') + 1],
        path.posix.join(nc.volumeMounts.find((m: Obj) => m.name === 'config').mountPath, 'nats.conf'),
      );
      const cmName = podSpec(nats).volumes.find((v: Obj) => v.name === 'config').configMap.name;
      const cm = byKind('ConfigMap').find(m => m.metadata.name === cmName);
      assert.equal(cm?.data?.['nats.conf'], conf.text, `ConfigMap ${cmName} holds deploy/k8s/base/nats.conf`);
      assert.deepEqual(nc.ports.map((p: Obj) => p.containerPort).sort(), [conf.port, conf.httpPort].sort());
      assert.deepEqual(
        nc.env.map((e: Obj) => e.name).sort(),
        conf.vars,
        'the NATS container gets exactly the variables nats.conf uses',
      );
      for (const e of nc.env) assert.deepEqual(e.valueFrom.secretKeyRef, { name: NATS_SECRET, key: e.name });
      const data = nc.volumeMounts.find((m: Obj) => m.mountPath === conf.storeDir);
      assert.ok(
        data && nats.spec.volumeClaimTemplates.some((t: Obj) => t.metadata.name === data.name),
        'JetStream store on a PersistentVolumeClaim',
      );
      assert.ok(
        /js-enabled-only=true/.test(nc.readinessProbe.httpGet.path) && nc.readinessProbe.httpGet.port === 'monitor',
      );

      const worker = fleetContainers.find(x => x.c.args[0] === 'worker')!;
      const gpuAsked = worker.c.resources.limits['nvidia.com/gpu'];
      const spec = podSpec(worker.w);
      if (overlay === 'gpu') {
        assert.match(worker.c.image, /^fleet-cuda(:|$)/, 'GPU workers run the CUDA image');
        assert.equal(worker.l.values.device, 'cuda');
        assert.ok(Number(gpuAsked) >= 1, 'a GPU per worker (nvidia.com/gpu)');
        assert.ok(
          Object.keys(spec.nodeSelector ?? {}).some(k => k.startsWith('nvidia.com/')),
          'GPU nodes only (nodeSelector)',
        );
        assert.ok(
          (spec.tolerations ?? []).some((t: Obj) => t.key === 'nvidia.com/gpu' && t.effect === 'NoSchedule'),
          'tolerates the GPU taint',
        );
      } else {
        assert.match(worker.c.image, /^fleet(:|$)/);
        assert.notEqual(worker.l.values.device, 'cuda');
        assert.equal(gpuAsked, undefined);
        assert.equal(spec.nodeSelector, undefined);
      }
    });
  }

  it('kubernetes monitoring: the PodMonitor selects fleet pods on ports they declare', () => {
    const [pm] = kustomize('deploy/k8s/monitoring', kubectlAvailable());
    assert.equal(pm.kind, 'PodMonitor');
    const objs = kustomize('deploy/k8s/overlays/cpu', kubectlAvailable()).filter(o => podSpec(o));
    const selected = objs.filter(w =>
      Object.entries(pm.spec.selector.matchLabels).every(([k, v]) => w.spec.template.metadata.labels?.[k] === v),
    );
    assert.deepEqual(selected.map(w => w.metadata.name).sort(), ['fleet-coordinator', 'fleet-worker']);
    const portNames = new Set(
      selected.flatMap(w => podContainers(w).flatMap(c => (c.ports ?? []).map((p: Obj) => p.name))),
    );
    for (const ep of pm.spec.podMetricsEndpoints) {
      assert.ok(portNames.has(ep.port), `PodMonitor endpoint port ${ep.port} is on no fleet pod`);
      assert.equal(ep.path, '/metrics');
    }
    // each fleet pod is scraped on its /metrics port
    for (const w of selected) {
      const metricsPort = w.spec.template.metadata.annotations['prometheus.io/port'];
      const names = podContainers(w).flatMap(c =>
        c.ports.filter((p: Obj) => String(p.containerPort) === metricsPort).map((p: Obj) => p.name),
      );
      assert.ok(
        names.some(n => pm.spec.podMetricsEndpoints.some((ep: Obj) => ep.port === n)),
        `${w.metadata.name}: not scraped on ${metricsPort}`,
      );
    }
  });

  // ---- NATS for real

  it("nats.conf runs: JetStream on, credentials from the environment, the probes' /healthz answers", async function () {
    assert.ok(natsServerAvailable(), 'nats-server is not installed (apt-get install nats-server; .ci/run does)');
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-natsconf-'));
    const free = () =>
      new Promise<number>(resolve => {
        const s = http.createServer().listen(0, '127.0.0.1', () => {
          const p = (s.address() as { port: number }).port;
          s.close(() => resolve(p));
        });
      });
    const [port, mon] = [await free(), await free()];
    const env: NodeJS.ProcessEnv = { ...process.env };
    for (const [user, v] of conf.users) env[v] = `pw-of-${user}`;
    // the file as shipped, with its store in a temp folder (nats-server refuses -sd next to a store_dir); the
    // flags move it to 127.0.0.1 and free ports
    const confFile = path.join(tmp, 'nats.conf');
    fs.writeFileSync(
      confFile,
      conf.text.replace(`store_dir: ${conf.storeDir}`, `store_dir: ${JSON.stringify(path.join(tmp, 'js'))}`),
    );
    assert.notEqual(fs.readFileSync(confFile, 'utf8'), conf.text);
    const server = spawn('nats-server', ['-c', confFile, '-a', '127.0.0.1', '-p', String(port), '-m', String(mon)], {
      env,
      stdio: ['ignore', 'ignore', 'pipe'],
    });
    let log = '';
    server.stderr!.setEncoding('utf8').on('data', (d: string) => {
      log += d;
    });
    try {
      const health = await waitFor(
        () =>
          new Promise<number | null>(resolve => {
            http
              .get(`http://127.0.0.1:${mon}/healthz?js-enabled-only=true`, res => {
                res.resume();
                resolve(res.statusCode ?? null);
              })
              .on('error', () => resolve(null));
            if (server.exitCode !== null) throw new WaitAbort(`nats-server exited: ${log}`);
          }),
        15_000,
        'nats-server with deploy/k8s/base/nats.conf',
      );
      assert.equal(health, 200);
      const jsz = await new Promise<Obj>((resolve, reject) =>
        http
          .get(`http://127.0.0.1:${mon}/jsz`, res => {
            let t = '';
            res
              .setEncoding('utf8')
              .on('data', (d: string) => {
                t += d;
              })
              .on('end', () => resolve(JSON.parse(t)));
          })
          .on('error', reject),
      );
      assert.equal(
        path.dirname(jsz.config?.store_dir ?? ''),
        path.join(tmp, 'js'),
        `JetStream enabled with its store in the temp folder: ${JSON.stringify(jsz)}`,
      );
      for (const user of conf.users.keys()) {
        const ok = await connectNats(`nats://127.0.0.1:${port}`, { name: 'deploy-test', user, pass: `pw-of-${user}` });
        await ok.close();
        const wrong = connectNats(`nats://127.0.0.1:${port}`, { name: 'deploy-test', user, pass: 'wrong' });
        await assert.rejects(wrong, /auth|Authorization/i);
      }
      await assert.rejects(connectNats(`nats://127.0.0.1:${port}`, { name: 'deploy-test' }), /auth|Authorization/i);
    } finally {
      server.kill('SIGKILL');
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  });

  // ---- metric names and the guide

  it('every fleet_* metric named in deploy/, docs/deploy.md and the Grafana dashboard is one fleet exports', async () => {
    const exported = new Set<string>();
    const { registry } = createMetrics({ defaultMetrics: false });
    for (const m of await registry.getMetricsAsJSON()) {
      exported.add(m.name);
      if (String(m.type) === 'histogram') for (const s of ['_bucket', '_sum', '_count']) exported.add(m.name + s);
      // label names too: the job id is the label fleet_job
      for (const l of (registry.getSingleMetric(m.name) as unknown as { labelNames?: string[] }).labelNames ?? [])
        if (l.startsWith('fleet_')) exported.add(l);
    }
    assert.ok(exported.has('fleet_job'), 'the job label');
    assert.ok(exported.has('fleet_worker_info'), 'the deploy metric (GPU per worker) is registered');
    const files = [...filesUnder('deploy'), 'docs/deploy.md', ...filesUnder('dashboard/grafana')].filter(f =>
      /\.(ya?ml|json|md|conf|mjs)$|Dockerfile/.test(f),
    );
    let refs = 0;
    for (const f of files) {
      for (const m of read(f).matchAll(/\bfleet_[a-z0-9_]+/g)) {
        refs++;
        assert.ok(exported.has(m[0]), `${f}: ${m[0]} is not a metric (or label) fleet exports`);
      }
    }
    assert.ok(refs > 0, 'docs/deploy.md names the metrics to watch');
  });

  it('docs/deploy.md: every fleet command line in it is valid, and it creates the Secret the manifests read', () => {
    const doc = read('docs/deploy.md');
    // the lines inside fenced code blocks, continuation lines joined
    let inCode = false;
    const code: string[] = [];
    for (const l of doc.split('\n')) {
      if (l.trimStart().startsWith('```')) inCode = !inCode;
      else if (inCode) code.push(l);
    }
    let n = 0;
    for (const line of code
      .join('\n')
      .replace(/\\\n\s*/g, ' ')
      .split('\n')) {
      const m = /^(?:\$\s+)?(?:[A-Z_]+=\S+\s+)*fleet\s+(.+?)\s*(?:&\s*)?(?:#.*)?$/.exec(line.trim());
      if (!m) continue;
      n++;
      const { command, values } = parseFleet(cli, m[1].split(/\s+/).filter(Boolean), `docs/deploy.md: ${line.trim()}`);
      if (values.nats) assert.match(String(values.nats), /^(nats|tls):\/\/[\w.-]+:\d+$/, line);
      const user = /\bNATS_USER=(\S+)/.exec(line)?.[1];
      const role = ROLE_OF[command.split(' ')[0]];
      if (user) assert.equal(user, role, `docs/deploy.md: fleet ${command} logs in as its role's user: ${line}`);
    }
    assert.ok(n >= 3, `docs/deploy.md shows fleet commands (found ${n})`);
    const secret = /kubectl -n fleet create secret generic (\S+) (.+)/.exec(doc);
    assert.ok(secret, 'docs/deploy.md creates the NATS Secret');
    assert.equal(secret![1], NATS_SECRET);
    for (const k of conf.users.values()) assert.match(secret![2], new RegExp(`--from-literal=${k}=`));
    for (const o of ['overlays/cpu', 'overlays/gpu']) assert.match(doc, new RegExp(`kubectl apply -k deploy/k8s/${o}`));
    assert.match(doc, /docker compose -f deploy\/compose\.yaml/);
  });
});
