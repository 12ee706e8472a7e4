// Sluice dashboard: runs, one run's DAG and steps, a comparison view and
// an artifact's lineage, all read from the `sluice serve` JSON API. Plain
// DOM, no framework.
//
// Invariant: server strings reach the page only through text nodes and
// attribute setters (`h`/`svg` below), never through innerHTML.

const TOKEN_KEY = 'sluice.token';
/** How often the runs list refreshes while a run is queued or running. */
const POLL_MS = 2000;
/** Runs per page of the runs list. */
const PAGE_LIMIT = 50;
/** Active runs beyond the first page re-read one by one per refresh. */
const REFRESH_RUNS_MAX = 20;
/** A logs panel keeps at most this many characters (the head is dropped). */
const LOG_CHARS_MAX = 1_000_000;
/** Points drawn per chart; longer series are thinned evenly. */
const CHART_POINTS_MAX = 400;
/** Live metric points kept per series before the step reports. */
const LIVE_SERIES_MAX = 10_000;
/** Event-stream reconnect back-off bounds, ms. */
const RETRY_MIN_MS = 1000;
const RETRY_MS_MAX = 15000;

const SVG_NS = 'http://www.w3.org/2000/svg';
const RUN_STATUSES = ['queued', 'running', 'succeeded', 'failed', 'cancelled'];
const TERMINAL_RUN = new Set(['succeeded', 'failed', 'cancelled']);
const TERMINAL_STEP = new Set(['succeeded', 'cached', 'failed', 'skipped', 'cancelled']);
const DIGEST_RE = /^sha256:[0-9a-f]{64}$/;

// ---------------------------------------------------------------- DOM

function h(tag, attrs, ...kids) {
  return build(document.createElement(tag), attrs, kids);
}

function svg(tag, attrs, ...kids) {
  return build(document.createElementNS(SVG_NS, tag), attrs, kids);
}

function build(el, attrs, kids) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (typeof v === 'function') el.addEventListener(k.replace(/^on/, ''), v);
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const kid of kids.flat(Infinity)) {
    if (kid == null || kid === false) continue;
    el.append(kid instanceof Node ? kid : String(kid));
  }
  return el;
}

const $ = (sel, root = document) => root.querySelector(sel);

/** replaceChildren that skips null/false, like `h`. */
function fill(el, ...kids) {
  el.replaceChildren(...kids.flat(Infinity).filter((k) => k != null && k !== false));
  return el;
}
const enc = encodeURIComponent;

function badge(status) {
  return h('span', { class: 'badge', 'data-status': status || 'unknown' }, status || 'unknown');
}

function toast(message) {
  const el = $('#toast');
  el.textContent = message;
  el.classList.add('show');
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => el.classList.remove('show'), 4000);
}

// ---------------------------------------------------------------- format

const fmt = {
  num(v) {
    if (typeof v !== 'number') return v == null ? '–' : String(v);
    if (!Number.isFinite(v)) return String(v);
    if (Number.isInteger(v) && Math.abs(v) < 1e15) return String(v);
    const a = Math.abs(v);
    if (a !== 0 && (a < 1e-4 || a >= 1e9)) return v.toExponential(3);
    return String(Number(v.toPrecision(6)));
  },
  ms(ms) {
    if (ms == null || !Number.isFinite(ms)) return '–';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    const s = ms / 1000;
    if (s < 60) return `${s.toFixed(1)} s`;
    const m = Math.floor(s / 60);
    if (m < 60) return `${m}m ${String(Math.floor(s % 60)).padStart(2, '0')}s`;
    return `${Math.floor(m / 60)}h ${String(m % 60).padStart(2, '0')}m`;
  },
  bytes(n) {
    if (n == null || !Number.isFinite(n)) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let i = 0;
    while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
    return i ? `${n.toFixed(1)} ${units[i]}` : `${n} B`;
  },
  count(n) {
    if (n == null || !Number.isFinite(n)) return '–';
    for (const [d, u] of [[1e12, 'T'], [1e9, 'G'], [1e6, 'M'], [1e3, 'k']]) {
      if (n >= d) return `${(n / d).toFixed(1)} ${u}`;
    }
    return String(n);
  },
  time(iso) {
    if (!iso) return '–';
    const d = new Date(iso);
    if (Number.isNaN(d.getTime())) return String(iso);
    const p = (x) => String(x).padStart(2, '0');
    return `${d.getFullYear()}-${p(d.getMonth() + 1)}-${p(d.getDate())} ${p(d.getHours())}:${p(d.getMinutes())}:${p(d.getSeconds())}`;
  },
  pct(v) {
    return v == null || !Number.isFinite(v) ? '–' : `${v.toFixed(0)}%`;
  },
};

/** A run's or step's duration: its wall time, or the time since it started. */
function duration(run) {
  if (run.wall_ms != null) return fmt.ms(run.wall_ms);
  if (run.started_at && !TERMINAL_RUN.has(run.status)) {
    const t = Date.parse(run.started_at);
    if (!Number.isNaN(t)) return fmt.ms(Math.max(0, Date.now() - t));
  }
  return '–';
}

/** `20261126-153631-ab12cd34` → `ab12cd34`; other ids keep their tail. */
function shortId(id) {
  const m = /-([0-9a-f]{8})$/.exec(id);
  return m ? m[1] : String(id).slice(-8);
}

function timeEl(iso) {
  return h('time', { datetime: iso || null, title: iso || null }, fmt.time(iso));
}

// ---------------------------------------------------------------- API

class ApiError extends Error {
  constructor(status, code, message) {
    super(message);
    this.status = status;
    this.code = code;
  }
}

const token = () => localStorage.getItem(TOKEN_KEY) || '';

function authHeaders(extra = {}) {
  const t = token();
  return t ? { ...extra, Authorization: `Bearer ${t}` } : extra;
}

async function errorOf(res) {
  let code = `http_${res.status}`;
  let message = `${res.status} ${res.statusText}`;
  try {
    const body = await res.json();
    if (body && body.error) {
      code = String(body.error.code || code);
      message = String(body.error.message || message);
    }
  } catch { /* not JSON: keep the status line */ }
  if (res.status === 401) showAuth(message);
  return new ApiError(res.status, code, message);
}

/**
 * Calls the API. `as` picks the result: 'json' (default), 'text' or
 * 'response'. A 401 opens the token form and rejects.
 */
async function api(path, { method = 'GET', body, signal, as = 'json', headers = {} } = {}) {
  const init = { method, signal, headers: authHeaders({ Accept: 'application/json', ...headers }) };
  if (body !== undefined) {
    init.headers['Content-Type'] = 'application/json';
    init.body = JSON.stringify(body);
  }
  const res = await fetch(path, init);
  if (!res.ok) throw await errorOf(res);
  if (as === 'response') return res;
  if (as === 'text') return res.text();
  const text = await res.text();
  return text ? JSON.parse(text) : null;
}

const isAbort = (err) => err && err.name === 'AbortError';

/**
 * Reads a text/event-stream with fetch (EventSource cannot send the
 * Authorization header). Calls onEvent(type, data, id) per event and
 * resolves when the server closes the stream.
 */
