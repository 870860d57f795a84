// Runs: the live list, a run's page with its curves, and the comparison.
import { get, getAll, post, enc } from './api.js';
import { lineChart, palette } from './chart.js';
import { h, fill, statusBadge, terminal, eta, progressBar, when, num, duration, errorBox, dl } from './dom.js';
import { reportView } from './report.js';
import { sweepPage, sweepsSection } from './sweeps.js';

const pollMs = 2000;

// poller calls fn now and then every pollMs until stopped or fn returns
// false (a finished run); errors are shown in box and polling continues.
export function poller(fn, box) {
  let timer = null, stopped = false;
  const tick = async () => {
    try {
      box.replaceChildren();
      if ((await fn()) === false) return;
    } catch (err) {
      box.replaceChildren(errorBox(err));
    }
    if (!stopped) timer = setTimeout(tick, pollMs);
  };
  tick();
  return () => { stopped = true; clearTimeout(timer); };
}

const taskName = { CHAT_COMPLETION: 'chat', INSTRUCTION_FINETUNE: 'instruct', CONTINUED_PRETRAIN: 'continued pretraining' };

export function runsPage(main) {
  const selected = new Set();
  const compare = h('button', { type: 'button', disabled: true, onclick: () => {
    location.hash = '#/compare?runs=' + [...selected].map(enc).join(',');
  } }, 'Compare selected');
  const tbody = h('tbody');
  const msg = h('div', { 'aria-live': 'polite' });
  const empty = h('p', { class: 'muted', hidden: true }, 'No runs yet. ', h('a', { href: '#/create' }, 'Create one'), '.');
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs'),
      h('div', { class: 'actions' }, h('a', { class: 'button primary', href: '#/create' }, 'New run'), compare)),
    msg, empty,
    h('table', { class: 'runs stack' },
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Compare')), ['Name', 'Status', 'Model', 'Task', 'Progress', 'ETA', 'Created'].map((t) => h('th', { scope: 'col' }, t)))),
      tbody));
  const sweeps = sweepsSection();
  main.append(sweeps.section);
  const rows = new Map();
  const done = new Map();
  const row = (name) => {
    if (rows.has(name)) return rows.get(name);
    const box = h('input', { type: 'checkbox', 'aria-label': `select ${name} to compare`, onchange: (e) => {
      e.target.checked ? selected.add(name) : selected.delete(name);
      compare.disabled = selected.size < 1;
      compare.textContent = `Compare selected (${selected.size})`;
    } });
    const cells = { status: h('td', { 'data-label': 'Status' }), model: h('td', { 'data-label': 'Model', class: 'long' }), task: h('td', { 'data-label': 'Task' }),
      progress: h('td', { 'data-label': 'Progress' }), eta: h('td', { 'data-label': 'ETA' }), created: h('td', { 'data-label': 'Created' }) };
    const tr = h('tr', { 'data-run': name }, h('td', { class: 'select' }, box),
      h('th', { scope: 'row', 'data-label': 'Name', class: 'long' }, h('a', { href: '#/runs/' + enc(name) }, name)),
      cells.status, cells.model, cells.task, cells.progress, cells.eta, cells.created);
    const r = { tr, cells };
    rows.set(name, r);
    return r;
  };
  return poller(async () => {
    const list = (await get('/api/runs?limit=200')).runs || [];
    await sweeps.update();
    // The list has no metrics: runs are fetched one by one for progress,
    // finished ones only once.
    const full = await Promise.all(list.map(async (r) => {
      const key = r.name + ' ' + r.status;
      if (done.has(key)) return done.get(key);
      const d = await get('/api/runs/' + enc(r.name)).catch(() => r);
      if (terminal(r.status)) done.set(key, d);
      return d;
    }));
    empty.hidden = full.length > 0;
    const order = [];
    for (const r of full) {
      const { tr, cells } = row(r.name);
      cells.status.replaceChildren(statusBadge(r.status));
      const model = r.base_model || r.config?.model || '';
      // A local directory shows as its last element; the full path is the tooltip.
      cells.model.textContent = model.startsWith('/') ? model.split('/').filter(Boolean).pop() : model;
      cells.model.title = model;
      cells.task.textContent = taskName[r.config?.task_type] || r.config?.task_type || '';
      cells.progress.replaceChildren(progressBar(r));
      cells.eta.textContent = eta(r);
      cells.created.textContent = when(r.created_at);
      order.push(tr);
    }
    // Re-append in order only when it changed, so focus is not lost.
    if (order.some((tr, i) => tbody.children[i] !== tr) || tbody.children.length !== order.length) tbody.replaceChildren(...order);
  }, msg);
}

