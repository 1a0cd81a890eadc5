// The watched runs: a card per job fed by its SSE stream (GET
// /v1/jobs/ID/events: state, progress, epoch, end), the loss/accuracy charts,
// their legend and the per-epoch table. Which jobs to watch arrives on the bus
// ('watch-jobs'); what changes leaves on it ('job-ended', refresh requests).
import { getJob, jobEvents } from './api.js';
import { emit, on } from './bus.js';
import { MetricChart } from './charts.js';
import { $, el, setText, fmtInt, fmtPct, fmtNum, fmtDuration, fmtCompact, datasetName, rafThrottle } from './util.js';

const RUN_COLORS = ['#2563eb', '#ea580c', '#16a34a', '#9333ea'];
const ARCH_COLORS = { antirectifier: '#2563eb', relu: '#ea580c' };
const ACTIVE = new Set(['queued', 'running']);

const runs = new Map();       // job id -> run (see makeRun)
let watched = [];             // job ids shown in the charts, in order
let charts = null;

function pickColor(job) {
  const used = new Set([...runs.values()].map((r) => r.color));
  const preferred = ARCH_COLORS[job.config && job.config.arch];
  if (preferred && !used.has(preferred)) return preferred;
  return RUN_COLORS.find((c) => !used.has(c)) || RUN_COLORS[0];
}

function makeRun(job) {
  const run = { id: job.id, job, color: pickColor(job), metrics: new Map(), progress: null, es: null, pollTimer: 0, card: null };
  for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
  if (job.progress) run.progress = job.progress;
  return run;
}

const runName = (run) => `#${run.id} ${(run.job.config || {}).arch || ''}`.trim();
const sumSeconds = (run) => [...run.metrics.values()].reduce((s, m) => s + (m.seconds || 0), 0);

// -------------------------------------------------------------- the cards

