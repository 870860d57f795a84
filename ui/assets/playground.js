// Playground: chat with a registered version or alias through the
// OpenAI-compatible /v1/chat/completions, streamed as server-sent events.
import { get, stream } from './api.js';
import { h, errorBox } from './dom.js';

export async function playgroundPage(main, q) {
  const models = (await get('/v1/models')).data || [];
  const want = q.get('model');
  const ids = models.map((m) => m.id);
  if (want && !ids.includes(want)) ids.unshift(want);
  const log = h('div', { class: 'chat', role: 'log', 'aria-live': 'polite', 'aria-label': 'conversation', tabindex: 0 });
  const msg = h('div', { 'aria-live': 'assertive' });
  const settings = h('form', { class: 'settings', onsubmit: (e) => e.preventDefault() },
    h('div', { class: 'field' }, h('label', { for: 'pg-model' }, 'Model'),
      ids.length ? h('select', { id: 'pg-model', name: 'model' }, ids.map((id) => h('option', { value: id, selected: id === want }, id)))
        : h('input', { id: 'pg-model', name: 'model', required: true, placeholder: 'main.demo.bot/1' })),
    h('div', { class: 'field' }, h('label', { for: 'pg-temp' }, 'Temperature'),
      h('input', { id: 'pg-temp', name: 'temperature', type: 'number', min: 0, max: 2, step: 0.1, value: 0.7 })),
    h('div', { class: 'field' }, h('label', { for: 'pg-max' }, 'Max tokens'),
      h('input', { id: 'pg-max', name: 'max_tokens', type: 'number', min: 1, max: 4096, step: 1, value: 128 })),
    h('div', { class: 'field wide' }, h('label', { for: 'pg-system' }, 'System prompt'),
      h('textarea', { id: 'pg-system', name: 'system', rows: 2, placeholder: 'optional' })));
  const input = h('textarea', { id: 'pg-input', name: 'content', rows: 3, required: true, placeholder: 'Type a message. Enter sends, Shift+Enter adds a line.' });
  const send = h('button', { type: 'submit', class: 'primary' }, 'Send');
  const stop = h('button', { type: 'button', hidden: true }, 'Stop');
  const clear = h('button', { type: 'button' }, 'Clear');
  const compose = h('form', { class: 'compose' }, h('label', { for: 'pg-input' }, 'Message'), input, h('div', { class: 'actions' }, send, stop, clear));
  main.append(h('h1', {}, 'Playground'), settings, log, msg, compose);
  if (!ids.length) msg.append(h('p', { class: 'muted' }, 'No registered models yet: a completed run registers one.'));

  const history = [];
  let ctl = null;
  const bubble = (role, text) => {
    const body = h('div', { class: 'text' }, text);
    const b = h('div', { class: `msg ${role}` }, h('div', { class: 'role' }, role === 'user' ? 'You' : 'Assistant'), body);
    log.append(b);
    b.scrollIntoView({ block: 'end' });
    return { b, body };
  };
  input.addEventListener('keydown', (e) => {
    if (e.key === 'Enter' && !e.shiftKey && !e.isComposing) { e.preventDefault(); compose.requestSubmit(); }
  });
  clear.addEventListener('click', () => { history.length = 0; log.replaceChildren(); msg.replaceChildren(); input.focus(); });
  stop.addEventListener('click', () => ctl?.abort());
  compose.addEventListener('submit', async (e) => {
    e.preventDefault();
    const content = input.value.trim();
    if (!content || ctl) return;
    const f = new FormData(settings);
    const model = (f.get('model') || '').trim();
    if (!model) { msg.replaceChildren(errorBox(new Error('Choose a model first.'))); return; }
    input.value = '';
    msg.replaceChildren();
    history.push({ role: 'user', content });
    bubble('user', content);
    const { b, body } = bubble('assistant', '');
    b.setAttribute('aria-busy', 'true');
    const system = (f.get('system') || '').trim();
    const req = { model, stream: true, temperature: Number(f.get('temperature')), max_tokens: Number(f.get('max_tokens')),
      messages: [...(system ? [{ role: 'system', content: system }] : []), ...history] };
    ctl = new AbortController();
    send.disabled = true;
    stop.hidden = false;
    let text = '', finish = '';
    try {
      await stream('/v1/chat/completions', req, (ev) => {
        const c = ev.choices?.[0];
        if (c?.delta?.content) { text += c.delta.content; body.textContent = text; }
        if (c?.finish_reason) finish = c.finish_reason;
      }, ctl.signal);
      b.append(h('div', { class: 'meta' }, `${model} · finished: ${finish || 'stop'}`));
    } catch (err) {
      if (err.name === 'AbortError') b.append(h('div', { class: 'meta' }, 'stopped'));
      else msg.replaceChildren(errorBox(err));
    } finally {
      history.push({ role: 'assistant', content: text });
      b.removeAttribute('aria-busy');
      b.classList.add('done');
      ctl = null;
      send.disabled = false;
      stop.hidden = true;
      input.focus();
    }
  });
  input.focus();
}
