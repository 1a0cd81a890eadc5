// The drawing pad: Pointer Events (mouse, touch, pen), strokes kept as point
// lists in a fixed 280x280 logical space so the picture can be redrawn at any
// size: crisp on high-DPI screens, after undo, and for the PNG upload.

export const SIZE = 280;          // logical side of the pad (CSS px at full size)
const LINE_WIDTH = 20;            // logical stroke width: MNIST-like proportions
const MIN_STEP = 1.5;             // ignore pointer jitter below this (logical px)

function traceStroke(ctx, pts) {
  ctx.beginPath();
  if (pts.length === 1) {
    ctx.arc(pts[0].x, pts[0].y, LINE_WIDTH / 2, 0, Math.PI * 2);
    ctx.fill();
    return;
  }
  // Quadratic curves through the midpoints: smooth, and still exact at the ends.
  ctx.moveTo(pts[0].x, pts[0].y);
  for (let i = 1; i < pts.length - 1; i++) {
    const mx = (pts[i].x + pts[i + 1].x) / 2;
    const my = (pts[i].y + pts[i + 1].y) / 2;
    ctx.quadraticCurveTo(pts[i].x, pts[i].y, mx, my);
  }
  const last = pts[pts.length - 1];
  ctx.lineTo(last.x, last.y);
  ctx.stroke();
}

function prepare(ctx, scale) {
  ctx.setTransform(scale, 0, 0, scale, 0, 0);
  ctx.fillStyle = '#fff';
  ctx.fillRect(0, 0, SIZE, SIZE);
  ctx.lineCap = 'round';
  ctx.lineJoin = 'round';
  ctx.lineWidth = LINE_WIDTH;
  ctx.strokeStyle = '#000';
  ctx.fillStyle = '#000';
}

export class Pad {
  /**
   * canvas: the on-screen <canvas>. Callbacks: onDraw() while a stroke grows,
   * onStrokeEnd() when one ends, onChange() after clear/undo/sample changes.
   */
  constructor(canvas, { onDraw = () => {}, onStrokeEnd = () => {}, onChange = () => {} } = {}) {
    this.canvas = canvas;
    this.ctx = canvas.getContext('2d');
    this.strokes = [];
    this.current = null;      // {id, points}
    this.sample = null;       // {pixels, ...} when a test image is shown instead
    this.scale = 1;
    this.callbacks = { onDraw, onStrokeEnd, onChange };

    canvas.addEventListener('pointerdown', (e) => this.down(e));
    canvas.addEventListener('pointermove', (e) => this.move(e));
    canvas.addEventListener('pointerup', (e) => this.up(e));
    canvas.addEventListener('pointercancel', (e) => this.up(e));
    canvas.addEventListener('lostpointercapture', (e) => this.up(e));
    canvas.addEventListener('contextmenu', (e) => e.preventDefault());
    // Belt and braces with `touch-action: none`: no scrolling or zooming from the pad.
    canvas.addEventListener('touchstart', (e) => e.preventDefault(), { passive: false });

    new ResizeObserver(() => this.resize()).observe(canvas);
    this.watchPixelRatio();
    this.resize();
  }

  /** Re-fits the backing store when the device pixel ratio changes (zoom, other screen). */
  watchPixelRatio() {
    const mq = matchMedia(`(resolution: ${window.devicePixelRatio || 1}dppx)`);
    mq.addEventListener('change', () => {
      this.resize();
      this.watchPixelRatio();
    }, { once: true });
  }

  resize() {
    const rect = this.canvas.getBoundingClientRect();
    const dpr = window.devicePixelRatio || 1;
    const side = Math.max(1, Math.round((rect.width || SIZE) * dpr));
    if (this.canvas.width !== side || this.canvas.height !== side) {
      this.canvas.width = side;
      this.canvas.height = side;
    }
    this.scale = side / SIZE;
    this.redraw();
  }

  get isEmpty() {
    return this.strokes.length === 0 && !this.current && !this.sample;
  }

  get strokeCount() {
    return this.strokes.length + (this.current ? 1 : 0);
  }

  point(e) {
    const r = this.canvas.getBoundingClientRect();
    return {
      x: ((e.clientX - r.left) / r.width) * SIZE,
      y: ((e.clientY - r.top) / r.height) * SIZE,
    };
  }

