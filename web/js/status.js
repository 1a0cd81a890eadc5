// Daemon readiness for the header: GET /readyz while a model is active; while
// there is none, the (bootstrap) training job's progress from
// GET /v1/jobs?state=running. Owns the model list and readiness; the other
// panels learn them only from the 'status' and 'models' events (bus.js).
import { ApiError, getReady, listModels, listJobs } from './api.js';
import { emit, on } from './bus.js';
import { $, setText, fmtPct, fmtDuration, datasetName } from './util.js';

const status = {
  state: 'unknown',        // 'ready' | 'no-model' | 'down' | 'unknown'
  detail: '',
  activeId: null,
  models: [],
  get activeModel() {
    return this.models.find((m) => m.id === this.activeId) || null;
  },
  modelById(id) {
    return this.models.find((m) => m.id === id) || null;
  },
};

let timer = 0;
let failures = 0;
let live = false;          // the daemon-wide stream is open: it tells us of changes
let replica = false;       // a read-only replica has no jobs to describe

async function refreshModels(throwOnError = false) {
  try {
    const data = await listModels();
    status.models = (data && data.models) || [];
    emit('models', status.models);
  } catch (err) {
    if (throwOnError) throw err;
    emit('models-error', err);
  }
  render();
}

function render() {
  const box = $('#status');
  const text = $('#status-text');
  const bar = $('#status-progress');
  box.dataset.state = status.state;
  if (status.state === 'ready') {
    const m = status.activeModel;
    setText(text, m
      ? `Model #${m.id} ready · ${m.arch} · ${datasetName(m.dataset)} · ${fmtPct(m.test_accuracy)} test accuracy`
      : `Model #${status.activeId} ready`);
  } else if (status.state === 'no-model') {
    setText(text, status.detail);
  } else if (status.state === 'down') {
    setText(text, status.detail);
  } else {
    setText(text, 'Connecting to the daemon…');
  }
  bar.hidden = status.state !== 'no-model' || !Number.isFinite(status.fraction);
  if (!bar.hidden) bar.value = status.fraction;
  // Announce changes of state, not every progress tick.
  const headline = { ready: `Model #${status.activeId} is ready.`, 'no-model': 'No model is loaded yet.',
    down: 'Cannot reach the mnistd daemon.' }[status.state] || '';
  setText($('#status-announce'), headline);
  emit('status', snapshot());
}

/** What the other panels see: a copy they cannot change. */
function snapshot() {
  return Object.freeze({
    state: status.state,
    detail: status.detail,
    activeId: status.activeId,
    activeModel: status.activeModel,
    models: status.models,
    training: status.training || '',
    fraction: status.fraction,
  });
}

/** Fills status.detail/fraction from the running job (e.g. the bootstrap training). */
async function describeTraining(fallback) {
  status.fraction = NaN;
  status.detail = fallback || 'No model loaded yet.';
  status.training = '';
  if (replica) {
    status.detail = fallback || 'No model yet: this replica is waiting for its primary to have one.';
    return;
  }
  try {
    const { jobs } = await listJobs({ state: 'running', limit: 1 });
    const job = jobs && jobs[0];
    if (job && job.progress) {
      const p = job.progress;
      const done = (p.epoch - 1 + (p.batches ? p.batch / p.batches : 0)) / (p.epochs || 1);
      status.fraction = Math.max(0, Math.min(1, done));
      status.training = `job ${job.id} is training one (epoch ${p.epoch} of ${p.epochs}, ${fmtPct(done, 0)}`
        + `${Number.isFinite(p.eta_seconds) ? `, about ${fmtDuration(p.eta_seconds)} left` : ''}).`;
      status.detail = `No model loaded yet: ${status.training}`;
    } else if (job) {
      status.training = `job ${job.id} is starting to train one.`;
      status.detail = `No model loaded yet: ${status.training}`;
    } else if (!fallback) {
      status.detail = 'No model loaded yet: train one under “Train a model”.';
    }
  } catch {
    /* keep the fallback text */
  }
}

function setReady(id) {
  const prevState = status.state;
  const prevId = status.activeId;
  status.state = 'ready';
  status.detail = '';
  status.activeId = id;
  if (prevState !== 'ready' || id !== prevId) emit('model-changed', status.activeModel);
  if (prevState !== 'ready') emit('ready', true);
}

function setNoModel() {
  const wasReady = status.state === 'ready';
  status.state = 'no-model';
  status.activeId = null;
  if (wasReady) emit('ready', false);
}

/*
 * While a model is active, GET /readyz is the source of truth. While there is
 * none, the page watches GET /v1/models and the running job instead of asking
 * /readyz again and again: browsers log every failed (503) request as a
 * console error, and the models list says just as well when a model arrives.
 */
async function poll() {
  clearTimeout(timer);
  let next = 5000;
  try {
    if (status.state !== 'ready') {
      await refreshModels(true);
      const active = status.models.find((m) => m.active);
      if (!active) {
        failures = 0;
        setNoModel();
        await describeTraining(status.readyMessage);
        render();
        timer = setTimeout(poll, 1500);
        return;
      }
    }
    const r = await getReady();
    failures = 0;
    const id = r.model ?? (status.models.find((m) => m.active) || {}).id ?? null;
    if (status.state !== 'ready' || id !== status.activeId) await refreshModels(true);
    setReady(id);
    // With the stream open, activations and ends arrive as events, and a
    // dropped stream triggers a check at once: a slow poll is enough.
    if (live) next = 30000;
  } catch (err) {
    if (err instanceof ApiError && err.status === 503) {
      failures = 0;
      status.readyMessage = err.message;
      setNoModel();
      await describeTraining(err.message);
      next = 1500;
    } else {
      failures++;
      const wait = Math.min(15, 2 * failures);
      status.state = 'down';
      status.detail = err instanceof ApiError && err.status === 0
        ? `Cannot reach the mnistd daemon. Retrying in ${wait} s…`
        : `The daemon's readiness check failed: ${err.message}. Retrying in ${wait} s…`;
      next = wait * 1000;
    }
  }
  render();
  timer = setTimeout(poll, next);
}

/** role: {replica} from live.js's first hello. */
export function initStatus(role = {}) {
  replica = !!role.replica;
  live = !!role.connected;
  on('live', (d) => { live = d.connected; });
  on('resync', () => refreshModels().then(() => poll()));
  $('#status-retry').addEventListener('click', () => poll());
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden) poll();
  });
  // Requests from the other panels (after a job ends, a model is activated
  // or deleted): re-read the list, re-check readiness.
  on('refresh-models', () => refreshModels());
  on('check-status', () => poll());
  poll();
}
