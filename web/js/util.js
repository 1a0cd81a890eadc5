// Small DOM and formatting helpers shared by the page's modules.
import { describeError, isAuthError } from './api.js';

/** Creates an element: el('button', {class: 'btn', onclick: fn}, 'Text', child). */
export function el(tag, props = {}, ...children) {
  const node = document.createElement(tag);
  for (const [key, value] of Object.entries(props)) {
    if (value === undefined || value === null || value === false) continue;
    if (key === 'class') node.className = value;
    else if (key === 'dataset') Object.assign(node.dataset, value);
    else if (key.startsWith('on') && typeof value === 'function') node.addEventListener(key.slice(2), value);
    else if (key in node && !key.includes('-')) node[key] = value;
    else node.setAttribute(key, value === true ? '' : value);
  }
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    node.append(child instanceof Node ? child : String(child));
  }
  return node;
}

export const $ = (selector, root = document) => root.querySelector(selector);

/** Sets textContent only when it changes (keeps screen readers and layout calm). */
export function setText(node, text) {
  const s = String(text);
  if (node.textContent !== s) node.textContent = s;
}

const intFmt = new Intl.NumberFormat('en-US');
export const fmtInt = (n) => (Number.isFinite(n) ? intFmt.format(Math.round(n)) : '–');
export const fmtPct = (x, digits = 1) => (Number.isFinite(x) ? `${(x * 100).toFixed(digits)}%` : '–');
export const fmtNum = (x, digits = 4) => (Number.isFinite(x) ? x.toFixed(digits) : '–');

/** 337418 -> "337k", 1234567 -> "1.2M". */
export function fmtCompact(n) {
  if (!Number.isFinite(n)) return '–';
  return new Intl.NumberFormat('en-US', { notation: 'compact', maximumFractionDigits: 1 }).format(n);
}

/** Seconds -> "3 s", "1 min 05 s", "1 h 02 min". */
export function fmtDuration(sec) {
  if (!Number.isFinite(sec) || sec < 0) return '–';
  if (sec < 10) return `${sec.toFixed(1)} s`;
  const s = Math.round(sec);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${String(s % 60).padStart(2, '0')} s`;
  return `${Math.floor(s / 3600)} h ${String(Math.floor((s % 3600) / 60)).padStart(2, '0')} min`;
}

const rtf = new Intl.RelativeTimeFormat('en', { numeric: 'auto' });
/** ISO time -> "2 minutes ago". */
export function fmtAgo(iso) {
  const t = Date.parse(iso);
  if (!Number.isFinite(t)) return '';
  const d = (t - Date.now()) / 1000;
  const a = Math.abs(d);
  if (a < 45) return 'just now';
  if (a < 3600) return rtf.format(Math.round(d / 60), 'minute');
  if (a < 86400) return rtf.format(Math.round(d / 3600), 'hour');
  return rtf.format(Math.round(d / 86400), 'day');
}

export const DATASET_NAMES = { mnist: 'MNIST digits', 'fashion-mnist': 'Fashion-MNIST' };
export const datasetName = (name) => DATASET_NAMES[name] || name;

const FASHION = ['T-shirt/top', 'Trouser', 'Pullover', 'Dress', 'Coat', 'Sandal', 'Shirt', 'Sneaker', 'Bag', 'Ankle boot'];
/** Human name of class `label` in `dataset` ("" for digits). */
export const className = (dataset, label) => (dataset === 'fashion-mnist' ? FASHION[label] || '' : '');

/**
 * Draws a 28x28 MNIST image (0 = background, 255 = ink) into `canvas`
 * (whose width/height should be 28; CSS scales it up, pixelated).
 * style 'mnist' is white on black (what the network sees), 'paper' black on white.
 */
export function drawPixels(canvas, pixels, style = 'mnist') {
  const ctx = canvas.getContext('2d');
  const img = ctx.createImageData(28, 28);
  for (let i = 0; i < 784; i++) {
    const v = Math.max(0, Math.min(255, pixels[i] | 0));
    const g = style === 'paper' ? 255 - v : v;
    img.data[i * 4] = g;
    img.data[i * 4 + 1] = g;
    img.data[i * 4 + 2] = g;
    img.data[i * 4 + 3] = 255;
  }
  ctx.putImageData(img, 0, 0);
}

/** Calls fn at most once per animation frame, with the latest arguments. */
export function rafThrottle(fn) {
  let queued = false;
  let lastArgs = [];
  return (...args) => {
    lastArgs = args;
    if (queued) return;
    queued = true;
    requestAnimationFrame(() => {
      queued = false;
      fn(...lastArgs);
    });
  };
}

/** Shows `text` in a message area; kind: 'error' | 'ok' | 'warn' | 'info'. */
export function say(node, text, kind = 'error') {
  node.classList.remove('error', 'ok', 'warn', 'info');
  if (text) node.classList.add(kind);
  setText(node, text);
}

/** Shows an API error in `node`; a token problem also sends the user to the token field. */
export function sayError(node, err) {
  say(node, describeError(err));
  if (isAuthError(err)) $('#token').focus();
}
