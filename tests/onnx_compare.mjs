// Runs an exported ONNX model in onnxruntime-node on every image of an IDX
// file and compares with mnistd's own predictions of the same images
// (`mnistd predict --json`, one line per image). Used by tests/test_onnx.sh.
//
//   node tests/onnx_compare.mjs MODEL.onnx IMAGES-idx3 PREDICTIONS.jsonl [TOL]
//
// Prints one JSON line {images, argmax_agree, max_abs_diff, ...} and exits
// 1 when any image gets another class or a probability differs by more
// than TOL (default 1e-4), or the graph's interface is not the documented
// one.
import { readFileSync } from 'node:fs';
import { gunzipSync } from 'node:zlib';
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);
const ort = require('onnxruntime-node');

const [modelPath, imagesPath, predPath, tolArg] = process.argv.slice(2);
if (!predPath) {
  console.error('usage: node tests/onnx_compare.mjs MODEL.onnx IMAGES PREDICTIONS.jsonl [TOL]');
  process.exit(2);
}
const tol = tolArg ? Number(tolArg) : 1e-4;

function readIdxImages(path) {
  let b = readFileSync(path);
  if (b[0] === 0x1f && b[1] === 0x8b) b = gunzipSync(b);
  if (b.readUInt32BE(0) !== 0x803) throw new Error(`${path}: not an IDX image file`);
  const n = b.readUInt32BE(4), rows = b.readUInt32BE(8), cols = b.readUInt32BE(12);
  if (rows !== 28 || cols !== 28) throw new Error(`${path}: ${rows}x${cols} images`);
  return { n, px: b.subarray(16, 16 + n * 784) };
}

const { n, px } = readIdxImages(imagesPath);
const ref = readFileSync(predPath, 'utf8').split('\n').filter((l) => l.startsWith('{"file"'))
  .map((l) => JSON.parse(l));
if (ref.length !== n) throw new Error(`${predPath}: ${ref.length} predictions for ${n} images`);

const session = await ort.InferenceSession.create(modelPath);
const problems = [];
if (session.inputNames.join() !== 'image') problems.push(`inputs ${session.inputNames}`);
if (session.outputNames.join() !== 'probabilities') problems.push(`outputs ${session.outputNames}`);

const BATCH = 1000;
let agree = 0, maxDiff = 0, worst = -1;
let classes = 0;
for (let off = 0; off < n; off += BATCH) {
  const k = Math.min(BATCH, n - off);
  const x = new Float32Array(k * 784);
  for (let i = 0; i < k * 784; i++) x[i] = px[off * 784 + i] / 255;
  const out = await session.run({ image: new ort.Tensor('float32', x, [k, 1, 28, 28]) });
  const p = out.probabilities;
  classes = p.dims[1];
  if (p.dims[0] !== k) problems.push(`output dims ${p.dims}`);
  for (let i = 0; i < k; i++) {
    const row = p.data.subarray(i * classes, (i + 1) * classes);
    const want = ref[off + i].probabilities;
    let arg = 0;
    for (let j = 0; j < classes; j++) {
      if (row[j] > row[arg]) arg = j;
      const d = Math.abs(row[j] - want[j]);
      if (!(d <= maxDiff)) { maxDiff = d; worst = off + i; }
    }
    if (arg === ref[off + i].label) agree++;
  }
}
const ok = problems.length === 0 && agree === n && maxDiff <= tol;
console.log(JSON.stringify({ model: modelPath, images: n, classes, argmax_agree: agree,
  max_abs_diff: maxDiff, worst_image: worst, tolerance: tol, problems, ok }));
process.exit(ok ? 0 : 1);
