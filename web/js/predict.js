// The "Draw a digit" panel: sends the pad to POST /v1/predict while drawing
// (at most one request in flight and ~10 per second, scheduler.js) and at
// every stroke end, and shows the answer (predict-view.js). Test images come
// from GET /v1/samples/random or, through the bus, from the Models panel.
import { describeError, ApiError, predictPng, predictPixels, randomSample } from './api.js';
import { emit, on } from './bus.js';
import { Pad } from './pad.js';
import { PredictView } from './predict-view.js';
import { RequestScheduler } from './scheduler.js';
import { $ } from './util.js';

const MIN_INTERVAL_MS = 100;    // <= 10 requests per second while drawing

let view = null;
let pad = null;
let scheduler = null;
let status = { state: 'unknown', training: '', activeModel: null, models: [] };
let generation = 0;             // bumped by clear/sample: older answers are dropped
let sample = null;              // the shown test image, if any

/** Asks for a prediction of the pad as it will be when the request goes out. */
function schedule() {
  view.showHint(false);
  if (pad.isEmpty) return;
  scheduler.request();
}

function reset() {
  generation++;
  scheduler.cancel();
  sample = null;
  view.reset();
}

function leaveSample() {
  generation++;
  sample = null;
  view.hideSample();
}

async function send() {
  const gen = generation;
  const shown = sample;
  if (status.state === 'no-model') {
    // Asking now would only fail (503); status.js says when a model arrives.
    view.showNoModel(status.training);
    return;
  }
  try {
    const data = shown ? await predictPixels(shown.pixels) : await predictPng(await pad.toPngBlob());
    if (gen !== generation) return;
    const p = data && data.predictions && data.predictions[0];
    if (!p) {
      view.showMessage('The daemon answered without a prediction.');
      return;
    }
    const model = status.models.find((m) => m.id === data.model);
    view.showPrediction(p, {
      modelId: data.model,
      dataset: (model && model.dataset) || (shown && shown.dataset) || 'mnist',
      classes: model && model.classes,
      sample: shown,
      settled: !scheduler.waiting && !pad.current,
    });
    emit('prediction', { label: p.label, empty: p.empty });
  } catch (err) {
    if (gen !== generation) return;
    if (err instanceof ApiError && err.status === 503) view.showNoModel(status.training, err.message);
    else view.showMessage(describeError(err));
  }
}

/** Puts a test image ({dataset, index, label, pixels}) on the pad. */
function showSample(s) {
  pad.showSample(s);
  generation++;
  sample = s;
  view.showSample(s);
  schedule();
}

async function loadRandomSample() {
  const btn = $('#sample');
  if (btn.disabled) return;          // one at a time (the S key can repeat)
  btn.disabled = true;
  view.setBusy(true);
  try {
    const ds = status.activeModel ? status.activeModel.dataset : '';
    const s = await randomSample(ds);
    showSample({ ...s, dataset: s.dataset || ds || 'mnist' });
  } catch (err) {
    view.showMessage(describeError(err));
    if (!scheduler.inFlight && !scheduler.waiting) view.setBusy(false);
  } finally {
    btn.disabled = false;
  }
}

function onKey(e) {
  if (e.defaultPrevented || e.isComposing) return;
  const t = e.target;
  if (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName))) return;
  const key = (e.key || '').toLowerCase();
  const mod = e.ctrlKey || e.metaKey;
  if (mod && !e.altKey && !e.shiftKey && key === 'z') {
    e.preventDefault();
    pad.undo();
  } else if (mod || e.altKey) {
    // other shortcuts belong to the browser
  } else if (key === 'backspace') {
    e.preventDefault();
    pad.undo();
  } else if (key === 'c') {
    pad.clear();
  } else if (key === 's') {
    loadRandomSample();
  }
}

export function initPredict() {
  view = new PredictView();
  scheduler = new RequestScheduler({ minInterval: MIN_INTERVAL_MS, send, onBusy: (b) => view.setBusy(b) });
  pad = new Pad($('#pad'), {
    onDraw: () => {
      if (sample) leaveSample();
      schedule();
    },
    onStrokeEnd: () => schedule(),
    onChange: () => {
      if (pad.isEmpty) reset();
      else schedule();
    },
  });

  $('#clear').addEventListener('click', () => pad.clear());
  $('#undo').addEventListener('click', () => pad.undo());
  $('#sample').addEventListener('click', loadRandomSample);
  document.addEventListener('keydown', onKey);

  // When a model appears (or another is activated), re-ask for what is shown.
  on('model-changed', () => {
    if (!pad.isEmpty) schedule();
  });
  on('load-sample', showSample);
  on('status', (s) => {
    status = s;
    if (view.noModelShown && s.state === 'no-model') view.showNoModel(s.training);
  });

  reset();
}
