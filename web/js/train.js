// The "Train a model" panel: the job form (and "Compare"), live runs fed by
// each job's SSE stream (/v1/jobs/ID/events), the loss/accuracy charts, the
// per-epoch table and the job list with cancel.
import { api, describeError, isAuthError, getToken, setToken } from './api.js';
import { MetricChart } from './charts.js';
import { $, el, setText, fmtInt, fmtPct, fmtNum, fmtDuration, fmtAgo, fmtCompact, datasetName, rafThrottle, on, emit } from './util.js';
import { refreshModels, checkNow } from './status.js';

const RUN_COLORS = ['#2563eb', '#ea580c', '#16a34a', '#9333ea'];
const ARCH_COLORS = { antirectifier: '#2563eb', relu: '#ea580c' };
const ACTIVE = new Set(['queued', 'running']);
const LR_DEFAULTS = { rmsprop: 0.001, adam: 0.001, sgd: 0.01 };

const runs = new Map();       // job id -> run (see makeRun)
let watched = [];             // job ids shown in the charts, in order
let charts = null;
let jobsTimer = 0;
let jobRows = new Map();      // job id -> row elements
let datasets = [];

/** Shows `text` in a message area; kind: 'error' | 'ok' | 'warn' | 'info'. */
function say(node, text, kind = 'error') {
  node.classList.remove('error', 'ok', 'warn', 'info');
  if (text) node.classList.add(kind);
  setText(node, text);
}

function authHint(err, node) {
  say(node, describeError(err));
  if (isAuthError(err)) $('#token').focus();
}

// ---------------------------------------------------------------- the form

function readConfig(form) {
  const v = (name) => form.elements[name].value.trim();
  const cfg = {
    arch: form.elements.arch.value,
    dataset: v('dataset'),
    epochs: parseInt(v('epochs'), 10),
    batch_size: parseInt(v('batch_size'), 10),
    optimizer: { name: v('optimizer'), learning_rate: parseFloat(v('learning_rate')) },
    seed: parseInt(v('seed'), 10),
    activate: v('activate'),
  };
  if (v('train_limit')) cfg.train_limit = parseInt(v('train_limit'), 10);
  return cfg;
}

async function loadDatasets() {
  const select = $('#dataset');
  try {
    const data = await api('v1/datasets');
    datasets = (data && data.datasets) || [];
  } catch {
    datasets = [{ name: 'mnist', train: 60000, test: 10000 }];
  }
  const current = select.value || 'mnist';
  select.replaceChildren(...datasets.map((d) => el('option', { value: d.name },
    `${datasetName(d.name)} (${fmtInt(d.train)} train / ${fmtInt(d.test)} test)`)));
  select.value = datasets.some((d) => d.name === current) ? current : (datasets[0] || {}).name || '';
  updateLimit();
}

function updateLimit() {
  const d = datasets.find((x) => x.name === $('#dataset').value);
  const input = $('#train_limit');
  if (d && d.train) {
    input.max = String(d.train);
    input.placeholder = `all ${fmtInt(d.train)}`;
  }
}

