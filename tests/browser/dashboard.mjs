// Browser test of the `sluice serve` dashboard, driven through headless
// Chromium with playwright-core (no browser download: the system Chromium).
//
//   node tests/browser/dashboard.mjs --base http://127.0.0.1:PORT [--token T] \
//        --screenshot target/browser/dashboard.png [--run-timeout-ms 600000]
//
// It submits the example pipeline through the API, follows it in the
// dashboard until every DAG node is terminal, checks the DAG, the train
// step's panel, the lineage of the push step's model back to the source,
// submits a second run through the dashboard's form and compares the two. Every wait is on a selector or a predicate, never a
// fixed sleep. Exit status 0 on success, 1 with `FAIL: <stage>: <why>`.

import fs from 'node:fs';
import path from 'node:path';
import { chromium } from 'playwright-core';

const PIPELINE = 'examples/pipelines/tabular.toml';
const STEPS = ['ingest', 'stats', 'validate', 'transform', 'train', 'evaluate', 'push', 'export'];
const EDGES = [
  'ingest>stats', 'ingest>validate', 'ingest>transform', 'transform>train', 'transform>export', 'stats>transform',
  'train>evaluate', 'transform>evaluate', 'train>push', 'evaluate>push',
];
const TERMINAL_STEP = ['succeeded', 'cached', 'failed', 'skipped', 'cancelled'];
const TERMINAL_RUN = ['succeeded', 'failed', 'cancelled'];
/** Waits on things the page shows without running a pipeline. */
const UI_TIMEOUT_MS = 20_000;

function parseArgs(argv) {
  const opts = { base: '', token: '', screenshot: '', runTimeoutMs: 600_000 };
  for (let i = 0; i < argv.length; i++) {
    const next = () => {
      if (i + 1 >= argv.length) usage(`${argv[i]} needs a value`);
      return argv[++i];
    };
    switch (argv[i]) {
      case '--base': opts.base = next().replace(/\/+$/, ''); break;
      case '--token': opts.token = next(); break;
      case '--screenshot': opts.screenshot = next(); break;
      case '--run-timeout-ms': opts.runTimeoutMs = Number(next()); break;
      case '-h': case '--help': usage(); break;
      default: usage(`unknown argument ${argv[i]}`);
    }
  }
  if (!opts.base) usage('--base is required');
  if (!opts.screenshot) usage('--screenshot is required');
  if (!(opts.runTimeoutMs > 0)) usage('--run-timeout-ms must be a positive number');
  return opts;
}

function usage(problem) {
  if (problem) console.error(`error: ${problem}`);
  console.error('usage: node tests/browser/dashboard.mjs --base URL [--token T] --screenshot PATH [--run-timeout-ms MS]');
  process.exit(2);
}

class Failure extends Error {}
const fail = (message) => { throw new Failure(message); };
function expect(cond, message) { if (!cond) fail(message); }

const opts = parseArgs(process.argv.slice(2));
let stage = 'start';
const pageErrors = [];
const consoleErrors = [];

async function api(method, p, body) {
  const headers = { Accept: 'application/json' };
  if (opts.token) headers.Authorization = `Bearer ${opts.token}`;
  if (body !== undefined) headers['Content-Type'] = 'application/json';
  let res;
  try {
    res = await fetch(opts.base + p, { method, headers, body: body === undefined ? undefined : JSON.stringify(body) });
  } catch (err) {
    fail(`${method} ${p}: cannot reach ${opts.base}: ${err.cause?.message || err.message}`);
  }
  const text = await res.text();
  let json = null;
  try { json = text ? JSON.parse(text) : null; } catch { /* checked below */ }
  return { status: res.status, json, text };
}

