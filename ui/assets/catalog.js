// Catalog: catalogs, schemas and models; a model's versions with lineage,
// metrics and aliases (set, move and remove).
import { get, post, put, del, enc } from './api.js';
import { h, errorBox, when, dl, num } from './dom.js';

export async function catalogPage(main) {
  const msg = h('div', { 'aria-live': 'polite' });
  const tree = h('div', { class: 'tree' });
  const form = h('form', { class: 'inline' },
    h('label', { for: 'new-name' }, 'New catalog or schema'),
    h('input', { id: 'new-name', name: 'name', required: true, placeholder: 'main or main.demo', autocomplete: 'off' }),
    h('label', { for: 'new-comment', class: 'sr-only' }, 'Comment'),
    h('input', { id: 'new-comment', name: 'comment', placeholder: 'comment (optional)', autocomplete: 'off' }),
    h('button', { type: 'submit' }, 'Create'));
  main.append(h('h1', {}, 'Catalog'), form, msg, tree);
  const load = async () => {
    const t = await get('/api/catalog/tree');
    if (t.catalogs.length === 0) {
      tree.replaceChildren(h('p', { class: 'muted' }, 'No catalogs yet. Create one above (for example main), then a schema (main.demo).'));
      return;
    }
    tree.replaceChildren(...t.catalogs.map((c) => h('section', { class: 'card', 'aria-label': `catalog ${c.name}` },
      h('h2', {}, c.name, c.comment ? h('span', { class: 'muted' }, ` — ${c.comment}`) : null),
      c.schemas.length === 0 ? h('p', { class: 'muted' }, 'No schemas.') :
        h('ul', { class: 'schemas' }, c.schemas.map((s) => h('li', {},
          h('h3', {}, s.name, s.comment ? h('span', { class: 'muted' }, ` — ${s.comment}`) : null),
          s.models.length === 0 ? h('p', { class: 'muted' }, 'No models registered yet.') :
            h('ul', { class: 'models' }, s.models.map((m) => h('li', {}, h('a', { href: '#/catalog/' + enc(m) }, m))))))))));
  };
  form.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(form);
    try {
      await post('/api/catalog', { name: f.get('name').trim(), comment: f.get('comment').trim() });
      msg.replaceChildren(h('p', { class: 'ok' }, `Created ${f.get('name').trim()}.`));
      form.reset();
      await load();
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  });
  await load();
}

export async function modelPage(main, name, q) {
  const msg = h('div', { 'aria-live': 'polite' });
  const list = h('div', { class: 'versions' });
  const aliasForm = h('form', { class: 'inline' });
  main.append(h('nav', { class: 'crumbs', 'aria-label': 'Breadcrumb' }, h('a', { href: '#/catalog' }, 'Catalog'), ' / ', name),
    h('h1', {}, name),
    h('section', { 'aria-labelledby': 'alias-title' }, h('h2', { id: 'alias-title' }, 'Set or move an alias'),
      h('p', { class: 'muted' }, 'An alias names one version (main.demo.bot@champion); setting it again moves it.'), aliasForm),
    msg, h('h2', {}, 'Versions'), list);
  const render = (m) => {
    const versions = [...m.versions].sort((a, b) => b.version - a.version);
    aliasForm.replaceChildren(
      h('label', { for: 'alias-name' }, 'Alias'), h('input', { id: 'alias-name', name: 'alias', required: true, placeholder: 'champion', autocomplete: 'off' }),
      h('label', { for: 'alias-version' }, 'Version'),
      h('select', { id: 'alias-version', name: 'version' }, versions.map((v) => h('option', { value: v.version }, `version ${v.version}`))),
      h('button', { type: 'submit' }, 'Set alias'));
    list.replaceChildren(...versions.map((v) => {
      const id = `${name}/${v.version}`;
      const metrics = Object.entries(v.metrics || {});
      return h('article', { class: 'card version' + (q.get('v') === String(v.version) ? ' highlight' : ''), 'aria-labelledby': `v${v.version}` },
        h('div', { class: 'page-head' }, h('h3', { id: `v${v.version}` }, `Version ${v.version}`),
          h('a', { class: 'button primary', href: '#/playground?model=' + enc(id) }, 'Chat with it')),
        h('ul', { class: 'chips', 'aria-label': 'aliases' }, (v.aliases || []).map((a) => h('li', {}, '@' + a, ' ',
          h('button', { type: 'button', class: 'link', 'aria-label': `remove alias ${a}`, onclick: () => removeAlias(a) }, '×')))),
        dl([
          ['Created', when(v.created_at)],
          ['Run', v.run ? h('a', { href: '#/runs/' + enc(v.run) }, v.run) : 'imported'],
          ['Base model', v.base_model || '—'],
          v.adapter && ['Kind', 'LoRA adapter, served merged into its base model'],
          ['Data', v.data_fingerprint ? h('code', {}, v.data_fingerprint) : '—'],
          ['License', v.license || '—'],
          ['Stored at', h('code', {}, v.storage_location)],
        ]),
        metrics.length ? h('div', {}, h('h4', {}, 'Metrics'),
          dl(metrics.map(([k, val]) => [k, typeof val === 'number' ? num(val, 5) : JSON.stringify(val)]), 'facts metrics')) : null);
    }));
  };
  const removeAlias = async (a) => {
    try {
      await del(`/api/catalog/models/${enc(name)}/aliases/${enc(a)}`);
      msg.replaceChildren(h('p', { class: 'ok' }, `Removed @${a}.`));
      render(await get('/api/catalog/models/' + enc(name)));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  };
  aliasForm.addEventListener('submit', async (e) => {
    e.preventDefault();
    const f = new FormData(aliasForm);
    const alias = f.get('alias').trim();
    try {
      const m = await put(`/api/catalog/models/${enc(name)}/aliases/${enc(alias)}`, { version: Number(f.get('version')) });
      render(m);
      msg.replaceChildren(h('p', { class: 'ok' }, `@${alias} now points at version ${f.get('version')}.`));
    } catch (err) {
      msg.replaceChildren(errorBox(err));
    }
  });
  render(await get('/api/catalog/models/' + enc(name)));
}
