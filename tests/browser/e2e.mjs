// End-to-end browser test of the mnistd web page, run by tests/system/test_browser.sh
// against a real daemon that already has an active model.
//
//   node tests/browser/e2e.mjs BASE_URL [OUTDIR]
//
// Drives Debian's Chromium (CHROMIUM, default /usr/bin/chromium) through
// playwright-core with real pointer events, prints one line per check and a
// last line "browser: N passed, N failed"; exits 1 if any check failed.
import { chromium } from 'playwright-core';
import fs from 'node:fs';
import path from 'node:path';
import { DIGITS } from './digits.mjs';

const BASE = (process.argv[2] || 'http://127.0.0.1:8080/').replace(/\/?$/, '/');
const OUT = process.argv[3] || 'tests/out';
// The README's screenshot is refreshed only on request (MNISTD_SCREENSHOT_DOC=docs/screenshot.png),
// so a test run leaves the tree clean; the full-size one always goes to the output folder.
const DOC_SHOT = process.env.MNISTD_SCREENSHOT_DOC ?? '';
const EXECUTABLE = process.env.CHROMIUM || '/usr/bin/chromium';
const DEADLINE_MS = Number(process.env.E2E_DEADLINE_MS || 230000);
const DRAWN = ['1', '0', '7', '4', '2', '3', '5'];

fs.mkdirSync(OUT, { recursive: true });
let passed = 0;
let failed = 0;
let shots = 0;
const consoleErrors = [];
const started = Date.now();

function summary() {
  console.log(`browser: ${passed} passed, ${failed} failed`);
}

// Never hang CI: a hard deadline for the whole run.
const watchdog = setTimeout(() => {
  console.log(`FAIL deadline: the browser test did not finish within ${DEADLINE_MS / 1000} s`);
  failed++;
  summary();
  process.exit(1);
}, DEADLINE_MS);

function assert(cond, message) {
  if (!cond) throw new Error(message);
}

async function check(name, page, fn) {
  const t0 = Date.now();
  try {
    await fn();
    passed++;
    console.log(`ok   ${name} (${((Date.now() - t0) / 1000).toFixed(1)} s)`);
  } catch (err) {
    failed++;
    console.log(`FAIL ${name}: ${String(err && err.message ? err.message : err).split('\n')[0]}`);
    if (page) {
      const file = path.join(OUT, `failure-${++shots}.png`);
      await page.screenshot({ path: file, fullPage: true }).catch(() => {});
      console.log(`     screenshot: ${file}`);
    }
  }
}

function watchConsole(page, label) {
  page.on('console', (m) => {
    if (m.type() === 'error') consoleErrors.push(`${label}: ${m.text()}`);
  });
  page.on('pageerror', (e) => consoleErrors.push(`${label}: uncaught ${e.message}`));
}

/** Draws strokes (pad logical coordinates, 0..280) with real mouse events. */
async function draw(page, strokes) {
  await page.locator('#pad').scrollIntoViewIfNeeded();
  const box = await page.locator('#pad').boundingBox();
  assert(box && box.width > 100, 'the drawing pad is not visible');
  const X = (x) => box.x + (x * box.width) / 280;
  const Y = (y) => box.y + (y * box.height) / 280;
  for (const stroke of strokes) {
    await page.mouse.move(X(stroke[0][0]), Y(stroke[0][1]));
    await page.mouse.down();
    for (const [x, y] of stroke.slice(1)) await page.mouse.move(X(x), Y(y));
    await page.mouse.up();
  }
}

/** Waits until no prediction is pending and returns the shown label. */
async function settled(page) {
  await page.waitForFunction(() => document.querySelector('#result').getAttribute('aria-busy') === 'false');
  return (await page.textContent('#prediction')).trim();
}

/** Clears with the C shortcut and checks that the pad is blank again. */
async function clearPad(page) {
  await page.keyboard.press('c');
  const label = await settled(page);
  assert(label === '–', `after C the prediction shows "${label}", not "–"`);
}

const padInk = (page) => page.evaluate(() => {
  const c = document.querySelector('#pad');
  const d = c.getContext('2d').getImageData(0, 0, c.width, c.height).data;
  let ink = 0;
  for (let i = 0; i < d.length; i += 4) if (d[i] < 128) ink++;
  return ink;
});

const topPct = (page) => page.textContent('#probs li.is-top .pct');

async function fillForm(page, { epochs, limit, activate = 'never' }) {
  await page.fill('#epochs', String(epochs));
  await page.fill('#train_limit', limit ? String(limit) : '');
  await page.selectOption('#activate', activate);
}

const apiJson = (page, url) => page.evaluate(async (u) => (await fetch(u)).json(), url);

