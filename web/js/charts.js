// Per-epoch metric charts (uPlot, loaded as the global `uPlot` from
// /vendor/uPlot.iife.min.js). One chart per metric pair, any number of runs
// drawn on the same axes: training solid, validation dashed.
import { fmtNum, fmtPct } from './util.js';

const cssVar = (name) => getComputedStyle(document.documentElement).getPropertyValue(name).trim();

export class MetricChart {
  /**
   * host: element to draw into. keys: [train, validation] metric names.
   * percent: format values as percentages (accuracy).
   */
  constructor(host, { keys, title, percent = false, summary = null }) {
    this.host = host;
    this.summary = summary;
    this.keys = keys;
    this.title = title;
    this.percent = percent;
    this.runs = [];
    this.signature = '';
    this.u = null;
    this.maxEpoch = 2;
    new ResizeObserver(() => this.fit()).observe(host);
    matchMedia('(prefers-color-scheme: dark)').addEventListener('change', () => this.build());
  }

  get available() {
    return typeof window.uPlot === 'function';
  }

  size() {
    const width = Math.max(200, Math.floor(this.host.clientWidth || 300));
    return { width, height: Math.round(Math.min(260, Math.max(180, width * 0.55))) };
  }

  fit() {
    if (!this.u) return;
    const s = this.size();
    if (s.width !== this.u.width || s.height !== this.u.height) this.u.setSize(s);
  }

  fmt(v) {
    if (v === null || v === undefined || !Number.isFinite(v)) return '–';
    return this.percent ? fmtPct(v, 2) : fmtNum(v, 4);
  }

  /** runs: [{id, name, color, epochs, metrics: Map(epoch -> row)}] */
  setRuns(runs) {
    this.runs = runs;
    const sig = runs.map((r) => `${r.id}:${r.name}:${r.color}`).join('|');
    if (sig !== this.signature || !this.u) {
      this.signature = sig;
      this.build();
    } else {
      this.u.setData(this.data());
    }
    this.describe();
  }

  /** Also records, for tests and tools, how many epochs have points. */
  data() {
    let max = 1;
    for (const r of this.runs) {
      max = Math.max(max, r.epochs || 0);
      for (const e of r.metrics.keys()) max = Math.max(max, e);
    }
    this.maxEpoch = Math.max(2, max);
    const xs = Array.from({ length: max }, (_, i) => i + 1);
    const out = [xs];
    let points = 0;
    for (const r of this.runs) {
      for (const k of this.keys) {
        const ys = xs.map((x) => (r.metrics.has(x) ? r.metrics.get(x)[k] ?? null : null));
        points += ys.filter((y) => y !== null).length;
        out.push(ys);
      }
    }
    this.host.dataset.points = String(points);
    return out;
  }

  build() {
    if (this.u) {
      this.u.destroy();
      this.u = null;
    }
    this.host.replaceChildren();
    if (!this.available) {
      this.host.textContent = 'Charts are unavailable: /vendor/uPlot.iife.min.js did not load. The numbers are in the table below.';
      return;
    }
    if (!this.runs.length) {
      this.host.dataset.points = '0';
      return;
    }
    const fg = cssVar('--muted') || '#555';
    const grid = cssVar('--grid') || '#ddd';
    const bg = cssVar('--card') || '#fff';
    const series = [{ label: 'Epoch', value: (u, v) => (v === null ? '–' : `epoch ${v}`) }];
    for (const r of this.runs) {
      this.keys.forEach((k, i) => {
        const val = i === 1;
        series.push({
          label: `${r.name} ${k}`,
          stroke: r.color,
          width: 2,
          dash: val ? [7, 5] : undefined,
          spanGaps: true,
          points: { show: true, size: 7, width: 2, stroke: r.color, fill: val ? bg : r.color },
          value: (u, v) => this.fmt(v),
        });
      });
    }
    const axis = {
      stroke: fg,
      grid: { stroke: grid, width: 1 },
      ticks: { stroke: grid, width: 1 },
      font: '12px system-ui, sans-serif',
      labelFont: '12px system-ui, sans-serif',
    };
    const opts = {
      ...this.size(),
      series,
      legend: { live: true },
      cursor: { drag: { x: false, y: false }, points: { size: 8 } },
      scales: {
        x: { time: false, range: () => [1, this.maxEpoch] },
        y: {
          range: (u, min, max) => {
            if (min === null || max === null) return this.percent ? [0, 1] : [0, 1];
            if (this.percent) return [Math.max(0, Math.floor((min - 0.01) * 50) / 50), Math.min(1, Math.ceil((max + 0.005) * 50) / 50)];
            return [0, max * 1.1 || 1];
          },
        },
      },
      axes: [
        { ...axis, label: 'epoch', incrs: [1, 2, 5, 10, 20, 50, 100, 200, 500], values: (u, vals) => vals.map((v) => (Number.isInteger(v) ? String(v) : '')) },
        { ...axis, size: 56, values: (u, vals) => vals.map((v) => (this.percent ? `${+(v * 100).toFixed(1)}%` : +v.toFixed(3))) },
      ],
    };
    this.u = new window.uPlot(opts, this.data(), this.host);
  }

  /** A text alternative for screen readers: the latest values per run. */
  describe() {
    const parts = this.runs.map((r) => {
      const last = [...r.metrics.values()].pop();
      if (!last) return `${r.name}: no epoch finished yet`;
      return `${r.name} after epoch ${last.epoch}: ${this.keys.map((k) => `${k} ${this.fmt(last[k])}`).join(', ')}`;
    });
    if (this.summary) this.summary.textContent = `${this.title}. ${parts.join('. ') || 'No training run shown yet.'}`;
  }
}
