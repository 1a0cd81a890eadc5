// The "Models" panel: every trained model with its test accuracy, parameter
// count and data set; activate / delete; and, for one model, the confusion
// matrix heat map and a gallery of misclassified test images.
import { describeError, isAuthError, activateModel, deleteModel, evaluateModel, modelFileUrl } from './api.js';
import { emit, on } from './bus.js';
import { $, el, setText, fmtInt, fmtPct, fmtAgo, datasetName, className, drawPixels } from './util.js';

let rows = new Map();     // model id -> row elements
let evaluated = null;     // model id whose evaluation is shown
let activeId = null;      // from the last 'status' event
let models = [];          // from the last 'models' event

function say(text, kind = 'error') {
  const node = $('#models-msg');
  node.classList.remove('load-error');
  node.classList.remove('error', 'ok', 'warn', 'info');
  if (text) node.classList.add(kind);
  setText(node, text);
}

function fail(err) {
  say(describeError(err));
  if (isAuthError(err)) $('#token').focus();
}

async function activate(id, button) {
  button.disabled = true;
  try {
    await activateModel(id);
    say(`Model #${id} is now the active model: predictions use it.`, 'ok');
    emit('refresh-models');
    emit('check-status');
  } catch (err) {
    fail(err);
  } finally {
    button.disabled = false;
  }
}

async function remove(id, button) {
  // eslint-disable-next-line no-alert
  if (!window.confirm(`Delete model #${id}? Its file is removed from the daemon's state directory.`)) return;
  button.disabled = true;
  try {
    await deleteModel(id);
    say(`Model #${id} deleted.`, 'ok');
    if (evaluated === id) $('#evaluation').hidden = true;
    emit('refresh-models');
  } catch (err) {
    fail(err);
    button.disabled = false;
  }
}

function modelRow(m) {
  let row = rows.get(m.id);
  if (row) return row;
  const act = el('button', { type: 'button', class: 'btn small primary-only', onclick: () => activate(m.id, act) }, 'Activate');
  act.setAttribute('aria-label', `Activate model ${m.id}`);
  const evalBtn = el('button', { type: 'button', class: 'btn small', onclick: () => evaluate(m.id, evalBtn) }, 'Evaluate');
  evalBtn.setAttribute('aria-label', `Show the confusion matrix and errors of model ${m.id}`);
  const del = el('button', { type: 'button', class: 'btn small ghost primary-only', onclick: () => remove(m.id, del) }, 'Delete');
  del.setAttribute('aria-label', `Delete model ${m.id}`);
  // Plain links: downloads are GETs and need no token.
  const file = el('a', { class: 'btn small ghost download primary-only', href: modelFileUrl(m.id), download: `mnistd-model-${m.id}.model`,
    title: 'The mnistd model file (mnistd predict --model, or another mnistd daemon)' }, 'Download');
  file.setAttribute('aria-label', `Download model ${m.id} as an mnistd file`);
  const onnx = el('a', { class: 'btn small ghost download primary-only', href: modelFileUrl(m.id, 'onnx'), download: `mnistd-model-${m.id}.onnx`,
    title: 'ONNX for onnxruntime and other runtimes: input "image" float32 [N,1,28,28] in 0..1, white ink on black; output "probabilities"' },
  'Download ONNX');
  onnx.setAttribute('aria-label', `Download model ${m.id} as ONNX`);
  // The layers on demand: a disclosure under the network's name.
  const archName = el('summary', { title: 'Show the layers' });
  const layers = el('ol', { class: 'layers-list' },
    ...(m.layers || []).map((l) => el('li', {}, Object.entries(l).map(([k, v]) => (k === 'type' ? v : `${k} ${v}`)).join(', '))),
    el('li', { class: 'muted' }, 'softmax'));
  const cells = {
    id: el('th', { scope: 'row' }, `#${m.id}`),
    arch: el('td', {}, el('details', { class: 'model-layers' }, archName, layers)),
    data: el('td'),
    acc: el('td', { class: 'num', dataset: { label: 'test acc.' } }),
    params: el('td', { class: 'num', dataset: { label: 'parameters' } }),
    job: el('td', { class: 'opt num' }),
    created: el('td', { class: 'opt' }),
    actions: el('td', { class: 'actions' }, el('span', { class: 'badge active-badge' }, 'active'), act, evalBtn, file, onnx, del),
  };
  const tr = el('tr', { dataset: { model: String(m.id) } }, ...Object.values(cells));
  row = { tr, cells, act, del, evalBtn, archName };
  rows.set(m.id, row);
  return row;
}

