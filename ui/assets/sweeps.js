// Sweeps: the grid of a sweep's runs (learning rates × durations) with
// each run's final eval loss, the best marked, and its runs' loss curves.
import { get, getAll, enc } from './api.js';
import { lineChart, palette } from './chart.js';
import { h, statusBadge, terminal, num, when } from './dom.js';

const lrText = (lr) => (lr ? lr.toExponential(1).replace('.0e', 'e') : 'default');
const lossLabel = (by) => (by === 'train_loss' ? 'final train loss' : 'final eval loss');

// sweepGrid is the sweep's runs as a table: a row per learning rate, a
// column per duration; each cell names its run, its state and its final
// loss, and the best run's cell says so.
export function sweepGrid(sw) {
  const by = sw.best_by || 'eval_loss';
  const cell = (lr, d) => sw.runs.find((r) => r.learning_rate === lr && r.training_duration === d);
  return h('table', { class: 'sweep-grid stack', 'aria-label': `sweep ${sw.name}: ${lossLabel(by)} per learning rate and duration` },
    h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, 'Learning rate'), sw.training_duration.map((d) => h('th', { scope: 'col' }, d)))),
    h('tbody', {}, sw.learning_rate.map((lr) => h('tr', {},
      h('th', { scope: 'row', 'data-label': 'Learning rate' }, lrText(lr)),
      sw.training_duration.map((d) => {
        const r = cell(lr, d);
        if (!r) return h('td', { 'data-label': d }, '—');
        const best = r.name === sw.best;
        const loss = by === 'train_loss' ? r.train_loss : r.eval_loss;
        return h('td', { 'data-label': d, 'data-run': r.name, class: best ? 'best' : null },
          h('div', {}, h('a', { href: '#/runs/' + enc(r.name) }, r.name)),
          h('div', { class: 'cell-line' }, statusBadge(r.status), ' ', h('span', { class: 'loss', 'data-loss': loss ?? '' }, num(loss)),
            best && h('strong', { class: 'best-mark' }, ' ★ best')));
      })))));
}

// sweepPage shows one sweep: its grid and its runs' curves, polled until
// every run has finished.
export function sweepPage(main, name, poller) {
  const head = h('div', { class: 'page-head' }, h('h1', {}, `Sweep ${name}`));
  const facts = h('p', { class: 'muted' });
  const grid = h('div', { class: 'sweep' });
  const chart = h('div', { class: 'charts wide' });
  const msg = h('div', { 'aria-live': 'polite' });
  main.append(h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/runs' }, 'Runs'), ' / sweep'),
    head, msg, facts, grid, chart);
  return poller(async () => {
    const sw = await get('/api/sweeps/' + enc(name));
    facts.replaceChildren(statusBadge(sw.status), ` ${sw.runs.length} runs in ${sw.experiment_path}, created ${when(sw.created_at)}. `,
      sw.best ? h('span', {}, 'Best by ', lossLabel(sw.best_by), ': ', h('a', { href: '#/runs/' + enc(sw.best) }, sw.best), '.') : 'No run has completed yet.');
    grid.replaceChildren(sweepGrid(sw));
    const metrics = await Promise.all(sw.runs.map((r) => getAll(`/api/runs/${enc(r.name)}/metrics`, 'steps', 'evals')));
    const series = (key, dashed) => metrics.map((m, i) => ({ name: `lr ${lrText(sw.runs[i].learning_rate)}, ${sw.runs[i].training_duration}`,
      color: palette[i % palette.length], dashed, points: (m[key] || []).map((s) => [s.step, s.loss ?? NaN]) }));
    chart.replaceChildren(lineChart({ title: 'Train loss', series: series('steps', false), xLabel: 'step', yLabel: 'loss' }),
      lineChart({ title: 'Eval loss', series: series('evals', true), xLabel: 'step', yLabel: 'loss' }));
    return sw.runs.some((r) => !terminal(r.status));
  }, msg);
}

// sweepsSection lists the sweeps, each linking to its grid; hidden when
// there are none.
export function sweepsSection() {
  const list = h('ul', { class: 'sweeps' });
  const section = h('section', { 'aria-labelledby': 'sweeps-h', hidden: true }, h('h2', { id: 'sweeps-h' }, 'Sweeps'), list);
  const update = async () => {
    const sweeps = (await get('/api/sweeps')).sweeps || [];
    section.hidden = sweeps.length === 0;
    list.replaceChildren(...sweeps.map((s) => h('li', {}, h('a', { href: '#/compare?sweep=' + enc(s.name) }, s.name), ' ', statusBadge(s.status),
      ` ${s.runs.length} runs`, s.best ? `; best ${s.best}` : '')));
  };
  return { section, update };
}
