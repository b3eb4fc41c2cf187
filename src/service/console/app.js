// vigil console: a small hash-routed single-page app over the JSON API.
// No build step and no dependencies: this file is embedded into the binary and served as-is.
// Every piece of server text goes into the page through textContent (see h()), never innerHTML.
'use strict';

// A browser opens about six HTTP/1.1 connections to one server, and each MJPEG stream holds one
// for as long as it plays: past LIVE_TILES cameras the grid shows stills refreshed every second
// (short requests), so the page's own API calls always get a connection. The camera page always
// streams.
const LIVE_TILES = 4;
const STILL_EVERY_MS = 1000;

function stillImg(pipeline, source) {
  const url = `${sourcePath(pipeline, source)}/frame.jpg`;
  const img = h('img', { class: 'live still', src: `${url}?t=${Date.now()}`, alt: `${pipeline} / ${source}` });
  const next = (wait) => setTimeout(() => {
    if (img.isConnected) img.src = `${url}?t=${Date.now()}`;
  }, wait);
  img.addEventListener('load', () => next(STILL_EVERY_MS));
  img.addEventListener('error', () => { img.classList.add('no-signal'); next(5000); });
  return img;
}

// ---------------------------------------------------------------------------------------------
// Session and API
// ---------------------------------------------------------------------------------------------

// The session itself is the HttpOnly cookie; only its CSRF token and role live here, in memory.
const session = { role: null, name: null, csrf: null };
// Where to go back to after a 401 sent the user to the login page.
let afterLogin = '#/';

const EVENT_KINDS = ['enter', 'exit', 'dwell', 'cross', 'count'];
// A 1x1 transparent GIF: assigning it to a live <img> is what reliably aborts its MJPEG request.
const BLANK_IMG = 'data:image/gif;base64,R0lGODlhAQABAIAAAAAAAP///yH5BAEAAAAALAAAAAABAAEAAAIBRAA7';

class ApiError extends Error {
  constructor(status, data) {
    super((data && data.error) || `HTTP ${status}`);
    this.status = status;
    this.data = data;
  }
}

// One fetch wrapper for the whole app: CSRF header on anything that changes state, JSON or
// YAML bodies, JSON answers parsed, and a 401 anywhere sends the user to the login page.
async function api(method, path, opts = {}) {
  const headers = { Accept: 'application/json' };
  if (method !== 'GET' && method !== 'HEAD' && session.csrf) headers['X-CSRF-Token'] = session.csrf;
  let body;
  if (opts.json !== undefined) {
    headers['Content-Type'] = 'application/json';
    body = JSON.stringify(opts.json);
  } else if (opts.yaml !== undefined) {
    headers['Content-Type'] = 'text/yaml';
    body = opts.yaml;
  }
  const res = await fetch(path, { method, headers, body, credentials: 'same-origin', cache: 'no-store' });
  let data = null;
  if (res.status !== 204) {
    const text = await res.text();
    try { data = text ? JSON.parse(text) : null; } catch (_) { data = { error: text }; }
  }
  if (res.status === 401 && !opts.noRedirect) requireLogin();
  if (!res.ok) throw new ApiError(res.status, data);
  return data;
}

function setSession(s) {
  session.role = s ? s.role : null;
  session.name = s ? s.name : null;
  session.csrf = s ? s.csrf : null;
  document.body.classList.toggle('anon', !s);
  document.body.classList.toggle('role-admin', isAdmin());
  const role = document.getElementById('nav-role');
  role.textContent = s ? `${s.name || 'signed in'} · ${s.role}` : '';
}

const isAdmin = () => session.role === 'admin';

function requireLogin() {
  setSession(null);
  if (location.hash.startsWith('#/login')) return;
  afterLogin = location.hash || '#/';
  location.hash = '#/login';
}

async function logout(ev) {
  ev.preventDefault();
  try { await api('POST', '/api/logout', { noRedirect: true }); } catch (_) { /* cookie may already be gone */ }
  setSession(null);
  afterLogin = '#/';
  location.hash = '#/login';
}

// ---------------------------------------------------------------------------------------------
// DOM helpers
// ---------------------------------------------------------------------------------------------

