// The Grafana dashboard and the Prometheus configuration against the code: every metric a panel, variable or
// alert rule queries is one createMetrics() exports (histograms as their _bucket/_sum/_count series), every
// fleet metric has a panel, and promtool accepts the scrape config and the rules.
import { strict as assert } from 'node:assert';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import YAML from 'yaml';
import { REPO_ROOT } from './helpers/cli.ts';
import { promtool, promtoolAvailable } from './helpers/prom.ts';
import { createMetrics } from '../telemetry/metrics.ts';

const GRAFANA = path.join(REPO_ROOT, 'dashboard/grafana/fleet.json');
const PROM = path.join(REPO_ROOT, 'deploy/prometheus/prometheus.yml');
const ALERTS = path.join(REPO_ROOT, 'deploy/prometheus/alerts.yml');

const FUNCTIONS_AND_KEYWORDS = new Set([
  'sum',
  'avg',
  'min',
  'max',
  'count',
  'stddev',
  'stdvar',
  'topk',
  'bottomk',
  'quantile',
  'count_values',
  'group',
  'by',
  'without',
  'on',
  'ignoring',
  'group_left',
  'group_right',
  'offset',
  'bool',
  'and',
  'or',
  'unless',
  'inf',
  'nan',
]);

/**
 * Metric names in a PromQL expression: identifiers that are not functions (followed by "("), keywords, label
 * names (inside {...} or a by/without/on/ignoring list), durations or Grafana variables.
 */
export function promqlMetrics(expr: string): string[] {
  const s = expr
    .replace(/"(?:[^"\\]|\\.)*"|'(?:[^'\\]|\\.)*'/g, '""') // strings
    .replace(/\$\{?\w+\}?/g, '0') // Grafana variables ($fleet_job, ${datasource}, $__rate_interval)
    .replace(/\{[^}]*\}/g, '') // label matchers
    .replace(/\b(by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)/g, '') // label lists
    .replace(/\[[^\]]*\]/g, '') // ranges and subqueries
    .replace(/\boffset\s+\w+/g, ''); // offsets
  const names = new Set<string>();
  for (const m of s.matchAll(/[A-Za-z_:][\w:]*/g)) {
    const after = s.slice(m.index! + m[0].length).trimStart();
    const before = s[m.index! - 1];
    if (after.startsWith('(') || FUNCTIONS_AND_KEYWORDS.has(m[0].toLowerCase()) || (before && /[\d.]/.test(before)))
      continue;
    names.add(m[0]);
  }
  return [...names];
}

/** Every series name createMetrics() exposes (histograms as _bucket, _sum and _count), with prom-client's default metrics. */
async function exportedSeries(): Promise<Set<string>> {
  const m = createMetrics();
  const out = new Set<string>();
  for (const metric of await m.registry.getMetricsAsJSON()) {
    const type = String(metric.type as unknown); // prom-client's typings say an enum; at run time it is the type's name
    const suffixes =
      type === 'histogram' ? ['_bucket', '_sum', '_count'] : type === 'summary' ? ['', '_sum', '_count'] : [''];
    for (const suffix of suffixes) out.add(metric.name + suffix);
  }
  return out;
}

function grafanaExpressions(): { where: string; expr: string }[] {
  const dash = JSON.parse(fs.readFileSync(GRAFANA, 'utf8'));
  const out: { where: string; expr: string }[] = [];
  const walk = (panels: any[]) => {
    for (const p of panels ?? []) {
      for (const t of p.targets ?? []) out.push({ where: `panel "${p.title}" ${t.refId}`, expr: t.expr });
      walk(p.panels);
    }
  };
  walk(dash.panels);
  for (const v of dash.templating.list) {
    if (v.type !== 'query') continue;
    const q = typeof v.query === 'string' ? v.query : v.query.query;
    const inner = /^label_values\((.*),\s*\w+\)$/.exec(q);
    out.push({ where: `variable ${v.name}`, expr: inner ? inner[1] : q });
  }
  return out;
}

function alertExpressions(): { where: string; expr: string }[] {
  const doc = YAML.parse(fs.readFileSync(ALERTS, 'utf8'));
  return doc.groups.flatMap((g: any) =>
    g.rules.map((r: any) => ({ where: `rule ${r.alert ?? r.record}`, expr: String(r.expr) })),
  );
}

