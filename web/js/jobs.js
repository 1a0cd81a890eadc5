// The job list (GET /v1/jobs: every 2 s while a job is active for its
// progress; otherwise when the daemon-wide stream says a job changed state,
// or every 10 s while that stream is down) with
// "Chart" (show the job in the charts) and "Cancel". Cancelling is done here
// for the whole page: the run cards ask through the bus ('cancel-job').
import { listJobs, getJob, cancelJob, describeError } from './api.js';
import { emit, on } from './bus.js';
import { $, el, setText, fmtInt, fmtPct, fmtAgo, datasetName, say, sayError } from './util.js';

const ACTIVE = new Set(['queued', 'running']);

let jobsTimer = 0;
let live = false;                // the daemon-wide stream is open (live.js)
let jobRows = new Map();         // job id -> row elements
let watched = [];                // job ids in the charts (from 'watching')
const knownStates = new Map();   // job id -> state at the last refresh

async function cancel(id, button) {
  const msg = $('#jobs-msg');
  if (button) button.disabled = true;
  try {
    const job = await cancelJob(id);
    say(msg, `Job ${id} is ${job && job.state ? job.state : 'being cancelled'}.`, 'ok');
    if (job) emit('job-updated', { job, fresh: true });
    else emit('cancel-failed', { id });
  } catch (err) {
    sayError(msg, err);
    emit('cancel-failed', { id });
  } finally {
    if (button) button.disabled = false;
  }
  refreshJobs();
}

function highlightWatchedRows() {
  for (const [id, row] of jobRows) row.tr.classList.toggle('watched', watched.includes(id));
}

function jobRow(job) {
  let row = jobRows.get(job.id);
  if (row) return row;
  const show = el('button', { type: 'button', class: 'btn small', onclick: () => watchById(job.id) }, 'Chart');
  show.setAttribute('aria-label', `Show job ${job.id} in the charts`);
  const cancelBtn = el('button', { type: 'button', class: 'btn small danger', onclick: () => cancel(job.id, cancelBtn) }, 'Cancel');
  cancelBtn.setAttribute('aria-label', `Cancel job ${job.id}`);
  const cells = {
    id: el('th', { scope: 'row' }, `#${job.id}`),
    arch: el('td'),
    data: el('td', { class: 'opt' }),
    epochs: el('td', { class: 'num opt' }),
    state: el('td', {}, el('span', { class: 'badge' })),
    acc: el('td', { class: 'num', dataset: { label: 'val. acc.' } }),
    created: el('td', { class: 'opt' }),
    actions: el('td', { class: 'actions' }, show, cancelBtn),
  };
  const tr = el('tr', { dataset: { job: String(job.id) } }, ...Object.values(cells));
  row = { tr, cells, show, cancel: cancelBtn };
  jobRows.set(job.id, row);
  return row;
}

function fillRow(row, job) {
  const c = job.config || {};
  const last = (job.metrics || []).slice(-1)[0];
  row.tr.dataset.state = job.state;
  setText(row.cells.arch, c.arch || '?');
  setText(row.cells.data, `${datasetName(c.dataset || 'mnist')}${c.train_limit ? ` · ${fmtInt(c.train_limit)}` : ''}`);
  const done = (job.metrics || []).length;
  setText(row.cells.epochs, job.state === 'running' && job.progress ? `${job.progress.epoch}/${c.epochs}`
    : ACTIVE.has(job.state) || job.state === 'succeeded' ? String(c.epochs) : `${done}/${c.epochs}`);
  const badge = row.cells.state.firstChild;
  badge.className = `badge ${job.state}`;
  setText(badge, job.state);
  if (job.state === 'failed' && job.error) badge.title = job.error;
  setText(row.cells.acc, last ? fmtPct(last.val_accuracy, 2) : '–');
  setText(row.cells.created, fmtAgo(job.created_at));
  row.cells.created.title = job.created_at || '';
  row.cancel.hidden = !ACTIVE.has(job.state);
}

function renderJobs(jobs) {
  const body = $('#jobs-table tbody');
  const seen = new Set();
  // A job that finished since the last look (started anywhere) may have made a model.
  if (jobs.some((j) => knownStates.has(j.id) && knownStates.get(j.id) !== j.state && j.state === 'succeeded')) {
    emit('refresh-models');
    emit('check-status');
  }
  knownStates.clear();
  for (const j of jobs) knownStates.set(j.id, j.state);
  jobs.forEach((job, i) => {
    const row = jobRow(job);
    seen.add(job.id);
    fillRow(row, job);
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
    // Keeps watched runs in step with the list when their stream is not open.
    if (watched.includes(job.id)) emit('job-updated', { job, fresh: false });
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
    emit('watch-jobs', [await getJob(id)]);
    $('#charts').scrollIntoView({ behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth', block: 'nearest' });
  } catch (err) {
    say($('#jobs-msg'), describeError(err));
  }
}

async function refreshJobs() {
  clearTimeout(jobsTimer);
  let next = live ? 60000 : 10000;
  let jobs = [];
  try {
    const data = await listJobs({ limit: 20 });
    jobs = renderJobs((data && data.jobs) || []);
    if (jobs.some((j) => ACTIVE.has(j.state))) next = 2000;
  } catch {
    next = 5000;
  }
  jobsTimer = setTimeout(refreshJobs, document.hidden ? Math.max(next, 15000) : next);
  return jobs;
}

/** role: {connected} from live.js's first hello. */
export async function initJobs(role = {}) {
  live = !!role.connected;
  on('refresh-jobs', () => refreshJobs());
  on('resync', () => refreshJobs());
  on('live', (d) => {
    live = d.connected;
    if (!live) refreshJobs();
  });
  on('cancel-job', ({ id }) => cancel(id, null));
  on('watching', (ids) => {
    watched = ids;
    highlightWatchedRows();
  });
  // Show what is going on right away: a running job (e.g. the bootstrap
  // training), else the newest job.
  const jobs = await refreshJobs();
  if (!watched.length && jobs.length) {
    const running = jobs.filter((j) => ACTIVE.has(j.state));
    emit('watch-jobs', running.length ? running.slice(0, 2).reverse() : [jobs[0]]);
  }
}
