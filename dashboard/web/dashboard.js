// The built-in dashboard: one server-sent event stream (/api/events) keeps the cluster, the jobs and the live
// curves current (no polling); finished runs are fetched once from /api/runs/<id> (ensemble weights and
// baselines), /api/runs/<id>/errors (confusion matrix, misclassified digits) and /api/runs/<id>/bags/<n> (MIL).
import { LineChart, barChart, stackedChart, digitCanvas, color } from './charts.js';

const $ = id => document.getElementById(id);
const el = (tag, attrs = {}, ...children) => {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs))
    if (k === 'class') e.className = v;
    else if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else e.setAttribute(k, v);
  for (const c of children) e.append(c instanceof Node ? c : document.createTextNode(String(c)));
  return e;
};
const pct = x => (typeof x === 'number' ? `${(100 * x).toFixed(2)}%` : '–');
const duration = s =>
  s == null
    ? '–'
    : s < 90
      ? `${Math.round(s)} s`
      : s < 5400
        ? `${Math.round(s / 60)} min`
        : `${(s / 3600).toFixed(1)} h`;

const state = {
  cluster: null,
  curves: {},
  job: null,
  picked: false,
  runs: [],
  details: null,
  loadedRun: null,
  ready: { run: false, errors: false, bag: false },
};
const charts = {
  loss: new LineChart($('loss-chart'), { title: 'Training loss per member', xLabel: 'epoch', yLabel: 'loss' }),
  acc: new LineChart($('acc-chart'), { title: 'Accuracy per member (per epoch)', xLabel: 'epoch', yLabel: 'accuracy' }),
};
window.fleet = { state, charts };

// ---- the event stream

function connect() {
  const es = new EventSource('/api/events');
  const conn = $('conn');
  es.addEventListener('open', () => {
    conn.textContent = 'live';
    conn.className = 'conn live';
  });
  es.addEventListener('error', () => {
    conn.textContent = 'reconnecting…';
    conn.className = 'conn down';
  });
  es.addEventListener('hello', ev => {
    const d = JSON.parse(ev.data);
    state.curves = d.curves;
    onCluster(d.cluster);
    drawCurves();
  });
  es.addEventListener('cluster', ev => onCluster(JSON.parse(ev.data).cluster));
  es.addEventListener('progress', ev => {
    const p = JSON.parse(ev.data);
    const job = (state.curves[p.job] ??= {});
    const c = (job[p.member] ??= { batches: [], epochs: [] });
    if (p.batch) c.batches.push(p.batch);
    if (p.epoch) {
      c.epochs = c.epochs.filter(e => e.epoch !== p.epoch.epoch);
      c.epochs.push(p.epoch);
    }
    if (p.job === state.job) scheduleCurves();
  });
  es.addEventListener('job', ev => {
    const { job } = JSON.parse(ev.data);
    safe(
      loadRuns().then(() => {
        if (job === state.job) return loadRun(job);
      }),
    );
  });
}

let curvesQueued = false;
function scheduleCurves() {
  if (curvesQueued) return;
  curvesQueued = true;
  requestAnimationFrame(() => {
    curvesQueued = false;
    drawCurves();
  });
}

function onCluster(cluster) {
  state.cluster = cluster;
  renderWorkers(cluster);
  renderJobs(cluster);
  if (!state.picked) {
    // follow the newest running job, else the newest one
    const jobs = [...cluster.jobs].sort((a, b) => b.submittedAt - a.submittedAt);
    const next = (jobs.find(j => j.state === 'running') ?? jobs[0])?.id ?? state.job;
    if (next && next !== state.job) selectJob(next, false);
  }
  renderJobSelect();
  if (state.job && state.loadedRun !== state.job && cluster.jobs.find(j => j.id === state.job)?.state === 'done')
    safe(loadRun(state.job));
}

// ---- cluster and jobs