describe('Grafana dashboard and Prometheus configuration', () => {
  it('the PromQL name extraction finds metrics and nothing else', () => {
    assert.deepEqual(
      promqlMetrics(
        'histogram_quantile(0.95, sum by (le, model) (rate(fleet_x_seconds_bucket{model=~"$model", le!="1"}[$__rate_interval])))',
      ),
      ['fleet_x_seconds_bucket'],
    );
    assert.deepEqual(
      promqlMetrics('sum(rate(a_total[5m] offset 1h)) / ignoring(x) b > 1.5 * c{job="sum"} and on(le) up').sort(),
      ['a_total', 'b', 'c', 'up'],
    );
    assert.deepEqual(promqlMetrics('1e-3 + 2'), []);
    assert.deepEqual(promqlMetrics('fleet_training_loss'), ['fleet_training_loss']);
  });

  it('every metric a panel, variable or alert rule queries is exported by createMetrics()', async () => {
    const exported = await exportedSeries();
    const exprs = [...grafanaExpressions(), ...alertExpressions()];
    assert.ok(exprs.length > 25, `${exprs.length} expressions`);
    const unknown = exprs.flatMap(({ where, expr }) =>
      promqlMetrics(expr)
        .filter(n => !exported.has(n))
        .map(n => `${where}: ${n}`),
    );
    assert.deepEqual(unknown, []);
  });

  it('every fleet metric has a Grafana panel', async () => {
    const m = createMetrics({ defaultMetrics: false });
    const fleet = (await m.registry.getMetricsAsJSON()).map(x => x.name);
    const used = new Set(
      grafanaExpressions()
        .flatMap(e => promqlMetrics(e.expr))
        .map(n => n.replace(/_(bucket|sum|count)$/, '')),
    );
    assert.deepEqual(
      fleet.filter(n => !used.has(n)),
      [],
    );
  });

  it('the dashboard has cluster, training and serving rows and takes its datasource from a variable', () => {
    const dash = JSON.parse(fs.readFileSync(GRAFANA, 'utf8'));
    const rows = dash.panels.filter((p: any) => p.type === 'row').map((p: any) => p.title);
    for (const r of ['Cluster', 'Training', 'Serving']) assert.ok(rows.includes(r), r);
    const ds = dash.templating.list.find((v: any) => v.type === 'datasource');
    assert.equal(ds.query, 'prometheus');
    for (const p of dash.panels.filter((x: any) => x.type !== 'row')) {
      assert.equal(p.datasource.uid, `\${${ds.name}}`, p.title);
      for (const t of p.targets) assert.equal(t.datasource.uid, `\${${ds.name}}`, p.title);
    }
    // panels do not overlap on Grafana's 24-column grid
    const cells = new Set<string>();
    for (const p of dash.panels) {
      const g = p.gridPos;
      assert.ok(g.x >= 0 && g.x + g.w <= 24, p.title);
      for (let x = g.x; x < g.x + g.w; x++)
        for (let y = g.y; y < g.y + g.h; y++) {
          assert.ok(!cells.has(`${x},${y}`), `${p.title} overlaps at ${x},${y}`);
          cells.add(`${x},${y}`);
        }
    }
  });

  it('the alert rules cover lost workers, task retries, inference errors and step time regressions', () => {
    const names = alertExpressions().map(e => e.where);
    for (const a of ['FleetWorkerLost', 'FleetTaskRetries', 'FleetInferenceErrorRatio', 'FleetStepTimeRegression'])
      assert.ok(names.includes(`rule ${a}`), a);
  });

  it('promtool accepts prometheus.yml and alerts.yml', function () {
    assert.ok(promtoolAvailable(), 'promtool is not installed (apt-get install prometheus; .ci/run does)');
    const config = promtool(['check', 'config', PROM]);
    assert.equal(config.status, 0, config.output);
    assert.match(config.output, /1 rule files found/);
    const rules = promtool(['check', 'rules', ALERTS]);
    assert.equal(rules.status, 0, rules.output);
    assert.match(rules.output, /SUCCESS: 5 rules found/);
  });

  it('promtool rejects a rule with a PromQL error (the check can fail)', function () {
    assert.ok(promtoolAvailable(), 'promtool is not installed (apt-get install prometheus; .ci/run does)');
    const bad = path.join(fs.mkdtempSync(path.join(os.tmpdir(), 'fleet-rules-')), 'bad.yml');
    try {
      fs.writeFileSync(
        bad,
        'groups:\n  - name: x\n    rules:\n      - alert: Bad\n        expr: sum(rate(fleet_task_retries_total[5m])\n',
      );
      assert.notEqual(promtool(['check', 'rules', bad]).status, 0);
    } finally {
      fs.rmSync(path.dirname(bad), { recursive: true, force: true });
    }
  });
});