/**
 * Shrinks a PNG to `width` px with the browser's own scaler and rounds the
 * colour channels to multiples of 8 (invisible, but PNG packs it much
 * smaller); returns a Buffer.
 */
async function shrinkPng(page, png, width) {
  const url = `data:image/png;base64,${png.toString('base64')}`;
  const out = await page.evaluate(async ({ url, width }) => {
    const img = new Image();
    img.src = url;
    await img.decode();
    const c = document.createElement('canvas');
    c.width = width;
    c.height = Math.round((img.height * width) / img.width);
    const ctx = c.getContext('2d');
    ctx.imageSmoothingQuality = 'high';
    ctx.drawImage(img, 0, 0, c.width, c.height);
    const d = ctx.getImageData(0, 0, c.width, c.height);
    for (let i = 0; i < d.data.length; i++) if ((i & 3) !== 3) d.data[i] = Math.min(255, Math.round(d.data[i] / 8) * 8);
    ctx.putImageData(d, 0, 0);
    return c.toDataURL('image/png').split(',')[1];
  }, { url, width });
  return Buffer.from(out, 'base64');
}

const browser = await chromium.launch({
  executablePath: EXECUTABLE,
  headless: true,
  // launch() gives every run a fresh temporary user-data-dir.
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-background-networking',
    '--disable-component-update', '--disable-quic', '--no-first-run', '--disable-sync'],
});