function renderModels(models) {
  const body = $('#models-table tbody');
  const seen = new Set();
  const best = Math.max(...models.filter((m) => m.dataset === 'mnist').map((m) => m.test_accuracy || 0), 0);
  models.forEach((m, i) => {
    const row = modelRow(m);
    seen.add(m.id);
    const active = m.active || m.id === activeId;
    row.tr.classList.toggle('active', active);
    row.tr.dataset.active = active ? 'true' : 'false';
    setText(row.archName, m.arch);
    setText(row.cells.data, datasetName(m.dataset));
    setText(row.cells.acc, fmtPct(m.test_accuracy, 2));
    row.cells.acc.classList.toggle('best', m.dataset === 'mnist' && m.test_accuracy === best && models.length > 1);
    setText(row.cells.params, fmtInt(m.parameters));
    setText(row.cells.job, m.job_id ? `#${m.job_id}` : '–');
    setText(row.cells.created, fmtAgo(m.created_at));
    row.cells.created.title = m.created_at || '';
    row.act.hidden = active;
    row.del.hidden = active;
    row.tr.querySelector('.active-badge').hidden = !active;
    if (body.children[i] !== row.tr) body.insertBefore(row.tr, body.children[i] || null);
  });
  for (const [id, row] of rows) {
    if (!seen.has(id)) {
      row.tr.remove();
      rows.delete(id);
    }
  }
  $('#models-empty').hidden = models.length > 0;
}

// ------------------------------------------------------------- evaluation

function heat(alpha, hue) {
  // hue: 'good' (diagonal) or 'bad' (confusions); alpha 0..1
  const rgb = hue === 'good' ? '22, 163, 74' : '220, 38, 38';
  return `rgba(${rgb}, ${(0.08 + 0.92 * alpha).toFixed(3)})`;
}

/** Name of class k in an evaluation (its classes; '' when it is the digit). */
const evName = (ev, k) => {
  const c = Array.isArray(ev.classes) ? ev.classes[k] : className(ev.dataset, k);
  return c === undefined || c === String(k) ? '' : c;
};

function renderConfusion(ev) {
  const table = $('#confusion');
  const conf = ev.confusion || [];
  let maxOff = 1;
  conf.forEach((row, t) => row.forEach((v, p) => { if (t !== p) maxOff = Math.max(maxOff, v); }));
  const head = el('tr', {}, el('th', { scope: 'col', class: 'corner' }, el('span', { class: 'sr-only' }, 'True label'), el('span', { 'aria-hidden': 'true' }, 'T\\P')),
    ...conf.map((_, p) => el('th', { scope: 'col', title: evName(ev, p) || undefined }, evName(ev, p) || String(p))),
    el('th', { scope: 'col', class: 'opt' }, 'recall'));
  const body = conf.map((row, t) => {
    const total = row.reduce((a, b) => a + b, 0) || 1;
    const cells = row.map((v, p) => {
      const td = el('td', { title: `true ${t}, predicted ${p}: ${fmtInt(v)} (${fmtPct(v / total)})` }, v ? fmtInt(v) : '');
      let alpha;
      if (t === p) alpha = v / total;
      else alpha = v ? Math.log1p(v) / Math.log1p(maxOff) : 0;
      if (v || t === p) td.style.background = heat(alpha, t === p ? 'good' : 'bad');
      if (alpha > 0.55) td.classList.add('dark');
      if (t === p) td.classList.add('diag');
      return td;
    });
    return el('tr', {}, el('th', { scope: 'row', title: evName(ev, t) || undefined }, evName(ev, t) || String(t)), ...cells,
      el('td', { class: 'opt recall' }, fmtPct(row[t] / total, 1)));
  });
  table.replaceChildren(
    el('caption', { class: 'sr-only' }, `Confusion matrix of model ${ev.model}: rows are the true labels, columns the predicted labels.`),
    el('thead', {}, head), el('tbody', {}, ...body));
}