/** Waits for every DAG node to be terminal and the run badge too; returns {step: status}. */
async function waitForRunEnd(page, id) {
  try {
    await page.waitForFunction(({ terminalStep, terminalRun }) => {
      const nodes = [...document.querySelectorAll('svg.dag g.node')];
      const badge = document.querySelector('.run-head .run-status');
      return nodes.length > 0
        && nodes.every((n) => terminalStep.includes(n.getAttribute('data-status')))
        && badge && terminalRun.includes(badge.getAttribute('data-status'));
    }, { terminalStep: TERMINAL_STEP, terminalRun: TERMINAL_RUN }, { timeout: opts.runTimeoutMs, polling: 'raf' });
  } catch (err) {
    const now = await dagState(page).catch(() => ({}));
    fail(`run ${id} did not finish within ${opts.runTimeoutMs} ms; DAG shows ${JSON.stringify(now)}`);
  }
  return dagState(page);
}

const dagState = (page) => page.$$eval('svg.dag g.node', (ns) => Object.fromEntries(ns.map((n) => [n.getAttribute('data-step'), n.getAttribute('data-status')])));

async function visible(page, selector, what) {
  try {
    return await page.waitForSelector(selector, { state: 'visible', timeout: UI_TIMEOUT_MS });
  } catch {
    fail(`${what}: nothing matched ${selector} within ${UI_TIMEOUT_MS} ms`);
  }
}

/** Waits for the lineage view of `digest` to load; fails with its error if it does not. */
async function lineageLoaded(page, digest) {
  const view = `div.lineage[data-digest="${digest}"]`;
  try {
    await page.waitForSelector(`${view}:not([data-state="loading"])`, { timeout: UI_TIMEOUT_MS });
  } catch {
    fail(`the lineage view of ${digest} did not load within ${UI_TIMEOUT_MS} ms`);
  }
  if (await page.getAttribute(view, 'data-state') !== 'loaded') {
    fail(`the lineage view of ${digest} failed: ${(await page.textContent(`${view} .error`).catch(() => '')) || '(no message)'}`);
  }
  return view;
}

/**
 * From the push step's panel, follows the lineage link of its `model`
 * output: who produced and read it, and a derivation that reaches the
 * `raw` source through ingest, transform and train; then a tree digest's
 * own lineage, and an unknown digest's error.
 */
