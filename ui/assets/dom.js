// DOM helpers shared by the pages.

// h builds an element: h('a', {href: '#/runs', class: 'x'}, 'text', child).
// Attributes starting with "on" become listeners; false/null are skipped.
export function h(tag, attrs, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === false || v === null || v === undefined) continue;
    if (k.startsWith('on')) e.addEventListener(k.slice(2), v);
    else if (v === true) e.setAttribute(k, '');
    else e.setAttribute(k, v);
  }
  for (const c of children.flat()) {
    if (c === null || c === undefined || c === false) continue;
    e.append(c instanceof Node ? c : String(c));
  }
  return e;
}

// fill replaces el's children, skipping false, null and undefined.
export function fill(el, ...children) {
  el.replaceChildren(...children.flat().filter((c) => c !== false && c !== null && c !== undefined));
}

export function statusBadge(status) {
  return h('span', { class: `status status-${(status || '').toLowerCase()}` }, status);
}

export const terminal = (s) => s === 'COMPLETED' || s === 'FAILED' || s === 'STOPPED';

export function duration(seconds) {
  if (!Number.isFinite(seconds) || seconds < 0) return '—';
  seconds = Math.round(seconds);
  const hh = Math.floor(seconds / 3600), mm = Math.floor((seconds % 3600) / 60), ss = seconds % 60;
  if (hh) return `${hh}h ${mm}m`;
  if (mm) return `${mm}m ${ss}s`;
  return `${ss}s`;
}

export function when(t) {
  if (!t) return '—';
  const d = new Date(t);
  return d.toLocaleString('en-GB', { dateStyle: 'medium', timeStyle: 'medium' });
}

export function eta(run) {
  if (terminal(run.status)) return '—';
  if (!run.estimated_end_at) return 'estimating…';
  const s = (new Date(run.estimated_end_at) - Date.now()) / 1000;
  return s <= 0 ? 'any moment' : 'in ' + duration(s);
}

export function num(v, digits = 4) {
  if (v === null || v === undefined || !Number.isFinite(v)) return '—';
  return +v.toPrecision(digits) + '';
}

// progress is [fraction, label] for a run given its latest metrics.
export function progress(run) {
  const m = run.metrics;
  if (run.status === 'COMPLETED') return [1, m ? `${m.total_steps} / ${m.total_steps} steps` : 'done'];
  if (!m || !m.total_steps) return [0, terminal(run.status) ? '—' : 'not started'];
  return [m.step / m.total_steps, `${m.step} / ${m.total_steps} steps`];
}

export function progressBar(run) {
  const [f, label] = progress(run);
  return h('span', { class: 'progress' },
    h('progress', { max: 100, value: Math.round(f * 100), 'aria-label': `progress ${Math.round(f * 100)}%` }),
    h('span', { class: 'progress-label' }, label));
}

export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, String(err.message || err));
}

// dl renders [label, value] pairs as a description list.
export function dl(pairs, cls = 'facts') {
  return h('dl', { class: cls }, pairs.filter(Boolean).map(([k, v]) => h('div', {}, h('dt', {}, k), h('dd', {}, v))));
}