try {
  const context = await browser.newContext({ viewport: { width: 1280, height: 1310 }, deviceScaleFactor: 1 });
  context.setDefaultTimeout(15000);
  const page = await context.newPage();
  watchConsole(page, 'desktop');

  // ------------------------------------------------------------ load
  await check('page loads: title, styles, uPlot, model ready', page, async () => {
    const res = await page.goto(BASE, { waitUntil: 'load' });
    assert(res && res.ok(), `GET / answered ${res && res.status()}`);
    assert((await page.title()).includes('mnistd'), 'title does not mention mnistd');
    await page.waitForSelector('#status[data-state="ready"]');
    assert(await page.evaluate(() => typeof window.uPlot === 'function'), 'uPlot did not load from /vendor/');
    const bg = await page.evaluate(() => getComputedStyle(document.body).backgroundColor);
    assert(bg !== 'rgba(0, 0, 0, 0)', 'app.css did not load');
    assert(/Model #\d+ ready/.test(await page.textContent('#status-text')), 'status does not name the model');
    assert(consoleErrors.length === 0, `console errors: ${consoleErrors.join(' | ')}`);
  });

  // ------------------------------------------------------------ drawing
  for (const digit of DRAWN) {
    await check(`drawn ${digit === '1' ? 'vertical line' : digit === '0' ? 'closed loop' : 'digit'} is recognised as ${digit}`, page, async () => {
      await clearPad(page);
      await draw(page, DIGITS[digit]);
      const label = await settled(page);
      assert(label === digit, `predicted "${label}" (${await topPct(page)}) instead of ${digit}`);
    });
  }

  await check('the model input (28x28 from explain) is shown', page, async () => {
    const lit = await page.evaluate(() => {
      const d = document.querySelector('#seen').getContext('2d').getImageData(0, 0, 28, 28).data;
      let n = 0;
      for (let i = 0; i < d.length; i += 4) if (d[i] > 128) n++;
      return n;
    });
    assert(lit > 20, `only ${lit} bright pixels in the model-input canvas`);
  });

  await check('undo (Ctrl+Z, Backspace, button) and clear (C, button)', page, async () => {
    await clearPad(page);
    await draw(page, DIGITS['0']);
    assert((await settled(page)) === '0', 'the loop is not a 0');
    const before = await topPct(page);
    await draw(page, [[[140, 60], [140, 220]]]);         // a second stroke through it
    await settled(page);
    await page.keyboard.press('Control+z');
    assert((await settled(page)) === '0', 'after Ctrl+Z the loop is not a 0 again');
    assert((await topPct(page)) === before, 'after Ctrl+Z the probabilities differ from the loop alone');
    await page.keyboard.press('Backspace');
    assert((await settled(page)) === '–', 'Backspace did not undo the last stroke');
    assert((await padInk(page)) === 0, 'the pad is not blank after undoing every stroke');
    await draw(page, DIGITS['1']);
    assert((await settled(page)) === '1', 'the line is not a 1');
    await page.click('#undo');
    assert((await settled(page)) === '–', 'the Undo button did not remove the stroke');
    await draw(page, DIGITS['7']);
    await settled(page);
    await page.click('#clear');
    assert((await settled(page)) === '–', 'the Clear button did not clear');
    assert((await padInk(page)) === 0, 'the pad is not blank after Clear');
  });

  // ------------------------------------------------------------ samples
  await check('random test digit: true label shown and predicted correctly', page, async () => {
    // A ~95% model gets some test digits wrong: every sample must show the
    // API's own label and prediction, and one of up to five must be right.
    let right = 0;
    const seen = [];
    for (let i = 0; i < 5 && !right; i++) {
      const sampleRes = page.waitForResponse((r) => r.url().includes('/v1/samples/random'));
      const predictRes = page.waitForResponse((r) => r.url().includes('/v1/predict') && r.request().method() === 'POST');
      await page.click('#sample');
      const sample = await (await sampleRes).json();
      const pred = await (await predictRes).json();
      const shown = await settled(page);
      await page.waitForSelector('#truth:not([hidden])');
      const truth = (await page.textContent('#true-label')).trim();
      assert(truth === String(sample.label), `true label shows ${truth}, the API said ${sample.label}`);
      assert(shown === String(pred.predictions[0].label), `prediction shows ${shown}, the API said ${pred.predictions[0].label}`);
      const badge = (await page.textContent('#truth-badge')).trim();
      assert(badge.includes(shown === truth ? 'correct' : 'wrong'), `badge "${badge}" for ${shown} vs ${truth}`);
      seen.push(`#${sample.index}: ${truth}->${shown}`);
      if (shown === truth) right++;
    }
    assert(right > 0, `no sample was predicted correctly: ${seen.join(', ')}`);
    assert((await padInk(page)) > 100, 'the sample is not shown on the pad');
    await clearPad(page);
  });

  // ------------------------------------------------------------ training
  await check('a job started from the form charts 2 epochs and succeeds', page, async () => {
    await fillForm(page, { epochs: 2, limit: 3000 });
    const post = page.waitForResponse((r) => r.url().endsWith('/v1/jobs') && r.request().method() === 'POST');
    await page.click('#start');
    const job = await (await post).json();
    assert(job.id && job.config.epochs === 2 && job.config.train_limit === 3000, `unexpected job ${JSON.stringify(job).slice(0, 200)}`);
    await page.waitForSelector(`.run[data-job="${job.id}"][data-state="succeeded"]`, { timeout: 90000 });
    await page.waitForSelector('#chart-loss[data-points="4"]');        // loss + val_loss at 2 epochs
    await page.waitForSelector('#chart-acc[data-points="4"]');
    const rows = await page.locator(`#metrics-table tbody tr[data-job="${job.id}"]`).count();
    assert(rows === 2, `${rows} epoch rows in the table, expected 2`);
    assert(await page.locator('#chart-loss canvas').count() > 0, 'no chart canvas');
    await page.waitForSelector(`#jobs-table tr[data-job="${job.id}"] .badge.succeeded`);
    const outcome = await page.textContent(`.run[data-job="${job.id}"] .outcome`);
    assert(/model #\d+/.test(outcome), `outcome "${outcome}" names no model`);
  });

  await check('compare: antirectifier and relu on the same axes with parameter counts', page, async () => {
    await fillForm(page, { epochs: 3, limit: 2000 });
    const posts = [];
    const onResponse = (r) => {
      if (r.url().endsWith('/v1/jobs') && r.request().method() === 'POST') posts.push(r.json());
    };
    page.on('response', onResponse);
    await page.click('#compare');
    await page.waitForFunction(() => document.querySelectorAll('.run').length === 2);
    await page.waitForFunction(() => [...document.querySelectorAll('.run')].every((r) => r.dataset.state === 'succeeded'), null, { timeout: 90000 });
    page.off('response', onResponse);
    const jobs = await Promise.all(posts);
    assert(jobs.length === 2, `${jobs.length} jobs were started`);
    assert(jobs.map((j) => j.config.arch).sort().join() === 'antirectifier,relu', 'not one job of each network');
    await page.waitForSelector('#chart-loss[data-points="12"]');       // 2 runs x (loss, val_loss) x 3 epochs
    const legend = await page.textContent('#run-legend');
    for (const j of jobs) {
      assert(legend.includes(j.parameters.toLocaleString('en-US')), `legend lacks ${j.config.arch}'s ${j.parameters} parameters`);
    }
    const series = await page.locator('#chart-loss .u-legend .u-series').count();
    assert(series === 5, `${series} series in the loss chart, expected epoch + 4`);
  });

  await check("custom network editor: the daemon's shape error is shown at the layer", page, async () => {
    await page.check('input[name="arch"][value="custom"]');
    await page.fill('#layers', JSON.stringify([
      { type: 'conv2d', filters: 4, kernel: 3, stride: 2 }, { type: 'max_pool2d', size: 3 },
      { type: 'conv2d', filters: 4, kernel: 5 }, { type: 'flatten' }, { type: 'dense', units: 10 }]));
    await page.waitForSelector('#layers-list li.bad');
    const bad = await page.locator('#layers-list li').nth(2).textContent();
    assert(/kernel 5 is larger than its 4x4 input/.test(bad), `layer 2 shows "${bad}"`);
    await page.fill('#layers', '[{"type":"flatten"},{"type":"dense","units":10}]');
    await page.waitForFunction(() => /7,850 parameters/.test(document.querySelector('#layers-msg').textContent));
    assert(await page.locator('#layers-list li.bad').count() === 0, 'a layer is still marked bad');
  });

  await check('a CNN job from the form predicts drawn digits', page, async () => {
    await page.check('input[name="arch"][value="cnn"]');
    await page.selectOption('#optimizer', 'adam');
    await fillForm(page, { epochs: 1, limit: 12000, activate: 'always' });
    const post = page.waitForResponse((r) => r.url().endsWith('/v1/jobs') && r.request().method() === 'POST');
    await page.click('#start');
    const job = await (await post).json();
    assert(job.config.arch === 'cnn' && job.parameters === 34826, `job ${JSON.stringify(job).slice(0, 200)}`);
    await page.waitForSelector(`.run[data-job="${job.id}"][data-state="succeeded"]`, { timeout: 180000 });
    const done = await apiJson(page, `v1/jobs/${job.id}`);
    await page.waitForFunction((id) => /Model #(\d+)/.exec(document.querySelector('#status-text').textContent)?.[1] === String(id),
      done.model_id, { timeout: 30000 });
    // The model list shows its layers on demand.
    const row = page.locator(`#models-table tr[data-model="${done.model_id}"] details.model-layers`);
    await row.locator('summary').click();
    const layers = await row.locator('li').allTextContents();
    assert(layers.length === 8 && /conv2d/.test(layers[0]) && layers[7] === 'softmax', `layers ${layers}`);
    let right = 0;
    const seen = [];
    for (const d of ['1', '3', '7']) {
      await clearPad(page);
      await draw(page, DIGITS[d]);
      const got = await settled(page);
      seen.push(`${d}->${got}`);
      if (got === d) right++;
    }
    assert(right >= 2, `the CNN read ${seen.join(', ')}`);
    await clearPad(page);
    await page.check('input[name="arch"][value="antirectifier"]');
    await page.selectOption('#optimizer', 'rmsprop');
  });

  await check('screenshot after drawing', page, async () => {
    await clearPad(page);
    await draw(page, DIGITS['3']);
    assert((await settled(page)) === '3', 'the 3 for the screenshot was not recognised');
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.mouse.move(0, 0);
    const png = await page.screenshot({ path: path.join(OUT, 'screenshot.png'), clip: { x: 0, y: 0, width: 1280, height: 1270 } });
    if (DOC_SHOT) {
      let small = null;
      for (const w of [800, 720, 640]) {
        small = await shrinkPng(page, png, w);
        if (small.length <= 150000) break;
      }
      assert(small.length <= 150000, `small screenshot is ${small.length} bytes`);
      fs.mkdirSync(path.dirname(DOC_SHOT), { recursive: true });
      fs.writeFileSync(DOC_SHOT, small);
      console.log(`     wrote ${path.join(OUT, 'screenshot.png')} and ${DOC_SHOT} (${Math.round(small.length / 1024)} KB)`);
    }
  });

  await check('a long job shows live progress and can be cancelled', page, async () => {
    await fillForm(page, { epochs: 40, limit: null });
    const post = page.waitForResponse((r) => r.url().endsWith('/v1/jobs') && r.request().method() === 'POST');
    await page.click('#start');
    const job = await (await post).json();
    const card = `.run[data-job="${job.id}"]`;
    await page.waitForSelector(`${card}[data-state="running"]`, { timeout: 30000 });
    await page.waitForFunction((sel) => /samples\/s/.test(document.querySelector(`${sel} .progress-text`).textContent), card);
    const text = await page.textContent(`${card} .progress-text`);
    assert(/Epoch \d+ of 40/.test(text) && /left/.test(text), `progress text "${text}"`);
    await page.click(`${card} button:has-text("Cancel")`);
    await page.waitForSelector(`${card}[data-state="cancelled"]`, { timeout: 30000 });
    await page.waitForSelector(`#jobs-table tr[data-job="${job.id}"] .badge.cancelled`);
    const api = await apiJson(page, `v1/jobs/${job.id}`);
    assert(api.state === 'cancelled', `the API says ${api.state}`);
  });

  // ------------------------------------------------------------ models
  await check('models: list, evaluation heat map, misclassified gallery', page, async () => {
    const models = (await apiJson(page, 'v1/models')).models;
    assert(models.length >= 4, `${models.length} models`);
    await page.waitForFunction((n) => document.querySelectorAll('#models-table tbody tr').length === n, models.length);
    const active = models.find((m) => m.active);
    const row = `#models-table tr[data-model="${active.id}"]`;
    assert(await page.locator(`${row}[data-active="true"] .active-badge`).isVisible(), 'active model not marked');
    const acc = await page.textContent(`${row} td:nth-child(4)`);
    assert(acc.includes((active.test_accuracy * 100).toFixed(2)), `accuracy cell "${acc}"`);
    await page.click(`${row} button:has-text("Evaluate")`);
    await page.waitForSelector('#confusion tbody tr');
    const cells = await page.locator('#confusion tbody td:not(.recall)').count();
    assert(cells === 100, `${cells} confusion cells`);
    const ev = await apiJson(page, `v1/models/${active.id}/evaluation`);
    const diag = await page.textContent('#confusion tbody tr:nth-child(2) td:nth-child(3)');
    assert(diag.replace(/,/g, '') === String(ev.confusion[1][1]), `cell [1][1] shows ${diag}, API ${ev.confusion[1][1]}`);
    const cards = await page.locator('#gallery .digit-card').count();
    assert(cards === ev.misclassified.length && cards > 0, `${cards} gallery images for ${ev.misclassified.length} errors`);
    await page.click('#gallery li:first-child .digit-card');
    await page.waitForSelector('#truth:not([hidden])');
    await settled(page);
    const truth = (await page.textContent('#true-label')).trim();
    assert(truth === String(ev.misclassified[0].label), `gallery image loaded with label ${truth}`);
  });

  await check('models: download links for the mnistd file and ONNX', page, async () => {
    const models = (await apiJson(page, 'v1/models')).models;
    const m = models[0];
    const row = `#models-table tr[data-model="${m.id}"]`;
    const native = await page.getAttribute(`${row} a:has-text("Download"):not(:has-text("ONNX"))`, 'href');
    assert(native === `v1/models/${m.id}/file`, `native link ${native}`);
    const [dl] = await Promise.all([page.waitForEvent('download'), page.click(`${row} a:has-text("Download ONNX")`)]);
    assert(dl.suggestedFilename() === `mnistd-model-${m.id}.onnx`, `saved as ${dl.suggestedFilename()}`);
    const bytes = fs.readFileSync(await dl.path());
    // ModelProto field 1 (ir_version) comes first: tag 0x08, value 8.
    assert(bytes.length > m.parameters * 4 && bytes[0] === 0x08 && bytes[1] === 0x08 && bytes.includes('probabilities'),
      `downloaded ${bytes.length} bytes starting ${bytes.subarray(0, 4).toString('hex')}`);
  });

  await check('activate another model', page, async () => {
    const models = (await apiJson(page, 'v1/models')).models;
    const other = models.find((m) => !m.active);
    const original = models.find((m) => m.active);
    await page.click(`#models-table tr[data-model="${other.id}"] button:has-text("Activate")`);
    await page.waitForSelector(`#models-table tr[data-model="${other.id}"][data-active="true"]`);
    await page.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), other.id);
    await page.click(`#models-table tr[data-model="${original.id}"] button:has-text("Activate")`);
    await page.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), original.id);
  });

  // ------------------------------------------------------------ live (GET /v1/events)
  await check('changes made elsewhere show at once (daemon events), without polling the job list', page, async () => {
    // Let any job of the checks above finish, so the list has nothing active to follow.
    await page.waitForFunction(() => !document.querySelector('#jobs-table tr[data-state="queued"], #jobs-table tr[data-state="running"]'), null, { timeout: 60000 });
    let listReads = 0;
    const count = (r) => { if (/\/v1\/jobs(\?|$)/.test(r.url()) && r.method() === 'GET') listReads++; };
    page.on('request', count);
    await page.waitForTimeout(12000);
    const idleReads = listReads;
    // A job started by someone else (curl, another tab) appears without waiting for a poll.
    const t0 = Date.now();
    const res = await page.request.post(`${BASE}v1/jobs`, { data: { epochs: 1, train_limit: 2000, activate: 'never' } });
    assert(res.status() === 202, `POST /v1/jobs answered ${res.status()}`);
    const job = await res.json();
    await page.waitForSelector(`#jobs-table tr[data-job="${job.id}"]`, { timeout: 4000 });
    const shownAfter = Date.now() - t0;
    await page.waitForSelector(`#jobs-table tr[data-job="${job.id}"][data-state="succeeded"]`, { timeout: 60000 });
    // Its model arrives in the model list, and an activation made elsewhere reaches the header.
    const made = (await apiJson(page, 'v1/models')).models.find((m) => m.job_id === job.id);
    assert(made, `job ${job.id} made no model`);
    await page.waitForSelector(`#models-table tr[data-model="${made.id}"]`, { timeout: 4000 });
    const original = (await apiJson(page, 'v1/models')).models.find((m) => m.active);
    const t1 = Date.now();
    const act = await page.request.post(`${BASE}v1/models/${made.id}/activate`);
    assert(act.ok(), `activate answered ${act.status()}`);
    await page.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), made.id, { timeout: 4000 });
    const activatedAfter = Date.now() - t1;
    await page.request.post(`${BASE}v1/models/${original.id}/activate`);
    await page.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), original.id, { timeout: 4000 });
    page.off('request', count);
    assert(idleReads === 0, `the idle page read the job list ${idleReads} times in 12 s`);
    console.log(`     job row after ${shownAfter} ms, activation in the header after ${activatedAfter} ms, 0 list reads in 12 s idle`);
  });

  // ------------------------------------------------------------ accessibility
  await check('accessibility: labels, names, visible keyboard focus', page, async () => {
    const problems = await page.evaluate(() => {
      const bad = [];
      for (const c of document.querySelectorAll('input, select')) {
        if (!c.labels?.length && !c.getAttribute('aria-label') && c.type !== 'hidden') bad.push(`unlabelled ${c.id || c.name}`);
      }
      for (const b of document.querySelectorAll('button')) {
        if (!(b.getAttribute('aria-label') || b.textContent.trim())) bad.push(`unnamed button ${b.outerHTML.slice(0, 60)}`);
      }
      for (const i of document.querySelectorAll('img')) if (!i.hasAttribute('alt')) bad.push(`img without alt ${i.src}`);
      return bad;
    });
    assert(problems.length === 0, problems.join('; '));
    await page.evaluate(() => window.scrollTo(0, 0));
    await page.click('h1');
    let focused = '';
    for (let i = 0; i < 12 && focused !== 'clear'; i++) {
      await page.keyboard.press('Tab');
      focused = await page.evaluate(() => document.activeElement.id);
    }
    assert(focused === 'clear', 'Tab never reached the Clear button');
    const outline = await page.evaluate(() => getComputedStyle(document.activeElement).outlineStyle);
    assert(outline !== 'none', 'the focused button has no visible outline');
  });

  // ------------------------------------------------------------ no model, API token, daemon gone
  if (process.env.E2E_AUTH_BASE) {
    const ctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    ctx.setDefaultTimeout(15000);
    const p2 = await ctx.newPage();
    const expected = [];       // console errors this scenario provokes on purpose
    p2.on('console', (m) => {
      if (m.type() !== 'error') return;
      if (expected.some((re) => re.test(m.text()))) return;
      consoleErrors.push(`token page: ${m.text()}`);
    });
    p2.on('pageerror', (e) => consoleErrors.push(`token page: uncaught ${e.message}`));
    const token = process.env.E2E_AUTH_TOKEN;
    await check('no model yet: clear status and message, no failing requests', p2, async () => {
      await p2.goto(process.env.E2E_AUTH_BASE);
      await p2.waitForSelector('#status[data-state="no-model"]');
      assert(/No model loaded yet/.test(await p2.textContent('#status-text')), 'status does not say there is no model');
      await draw(p2, DIGITS['1']);
      await settled(p2);
      const msg = await p2.textContent('#predict-msg');
      assert(/No model is loaded yet/.test(msg), `predict message "${msg}"`);
    });
    await check('401 asks for the API token; with it the job runs and the model arrives', p2, async () => {
      await fillForm(p2, { epochs: 2, limit: 5000, activate: 'always' });
      expected.push(/status of 401/);
      await p2.click('#start');
      await p2.waitForSelector('#form-msg.error');
      const msg = await p2.textContent('#form-msg');
      assert(/API token/.test(msg), `401 message "${msg}"`);
      assert(await p2.evaluate(() => document.activeElement.id === 'token'), 'the token field is not focused');
      await p2.fill('#token', token);
      const req = p2.waitForRequest((r) => r.url().endsWith('/v1/jobs') && r.method() === 'POST');
      await p2.click('#start');
      const auth = (await req).headers().authorization;
      assert(auth === `Bearer ${token}`, `Authorization header "${auth}"`);
      assert(await p2.evaluate(() => sessionStorage.getItem('mnistd.apiToken')) === token, 'token not in sessionStorage');
      await p2.waitForSelector('#status[data-state="ready"]', { timeout: 60000 });
      // The stroke drawn before the model existed is now recognised.
      await p2.waitForFunction(() => /^\d$/.test(document.querySelector('#prediction').textContent.trim()));
      assert(!(await p2.textContent('#predict-msg')).trim(), 'the no-model message is still shown');
    });
    await check('daemon unreachable: says so, and recovers', p2, async () => {
      expected.push(/ERR_FAILED|ERR_CONNECTION/);
      await p2.route(/\/(readyz|v1\/.*)$/, (route) => route.abort('connectionrefused'));
      await p2.evaluate(() => document.dispatchEvent(new Event('visibilitychange')));
      await p2.waitForSelector('#status[data-state="down"]');
      assert(/Cannot reach the mnistd daemon/.test(await p2.textContent('#status-text')), 'no unreachable message');
      await p2.unroute(/\/(readyz|v1\/.*)$/);
      await p2.click('#status-retry');
      await p2.waitForSelector('#status[data-state="ready"]');
    });
    await ctx.close();
  }

  // ------------------------------------------------------------ small touch screen
  const mobile = await browser.newContext({ viewport: { width: 360, height: 740 }, deviceScaleFactor: 2, hasTouch: true, isMobile: true });
  mobile.setDefaultTimeout(15000);
  const phone = await mobile.newPage();
  watchConsole(phone, '360px');
  await check('360 px wide, 2x DPR: no sideways scrolling, crisp pad, touch drawing', phone, async () => {
    await phone.goto(BASE);
    await phone.waitForSelector('#status[data-state="ready"]');
    const width = await phone.evaluate(() => document.documentElement.scrollWidth);
    assert(width <= 360, `the page is ${width} px wide`);
    const pad = await phone.evaluate(() => {
      const c = document.querySelector('#pad');
      return { css: c.getBoundingClientRect().width, px: c.width, touch: getComputedStyle(c).touchAction };
    });
    assert(pad.css >= 250 && pad.css <= 330, `pad is ${pad.css} CSS px`);
    assert(pad.px === Math.round(pad.css * 2), `pad backing store ${pad.px} px for ${pad.css} CSS px at 2x`);
    assert(pad.touch === 'none', `touch-action is ${pad.touch}`);
    // Real touch events through the DevTools protocol: draw a 1, the page must not scroll.
    await phone.locator('#pad').scrollIntoViewIfNeeded();
    const box = await phone.locator('#pad').boundingBox();
    const scrollBefore = await phone.evaluate(() => window.scrollY);
    const cdp = await mobile.newCDPSession(phone);
    const at = (y) => [{ x: box.x + box.width / 2, y: box.y + (y * box.height) / 280 }];
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchStart', touchPoints: at(40) });
    for (let y = 50; y <= 240; y += 10) await cdp.send('Input.dispatchTouchEvent', { type: 'touchMove', touchPoints: at(y) });
    await cdp.send('Input.dispatchTouchEvent', { type: 'touchEnd', touchPoints: [] });
    const label = await settled(phone);
    assert(label === '1', `a touch-drawn line was predicted as "${label}"`);
    const scrollAfter = await phone.evaluate(() => window.scrollY);
    assert(scrollAfter === scrollBefore, `the page scrolled from ${scrollBefore} to ${scrollAfter} while drawing`);
    await phone.screenshot({ path: path.join(OUT, 'screenshot-360.png'), fullPage: true });
  });
  await mobile.close();

  // ------------------------------------------------------------ a read-only replica (issue 15)
  if (process.env.E2E_REPLICA_BASE) {
    const rctx = await browser.newContext({ viewport: { width: 1280, height: 1000 } });
    rctx.setDefaultTimeout(20000);
    const rp = await rctx.newPage();
    watchConsole(rp, 'replica');
    const refused = [];
    rp.on('response', (r) => { if (r.status() >= 400) refused.push(`${r.status()} ${r.request().method()} ${r.url()}`); });
    await check('replica: predictions only, names its primary, asks for nothing it would refuse', rp, async () => {
      await rp.goto(process.env.E2E_REPLICA_BASE);
      await rp.waitForSelector('#status[data-state="ready"]');
      await rp.waitForSelector('#replica-note:not([hidden])');
      const note = await rp.textContent('#replica-note');
      assert(note.includes(BASE.replace(/\/$/, '')), `the note does not name the primary: "${note.trim()}"`);
      assert(!(await rp.locator('#train').isVisible()), 'the Train panel is shown on a replica');
      assert(!(await rp.locator('#upload-form').isVisible()), 'the upload form is shown on a replica');
      assert(!(await rp.locator('nav a[href="#train"]').isVisible()), 'the nav links to Train on a replica');
      await rp.waitForSelector('#models-table tbody tr');
      for (const b of ['Activate', 'Delete', 'Download']) {
        const n = await rp.locator(`#models-table tbody tr :is(button, a):has-text("${b}")`).evaluateAll((els) => els.filter((e) => e.offsetParent !== null).length);
        assert(n === 0, `${n} visible "${b}" controls on a replica`);
      }
      await draw(rp, DIGITS['7']);
      const label = await settled(rp);
      assert(label === '7', `a drawn 7 was read as "${label}" on the replica`);
    });
    await check("replica: follows the primary's activation live", rp, async () => {
      const models = (await apiJson(page, 'v1/models')).models;
      const original = models.find((m) => m.active);
      const other = models.find((m) => !m.active && m.dataset === 'mnist');
      let res = await page.request.post(`${BASE}v1/models/${other.id}/activate`);
      assert(res.ok(), `activate on the primary answered ${res.status()}`);
      await rp.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), other.id, { timeout: 15000 });
      res = await page.request.post(`${BASE}v1/models/${original.id}/activate`);
      await rp.waitForFunction((id) => document.querySelector('#status-text').textContent.includes(`Model #${id} ready`), original.id, { timeout: 15000 });
      assert(refused.length === 0, `the replica page made refused requests: ${refused.slice(0, 3).join(', ')}`);
    });
    await rctx.close();
  }

  // ------------------------------------------------------------ own data (issue 13)
  if (process.env.E2E_DATASET_ZIP) {
    const dctx = await browser.newContext({ viewport: { width: 1280, height: 900 } });
    dctx.setDefaultTimeout(60000);
    const dp = await dctx.newPage();
    watchConsole(dp, 'data');
    await check('Data: upload a PNG-folder zip, train one epoch on it, predictions name its classes', dp, async () => {
      await dp.goto(BASE);
      await dp.waitForSelector('#status[data-state="ready"]');
      await dp.fill('#upload-name', 'digits3');
      await dp.setInputFiles('#upload-file', process.env.E2E_DATASET_ZIP);
      await dp.click('#upload-start');
      await dp.waitForFunction(() => /Data set digits3/.test(document.querySelector('#upload-msg').textContent));
      const card = dp.locator('#datasets-list li[data-name="digits3"]');
      await card.waitFor();
      assert(/one, seven, zero/.test(await card.textContent()), 'the class names are not listed');
      await dp.waitForFunction(() => document.querySelectorAll('#datasets-list li[data-name="digits3"] .strip canvas').length > 0);
      await dp.waitForSelector('#dataset option[value="digits3"]', { state: 'attached' });
      await dp.selectOption('#dataset', 'digits3');
      await fillForm(dp, { epochs: 1, limit: 0, activate: 'always' });
      await dp.click('#start');
      let model = null;
      for (let i = 0; i < 120 && !model; i++) {
        const ms = await apiJson(dp, 'v1/models');
        model = (ms.models || []).find((m) => m.dataset === 'digits3' && m.active);
        if (!model) await dp.waitForTimeout(500);
      }
      assert(model, 'no active model trained on digits3');
      assert(model.classes.join(',') === 'one,seven,zero', `model classes ${model.classes}`);
      await dp.reload();
      await dp.waitForSelector('#status[data-state="ready"]');
      await dp.click('#sample');
      await dp.waitForFunction(() => ['one', 'seven', 'zero'].includes(document.querySelector('#prediction-name').textContent));
      const bars = await dp.locator('#probs li').count();
      assert(bars === 3, `${bars} probability bars for a 3-class model`);
      const names = await dp.locator('#probs li .name').allTextContents();
      assert(names.join(',') === 'one,seven,zero', `bar names ${names}`);
      await dp.screenshot({ path: path.join(OUT, 'screenshot-data.png'), fullPage: true });
    });
    await dctx.close();
  }

  // ------------------------------------------------------------ console
  await check('no console errors or uncaught exceptions', null, async () => {
    assert(consoleErrors.length === 0, consoleErrors.slice(0, 5).join(' | '));
  });
  await context.close();
} catch (err) {
  failed++;
  console.log(`FAIL the browser run stopped: ${err && err.stack ? err.stack.split('\n').slice(0, 3).join(' ') : err}`);
} finally {
  await browser.close().catch(() => {});
}

clearTimeout(watchdog);
console.log(`     ${((Date.now() - started) / 1000).toFixed(1)} s${failed ? `; screenshots and daemon logs in ${OUT}/` : ''}`);
summary();
process.exit(failed ? 1 : 0);
