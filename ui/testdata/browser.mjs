// Drives hone's web UI in headless Chromium (playwright-core, the system
// chromium): the flows of issue 14, with screenshots of every page at
// 1280x800 and 390 pixels wide. Run by browser_test.go, which starts the
// server and passes the settings as JSON in HONE_UI_TEST. Exits non-zero on
// the first failed expectation or on any console error.
import { createRequire } from 'node:module';
import { mkdtempSync, mkdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

const cfg = JSON.parse(process.env.HONE_UI_TEST);
const { chromium } = createRequire(import.meta.url)(cfg.playwright);
const problems = [];
const log = (...a) => console.log('[ui]', ...a);
function expect(cond, what) {
  if (!cond) throw new Error('expectation failed: ' + what);
}

const profile = mkdtempSync(join(tmpdir(), 'hone-ui-chromium-'));
mkdirSync(cfg.shots, { recursive: true });
const ctx = await chromium.launchPersistentContext(profile, {
  executablePath: '/usr/bin/chromium',
  headless: true,
  args: ['--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
    '--disable-component-update', '--disable-sync'],
  viewport: { width: 1280, height: 800 },
});
const page = ctx.pages()[0] || (await ctx.newPage());
page.setDefaultTimeout(60_000);
page.on('console', (m) => { if (m.type() === 'error') problems.push(`console error: ${m.text()} at ${JSON.stringify(m.location())}`); });
page.on('pageerror', (e) => problems.push(`page error: ${e.message}`));
page.on('response', (r) => { if (r.status() >= 400) problems.push(`HTTP ${r.status()} ${r.request().method()} ${r.url()}`); });

let width = 1280;
async function shot(name) {
  // Horizontal scrolling is never acceptable, at either width.
  const [sw, cw] = await page.evaluate(() => [document.documentElement.scrollWidth, document.documentElement.clientWidth]);
  expect(sw <= cw, `${name} at ${width}px scrolls horizontally (content ${sw}px wide in ${cw}px)`);
  const path = join(cfg.shots, `${width}-${name}.png`);
  await page.screenshot({ path, fullPage: true });
  log('screenshot', path);
}
const h1 = (name) => page.getByRole('heading', { level: 1, name, exact: true }).waitFor();
const nav = (name) => page.getByRole('navigation', { name: 'Main' }).getByRole('link', { name, exact: true }).click();
const status = (want, timeout = 60_000) => page.locator('.page-head .status', { hasText: want }).waitFor({ timeout });
const points = (series) => page.evaluate((s) => {
  const p = document.querySelector(`g.series[data-series="${s}"] path`);
  return p ? (p.getAttribute('d').match(/[ML]/g) || []).length : 0;
}, series);

try {
  // The server wants a token: the prompt comes before anything is shown.
  await page.goto(cfg.url + '/');
  await page.getByRole('dialog').getByLabel('Token').fill(cfg.token);
  await page.getByRole('button', { name: 'Use token' }).click();
  await h1('Runs');
  await page.getByRole('link', { name: cfg.longRun }).waitFor();

  // Keyboard: skip link, then the main navigation, without a mouse.
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.textContent) === 'Skip to content', 'first Tab reaches the skip link');
  for (let i = 0; i < 3; i++) await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.textContent) === 'Create', 'Tab reaches the Create link');
  await page.keyboard.press('Enter');
  await h1('Create a run');
  await page.keyboard.press('Tab');
  expect(await page.evaluate(() => document.activeElement.id) === 'f-model', 'after navigating, Tab reaches the first form field');

  // Runs list, live: the long run shows progress and an ETA.
  await nav('Runs');
  await h1('Runs');
  await page.locator(`tr[data-run="${cfg.longRun}"] .progress-label`, { hasText: /[1-9]\d* \/ \d+ steps/ }).waitFor({ timeout: 120_000 });
  await shot('runs');

  // Its page: curves drawn and growing while it trains; cancel, resume, cancel.
  await page.getByRole('link', { name: cfg.longRun, exact: true }).click();
  await h1(cfg.longRun);
  await status('RUNNING');
  await page.waitForFunction(() => (document.querySelector('g.series[data-series="train loss"] path')?.getAttribute('d').match(/L/g) || []).length >= 2);
  const before = await points('train loss');
  await page.waitForFunction((n) => (document.querySelector('g.series[data-series="train loss"] path')?.getAttribute('d').match(/[ML]/g) || []).length > n, before);
  log(`live curve grew past ${before} points`);
  await shot('run-live');
  await page.getByRole('button', { name: 'Cancel run' }).click();
  await status('STOPPED');
  await page.getByRole('button', { name: 'Resume run' }).click();
  await page.locator('.page-head .status').filter({ hasNotText: 'STOPPED' }).waitFor();
  await page.getByRole('button', { name: 'Cancel run' }).click();
  await status('STOPPED');

  // Catalog: a catalog and a schema created from the page.
  await nav('Catalog');
  await h1('Catalog');
  for (const name of ['lab', 'lab.ui']) {
    await page.getByLabel('New catalog or schema').fill(name);
    await page.getByRole('button', { name: 'Create', exact: true }).click();
    await page.getByText(`Created ${name}.`).waitFor();
  }
  await page.getByRole('heading', { name: 'lab.ui', level: 3 }).waitFor();

  // Create: refused data names file:line; good data shows the report, then queues.
  await nav('Create');
  await h1('Create a run');
  await page.getByLabel('Base model').fill(cfg.model);
  await page.getByLabel('Training data path').fill(cfg.bad);
  await page.getByLabel('Eval data path').fill(cfg.eval);
  await page.getByLabel('Eval prompts').fill('What is 12 + 30?');
  await page.getByLabel('Training duration').fill('6ba');
  await page.getByLabel('Learning rate').fill('3e-3');
  await page.getByLabel('Context length').fill('256');
  await page.getByLabel('Register to').fill('lab.ui.bot');
  expect(await page.getByLabel('LoRA rank').isHidden(), 'LoRA settings are hidden for full fine-tuning');
  await page.getByLabel('Training method').selectOption('lora');
  await page.getByLabel('LoRA rank').fill('4');
  await page.getByLabel('Target modules').fill('q_proj,v_proj');
  await page.getByText('Advanced settings').click();
  await page.getByLabel('Batch rows').fill('2');
  await page.getByLabel('Checkpoint every (steps)').fill('2');
  await page.getByLabel('Seed').fill('5');
  await page.getByRole('button', { name: 'Check data' }).click();
  await page.getByRole('heading', { name: 'Data report: refused' }).waitFor();
  await page.getByText(/bad\.jsonl:2/).first().waitFor();
  expect(await page.getByRole('button', { name: 'Queue run' }).isHidden(), 'refused data cannot be queued');
  await shot('create-refused');
  await page.getByLabel('Training data path').fill(cfg.train);
  await page.getByRole('button', { name: 'Check data' }).click();
  await page.getByRole('heading', { name: 'Data report: ready to queue' }).waitFor();
  await page.getByText('Steps per epoch').waitFor();
  await shot('create');
  await page.getByRole('button', { name: 'Queue run' }).click();
  await page.waitForURL(/#\/runs\/[^/]+$/);
  const run = decodeURIComponent(page.url().split('#/runs/')[1]);
  log('queued', run);

  // Watch it complete, with its curve, eval outputs and registered version.
  await h1(run);
  await page.getByText('LoRA rank 4, alpha 32, dropout 0.05; q_proj, v_proj; registers the merged model').waitFor();
  await status('COMPLETED', 300_000);
  expect(await points('train loss') >= 6, 'the loss curve has a point per step');
  await page.getByText('Checkpoint at step 6').waitFor();
  await page.getByText('What is 12 + 30?').first().waitFor();
  await shot('run');

  await page.getByRole('link', { name: 'lab.ui.bot/1' }).click();
  await h1('lab.ui.bot');
  await page.getByRole('heading', { name: 'Version 1' }).waitFor();
  await page.getByLabel('Alias', { exact: true }).fill('champion');
  await page.getByLabel('Version', { exact: true }).selectOption('1');
  await page.getByRole('button', { name: 'Set alias' }).click();
  await page.getByText('@champion now points at version 1.').waitFor();
  await page.getByRole('list', { name: 'aliases' }).getByText('@champion').waitFor();
  await shot('model');

  // Chat with it, streamed.
  await page.getByRole('link', { name: 'Chat with it' }).click();
  await h1('Playground');
  expect(await page.getByLabel('Model').inputValue() === 'lab.ui.bot/1', 'the playground opens on the chosen version');
  await page.getByLabel('Temperature').fill('0');
  await page.getByLabel('Max tokens').fill('16');
  await page.getByLabel('Message').fill('What is 12 + 30?');
  await page.getByLabel('Message').press('Enter');
  await page.locator('.msg.assistant.done .meta', { hasText: 'finished:' }).waitFor({ timeout: 120_000 });
  const reply = await page.locator('.msg.assistant .text').textContent();
  const meta = await page.locator('.msg.assistant .meta').textContent();
  log('reply', JSON.stringify(reply), meta);
  expect(reply.length > 0 || meta.includes('finished: stop'), 'the assistant answered');
  await shot('playground');

  // Compare both runs' curves from the list.
  await nav('Runs');
  await h1('Runs');
  for (const name of [run, cfg.longRun]) await page.getByLabel(`select ${name} to compare`).check();
  await page.locator(`tr[data-run="${run}"] .status`, { hasText: 'COMPLETED' }).waitFor();
  await shot('runs-finished');
  await page.getByRole('button', { name: 'Compare selected (2)' }).click();
  await h1('Compare runs');
  await page.waitForFunction(() => document.querySelectorAll('figure.chart')[0]?.querySelectorAll('g.series path').length === 2);
  await shot('compare');

  // The sweep: listed on the Runs page, its grid on the compare view with
  // every run's final eval loss, and the lowest marked best.
  await nav('Runs');
  await page.getByRole('region', { name: 'Sweeps' }).getByRole('link', { name: cfg.sweep }).click();
  await h1(`Sweep ${cfg.sweep}`);
  await page.locator('table.sweep-grid td.best').waitFor({ timeout: 300_000 });
  await page.waitForFunction(() => [...document.querySelectorAll('table.sweep-grid td[data-run] .status')].every((s) => s.textContent === 'COMPLETED'), null, { timeout: 300_000 });
  const cells = await page.$$eval('table.sweep-grid td[data-run]', (tds) => tds.map((td) => ({
    run: td.dataset.run, best: td.classList.contains('best'), loss: parseFloat(td.querySelector('.loss').dataset.loss),
    mark: td.textContent.includes('best') })));
  log('sweep grid', JSON.stringify(cells));
  expect(cells.length === 4, `the grid has 4 runs (has ${cells.length})`);
  expect(cells.every((c) => Number.isFinite(c.loss)), 'every run of the grid shows its final eval loss');
  const lowest = Math.min(...cells.map((c) => c.loss));
  const marked = cells.filter((c) => c.best && c.mark);
  expect(marked.length === 1 && marked[0].loss === lowest, `exactly the run with the lowest eval loss (${lowest}) is marked best`);
  expect(await page.getByRole('table', { name: /final eval loss per learning rate and duration/ }).count() === 1, 'the grid is labelled');
  await page.locator('g.series path').first().waitFor();
  await shot('sweep');
  await nav('Catalog');
  await page.getByRole('link', { name: 'lab.ui.bot' }).waitFor();
  await shot('catalog');

  // A phone: every page again at 390 pixels wide.
  width = 390;
  await page.setViewportSize({ width: 390, height: 844 });
  const pages = [
    ['runs', '#/runs', () => page.getByRole('link', { name: run, exact: true }).waitFor()],
    ['run', '#/runs/' + encodeURIComponent(run), () => page.getByText('Checkpoint at step 6').waitFor()],
    ['compare', `#/compare?runs=${encodeURIComponent(run)},${encodeURIComponent(cfg.longRun)}`, () => page.locator('g.series path').first().waitFor()],
    ['sweep', '#/compare?sweep=' + encodeURIComponent(cfg.sweep), () => page.locator('table.sweep-grid td.best').waitFor()],
    ['create', '#/create', () => h1('Create a run')],
    ['catalog', '#/catalog', () => page.getByRole('link', { name: 'lab.ui.bot' }).waitFor()],
    ['model', '#/catalog/lab.ui.bot', () => page.getByRole('heading', { name: 'Version 1' }).waitFor()],
    ['playground', '#/playground?model=lab.ui.bot%40champion', () => h1('Playground')],
  ];
  for (const [name, hash, ready] of pages) {
    await page.goto(cfg.url + '/' + hash);
    await ready();
    await shot(name);
  }
} catch (err) {
  problems.unshift(String(err.stack || err));
  await page.screenshot({ path: join(cfg.shots, 'failure.png'), fullPage: true }).catch(() => {});
} finally {
  await ctx.close();
  rmSync(profile, { recursive: true, force: true });
}
if (problems.length) {
  console.error(problems.join('\n'));
  process.exit(1);
}
log('ok');
