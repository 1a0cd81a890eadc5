// What the "Draw a digit" panel shows: the answer, its confidence, the ten
// probability bars, the 28x28 image the model saw, the true label of a test
// image, and messages. Pure rendering: no requests, no timers.
import { $, el, setText, fmtPct, drawPixels, className, datasetName } from './util.js';

export class PredictView {
  constructor() {
    this.result = $('#result');
    this.prediction = $('#prediction');
    this.predName = $('#prediction-name');
    this.confidence = $('#confidence');
    this.message = $('#predict-msg');
    this.seen = $('#seen');
    this.truth = $('#truth');
    this.trueLabel = $('#true-label');
    this.truthBadge = $('#truth-badge');
    this.sampleInfo = $('#sample-info');
    this.hint = $('#pad-hint');
    this.noModelShown = false;    // the "no model yet" message is up (kept current)
    this.rows = [];
    this.ensureRows(10);
  }

  /** One bar per class of the model (2..256; ten for the built-in sets). */
  ensureRows(n) {
    if (this.rows.length === n) return;
    const probs = $('#probs');
    this.rows = [];
    const items = [];
    for (let d = 0; d < n; d++) {
      const fill = el('span', { class: 'fill' });
      const pct = el('span', { class: 'pct' }, '–');
      const name = el('span', { class: 'name' });
      const li = el('li', { dataset: { digit: String(d) } },
        el('span', { class: 'digit' }, String(d)), name,
        el('span', { class: 'bar', 'aria-hidden': 'true' }, fill), pct);
      items.push(li);
      this.rows.push({ li, fill, pct, name });
    }
    probs.replaceChildren(...items);
  }

  setBusy(busy) {
    this.result.setAttribute('aria-busy', busy ? 'true' : 'false');
  }

  showHint(shown) {
    this.hint.hidden = !shown;
  }

  /** kind: 'error' | 'warn' | 'ok' | 'info'; an empty text clears the message. */
  showMessage(text, kind = 'error') {
    this.noModelShown = false;
    setText(this.message, text);
    this.message.className = `msg ${text ? kind : ''}`;
  }

  /** training: the status' sentence about the job making the first model, if any. */
  showNoModel(training, daemonSays) {
    setText(this.confidence, '');
    this.showMessage(training
      ? `No model is loaded yet, so nothing can be recognised: ${training} Your drawing will be recognised as soon as it is ready.`
      : `No model is loaded yet, so nothing can be recognised${daemonSays ? ` (${daemonSays})` : ''}. Train one under “Train a model”.`, 'warn');
    this.noModelShown = true;
  }

  /** Back to the empty pad's look. */
  reset() {
    this.truth.hidden = true;
    setText(this.prediction, '–');
    setText(this.predName, '');
    setText(this.confidence, 'Draw a digit to see what the model thinks it is.');
    this.result.dataset.label = '';
    for (const r of this.rows) {
      r.fill.style.width = '0%';
      setText(r.pct, '–');
      r.li.classList.remove('is-top');
    }
    const ctx = this.seen.getContext('2d');
    ctx.fillStyle = '#000';
    ctx.fillRect(0, 0, 28, 28);
    this.hint.hidden = false;
    this.showMessage('');
  }

  /** A test image is on the pad: its true label, waiting for the answer. */
  showSample(s) {
    this.hint.hidden = true;
    this.truth.hidden = false;
    setText(this.trueLabel, String(s.label));
    const name = s.class !== undefined && s.class !== String(s.label) ? s.class : className(s.dataset, s.label);
    setText(this.sampleInfo, `${name ? `${name} · ` : ''}test image #${s.index} of ${datasetName(s.dataset || 'mnist')}`);
    this.truthBadge.className = 'badge';
    setText(this.truthBadge, '…');
    setText(this.prediction, '…');
  }

  hideSample() {
    this.truth.hidden = true;
  }

  /**
   * Shows prediction `p` (one element of the daemon's `predictions`) made by
   * model `modelId` on `dataset`; `sample` is the test image shown, if any;
   * `settled` says whether this is the final answer (announced to screen readers).
   */
  showPrediction(p, { modelId, dataset, classes, sample, settled }) {
    this.showMessage('');
    if (Array.isArray(p.pixels) && p.pixels.length === 784) drawPixels(this.seen, p.pixels);
    // The model's class names (a digit's name is its label: not repeated).
    const name = (d) => {
      const c = Array.isArray(classes) && classes[d] !== undefined ? classes[d]
        : (d === p.label && p.class !== undefined ? p.class : className(dataset, d));
      return c === String(d) ? '' : c;
    };
    if (Array.isArray(p.probabilities) && p.probabilities.length >= 2) this.ensureRows(p.probabilities.length);
    if (p.empty) {
      setText(this.prediction, '?');
      setText(this.predName, '');
      setText(this.confidence, 'The model saw no ink: draw a larger or darker digit.');
      this.result.dataset.label = '';
    } else {
      setText(this.prediction, String(p.label));
      setText(this.predName, name(p.label));
      setText(this.confidence, `${fmtPct(p.confidence)} sure${modelId ? ` · model #${modelId}` : ''}`);
      this.result.dataset.label = String(p.label);
    }
    const probs = Array.isArray(p.probabilities) ? p.probabilities : [];
    this.rows.forEach((r, d) => {
      const v = Number(probs[d]) || 0;
      r.fill.style.width = `${(v * 100).toFixed(1)}%`;
      setText(r.pct, fmtPct(v));
      setText(r.name, name(d));
      r.li.classList.toggle('is-top', !p.empty && d === p.label);
      r.li.setAttribute('aria-label', `${d}${name(d) ? ` (${name(d)})` : ''}: ${fmtPct(v)}`);
    });
    // Screen readers hear the settled answer, not every guess made mid-stroke.
    if (settled) {
      setText($('#announce'), p.empty ? 'Nothing recognised.'
        : `Prediction: ${p.label}${name(p.label) ? ` (${name(p.label)})` : ''}, ${fmtPct(p.confidence, 0)} sure${sample ? `; the true label is ${sample.label}` : ''}.`);
    }
    if (sample) {
      const ok = !p.empty && p.label === sample.label;
      this.truthBadge.className = `badge ${ok ? 'succeeded' : 'failed'}`;
      setText(this.truthBadge, ok ? '✓ correct' : '✗ wrong');
    }
  }
}