// h('div', {class: 'x', onclick: fn}, 'text', child...) - strings become text nodes, so they
// are always escaped; null/false children and attributes are skipped.
function h(tag, attrs, ...children) {
  const el = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v == null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.className = v;
    else if (k === 'dataset') Object.assign(el.dataset, v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  append(el, children);
  return el;
}

function append(el, children) {
  for (const c of children.flat()) {
    if (c == null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

const enc = encodeURIComponent;
const sourcePath = (p, s) => `/api/sources/${enc(p)}/${enc(s)}`;
const cameraHash = (p, s) => `#/camera/${enc(p)}/${enc(s)}`;

function badge(state) {
  return h('span', { class: `badge state-${String(state || 'unknown').replace(/[^a-z0-9_-]/gi, '')}` }, state || 'unknown');
}

const fmtNum = (v, digits = 1) => (v == null || Number.isNaN(v) ? '–' : Number(v).toFixed(digits));
const fmtMs = (v) => (v == null ? '–' : `${fmtNum(v, v < 10 ? 1 : 0)} ms`);
const fmtInt = (v) => (v == null ? '–' : Number(v).toLocaleString());
const fmtTime = (iso) => { const d = new Date(iso); return Number.isNaN(d.getTime()) ? String(iso) : d.toLocaleString(); };
const fmtUnix = (s) => (s == null ? '–' : new Date(s * 1000).toLocaleString());

function errorText(err) {
  if (err instanceof ApiError) return `${err.message} (HTTP ${err.status})`;
  return err && err.message ? err.message : String(err);
}

// Shows an error in a page's notice element; a 401 is not shown because the login page follows.
function showError(el, err) {
  if (err instanceof ApiError && err.status === 401) return;
  el.textContent = errorText(err);
  el.hidden = false;
}

// Stop every MJPEG stream under root: removing an <img> from the DOM does not always close
// its connection, and browsers allow only ~6 connections per host over HTTP/1.1.
function stopStreams(root) {
  for (const img of root.querySelectorAll('img.live')) img.src = BLANK_IMG;
}

// A live <img> that retries after a failure (e.g. 404 before the first frame, or a restart).
function liveImg(pipeline, source, extraClass) {
  const url = `${sourcePath(pipeline, source)}/live`;
  const img = h('img', { class: `live ${extraClass || ''}`.trim(), src: url, alt: `${pipeline} / ${source}` });
  img.addEventListener('error', () => {
    if (img.src === BLANK_IMG) return;
    img.classList.add('no-signal');
    setTimeout(() => {
      if (!img.isConnected || img.src === BLANK_IMG) return;
      img.classList.remove('no-signal');
      img.src = `${url}?retry=${Date.now()}`;
    }, 5000);
  });
  return img;
}

// ---------------------------------------------------------------------------------------------
// Router and per-view lifecycle
// ---------------------------------------------------------------------------------------------

const view = () => document.getElementById('view');
let viewGen = 0;            // bumps on every navigation; async work of an old view checks it
let leaveHooks = [];        // timers, EventSources and streams of the current view
let flash = null;           // a one-shot message carried across a navigation (e.g. "saved")

const onLeave = (fn) => leaveHooks.push(fn);

// Run fn now and again ms after each run finishes, until the view changes. Chaining with
// setTimeout (not setInterval) keeps slow answers from piling up; hidden tabs skip work.
function poll(fn, ms) {
  const gen = viewGen;
  let timer = null;
  const tick = async () => {
    if (!document.hidden) {
      try { await fn(); } catch (e) { console.warn(e); }
    }
    if (gen === viewGen) timer = setTimeout(tick, ms);
  };
  onLeave(() => clearTimeout(timer));
  tick();
}

const routes = [
  [/^\/login$/, renderLogin],
  [/^\/$/, renderGrid],
  [/^\/camera\/([^/]+)\/([^/]+)$/, renderCamera],
  [/^\/events$/, renderEvents],
  [/^\/counts$/, renderCounts],
  [/^\/editor$/, renderEditor],
  [/^\/editor\/([^/]+)$/, renderEditor],
];

function route() {
  for (const fn of leaveHooks) { try { fn(); } catch (e) { console.warn(e); } }
  leaveHooks = [];
  viewGen += 1;
  const root = view();
  stopStreams(root);
  root.replaceChildren();

  const path = (location.hash || '#/').slice(1) || '/';
  if (!session.role && path !== '/login') { requireLogin(); return; }
  markNav(path);
  for (const [re, fn] of routes) {
    const m = path.match(re);
    if (m) {
      let args;
      try { args = m.slice(1).map(decodeURIComponent); } catch (_) { break; }
      fn(root, viewGen, ...args);
      return;
    }
  }
  root.append(h('section', { class: 'page' }, h('h1', null, 'Not found'), h('p', null, h('a', { href: '#/' }, 'Back to the cameras'))));
}

function markNav(path) {
  const section = path.startsWith('/events') ? 'events' : path.startsWith('/counts') ? 'counts'
    : path.startsWith('/editor') ? 'editor' : path === '/login' ? '' : 'grid';
  for (const id of ['grid', 'events', 'counts', 'editor']) {
    document.getElementById(`nav-${id}`).classList.toggle('active', id === section);
  }
}

// ---------------------------------------------------------------------------------------------
// Login
// ---------------------------------------------------------------------------------------------

function renderLogin(root) {
  const token = h('input', { id: 'token', type: 'password', autocomplete: 'current-password', required: true, placeholder: 'API token' });
  const error = h('p', { id: 'login-error', class: 'error', role: 'alert' });
  const submit = h('button', { id: 'login-submit', type: 'submit', class: 'primary' }, 'Sign in');

  const form = h('form', { class: 'login card' },
    h('h1', null, 'Sign in to vigil'),
    h('label', { for: 'token' }, 'Access token'), token, submit, error);
  form.addEventListener('submit', async (ev) => {
    ev.preventDefault();
    error.textContent = '';
    submit.disabled = true;
    try {
      const s = await api('POST', '/api/login', { json: { token: token.value }, noRedirect: true });
      token.value = '';
      setSession(s);
      const next = afterLogin && !afterLogin.startsWith('#/login') ? afterLogin : '#/';
      afterLogin = '#/';
      if (location.hash === next) route(); else location.hash = next;
    } catch (err) {
      if (err instanceof ApiError && err.status === 429) {
        // The server's text usually names the wait already; add it only when it does not.
        const secs = err.data && err.data.retry_after_s;
        const named = secs == null || err.message.includes(String(secs));
        error.textContent = named ? err.message : `${err.message} — try again in ${secs} s`;
      } else if (err instanceof ApiError && err.status === 401) {
        error.textContent = err.message || 'Invalid token';
      } else {
        error.textContent = errorText(err);
      }
    } finally {
      submit.disabled = false;
    }
  });
  root.append(h('section', { class: 'page page-login' }, form));
  token.focus();
}

// ---------------------------------------------------------------------------------------------
// Grid of cameras
// ---------------------------------------------------------------------------------------------

function renderGrid(root, gen) {
  const grid = h('div', { class: 'camera-grid', id: 'camera-grid' });
  const empty = h('p', { class: 'muted', hidden: true }, 'No sources. Add a pipeline in the ',
    h('a', { href: '#/editor' }, 'pipeline editor'), '.');
  const notice = h('p', { class: 'notice error', hidden: true });
  root.append(h('section', { class: 'page page-grid' }, notice, empty, grid));

  // Tiles by "pipeline\0source": existing tiles are only updated, so their MJPEG <img>
  // keeps streaming instead of reconnecting every refresh.
  const tiles = new Map();

  async function refresh() {
    let sources;
    try {
      sources = await api('GET', '/api/sources');
    } catch (err) {
      if (gen === viewGen) showError(notice, err);
      return;
    }
    if (gen !== viewGen) return;
    notice.hidden = true;
    const seen = new Set();
    for (const s of sortSources(sources)) {
      const key = `${s.pipeline}\0${s.source}`;
      seen.add(key);
      let tile = tiles.get(key);
      if (!tile) {
        tile = makeTile(s, tiles.size < LIVE_TILES);
        tiles.set(key, tile);
        grid.append(tile.el);
      }
      updateTile(tile, s);
    }
    for (const [key, tile] of tiles) {
      if (seen.has(key)) continue;
      stopStreams(tile.el);
      tile.el.remove();
      tiles.delete(key);
    }
    empty.hidden = tiles.size > 0;
  }
  poll(refresh, 3000);
}

const sortSources = (list) => [...list].sort((a, b) =>
  a.pipeline.localeCompare(b.pipeline) || a.source.localeCompare(b.source));

function makeTile(s, live) {
  const refs = {
    state: h('span'),
    fps: h('span', { class: 'stat' }),
    p99: h('span', { class: 'stat' }),
  };
  const go = () => { location.hash = cameraHash(s.pipeline, s.source); };
  const el = h('div', {
    class: 'camera-tile', role: 'link', tabindex: 0,
    dataset: { pipeline: s.pipeline, source: s.source },
    onclick: go,
    onkeydown: (ev) => { if (ev.key === 'Enter') go(); },
  },
  h('div', { class: 'video' }, live ? liveImg(s.pipeline, s.source) : stillImg(s.pipeline, s.source)),
  h('div', { class: 'tile-info' },
    h('span', { class: 'tile-name', title: `${s.pipeline} / ${s.source}` },
      h('span', { class: 'muted' }, `${s.pipeline} / `), s.source),
    refs.state, refs.fps, refs.p99));
  return { el, refs };
}

function updateTile(tile, s) {
  tile.refs.state.replaceChildren(badge(s.paused ? 'paused' : s.state));
  tile.refs.fps.textContent = `${fmtNum(s.fps)} fps`;
  tile.refs.p99.textContent = `p99 ${fmtMs(s.latency_p99_ms)}`;
  tile.el.title = s.last_error ? `Last error: ${s.last_error}` : '';
}

// ---------------------------------------------------------------------------------------------
// Camera page
// ---------------------------------------------------------------------------------------------

function renderCamera(root, gen, pipeline, source) {
  const notice = h('p', { class: 'notice error', hidden: true });
  const stats = h('dl', { class: 'stats', id: 'source-stats' });
  const charts = h('div', { class: 'charts', id: 'source-charts' });
  const events = h('ul', { class: 'event-list', id: 'source-events' });
  const stateEl = h('span');

  const controls = h('div', { class: 'controls' });
  let stopBtn = null;
  let startBtn = null;
  if (isAdmin()) {
    // stop = pause: frames are no longer analysed or recorded; start resumes.
    stopBtn = h('button', { id: 'source-stop', type: 'button', onclick: () => control('stop') }, 'Stop');
    startBtn = h('button', { id: 'source-start', type: 'button', onclick: () => control('start') }, 'Start');
    controls.append(stopBtn, startBtn);
  }

  root.append(h('section', { class: 'page page-camera' },
    h('div', { class: 'page-head' },
      h('a', { href: '#/', class: 'back' }, '← Cameras'),
      h('h1', null, h('span', { class: 'muted' }, `${pipeline} / `), source), stateEl, controls),
    notice,
    h('div', { class: 'camera-layout' },
      h('div', { class: 'video large' }, liveImg(pipeline, source)),
      h('div', { class: 'side' }, stats, h('h2', null, 'Last hour'), charts)),
    h('h2', null, 'Latest events'), events));

  function showSource(s) {
    stateEl.replaceChildren(badge(s.paused ? 'paused' : s.state));
    const rows = [
      ['State', s.state + (s.paused ? ' (paused)' : '')],
      ['FPS', fmtNum(s.fps)],
      ['Latency p50', fmtMs(s.latency_p50_ms)],
      ['Latency p99', fmtMs(s.latency_p99_ms)],
      ['Frames in', fmtInt(s.frames_in)],
      ['Processed', fmtInt(s.frames_processed)],
      ['Dropped', fmtInt(s.frames_dropped)],
      ['Reconnects', fmtInt(s.reconnects)],
      ['Resolution', s.width && s.height ? `${s.width}×${s.height}` : '–'],
      ['Last error', s.last_error || '–'],
    ];
    stats.replaceChildren(...rows.flatMap(([k, v]) => [h('dt', null, k), h('dd', { class: k === 'Last error' && s.last_error ? 'error' : null }, v)]));
    if (stopBtn) {
      stopBtn.disabled = !!s.paused;
      startBtn.disabled = !s.paused;
    }
  }

  async function control(action) {
    notice.hidden = true;
    try {
      showSource(await api('POST', `${sourcePath(pipeline, source)}/${action}`));
    } catch (err) {
      showError(notice, err);
    }
  }

  async function refresh() {
    const [sources, history, evs] = await Promise.allSettled([
      api('GET', '/api/sources'),
      api('GET', '/api/history?minutes=60'),
      api('GET', `/api/events?pipeline=${enc(pipeline)}&source=${enc(source)}&limit=20`),
    ]);
    if (gen !== viewGen) return;
    notice.hidden = true;
    if (sources.status === 'fulfilled') {
      const s = sources.value.find((x) => x.pipeline === pipeline && x.source === source);
      if (s) showSource(s);
      else showError(notice, new Error('This source is not running (unknown pipeline or source).'));
    } else showError(notice, sources.reason);
    if (history.status === 'fulfilled') {
      const series = (history.value.series || []).find((x) => x.pipeline === pipeline && x.source === source);
      drawCharts(charts, series ? series.points : []);
    }
    if (evs.status === 'fulfilled') {
      events.replaceChildren(...evs.value.map(eventItem));
      if (!evs.value.length) events.append(h('li', { class: 'muted' }, 'No events yet.'));
    }
  }
  poll(refresh, 10000);
}

function drawCharts(container, points) {
  const at = (p) => p.t;
  container.replaceChildren(
    sparkline('Frames/s', points.map((p) => [at(p), p.fps]), (v) => fmtNum(v)),
    sparkline('Latency p99', points.map((p) => [at(p), p.latency_p99_ms]), fmtMs),
    sparkline('Dropped / interval', points.map((p) => [at(p), p.dropped]), (v) => fmtNum(v, 0)));
}

// A tiny inline-SVG sparkline: [[t, value|null], ...] -> polyline(s) with min/max labels.
// Null values (no measurement) break the line instead of being drawn as zero.
function sparkline(title, pts, fmt) {
  const W = 300; const H = 60; const PAD = 3;
  const NS = 'http://www.w3.org/2000/svg';
  const svg = document.createElementNS(NS, 'svg');
  svg.setAttribute('viewBox', `0 0 ${W} ${H}`);
  svg.setAttribute('preserveAspectRatio', 'none');
  svg.setAttribute('class', 'sparkline');

  const vals = pts.filter(([, v]) => v != null && Number.isFinite(v));
  const box = h('div', { class: 'chart' }, h('div', { class: 'chart-title' }, title));
  if (vals.length < 2) {
    box.append(h('div', { class: 'chart-empty muted' }, 'not enough data yet'));
    return box;
  }
  const t0 = Math.min(...vals.map(([t]) => t)); const t1 = Math.max(...vals.map(([t]) => t));
  const lo = Math.min(...vals.map(([, v]) => v)); const hi = Math.max(...vals.map(([, v]) => v));
  const x = (t) => PAD + ((t - t0) / (t1 - t0 || 1)) * (W - 2 * PAD);
  const y = (v) => H - PAD - ((v - lo) / (hi - lo || 1)) * (H - 2 * PAD);

  let run = [];
  const flush = () => {
    if (run.length) {
      const line = document.createElementNS(NS, 'polyline');
      line.setAttribute('points', run.join(' '));
      line.setAttribute('vector-effect', 'non-scaling-stroke');
      svg.append(line);
    }
    run = [];
  };
  for (const [t, v] of pts) {
    if (v == null || !Number.isFinite(v)) flush();
    else run.push(`${x(t).toFixed(1)},${y(v).toFixed(1)}`);
  }
  flush();

  box.append(h('div', { class: 'chart-body' }, svg,
    h('span', { class: 'chart-max' }, `max ${fmt(hi)}`),
    h('span', { class: 'chart-min' }, `min ${fmt(lo)}`)));
  return box;
}

// ---------------------------------------------------------------------------------------------
// Events and clips
// ---------------------------------------------------------------------------------------------

function eventItem(e) {
  return h('li', { class: `event kind-${e.kind}` },
    h('time', { datetime: e.at }, fmtTime(e.at)), ' ',
    h('span', { class: `kind kind-${e.kind}` }, e.kind), ' ',
    e.region, e.track_id != null ? ` · track ${e.track_id}` : '',
    e.class ? ` · ${e.class}` : '', e.direction ? ` · ${e.direction}` : '');
}

function eventRow(e) {
  return h('tr', { class: `kind-${e.kind}` },
    h('td', null, h('time', { datetime: e.at }, fmtTime(e.at))),
    h('td', null, h('a', { href: cameraHash(e.pipeline, e.source) }, `${e.pipeline} / ${e.source}`)),
    h('td', null, h('span', { class: `kind kind-${e.kind}` }, e.kind)),
    h('td', null, e.region),
    h('td', { class: 'num' }, e.track_id ?? '–'),
    h('td', null, e.direction || '–'),
    h('td', null, e.class || '–'),
    h('td', { class: 'num' }, e.seq));
}

// <input type=datetime-local> gives local wall time without a zone; Date parses that form as
// local time, and toISOString() turns it into RFC 3339 (UTC, "Z").
function localToRfc3339(value) {
  if (!value) return '';
  const d = new Date(value);
  return Number.isNaN(d.getTime()) ? '' : d.toISOString();
}

function renderEvents(root, gen) {
  const camera = h('select', { id: 'filter-camera' }, h('option', { value: '' }, 'All cameras'));
  const kind = h('select', { id: 'filter-kind' }, h('option', { value: '' }, 'All kinds'),
    EVENT_KINDS.map((k) => h('option', { value: k }, k)));
  const since = h('input', { id: 'filter-since', type: 'datetime-local' });
  const until = h('input', { id: 'filter-until', type: 'datetime-local' });
  const limit = h('select', { id: 'filter-limit' }, [50, 100, 200, 500].map((n) => h('option', { value: n }, `${n} rows`)));
  const notice = h('p', { class: 'notice error', hidden: true });
  const liveState = h('span', { class: 'live-state muted', id: 'events-live' }, 'live: connecting…');
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id: 'events-table' },
    h('thead', null, h('tr', null, ['Time', 'Camera', 'Kind', 'Region', 'Track', 'Direction', 'Class', 'Frame'].map((c) => h('th', null, c)))),
    tbody);
  const player = h('video', { id: 'clip-player', controls: true, preload: 'none', hidden: true });
  const playerCaption = h('p', { class: 'muted', id: 'clip-caption' });
  const clips = h('div', { class: 'clips', id: 'clips' });

  const form = h('form', { class: 'filters' },
    h('label', null, 'Camera', camera), h('label', null, 'Kind', kind),
    h('label', null, 'Since', since), h('label', null, 'Until', until),
    h('label', null, 'Show', limit), h('button', { type: 'submit' }, 'Apply'), liveState);
  form.addEventListener('submit', (ev) => { ev.preventDefault(); load(); });
  for (const el of [camera, kind, limit, since, until]) el.addEventListener('change', load);

  root.append(h('section', { class: 'page page-events' },
    h('h1', null, 'Events'), form, notice, h('div', { class: 'table-wrap' }, table),
    h('h2', null, 'Clips'), player, playerCaption, clips));

  // Filter values as the API wants them.
  function filters() {
    const [p, s] = camera.value ? camera.value.split('/').map(decodeURIComponent) : [null, null];
    return { pipeline: p, source: s, kind: kind.value || null, since: localToRfc3339(since.value), until: localToRfc3339(until.value), limit: Number(limit.value) };
  }

  const query = (obj) => Object.entries(obj).filter(([, v]) => v != null && v !== '')
    .map(([k, v]) => `${enc(k)}=${enc(v)}`).join('&');

  async function load() {
    const f = filters();
    notice.hidden = true;
    try {
      const [evs, cl] = await Promise.all([
        api('GET', `/api/events?${query(f)}`),
        api('GET', `/api/clips?${query({ pipeline: f.pipeline, source: f.source, limit: 24 })}`),
      ]);
      if (gen !== viewGen) return;
      tbody.replaceChildren(...evs.map(eventRow));
      if (!evs.length) tbody.append(h('tr', null, h('td', { colspan: 8, class: 'muted' }, 'No events match.')));
      showClips(cl);
    } catch (err) {
      if (gen === viewGen) showError(notice, err);
    }
  }

  function showClips(list) {
    clips.replaceChildren(...list.map((c) => {
      const base = `/api/clips/${enc(c.pipeline)}/${enc(c.output)}`;
      const kinds = [...new Set((c.events || []).map((e) => e.kind))].join(', ');
      return h('button', { type: 'button', class: 'clip', title: `Play ${c.clip}`, onclick: () => play(base, c) },
        c.snapshot
          ? h('img', { src: `${base}/${enc(c.snapshot)}`, alt: '', loading: 'lazy' })
          : h('div', { class: 'clip-noimg' }, '▶'),
        h('span', { class: 'clip-meta' }, `${c.source} · ${fmtUnix(c.created)}`),
        h('span', { class: 'clip-meta muted' }, `${c.frames} frames${kinds ? ` · ${kinds}` : ''}`));
    }));
    if (!list.length) clips.append(h('p', { class: 'muted' }, 'No clips.'));
  }

  function play(base, c) {
    player.hidden = false;
    player.src = `${base}/${enc(c.clip)}`;
    if (c.snapshot) player.poster = `${base}/${enc(c.snapshot)}`; else player.removeAttribute('poster');
    playerCaption.textContent = `${c.pipeline} / ${c.source} · ${c.output} · ${c.clip}`;
    player.play().catch(() => { /* autoplay may be refused; the controls remain */ });
    player.scrollIntoView({ behavior: 'smooth', block: 'nearest' });
  }

  // Live events: prepend those matching the filters while this page is open.
  const stream = new EventSource('/api/events/stream');
  onLeave(() => stream.close());
  stream.onopen = () => { liveState.textContent = 'live: on'; liveState.classList.remove('muted'); };
  stream.onerror = () => {
    // CLOSED means the browser gave up (e.g. a 401 after the session expired); else it retries.
    liveState.textContent = stream.readyState === EventSource.CLOSED ? 'live: off' : 'live: reconnecting…';
    liveState.classList.add('muted');
  };
  // Messages carry `event: KIND`, so onmessage alone would miss them: listen per kind too.
  const onLive = (msg) => {
    let e;
    try { e = JSON.parse(msg.data); } catch (_) { return; }
    const f = filters();
    if (f.until) return; // a fixed window in the past: live events cannot belong to it
    if ((f.pipeline && e.pipeline !== f.pipeline) || (f.source && e.source !== f.source) || (f.kind && e.kind !== f.kind)) return;
    const placeholder = tbody.querySelector('td[colspan]');
    if (placeholder) placeholder.parentElement.remove();
    const row = eventRow(e);
    row.classList.add('fresh');
    tbody.prepend(row);
    while (tbody.rows.length > f.limit) tbody.lastElementChild.remove();
  };
  // ("event" is the server's name for a message whose kind it could not read.)
  for (const k of [...EVENT_KINDS, 'event']) stream.addEventListener(k, onLive);
  stream.onmessage = onLive;

  // Camera choices come from the running sources; then the first load.
  api('GET', '/api/sources').then((sources) => {
    if (gen !== viewGen) return;
    for (const s of sortSources(sources)) {
      camera.append(h('option', { value: `${enc(s.pipeline)}/${enc(s.source)}` }, `${s.pipeline} / ${s.source}`));
    }
  }).catch((err) => { if (gen === viewGen) showError(notice, err); });
  load();
}

// ---------------------------------------------------------------------------------------------
// Counts
// ---------------------------------------------------------------------------------------------

function renderCounts(root, gen) {
  const notice = h('p', { class: 'notice error', hidden: true });
  const counterCols = ['pipeline', 'source', 'region', 'kind', 'direction', 'class', 'count'];
  const occCols = ['pipeline', 'source', 'zone', 'class', 'count'];
  const counters = countsTable('counters', counterCols);
  const occupancy = countsTable('occupancy', occCols);
  root.append(h('section', { class: 'page page-counts' },
    h('h1', null, 'Counts'), notice,
    h('h2', null, 'Counters'), h('div', { class: 'table-wrap' }, counters.table),
    h('h2', null, 'Occupancy'), h('div', { class: 'table-wrap' }, occupancy.table)));

  poll(async () => {
    try {
      const c = await api('GET', '/api/counts');
      if (gen !== viewGen) return;
      notice.hidden = true;
      counters.fill(c.counters || []);
      occupancy.fill(c.occupancy || []);
    } catch (err) {
      if (gen === viewGen) showError(notice, err);
    }
  }, 5000);
}

// A table whose rows are sorted by every column but the last (the count).
function countsTable(id, cols) {
  const tbody = h('tbody');
  const table = h('table', { class: 'data', id },
    h('thead', null, h('tr', null, cols.map((c) => h('th', { class: c === 'count' ? 'num' : null }, c)))), tbody);
  const key = (r) => cols.slice(0, -1).map((c) => r[c] ?? '').join('\0');
  function fill(rows) {
    const sorted = [...rows].sort((a, b) => key(a).localeCompare(key(b)));
    tbody.replaceChildren(...sorted.map((r) => h('tr', null, cols.map((c) =>
      h('td', { class: c === 'count' ? 'num' : null }, c === 'count' ? fmtInt(r[c]) : (r[c] ?? '–'))))));
    if (!rows.length) tbody.append(h('tr', null, h('td', { colspan: cols.length, class: 'muted' }, 'Nothing counted yet.')));
  }
  return { table, fill };
}

// ---------------------------------------------------------------------------------------------
// Pipeline editor
// ---------------------------------------------------------------------------------------------

const NAME_RE = /^[A-Za-z0-9_-]{1,64}$/;

// A YAML plain scalar when safe, else a double-quoted one (a JSON string is valid YAML).
const yamlScalar = (s) => (/^[A-Za-z0-9_./@~+-][A-Za-z0-9_./@~+ -]*$/.test(s) && !/ $/.test(s) ? s : JSON.stringify(s));

function template(name, modelPath) {
  return [
    `name: ${name}`.trimEnd(),
    'sources:',
    '  - id: cam',
    '    uri: test:ball?width=320&height=240&fps=10',
    'detector:',
    `  model: ${yamlScalar(modelPath)}`,
    '',
  ].join('\n');
}

function renderEditor(root, gen, name) {
  const isNew = name == null;
  const list = h('ul', { id: 'pipeline-list', class: 'pipeline-list' });
  const nameInput = h('input', { id: 'pipeline-name', type: 'text', placeholder: 'pipeline-name', autocomplete: 'off',
    spellcheck: 'false', pattern: '[A-Za-z0-9_-]{1,64}', maxlength: 64, value: name || '', disabled: !isNew });
  const gutter = h('div', { class: 'gutter', 'aria-hidden': 'true' });
  const ta = h('textarea', { id: 'editor', spellcheck: 'false', wrap: 'off', autocapitalize: 'off', autocomplete: 'off', 'aria-label': 'Pipeline YAML' });
  const problemsOk = h('p', { id: 'problems-ok', class: 'ok', hidden: true }, '✓ No problems');
  const problemsEl = h('ul', { id: 'problems', class: 'problems' });
  const status = h('span', { id: 'save-status', role: 'status' });
  const note = h('p', { class: 'note', hidden: true });
  const info = h('div', { class: 'pipeline-info' });
  const saveBtn = h('button', { id: 'save', type: 'button', class: 'primary' }, 'Save');
  const deleteBtn = h('button', { id: 'delete', type: 'button', class: 'danger', hidden: true }, 'Delete');

  root.append(h('section', { class: 'page page-editor' },
    h('div', { class: 'editor-layout' },
      h('aside', { class: 'editor-side' },
        h('h2', null, 'Pipelines'), h('a', { href: '#/editor', class: 'new-link' }, '+ New pipeline'), list),
      h('div', { class: 'editor-main' },
        h('div', { class: 'editor-head' }, h('label', { for: 'pipeline-name' }, 'Name'), nameInput,
          isAdmin() ? [saveBtn, deleteBtn] : null, status),
        note, info,
        h('div', { class: 'code' }, gutter, ta),
        h('h3', null, 'Problems'), problemsOk, problemsEl))));

  if (flash) { status.textContent = flash; flash = null; }
  let problems = [];
  let lineCount = 0;

  // --- gutter: one numbered div per line, scrolled with the textarea ---
  function syncGutter() {
    const n = ta.value.split('\n').length;
    if (n !== lineCount) {
      const frag = document.createDocumentFragment();
      for (let i = 1; i <= n; i++) frag.append(h('div', { class: 'line', dataset: { line: i } }, i));
      gutter.replaceChildren(frag);
      lineCount = n;
      markProblems();
    }
    gutter.scrollTop = ta.scrollTop;
  }
  ta.addEventListener('scroll', () => { gutter.scrollTop = ta.scrollTop; });

  function markProblems() {
    const byLine = new Map();
    for (const p of problems) if (p.line > 0) byLine.set(p.line, [...(byLine.get(p.line) || []), p.message]);
    for (const el of gutter.children) {
      const msgs = byLine.get(Number(el.dataset.line));
      el.classList.toggle('has-problem', !!msgs);
      if (msgs) el.title = msgs.join('\n'); else el.removeAttribute('title');
    }
  }

  function showProblems(list) {
    problems = list || [];
    markProblems();
    problemsEl.replaceChildren(...problems.map((p) => h('li', {
      dataset: { line: p.line }, class: p.line > 0 ? 'clickable' : null,
      onclick: () => { if (p.line > 0) goToLine(p.line, p.column); },
    }, p.line > 0 ? `line ${p.line}:${p.column}: ${p.message}` : p.message)));
    problemsOk.hidden = problems.length > 0;
  }

  // Put the caret at line:column and scroll so the line sits in the upper third.
  function goToLine(line, column) {
    const lines = ta.value.split('\n');
    let pos = 0;
    for (let i = 0; i < Math.min(line - 1, lines.length); i++) pos += lines[i].length + 1;
    const lineLen = (lines[line - 1] || '').length;
    pos += Math.min(Math.max((column || 1) - 1, 0), lineLen);
    ta.focus({ preventScroll: true });
    ta.setSelectionRange(pos, pos);
    const lh = parseFloat(getComputedStyle(ta).lineHeight) || 19.5;
    ta.scrollTop = Math.max(0, (line - 1) * lh - ta.clientHeight / 3);
    gutter.scrollTop = ta.scrollTop;
    const g = gutter.children[line - 1];
    if (g) { g.classList.remove('flash'); void g.offsetWidth; g.classList.add('flash'); }
  }

  // --- live checking: debounced, and answers to older texts are dropped ---
  let checkTimer = null;
  let checkSeq = 0;
  async function check() {
    const seq = ++checkSeq;
    try {
      const r = await api('POST', '/api/check', { yaml: ta.value });
      if (gen === viewGen && seq === checkSeq) showProblems(r.problems);
    } catch (err) {
      if (gen === viewGen && seq === checkSeq) showError(status, err);
    }
  }
  const scheduleCheck = () => { clearTimeout(checkTimer); checkTimer = setTimeout(check, 400); };
  onLeave(() => clearTimeout(checkTimer));

  ta.addEventListener('input', () => { syncGutter(); scheduleCheck(); });

  // For a new pipeline the YAML's top-level `name:` follows the name field.
  nameInput.addEventListener('input', () => {
    const v = nameInput.value.trim();
    nameInput.classList.toggle('invalid', v !== '' && !NAME_RE.test(v));
    const line = `name: ${v}`.trimEnd();
    // A replacer function, not a string: a typed "$&" must not be read as a replacement pattern.
    ta.value = /^name:.*$/m.test(ta.value) ? ta.value.replace(/^name:.*$/m, () => line) : `${line}\n${ta.value}`;
    syncGutter();
    scheduleCheck();
  });

  // --- save and delete ---
  saveBtn.addEventListener('click', async () => {
    const target = isNew ? nameInput.value.trim() : name;
    if (!NAME_RE.test(target)) {
      status.textContent = 'Name: 1-64 letters, digits, "_" or "-".';
      nameInput.focus();
      return;
    }
    status.textContent = 'saving…';
    saveBtn.disabled = true;
    try {
      await api('PUT', `/api/pipelines/${enc(target)}`, { yaml: ta.value });
      const dest = `#/editor/${enc(target)}`;
      flash = 'saved';
      if (location.hash === dest) route(); else location.hash = dest;
    } catch (err) {
      if (gen !== viewGen) return;
      if (err instanceof ApiError && err.status === 422) {
        showProblems(err.data && err.data.problems);
        status.textContent = `not saved: ${err.message}`;
      } else {
        status.textContent = '';
        showError(status, err);
      }
    } finally {
      saveBtn.disabled = false;
    }
  });

  // Two clicks instead of confirm(): the first arms the button for a few seconds.
  let armed = null;
  deleteBtn.addEventListener('click', async () => {
    if (!armed) {
      deleteBtn.textContent = 'Click again to delete';
      deleteBtn.classList.add('armed');
      armed = setTimeout(() => { armed = null; deleteBtn.textContent = 'Delete'; deleteBtn.classList.remove('armed'); }, 4000);
      return;
    }
    clearTimeout(armed);
    armed = null;
    deleteBtn.disabled = true;
    try {
      await api('DELETE', `/api/pipelines/${enc(name)}`);
      flash = `deleted ${name}`;
      location.hash = '#/editor';
    } catch (err) {
      deleteBtn.disabled = false;
      deleteBtn.textContent = 'Delete';
      deleteBtn.classList.remove('armed');
      showError(status, err);
    }
  });
  onLeave(() => clearTimeout(armed));

  // --- loading ---
  function setReadOnly(ro) {
    ta.readOnly = ro;
    saveBtn.hidden = ro;
  }

  function showInfo(p) {
    // append() skips nulls; replaceChildren() would print them as "null"
    info.replaceChildren();
    append(info, [
      h('span', null, badge(p.state)), ' ', h('span', { class: 'muted' }, p.file),
      p.model ? h('span', { class: 'muted' }, ` · model ${p.model}`) : null,
      p.error ? h('p', { class: 'error' }, `Error: ${p.error}`) : null,
      p.reload_error ? h('p', { class: 'error' }, `Reload failed (the previous version keeps running): ${p.reload_error}`) : null]);
  }

  async function load() {
    try {
      if (isNew) {
        const models = await api('GET', '/api/models').catch(() => []);
        if (gen !== viewGen) return;
        const path = models && models.length ? models[0].path : '/path/to/models/model.yaml';
        ta.value = template(nameInput.value.trim(), path);
        setReadOnly(!isAdmin());
        if (!isAdmin()) { note.textContent = 'Viewers cannot create pipelines.'; note.hidden = false; }
      } else {
        const p = await api('GET', `/api/pipelines/${enc(name)}`);
        if (gen !== viewGen) return;
        ta.value = p.yaml || '';
        showInfo(p);
        const ro = !p.managed || !isAdmin();
        setReadOnly(ro);
        deleteBtn.hidden = !p.managed || !isAdmin();
        if (!p.managed) {
          note.textContent = 'Read-only: this pipeline comes from the config folder. Edit its file there, or copy the text into a new pipeline.';
          note.hidden = false;
        } else if (!isAdmin()) {
          note.textContent = 'Read-only: only admins can change pipelines.';
          note.hidden = false;
        }
      }
      syncGutter();
      check();
    } catch (err) {
      if (gen !== viewGen) return;
      setReadOnly(true);
      syncGutter();
      showError(status, err);
    }
  }

  async function loadList() {
    try {
      const pipelines = await api('GET', '/api/pipelines');
      if (gen !== viewGen) return;
      pipelines.sort((a, b) => a.name.localeCompare(b.name));
      list.replaceChildren(...pipelines.map((p) => h('li', { class: p.name === name ? 'current' : null },
        h('a', { href: `#/editor/${enc(p.name)}` }, p.name), ' ',
        h('span', { class: `tag ${p.managed ? 'managed' : 'readonly'}` }, p.managed ? 'managed' : 'read-only'), ' ',
        badge(p.state))));
      if (!pipelines.length) list.append(h('li', { class: 'muted' }, 'No pipelines.'));
    } catch (err) {
      console.warn(err);
    }
  }

  loadList();
  load();
}

// ---------------------------------------------------------------------------------------------
// Boot: restore the session (the cookie may still be valid), then route.
// ---------------------------------------------------------------------------------------------

async function boot() {
  document.getElementById('nav-logout').addEventListener('click', logout);
  window.addEventListener('hashchange', route);
  try {
    setSession(await api('GET', '/api/session', { noRedirect: true }));
  } catch (_) {
    setSession(null);
  }
  route();
}

boot();
