// The API client of the pages: JSON requests with the bearer token, the
// token prompt, and the server-sent-event reader for streaming chat.

const tokenKey = 'hone.token';
let settings = null;
let pendingToken = null;

export class APIError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

// start reads the server's UI settings and, when a token is required and
// none is stored yet, asks for it before anything else is requested.
export async function start() {
  const resp = await fetch('/ui/config.json');
  settings = await resp.json();
  if (settings.token_required && !sessionStorage.getItem(tokenKey)) {
    await askToken('');
  }
}

export function tokenRequired() {
  return settings?.token_required ?? false;
}

// askToken shows the token dialog; concurrent callers share one prompt.
export function askToken(message) {
  if (pendingToken) return pendingToken;
  const dlg = document.getElementById('token-dialog');
  const form = document.getElementById('token-form');
  const input = document.getElementById('token-input');
  const err = document.getElementById('token-error');
  err.hidden = !message;
  err.textContent = message || '';
  input.value = sessionStorage.getItem(tokenKey) || '';
  pendingToken = new Promise((resolve, reject) => {
    const done = (ok) => {
      form.removeEventListener('submit', onSubmit);
      document.getElementById('token-cancel').removeEventListener('click', onCancel);
      dlg.removeEventListener('cancel', onCancel);
      if (dlg.open) dlg.close();
      pendingToken = null;
      ok ? resolve() : reject(new APIError(401, 'unauthorized', 'a bearer token is required'));
    };
    const onSubmit = (e) => {
      e.preventDefault();
      sessionStorage.setItem(tokenKey, input.value.trim());
      done(true);
    };
    const onCancel = (e) => { e.preventDefault(); done(false); };
    form.addEventListener('submit', onSubmit);
    document.getElementById('token-cancel').addEventListener('click', onCancel);
    dlg.addEventListener('cancel', onCancel);
    dlg.showModal();
    input.focus();
  });
  return pendingToken;
}

function headers(json) {
  const h = { Accept: 'application/json' };
  const tok = sessionStorage.getItem(tokenKey);
  if (tok) h.Authorization = 'Bearer ' + tok;
  if (json) h['Content-Type'] = 'application/json';
  return h;
}

// send makes one request, asking for the token again after a 401.
async function send(method, path, body, signal) {
  for (let attempt = 0; ; attempt++) {
    const init = { method, headers: headers(body !== undefined), signal };
    if (body !== undefined) init.body = JSON.stringify(body);
    const resp = await fetch(path, init);
    if (resp.status === 401 && attempt < 3) {
      await askToken(sessionStorage.getItem(tokenKey) ? 'The server refused that token.' : '');
      continue;
    }
    return resp;
  }
}

async function failure(resp) {
  const data = await resp.json().catch(() => null);
  // /api errors are {code, error}; /v1 errors are {error: {message, code}}.
  const e = data?.error;
  const msg = typeof e === 'string' ? e : e?.message || `${resp.status} ${resp.statusText}`;
  return new APIError(resp.status, data?.code || e?.code || '', msg);
}

// api makes a JSON request and returns the decoded body (null for 204).
export async function api(method, path, body) {
  const resp = await send(method, path, body);
  if (!resp.ok) throw await failure(resp);
  if (resp.status === 204) return null;
  return resp.json();
}

export const get = (path) => api('GET', path);
// getAll fetches every page of a paged list (the server answers at most
// 1000 items a page), concatenating the array fields named in keys.
export async function getAll(path, ...keys) {
  const sep = path.includes('?') ? '&' : '?';
  let out = null, token = '';
  do {
    const page = await get(`${path}${sep}limit=1000${token ? '&page_token=' + encodeURIComponent(token) : ''}`);
    if (out === null) out = page;
    else for (const k of keys) out[k] = (out[k] || []).concat(page[k] || []);
    token = page.next_page_token || '';
  } while (token);
  return out;
}
export const post = (path, body) => api('POST', path, body ?? {});
export const put = (path, body) => api('PUT', path, body);
export const del = (path) => api('DELETE', path);

// stream posts body and calls onEvent with each server-sent event's JSON
// until [DONE]; signal aborts it.
export async function stream(path, body, onEvent, signal) {
  const resp = await send('POST', path, body, signal);
  if (!resp.ok) throw await failure(resp);
  const reader = resp.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  for (;;) {
    const { value, done } = await reader.read();
    if (done) return;
    buf += value;
    let cut;
    while ((cut = buf.indexOf('\n\n')) >= 0) {
      const event = buf.slice(0, cut);
      buf = buf.slice(cut + 2);
      for (const line of event.split('\n')) {
        if (!line.startsWith('data: ')) continue;
        const data = line.slice(6);
        if (data === '[DONE]') return;
        const msg = JSON.parse(data);
        if (msg.error) throw new APIError(msg.error.code || 500, msg.error.type || '', msg.error.message);
        onEvent(msg);
      }
    }
  }
}

export const enc = encodeURIComponent;
