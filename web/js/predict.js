// The "Draw a digit" panel: sends the pad to POST /v1/predict while drawing
// (at most one request in flight and ~10 per second) and at every stroke end,
// and shows the answer, the ten probabilities and the 28x28 input.
import { api, describeError, ApiError } from './api.js';
import { Pad } from './pad.js';
import { $, el, setText, fmtPct, drawPixels, className, on, emit } from './util.js';
import { status } from './status.js';

const MIN_INTERVAL_MS = 100;    // <= 10 requests per second while drawing

export function initPredict() {
  const result = $('#result');
  const prediction = $('#prediction');
  const predName = $('#prediction-name');
  const confidence = $('#confidence');
  const message = $('#predict-msg');
  const seen = $('#seen');
  const truth = $('#truth');
  const trueLabel = $('#true-label');
  const truthBadge = $('#truth-badge');
  const sampleInfo = $('#sample-info');
  const hint = $('#pad-hint');
  const probs = $('#probs');

  const rows = [];
  for (let d = 0; d < 10; d++) {
    const fill = el('span', { class: 'fill' });
    const pct = el('span', { class: 'pct' }, '–');
    const name = el('span', { class: 'name' });
    const li = el('li', { dataset: { digit: String(d) } },
      el('span', { class: 'digit' }, String(d)), name,
      el('span', { class: 'bar', 'aria-hidden': 'true' }, fill), pct);
    probs.append(li);
    rows.push({ li, fill, pct, name });
  }

  // Request scheduling state.
  let inFlight = false;
  let pending = false;
  let timer = 0;
  let lastSent = -Infinity;
  let generation = 0;           // bumped by clear/sample: older answers are dropped
  let sample = null;            // the shown test image, if any
  let noModelShown = false;     // the "no model yet" message is up (kept current)

  const pad = new Pad($('#pad'), {
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

  function setBusy(busy) {
    result.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  function showMessage(text, kind = 'error') {
    noModelShown = false;
    setText(message, text);
    message.className = `msg ${text ? kind : ''}`;
  }

  function showNoModel(daemonSays) {
    setText(confidence, '');
    showMessage(status.training
      ? `No model is loaded yet, so nothing can be recognised: ${status.training} Your drawing will be recognised as soon as it is ready.`
      : `No model is loaded yet, so nothing can be recognised${daemonSays ? ` (${daemonSays})` : ''}. Train one under “Train a model”.`, 'warn');
    noModelShown = true;
  }

  function clearSeen() {
    const ctx = seen.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, 28, 28);
  }

  function reset() {
    generation++;
    pending = false;
    clearTimeout(timer);
    timer = 0;
    sample = null;
    truth.hidden = true;
    setText(prediction, '–');
    setText(predName, '');
    setText(confidence, 'Draw a digit to see what the model thinks it is.');
    result.dataset.label = '';
    for (const r of rows) {
      r.fill.style.width = '0%';
      setText(r.pct, '–');
      r.li.classList.remove('is-top');
    }
    clearSeen();
    hint.hidden = false;
    showMessage('');
    if (!inFlight) setBusy(false);
  }

  function leaveSample() {
    generation++;
    sample = null;
    truth.hidden = true;
  }

  /** Asks for a prediction of the pad as it will be when the request goes out. */
  function schedule() {
    hint.hidden = true;
    if (pad.isEmpty) return;
    pending = true;
    setBusy(true);
    kick();
  }

  function kick() {
    if (inFlight || !pending || timer) return;
    const wait = lastSent + MIN_INTERVAL_MS - performance.now();
    if (wait > 0) {
      timer = setTimeout(() => {
        timer = 0;
        kick();
      }, wait);
      return;
    }
    pending = false;
    inFlight = true;
    lastSent = performance.now();
    send().finally(() => {
      inFlight = false;
      if (pending) kick();
      else if (!timer) setBusy(false);
    });
  }

  async function send() {
    const gen = generation;
    const shown = sample;
    if (status.state === 'no-model') {
      // Asking now would only fail (503); status.js says when a model arrives.
      showNoModel();
      return;
    }
    try {
      let data;
      if (shown) {
        data = await api('v1/predict?explain=1', { method: 'POST', json: { image: shown.pixels } });
      } else {
        const blob = await pad.toPngBlob();
        data = await api('v1/predict?explain=1', { method: 'POST', body: blob, type: 'image/png' });
      }
      if (gen !== generation) return;
      show(data, shown);
    } catch (err) {
      if (gen !== generation) return;
      if (err instanceof ApiError && err.status === 503) {
        showNoModel(err.message);
      } else {
        showMessage(describeError(err));
      }
    }
  }

  function show(data, shown) {
    const p = data && data.predictions && data.predictions[0];
    if (!p) {
      showMessage('The daemon answered without a prediction.');
      return;
    }
    showMessage('');
    const model = status.modelById(data.model);
    const dataset = (model && model.dataset) || (shown && shown.dataset) || 'mnist';
    if (Array.isArray(p.pixels) && p.pixels.length === 784) drawPixels(seen, p.pixels);
    if (p.empty) {
      setText(prediction, '?');
      setText(predName, '');
      setText(confidence, 'The model saw no ink: draw a larger or darker digit.');
      result.dataset.label = '';
    } else {
      setText(prediction, String(p.label));
      setText(predName, className(dataset, p.label));
      setText(confidence, `${fmtPct(p.confidence)} sure${data.model ? ` · model #${data.model}` : ''}`);
      result.dataset.label = String(p.label);
    }
    const probsArr = Array.isArray(p.probabilities) ? p.probabilities : [];
    rows.forEach((r, d) => {
      const v = Number(probsArr[d]) || 0;
      r.fill.style.width = `${(v * 100).toFixed(1)}%`;
      setText(r.pct, fmtPct(v));
      setText(r.name, className(dataset, d));
      r.li.classList.toggle('is-top', !p.empty && d === p.label);
      r.li.setAttribute('aria-label', `${d}${className(dataset, d) ? ` (${className(dataset, d)})` : ''}: ${fmtPct(v)}`);
    });
    // Screen readers hear the settled answer, not every guess made mid-stroke.
    if (!pending && !timer && !pad.current) {
      setText($('#announce'), p.empty ? 'Nothing recognised.'
        : `Prediction: ${p.label}${className(dataset, p.label) ? ` (${className(dataset, p.label)})` : ''}, ${fmtPct(p.confidence, 0)} sure${shown ? `; the true label is ${shown.label}` : ''}.`);
    }
    if (shown) {
      const ok = !p.empty && p.label === shown.label;
      truthBadge.className = `badge ${ok ? 'succeeded' : 'failed'}`;
      setText(truthBadge, ok ? '✓ correct' : '✗ wrong');
    }
    emit('prediction', { label: p.label, empty: p.empty });
  }

  /** Loads a test image (from /v1/samples/random or the error gallery) onto the pad. */
  function showSample(s) {
    pad.showSample(s);
    generation++;
    sample = s;
    hint.hidden = true;
    truth.hidden = false;
    setText(trueLabel, String(s.label));
    const name = className(s.dataset, s.label);
    setText(sampleInfo, `${name ? `${name} · ` : ''}test image #${s.index} of ${s.dataset === 'fashion-mnist' ? 'Fashion-MNIST' : 'MNIST'}`);
    truthBadge.className = 'badge';
    setText(truthBadge, '…');
    setText(prediction, '…');
    schedule();
  }

  async function randomSample() {
    const btn = $('#sample');
    if (btn.disabled) return;          // one at a time (the S key can repeat)
    btn.disabled = true;
    setBusy(true);
    try {
      const ds = status.activeModel ? status.activeModel.dataset : '';
      const s = await api(`v1/samples/random${ds ? `?dataset=${encodeURIComponent(ds)}` : ''}`);
      showSample({ ...s, dataset: s.dataset || ds || 'mnist' });
    } catch (err) {
      showMessage(describeError(err));
      if (!inFlight && !pending) setBusy(false);
    } finally {
      btn.disabled = false;
    }
  }

  $('#clear').addEventListener('click', () => pad.clear());
  $('#undo').addEventListener('click', () => pad.undo());
  $('#sample').addEventListener('click', randomSample);

  document.addEventListener('keydown', (e) => {
    if (e.defaultPrevented || e.isComposing) return;
    const t = e.target;
    if (t && (t.isContentEditable || /^(INPUT|SELECT|TEXTAREA)$/.test(t.tagName))) return;
    const key = (e.key || '').toLowerCase();
    const mod = e.ctrlKey || e.metaKey;
    if (mod && !e.altKey && !e.shiftKey && key === 'z') {
      e.preventDefault();
      pad.undo();
    } else if (mod || e.altKey) {
      return;
    } else if (key === 'backspace') {
      e.preventDefault();
      pad.undo();
    } else if (key === 'c') {
      pad.clear();
    } else if (key === 's') {
      randomSample();
    }
  });

  // When a model appears (or another is activated), re-ask for what is shown.
  on('model-changed', () => {
    if (!pad.isEmpty) schedule();
  });
  on('load-sample', showSample);
  on('status', () => {
    if (noModelShown && status.state === 'no-model') showNoModel();
  });

  reset();
  return { pad };
}
