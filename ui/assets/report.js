// The data validation report of a run request (dataset.Report as JSON).
import { h, dl, num } from './dom.js';

export function reportView(report) {
  if (report === null || report === undefined) return h('p', { class: 'muted' }, 'No data report.');
  if (typeof report === 'string') return h('pre', { class: 'wrap' }, report);
  const s = report.stats || {};
  const int = (v) => (v ?? 0).toLocaleString('en');
  const box = h('div', { class: 'report' },
    dl([
      ['Task', report.task],
      ['Data', h('code', {}, report.data)],
      ['Files', int(report.files)],
      ['Examples', int(s.examples)],
      ['Tokens per epoch', int(s.tokens)],
      ['Trained tokens per epoch', int(s.trained_tokens)],
      ['Rows per epoch', `${int(s.rows)} × ${report.context_length} tokens`],
      ['Packing efficiency', s.packing_efficiency ? `${num(s.packing_efficiency * 100, 3)}%` : '—'],
      ['Steps per epoch', `${int(report.steps_per_epoch)} (batch of ${report.batch_rows} rows)`],
      ['Overlong examples', `${int(s.overlong)} (truncated ${int(s.truncated)}, dropped ${int(s.dropped)})`],
      s.lengths && ['Example lengths', Object.entries(s.lengths).map(([k, v]) => `${k} ${int(v)}`).join(' · ')],
    ]));
  const warnings = report.warnings || [];
  box.append(h('h3', {}, `Warnings (${warnings.length})`),
    warnings.length ? h('ul', { class: 'warnings' }, warnings.map((w) => h('li', {}, w))) : h('p', { class: 'muted' }, 'None.'));
  const problems = report.problems || [];
  const count = report.problem_count || problems.length;
  box.append(h('h3', {}, `Errors (${count})`));
  if (count === 0) {
    box.append(h('p', { class: 'muted' }, 'None: every record is valid.'));
  } else {
    box.append(h('ul', { class: 'problems' }, problems.map((p) =>
      h('li', {}, h('code', {}, `${p.file}${p.line ? ':' + p.line : ''}`), p.field ? ` ${p.field}: ` : ' ', p.message))));
    if (count > problems.length) box.append(h('p', {}, `… and ${count - problems.length} more.`));
  }
  return box;
}
