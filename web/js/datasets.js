// The "Data" panel: the data sets with their classes, counts and a strip of
// random test images; uploads by drag-and-drop or file picker with a
// progress bar (the upload, then the daemon's conversion) and the daemon's
// own message when it refuses. Announces the list on the bus ('datasets').
import { listDatasets, uploadDataset, deleteDataset, datasetSample, describeError } from './api.js';
import { emit, on } from './bus.js';
import { $, el, fmtInt, say, drawPixels, datasetName } from './util.js';

const STRIP = 8;
let chosen = null;

async function strip(name, box) {
  const cells = [];
  for (let i = 0; i < STRIP; i++) {
    try {
      const s = await datasetSample(name);
      const canvas = el('canvas', { width: 28, height: 28, title: s.class, 'aria-hidden': 'true' });
      drawPixels(canvas, s.pixels);
      cells.push(el('li', {}, canvas, el('small', {}, s.class)));
    } catch { break; }
  }
  box.replaceChildren(...cells);
}

function card(d) {
  const samples = el('ul', { class: 'strip', 'aria-label': `random test images of ${d.name}` });
  const del = d.builtin ? null : el('button', {
    type: 'button', class: 'btn small ghost primary-only', 'aria-label': `Delete data set ${d.name}`,
    onclick: async () => {
      try { await deleteDataset(d.name); refresh(); } catch (err) { say($('#upload-msg'), describeError(err), 'error'); }
    },
  }, 'Delete');
  const classes = d.classes.length > 12 ? `${d.classes.slice(0, 12).join(', ')}, … (${d.classes.length})` : d.classes.join(', ');
  const li = el('li', { class: 'dataset', dataset: { name: d.name } },
    el('div', { class: 'ds-head' }, el('b', {}, datasetName(d.name)),
      el('span', { class: 'hint' }, ` ${fmtInt(d.train)} train · ${fmtInt(d.test)} test · ${d.classes.length} classes${d.builtin ? ' · built in' : ` · ${d.source_format}`}`), del),
    el('p', { class: 'classes' }, classes), samples);
  strip(d.name, samples);
  return li;
}

async function refresh() {
  try {
    const data = await listDatasets();
    const list = (data && data.datasets) || [];
    $('#datasets-list').replaceChildren(...list.map(card));
    emit('datasets', list);
  } catch (err) {
    say($('#upload-msg'), describeError(err), 'error');
  }
}

function choose(file) {
  chosen = file || null;
  $('#drop-hint').textContent = chosen ? `${chosen.name} (${fmtInt(chosen.size)} bytes)` : 'Drop a .zip, .tar, .tar.gz or .csv here, or click to choose a file';
  const name = $('#upload-name');
  if (chosen && !name.value) name.value = chosen.name.toLowerCase().replace(/\.(zip|tar\.gz|tgz|tar|csv)$/, '').replace(/[^a-z0-9._-]/g, '-').replace(/^[^a-z0-9]+/, '').slice(0, 64);
}

async function upload(e) {
  e.preventDefault();
  const msg = $('#upload-msg'), bar = $('#upload-progress'), form = $('#upload-form');
  if (!form.reportValidity()) return;
  if (!chosen) { say(msg, 'Choose a file first (drop it on the box or click it).', 'error'); return; }
  bar.hidden = false;
  bar.value = 0;
  $('#upload-start').disabled = true;
  say(msg, 'Uploading…', 'info');
  try {
    const d = await uploadDataset($('#upload-name').value.trim(), chosen, {
      preprocess: $('#upload-raw').checked ? 'none' : undefined,
      onProgress: (f) => {
        if (f === null) { bar.removeAttribute('value'); say(msg, 'Converting…', 'info'); } else bar.value = f;
      },
    });
    say(msg, `Data set ${d.name}: ${d.classes.length} classes, ${fmtInt(d.train)} train and ${fmtInt(d.test)} test images.`, 'ok');
    choose(null);
    $('#upload-name').value = '';
    refresh();
  } catch (err) {
    say(msg, describeError(err), 'error');
  } finally {
    bar.hidden = true;
    $('#upload-start').disabled = false;
  }
}

export function initDatasets() {
  const zone = $('#dropzone'), input = $('#upload-file');
  zone.addEventListener('click', () => input.click());
  zone.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); input.click(); } });
  input.addEventListener('change', () => choose(input.files[0]));
  zone.addEventListener('dragover', (e) => { e.preventDefault(); zone.classList.add('over'); });
  zone.addEventListener('dragleave', () => zone.classList.remove('over'));
  zone.addEventListener('drop', (e) => { e.preventDefault(); zone.classList.remove('over'); choose(e.dataTransfer.files[0]); });
  $('#upload-form').addEventListener('submit', upload);
  on('refresh-datasets', refresh);
  on('resync', refresh);
  refresh();
}
