// The "Train a model" form: the job's settings, "Compare" (the seed network
// against the 2x wider ReLU network on the same data), and the API token.
// Started jobs go to the charts through the bus ('watch-jobs').
import { createJob, listDatasets, getToken, setToken } from './api.js';
import { emit, on } from './bus.js';
import { $, el, fmtInt, datasetName, say, sayError } from './util.js';

const LR_DEFAULTS = { rmsprop: 0.001, adam: 0.001, sgd: 0.01 };

let datasets = [];

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
    const data = await listDatasets();
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

/** Starts one job per entry of `archs` (null: the form's own network). */
async function startJobs(form, archs) {
  const msg = $('#form-msg');
  if (!form.reportValidity()) return;
  const base = readConfig(form);
  const buttons = form.querySelectorAll('button');
  buttons.forEach((b) => { b.disabled = true; });
  say(msg, archs.length > 1 ? 'Starting two jobs…' : 'Starting a job…', 'info');
  const started = [];
  try {
    for (const arch of archs) started.push(await createJob({ ...base, arch: arch || base.arch }));
    say(msg, started.length > 1
      ? `Started jobs ${started.map((j) => j.id).join(' and ')}: ${started.map((j) => `${j.config.arch} (${fmtInt(j.parameters)} parameters)`).join(' vs ')}.`
      : `Started job ${started[0].id}.`, 'ok');
  } catch (err) {
    sayError(msg, err);
  } finally {
    buttons.forEach((b) => { b.disabled = false; });
  }
  if (started.length) {
    emit('watch-jobs', started);
    emit('refresh-jobs');
  }
}

function initToken() {
  const token = $('#token');
  token.value = getToken();
  token.addEventListener('input', () => setToken(token.value.trim()));
  $('#token-clear').addEventListener('click', () => {
    token.value = '';
    setToken('');
    token.focus();
  });
}

export function initTrainForm() {
  const form = $('#train-form');
  initToken();
  // A learning rate left at one optimizer's default follows the optimizer.
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
  on('datasets', () => loadDatasets());
  loadDatasets();
}