function renderWorkers(cluster) {
  const body = $('workers');
  body.replaceChildren(
    ...(cluster.workers.length
      ? cluster.workers.map(w =>
          el(
            'tr',
            {},
            el('td', {}, w.id),
            el('td', {}, w.device),
            el('td', {}, w.threads),
            el('td', {}, el('span', { class: `state ${w.state}` }, w.state)),
            el('td', {}, `${w.heartbeatAgeSeconds.toFixed(1)} s ago`),
            el('td', {}, w.samplesProcessed.toLocaleString()),
            el('td', {}, w.running.join(', ') || '–'),
          ),
        )
      : [el('tr', {}, el('td', { colspan: 7, class: 'empty' }, 'no workers yet'))]),
  );
  const t = cluster.tasks;
  $('task-counts').textContent =
    `${cluster.workers.filter(w => w.state !== 'lost').length} connected · tasks: ${t.queued} queued, ${t.leased} leased, ${t.done} done`;
}

function renderJobs(cluster) {
  const jobs = [...cluster.jobs].sort((a, b) => b.submittedAt - a.submittedAt);
  $('job-list').replaceChildren(
    ...(jobs.length
      ? jobs.map(j => {
          const meta =
            j.state === 'running'
              ? `${j.done}/${j.tasks} tasks · ${Math.round(100 * j.progress)}% · ETA ${duration(j.etaSeconds)}`
              : j.state === 'done'
                ? `${j.tasks} tasks · test accuracy ${pct(j.summary?.test_accuracy)} (best member ${pct(j.summary?.best_member_test_accuracy)}, average ${pct(j.summary?.average_test_accuracy)}) · ${duration((j.finishedAt - j.submittedAt) / 1000)}`
                : j.state === 'cancelled'
                  ? `cancelled after ${j.done}/${j.tasks} tasks · ${duration((j.finishedAt - j.submittedAt) / 1000)}`
                  : `failed: ${j.error}`;
          return el(
            'div',
            { class: `job ${j.state}` },
            el(
              'div',
              { class: 'row' },
              el('span', { class: 'id', onclick: () => selectJob(j.id, true) }, j.id),
              el('span', { class: `state ${j.state}` }, j.state),
              el('span', {}, `${j.kind} · ${j.members} × ${j.model} · ${j.epochs} epoch${j.epochs === 1 ? '' : 's'}`),
              el('span', { class: 'meta' }, meta),
            ),
            el(
              'div',
              { class: 'bar', role: 'progressbar', 'aria-valuenow': Math.round(100 * j.progress) },
              el('div', { style: `width:${(100 * j.progress).toFixed(1)}%` }),
            ),
          );
        })
      : [el('p', { class: 'empty' }, 'no jobs yet')]),
  );
}

function renderJobSelect() {
  const sel = $('job-select');
  const ids = [...new Set([...(state.cluster?.jobs ?? []).map(j => j.id), ...state.runs.map(r => r.id)])];
  if (sel.dataset.ids !== ids.join(',')) {
    sel.replaceChildren(...ids.map(id => el('option', { value: id }, id)));
    sel.dataset.ids = ids.join(',');
  }
  if (state.job) sel.value = state.job;
}
$('job-select').addEventListener('change', e => selectJob(e.target.value, true));

function selectJob(id, picked) {
  state.job = id;
  state.picked ||= picked;
  state.details = null;
  state.loadedRun = null;
  $('ensemble').hidden = true;
  $('errors').hidden = true;
  renderJobSelect();
  drawCurves();
  if (state.runs.some(r => r.id === id)) safe(loadRun(id));
}

// ---- curves

