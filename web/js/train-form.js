// The "Train a model" form: the job's settings, the network (a preset or a
// custom layer list checked by the daemon as it is typed), "Compare" (the
// ticked networks on the same data and axes), and the API token. Started
// jobs go to the charts through the bus ('watch-jobs').
import { createJob, listDatasets, getToken, setToken, validateLayers } from './api.js';
import { emit, on } from './bus.js';
import { $, el, fmtInt, datasetName, say, sayError } from './util.js';

const LR_DEFAULTS = { rmsprop: 0.001, adam: 0.001, sgd: 0.01 };

let datasets = [];

/** The custom layer list, or throws a SyntaxError. */
const customLayers = () => JSON.parse($('#layers').value);

/** A job config's network part for a preset name or 'custom'. */
const network = (arch) => (arch === 'custom' ? { layers: customLayers() } : { arch });

function readConfig(form) {
  const v = (name) => form.elements[name].value.trim();
  const cfg = {
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
  say(msg, archs.length > 1 ? `Starting ${archs.length} jobs…` : 'Starting a job…', 'info');
  const started = [];
  try {
    for (const arch of archs) started.push(await createJob({ ...base, ...network(arch || form.elements.arch.value) }));
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

// ------------------------------------------------------- the custom network

/** One line per layer, as the daemon will read it. */
function describeLayer(l) {
  if (!l || typeof l !== 'object') return String(l);
  const extra = Object.entries(l).filter(([k]) => k !== 'type').map(([k, v]) => `${k} ${v}`).join(', ');
  return extra ? `${l.type}: ${extra}` : String(l.type);
}

let checkSeq = 0;

/** Parses the editor and asks the daemon's shape check; the error is shown
 * at the layer it names. */
async function checkLayers(form) {
  const seq = ++checkSeq;
  const list = $('#layers-list');
  const msg = $('#layers-msg');
  const area = $('#layers');
  let layers;
  try {
    layers = customLayers();
  } catch (err) {
    list.replaceChildren();
    area.setCustomValidity('not valid JSON');
    say(msg, `Not valid JSON yet: ${err.message}`, 'error');
    return;
  }
  const items = Array.isArray(layers) ? layers.map((l) => el('li', {}, describeLayer(l))) : [];
  list.replaceChildren(...items);
  let res;
  try {
    res = await validateLayers(layers, parseInt(form.elements.batch_size.value, 10) || 128);
  } catch (err) {
    if (seq === checkSeq) sayError(msg, err);
    return;
  }
  if (seq !== checkSeq) return; // a newer edit is being checked
  if (res.valid) {
    area.setCustomValidity('');
    say(msg, `OK: ${fmtInt(res.parameters)} parameters (softmax added after the last layer).`, 'ok');
    return;
  }
  area.setCustomValidity(res.message);
  const bad = items[res.layer];
  if (bad) {
    bad.classList.add('bad');
    bad.append(el('span', { class: 'layer-error' }, ` ← ${res.message}`));
  }
  say(msg, res.message, 'error');
}

function initCustom(form) {
  const box = $('#custom-arch');
  let timer = 0;
  const schedule = () => {
    clearTimeout(timer);
    timer = setTimeout(() => checkLayers(form), 250);
  };
  const sync = () => {
    box.hidden = form.elements.arch.value !== 'custom';
    if (!box.hidden) schedule();
    else $('#layers').setCustomValidity('');
  };
  form.querySelectorAll('input[name="arch"]').forEach((r) => r.addEventListener('change', sync));
  $('#layers').addEventListener('input', schedule);
  form.elements.batch_size.addEventListener('change', () => { if (!box.hidden) schedule(); });
  sync();
}

function compareChoice(form) {
  const picked = [...form.querySelectorAll('input[name="compare"]:checked')].map((c) => c.value);
  if (picked.length < 2 || picked.length > 3) {
    say($('#form-msg'), 'Tick two or three networks to compare.', 'error');
    return null;
  }
  return picked;
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
  $('#compare').addEventListener('click', () => {
    const picked = compareChoice(form);
    if (picked) startJobs(form, picked);
  });
  initCustom(form);
  on('ready', () => loadDatasets());
  on('datasets', () => loadDatasets());
  loadDatasets();
}