async function checkLineage(page, id, screenshot) {
  stage = 'lineage link in the push step panel';
  await page.click('svg.dag g.node[data-step="push"]');
  const out = '#step-panel[data-step="push"] table.outputs tr[data-output="model"]';
  const download = await visible(page, `${out} a[href^="/v1/artifacts/sha256:"]`, 'the push model output with its digest');
  const digest = (await download.getAttribute('href')).replace('/v1/artifacts/', '');
  await page.click(`${out} a.lineage-link`);
  await page.waitForFunction((d) => location.hash === `#/artifacts/${d}/lineage`, digest, { timeout: UI_TIMEOUT_MS })
    .catch(() => fail(`the lineage link did not open #/artifacts/${digest}/lineage (at ${page.url()})`));

  stage = 'lineage view';
  const view = await lineageLoaded(page, digest);
  const produced = await page.$$eval(`${view} [data-uses="produced-by"] li`, (lis) => lis.map((li) => ({
    run: li.getAttribute('data-run-id'), step: li.getAttribute('data-step'), text: li.textContent, href: li.querySelector('a')?.getAttribute('href'),
  })));
  const push = produced.find((p) => p.run === id && p.step === 'push');
  expect(push, `"Produced by" lists ${JSON.stringify(produced)}, expected push in run ${id}`);
  expect(push.text.includes('push.model'), `"Produced by" shows ${JSON.stringify(push.text)}, expected push.model`);
  expect(push.href === `#/runs/${id}?step=push`, `"Produced by" links ${push.href}, expected the run's push step`);
  await visible(page, `${view} [data-uses="consumed-by"]`, '"Consumed by"');
  await visible(page, `${view} [data-uses="source-of"]`, '"Source of"');

  const tree = `${view} ul.tree`;
  const root = await page.getAttribute(`${tree} > li`, 'data-digest');
  expect(root === digest, `the derivation starts at ${root}, expected ${digest}`);
  const steps = new Set(await page.$$eval(`${tree} li[data-kind="step"]`, (lis) => lis.map((li) => li.getAttribute('data-step'))));
  for (const s of ['ingest', 'transform', 'train']) {
    expect(steps.has(s), `the derivation shows steps ${JSON.stringify([...steps])}, expected ${s} among them`);
  }
  const raw = await visible(page, `${tree} li[data-kind="source"][data-source="raw"]`, 'the source `raw` in the derivation');
  const rawText = (await raw.textContent()).replace(/\s+/g, ' ');
  expect(rawText.includes('source raw of run'), `the raw node reads ${JSON.stringify(rawText)}`);
  const again = await page.$$eval(`${tree} li.again`, (lis) => lis.map((li) => li.textContent));
  expect(again.length > 0 && again.every((t) => t.includes('(see above)')), `digests met again: ${JSON.stringify(again)}, expected "(see above)" marks`);
  const duplicates = await page.$$eval(`${tree} li[data-kind]`, (lis) => {
    const ds = lis.map((li) => li.getAttribute('data-digest'));
    return ds.filter((d, i) => ds.indexOf(d) !== i);
  });
  expect(!duplicates.length, `the derivation expands ${JSON.stringify(duplicates)} more than once`);
  fs.mkdirSync(path.dirname(path.resolve(screenshot)), { recursive: true });
  await page.screenshot({ path: screenshot, fullPage: true });

  stage = 'lineage of a tree digest';
  const transform = `${tree} li[data-kind="step"][data-step="transform"]`;
  const transformDigest = await page.getAttribute(transform, 'data-digest');
  await page.click(`${transform} > div > a.digest`);
  const transformView = await lineageLoaded(page, transformDigest);
  expect(new URL(page.url()).hash === `#/artifacts/${transformDigest}/lineage`, `clicking the transform digest opened ${page.url()}`);
  await visible(page, `${transformView} [data-uses="produced-by"] li[data-step="transform"]`, 'transform in "Produced by" of its output');

  stage = 'lineage of an unknown digest';
  const unknown = `sha256:${'0'.repeat(64)}`;
  await page.goto(`${opts.base}/#/artifacts/${unknown}/lineage`);
  await page.waitForSelector(`div.lineage[data-digest="${unknown}"][data-state="failed"]`, { timeout: UI_TIMEOUT_MS })
    .catch(() => fail(`the lineage view of the unknown ${unknown} did not fail`));
  const error = await page.textContent('div.lineage .error');
  expect(error.includes(`no artifact \`${unknown}\``), `the unknown digest's lineage shows ${JSON.stringify(error)}, expected the server's not_found message`);

  await checkLineageText(page);
}

/**
 * What no example run produces, from a made-up answer: a skipped run's
 * warning, a cached production, an unknown origin, and markup in server
 * strings shown as text, never parsed.
 */
async function checkLineageText(page) {
  stage = 'lineage of a made-up answer';
  const digest = `sha256:${'a'.repeat(64)}`;
  const input = `sha256:${'b'.repeat(64)}`;
  const markup = '<img src=x onerror="window.__injected=1">';
  const skippedRun = '20261203-000000-deadbeef';
  const answer = {
    digest,
    produced_by: [{ run: skippedRun, pipeline: markup, step: 'train', output: 'model', cached: true, component: null }],
    source_of: [],
    consumed_by: [],
    upstream: {
      [digest]: { kind: 'step', run: skippedRun, pipeline: markup, step: 'train', output: 'model', cached: true, component: null, inputs: { [markup]: input } },
      [input]: { kind: 'unknown' },
    },
    roots: [],
    skipped: [{ run: skippedRun, reason: `seal does not verify ${markup}` }],
  };
  const url = (u) => u.pathname === `/v1/artifacts/${digest}/lineage`;
  await page.route(url, (route) => route.fulfill({ json: answer }));
  try {
    await page.goto(`${page.url().split('#')[0]}#/artifacts/${digest}/lineage`);
    const view = await lineageLoaded(page, digest);
    const warning = await visible(page, `${view} .warning li[data-run-id="${skippedRun}"]`, 'the skipped run\'s warning');
    expect((await warning.textContent()).includes(`seal does not verify ${markup}`), 'the skipped run\'s reason is not shown verbatim');
    await visible(page, `${view} [data-uses="produced-by"] li .badge[data-status="cached"]`, 'the cached mark of a cached production');
    const unknown = await visible(page, `${view} ul.tree li[data-kind="unknown"][data-digest="${input}"]`, 'the input no run made');
    const text = await unknown.textContent();
    expect(text.includes(`${markup} = `) && text.includes('made by no run in scope'), `the unknown input reads ${JSON.stringify(text)}`);
    const injected = await page.evaluate(() => document.querySelectorAll('div.lineage img').length + (window.__injected ? 1 : 0));
    expect(injected === 0, 'markup in server strings was parsed into the page');
  } finally {
    await page.unroute(url);
  }
}