async function readEvents(url, { signal, lastId, onEvent, onRetry }) {
  const headers = authHeaders({ Accept: 'text/event-stream' });
  if (lastId) headers['Last-Event-ID'] = lastId;
  const res = await fetch(url, { headers, signal, cache: 'no-store' });
  if (!res.ok) throw await errorOf(res);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  let buf = '';
  let type = '';
  let data = [];
  let id = null;
  const line = (l) => {
    if (l === '') {
      if (data.length) onEvent(type || 'message', data.join('\n'), id);
      type = '';
      data = [];
      return;
    }
    if (l.startsWith(':')) return;
    const colon = l.indexOf(':');
    const field = colon < 0 ? l : l.slice(0, colon);
    let value = colon < 0 ? '' : l.slice(colon + 1);
    if (value.startsWith(' ')) value = value.slice(1);
    if (field === 'event') type = value;
    else if (field === 'data') data.push(value);
    else if (field === 'id' && !value.includes('\0')) id = value;
    else if (field === 'retry' && /^\d+$/.test(value)) onRetry?.(Number(value));
  };
  for (;;) {
    const { value, done } = await reader.read();
    if (done) break;
    buf += value;
    for (;;) {
      const i = buf.search(/[\r\n]/);
      if (i < 0) break;
      // A CR at the chunk's end may be the first half of CRLF: wait.
      if (buf[i] === '\r' && i === buf.length - 1) break;
      const skip = buf[i] === '\r' && buf[i + 1] === '\n' ? 2 : 1;
      line(buf.slice(0, i));
      buf = buf.slice(i + skip);
    }
  }
}

// ---------------------------------------------------------------- auth

function showAuth(message) {
  if ($('#auth')) {
    $('#auth-msg').textContent = message;
    return;
  }
  const input = h('input', { id: 'auth-token', type: 'password', autocomplete: 'off', required: true, spellcheck: 'false' });
  const overlay = h('div', { id: 'auth', class: 'overlay', role: 'dialog', 'aria-modal': 'true', 'aria-labelledby': 'auth-title' },
    h('form', {
      class: 'card auth-form',
      onsubmit(e) {
        e.preventDefault();
        const t = input.value.trim();
        if (!t) return;
        localStorage.setItem(TOKEN_KEY, t);
        overlay.remove();
        refreshWho();
        route();
      },
    },
    h('h2', { id: 'auth-title' }, 'API token required'),
    h('p', { id: 'auth-msg', class: 'muted' }, message || 'This server needs a token.'),
    h('label', { for: 'auth-token' }, 'Token'),
    input,
    h('div', { class: 'row' }, h('button', { type: 'submit', class: 'primary' }, 'Sign in'))));
  document.body.append(overlay);
  input.focus();
}

async function refreshWho() {
  const el = $('#who');
  try {
    const who = await api('/v1/whoami');
    const kids = [h('span', { class: 'whoami', title: who.auth ? 'signed in with a token' : 'the server does not require a token' },
      `${who.tenant} · ${who.role}`)];
    if (token()) {
      kids.push(h('button', {
        type: 'button',
        class: 'link',
        onclick() {
          localStorage.removeItem(TOKEN_KEY);
          refreshWho();
          route();
        },
      }, 'Sign out'));
    }
    el.replaceChildren(...kids);
  } catch (err) {
    el.replaceChildren(h('span', { class: 'muted' }, err.status === 401 ? 'signed out' : 'offline'));
  }
}

// ---------------------------------------------------------------- router

let dispose = null;

