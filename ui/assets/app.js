// The single page: a hash router over the Runs, Create, Catalog and
// Playground pages. Each page renders into <main> and returns an optional
// cleanup (to stop its polling) that runs when the route changes.
import { start, askToken, tokenRequired } from './api.js';
import { errorBox, h } from './dom.js';
import { runsPage, runPage, comparePage } from './runs.js';
import { createPage } from './create.js';
import { catalogPage, modelPage } from './catalog.js';
import { playgroundPage } from './playground.js';

const routes = [
  [/^\/runs\/?$/, 'runs', () => runsPage],
  [/^\/runs\/([^/]+)$/, 'runs', (m) => (main, q) => runPage(main, decodeURIComponent(m[1]), q)],
  [/^\/compare$/, 'runs', () => comparePage],
  [/^\/create$/, 'create', () => createPage],
  [/^\/catalog\/?$/, 'catalog', () => catalogPage],
  [/^\/catalog\/([^/]+)$/, 'catalog', (m) => (main, q) => modelPage(main, decodeURIComponent(m[1]), q)],
  [/^\/playground$/, 'playground', () => playgroundPage],
];

let cleanup = null;
let first = true;

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  const hash = location.hash.replace(/^#/, '') || '/runs';
  const [path, query] = hash.split('?');
  const q = new URLSearchParams(query || '');
  const main = document.getElementById('main');
  main.replaceChildren();
  for (const [re, nav, page] of routes) {
    const m = path.match(re);
    if (!m) continue;
    for (const a of document.querySelectorAll('[data-nav]')) {
      if (a.dataset.nav === nav) a.setAttribute('aria-current', 'page');
      else a.removeAttribute('aria-current');
    }
    try {
      cleanup = (await page(m)(main, q)) || null;
    } catch (err) {
      main.append(errorBox(err));
    }
    // Move focus to the new page's heading for keyboard and screen-reader
    // users; on first load it stays at the top, before the skip link.
    const h1 = main.querySelector('h1');
    if (h1 && !first) { h1.tabIndex = -1; h1.focus({ preventScroll: true }); }
    first = false;
    return;
  }
  main.append(h('h1', {}, 'Not found'), h('p', {}, 'No page at ', h('code', {}, hash), '. ', h('a', { href: '#/runs' }, 'Go to Runs')));
}

async function boot() {
  document.getElementById('token-button').addEventListener('click', () => askToken('').then(route, () => {}));
  try {
    await start();
  } catch (err) {
    document.getElementById('main').replaceChildren(errorBox(err));
    return;
  }
  document.getElementById('token-button').hidden = !tokenRequired();
  window.addEventListener('hashchange', route);
  route();
}

boot();