function renderGallery(ev) {
  const box = $('#gallery');
  const items = (ev.misclassified || []).map((m) => {
    const canvas = el('canvas', { width: 28, height: 28, 'aria-hidden': 'true' });
    drawPixels(canvas, m.pixels);
    const lbl = (d) => `${d}${evName(ev, d) ? ` ${evName(ev, d)}` : ''}`;
    const button = el('button', {
      type: 'button', class: 'digit-card',
      'aria-label': `Test image ${m.index}: true ${lbl(m.label)}, predicted ${lbl(m.predicted)} with ${fmtPct(m.confidence, 0)} confidence. Load it into the drawing pad.`,
      onclick: () => {
        emit('load-sample', { dataset: ev.dataset, index: m.index, label: m.label, pixels: m.pixels });
        $('#draw').scrollIntoView({ behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth' });
      },
    }, canvas, el('span', { class: 'cap' }, el('b', {}, evName(ev, m.label) || String(m.label)), ' → ', el('b', { class: 'wrong' }, evName(ev, m.predicted) || String(m.predicted)),
      el('small', {}, ` ${fmtPct(m.confidence, 0)}`)));
    return el('li', {}, button);
  });
  box.replaceChildren(...items);
  setText($('#gallery-note'), items.length
    ? `${items.length} of the misclassified test images (true → predicted, confidence). Select one to load it into the drawing pad.`
    : 'No misclassified test images.');
}

async function evaluate(id, button) {
  const panel = $('#evaluation');
  panel.hidden = false;
  evaluated = id;
  setText($('#evaluation-title'), `Model #${id}: where it goes wrong`);
  setText($('#evaluation-summary'), `Evaluating model #${id} on the test set…`);
  panel.setAttribute('aria-busy', 'true');
  if (button) button.disabled = true;
  try {
    const ev = await evaluateModel(id);
    if (evaluated !== id) return;
    const total = (ev.confusion || []).flat().reduce((a, b) => a + b, 0);
    const errors = total - (ev.confusion || []).reduce((s, row, i) => s + (row[i] || 0), 0);
    setText($('#evaluation-summary'), `${fmtPct(ev.accuracy, 2)} accuracy on ${fmtInt(total)} ${datasetName(ev.dataset)} test images: ${fmtInt(errors)} mistakes.`);
    renderConfusion(ev);
    renderGallery(ev);
    panel.scrollIntoView({ behavior: matchMedia('(prefers-reduced-motion: reduce)').matches ? 'auto' : 'smooth', block: 'start' });
  } catch (err) {
    setText($('#evaluation-summary'), `Could not evaluate model #${id}: ${describeError(err)}`);
  } finally {
    panel.setAttribute('aria-busy', 'false');
    if (button) button.disabled = false;
  }
}

export function initModels() {
  on('models', (list) => {
    models = list;
    renderModels(models);
    if ($('#models-msg').classList.contains('load-error')) say('');
  });
  on('models-error', (err) => {
    if (err.status === 0) return;        // the header already says the daemon is unreachable
    say(`Could not list the models: ${describeError(err)}`);
    $('#models-msg').classList.add('load-error');
  });
  on('status', (s) => {
    if (s.activeId === activeId) return;
    activeId = s.activeId;
    renderModels(models);
  });
  $('#evaluation-close').addEventListener('click', () => {
    $('#evaluation').hidden = true;
    evaluated = null;
  });
  emit('refresh-models');
}