function drawCurves() {
  const live = state.curves[state.job] ?? {};
  const hist = state.details?.histories ?? {};
  const members = [...new Set([...Object.keys(live), ...Object.keys(hist)])].sort();
  const loss = [],
    acc = [];
  members.forEach((m, i) => {
    const c = live[m]?.batches.length || live[m]?.epochs.length ? live[m] : { batches: [], epochs: hist[m] ?? [] };
    const epochs = [...c.epochs].sort((a, b) => a.epoch - b.epoch);
    const trainLoss = c.batches.length ? c.batches.map(p => [p.x, p.loss]) : epochs.map(e => [e.epoch, e.train_loss]);
    loss.push({ label: `${m} train`, color: color(i), points: trainLoss, showPoints: trainLoss.length < 30 });
    const heldOut = epochs.some(e => typeof e.test_loss === 'number') ? 'test' : 'val';
    const heldOutLoss = epochs
      .filter(e => typeof e[`${heldOut}_loss`] === 'number')
      .map(e => [e.epoch, e[`${heldOut}_loss`]]);
    if (heldOutLoss.length)
      loss.push({ label: `${m} ${heldOut}`, color: color(i), dash: [5, 4], points: heldOutLoss, showPoints: true });
    const a = epochs
      .filter(e => typeof e[`${heldOut}_accuracy`] === 'number')
      .map(e => [e.epoch, e[`${heldOut}_accuracy`]]);
    if (a.length) acc.push({ label: `${m} ${heldOut}`, color: color(i), width: 2, points: a, showPoints: true });
    const t = epochs.filter(e => typeof e.train_accuracy === 'number').map(e => [e.epoch, e.train_accuracy]);
    if (t.length) acc.push({ label: `${m} train`, color: color(i), dash: [5, 4], points: t, showPoints: true });
  });
  charts.loss.update(loss);
  charts.acc.update(acc);
}

// ---- finished runs: ensemble weights and baselines, test errors

/** Fetch failures show in the console and in window.fleet.errors; the page keeps running. */
function safe(promise) {
  promise.catch(e => {
    (window.fleet.errors ??= []).push(e.message);
    console.error(e);
  });
}

async function getJson(url) {
  const r = await fetch(url);
  const body = await r.json();
  if (!r.ok) throw new Error(body.error ?? `${url}: HTTP ${r.status}`);
  return body;
}

async function loadRuns() {
  state.runs = await getJson('/api/runs');
  renderJobSelect();
  renderMilRuns();
}

async function loadRun(id) {
  state.loadedRun = id;
  const d = await getJson(`/api/runs/${encodeURIComponent(id)}`);
  if (state.job !== id) return;
  state.details = d;
  drawCurves();
  if (d.ensemble) drawEnsemble(d.ensemble);
  state.ready.run = true;
  if (d.hasErrors) drawErrors(await getJson(`/api/runs/${encodeURIComponent(id)}/errors`));
}

function drawEnsemble(e) {
  $('ensemble').hidden = false;
  $('ensemble-kind').textContent = `${e.kind}, ${e.members.length} members`;
  const c = e.comparison;
  const bars = [
    { label: 'ensemble', value: c.ensemble?.accuracy, color: '#2f6fde' },
    { label: `best member (${c.best_member?.name})`, value: c.best_member?.test_accuracy, color: '#1f9d55' },
    { label: 'average', value: c.average?.test_accuracy, color: '#e07b00' },
    ...e.members.map(m => ({ label: m.name, value: m.test_accuracy, color: '#aab3c5' })),
  ];
  barChart($('compare-chart'), {
    title: 'Test accuracy: ensemble vs best member vs average',
    bars,
    yLabel: 'test accuracy',
  });
  const names = e.members.map(m => m.name);
  const steps = e.selection?.steps?.length
    ? e.selection.steps.map(s => ({ label: String(s.step), parts: s.weights }))
    : [{ label: 'final', parts: e.weights }];
  stackedChart($('weights-chart'), {
    title: e.selection ? `Member weights per selection step (validation ${e.selection.objective})` : 'Member weights',
    steps,
    names,
    xLabel: e.selection ? 'selection step' : '',
  });
}