function parseHash() {
  const raw = location.hash.replace(/^#/, '') || '/';
  const q = raw.indexOf('?');
  return { path: q < 0 ? raw : raw.slice(0, q), query: new URLSearchParams(q < 0 ? '' : raw.slice(q + 1)) };
}

/** Per-view lifetime: an abort signal and timers cleared on leave. */
function lifetime() {
  const ac = new AbortController();
  const timers = new Set();
  return {
    signal: ac.signal,
    get alive() { return !ac.signal.aborted; },
    after(ms, fn) {
      const t = setTimeout(() => { timers.delete(t); if (!ac.signal.aborted) fn(); }, ms);
      timers.add(t);
      return t;
    },
    every(ms, fn) {
      const t = setInterval(() => { if (!ac.signal.aborted) fn(); }, ms);
      timers.add(t);
      return t;
    },
    cancel(t) { clearTimeout(t); clearInterval(t); timers.delete(t); },
    end() { ac.abort(); for (const t of timers) { clearTimeout(t); clearInterval(t); } timers.clear(); },
  };
}

function route() {
  if (dispose) dispose();
  const life = lifetime();
  dispose = () => life.end();
  const { path, query } = parseHash();
  const main = $('#main');
  main.replaceChildren();
  let m;
  if (path === '/' || path === '') runsView(main, query, life);
  else if ((m = /^\/runs\/([^/]+)$/.exec(path))) runView(main, decodeURIComponent(m[1]), query, life);
  else if (path === '/compare') compareView(main, query, life);
  else if ((m = /^\/artifacts\/([^/]+)\/lineage$/.exec(path))) lineageView(main, decodeURIComponent(m[1]), life);
  else {
    document.title = 'Not found · Sluice';
    main.append(h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to runs')));
  }
}

function failure(err) {
  return h('p', { class: 'error', role: 'alert' }, err.status === 401 ? 'Sign in to see this page.' : `Error: ${err.message}`);
}

// ---------------------------------------------------------------- runs list

function runsView(main, query, life) {
  document.title = 'Runs · Sluice';
  const filters = { status: query.get('status') || '', pipeline: query.get('pipeline') || '' };
  const selected = new Set();
  let runs = [];
  let cursor = null;
  let poll = 0;

  const tbody = h('tbody');
  const live = h('div', { class: 'muted small', 'aria-live': 'polite' });
  const more = h('button', { type: 'button', hidden: true, onclick: () => load(false) }, 'Load more');
  const compare = h('button', {
    type: 'button',
    id: 'compare-selected',
    disabled: true,
    onclick: () => { location.hash = `#/compare?ids=${[...selected].map(enc).join(',')}`; },
  }, 'Compare selected');

  const statusSel = h('select', { id: 'f-status', onchange: () => { filters.status = statusSel.value; filtersChanged(); } },
    h('option', { value: '' }, 'any status'),
    RUN_STATUSES.map((s) => h('option', { value: s, selected: s === filters.status }, s)));
  const pipeIn = h('input', { id: 'f-pipeline', type: 'search', value: filters.pipeline, placeholder: 'pipeline', list: 'pipelines' });
  const pipelines = h('datalist', { id: 'pipelines' });
  let typing = 0;
  pipeIn.addEventListener('input', () => {
    life.cancel(typing);
    typing = life.after(300, () => { filters.pipeline = pipeIn.value.trim(); filtersChanged(); });
  });

  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Runs'), live),
    submitForm(life),
    h('div', { class: 'toolbar', role: 'search' },
      h('label', { for: 'f-status' }, 'Status'), statusSel,
      h('label', { for: 'f-pipeline' }, 'Pipeline'), pipeIn, pipelines,
      h('span', { class: 'grow' }), compare),
    h('div', { class: 'scroll' },
      h('table', { class: 'runs' },
        h('caption', { class: 'sr-only' }, 'Runs, newest first'),
        h('thead', {}, h('tr', {},
          h('th', { scope: 'col' }, h('span', { class: 'sr-only' }, 'Compare')),
          ['Run', 'Pipeline', 'Status', 'Created', 'Duration', 'Steps'].map((c, i) => h('th', { scope: 'col', class: i > 3 ? 'num' : null }, c)))),
        tbody)),
    h('div', { class: 'row' }, more));

  function filtersChanged() {
    const q = new URLSearchParams();
    if (filters.status) q.set('status', filters.status);
    if (filters.pipeline) q.set('pipeline', filters.pipeline);
    const s = q.toString();
    history.replaceState(null, '', s ? `#/?${s}` : '#/');
    load(true);
  }

  function url(c) {
    const q = new URLSearchParams({ limit: String(PAGE_LIMIT) });
    if (filters.status) q.set('status', filters.status);
    if (filters.pipeline) q.set('pipeline', filters.pipeline);
    if (c) q.set('cursor', c);
    return `/v1/runs?${q}`;
  }

  async function load(reset) {
    life.cancel(poll);
    try {
      const page = await api(url(reset ? null : cursor), { signal: life.signal });
      if (reset) runs = [];
      const seen = new Set(runs.map((r) => r.id));
      runs.push(...page.runs.filter((r) => !seen.has(r.id)));
      cursor = page.next_cursor || null;
      render();
    } catch (err) {
      if (isAbort(err)) return;
      live.replaceChildren(failure(err));
    }
    schedule();
  }

  /**
   * Re-reads the first page and merges it (updated rows in place, new ones
   * on top), then re-reads active runs that later pages brought in.
   */
  async function refresh() {
    try {
      const page = await api(url(null), { signal: life.signal });
      const byId = new Map(runs.map((r) => [r.id, r]));
      const fresh = [];
      const onPage = new Set();
      for (const r of page.runs) {
        onPage.add(r.id);
        if (byId.has(r.id)) Object.assign(byId.get(r.id), r);
        else fresh.push(r);
      }
      const stale = runs.filter((r) => !onPage.has(r.id) && !TERMINAL_RUN.has(r.status)).slice(0, REFRESH_RUNS_MAX);
      await Promise.all(stale.map(async (r) => {
        try {
          const { steps, sweep, ...brief } = await api(`/v1/runs/${enc(r.id)}`, { signal: life.signal });
          Object.assign(r, brief);
        } catch (err) {
          if (isAbort(err)) throw err;
        }
      }));
      runs = [...fresh, ...runs];
      if (!runs.length) cursor = page.next_cursor || null;
      render();
    } catch (err) {
      if (isAbort(err)) return;
      live.replaceChildren(failure(err));
    }
    schedule();
  }

  function schedule() {
    life.cancel(poll);
    if (runs.some((r) => !TERMINAL_RUN.has(r.status))) poll = life.after(POLL_MS, refresh);
  }

  function render() {
    tbody.replaceChildren(...runs.map(row));
    if (!runs.length) {
      tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted empty' }, 'No runs yet. Submit one above.')));
    }
    more.hidden = !cursor;
    const active = runs.filter((r) => !TERMINAL_RUN.has(r.status)).length;
    live.textContent = active ? `${active} active · refreshing every ${POLL_MS / 1000} s` : `${runs.length} run${runs.length === 1 ? '' : 's'}`;
    pipelines.replaceChildren(...[...new Set(runs.map((r) => r.pipeline))].map((p) => h('option', { value: p })));
    updateCompare();
  }

  function updateCompare() {
    compare.disabled = selected.size < 2;
    compare.textContent = `Compare selected (${selected.size})`;
  }

  function row(r) {
    const c = r.counts || {};
    const box = h('input', {
      type: 'checkbox',
      'data-id': r.id,
      'aria-label': `select run ${r.id} for comparison`,
      checked: selected.has(r.id),
      onchange: (e) => { if (e.target.checked) selected.add(r.id); else selected.delete(r.id); updateCompare(); },
    });
    return h('tr', { 'data-run-id': r.id, 'data-status': r.status },
      h('td', { class: 'check' }, box),
      h('td', {}, runLink(r.id)),
      h('td', {}, r.pipeline),
      h('td', {}, badge(r.status)),
      h('td', { class: 'nowrap' }, timeEl(r.created_at)),
      h('td', { class: 'num' }, duration(r)),
      h('td', { class: 'num', title: `${c.done ?? 0} done, ${c.running ?? 0} running, ${c.failed ?? 0} failed of ${c.total ?? 0}` },
        `${c.done ?? 0}/${c.total ?? 0}`, c.failed ? h('span', { class: 'bad' }, ` · ${c.failed} failed`) : null));
  }

  load(true);
}

function submitForm(life) {
  const pipeline = h('input', { id: 'sub-pipeline', name: 'pipeline', required: true, value: 'examples/pipelines/tabular.toml', spellcheck: 'false' });
  const params = h('textarea', { id: 'sub-params', name: 'params', rows: 3, placeholder: 'learning_rate=0.3\nepochs=100', spellcheck: 'false' });
  const error = h('p', { class: 'error', role: 'alert' });
  const button = h('button', { type: 'submit', class: 'primary' }, 'Submit run');
  return h('details', { class: 'card submit', open: true },
    h('summary', {}, 'New run'),
    h('form', {
      id: 'submit-run',
      async onsubmit(e) {
        e.preventDefault();
        error.textContent = '';
        const body = { pipeline: pipeline.value.trim(), params: {} };
        for (const [n, raw] of params.value.split('\n').entries()) {
          const l = raw.trim();
          if (!l || l.startsWith('#')) continue;
          const eq = l.indexOf('=');
          if (eq <= 0) { error.textContent = `line ${n + 1}: expected key=value`; return; }
          body.params[l.slice(0, eq).trim()] = l.slice(eq + 1).trim();
        }
        button.disabled = true;
        try {
          const res = await api('/v1/runs', { method: 'POST', body, signal: life.signal });
          location.hash = `#/runs/${enc(res.id)}`;
        } catch (err) {
          if (!isAbort(err)) error.textContent = err.message;
        } finally {
          button.disabled = false;
        }
      },
    },
    h('div', { class: 'field' }, h('label', { for: 'sub-pipeline' }, 'Pipeline (path on the server)'), pipeline),
    h('div', { class: 'field' }, h('label', { for: 'sub-params' }, 'Params (key=value, one per line)'), params),
    h('div', { class: 'row' }, button, error)));
}

// ---------------------------------------------------------------- run page

function runView(main, id, query, life) {
  document.title = `Run ${shortId(id)} · Sluice`;
  const st = {
    run: null,
    steps: new Map(),
    selected: query.get('step') || null,
    liveMetrics: new Map(), // step → {name: value}
    liveSeries: new Map(), // step → {name: [[i, v]]}
    ended: false,
    following: false,
  };
  const head = h('section', { class: 'run-head', 'aria-label': 'Run' }, h('p', { class: 'muted' }, 'Loading…'));
  const dagBox = h('div', { class: 'dag-box card' });
  const panel = h('section', { id: 'step-panel', class: 'card panel', 'aria-label': 'Step' });
  const details = h('div', { class: 'panel-details' });
  const logs = h('pre', { class: 'logs', tabindex: 0, 'aria-label': 'step logs' });
  const resources = h('tbody');
  const logsBox = h('div', { class: 'panel-logs' }, h('h3', {}, 'Logs'), logs);
  panel.append(h('div', { class: 'panel-body' }, details, logsBox));
  main.append(head, dagBox, panel,
    h('section', { class: 'card' }, h('h2', {}, 'Resources'),
      h('div', { class: 'scroll' }, h('table', { class: 'resources' },
        h('thead', {}, h('tr', {}, ['Step', 'Status', 'Cached', 'Ran on', 'Attempts', 'Wall', 'Fuel', 'Peak mem', 'In', 'Out', 'GPU util', 'GPU FB']
          .map((c, i) => h('th', { scope: 'col', class: i > 3 ? 'num' : null }, c)))),
        resources))));

  // Coalesce re-renders to one per frame: metric events can arrive fast.
  const dirty = new Set();
  let frame = 0;
  const mark = (...parts) => {
    parts.forEach((p) => dirty.add(p));
    if (!frame) frame = requestAnimationFrame(flush);
  };
  function flush() {
    frame = 0;
    if (!life.alive) return;
    if (dirty.has('dag')) renderDag();
    if (dirty.has('head')) renderHead();
    if (dirty.has('panel')) renderPanel();
    if (dirty.has('resources')) renderResources();
    dirty.clear();
  }

  async function reload() {
    const run = await api(`/v1/runs/${enc(id)}`, { signal: life.signal });
    const known = [...st.steps.keys()].join('\n');
    st.run = run;
    const wasSelected = st.steps.get(st.selected)?.status;
    for (const s of run.steps || []) {
      const prev = st.steps.get(s.name);
      st.steps.set(s.name, prev ? Object.assign(prev, s) : { ...s });
    }
    const nowSelected = st.steps.get(st.selected)?.status;
    if (wasSelected && nowSelected !== wasSelected) loadLogs(st.selected);
    const shape = (run.steps || []).map((s) => s.name).join('\n');
    if (shape !== known) {
      st.steps = new Map((run.steps || []).map((s) => [s.name, st.steps.get(s.name)]));
      mark('dag');
    } else {
      st.steps.forEach((_, n) => updateNode(n));
    }
    if (TERMINAL_RUN.has(run.status)) st.ended = true;
    mark('head', 'panel', 'resources');
  }

  // -- header

  function renderHead() {
    const r = st.run;
    if (!r) return;
    document.title = `${r.pipeline} ${shortId(r.id)} · Sluice`;
    const c = r.counts || {};
    const params = Object.entries(r.params || {});
    const cancel = !TERMINAL_RUN.has(r.status) ? h('button', {
      type: 'button',
      class: 'danger',
      id: 'cancel-run',
      async onclick(e) {
        e.target.disabled = true;
        try {
          await api(`/v1/runs/${enc(id)}/cancel`, { method: 'POST', signal: life.signal });
          toast('Cancel requested');
        } catch (err) {
          if (!isAbort(err)) toast(`Cancel failed: ${err.message}`);
          e.target.disabled = false;
        }
      },
    }, 'Cancel run') : null;
    fill(head,
      h('div', { class: 'page-head' },
        h('h1', {}, r.pipeline, ' ', h('span', { class: 'badge run-status', 'data-status': r.status }, r.status)),
        st.following ? h('span', { class: 'live', title: 'receiving live events' }, 'live') : null,
        h('span', { class: 'grow' }),
        h('a', { href: `#/compare?ids=${enc(r.id)}`, class: 'button' }, 'Compare…'),
        cancel),
      h('dl', { class: 'facts' },
        fact('Run', h('span', { class: 'mono' }, r.id)),
        fact('Created', timeEl(r.created_at)),
        fact('Started', timeEl(r.started_at)),
        fact('Finished', timeEl(r.finished_at)),
        fact('Duration', h('span', { id: 'run-duration' }, duration(r))),
        fact('Steps', `${c.done ?? 0}/${c.total ?? st.steps.size} done${c.failed ? `, ${c.failed} failed` : ''}`)),
      params.length ? h('ul', { class: 'chips', 'aria-label': 'params' },
        params.map(([k, v]) => h('li', {}, h('span', { class: 'k' }, k), '=', h('span', { class: 'v' }, String(v))))) : null,
      r.error ? h('p', { class: 'error', role: 'alert' }, `${r.error.code}: ${r.error.message}`) : null);
  }

  life.every(1000, () => {
    const el = $('#run-duration');
    if (el && st.run && !TERMINAL_RUN.has(st.run.status)) el.textContent = duration(st.run);
  });

  // -- DAG

  const NODE_W = 148;
  const NODE_H = 42;
  const COL_GAP = 56;
  const ROW_GAP = 16;
  const PAD = 12;

  /**
   * Layered layout: columns by longest path from the roots; an edge that
   * spans several columns gets a dummy slot in each column it crosses, so
   * it is routed between nodes, not under them; rows ordered by the mean
   * row of their predecessors.
   */
  function layout() {
    const depth = new Map();
    const visiting = new Set();
    const d = (name) => {
      if (depth.has(name)) return depth.get(name);
      if (visiting.has(name)) return 0; // a cycle cannot be valid; do not hang on it
      visiting.add(name);
      let v = 0;
      for (const dep of st.steps.get(name)?.deps || []) if (st.steps.has(dep)) v = Math.max(v, d(dep) + 1);
      visiting.delete(name);
      depth.set(name, v);
      return v;
    };
    st.steps.forEach((_, n) => d(n));
    const cols = [];
    const preds = new Map(); // slot → predecessor slots
    const place = (slot, col, from) => {
      (cols[col] ||= []).push(slot);
      preds.set(slot, from);
    };
    st.steps.forEach((s, n) => place(n, depth.get(n), []));
    const routes = []; // {from, to, via: [dummy slots]}
    st.steps.forEach((s, n) => {
      for (const dep of s.deps || []) {
        if (!st.steps.has(dep)) continue;
        const via = [];
        let prev = dep;
        for (let c = depth.get(dep) + 1; c < depth.get(n); c++) {
          const slot = `\u0000${dep}\u0000${n}\u0000${c}`;
          place(slot, c, [prev]);
          via.push(slot);
          prev = slot;
        }
        preds.get(n).push(prev);
        routes.push({ from: dep, to: n, via });
      }
    });
    const rows = Math.max(1, ...cols.map((c) => (c ? c.length : 0)));
    const pos = new Map();
    cols.forEach((col, ci) => {
      if (!col) return;
      const mean = new Map(col.map((slot, i) => {
        const ys = preds.get(slot).filter((x) => pos.has(x)).map((x) => pos.get(x).y);
        return [slot, ys.length ? ys.reduce((a, b) => a + b, 0) / ys.length : i];
      }));
      if (ci > 0) col.sort((a, b) => mean.get(a) - mean.get(b));
      const offset = (rows - col.length) / 2;
      col.forEach((slot, i) => pos.set(slot, {
        x: PAD + ci * (NODE_W + COL_GAP),
        y: PAD + (i + offset) * (NODE_H + ROW_GAP),
      }));
    });
    return {
      pos,
      routes,
      width: PAD * 2 + cols.length * NODE_W + Math.max(0, cols.length - 1) * COL_GAP,
      height: PAD * 2 + rows * NODE_H + (rows - 1) * ROW_GAP,
    };
  }

  /** An SVG path through points: curves between columns, straight through dummy slots. */
  function edgePath(points) {
    let d = `M${points[0][0]},${points[0][1]}`;
    for (let i = 1; i < points.length; i++) {
      const [xa, ya] = points[i - 1];
      const [xb, yb] = points[i];
      if (i % 2 === 0) d += ` L${xb},${yb}`;
      else {
        const dx = (xb - xa) / 2;
        d += ` C${xa + dx},${ya} ${xb - dx},${yb} ${xb},${yb}`;
      }
    }
    return d;
  }

  function renderDag() {
    if (!st.steps.size) {
      dagBox.replaceChildren(h('p', { class: 'muted' }, 'No steps yet.'));
      return;
    }
    const { pos, routes, width, height } = layout();
    const edges = svg('g', { class: 'edges' });
    const nodes = svg('g', { class: 'nodes' });
    const mid = (slot, side) => [pos.get(slot).x + (side ? NODE_W : 0), pos.get(slot).y + NODE_H / 2];
    for (const { from, to, via } of routes) {
      const points = [mid(from, 1)];
      for (const slot of via) points.push(mid(slot, 0), mid(slot, 1));
      const end = mid(to, 0);
      points.push([end[0] - 4, end[1]]);
      edges.append(svg('path', { class: 'edge', 'data-from': from, 'data-to': to, 'marker-end': 'url(#arrow)', d: edgePath(points) }));
    }
    for (const s of st.steps.values()) {
      const p = pos.get(s.name);
      const label = s.name.length > 18 ? `${s.name.slice(0, 17)}…` : s.name;
      nodes.append(svg('g', {
        class: 'node', 'data-step': s.name, 'data-status': s.status, transform: `translate(${p.x},${p.y})`,
        tabindex: 0, role: 'button', 'aria-label': `${s.name}: ${s.status}`,
        onclick: () => select(s.name),
        onkeydown: (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); select(s.name); } },
      },
      svg('title', {}, `${s.name}: ${s.status}`),
      svg('rect', { width: NODE_W, height: NODE_H, rx: 7 }),
      svg('text', { x: 10, y: 17, class: 'name' }, label),
      svg('text', { x: 10, y: 33, class: 'state' }, stateText(s))));
    }
    const chart = svg('svg', { class: 'dag', viewBox: `0 0 ${width} ${height}`, role: 'group', 'aria-label': 'pipeline steps' },
      svg('defs', {}, svg('marker', { id: 'arrow', viewBox: '0 0 8 8', refX: 7, refY: 4, markerWidth: 7, markerHeight: 7, orient: 'auto' },
        svg('path', { d: 'M0,0 L8,4 L0,8 z', class: 'arrowhead' }))),
      edges, nodes);
    // Fit the width, but never blow up a small graph nor shrink a big one past legibility.
    chart.style.maxWidth = `${width}px`;
    chart.style.minWidth = `${Math.min(width, 640)}px`;
    dagBox.replaceChildren(h('h2', { class: 'sr-only' }, 'Steps'), chart);
    st.steps.forEach((_, n) => updateNode(n));
  }

  function stateText(s) {
    const parts = [s.status];
    if (s.report?.cached) parts[0] = 'cached';
    if ((s.attempt || 0) > 1) parts.push(`attempt ${s.attempt}`);
    if (s.report && s.report.wall_ms != null && !s.report.cached) parts.push(fmt.ms(s.report.wall_ms));
    return parts.join(' · ');
  }

  function updateNode(name) {
    const s = st.steps.get(name);
    const g = dagBox.querySelector(`g.node[data-step="${CSS.escape(name)}"]`);
    if (!s || !g) return;
    g.setAttribute('data-status', s.status);
    g.setAttribute('aria-label', `${name}: ${s.status}`);
    g.setAttribute('aria-pressed', String(name === st.selected));
    g.classList.toggle('selected', name === st.selected);
    g.querySelector('title').textContent = `${name}: ${s.status}`;
    g.querySelector('text.state').textContent = stateText(s);
    dagBox.querySelectorAll(`path.edge[data-to="${CSS.escape(name)}"]`).forEach((e) => e.classList.toggle('active', s.status === 'running'));
  }

  function select(name) {
    const prev = st.selected;
    st.selected = name;
    history.replaceState(null, '', `#/runs/${enc(id)}?step=${enc(name)}`);
    if (prev) updateNode(prev);
    updateNode(name);
    renderPanel();
    loadLogs(name);
    renderResources();
  }

  // -- step panel

  function renderPanel() {
    const name = st.selected;
    const s = name && st.steps.get(name);
    if (!s) {
      panel.removeAttribute('data-step');
      details.replaceChildren(h('h2', {}, 'Step'), h('p', { class: 'muted' }, 'Select a step in the graph or the table to see its outputs, metrics and logs.'));
      logsBox.hidden = true;
      return;
    }
    logsBox.hidden = false;
    panel.setAttribute('data-step', name);
    const r = s.report;
    const metrics = { ...(st.liveMetrics.get(name) || {}), ...(r?.metrics || {}) };
    const series = r?.series && Object.keys(r.series).length ? r.series : (st.liveSeries.get(name) || {});
    const kids = [
      h('h2', {}, name, ' ', badge(r?.cached ? 'cached' : s.status)),
      h('dl', { class: 'facts' },
        fact('Attempts', String(r?.attempts ?? s.attempt ?? 0)),
        fact('Wall', r ? fmt.ms(r.wall_ms) : '–'),
        fact('Cached', r ? (r.cached ? 'yes' : 'no') : '–'),
        r?.executor ? fact('Ran on', r.executor) : null,
        fact('Fuel', r ? fmt.count(r.fuel_used) : '–'),
        fact('Peak mem', r ? fmt.bytes(r.memory_peak_bytes) : '–'),
        fact('Instantiate', r?.instantiate_us != null ? `${r.instantiate_us} µs` : '–'),
        (s.deps || []).length ? fact('Depends on', s.deps.join(', ')) : null,
        r?.sweep && Object.keys(r.sweep).length ? fact('Sweep', Object.entries(r.sweep).map(([k, v]) => `${k}=${v}`).join(' ')) : null,
        r?.cache_key ? fact('Cache key', h('span', { class: 'mono', title: r.cache_key }, digestShort(r.cache_key))) : null),
    ];
    if (r?.error) kids.push(h('p', { class: 'error', role: 'alert' }, h('strong', {}, `${r.error.class} error: `), r.error.message));
    if (r?.reason) kids.push(h('p', { class: 'reason' }, h('strong', {}, 'Reason: '), r.reason));

    const outs = Object.entries(r?.outputs || {});
    if (outs.length) {
      kids.push(h('h3', {}, 'Outputs'), h('table', { class: 'outputs' },
        h('thead', {}, h('tr', {}, ['Output', 'Type', 'Size', 'Digest'].map((c) => h('th', { scope: 'col' }, c)))),
        h('tbody', {}, outs.map(([out, ref]) => h('tr', { 'data-output': out },
          h('td', {}, out), h('td', { class: 'muted' }, ref.media_type || ''), h('td', { class: 'num' }, fmt.bytes(ref.size)),
          h('td', { class: 'nowrap' }, artifactLink(ref.digest, `${name}.${out}${extension(ref.media_type)}`), ' ', lineageLink(ref.digest)))))));
    }

    const mnames = Object.keys(metrics).sort();
    kids.push(h('h3', {}, 'Metrics'));
    if (mnames.length) {
      kids.push(h('table', { class: 'metrics' }, h('tbody', {}, mnames.map((m) => h('tr', { 'data-metric': m },
        h('th', { scope: 'row' }, m), h('td', { class: 'num', title: String(metrics[m]) }, fmt.num(metrics[m])))))));
    } else {
      kids.push(h('p', { class: 'muted' }, TERMINAL_STEP.has(s.status) ? 'No metrics.' : 'No metrics yet.'));
    }
    const snames = Object.keys(series).sort();
    if (snames.length) {
      kids.push(h('div', { class: 'charts' }, snames.map((n) => chart(series[n], { name: n }))));
    }
    if (r?.gpu) kids.push(gpuSection(r.gpu));
    details.replaceChildren(...kids);
  }

  let logGen = 0;
  async function loadLogs(name) {
    const gen = ++logGen;
    logs.setAttribute('data-step', name);
    logs.setAttribute('data-state', 'loading');
    logs.replaceChildren(h('span', { class: 'placeholder' }, 'Loading…'));
    const s = st.steps.get(name);
    const texts = await Promise.all(['stdout', 'stderr'].map(async (stream) => {
      if (s && s.status === 'pending') return '';
      try {
        return await api(`/v1/runs/${enc(id)}/logs/${enc(name)}?stream=${stream}`, { as: 'text', signal: life.signal, headers: { Accept: 'text/plain' } });
      } catch (err) {
        if (isAbort(err) || err.status === 404) return '';
        return `[${stream} unavailable: ${err.message}]\n`;
      }
    }));
    if (gen !== logGen || !life.alive) return;
    logs.replaceChildren(h('span', { class: 'stdout' }, texts[0]), h('span', { class: 'stderr' }, texts[1]));
    if (!texts[0] && !texts[1]) logs.append(h('span', { class: 'placeholder' }, TERMINAL_STEP.has(s?.status) ? '(no output)' : '(no output yet)'));
    logs.setAttribute('data-state', 'loaded');
  }

  function appendLog(stream, line) {
    const span = logs.querySelector(stream === 'stderr' ? 'span.stderr' : 'span.stdout');
    if (!span) return;
    logs.querySelector('.placeholder')?.remove();
    const atBottom = logs.scrollTop + logs.clientHeight >= logs.scrollHeight - 4;
    span.append(`${line}\n`);
    if (span.textContent.length > LOG_CHARS_MAX) span.textContent = span.textContent.slice(-LOG_CHARS_MAX);
    if (atBottom) logs.scrollTop = logs.scrollHeight;
  }

  // -- resources

  function renderResources() {
    resources.replaceChildren(...[...st.steps.values()].map((s) => {
      const r = s.report;
      const g = gpuSummary(r?.gpu);
      return h('tr', { 'data-step': s.name, class: s.name === st.selected ? 'selected' : null },
        h('th', { scope: 'row' }, h('button', { type: 'button', class: 'link', onclick: () => select(s.name) }, s.name)),
        h('td', {}, badge(s.status)),
        h('td', {}, r ? (r.cached ? 'yes' : 'no') : '–'),
        h('td', {}, r?.executor || '–'),
        h('td', { class: 'num' }, String(r?.attempts ?? s.attempt ?? 0)),
        h('td', { class: 'num' }, r ? fmt.ms(r.wall_ms) : '–'),
        h('td', { class: 'num' }, r ? fmt.count(r.fuel_used) : '–'),
        h('td', { class: 'num' }, r ? fmt.bytes(r.memory_peak_bytes) : '–'),
        h('td', { class: 'num' }, r ? fmt.bytes(r.bytes_in) : '–'),
        h('td', { class: 'num' }, r ? fmt.bytes(r.bytes_out) : '–'),
        h('td', { class: 'num' }, g.util),
        h('td', { class: 'num' }, g.fb));
    }));
  }

  // -- live events

  function onEvent(type, raw) {
    let data;
    try { data = JSON.parse(raw); } catch { return; }
    if (!data || typeof data !== 'object') return;
    switch (type) {
      case 'run':
        if (st.run) Object.assign(st.run, data);
        mark('head');
        break;
      case 'step': {
        let s = st.steps.get(data.name);
        if (!s) {
          // A step the snapshot did not list (e.g. a sweep fan-out): re-read the shape.
          s = { name: data.name, deps: [], status: data.status, attempt: 0, report: null };
          st.steps.set(data.name, s);
          reload().catch(() => {});
        }
        const was = s.status;
        s.status = data.status;
        if (data.attempt != null) s.attempt = data.attempt;
        if (data.report) s.report = data.report;
        if (st.run && st.run.counts && was !== s.status) recount();
        updateNode(data.name);
        mark('resources', 'head');
        if (data.name === st.selected) {
          mark('panel');
          if (TERMINAL_STEP.has(s.status) && !TERMINAL_STEP.has(was)) loadLogs(data.name);
        }
        break;
      }
      case 'log':
        if (data.step === st.selected && logs.getAttribute('data-state') === 'loaded') appendLog(data.stream, String(data.line ?? ''));
        break;
      case 'metric': {
        const m = st.liveMetrics.get(data.step) || {};
        m[data.name] = data.value;
        st.liveMetrics.set(data.step, m);
        const ser = st.liveSeries.get(data.step) || {};
        const pts = (ser[data.name] ||= []);
        if (pts.length < LIVE_SERIES_MAX) pts.push([data.at ?? pts.length, data.value]);
        st.liveSeries.set(data.step, ser);
        if (data.step === st.selected) mark('panel');
        break;
      }
      case 'end':
        st.ended = true;
        if (st.run) st.run.status = data.status || st.run.status;
        mark('head');
        break;
      default:
    }
  }

  function recount() {
    const c = { total: st.steps.size, done: 0, failed: 0, running: 0 };
    for (const s of st.steps.values()) {
      if (TERMINAL_STEP.has(s.status)) c.done++;
      if (s.status === 'failed') c.failed++;
      if (s.status === 'running') c.running++;
    }
    st.run.counts = c;
  }

  async function follow() {
    let lastId = null;
    let delay = RETRY_MIN_MS;
    while (life.alive && !st.ended) {
      st.following = true;
      mark('head');
      try {
        await readEvents(`/v1/runs/${enc(id)}/events`, {
          signal: life.signal,
          lastId,
          onEvent: (type, data, eid) => { if (eid) lastId = eid; delay = RETRY_MIN_MS; onEvent(type, data); },
          onRetry: (ms) => { delay = Math.min(Math.max(ms, RETRY_MIN_MS), RETRY_MS_MAX); },
        });
      } catch (err) {
        if (isAbort(err) || err.status === 401 || err.status === 404) break;
      }
      st.following = false;
      mark('head');
      if (!life.alive) return;
      if (!st.ended) {
        await new Promise((resolve) => life.after(delay, resolve));
        delay = Math.min(delay * 2, RETRY_MS_MAX);
      }
      // The snapshot is the truth after a gap or at the end.
      try { await reload(); } catch (err) { if (isAbort(err)) return; }
    }
    st.following = false;
    mark('head');
  }

  (async () => {
    try {
      await reload();
    } catch (err) {
      if (isAbort(err)) return;
      head.replaceChildren(h('h1', {}, `Run ${id}`), failure(err));
      return;
    }
    flush();
    if (st.selected && st.steps.has(st.selected)) select(st.selected);
    else renderPanel();
    if (!st.ended) follow();
  })();
}