async function main() {
  const executablePath = process.env.CHROMIUM || '/usr/bin/chromium';
  if (!fs.existsSync(executablePath)) fail(`no Chromium at ${executablePath} (set CHROMIUM)`);

  stage = 'whoami';
  const who = await api('GET', '/v1/whoami');
  expect(who.status === 200, `GET /v1/whoami answered ${who.status}: ${who.text.slice(0, 300)}`);

  stage = 'submit run via API';
  const created = await api('POST', '/v1/runs', { pipeline: PIPELINE, params: {} });
  expect(created.status === 201, `POST /v1/runs answered ${created.status}, expected 201: ${created.text.slice(0, 300)}`);
  const id = created.json?.id;
  expect(typeof id === 'string' && id.length > 0, `POST /v1/runs answered no id: ${created.text.slice(0, 300)}`);
  console.log(`submitted run ${id}`);

  const browser = await chromium.launch({ executablePath, args: ['--no-sandbox', '--headless=new'] });
  try {
    const context = await browser.newContext({ viewport: { width: 1400, height: 900 }, acceptDownloads: true });
    const page = await context.newPage();
    page.on('pageerror', (err) => pageErrors.push(String(err)));
    page.on('console', (msg) => { if (msg.type() === 'error' && !msg.text().includes('401')) consoleErrors.push(msg.text()); });

    if (opts.token) {
      // A fresh browser has no token: the server answers 401 and the
      // dashboard asks for one; signing in loads the runs.
      stage = 'token entry';
      await page.goto(`${opts.base}/#/`);
      await visible(page, '#auth input#auth-token', 'the token form');
      await page.fill('#auth-token', opts.token);
      await page.click('#auth button[type=submit]');
      await page.waitForSelector('#auth', { state: 'detached', timeout: UI_TIMEOUT_MS })
        .catch(() => fail('the token form did not close after signing in'));
    }

    stage = 'runs list';
    await page.goto(`${opts.base}/#/`);
    const row = `table.runs tr[data-run-id="${id}"]`;
    await visible(page, row, `run ${id} in the runs list`);
    expect(!(await page.$('#auth')), 'the dashboard asked for a token again after signing in');
    const who = await visible(page, '#who .whoami', 'whoami in the header');
    if (opts.token) {
      const text = (await who.textContent()).trim();
      expect(text === 'ci · runner', `whoami shows ${JSON.stringify(text)}, expected "ci · runner"`);
    }

    stage = 'run page';
    await page.click(`${row} a[href="#/runs/${id}"]`);
    await visible(page, 'svg.dag g.node', 'the DAG');
    const statuses = await waitForRunEnd(page, id);
    const names = Object.keys(statuses).sort();
    expect(JSON.stringify(names) === JSON.stringify([...STEPS].sort()),
      `DAG shows steps ${JSON.stringify(names)}, expected exactly ${JSON.stringify(STEPS)}`);
    const notOk = Object.entries(statuses).filter(([, s]) => s !== 'succeeded' && s !== 'cached');
    expect(!notOk.length, `steps did not succeed: ${JSON.stringify(Object.fromEntries(notOk))}`);
    const runStatus = await page.getAttribute('.run-head .run-status', 'data-status');
    expect(runStatus === 'succeeded', `run status is ${runStatus}, expected succeeded`);
    const edges = (await page.$$eval('svg.dag path.edge', (es) => es.map((e) => `${e.getAttribute('data-from')}>${e.getAttribute('data-to')}`))).sort();
    expect(JSON.stringify(edges) === JSON.stringify([...EDGES].sort()),
      `DAG edges ${JSON.stringify(edges)}, expected ${JSON.stringify([...EDGES].sort())}`);
    const resourceRows = await page.$$eval('table.resources tbody tr[data-step]', (rs) => rs.length);
    expect(resourceRows === STEPS.length, `resource table has ${resourceRows} rows, expected ${STEPS.length}`);
    // Where each step ran: executed steps say `local`, cached ones nothing.
    const ranOn = await page.$$eval('table.resources tbody tr[data-step] td:nth-of-type(3)', (tds) => tds.map((t) => t.textContent.trim()));
    const executed = Object.values(statuses).filter((s) => s === 'succeeded').length;
    expect(ranOn.every((t) => t === 'local' || t === '–') && ranOn.filter((t) => t === 'local').length === executed,
      `the "Ran on" column shows ${JSON.stringify(ranOn)}, expected "local" for the ${executed} executed steps`);

    stage = 'train step panel';
    await page.click('svg.dag g.node[data-step="train"]');
    await visible(page, '#step-panel[data-step="train"]', 'the train step panel');
    expect(await page.getAttribute('g.node[data-step="train"]', 'aria-pressed') === 'true', 'the train node is not marked selected');
    try {
      await page.waitForSelector('pre.logs[data-step="train"][data-state="loaded"]', { state: 'visible', timeout: UI_TIMEOUT_MS });
    } catch {
      fail('the train logs panel (pre.logs[data-step="train"]) did not finish loading');
    }
    for (const m of ['loss', 'train_accuracy']) {
      const cell = await visible(page, `#step-panel table.metrics tr[data-metric="${m}"] td`, `train metric ${m}`);
      const text = (await cell.textContent()).trim();
      expect(text !== '' && !Number.isNaN(Number(text)), `train metric ${m} shows ${JSON.stringify(text)}, expected a number`);
    }
    await visible(page, '#step-panel svg.chart[data-series="loss"] path.line', 'the train loss series chart');
    await visible(page, '#step-panel table.outputs tr[data-output="model"] a[href^="/v1/artifacts/sha256:"]', 'the train model output with its digest');

    // The run page with the train step open: the DAG, its panel and logs.
    const runShot = opts.screenshot.replace(/(\.png)?$/, '-run.png');
    fs.mkdirSync(path.dirname(path.resolve(runShot)), { recursive: true });
    await page.screenshot({ path: runShot, fullPage: true });

    const lineageShot = opts.screenshot.replace(/(\.png)?$/, '-lineage.png');
    await checkLineage(page, id, lineageShot);

    stage = 'submit run via dashboard form';
    await page.goto(`${opts.base}/#/`);
    await visible(page, '#submit-run', 'the submit form');
    await page.fill('#sub-pipeline', PIPELINE);
    await page.fill('#sub-params', 'learning_rate=0.3\n');
    await page.click('#submit-run button[type=submit]');
    try {
      await page.waitForFunction((first) => {
        const m = /^#\/runs\/([^?]+)/.exec(location.hash);
        return m && decodeURIComponent(m[1]) !== first;
      }, id, { timeout: UI_TIMEOUT_MS });
    } catch {
      const err = await page.textContent('#submit-run .error').catch(() => '');
      fail(`the form did not navigate to the new run${err ? `: ${err}` : ''}`);
    }
    const id2 = decodeURIComponent(/^#\/runs\/([^?]+)/.exec(new URL(page.url()).hash)[1]);
    console.log(`submitted run ${id2} through the form`);
    await visible(page, 'svg.dag g.node', 'the second run\'s DAG');
    const statuses2 = await waitForRunEnd(page, id2);
    expect(Object.keys(statuses2).length === STEPS.length, `second run shows ${Object.keys(statuses2).length} steps`);

    stage = 'compare view';
    await page.goto(`${opts.base}/#/`);
    for (const r of [id, id2]) {
      await visible(page, `table.runs tr[data-run-id="${r}"] input[type=checkbox]`, `the checkbox of run ${r}`);
      await page.check(`table.runs tr[data-run-id="${r}"] input[type=checkbox]`);
    }
    await page.click('#compare-selected');
    await visible(page, 'table.compare tr[data-key="param:learning_rate"]', 'the compare table');
    const hash = decodeURIComponent(new URL(page.url()).hash);
    expect(hash.includes(id) && hash.includes(id2), `compare view URL ${hash} does not name both runs`);
    const cols = await page.$$eval('table.compare thead th[data-run-id]', (ths) => ths.map((t) => t.getAttribute('data-run-id')));
    expect(cols.length === 2 && cols.includes(id) && cols.includes(id2), `compare columns are ${JSON.stringify(cols)}`);
    const lr = await page.$eval('table.compare tr[data-key="param:learning_rate"]', (tr) => ({ diff: tr.classList.contains('diff'), cells: [...tr.querySelectorAll('td')].map((td) => td.textContent) }));
    expect(lr.diff, 'learning_rate differs between the runs but is not highlighted');
    expect(lr.cells.includes('0.3'), `learning_rate cells ${JSON.stringify(lr.cells)} do not show 0.3`);
    const label = await page.$eval('table.compare tr[data-key="param:label"]', (tr) => tr.classList.contains('diff')).catch(() => null);
    expect(label === false, 'param label is equal in both runs but is highlighted (or missing)');
    await visible(page, 'table.compare tr[data-key="metric:train.train_accuracy"]', 'train.train_accuracy in the compare view');

    stage = 'screenshot';
    fs.mkdirSync(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
    await page.screenshot({ path: opts.screenshot, fullPage: true });

    // A pipeline whose train step hands training to the CPU worker: the
    // step panel shows the gpu job and says telemetry is unavailable.
    stage = 'gpu run';
    const gpuRun = await api('POST', '/v1/runs', { pipeline: 'examples/pipelines/tabular-gpu.toml', params: {} });
    expect(gpuRun.status === 201, `POST /v1/runs (tabular-gpu) answered ${gpuRun.status}: ${gpuRun.text.slice(0, 300)}`);
    const id3 = gpuRun.json.id;
    await page.goto(`${opts.base}/#/runs/${encodeURIComponent(id3)}`);
    await visible(page, 'svg.dag g.node', 'the gpu run\'s DAG');
    const statuses3 = await waitForRunEnd(page, id3);
    expect(statuses3.train === 'succeeded' || statuses3.train === 'cached', `gpu run train step is ${statuses3.train}`);
    await page.click('svg.dag g.node[data-step="train"]');
    await visible(page, '#step-panel[data-step="train"] section.gpu .gpu-job[data-job="j1"]', 'the train step\'s gpu job');
    await visible(page, '#step-panel[data-step="train"] section.gpu .gpu-unavailable', 'the "gpu telemetry unavailable" note');
    const gpuShot = opts.screenshot.replace(/(\.png)?$/, '-gpu.png');
    await page.screenshot({ path: gpuShot, fullPage: true });

    expect(!pageErrors.length, `the page threw: ${pageErrors.join(' | ')}`);
    console.log(`ok: runs ${id}, ${id2} and ${id3}: 8-step DAG, train panel, lineage, compare view, gpu job; screenshots ${runShot}, ${lineageShot}, ${opts.screenshot}, ${gpuShot}`);
  } catch (err) {
    // Keep what the page looked like when it failed.
    try {
      const p = browser.contexts()[0]?.pages()[0];
      if (p && opts.screenshot) {
        fs.mkdirSync(path.dirname(path.resolve(opts.screenshot)), { recursive: true });
        await p.screenshot({ path: opts.screenshot, fullPage: true });
        console.error(`screenshot of the failure: ${opts.screenshot}`);
      }
    } catch { /* the original error matters more */ }
    throw err;
  } finally {
    await browser.close();
  }
}

try {
  await main();
} catch (err) {
  console.error(`FAIL: ${stage}: ${err instanceof Failure ? err.message : err.stack || err}`);
  if (pageErrors.length) console.error(`page errors: ${pageErrors.join(' | ')}`);
  if (consoleErrors.length) console.error(`console errors: ${consoleErrors.slice(-10).join(' | ')}`);
  process.exit(1);
}