async function startJobs(form, archs) {
  const msg = $('#form-msg');
  if (!form.reportValidity()) return;
  const base = readConfig(form);
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  say(msg, archs.length > 1 ? 'Starting two jobs…' : 'Starting a job…', 'info');
  const started = [];
  try {
    for (const arch of archs) {
      started.push(await api('v1/jobs', { method: 'POST', json: { ...base, arch: arch || base.arch } }));
    }
    say(msg, started.length > 1
      ? `Started jobs ${started.map((j) => j.id).join(' and ')}: ${started.map((j) => `${j.config.arch} (${fmtInt(j.parameters)} parameters)`).join(' vs ')}.`
      : `Started job ${started[0].id}.`, 'ok');
  } catch (err) {
    authHint(err, msg);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  if (started.length) {
    watch(started);
    refreshJobs();
  }
}

// ------------------------------------------------------------------- runs

function pickColor(job) {
  const used = new Set([...runs.values()].map((r) => r.color));
  const preferred = ARCH_COLORS[job.config && job.config.arch];
  if (preferred && !used.has(preferred)) return preferred;
  return RUN_COLORS.find((c) => !used.has(c)) || RUN_COLORS[0];
}

function makeRun(job) {
  const color = pickColor(job);
  const run = {
    id: job.id,
    job,
    color,
    metrics: new Map(),
    progress: null,
    es: null,
    pollTimer: 0,
    card: null,
  };
  for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
  if (job.progress) run.progress = job.progress;
  return run;
}

function runName(run) {
  const c = run.job.config || {};
  return `#${run.id} ${c.arch || ''}`.trim();
}

function buildCard(run) {
  const cancel = el('button', { type: 'button', class: 'btn small danger', onclick: () => cancelJob(run.id, cancel) }, 'Cancel');
  const progress = el('progress', { max: 1, value: 0, 'aria-label': `Job ${run.id}: progress of the current epoch` });
  const card = el('article', { class: 'run', dataset: { job: String(run.id) }, 'aria-labelledby': `run-${run.id}-title` },
    el('header', {},
      el('span', { class: 'swatch', 'aria-hidden': 'true' }),
      el('h4', { id: `run-${run.id}-title` }, ''),
      el('span', { class: 'badge' }, '')),
    el('p', { class: 'meta' }),
    progress,
    el('p', { class: 'progress-text', 'aria-live': 'off' }),
    el('p', { class: 'outcome', role: 'status' }),
    el('div', { class: 'run-actions' }, cancel));
  card.querySelector('.swatch').style.background = run.color;
  run.card = card;
  run.els = {
    title: card.querySelector('h4'), badge: card.querySelector('.badge'), meta: card.querySelector('.meta'),
    progress, text: card.querySelector('.progress-text'), outcome: card.querySelector('.outcome'), cancel,
  };
  return card;
}

function renderRun(run) {
  const { job, els } = run;
  const c = job.config || {};
  const state = job.state || 'queued';
  run.card.dataset.state = state;
  setText(els.title, `Job ${run.id} · ${c.arch || '?'}`);
  els.badge.className = `badge ${state}`;
  setText(els.badge, state);
  const meta = [
    Number.isFinite(job.parameters) ? `${fmtInt(job.parameters)} parameters` : null,
    datasetName(c.dataset || 'mnist'),
    c.train_limit ? `${fmtInt(c.train_limit)} images` : null,
    `${c.epochs} epoch${c.epochs === 1 ? '' : 's'}`,
    `batch ${c.batch_size}`,
    c.optimizer ? `${c.optimizer.name} lr ${c.optimizer.learning_rate}` : null,
    `seed ${c.seed}`,
  ].filter(Boolean);
  setText(els.meta, meta.join(' · '));

  const p = run.progress;
  const running = state === 'running';
  els.progress.hidden = !running;
  els.text.hidden = !(running || state === 'queued');
  if (state === 'queued') {
    setText(els.text, 'Queued: waiting for a free trainer…');
  } else if (running && p) {
    const frac = p.batches ? p.batch / p.batches : 0;
    els.progress.value = frac;
    els.progress.setAttribute('aria-valuetext', `epoch ${p.epoch} of ${p.epochs}: ${fmtPct(frac, 0)}`);
    const bits = [`Epoch ${p.epoch} of ${p.epochs}`, `batch ${fmtInt(p.batch)}/${fmtInt(p.batches)}`];
    if (Number.isFinite(p.samples_per_second)) bits.push(`${fmtInt(p.samples_per_second)} samples/s`);
    if (Number.isFinite(p.eta_seconds)) bits.push(`about ${fmtDuration(p.eta_seconds)} left`);
    if (Number.isFinite(p.loss)) bits.push(`loss ${fmtNum(p.loss, 3)}`);
    setText(els.text, bits.join(' · '));
  } else if (running) {
    els.progress.removeAttribute('value');   // indeterminate until the first batch
    setText(els.text, 'Starting…');
  }

  const last = [...run.metrics.values()].pop();
  let outcome = '';
  if (state === 'succeeded') {
    outcome = `Done: validation accuracy ${last ? fmtPct(last.val_accuracy, 2) : '–'}`
      + `${job.model_id ? ` · saved as model #${job.model_id}` : ''}`
      + `${last ? ` · ${fmtDuration(sumSeconds(run))} training` : ''}.`;
  } else if (state === 'failed') {
    outcome = `Failed: ${job.error || 'unknown error'}`;
  } else if (state === 'cancelled') {
    outcome = `Cancelled after ${run.metrics.size} of ${c.epochs} epochs.`;
  } else if (last) {
    outcome = `Epoch ${last.epoch}: validation accuracy ${fmtPct(last.val_accuracy, 2)}, val_loss ${fmtNum(last.val_loss, 4)}.`;
  }
  setText(els.outcome, outcome);
  els.outcome.className = `outcome ${state}`;
  els.cancel.hidden = !ACTIVE.has(state);
}

const sumSeconds = (run) => [...run.metrics.values()].reduce((s, m) => s + (m.seconds || 0), 0);

const renderSoon = rafThrottle(() => {
  for (const id of watched) {
    const r = runs.get(id);
    if (r) renderRun(r);
  }
});

const chartsSoon = rafThrottle(() => {
  const list = watched.map((id) => runs.get(id)).filter(Boolean);
  const chartRuns = list.map((r) => ({
    id: r.id,
    name: runName(r),
    color: r.color,
    epochs: (r.job.config || {}).epochs,
    metrics: r.metrics,
  }));
  $('#charts-empty').hidden = chartRuns.length > 0;
  charts.loss.setRuns(chartRuns);
  charts.acc.setRuns(chartRuns);
  renderLegend(list);
  renderTable(list);
});

function renderLegend(list) {
  const legend = $('#run-legend');
  legend.replaceChildren(...list.map((r) => {
    const sw = el('span', { class: 'swatch', 'aria-hidden': 'true' });
    sw.style.background = r.color;
    return el('li', {}, sw, `${runName(r)}`,
      el('span', { class: 'muted' }, Number.isFinite(r.job.parameters) ? ` · ${fmtCompact(r.job.parameters)} parameters (${fmtInt(r.job.parameters)})` : ''));
  }));
  legend.hidden = list.length === 0;
}

function renderTable(list) {
  const body = $('#metrics-table tbody');
  const rows = [];
  for (const r of list) {
    for (const m of [...r.metrics.values()].sort((a, b) => a.epoch - b.epoch)) {
      rows.push(el('tr', { dataset: { job: String(r.id), epoch: String(m.epoch) } },
        el('th', { scope: 'row' }, runName(r)),
        el('td', {}, String(m.epoch)),
        el('td', {}, fmtNum(m.loss)),
        el('td', {}, fmtPct(m.accuracy, 2)),
        el('td', {}, fmtNum(m.val_loss)),
        el('td', {}, fmtPct(m.val_accuracy, 2)),
        el('td', {}, Number.isFinite(m.seconds) ? `${m.seconds.toFixed(2)} s` : '–'),
        el('td', {}, fmtInt(m.samples_per_second))));
    }
  }
  body.replaceChildren(...rows);
  setText($('#metrics-count'), rows.length ? `(${rows.length} epoch${rows.length === 1 ? '' : 's'})` : '');
}

function closeRun(run) {
  if (run.es) run.es.close();
  run.es = null;
  clearTimeout(run.pollTimer);
}

/** Shows these jobs (job objects) in the run cards and charts. */
export function watch(jobs) {
  for (const r of runs.values()) closeRun(r);
  runs.clear();
  watched = jobs.map((j) => j.id);
  const box = $('#runs');
  box.replaceChildren();
  jobs.forEach((job) => {
    const run = makeRun(job);
    runs.set(job.id, run);
    box.append(buildCard(run));
    renderRun(run);
    connect(run);
  });
  chartsSoon();
  highlightWatchedRows();
}

function connect(run) {
  if (!ACTIVE.has(run.job.state) && run.job.state) {
    // Finished jobs: the JSON already holds everything; no stream needed.
    return;
  }
  const es = new EventSource(`v1/jobs/${run.id}/events`);
  run.es = es;
  const parse = (e) => {
    try {
      return JSON.parse(e.data);
    } catch {
      return null;
    }
  };
  es.addEventListener('state', (e) => {
    const d = parse(e);
    if (!d || !d.state) return;
    const was = run.job.state;
    run.job.state = d.state;
    if (d.state !== 'running') run.progress = null;
    renderSoon();
    if (was !== d.state) refreshJobsSoon();
  });
  es.addEventListener('progress', (e) => {
    const d = parse(e);
    if (!d) return;
    run.progress = d;
    if (run.job.state === 'queued' || !run.job.state) run.job.state = 'running';
    renderSoon();
  });
  es.addEventListener('epoch', (e) => {
    const d = parse(e);
    if (!d || !Number.isFinite(d.epoch)) return;
    run.metrics.set(d.epoch, d);     // replayed history after a reconnect just overwrites
    renderSoon();
    chartsSoon();
  });
  es.addEventListener('end', (e) => {
    const d = parse(e) || {};
    es.close();
    run.es = null;
    if (d.state) run.job.state = d.state;
    if ('model_id' in d) run.job.model_id = d.model_id;
    run.progress = null;
    renderSoon();
    chartsSoon();
    // Pick up the final job JSON (error text, timings) and the new model.
    api(`v1/jobs/${run.id}`).then((job) => {
      if (runs.get(run.id) !== run) return;
      run.job = job;
      for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
      renderSoon();
      chartsSoon();
    }).catch(() => {});
    refreshJobs();
    refreshModels();
    checkNow();
    emit('job-ended', d);
  });
  es.addEventListener('error', () => {
    // The browser reconnects by itself (history is replayed); if it gave up,
    // fall back to polling the job until it ends.
    if (es.readyState === EventSource.CLOSED && run.es === es) {
      run.es = null;
      poll(run);
    }
  });
}

async function poll(run) {
  if (runs.get(run.id) !== run) return;
  try {
    const job = await api(`v1/jobs/${run.id}`);
    run.job = job;
    run.progress = job.progress || null;
    for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
    renderSoon();
    chartsSoon();
    if (!ACTIVE.has(job.state)) {
      refreshJobs();
      refreshModels();
      return;
    }
  } catch {
    /* daemon away: keep trying */
  }
  run.pollTimer = setTimeout(() => poll(run), 1000);
}

async function cancelJob(id, button) {
  const msg = $('#jobs-msg');
  if (button) button.disabled = true;
  try {
    const job = await api(`v1/jobs/${id}/cancel`, { method: 'POST' });
    say(msg, `Job ${id} is ${job && job.state ? job.state : 'being cancelled'}.`, 'ok');
    const run = runs.get(id);
    if (run && job) {
      run.job = { ...run.job, ...job };
      renderSoon();
      if (!ACTIVE.has(job.state) && !run.es) chartsSoon();
    }
  } catch (err) {
    authHint(err, msg);
  } finally {
    if (button) button.disabled = false;
  }
  refreshJobs();
}

// --------------------------------------------------------------- job list

function highlightWatchedRows() {
  for (const [id, row] of jobRows) row.tr.classList.toggle('watched', watched.includes(id));
}

function jobRow(job) {
  let row = jobRows.get(job.id);
  if (row) return row;
  const show = el('button', { type: 'button', class: 'btn small', onclick: () => watchById(job.id) }, 'Chart');
  show.setAttribute('aria-label', `Show job ${job.id} in the charts`);
  const cancel = el('button', { type: 'button', class: 'btn small danger', onclick: () => cancelJob(job.id, cancel) }, 'Cancel');
  cancel.setAttribute('aria-label', `Cancel job ${job.id}`);
  const cells = {
    id: el('th', { scope: 'row' }, `#${job.id}`),
    arch: el('td'),
    data: el('td', { class: 'opt' }),
    epochs: el('td', { class: 'num opt' }),
    state: el('td', {}, el('span', { class: 'badge' })),
    acc: el('td', { class: 'num', dataset: { label: 'val. acc.' } }),
    created: el('td', { class: 'opt' }),
    actions: el('td', { class: 'actions' }, show, cancel),
  };
  const tr = el('tr', { dataset: { job: String(job.id) } }, ...Object.values(cells));
  row = { tr, cells, show, cancel };
  jobRows.set(job.id, row);
  return row;
}

const knownStates = new Map();   // job id -> state at the last refresh

function renderJobs(jobs) {
  const body = $('#jobs-table tbody');
  const seen = new Set();
  // A job that finished since the last look (started anywhere) may have made a model.
  if (jobs.some((j) => knownStates.has(j.id) && knownStates.get(j.id) !== j.state && j.state === 'succeeded')) {
    refreshModels();
    checkNow();
  }
  knownStates.clear();
  for (const j of jobs) knownStates.set(j.id, j.state);
  jobs.forEach((job, i) => {
    const row = jobRow(job);
    seen.add(job.id);
    const c = job.config || {};
    const last = (job.metrics || []).slice(-1)[0];
    row.tr.dataset.state = job.state;
    setText(row.cells.arch, c.arch || '?');
    setText(row.cells.data, `${datasetName(c.dataset || 'mnist')}${c.train_limit ? ` · ${fmtInt(c.train_limit)}` : ''}`);
    const done = (job.metrics || []).length;
    setText(row.cells.epochs, job.state === 'running' && job.progress ? `${job.progress.epoch}/${c.epochs}` : ACTIVE.has(job.state) || job.state === 'succeeded' ? String(c.epochs) : `${done}/${c.epochs}`);
    const badge = row.cells.state.firstChild;
    badge.className = `badge ${job.state}`;
    setText(badge, job.state);
    if (job.state === 'failed' && job.error) badge.title = job.error;
    setText(row.cells.acc, last ? fmtPct(last.val_accuracy, 2) : '–');
    setText(row.cells.created, fmtAgo(job.created_at));
    row.cells.created.title = job.created_at || '';
    row.cancel.hidden = !ACTIVE.has(job.state);
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
    // Keep watched runs in step with the list when their stream is not open.
    const run = runs.get(job.id);
    if (run && !run.es && run.job.state !== job.state) {
      run.job = job;
      renderSoon();
    }
  });
  for (const [id, row] of jobRows) {
    if (!seen.has(id)) {
      row.tr.remove();
      jobRows.delete(id);
    }
  }
  $('#jobs-empty').hidden = jobs.length > 0;
  highlightWatchedRows();
  return jobs;
}

async function watchById(id) {
  try {
    const job = await api(`v1/jobs/${id}`);
    watch([job]);
    $('#charts').scrollIntoView({ behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth', block: 'nearest' });
  } catch (err) {
    say($('#jobs-msg'), describeError(err));
  }
}

let lastJobs = [];
export async function refreshJobs() {
  clearTimeout(jobsTimer);
  let next = 10000;
  try {
    const data = await api('v1/jobs?limit=20');
    lastJobs = renderJobs((data && data.jobs) || []);
    if (lastJobs.some((j) => ACTIVE.has(j.state))) next = 2000;
  } catch {
    next = 5000;
  }
  jobsTimer = setTimeout(refreshJobs, document.hidden ? Math.max(next, 15000) : next);
  return lastJobs;
}
const refreshJobsSoon = rafThrottle(() => refreshJobs());

// ------------------------------------------------------------------- init

export async function initTrain() {
  charts = {
    loss: new MetricChart($('#chart-loss'), { keys: ['loss', 'val_loss'], title: 'Loss per epoch', summary: $('#chart-loss-summary') }),
    acc: new MetricChart($('#chart-acc'), { keys: ['accuracy', 'val_accuracy'], title: 'Accuracy per epoch', percent: true, summary: $('#chart-acc-summary') }),
  };

  const form = $('#train-form');
  const token = $('#token');
  token.value = getToken();
  token.addEventListener('input', () => setToken(token.value.trim()));
  $('#token-clear').addEventListener('click', () => {
    token.value = '';
    setToken('');
    token.focus();
  });

  const optimizer = $('#optimizer');
  let lastOptimizer = optimizer.value;
  optimizer.addEventListener('change', () => {
    const lr = $('#learning_rate');
    if (parseFloat(lr.value) === LR_DEFAULTS[lastOptimizer]) lr.value = String(LR_DEFAULTS[optimizer.value]);
    lastOptimizer = optimizer.value;
  });
  $('#dataset').addEventListener('change', updateLimit);

  form.addEventListener('submit', (e) => {
    e.preventDefault();
    startJobs(form, [null]);
  });
  $('#compare').addEventListener('click', () => startJobs(form, ['antirectifier', 'relu']));

  on('ready', () => loadDatasets());
  loadDatasets();

  // Show what is going on right away: a running job (e.g. the bootstrap
  // training), else the newest job.
  const jobs = await refreshJobs();
  if (!watched.length && jobs.length) {
    const running = jobs.filter((j) => ACTIVE.has(j.state));
    watch(running.length ? running.slice(0, 2).reverse() : [jobs[0]]);
  } else {
    chartsSoon();
  }
}