function digestShort(d) {
  const s = String(d);
  return s.startsWith('sha256:') ? `sha256:${s.slice(7, 19)}…` : s;
}

function extension(media) {
  const m = String(media || '');
  if (m.includes('ndjson')) return '.ndjson';
  if (m.includes('json')) return '.json';
  if (m.includes('csv')) return '.csv';
  if (m.startsWith('text/')) return '.txt';
  return '';
}

/** A digest as a path segment: well-formed ones stay readable. */
const digestSegment = (digest) => (DIGEST_RE.test(digest) ? digest : enc(digest));

function artifactLink(digest, filename) {
  const path = `/v1/artifacts/${digestSegment(digest)}`;
  return h('a', {
    href: path,
    class: 'mono',
    title: `${digest} — download`,
    download: filename,
    async onclick(e) {
      // A plain link cannot carry the token: fetch, then save the blob.
      e.preventDefault();
      try {
        const res = await api(path, { as: 'response', headers: { Accept: '*/*' } });
        const url = URL.createObjectURL(await res.blob());
        const a = h('a', { href: url, download: filename, hidden: true });
        document.body.append(a);
        a.click();
        a.remove();
        setTimeout(() => URL.revokeObjectURL(url), 60_000);
      } catch (err) {
        toast(`Download failed: ${err.message}`);
      }
    },
  }, digestShort(digest));
}