// series turns the metrics of one run into chart series.
function lossSeries(m, prefix = '') {
  return [
    { name: prefix + 'train loss', points: (m.steps || []).map((s) => [s.step, s.loss ?? NaN]) },
    { name: prefix + 'eval loss', points: (m.evals || []).map((e) => [e.step, e.loss ?? NaN]), dashed: true },
  ];
}

export function runPage(main, name) {
  const badge = h('span');
  const actions = h('div', { class: 'actions' });
  const head = h('div', { class: 'page-head' }, h('h1', {}, name), badge, actions);
  const facts = h('div');
  const charts = h('div', { class: 'charts' });
  const outputs = h('div');
  const checkpoints = h('div');
  const ranks = h('div');
  const events = h('ol', { class: 'events', tabindex: 0, 'aria-label': 'events' });
  const config = h('div');
  const msg = h('div', { 'aria-live': 'polite' });
  const status = h('p', { class: 'sr-only', 'aria-live': 'polite' });
  main.append(
    h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/runs' }, 'Runs'), ' / ', name),
    head, msg, status, facts,
    h('section', { 'aria-labelledby': 'curves' }, h('h2', { id: 'curves' }, 'Curves'), charts),
    h('section', { 'aria-labelledby': 'outs' }, h('h2', { id: 'outs' }, 'Eval prompt outputs'), outputs),
    h('section', { 'aria-labelledby': 'cks' }, h('h2', { id: 'cks' }, 'Checkpoints'), checkpoints),
    ranks,
    h('section', { 'aria-labelledby': 'evs' }, h('h2', { id: 'evs' }, 'Events'), events),
    h('section', { 'aria-labelledby': 'cfg' }, h('h2', { id: 'cfg' }, 'Configuration'), config));
  let lastStatus = null, lastEvent = 0, actionsFor = null;
  const act = async (path) => {
    try {
      await post(`/api/runs/${enc(name)}/${path}`);
      window.dispatchEvent(new HashChangeEvent('hashchange')); // render the page afresh, polling again
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  };
  return poller(async () => {
    const [run, metrics, po] = await Promise.all([get('/api/runs/' + enc(name)), getAll(`/api/runs/${enc(name)}/metrics`, 'steps', 'evals'),
      getAll(`/api/runs/${enc(name)}/prompt-outputs`, 'prompt_outputs')]);
    const m = run.metrics || {};
    if (run.status !== lastStatus) status.textContent = `Run ${name} is ${run.status}`;
    lastStatus = run.status;
    if (actionsFor !== run.status) {
      actionsFor = run.status;
      badge.replaceChildren(statusBadge(run.status));
      fill(actions,
        !terminal(run.status) && h('button', { type: 'button', class: 'danger', onclick: () => act('cancel') }, 'Cancel run'),
        (run.status === 'STOPPED' || run.status === 'FAILED') && h('button', { type: 'button', onclick: () => act('resume') }, 'Resume run'),
        h('a', { class: 'button', href: '#/compare?runs=' + enc(name) }, 'Compare…'));
    }
    const reg = run.registered_model;
    facts.replaceChildren(dl([
      ['Progress', progressBar(run)],
      ['ETA', eta(run)],
      ['Base model', run.base_model || run.config.model],
      ['Method', methodText(run.config)],
      ['Epoch', num(m.epoch, 3)],
      ['Train loss', num(m.loss)],
      ['Eval loss', num(m.eval_loss)],
      ['Perplexity', num(m.perplexity)],
      ['Token accuracy', m.token_accuracy != null ? num(m.token_accuracy * 100, 3) + '%' : '—'],
      ['Learning rate', m.lr != null ? m.lr.toExponential(2) : '—'],
      ['Tokens/s', m.tokens_per_s != null ? Math.round(m.tokens_per_s).toLocaleString('en') : '—'],
      ['Tokens seen', (m.tokens_seen ?? 0).toLocaleString('en')],
      ['Elapsed', duration(m.elapsed_s)],
      ['Registers to', run.register_to],
      ['Registered model', reg ? h('a', { href: `#/catalog/${enc(reg.split('/')[0])}?v=${reg.split('/')[1]}` }, reg) : '—'],
      run.error && ['Error', h('span', { class: 'error-text' }, run.error)],
    ]));
    const steps = metrics.steps || [];
    charts.replaceChildren(
      lineChart({ title: 'Loss', series: lossSeries(metrics), xLabel: 'step', yLabel: 'loss' }),
      lineChart({ title: 'Learning rate', series: [{ name: 'lr', points: steps.map((s) => [s.step, s.lr]) }], xLabel: 'step' }),
      lineChart({ title: 'Throughput', series: [{ name: 'tokens/s', points: steps.map((s) => [s.step, s.tokens_per_s]) }], xLabel: 'step' }));
    outputs.replaceChildren(promptOutputs(po.prompt_outputs || []));
    checkpoints.replaceChildren((run.checkpoints || []).length === 0 ? h('p', { class: 'muted' }, 'None yet.') :
      h('table', { class: 'stack' }, h('thead', {}, h('tr', {}, ['Step', 'Epoch', 'Saved', 'Path'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, run.checkpoints.map((c) => h('tr', {}, h('td', { 'data-label': 'Step' }, c.step), h('td', { 'data-label': 'Epoch' }, num(c.epoch, 3)),
          h('td', { 'data-label': 'Saved' }, when(c.time)), h('td', { 'data-label': 'Path', class: 'long' }, h('code', {}, c.path)))))));
    // A multi-node run's workers, one rank each, per attempt.
    ranks.replaceChildren(...((run.ranks || []).length === 0 ? [] : [h('section', { 'aria-labelledby': 'rks' }, h('h2', { id: 'rks' }, 'Ranks'),
      h('table', { class: 'stack' }, h('thead', {}, h('tr', {}, ['Attempt', 'Rank', 'Worker', 'Host', 'Joined', 'Left', 'Why'].map((t) => h('th', { scope: 'col' }, t)))),
        h('tbody', {}, run.ranks.map((k) => h('tr', {}, h('td', { 'data-label': 'Attempt' }, k.attempt), h('td', { 'data-label': 'Rank' }, k.rank),
          h('td', { 'data-label': 'Worker', class: 'long' }, k.worker), h('td', { 'data-label': 'Host' }, k.host),
          h('td', { 'data-label': 'Joined' }, when(k.joined_at)), h('td', { 'data-label': 'Left' }, k.left_at ? when(k.left_at) : '—'),
          h('td', { 'data-label': 'Why', class: 'long' }, k.note || ''))))))]));
    for (const e of run.events || []) {
      if (e.id <= lastEvent) continue;
      lastEvent = e.id;
      events.append(h('li', {}, h('time', { datetime: e.time }, when(e.time)), ' ', h('strong', {}, e.type), ' ', e.message));
    }
    if (!config.firstChild) {
      let report = null;
      try { report = run.validation ? JSON.parse(run.validation) : null; } catch { report = run.validation; }
      config.append(h('pre', { class: 'wrap', tabindex: 0, 'aria-label': 'submitted configuration' }, JSON.stringify(run.config, null, 2)),
        h('h3', {}, 'Data validation report'), reportView(report));
    }
    return !terminal(run.status);
  }, msg);
}

function promptOutputs(pos) {
  if (pos.length === 0) return h('p', { class: 'muted' }, 'None yet: they are written at each checkpoint when the run has eval prompts.');
  const bySteps = new Map();
  for (const p of pos) {
    if (!bySteps.has(p.step)) bySteps.set(p.step, []);
    bySteps.get(p.step).push(p);
  }
  const steps = [...bySteps.keys()].sort((a, b) => b - a);
  return h('div', {}, steps.map((s, i) => h('details', { open: i === 0 },
    h('summary', {}, `Checkpoint at step ${s}`),
    bySteps.get(s).sort((a, b) => a.index - b.index).map((p) => h('div', { class: 'prompt-output' },
      h('p', {}, h('strong', {}, 'Prompt: '), p.prompt), h('pre', { class: 'wrap' }, p.output))))));
}

export function comparePage(main, q) {
  if (q.get('sweep')) return sweepPage(main, q.get('sweep'), poller);
  const names = (q.get('runs') || '').split(',').filter(Boolean).map(decodeURIComponent);
  const chart = h('div', { class: 'charts wide' });
  const msg = h('div', { 'aria-live': 'polite' });
  const picker = h('form', { class: 'inline', onsubmit: (e) => {
    e.preventDefault();
    const add = new FormData(e.target).get('run').trim();
    if (add && !names.includes(add)) location.hash = '#/compare?runs=' + [...names, add].map(enc).join(',');
  } }, h('label', { for: 'add-run' }, 'Add a run'), h('input', { id: 'add-run', name: 'run', list: 'run-names', required: true }),
  h('datalist', { id: 'run-names' }), h('button', { type: 'submit' }, 'Add'));
  main.append(h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/runs' }, 'Runs'), ' / compare'),
    h('h1', {}, 'Compare runs'), picker,
    h('ul', { class: 'chips' }, names.map((n, i) => h('li', {}, h('a', { href: '#/runs/' + enc(n) }, n), ' ',
      h('a', { href: '#/compare?runs=' + names.filter((_, j) => j !== i).map(enc).join(','), 'aria-label': `remove ${n}` }, '×')))),
    msg, chart);
  get('/api/runs?limit=200').then((l) => picker.querySelector('datalist').append(...(l.runs || []).map((r) => h('option', { value: r.name }))), () => {});
  if (names.length === 0) { chart.append(h('p', { class: 'muted' }, 'Select runs on the Runs page, or add them here.')); return null; }
  return poller(async () => {
    const all = await Promise.all(names.map((n) => Promise.all([get('/api/runs/' + enc(n)), getAll(`/api/runs/${enc(n)}/metrics`, 'steps', 'evals')])));
    const train = [], evals = [];
    all.forEach(([, m], i) => {
      const color = palette[i % palette.length];
      train.push({ name: names[i], color, points: (m.steps || []).map((s) => [s.step, s.loss ?? NaN]) });
      evals.push({ name: names[i], color, dashed: true, points: (m.evals || []).map((e) => [e.step, e.loss ?? NaN]) });
    });
    chart.replaceChildren(lineChart({ title: 'Train loss', series: train, xLabel: 'step', yLabel: 'loss' }),
      lineChart({ title: 'Eval loss', series: evals, xLabel: 'step', yLabel: 'loss' }));
    return all.some(([r]) => !terminal(r.status));
  }, msg);
}

// methodText describes a run's training method and LoRA settings.
function methodText(config) {
  const l = config.lora;
  if (config.method !== 'lora' || !l) return 'Full fine-tuning';
  const targets = (l.target_modules || []).join(', ');
  return `LoRA rank ${l.rank}, alpha ${l.alpha}${l.use_rslora ? ' (rsLoRA)' : ''}, dropout ${l.dropout ?? 0}; ${targets}` +
    (config.register_adapter ? '; registers the adapter' : '; registers the merged model');
}