function drawErrors(r) {
  $('errors').hidden = false;
  const total = r.confusion.flat().reduce((a, b) => a + b, 0);
  $('error-count').textContent = `${r.errors} of ${total} test images misclassified`;
  const max = Math.max(1, ...r.confusion.flatMap((row, i) => row.filter((_, j) => j !== i)));
  const rowMax = r.confusion.map(row => Math.max(1, ...row));
  const head = el('tr', {}, el('th', {}, 'true\\pred'), ...r.confusion.map((_, j) => el('th', {}, j)));
  const rows = r.confusion.map((row, i) =>
    el(
      'tr',
      {},
      el('th', {}, i),
      ...row.map((n, j) => {
        const a = i === j ? n / rowMax[i] : n / max;
        const bg =
          n === 0 ? '#fafbfc' : i === j ? `rgba(31,157,85,${0.15 + 0.6 * a})` : `rgba(214,69,69,${0.15 + 0.75 * a})`;
        return el('td', { style: `background:${bg}`, title: `true ${i}, predicted ${j}: ${n}` }, n || '');
      }),
    ),
  );
  $('confusion').replaceChildren(el('caption', {}, 'rows: true class · columns: predicted class'), head, ...rows);
  $('digits').replaceChildren(
    ...r.misclassified
      .slice(0, 40)
      .map(m =>
        el(
          'figure',
          { 'data-index': m.index },
          digitCanvas(m.pixels),
          el(
            'figcaption',
            {},
            `${m.label} → `,
            el('span', { class: 'wrong' }, m.predicted),
            ` ${m.confidence.toFixed(2)}`,
          ),
        ),
      ),
  );
  state.ready.errors = true;
}

// ---- MIL: a test bag's instances with their attention weights

function renderMilRuns() {
  const mil = state.runs.filter(r => r.kind === 'mil');
  $('mil').hidden = mil.length === 0;
  const sel = $('mil-run');
  const ids = mil.map(r => r.id).join(',');
  if (sel.dataset.ids === ids) return;
  sel.dataset.ids = ids;
  sel.replaceChildren(...mil.map(r => el('option', { value: r.id }, `${r.id} (AUC ${r.test_auc?.toFixed(3) ?? '–'})`)));
  if (mil.length) safe(loadMilRun(mil[0].id));
}
$('mil-run').addEventListener('change', e => safe(loadMilRun(e.target.value)));
$('mil-bag').addEventListener('change', e => safe(loadBag($('mil-run').value, Number(e.target.value))));

async function loadMilRun(id) {
  const d = await getJson(`/api/runs/${encodeURIComponent(id)}`);
  const bags = d.mil.bags;
  $('mil-bag').replaceChildren(
    ...bags.map((b, i) =>
      el(
        'option',
        { value: i },
        `#${i} ${b.label ? 'positive' : 'negative'}, p = ${b.probability.toFixed(2)}, ${b.size} instances`,
      ),
    ),
  );
  // start with the positive bag the model is surest of: its attention should single out the target digits
  const first = bags.reduce(
    (best, b, i) => (b.label === 1 && (best < 0 || b.probability > bags[best].probability) ? i : best),
    -1,
  );
  const index = Math.max(first, 0);
  $('mil-bag').value = String(index);
  $('mil-info').textContent =
    `${d.mil.pooling} pooling · target digit ${d.mil.target} · test AUC ${d.mil.test_auc?.toFixed(3)}`;
  await loadBag(id, index);
}

async function loadBag(id, index) {
  const b = await getJson(`/api/runs/${encodeURIComponent(id)}/bags/${index}`);
  const maxAtt = Math.max(1e-9, ...b.instances.map(x => x.attention ?? 0));
  $('bag').replaceChildren(
    el(
      'p',
      { style: 'width:100%;margin:0' },
      `bag #${index}: label ${b.label ? 'positive' : 'negative'} (contains a ${b.target}: ${b.label ? 'yes' : 'no'}), predicted probability ${b.probability.toFixed(3)}`,
    ),
    ...b.instances.map(x =>
      el(
        'figure',
        { class: x.digit === b.target ? 'target' : '' },
        digitCanvas(x.pixels),
        el('figcaption', {}, `digit ${x.digit} · a = ${x.attention === null ? '–' : x.attention.toFixed(3)}`),
        el(
          'div',
          { class: 'att', title: 'attention weight' },
          el('div', { style: `width:${((100 * (x.attention ?? 0)) / maxAtt).toFixed(1)}%` }),
        ),
      ),
    ),
  );
  state.ready.bag = true;
}

connect();
safe(loadRuns());