const lineageHref = (digest) => `#/artifacts/${digestSegment(digest)}/lineage`;

function lineageLink(digest) {
  return h('a', { href: lineageHref(digest), class: 'lineage-link small', title: `lineage of ${digest}` }, 'lineage');
}

/** A link to a run (to one of its steps when `step` is given). */
function runLink(run, step) {
  const href = step ? `#/runs/${enc(run)}?step=${enc(step)}` : `#/runs/${enc(run)}`;
  return h('a', { href, class: 'mono', title: run }, shortId(run));
}

// ---------------------------------------------------------------- charts

/** A small line chart of [[x, y], …] points. */
function chart(points, { name, yMin, yMax, unit = '', format = fmt.num }) {
  const W = 260;
  const H = 92;
  const L = 6;
  const T = 18;
  const B = 14;
  let pts = (points || []).filter((p) => Array.isArray(p) && Number.isFinite(p[0]) && Number.isFinite(p[1]));
  const n = pts.length;
  if (n > CHART_POINTS_MAX) {
    const stride = n / CHART_POINTS_MAX;
    const thin = [];
    for (let i = 0; i < CHART_POINTS_MAX; i++) thin.push(pts[Math.floor(i * stride)]);
    thin.push(pts[n - 1]);
    pts = thin;
  }
  const last = n ? points[points.length - 1][1] : null;
  const box = svg('svg', {
    class: 'chart', 'data-series': name, viewBox: `0 0 ${W} ${H}`, width: W, height: H, role: 'img',
    'aria-label': `${name}: ${n} points${n ? `, last ${format(last)}${unit}` : ''}`,
  });
  box.append(svg('text', { x: L, y: 12, class: 'title' }, name),
    svg('text', { x: W - 4, y: 12, class: 'value', 'text-anchor': 'end' }, n ? `${format(last)}${unit}` : 'no data'));
  if (!n) return box;
  const xs = pts.map((p) => p[0]);
  const ys = pts.map((p) => p[1]);
  const x0 = Math.min(...xs);
  const x1 = Math.max(...xs);
  const lo = yMin ?? Math.min(...ys);
  let hi = yMax ?? Math.max(...ys);
  if (hi === lo) hi = lo + 1;
  const sx = (x) => L + ((x - x0) / (x1 - x0 || 1)) * (W - L * 2);
  const sy = (y) => T + (1 - (y - lo) / (hi - lo)) * (H - T - B);
  const d = pts.map((p, i) => `${i ? 'L' : 'M'}${sx(p[0]).toFixed(1)},${sy(p[1]).toFixed(1)}`).join('');
  box.append(
    svg('line', { x1: L, x2: W - L, y1: H - B, y2: H - B, class: 'axis' }),
    svg('text', { x: L, y: T + 8, class: 'tick' }, `${format(hi)}${unit}`),
    svg('text', { x: L, y: H - B - 3, class: 'tick' }, `${format(lo)}${unit}`),
    svg('text', { x: L, y: H - 2, class: 'tick' }, fmt.num(x0)),
    svg('text', { x: W - L, y: H - 2, class: 'tick', 'text-anchor': 'end' }, fmt.num(x1)),
    n === 1 ? svg('circle', { cx: sx(pts[0][0]), cy: sy(pts[0][1]), r: 2.5, class: 'dot' }) : svg('path', { d, class: 'line' }));
  return box;
}