  down(e) {
    if (!e.isPrimary || this.current) return;
    if (e.pointerType === 'mouse' && e.button !== 0) return;
    e.preventDefault();
    try {
      this.canvas.setPointerCapture(e.pointerId);
    } catch {
      /* synthetic or already-released pointer: capture is only a nicety */
    }
    if (this.sample) {                  // drawing replaces a shown test image
      this.sample = null;
      this.strokes = [];
    }
    this.current = { id: e.pointerId, points: [this.point(e)] };
    this.redraw();
    this.callbacks.onDraw();
  }

  move(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    e.preventDefault();
    const events = typeof e.getCoalescedEvents === 'function' ? e.getCoalescedEvents() : [];
    const pts = this.current.points;
    let added = false;
    for (const ev of events.length ? events : [e]) {
      const p = this.point(ev);
      const last = pts[pts.length - 1];
      if (Math.hypot(p.x - last.x, p.y - last.y) < MIN_STEP) continue;
      pts.push(p);
      added = true;
    }
    if (!added) return;
    this.drawTail(pts);
    this.callbacks.onDraw();
  }

  up(e) {
    if (!this.current || e.pointerId !== this.current.id) return;
    if (e.type === 'pointerup') {
      const p = this.point(e);
      const pts = this.current.points;
      const last = pts[pts.length - 1];
      if (Math.hypot(p.x - last.x, p.y - last.y) >= MIN_STEP) pts.push(p);
    }
    this.strokes.push(this.current.points);
    this.current = null;
    this.redraw();
    this.callbacks.onStrokeEnd();
  }

  /** Draws only the newest piece of the growing stroke (cheap while drawing). */
  drawTail(pts) {
    const n = pts.length;
    if (n < 3) {
      this.redraw();
      return;
    }
    const ctx = this.ctx;
    const a = pts[n - 3], b = pts[n - 2], c = pts[n - 1];
    ctx.beginPath();
    ctx.moveTo((a.x + b.x) / 2, (a.y + b.y) / 2);
    ctx.quadraticCurveTo(b.x, b.y, (b.x + c.x) / 2, (b.y + c.y) / 2);
    ctx.lineTo(c.x, c.y);
    ctx.stroke();
  }

  paint(ctx, scale) {
    prepare(ctx, scale);
    if (this.sample) {
      const img = document.createElement('canvas');
      img.width = 28;
      img.height = 28;
      const ictx = img.getContext('2d');
      const data = ictx.createImageData(28, 28);
      for (let i = 0; i < 784; i++) {
        const g = 255 - (this.sample.pixels[i] | 0);
        data.data.set([g, g, g, 255], i * 4);
      }
      ictx.putImageData(data, 0, 0);
      ctx.imageSmoothingEnabled = true;
      ctx.imageSmoothingQuality = 'high';
      ctx.drawImage(img, 0, 0, SIZE, SIZE);
    }
    for (const s of this.strokes) traceStroke(ctx, s);
    if (this.current) traceStroke(ctx, this.current.points);
  }

  redraw() {
    this.paint(this.ctx, this.scale);
  }

  clear() {
    const had = !this.isEmpty;
    this.strokes = [];
    this.current = null;
    this.sample = null;
    this.redraw();
    if (had) this.callbacks.onChange('clear');
  }

  undo() {
    if (this.current) return;
    if (this.sample) {
      this.clear();
      return;
    }
    if (!this.strokes.length) return;
    this.strokes.pop();
    this.redraw();
    this.callbacks.onChange('undo');
  }

  /** Shows a 28x28 test image (0..255 ink) on the pad instead of strokes. */
  showSample(sample) {
    this.strokes = [];
    this.current = null;
    this.sample = sample;
    this.redraw();
  }

  /** The drawing as a 280x280 PNG (independent of screen size and DPR). */
  toPngBlob() {
    const off = document.createElement('canvas');
    off.width = SIZE;
    off.height = SIZE;
    this.paint(off.getContext('2d'), 1);
    return new Promise((resolve, reject) => {
      off.toBlob((blob) => (blob ? resolve(blob) : reject(new Error('canvas.toBlob failed'))), 'image/png');
    });
  }
}