function buildCard(run) {
  const cancel = el('button', {
    type: 'button', class: 'btn small danger',
    onclick: () => {
      cancel.disabled = true;
      emit('cancel-job', { id: run.id });
    },
  }, 'Cancel');
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

function describeConfig(job) {
  const c = job.config || {};
  return [
    Number.isFinite(job.parameters) ? `${fmtInt(job.parameters)} parameters` : null,
    datasetName(c.dataset || 'mnist'),
    c.train_limit ? `${fmtInt(c.train_limit)} images` : null,
    `${c.epochs} epoch${c.epochs === 1 ? '' : 's'}`,
    `batch ${c.batch_size}`,
    c.optimizer ? `${c.optimizer.name} lr ${c.optimizer.learning_rate}` : null,
    `seed ${c.seed}`,
  ].filter(Boolean).join(' · ');
}

function renderProgress(run, state) {
  const { els } = run;
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
}

function outcomeText(run, state) {
  const { job } = run;
  const last = [...run.metrics.values()].pop();
  if (state === 'succeeded') {
    return `Done: validation accuracy ${last ? fmtPct(last.val_accuracy, 2) : '–'}`
      + `${job.model_id ? ` · saved as model #${job.model_id}` : ''}`
      + `${last ? ` · ${fmtDuration(sumSeconds(run))} training` : ''}.`;
  }
  if (state === 'failed') return `Failed: ${job.error || 'unknown error'}`;
  if (state === 'cancelled') return `Cancelled after ${run.metrics.size} of ${(job.config || {}).epochs} epochs.`;
  if (last) return `Epoch ${last.epoch}: validation accuracy ${fmtPct(last.val_accuracy, 2)}, val_loss ${fmtNum(last.val_loss, 4)}.`;
  return '';
}

function renderRun(run) {
  const { job, els } = run;
  const state = job.state || 'queued';
  run.card.dataset.state = state;
  setText(els.title, `Job ${run.id} · ${(job.config || {}).arch || '?'}`);
  els.badge.className = `badge ${state}`;
  setText(els.badge, state);
  setText(els.meta, describeConfig(job));
  renderProgress(run, state);
  setText(els.outcome, outcomeText(run, state));
  els.outcome.className = `outcome ${state}`;
  els.cancel.hidden = !ACTIVE.has(state);
}

const renderSoon = rafThrottle(() => {
  for (const id of watched) {
    const r = runs.get(id);
    if (r) renderRun(r);
  }
});

// ------------------------------------------------- charts, legend, table

const chartsSoon = rafThrottle(() => {
  const list = watched.map((id) => runs.get(id)).filter(Boolean);
  const chartRuns = list.map((r) => ({
    id: r.id, name: runName(r), color: r.color, epochs: (r.job.config || {}).epochs, metrics: r.metrics,
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

// ------------------------------------------------------ streams and polls

function closeRun(run) {
  if (run.es) run.es.close();
  run.es = null;
  clearTimeout(run.pollTimer);
}

/** Shows these jobs (job objects) in the run cards and charts. */
function watch(jobs) {
  for (const r of runs.values()) closeRun(r);
  runs.clear();
  watched = jobs.map((j) => j.id);
  const box = $('#runs');
  box.replaceChildren();
  for (const job of jobs) {
    const run = makeRun(job);
    runs.set(job.id, run);
    box.append(buildCard(run));
    renderRun(run);
    connect(run);
  }
  chartsSoon();
  emit('watching', [...watched]);
}

const parse = (e) => {
  try {
    return JSON.parse(e.data);
  } catch {
    return null;
  }
};

const refreshJobsSoon = rafThrottle(() => emit('refresh-jobs'));

/** Re-reads a finished job for its final JSON (error text, timings, model). */
function fetchFinal(run) {
  getJob(run.id).then((job) => {
    if (runs.get(run.id) !== run) return;
    run.job = job;
    for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
    renderSoon();
    chartsSoon();
  }).catch(() => {});
}

function onEnd(run, es, d) {
  es.close();
  run.es = null;
  if (d.state) run.job.state = d.state;
  if ('model_id' in d) run.job.model_id = d.model_id;
  run.progress = null;
  renderSoon();
  chartsSoon();
  fetchFinal(run);
  emit('refresh-jobs');
  emit('refresh-models');
  emit('check-status');
  emit('job-ended', d);
}

function connect(run) {
  // Finished jobs: the JSON already holds everything; no stream needed.
  if (!ACTIVE.has(run.job.state) && run.job.state) return;
  const es = jobEvents(run.id);
  run.es = es;
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
  es.addEventListener('end', (e) => onEnd(run, es, parse(e) || {}));
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
    const job = await getJob(run.id);
    run.job = job;
    run.progress = job.progress || null;
    for (const m of job.metrics || []) run.metrics.set(m.epoch, m);
    renderSoon();
    chartsSoon();
    if (!ACTIVE.has(job.state)) {
      emit('refresh-jobs');
      emit('refresh-models');
      return;
    }
  } catch {
    /* daemon away: keep trying */
  }
  run.pollTimer = setTimeout(() => poll(run), 1000);
}

/**
 * A fresher job object from elsewhere: `fresh` (a cancel's answer) always
 * wins; a job-list row only when no stream keeps the run current.
 */
function onJobUpdated({ job, fresh }) {
  const run = runs.get(job.id);
  if (!run) return;
  if (fresh) {
    run.els.cancel.disabled = false;
    run.job = { ...run.job, ...job };
    renderSoon();
    if (!ACTIVE.has(job.state) && !run.es) chartsSoon();
  } else if (!run.es && run.job.state !== job.state) {
    run.job = job;
    renderSoon();
  }
}

export function initRuns() {
  charts = {
    loss: new MetricChart($('#chart-loss'), { keys: ['loss', 'val_loss'], title: 'Loss per epoch', summary: $('#chart-loss-summary') }),
    acc: new MetricChart($('#chart-acc'), { keys: ['accuracy', 'val_accuracy'], title: 'Accuracy per epoch', percent: true, summary: $('#chart-acc-summary') }),
  };
  on('watch-jobs', watch);
  on('job-updated', onJobUpdated);
  on('cancel-failed', ({ id }) => {
    const run = runs.get(id);
    if (run) run.els.cancel.disabled = false;
  });
  chartsSoon();
}