// ---------------------------------------------------------------- gpu

function gpuSummary(gpu) {
  if (!gpu) return { util: '–', fb: '–' };
  if (!gpu.available) return { util: 'n/a', fb: 'n/a' };
  const usage = (gpu.jobs || []).map((j) => j.usage).filter(Boolean);
  if (!usage.length) return { util: '–', fb: '–' };
  const utils = usage.map((u) => u.util_mean).filter(Number.isFinite);
  const fbs = usage.map((u) => u.fb_used_max_bytes).filter(Number.isFinite);
  return {
    util: utils.length ? fmt.pct(utils.reduce((a, b) => a + b, 0) / utils.length) : '–',
    fb: fbs.length ? fmt.bytes(Math.max(...fbs)) : '–',
  };
}

function gpuSection(gpu) {
  const sec = h('section', { class: 'gpu', 'aria-label': 'GPU' }, h('h3', {}, 'GPU'));
  if (!gpu.available) {
    const reason = gpu.reason || '';
    sec.append(h('p', { class: 'muted gpu-unavailable' },
      reason.startsWith('gpu telemetry unavailable') ? reason : `gpu telemetry unavailable${reason ? `: ${reason}` : ''}`));
  }
  for (const j of gpu.jobs || []) {
    const u = j.usage || {};
    const dev = typeof j.device === 'object' && j.device ? (j.device.name || j.device.uuid || '') : (j.device || '');
    sec.append(h('div', { class: 'gpu-job', 'data-job': j.id },
      h('p', {}, h('strong', {}, `${j.op} `), badge(j.state), ' ', h('span', { class: 'muted' }, [j.worker, dev, `job ${j.id}`].filter(Boolean).join(' · '))),
      h('dl', { class: 'facts' },
        fact('Wall', fmt.ms(j.wall_ms)),
        fact('Dispatch', j.dispatch_us != null ? `${j.dispatch_us} µs` : '–'),
        fact('Util mean', fmt.pct(u.util_mean)),
        fact('Mem util mean', fmt.pct(u.mem_util_mean)),
        fact('FB max', fmt.bytes(u.fb_used_max_bytes)),
        u.power_mean_w != null ? fact('Power mean', `${fmt.num(u.power_mean_w)} W`) : null,
        u.energy_mj != null ? fact('Energy', `${fmt.num(u.energy_mj)} mJ`) : null,
        u.sm_active_mean != null ? fact('SM active', fmt.num(u.sm_active_mean)) : null,
        j.mfu != null ? fact('MFU', fmt.num(j.mfu)) : null,
        u.samples != null ? fact('Samples', String(u.samples)) : null)));
    const tl = (j.timeline || []).filter((p) => Number.isFinite(p.t_ms));
    if (gpu.available && tl.length) {
      sec.append(h('div', { class: 'charts' },
        chart(tl.map((p) => [p.t_ms, p.util]), { name: `gpu util ${j.id}`, yMin: 0, yMax: 100, unit: '%' }),
        chart(tl.map((p) => [p.t_ms, p.mem_util]), { name: `memory util ${j.id}`, yMin: 0, yMax: 100, unit: '%' }),
        chart(tl.map((p) => [p.t_ms, p.fb_used_bytes]), { name: `framebuffer ${j.id}`, yMin: 0, format: fmt.bytes })));
    } else if (gpu.available) {
      sec.append(h('p', { class: 'muted' }, 'No telemetry samples for this job.'));
    }
  }
  return sec;
}

