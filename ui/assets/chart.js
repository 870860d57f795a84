// A small SVG line chart: several series on shared axes, with a legend.

const NS = 'http://www.w3.org/2000/svg';
export const palette = ['#1f77b4', '#d62728', '#2ca02c', '#9467bd', '#ff7f0e', '#17becf', '#8c564b', '#e377c2'];

function el(name, attrs, text) {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs || {})) e.setAttribute(k, v);
  if (text !== undefined) e.textContent = text;
  return e;
}

// ticks returns about n round values covering [lo, hi].
export function ticks(lo, hi, n) {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / n;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw);
  const out = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

// tickLabel formats a tick with just the decimals its spacing needs.
function tickLabel(v, all) {
  const step = all.length > 1 ? Math.abs(all[1] - all[0]) : Math.abs(v) || 1;
  const a = Math.max(...all.map(Math.abs));
  if (a >= 1e6 || (a > 0 && a < 1e-3)) return v.toExponential(Math.max(0, Math.ceil(Math.log10(a / step))));
  const decimals = Math.max(0, -Math.floor(Math.log10(step)));
  return v.toLocaleString('en', { minimumFractionDigits: decimals, maximumFractionDigits: decimals });
}

export function fmt(v) {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e6 || a < 1e-3) return v.toExponential(1);
  if (a >= 1000) return Math.round(v).toLocaleString('en');
  return +v.toPrecision(4) + '';
}

// lineChart draws series ([{name, points: [[x, y]], dashed}]) and returns a
// figure holding the SVG and its legend. Points with a non-finite y are
// skipped.
export function lineChart({ title, series, xLabel, yLabel }) {
  // Narrow screens get a narrower drawing, so the text keeps its size.
  const W = Math.round(Math.min(640, Math.max(320, window.innerWidth - 56))), H = W < 480 ? 230 : 260, L = 58, R = 14, T = 14, B = 42;
  const fig = document.createElement('figure');
  fig.className = 'chart';
  const pts = series.flatMap((s) => s.points).filter(([, y]) => Number.isFinite(y));
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${title}: ${series.map((s) => s.name).join(', ')}` });
  svg.append(el('title', {}, title));
  fig.append(svg);
  if (pts.length === 0) {
    svg.append(el('text', { x: W / 2, y: H / 2, 'text-anchor': 'middle', class: 'empty' }, 'No data yet'));
    return fig;
  }
  let [x0, x1] = [Math.min(...pts.map((p) => p[0])), Math.max(...pts.map((p) => p[0]))];
  let [y0, y1] = [Math.min(...pts.map((p) => p[1])), Math.max(...pts.map((p) => p[1]))];
  if (x1 === x0) x1 = x0 + 1;
  if (y1 === y0) { y0 -= Math.abs(y0) * 0.1 || 1; y1 += Math.abs(y1) * 0.1 || 1; }
  const pad = (y1 - y0) * 0.05;
  y0 -= pad; y1 += pad;
  const sx = (x) => L + ((x - x0) / (x1 - x0)) * (W - L - R);
  const sy = (y) => T + (1 - (y - y0) / (y1 - y0)) * (H - T - B);
  const axes = el('g', { class: 'axes' });
  const yt = ticks(y0, y1, W < 480 ? 4 : 5), xt = ticks(x0, x1, W < 480 ? 4 : 6);
  for (const v of yt) {
    axes.append(el('line', { x1: L, x2: W - R, y1: sy(v), y2: sy(v), class: 'grid' }));
    axes.append(el('text', { x: L - 6, y: sy(v) + 4, 'text-anchor': 'end' }, tickLabel(v, yt)));
  }
  for (const v of xt) {
    axes.append(el('line', { x1: sx(v), x2: sx(v), y1: H - B, y2: H - B + 4, class: 'tick' }));
    axes.append(el('text', { x: sx(v), y: H - B + 17, 'text-anchor': 'middle' }, tickLabel(v, xt)));
  }
  axes.append(el('line', { x1: L, x2: W - R, y1: H - B, y2: H - B, class: 'axis' }));
  axes.append(el('line', { x1: L, x2: L, y1: T, y2: H - B, class: 'axis' }));
  if (xLabel) axes.append(el('text', { x: (L + W - R) / 2, y: H - 6, 'text-anchor': 'middle', class: 'label' }, xLabel));
  if (yLabel) axes.append(el('text', { x: 12, y: (T + H - B) / 2, 'text-anchor': 'middle', class: 'label', transform: `rotate(-90 12 ${(T + H - B) / 2})` }, yLabel));
  svg.append(axes);
  const legend = document.createElement('ul');
  legend.className = 'legend';
  series.forEach((s, i) => {
    const color = s.color || palette[i % palette.length];
    const ok = s.points.filter(([, y]) => Number.isFinite(y));
    const d = ok.map(([x, y], j) => `${j ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(y).toFixed(1)}`).join('');
    const g = el('g', { class: 'series', 'data-series': s.name });
    if (ok.length > 0) {
      g.append(el('path', { d, stroke: color, fill: 'none', 'stroke-width': 2, 'stroke-dasharray': s.dashed ? '6 4' : 'none' }));
    }
    // Markers for short series (evals), so a single point is visible.
    if (ok.length <= 30) {
      for (const [x, y] of ok) g.append(el('circle', { cx: sx(x), cy: sy(y), r: 3, fill: color }));
    }
    svg.append(g);
    const li = document.createElement('li');
    const sw = document.createElement('span');
    sw.className = 'swatch' + (s.dashed ? ' dashed' : '');
    sw.style.setProperty('--c', color);
    const last = ok.length ? ` (last ${fmt(ok[ok.length - 1][1])})` : ' (no data yet)';
    li.append(sw, document.createTextNode(s.name + last));
    legend.append(li);
  });
  const cap = document.createElement('figcaption');
  cap.textContent = title;
  fig.prepend(cap);
  fig.append(legend);
  return fig;
}