function fact(label, value) {
  return h('div', {}, h('dt', {}, label), h('dd', {}, value));
}

// ---------------------------------------------------------------- compare

function compareView(main, query, life) {
  document.title = 'Compare · Sluice';
  const ids = [...new Set((query.get('ids') || '').split(',').map((s) => s.trim()).filter(Boolean))];
  const onlyDiff = h('input', { type: 'checkbox', id: 'only-diff', onchange: () => table.classList.toggle('only-diff', onlyDiff.checked) });
  const table = h('table', { class: 'compare' });
  const note = h('p', { class: 'muted' });
  main.append(
    h('div', { class: 'page-head' }, h('h1', {}, 'Compare runs'), h('span', { class: 'grow' }),
      h('label', { class: 'inline' }, onlyDiff, ' only differences')),
    note,
    h('div', { class: 'scroll card' }, table));
  if (!ids.length) {
    note.textContent = 'No runs selected. Tick two or more runs in the runs list.';
    return;
  }
  if (ids.length < 2) note.textContent = 'Select two or more runs in the runs list to see differences.';

  async function load() {
    const runs = await Promise.all(ids.map((id) => api(`/v1/runs/${enc(id)}`, { signal: life.signal })
      .catch((err) => { if (isAbort(err)) throw err; return { id, error: { code: err.code, message: err.message }, missing: true }; })));
    render(runs);
    if (runs.some((r) => !r.missing && !TERMINAL_RUN.has(r.status))) life.after(POLL_MS, () => load().catch(() => {}));
  }

  function render(runs) {
    const rows = [];
    const paramKeys = new Set();
    const metricKeys = [];
    const seen = new Set();
    for (const r of runs) {
      Object.keys(r.params || {}).forEach((k) => paramKeys.add(k));
      for (const s of r.steps || []) {
        for (const m of Object.keys(s.report?.metrics || {}).sort()) {
          const k = `${s.name}.${m}`;
          if (!seen.has(k)) { seen.add(k); metricKeys.push(k); }
        }
      }
    }
    const metricOf = (r, key) => {
      for (const s of r.steps || []) {
        const ms = s.report?.metrics;
        if (!ms) continue;
        for (const m of Object.keys(ms)) if (`${s.name}.${m}` === key) return ms[m];
      }
      return undefined;
    };
    rows.push(section('Run'));
    rows.push(line('run:pipeline', 'pipeline', runs.map((r) => r.pipeline)));
    rows.push(line('run:status', 'status', runs.map((r) => r.status), (v) => (v ? badge(v) : '–')));
    rows.push(line('run:created', 'created', runs.map((r) => r.created_at), (v) => timeEl(v), false));
    rows.push(line('run:wall', 'duration', runs.map((r) => r.wall_ms), (v) => fmt.ms(v), false));
    rows.push(section('Params'));
    for (const k of [...paramKeys].sort()) rows.push(line(`param:${k}`, k, runs.map((r) => r.params?.[k])));
    rows.push(section('Final metrics'));
    if (!metricKeys.length) rows.push(h('tr', {}, h('td', { colspan: runs.length + 1, class: 'muted' }, 'No metrics yet.')));
    for (const k of metricKeys) rows.push(line(`metric:${k}`, k, runs.map((r) => metricOf(r, k)), (v) => (v === undefined ? '–' : fmt.num(v))));
    table.replaceChildren(
      h('thead', {}, h('tr', {}, h('th', { scope: 'col' }, ''),
        runs.map((r) => h('th', { scope: 'col', 'data-run-id': r.id },
          runLink(r.id),
          r.missing ? h('div', { class: 'error' }, r.error.message) : null)))),
      h('tbody', {}, rows));
  }

  function section(title) {
    return h('tr', { class: 'section' }, h('th', { scope: 'rowgroup', colspan: ids.length + 1 }, title));
  }

  function line(key, label, values, show = (v) => (v === undefined ? '–' : String(v)), diffable = true) {
    const differs = diffable && values.length > 1 && new Set(values.map((v) => JSON.stringify(v ?? null))).size > 1;
    return h('tr', { 'data-key': key, class: differs ? 'diff' : 'same' },
      h('th', { scope: 'row' }, label, differs ? h('span', { class: 'sr-only' }, ' (differs)') : null),
      values.map((v) => h('td', { class: typeof v === 'number' ? 'num' : null }, show(v))));
  }

  load().catch((err) => { if (!isAbort(err)) note.replaceChildren(failure(err)); });
}

// ---------------------------------------------------------------- lineage

function lineageView(main, digest, life) {
  document.title = `Lineage ${digestShort(digest)} · Sluice`;
  const body = h('div', {}, h('p', { class: 'muted' }, 'Loading…'));
  const view = h('div', { class: 'lineage', 'data-digest': digest, 'data-state': 'loading' },
    h('div', { class: 'page-head' }, h('h1', {}, 'Artifact lineage')),
    h('dl', { class: 'facts' }, fact('Digest', h('span', { class: 'mono' }, digest))),
    body);
  main.append(view);
  (async () => {
    try {
      const l = await api(`/v1/artifacts/${digestSegment(digest)}/lineage`, { signal: life.signal });
      if (!life.alive) return;
      fill(body, lineageBody(l));
      view.setAttribute('data-state', 'loaded');
    } catch (err) {
      if (isAbort(err)) return;
      fill(body, failure(err));
      view.setAttribute('data-state', 'failed');
    }
  })();
}

function lineageBody(l) {
  return [
    skippedRuns(l.skipped || []),
    h('div', { class: 'uses' },
      usesCard('produced-by', 'Produced by', l.produced_by, production, 'No run in scope produced it.'),
      usesCard('consumed-by', 'Consumed by', l.consumed_by, consumption, 'No step in scope read it.'),
      usesCard('source-of', 'Source of', l.source_of, sourceUse, 'It was no run’s source.')),
    h('section', { class: 'card derivation', 'aria-label': 'Derivation' },
      h('h2', {}, 'Derivation'),
      h('p', { class: 'muted small' }, 'What it was made from, back to the sources; inputs under the step that read them.'),
      h('ul', { class: 'tree' }, derivationNode(l, l.digest, null, new Set()))),
  ];
}

function skippedRuns(skipped) {
  if (!skipped.length) return null;
  return h('section', { class: 'card warning', role: 'alert', 'aria-label': 'Skipped runs' },
    h('h2', {}, 'Skipped runs'),
    h('p', {}, 'These runs’ records do not verify; the lineage leaves them out.'),
    h('ul', {}, skipped.map((s) => h('li', { 'data-run-id': s.run }, runLink(s.run), ': ', s.reason))));
}

/** One of the artifact's uses (produced by, consumed by, source of), one item per use. */
function usesCard(key, title, items, item, none) {
  return h('section', { class: 'card', 'data-uses': key, 'aria-label': title },
    h('h2', {}, title),
    items?.length ? h('ul', {}, items.map((u) => h('li', { 'data-run-id': u.run, 'data-step': u.step }, item(u))))
      : h('p', { class: 'muted' }, none));
}

/** ` (pipeline)` after a run link. */
const inPipeline = (pipeline) => h('span', { class: 'muted' }, ` (${pipeline})`);
const cachedMark = (cached) => (cached ? [' ', badge('cached')] : null);

function production(p) {
  return [h('code', { title: p.component ? `component ${p.component}` : null }, `${p.step}.${p.output}`),
    ' in run ', runLink(p.run, p.step), inPipeline(p.pipeline), cachedMark(p.cached)];
}

function consumption(c) {
  return [h('code', {}, `${c.step}.${c.input}`), ' in run ', runLink(c.run, c.step), inPipeline(c.pipeline)];
}

function sourceUse(s) {
  return ['source ', h('code', {}, s.source), ' of run ', runLink(s.run), inPipeline(s.pipeline)];
}

/** How a node of the derivation came to be, from its `upstream` origin. */
function originOf(o) {
  if (o.kind === 'step') {
    return ['output ', h('code', {}, o.output), ' of step ', h('code', {}, o.step), ' in run ',
      runLink(o.run, o.step), inPipeline(o.pipeline), cachedMark(o.cached)];
  }
  if (o.kind === 'source') return sourceUse(o);
  return h('span', { class: 'muted' }, 'made by no run in scope');
}

/** A tree node's digest: the artifact itself in bold, any other a link to its own lineage. */
function treeDigest(digest, root) {
  if (root) return h('strong', { class: 'mono', title: digest }, digestShort(digest));
  return h('a', { href: lineageHref(digest), class: 'mono digest', title: `${digest} — its lineage` }, digestShort(digest));
}

/**
 * One node of the derivation tree, under the input name it was read as;
 * its inputs nest under it. A digest met again is shown once, not expanded.
 */
function derivationNode(l, digest, input, seen) {
  const label = [input == null ? null : h('span', { class: 'input' }, input, ' = '), treeDigest(digest, input == null)];
  if (seen.has(digest)) {
    return h('li', { class: 'again', 'data-digest': digest }, h('div', {}, label, ' ', h('span', { class: 'muted' }, '(see above)')));
  }
  seen.add(digest);
  const o = (l.upstream && Object.hasOwn(l.upstream, digest) && l.upstream[digest]) || { kind: 'unknown' };
  const inputs = o.kind === 'step' ? Object.entries(o.inputs || {}) : [];
  return h('li', { 'data-digest': digest, 'data-kind': o.kind, 'data-step': o.step, 'data-source': o.source },
    h('div', {}, label, ': ', originOf(o)),
    inputs.length ? h('ul', {}, inputs.map(([name, d]) => derivationNode(l, d, name, seen))) : null);
}

// ---------------------------------------------------------------- start

window.addEventListener('hashchange', () => {
  route();
  $('#main').focus({ preventScroll: true });
});
document.addEventListener('click', (e) => {
  // The skip link must not change the hash: the hash is the route.
  if (e.target.closest && e.target.closest('a.skip')) {
    e.preventDefault();
    $('#main').focus();
  }
});
refreshWho();
route();
