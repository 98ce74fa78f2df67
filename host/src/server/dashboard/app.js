// The Cairn dashboard: a single page over the HTTP API of `cairn serve`
// (docs/api.md). Plain JavaScript, no framework, no build step.
//
// Rules kept throughout: every piece of text from the API reaches the page
// through text nodes or attribute values, never parsed as markup; a run's report,
// which is HTML its task wrote, is shown in a sandboxed frame with no scripts.

(() => {
  'use strict';

  // ---------------------------------------------------------------- DOM

  /** Makes an element. `attrs`: attributes, plus `class`, `dataset`, `style`
   *  (an object, set through the CSSOM) and `on<event>` handlers. Children:
   *  nodes, strings (as text), numbers, arrays of these; null is skipped. */
  function h(tag, attrs, ...children) {
    const el = document.createElement(tag);
    for (const [key, value] of Object.entries(attrs || {})) {
      if (value === null || value === undefined || value === false) continue;
      if (key === 'class') el.className = value;
      else if (key === 'dataset') Object.assign(el.dataset, value);
      else if (key === 'style') Object.assign(el.style, value);
      else if (key.startsWith('on') && typeof value === 'function') el.addEventListener(key.slice(2), value);
      else if (key === 'value') el.value = value;
      else el.setAttribute(key, value === true ? '' : String(value));
    }
    append(el, children);
    return el;
  }

  function append(el, children) {
    for (const child of children) {
      if (child === null || child === undefined || child === false) continue;
      if (Array.isArray(child)) append(el, child);
      else if (child instanceof Node) el.appendChild(child);
      else el.appendChild(document.createTextNode(String(child)));
    }
  }

  function clear(el) {
    while (el.firstChild) el.removeChild(el.firstChild);
    return el;
  }

  function replace(el, ...children) {
    append(clear(el), children);
    return el;
  }

  const $ = (css, root) => (root || document).querySelector(css);

  // ------------------------------------------------------------ formats

  const pad = (n, width = 2) => String(n).padStart(width, '0');

  function fmtTime(ms) {
    if (!ms) return '—';
    const d = new Date(ms);
    return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ` +
      `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}`;
  }

  function fmtDuration(ms) {
    if (ms === null || ms === undefined) return '—';
    if (ms < 1000) return `${Math.round(ms)} ms`;
    if (ms < 60000) return `${(ms / 1000).toFixed(ms < 10000 ? 2 : 1)} s`;
    const minutes = Math.floor(ms / 60000);
    if (minutes < 60) return `${minutes}m ${pad(Math.floor((ms % 60000) / 1000))}s`;
    return `${Math.floor(minutes / 60)}h ${pad(minutes % 60)}m`;
  }

  function fmtAgo(ms) {
    if (!ms) return '—';
    const delta = Date.now() - ms;
    if (delta < 0) return `in ${fmtDuration(-delta)}`;
    if (delta < 5000) return 'just now';
    return `${fmtDuration(delta)} ago`;
  }

  const shortId = (id) => (id && id.length > 13 ? `${id.slice(0, 8)}…${id.slice(-4)}` : id || '');

  function fmtValue(value) {
    if (value === null || value === undefined) return '—';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  function fmtError(error) {
    if (!error) return '';
    if (typeof error === 'string') return error;
    return error.kind ? `${error.kind}: ${error.message || ''}` : JSON.stringify(error);
  }

  function parseMaybeJson(value) {
    if (typeof value !== 'string') return value;
    try {
      return JSON.parse(value);
    } catch (_) {
      return value;
    }
  }

  function pretty(value) {
    const parsed = parseMaybeJson(value);
    return typeof parsed === 'string' ? parsed : JSON.stringify(parsed, null, 2);
  }

  const runHref = (id, tab) => `#/runs/${encodeURIComponent(id)}${tab && tab !== 'overview' ? `/${tab}` : ''}`;

  function statusBadge(status, attrs) {
    return h('span', Object.assign({ class: `status status-${status}`, dataset: { status } }, attrs || {}), status);
  }

  // -------------------------------------------------------------- token

  const TOKEN_KEY = 'cairn.token';

  /** Takes a token from `#token=...` into sessionStorage and out of the URL. */
  function adoptTokenFromUrl() {
    const match = /^#token=([^&]*)(?:&(.*))?$/.exec(location.hash);
    if (!match) return;
    const token = decodeURIComponent(match[1]).trim();
    if (token) sessionStorage.setItem(TOKEN_KEY, token);
    const rest = match[2] && match[2].startsWith('/') ? `#${match[2]}` : '#/runs';
    history.replaceState(null, '', `${location.pathname}${location.search}${rest}`);
  }

  const token = () => sessionStorage.getItem(TOKEN_KEY);

  // ---------------------------------------------------------------- API

  class ApiError extends Error {
    constructor(status, kind, message) {
      super(message);
      this.status = status;
      this.kind = kind;
    }
  }

  /** Calls the API; resolves to the parsed JSON body (null for 204). */
  async function api(method, path, body) {
    const headers = { Authorization: `Bearer ${token() || ''}` };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    let response;
    try {
      response = await fetch(path, {
        method,
        headers,
        body: body === undefined ? undefined : JSON.stringify(body),
        cache: 'no-store',
      });
    } catch (e) {
      throw new ApiError(0, 'network', `cannot reach the server (${e.message})`);
    }
    const text = await response.text();
    let json = null;
    if (text) {
      try {
        json = JSON.parse(text);
      } catch (_) {
        json = null;
      }
    }
    if (!response.ok) {
      const err = (json && json.error) || {};
      const failure = new ApiError(response.status, err.kind || `http-${response.status}`,
        err.message || text || response.statusText);
      if (response.status === 401) signedOut('The server refused the token; sign in again.');
      throw failure;
    }
    return json;
  }

  const get = (path) => api('GET', path);
  const post = (path, body) => api('POST', path, body === undefined ? {} : body);

  /** Every page of the journal of `runId`. */
  async function fullJournal(runId) {
    const entries = [];
    let after = null;
    for (let page = 0; page < 50; page++) {
      const query = after === null ? '' : `?after=${encodeURIComponent(after)}`;
      const answer = await get(`/api/v1/runs/${encodeURIComponent(runId)}/journal${query}`);
      entries.push(...(answer.entries || []));
      if (answer.next === null || answer.next === undefined) break;
      after = answer.next;
    }
    return entries;
  }

  // ------------------------------------------------------- live updates

  const EVENT_KINDS = ['hello', 'run-started', 'attempt-started', 'attempt-ended', 'call', 'child-started',
    'child-ended', 'report', 'run-finished', 'lagged'];

  function setLive(state, text) {
    const el = $('#live');
    el.dataset.state = state;
    el.textContent = text;
  }

  /** Opens a server-sent event stream (EventSource sends no headers, so the
   *  token goes in the query); `onEvent(kind, data)`. Returns a closer. Events
   *  come named (`event: run-finished`); unnamed ones are taken by their
   *  `event` field. `#live` counts them in `data-events`. */
  function subscribe(path, onEvent) {
    const source = new EventSource(`${path}?token=${encodeURIComponent(token() || '')}`);
    const indicator = $('#live');
    let received = 0;
    indicator.dataset.events = '0';
    setLive('connecting', 'connecting…');
    source.onopen = () => setLive('on', 'live');
    source.onerror = () => {
      const closed = source.readyState === EventSource.CLOSED;
      setLive(closed ? 'off' : 'connecting', closed ? 'offline' : 'reconnecting…');
    };
    const deliver = (kind, event) => {
      let data = {};
      try {
        data = JSON.parse(event.data || '{}') || {};
      } catch (_) {
        data = {};
      }
      received += 1;
      indicator.dataset.events = String(received);
      onEvent(kind || data.event || 'message', data);
    };
    for (const kind of EVENT_KINDS) source.addEventListener(kind, (event) => deliver(kind, event));
    source.onmessage = (event) => deliver(null, event);
    return {
      open: () => source.readyState === EventSource.OPEN,
      close: () => source.close(),
    };
  }

  /** Calls `fn` at most once per `ms`, the last call winning. */
  function debounce(fn, ms) {
    let timer = null;
    const wrapped = (...args) => {
      clearTimeout(timer);
      timer = setTimeout(() => fn(...args), ms);
    };
    wrapped.cancel = () => clearTimeout(timer);
    return wrapped;
  }

  // ------------------------------------------------------------- errors

  function showAppError(message) {
    const box = $('#app-error');
    replace(box, message, ' ', h('button', { type: 'button', class: 'quiet', onclick: () => { box.hidden = true; } }, 'dismiss'));
    box.hidden = false;
  }

  window.cairnErrors = [];
  window.addEventListener('error', (e) => {
    window.cairnErrors.push(String(e.message));
    showAppError(`Dashboard error: ${e.message}`);
  });
  window.addEventListener('unhandledrejection', (e) => {
    const reason = e.reason && e.reason.message ? e.reason.message : String(e.reason);
    if (e.reason instanceof ApiError && e.reason.status === 401) return;
    window.cairnErrors.push(reason);
    showAppError(`Dashboard error: ${reason}`);
  });

  function errorBox(err, attrs) {
    const kind = err instanceof ApiError ? err.kind : 'error';
    return h('div', Object.assign({ class: 'error-box', role: 'alert' }, attrs || {}),
      h('strong', null, kind), ' ', err.message || String(err));
  }

  // -------------------------------------------------------------- views
  //
  // A view is `{ key, node, update?(route), cleanup?() }`. The router keeps
  // the current view while the key stays (e.g. switching a run's tabs).

  const view = () => $('#view');
  let current = null;

  function parseRoute() {
    const raw = location.hash.replace(/^#/, '') || '/runs';
    const [path, query] = raw.split('?');
    const parts = path.split('/').filter(Boolean).map(decodeURIComponent);
    return { parts, query: new URLSearchParams(query || '') };
  }

  /** Which view a route shows: routes with the same key share one view. */
  function routeKey(route) {
    const [section, id] = route.parts;
    if (section === 'runs' && id) return `run:${id}`;
    return ['dlq', 'breakers', 'pools', 'workers', 'usage', 'submit'].includes(section) ? section : 'runs';
  }

  function routeView(route) {
    const [section, id, sub] = route.parts;
    switch (section) {
      case 'runs':
        return id ? runView(id, sub || 'overview') : runsView(route.query);
      case 'dlq':
        return dlqView(id || null);
      case 'breakers':
        return pollingView('breakers', loadBreakers);
      case 'pools':
        return pollingView('pools', loadPools);
      case 'workers':
        return pollingView('workers', loadWorkers);
      case 'usage':
        return pollingView('usage', loadUsage);
      case 'submit':
        return submitView(route.query);
      default:
        return runsView(route.query);
    }
  }

  function render() {
    if (!token()) {
      showLogin();
      return;
    }
    document.body.classList.remove('logged-out');
    const route = parseRoute();
    const section = route.parts[0] || 'runs';
    for (const link of document.querySelectorAll('#nav a')) {
      link.classList.toggle('active', link.dataset.section === section);
    }
    if (current && current.key === routeKey(route) && current.update) {
      current.update(route);
      return;
    }
    if (current && current.cleanup) current.cleanup();
    current = routeView(route);
    setLive('off', '');
    delete $('#live').dataset.events;
    replace(view(), current.node);
    if (current.start) current.start();
  }

  function go(hash) {
    if (location.hash === hash) render();
    else location.hash = hash;
  }

  // -------------------------------------------------------------- login

  function signedOut(message) {
    sessionStorage.removeItem(TOKEN_KEY);
    showLogin(message);
  }

  function showLogin(message) {
    if (current && current.cleanup) current.cleanup();
    current = null;
    document.body.classList.add('logged-out');
    setLive('off', '');
    const input = h('input', {
      id: 'login-token', type: 'password', autocomplete: 'off', spellcheck: 'false', required: true,
      placeholder: 'token', 'aria-label': 'Token',
    });
    const status = h('p', { id: 'login-error', class: 'form-error', role: 'alert' }, message || '');
    const form = h('form', { id: 'login-form', class: 'card login' },
      h('h1', null, 'Sign in to Cairn'),
      h('p', null, 'Paste the token of this server. ', h('code', null, 'cairn serve'),
        ' writes it to ', h('code', null, '.cairn/serve.token'), ' in the project directory.'),
      input,
      h('button', { id: 'login-go', type: 'submit' }, 'Sign in'),
      status);
    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      const value = input.value.trim();
      if (!value) return;
      sessionStorage.setItem(TOKEN_KEY, value);
      status.textContent = 'Checking…';
      try {
        await get('/api/v1/tasks');
        if (!parseRoute().parts.length) history.replaceState(null, '', '#/runs');
        render();
      } catch (err) {
        if (err.status !== 401) {
          sessionStorage.removeItem(TOKEN_KEY);
          status.textContent = err.message;
        } else {
          $('#login-error').textContent = 'The server refused that token.';
        }
      }
    });
    replace(view(), form);
    input.focus();
  }

  // --------------------------------------------------------------- runs

  const STATUSES = ['pending', 'running', 'succeeded', 'failed', 'cancelled'];
  const SINCE = [['', 'any time'], ['15m', 'last 15 minutes'], ['1h', 'last hour'], ['24h', 'last 24 hours'],
    ['7d', 'last 7 days']];
  const SINCE_MS = { '15m': 15 * 60e3, '1h': 3600e3, '24h': 24 * 3600e3, '7d': 7 * 24 * 3600e3 };

  function runsView(query) {
    const state = {
      status: query.get('status') || '',
      task: query.get('task') || '',
      since: query.get('since') || '',
      text: query.get('q') || '',
      children: query.get('children') === 'true',
      limit: Number(query.get('limit')) || 50,
      before: null,
      newer: [], // cursors of the pages before this one
      runs: [],
      next: null,
      error: null,
      loading: false,
    };
    let stream = null;
    let fallback = null;

    const select = (id, value, options, onchange) => h('select', { id, onchange },
      options.map(([v, label]) => h('option', { value: v, selected: v === value }, label)));
    const statusSelect = select('filter-status', state.status, [['', 'any status'], ...STATUSES.map((s) => [s, s])],
      (e) => { state.status = e.target.value; restart(); });
    const taskSelect = select('filter-task', state.task, [['', 'any task']], (e) => { state.task = e.target.value; restart(); });
    const sinceSelect = select('filter-since', state.since, SINCE, (e) => { state.since = e.target.value; restart(); });
    const textInput = h('input', {
      id: 'filter-text', type: 'search', placeholder: 'id, task, error…', value: state.text,
      oninput: (e) => { state.text = e.target.value; remember(); draw(); },
    });
    const childrenBox = h('input', {
      id: 'filter-children', type: 'checkbox', checked: state.children,
      onchange: (e) => { state.children = e.target.checked; restart(); },
    });
    const body = h('tbody', { id: 'runs-body' });
    const summary = h('span', { id: 'runs-summary', class: 'muted' });
    const newerButton = h('button', { id: 'page-newer', type: 'button', onclick: () => page(-1) }, '← Newer');
    const olderButton = h('button', { id: 'page-older', type: 'button', onclick: () => page(1) }, 'Older →');
    const problem = h('div');

    const node = h('section', { class: 'runs' },
      h('div', { class: 'page-head' }, h('h1', null, 'Runs'),
        h('a', { class: 'button', href: '#/submit' }, 'Submit a run')),
      h('form', { class: 'filters', id: 'runs-filters', onsubmit: (e) => e.preventDefault() },
        h('label', null, 'Status ', statusSelect),
        h('label', null, 'Task ', taskSelect),
        h('label', null, 'Created ', sinceSelect),
        h('label', null, 'Text ', textInput),
        h('label', { class: 'check' }, childrenBox, ' child runs too')),
      problem,
      h('table', { class: 'table', id: 'runs-table' },
        h('thead', null, h('tr', null, ['Run', 'Task', 'Status', 'Created', 'Duration', 'Attempts', 'LLM calls',
          'Error'].map((c) => h('th', null, c)))),
        body),
      h('div', { class: 'pager' }, newerButton, summary, olderButton));

    function remember() {
      const q = new URLSearchParams();
      if (state.status) q.set('status', state.status);
      if (state.task) q.set('task', state.task);
      if (state.since) q.set('since', state.since);
      if (state.text) q.set('q', state.text);
      if (state.children) q.set('children', 'true');
      const qs = q.toString();
      history.replaceState(null, '', `#/runs${qs ? `?${qs}` : ''}`);
    }

    function restart() {
      state.before = null;
      state.newer = [];
      remember();
      load();
    }

    function page(direction) {
      if (direction > 0 && state.next) {
        state.newer.push(state.before);
        state.before = state.next;
      } else if (direction < 0 && state.newer.length) {
        state.before = state.newer.pop();
      } else {
        return;
      }
      load();
    }

    async function load() {
      const q = new URLSearchParams({ limit: String(state.limit) });
      if (state.status) q.set('status', state.status);
      if (state.task) q.set('task', state.task);
      if (state.children) q.set('children', 'true');
      if (state.before) q.set('before', state.before);
      state.loading = true;
      try {
        const answer = await get(`/api/v1/runs?${q}`);
        state.runs = answer.runs || [];
        state.next = answer.next || null;
        state.error = null;
      } catch (err) {
        state.error = err;
      }
      state.loading = false;
      draw();
    }

    function visible() {
      const since = SINCE_MS[state.since] ? Date.now() - SINCE_MS[state.since] : 0;
      const needle = state.text.trim().toLowerCase();
      return state.runs.filter((run) => {
        const created = (run.timings && run.timings.created_at_ms) || 0;
        if (since && created < since) return false;
        if (!needle) return true;
        const hay = [run.run_id, run.task, run.status, run.parent, run.group, fmtError(run.error)]
          .filter(Boolean).join(' ').toLowerCase();
        return hay.includes(needle);
      });
    }

    function draw() {
      replace(problem, state.error ? errorBox(state.error) : null);
      const rows = visible();
      replace(body, rows.length ? rows.map(runRow)
        : h('tr', null, h('td', { colspan: 8, class: 'empty' }, state.loading ? 'Loading…' : 'No runs match.')));
      const filtered = rows.length !== state.runs.length ? ` (${state.runs.length - rows.length} hidden by filters)` : '';
      summary.textContent = `${rows.length} run(s) on this page${filtered}`;
      newerButton.disabled = state.newer.length === 0;
      const since = SINCE_MS[state.since] ? Date.now() - SINCE_MS[state.since] : 0;
      const last = state.runs[state.runs.length - 1];
      const oldest = last && last.timings ? last.timings.created_at_ms : 0;
      olderButton.disabled = !state.next || (since && oldest < since);
    }

    function runRow(run) {
      const timings = run.timings || {};
      const llm = run.llm || {};
      const duration = timings.duration_ms !== null && timings.duration_ms !== undefined ? timings.duration_ms
        : (run.status === 'running' ? Date.now() - timings.created_at_ms : null);
      return h('tr', { class: 'run-row', dataset: { runId: run.run_id, status: run.status } },
        h('td', null, h('a', { class: 'run-link mono', href: runHref(run.run_id), title: run.run_id }, shortId(run.run_id)),
          run.parent ? h('span', { class: 'chip', title: `child of ${run.parent}` }, 'child') : null),
        h('td', null, run.task),
        h('td', null, statusBadge(run.status),
          run.degraded ? h('span', { class: 'chip warn' }, 'degraded') : null,
          run.cached_from ? h('span', { class: 'chip' }, 'cached') : null),
        h('td', { title: fmtTime(timings.created_at_ms) }, fmtAgo(timings.created_at_ms)),
        h('td', null, fmtDuration(duration)),
        h('td', { class: 'num' }, (run.attempts || []).length),
        h('td', { class: 'num' }, `${llm.calls_live || 0} live`, llm.calls_replayed ? ` / ${llm.calls_replayed} replayed` : ''),
        h('td', { class: 'error-cell' }, fmtError(run.error)));
    }

    const refresh = debounce(load, 250);

    return {
      key: 'runs',
      node,
      start() {
        draw();
        load();
        get('/api/v1/tasks').then((answer) => {
          for (const task of answer.tasks || []) {
            taskSelect.appendChild(h('option', { value: task.name, selected: task.name === state.task }, task.name));
          }
        }).catch(() => {});
        // `hello` too: a run may have changed before the stream was listening.
        stream = subscribe('/api/v1/events', (kind) => {
          if (kind !== 'call' && kind !== 'report') refresh();
        });
        fallback = setInterval(() => { if (!stream.open()) load(); else draw(); }, 5000);
      },
      cleanup() {
        refresh.cancel();
        clearInterval(fallback);
        if (stream) stream.close();
      },
    };
  }

  // ---------------------------------------------------------------- run

  const RUN_TABS = [['overview', 'Overview'], ['timeline', 'Timeline'], ['logs', 'Logs'], ['report', 'Report']];

  function runView(runId, initialTab) {
    const state = {
      tab: initialTab,
      run: null,
      error: null,
      inDlq: false,
      actionError: null,
      busy: false,
      // Attempts seen starting on the event stream, for bars still running:
      // run id -> attempt number -> started at (ms).
      started: new Map(),
    };
    let stream = null;
    let ticker = null;
    let fallback = null;

    const head = h('div', { class: 'run-head' });
    const actions = h('div', { class: 'actions', id: 'run-actions' });
    const tabs = h('nav', { class: 'tabs', id: 'run-tabs' },
      RUN_TABS.map(([id, label]) => h('a', { id: `tab-${id}`, href: runHref(runId, id), dataset: { tab: id } }, label)));
    const panel = h('div', { class: 'tab-panel', id: 'run-panel' });
    const node = h('section', { class: 'run', dataset: { runId } }, head, actions, tabs, panel);

    const panels = {
      overview: overviewPanel(),
      timeline: timelinePanel(runId, state),
      logs: logsPanel(runId),
      report: reportPanel(runId),
    };

    async function loadRun() {
      try {
        state.run = await get(`/api/v1/runs/${encodeURIComponent(runId)}`);
        state.error = null;
      } catch (err) {
        state.error = err;
      }
      if (state.run && state.run.status === 'failed') {
        state.inDlq = await get(`/api/v1/dlq/${encodeURIComponent(runId)}`).then(() => true, () => false);
      } else {
        state.inDlq = false;
      }
      drawHead();
      panels.overview.draw(state);
    }

    function drawHead() {
      const run = state.run;
      if (!run) {
        replace(head, h('h1', null, 'Run ', h('span', { class: 'mono' }, runId)), state.error ? errorBox(state.error) : 'Loading…');
        clear(actions);
        return;
      }
      const timings = run.timings || {};
      const llm = run.llm || {};
      const facts = [
        ['Task', run.task],
        ['Status', statusBadge(run.status, { id: 'run-status' })],
        ['Created', fmtTime(timings.created_at_ms)],
        ['Finished', fmtTime(timings.finished_at_ms)],
        ['Duration', fmtDuration(timings.duration_ms)],
        ['Attempts', String((run.attempts || []).length)],
        ['LLM calls', `${llm.calls_live || 0} live, ${llm.calls_replayed || 0} replayed`],
        ['Tokens', `${llm.prompt_tokens || 0} in, ${llm.completion_tokens || 0} out`],
        ['Cost', llm.cost_usd ? `$${llm.cost_usd.toFixed(6)}` : '—'],
        ['Tenant', run.tenant],
      ];
      if (run.parent) facts.push(['Parent', h('a', { class: 'mono', href: runHref(run.parent) }, shortId(run.parent))]);
      if (run.group) facts.push(['Group', run.group]);
      if (run.cached_from) facts.push(['Cached from', h('a', { class: 'mono', href: runHref(run.cached_from) }, shortId(run.cached_from))]);
      if (run.replay_of) facts.push(['Replay of', h('a', { class: 'mono', href: runHref(run.replay_of) }, shortId(run.replay_of))]);
      if (run.produced_by) facts.push(['Produced by', run.produced_by]);
      if (run.degraded) facts.push(['Degraded', 'a fallback provider answered']);
      replace(head,
        h('h1', null, 'Run ', h('span', { class: 'mono', id: 'run-id' }, run.run_id)),
        state.error ? errorBox(state.error) : null,
        h('dl', { class: 'facts' }, facts.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])));
      drawActions();
    }

    function drawActions() {
      const run = state.run;
      const live = run.status === 'running' || run.status === 'pending';
      const act = (id, label, fn, extra) => h('button', Object.assign({ id, type: 'button', disabled: state.busy, onclick: fn }, extra || {}), label);
      replace(actions,
        live ? act('cancel-run', 'Cancel', () => action('cancel', () => post(`/api/v1/runs/${encodeURIComponent(runId)}/cancel`)), { class: 'danger' }) : null,
        live ? act('resume-run', 'Resume', () => action('resume', () => post(`/api/v1/runs/${encodeURIComponent(runId)}/resume`, { force: false })),
          { class: 'quiet', title: 'Take over a run a stopped or crashed host left behind' }) : null,
        state.inDlq ? act('retry-run', 'Retry', () => action('retry', () => post(`/api/v1/dlq/${encodeURIComponent(runId)}/retry`, { stub_output: null })),
          { title: 'Retry this dead letter on its journal: recorded calls are not repeated' }) : null,
        state.inDlq ? h('a', { class: 'button quiet', href: `#/dlq/${encodeURIComponent(runId)}` }, 'Dead letter…') : null,
        state.actionError ? errorBox(state.actionError, { id: 'action-error' }) : null);
    }

    async function action(name, call) {
      state.busy = true;
      state.actionError = null;
      drawActions();
      try {
        const answer = await call();
        if (answer && answer.run_id === runId) state.run = answer;
      } catch (err) {
        state.actionError = err;
      }
      state.busy = false;
      await loadRun();
      showTab();
    }

    function showTab() {
      for (const link of tabs.querySelectorAll('a')) link.classList.toggle('active', link.dataset.tab === state.tab);
      const p = panels[state.tab] || panels.overview;
      replace(panel, p.node);
      p.show(state);
    }

    const refreshRun = debounce(loadRun, 150);
    const refreshPanel = debounce(() => (panels[state.tab] || panels.overview).refresh(state), 200);

    function onEvent(kind, data) {
      // `hello` opens every (re)connection: what happened before it, between
      // the first read and the subscription, is read again.
      if (kind === 'hello') {
        refreshRun();
        refreshPanel();
        return;
      }
      if (kind === 'attempt-started' && data.run_id) {
        if (!state.started.has(data.run_id)) state.started.set(data.run_id, new Map());
        state.started.get(data.run_id).set(data.attempt, data.at_ms || Date.now());
      }
      refreshRun();
      const tab = state.tab;
      // `lagged`: the stream dropped events; whatever the tab shows may be stale.
      if (kind === 'lagged' || tab === 'timeline' || (tab === 'logs' && (kind === 'attempt-ended' || kind === 'run-finished'))
        || (tab === 'report' && (kind === 'report' || kind === 'run-finished'))) {
        refreshPanel();
      }
    }

    return {
      key: `run:${runId}`,
      node,
      start() {
        drawHead();
        loadRun().then(showTab);
        stream = subscribe(`/api/v1/runs/${encodeURIComponent(runId)}/events`, onEvent);
        // Without the stream (blocked proxy, server restart), poll while the run runs.
        fallback = setInterval(() => {
          if (!stream.open() && state.run && (state.run.status === 'running' || state.run.status === 'pending')) {
            loadRun();
            refreshPanel();
          }
        }, 3000);
        // Bars of attempts still running grow with the clock.
        ticker = setInterval(() => {
          if (state.tab === 'timeline' && state.run && state.run.status === 'running') panels.timeline.tick(state);
        }, 1000);
      },
      update(route) {
        state.tab = route.parts[2] || 'overview';
        showTab();
      },
      cleanup() {
        refreshRun.cancel();
        refreshPanel.cancel();
        clearInterval(ticker);
        clearInterval(fallback);
        if (stream) stream.close();
      },
    };
  }

  function overviewPanel() {
    const node = h('div', { class: 'overview' });
    function draw(state) {
      const run = state.run;
      if (!run) return;
      const attempts = run.attempts || [];
      replace(node,
        run.input !== undefined ? h('section', null, h('h2', null, 'Input'), h('pre', { id: 'run-input', class: 'json' }, pretty(run.input))) : null,
        h('section', null, h('h2', null, 'Output'),
          run.output === null || run.output === undefined
            ? h('p', { id: 'run-output', class: 'muted', dataset: { empty: 'true' } }, run.status === 'running' ? 'Not yet.' : 'None.')
            : h('pre', { id: 'run-output', class: 'json' }, pretty(run.output))),
        run.error ? h('section', null, h('h2', null, 'Error'),
          h('div', { id: 'run-error', class: 'error-box' }, h('strong', null, run.error.kind || 'error'), ' ', run.error.message || '',
            run.error.retryable === false ? h('span', { class: 'chip' }, 'not retryable') : null)) : null,
        h('section', null, h('h2', null, 'Attempts'),
          attempts.length ? h('table', { class: 'table', id: 'run-attempts' },
            h('thead', null, h('tr', null, ['#', 'Task', 'Started', 'Duration', 'LLM live', 'LLM replayed', 'Traces replayed', 'Outcome']
              .map((c) => h('th', null, c)))),
            h('tbody', null, attempts.map((a) => h('tr', { class: 'attempt-row', dataset: { attempt: a.number } },
              h('td', { class: 'num' }, a.number),
              h('td', null, a.task || run.task),
              h('td', null, fmtTime(a.started_at_ms)),
              h('td', null, fmtDuration(a.duration_ms)),
              h('td', { class: 'num' }, a.llm_calls_live || 0),
              h('td', { class: 'num' }, a.llm_calls_replayed || 0),
              h('td', { class: 'num' }, a.traces_replayed || 0),
              h('td', { class: a.error ? 'error-cell' : 'ok-cell' }, a.error ? fmtError(a.error) : 'ok')))))
            : h('p', { class: 'muted' }, run.cached_from ? 'None: the result came from the cache.' : 'None yet.')));
    }
    return { node, draw, show: draw, refresh: draw };
  }

  // ----------------------------------------------------------- timeline

  const OUTCOME_LABEL = { ok: 'succeeded', failed: 'failed', interrupted: 'interrupted', running: 'running' };

  function attemptOutcome(attempt) {
    if (attempt.running) return 'running';
    if (!attempt.error) return 'ok';
    const kind = attempt.error.kind || '';
    return kind === 'interrupted' || kind === 'cancelled' || kind === 'breaker-open' ? 'interrupted' : 'failed';
  }

  function timelinePanel(runId, runState) {
    const data = { runs: [], journals: new Map(), error: null, loaded: false };
    const chart = h('div', { id: 'timeline', class: 'timeline' });
    const detail = h('aside', { id: 'call-detail', class: 'card call-detail', hidden: true });
    const legend = h('div', { class: 'legend' },
      ['ok', 'failed', 'interrupted', 'running'].map((o) => h('span', { class: `legend-item outcome-${o}` }, OUTCOME_LABEL[o])),
      ['llm', 'trace', 'child', 'group'].map((k) => h('span', { class: `legend-item mark-${k}` }, k === 'llm' ? 'LLM call' : k === 'trace' ? 'traced step' : k)));
    const problem = h('div');
    const node = h('div', { class: 'timeline-panel' }, problem, legend, chart, detail);
    let selected = null;

    async function load() {
      try {
        const children = await get(`/api/v1/runs?parent=${encodeURIComponent(runId)}&children=true&limit=200`)
          .then((a) => a.runs || [], () => []);
        const run = runState.run || await get(`/api/v1/runs/${encodeURIComponent(runId)}`);
        // Oldest first: the order they started in.
        children.sort((a, b) => (a.timings.created_at_ms || 0) - (b.timings.created_at_ms || 0));
        const runs = [run, ...children.filter((c) => c.run_id !== runId)];
        const journals = await Promise.all(runs.slice(0, 40).map((r) => fullJournal(r.run_id).catch(() => [])));
        data.runs = runs;
        data.journals = new Map(runs.slice(0, 40).map((r, i) => [r.run_id, journals[i]]));
        data.error = null;
      } catch (err) {
        data.error = err;
      }
      data.loaded = true;
      draw();
    }

    function draw() {
      replace(problem, data.error ? errorBox(data.error) : null);
      if (!data.loaded) {
        replace(chart, h('p', { class: 'muted' }, 'Loading…'));
        return;
      }
      // The run view may be newer than the timeline's copy: take it.
      if (runState.run && data.runs.length) data.runs[0] = runState.run;
      const now = Date.now();
      const rows = data.runs.map((run) => rowModel(run, now));
      let t0 = Infinity;
      let t1 = 0;
      for (const row of rows) {
        t0 = Math.min(t0, row.start);
        t1 = Math.max(t1, row.end);
      }
      if (!isFinite(t0)) t0 = now;
      const span = Math.max(t1 - t0, 1);
      const pct = (ms) => `${Math.min(100, Math.max(0, ((ms - t0) / span) * 100))}%`;
      replace(chart,
        h('div', { class: 'tl-row tl-axis' }, h('div', { class: 'tl-label' }, fmtTime(t0)),
          h('div', { class: 'tl-track' }, ticks(span).map((t) => h('span', { class: 'tick', style: { left: pct(t0 + t) } }, fmtDuration(t))))),
        rows.map((row) => drawRow(row, pct, span)));
      if (selected) {
        const mark = chart.querySelector(`.call-mark[data-run-id="${CSS.escape(selected.run)}"][data-seq="${selected.seq}"]`);
        if (mark) mark.classList.add('selected');
      }
    }

    function rowModel(run, now) {
      const timings = run.timings || {};
      const attempts = (run.attempts || []).map((a) => Object.assign({}, a));
      const seen = new Set(attempts.map((a) => a.number));
      const started = runState.started.get(run.run_id);
      const running = run.status === 'running' || run.status === 'pending';
      if (running && started) {
        for (const [number, at] of started) {
          if (!seen.has(number)) attempts.push({ number, started_at_ms: at, finished_at_ms: null, running: true });
        }
      }
      for (const a of attempts) {
        if (!a.finished_at_ms) {
          a.running = running;
          a.finished_at_ms = running ? now : a.started_at_ms;
        }
      }
      attempts.sort((a, b) => a.number - b.number);
      const journal = data.journals.get(run.run_id) || [];
      const start = Math.min(timings.created_at_ms || now, ...attempts.map((a) => a.started_at_ms));
      const end = Math.max(timings.finished_at_ms || (running ? now : start), ...attempts.map((a) => a.finished_at_ms),
        ...journal.map((e) => e.recorded_at_ms || 0));
      return { run, attempts, journal, start, end, depth: run.run_id === runId ? 0 : 1 };
    }

    function drawRow(row, pct, span) {
      const { run, attempts, journal } = row;
      const byAttempt = new Map(attempts.map((a) => [a.number, []]));
      const loose = [];
      for (const entry of journal) (byAttempt.get(entry.attempt) || loose).push(entry);
      const bars = attempts.map((a) => {
        const outcome = attemptOutcome(a);
        const duration = Math.max(a.finished_at_ms - a.started_at_ms, 1);
        const replayed = (a.llm_calls_replayed || 0) + (a.traces_replayed || 0);
        const title = `attempt ${a.number} of ${a.task || run.task}: ${OUTCOME_LABEL[outcome]}` +
          `${a.error ? ` (${fmtError(a.error)})` : ''}, ${fmtDuration(a.finished_at_ms - a.started_at_ms)}` +
          `${replayed ? `, ${a.llm_calls_replayed || 0} LLM call(s) and ${a.traces_replayed || 0} step(s) replayed` : ''}`;
        return h('div', {
          class: `attempt-bar outcome-${outcome}`,
          dataset: { attempt: a.number, outcome, runId: run.run_id },
          style: { left: pct(a.started_at_ms), width: `max(${(duration / span) * 100}%, 1.6rem)` },
          title,
        },
        h('span', { class: 'attempt-number' }, a.number),
        replayed ? h('span', { class: 'replayed', title: 'answered from the journal' }, `↺${replayed}`) : null,
        (byAttempt.get(a.number) || []).map((e) => mark(e, run, a.started_at_ms, duration)));
      });
      const label = h('div', { class: 'tl-label', style: { paddingLeft: `${0.4 + row.depth}rem` } },
        h('a', { href: runHref(run.run_id), title: run.run_id }, run.task),
        ' ', statusBadge(run.status),
        run.cached_from ? h('span', { class: 'chip', title: `cached from ${run.cached_from}` }, 'cached') : null);
      return h('div', { class: 'tl-row', dataset: { runId: run.run_id, depth: row.depth } }, label,
        h('div', { class: 'tl-track' },
          h('div', { class: 'run-span', style: { left: pct(row.start), width: `${((row.end - row.start) / span) * 100}%` } }),
          bars,
          loose.map((e) => mark(e, run, row.start, Math.max(row.end - row.start, 1)))));
    }

    function mark(entry, run, barStart, barDuration) {
      const kind = entry.kind || 'llm';
      const end = entry.recorded_at_ms || barStart;
      const begin = end - (entry.duration_ms || 0);
      const left = Math.min(100, Math.max(0, ((begin - barStart) / barDuration) * 100));
      const width = Math.min(100 - left, ((entry.duration_ms || 0) / barDuration) * 100);
      const how = run.cached_from ? 'cached' : 'live';
      const el = h('button', {
        type: 'button',
        class: `call-mark mark-${kind}`,
        dataset: { callKind: kind, seq: entry.seq, attempt: entry.attempt, runId: run.run_id, how },
        style: { left: `${left}%`, width: `max(${width}%, 4px)` },
        title: markTitle(entry),
        onclick: (event) => {
          event.stopPropagation();
          selected = { run: run.run_id, seq: entry.seq };
          for (const m of chart.querySelectorAll('.call-mark.selected')) m.classList.remove('selected');
          el.classList.add('selected');
          showDetail(entry, run);
        },
      });
      return el;
    }

    function markTitle(entry) {
      const out = parseMaybeJson(entry.output);
      if (entry.kind === 'llm') {
        const u = entry.usage || {};
        return `LLM ${(out && out.provider) || ''} ${(out && out.model) || ''}: ${u.prompt_tokens || 0}+${u.completion_tokens || 0} tokens, ${fmtDuration(entry.duration_ms)}`;
      }
      return `${entry.kind} ${entry.name}: ${entry.summary || ''} (${fmtDuration(entry.duration_ms)})`;
    }

    function showDetail(entry, run) {
      const out = parseMaybeJson(entry.output);
      const attempts = run.attempts || [];
      const later = attempts.filter((a) => a.number > entry.attempt &&
        (entry.kind === 'llm' ? a.llm_calls_replayed : entry.kind === 'trace' ? a.traces_replayed : 0) > 0);
      let how = `live in attempt ${entry.attempt}`;
      if (run.cached_from) how = `cached: recorded by run ${run.cached_from}`;
      else if (later.length) how += `; attempts ${later.map((a) => a.number).join(', ')} replayed recorded calls`;
      const rows = [
        ['Kind', { llm: 'LLM call', trace: 'traced step', child: 'child run', group: 'group' }[entry.kind] || entry.kind],
        ['Name', entry.name],
        ['Journal seq', entry.seq],
        ['Occurrence', entry.occurrence],
        ['Recorded', fmtTime(entry.recorded_at_ms)],
        ['Latency', fmtDuration(entry.duration_ms)],
        ['Answered', how],
      ];
      if (entry.kind === 'llm' && out && typeof out === 'object') {
        rows.push(['Provider', out.provider || '—'], ['Model', out.model || '—']);
      }
      if (entry.usage) rows.push(['Tokens', `${entry.usage.prompt_tokens || 0} prompt, ${entry.usage.completion_tokens || 0} completion`]);
      if (entry.usage && entry.usage.cost_micros) rows.push(['Cost', `$${(entry.usage.cost_micros / 1e6).toFixed(6)}`]);
      rows.push(['Summary', entry.summary || '—']);
      const body = entry.kind === 'llm' && out && typeof out === 'object' && 'content' in out ? out.content : pretty(entry.output);
      replace(detail,
        h('div', { class: 'detail-head' }, h('h3', null, rows[0][1]),
          h('button', { type: 'button', class: 'quiet', onclick: () => { detail.hidden = true; selected = null; } }, 'close')),
        h('dl', { class: 'facts' }, rows.slice(1).map(([k, v]) => [h('dt', null, k), h('dd', null, fmtValue(v))])),
        h('h4', null, entry.kind === 'llm' ? 'Answer' : 'Output'),
        h('pre', { class: 'json' }, body));
      detail.hidden = false;
    }

    return {
      node,
      show() {
        draw();
        load();
      },
      refresh: load,
      tick: draw,
    };
  }

  /** Tick offsets (ms from the start) for an axis `span` ms long: 4 to 10 of them. */
  function ticks(span) {
    const steps = [10, 20, 50, 100, 200, 500, 1e3, 2e3, 5e3, 10e3, 15e3, 30e3, 60e3, 120e3, 300e3, 600e3, 1800e3, 3600e3, 7200e3, 21600e3, 86400e3];
    const step = steps.find((s) => span / s <= 8) || steps[steps.length - 1];
    const out = [];
    for (let t = 0; t <= span && out.length < 12; t += step) out.push(t);
    return out;
  }

  // --------------------------------------------------------------- logs

  function logsPanel(runId) {
    const node = h('div', { id: 'run-logs', class: 'logs' });
    async function load() {
      try {
        const answer = await get(`/api/v1/runs/${encodeURIComponent(runId)}/logs`);
        const attempts = answer.attempts || [];
        replace(node, attempts.length ? attempts.map((a) => h('section', { class: 'attempt-log', dataset: { attempt: a.attempt } },
          h('h3', null, `Attempt ${a.attempt}`),
          h('h4', null, 'stdout'), h('pre', { class: 'log stdout' }, a.stdout || '(empty)'),
          a.stderr ? [h('h4', null, 'stderr'), h('pre', { class: 'log stderr' }, a.stderr)] : null))
          : h('p', { class: 'muted' }, 'No logs yet.'));
      } catch (err) {
        replace(node, errorBox(err));
      }
    }
    return { node, show: load, refresh: load };
  }

  // ------------------------------------------------------------- report

  function reportPanel(runId) {
    const tabs = h('div', { id: 'report-tabs', class: 'tabs small', role: 'tablist' });
    const body = h('div', { id: 'report-body', class: 'report-body' });
    const node = h('div', { class: 'report' }, tabs, body);
    let chosen = null;
    let report = [];

    async function load() {
      try {
        const answer = await get(`/api/v1/runs/${encodeURIComponent(runId)}/report`);
        report = answer.tabs || [];
      } catch (err) {
        report = [];
        if (err.status === 404) {
          clear(tabs);
          replace(body, h('p', { class: 'muted', id: 'report-empty' }, 'This run has no report (yet).'));
        } else {
          replace(body, errorBox(err));
        }
        return;
      }
      draw();
    }

    function draw() {
      if (!report.find((t) => t.name === chosen)) chosen = report.length ? report[0].name : null;
      replace(tabs, report.map((t) => h('button', {
        type: 'button', role: 'tab', class: `report-tab${t.name === chosen ? ' active' : ''}`,
        'aria-selected': t.name === chosen ? 'true' : 'false', dataset: { tab: t.name },
        onclick: () => { chosen = t.name; draw(); },
      }, t.name)));
      const tab = report.find((t) => t.name === chosen);
      replace(body, tab ? reportContent(tab) : h('p', { class: 'muted' }, 'The report is empty.'));
    }

    return { node, show: load, refresh: load };
  }

  /** A report tab: HTML the task wrote, in a sandboxed frame (no scripts, no
   *  access to this page), or plain Markdown rendered here as text nodes. */
  function reportContent(tab) {
    const text = tab.html !== undefined ? tab.html : (tab.markdown || tab.content || '');
    if (tab.html !== undefined || /<\/?[a-z][\s\S]*>/i.test(text)) {
      const frame = h('iframe', { class: 'report-frame', sandbox: '', referrerpolicy: 'no-referrer', title: `report tab ${tab.name}` });
      // The frame may run nothing and fetch nothing but this page's style sheet,
      // whatever the task wrote (a policy in a document only ever tightens).
      const policy = `default-src 'none'; style-src 'unsafe-inline' ${new URL(REPORT_CSS).origin}; img-src data:; base-uri 'none'; form-action 'none'`;
      frame.srcdoc = `<!doctype html><meta charset="utf-8"><meta http-equiv="Content-Security-Policy" content="${policy}">` +
        `<link rel="stylesheet" href="${REPORT_CSS}">` +
        `<body class="report-doc">${text}</body>`;
      return frame;
    }
    return h('div', { class: 'markdown' }, markdown(text));
  }

  // The frame inherits this page's policy (style sheets of this origin only)
  // and resolves URLs against it: it takes the dashboard's own style sheet.
  const REPORT_CSS = new URL('assets/style.css', document.baseURI).href;

  // ----------------------------------------------------------- markdown

  /** Markdown to DOM nodes (headings, paragraphs, lists, quotes, code,
   *  emphasis, links to http(s)); everything else stays text. */
  function markdown(text) {
    const out = [];
    const lines = String(text).replace(/\r\n?/g, '\n').split('\n');
    let i = 0;
    while (i < lines.length) {
      const line = lines[i];
      if (/^```/.test(line)) {
        const code = [];
        for (i++; i < lines.length && !/^```/.test(lines[i]); i++) code.push(lines[i]);
        i++;
        out.push(h('pre', null, h('code', null, code.join('\n'))));
      } else if (/^#{1,6}\s/.test(line)) {
        const level = line.match(/^#+/)[0].length;
        out.push(h(`h${level}`, null, inline(line.replace(/^#+\s*/, ''))));
        i++;
      } else if (/^\s*([-*+]|\d+[.)])\s+/.test(line)) {
        const ordered = /^\s*\d/.test(line);
        const items = [];
        for (; i < lines.length && /^\s*([-*+]|\d+[.)])\s+/.test(lines[i]); i++) {
          items.push(h('li', null, inline(lines[i].replace(/^\s*([-*+]|\d+[.)])\s+/, ''))));
        }
        out.push(h(ordered ? 'ol' : 'ul', null, items));
      } else if (/^>\s?/.test(line)) {
        const quote = [];
        for (; i < lines.length && /^>\s?/.test(lines[i]); i++) quote.push(lines[i].replace(/^>\s?/, ''));
        out.push(h('blockquote', null, markdown(quote.join('\n'))));
      } else if (!line.trim()) {
        i++;
      } else {
        const para = [];
        for (; i < lines.length && lines[i].trim() && !/^(#{1,6}\s|```|>|\s*([-*+]|\d+[.)])\s)/.test(lines[i]); i++) para.push(lines[i]);
        out.push(h('p', null, inline(para.join(' '))));
      }
    }
    return out;
  }

  function inline(text) {
    const out = [];
    const pattern = /(`[^`]+`)|(\*\*[^*]+\*\*)|(\*[^*]+\*|_[^_]+_)|(\[[^\]]+\]\([^)\s]+\))/g;
    let last = 0;
    let m;
    while ((m = pattern.exec(text))) {
      if (m.index > last) out.push(text.slice(last, m.index));
      const token = m[0];
      if (m[1]) out.push(h('code', null, token.slice(1, -1)));
      else if (m[2]) out.push(h('strong', null, token.slice(2, -2)));
      else if (m[3]) out.push(h('em', null, token.slice(1, -1)));
      else {
        const [, label, url] = /^\[([^\]]+)\]\(([^)\s]+)\)$/.exec(token);
        out.push(/^https?:\/\//i.test(url) ? h('a', { href: url, target: '_blank', rel: 'noopener noreferrer' }, label) : label);
      }
      last = m.index + token.length;
    }
    if (last < text.length) out.push(text.slice(last));
    return out;
  }

  // ---------------------------------------------------------------- DLQ

  function dlqView(selectedId) {
    const list = h('tbody', { id: 'dlq-body' });
    const panel = h('div', { id: 'letter-panel' });
    const problem = h('div');
    const purgeAll = h('button', { id: 'purge-all', type: 'button', class: 'danger quiet' }, 'Purge all');
    const node = h('section', { class: 'dlq' },
      h('div', { class: 'page-head' }, h('h1', null, 'Dead letters'), purgeAll),
      h('p', { class: 'muted' }, 'Runs whose retries and fallbacks were all spent. A retry runs again on the run\'s own journal: calls it recorded are not repeated.'),
      problem,
      h('div', { class: 'split' },
        h('table', { class: 'table', id: 'dlq-table' },
          h('thead', null, h('tr', null, ['Run', 'Task', 'Failed', 'Attempts', 'Error'].map((c) => h('th', null, c)))),
          list),
        panel));
    let stream = null;
    let letters = [];
    let selected = selectedId;
    let confirming = false;

    purgeAll.addEventListener('click', async () => {
      if (!confirming) {
        confirming = true;
        purgeAll.textContent = 'Purge every letter? Click again';
        purgeAll.id = 'purge-all-confirm';
        setTimeout(() => { confirming = false; purgeAll.textContent = 'Purge all'; purgeAll.id = 'purge-all'; }, 4000);
        return;
      }
      confirming = false;
      purgeAll.textContent = 'Purge all';
      purgeAll.id = 'purge-all';
      try {
        await api('DELETE', '/api/v1/dlq');
        go('#/dlq');
        load();
      } catch (err) {
        replace(problem, errorBox(err));
      }
    });

    async function load() {
      try {
        letters = (await get('/api/v1/dlq')).letters || [];
        clear(problem);
      } catch (err) {
        replace(problem, errorBox(err));
      }
      drawList();
      // Keep the letter's form (and what was typed in it) while it is still there.
      const shown = panel.firstChild && panel.firstChild.dataset ? panel.firstChild.dataset.runId : undefined;
      if (!(shown && shown === selected && letters.some((l) => l.run_id === selected))) drawLetter();
    }

    function drawList() {
      replace(list, letters.length ? letters.map((l) => h('tr', {
        class: `letter-row${l.run_id === selected ? ' selected' : ''}`, dataset: { runId: l.run_id },
      },
      h('td', null, h('a', { class: 'letter-link mono', href: `#/dlq/${encodeURIComponent(l.run_id)}`, title: l.run_id }, shortId(l.run_id))),
      h('td', null, l.task),
      h('td', { title: fmtTime(l.failed_at_ms) }, fmtAgo(l.failed_at_ms)),
      h('td', { class: 'num' }, (l.attempts || []).length),
      h('td', { class: 'error-cell' }, fmtError(l.error))))
        : h('tr', null, h('td', { colspan: 5, class: 'empty', id: 'dlq-empty' }, 'The dead-letter queue is empty.')));
    }

    function drawLetter() {
      if (!selected) {
        replace(panel, h('p', { class: 'muted' }, 'Choose a letter to retry or purge it.'));
        return;
      }
      const letter = letters.find((l) => l.run_id === selected);
      if (!letter) {
        replace(panel, h('p', { class: 'muted', id: 'letter-gone' }, 'This run is not in the dead-letter queue (any more). ',
          h('a', { href: runHref(selected) }, 'Open the run')));
        return;
      }
      const stub = h('textarea', { id: 'stub-output', rows: 3, placeholder: 'optional: answer the call that kept failing with this text' });
      const status = h('div', { id: 'letter-status' });
      const retry = h('button', { id: 'retry-letter', type: 'button' }, 'Retry');
      const purge = h('button', { id: 'purge-letter', type: 'button', class: 'danger quiet' }, 'Purge');
      retry.addEventListener('click', async () => {
        retry.disabled = purge.disabled = true;
        const text = stub.value;
        try {
          const run = await post(`/api/v1/dlq/${encodeURIComponent(letter.run_id)}/retry`, { stub_output: text ? text : null });
          go(runHref((run && run.run_id) || letter.run_id));
        } catch (err) {
          retry.disabled = purge.disabled = false;
          replace(status, errorBox(err));
        }
      });
      purge.addEventListener('click', async () => {
        retry.disabled = purge.disabled = true;
        try {
          await api('DELETE', `/api/v1/dlq/${encodeURIComponent(letter.run_id)}`);
          selected = null;
          history.replaceState(null, '', '#/dlq');
          load();
        } catch (err) {
          retry.disabled = purge.disabled = false;
          replace(status, errorBox(err));
        }
      });
      replace(panel, h('div', { class: 'card letter', dataset: { runId: letter.run_id } },
        h('h2', null, 'Run ', h('a', { class: 'mono', href: runHref(letter.run_id) }, letter.run_id)),
        h('dl', { class: 'facts' },
          h('dt', null, 'Task'), h('dd', null, letter.task),
          h('dt', null, 'Failed'), h('dd', null, fmtTime(letter.failed_at_ms)),
          h('dt', null, 'Error'), h('dd', { class: 'error-cell' }, fmtError(letter.error))),
        h('h3', null, 'Input'), h('pre', { class: 'json', id: 'letter-input' }, pretty(letter.input)),
        h('h3', null, 'Attempts'),
        h('ol', { class: 'attempt-list' }, (letter.attempts || []).map((a) => h('li', null,
          `${fmtTime(a.started_at_ms)}, ${fmtDuration((a.finished_at_ms || 0) - (a.started_at_ms || 0))}: `,
          a.error ? fmtError(a.error) : 'ok'))),
        h('label', { for: 'stub-output' }, 'Stub output'), stub,
        h('div', { class: 'actions' }, retry, purge),
        status));
    }

    return {
      key: 'dlq',
      node,
      start() {
        drawList();
        drawLetter();
        load();
        stream = subscribe('/api/v1/events', (kind) => {
          if (kind === 'hello' || kind === 'run-finished' || kind === 'lagged') load();
        });
      },
      update(route) {
        selected = route.parts[1] || null;
        drawList();
        drawLetter();
      },
      cleanup() {
        if (stream) stream.close();
      },
    };
  }

  // ------------------------------------------------ breakers and pools

  function pollingView(key, loader) {
    const node = h('section', { class: key });
    let timer = null;
    const tick = () => loader(node).then(() => setLive('on', 'polling'), () => setLive('off', 'offline'));
    return {
      key,
      node,
      start() {
        tick();
        timer = setInterval(tick, 2000);
      },
      cleanup() {
        clearInterval(timer);
      },
    };
  }

  async function loadBreakers(node) {
    let breakers;
    try {
      breakers = (await get('/api/v1/breakers')).breakers || [];
    } catch (err) {
      replace(node, h('h1', null, 'Circuit breakers'), errorBox(err));
      throw err;
    }
    replace(node, h('h1', null, 'Circuit breakers'),
      h('p', { class: 'muted' }, 'A breaker opens after repeated failures of a provider or task, refuses calls while open, then lets a probe through.'),
      h('table', { class: 'table', id: 'breakers-table' },
        h('thead', null, h('tr', null, ['Name', 'State', 'Failures', 'Next probe'].map((c) => h('th', null, c)))),
        h('tbody', null, breakers.length ? breakers.map((b) => h('tr', { class: 'breaker-row', dataset: { name: b.name, state: b.state } },
          h('td', null, b.name),
          h('td', null, h('span', { class: `status breaker-${b.state}` }, b.state)),
          h('td', { class: 'num' }, fmtValue(b.failures)),
          h('td', { title: fmtTime(b.retry_at_ms) }, b.retry_at_ms ? fmtAgo(b.retry_at_ms) : '—')))
          : h('tr', null, h('td', { colspan: 4, class: 'empty' }, 'No breaker has tripped or been configured yet.')))));
  }

  async function loadPools(node) {
    let pools;
    try {
      pools = (await get('/api/v1/pools')).pools || [];
    } catch (err) {
      replace(node, h('h1', null, 'Pools'), errorBox(err));
      throw err;
    }
    const cols = [['environment', 'Environment'], ['replicas', 'Replicas'], ['live', 'Live'], ['idle', 'Idle'], ['busy', 'Busy'],
      ['queued', 'Queued'], ['instantiations', 'Instantiations'], ['reuses', 'Reuses']];
    replace(node, h('h1', null, 'Pools'),
      h('p', { class: 'muted' }, 'Warm instances of environments with reuse.'),
      h('table', { class: 'table', id: 'pools-table' },
        h('thead', null, h('tr', null, cols.map(([, label]) => h('th', null, label)))),
        h('tbody', null, pools.length ? pools.map((p) => h('tr', { class: 'pool-row', dataset: { environment: p.environment } },
          cols.map(([k], i) => h('td', { class: i ? 'num' : null }, fmtValue(p[k])))))
          : h('tr', null, h('td', { colspan: cols.length, class: 'empty' }, 'No environment keeps warm instances (none has `reuse`), or none has started.')))));
  }

  async function loadUsage(node) {
    let usage, quota;
    try {
      [usage, quota] = await Promise.all([get('/api/v1/usage?since=30d&by=day'), get('/api/v1/quota')]);
    } catch (err) {
      replace(node, h('h1', null, 'Usage'), errorBox(err));
      throw err;
    }
    const cols = [['key', 'Day'], ['calls', 'LLM calls'], ['prompt_tokens', 'Prompt tokens'],
      ['completion_tokens', 'Completion tokens'], ['cost_usd', 'Cost $']];
    const rows = (usage.rows || []).concat([Object.assign({}, usage.total, { key: 'Total' })]);
    const limits = (quota.ledger || []).map((line) => h('tr', { class: 'quota-row', dataset: { quota: line.quota } },
      h('td', null, line.quota), h('td', null, line.period), h('td', { class: 'num' }, fmtValue(line.spent)),
      h('td', { class: 'num' }, fmtValue(line.reserved)), h('td', { class: 'num' }, line.limit == null ? '—' : fmtValue(line.limit))));
    replace(node, h('h1', null, 'Usage'),
      h('p', { class: 'muted' }, `LLM calls of ${quota.tenant} in the last 30 days (calls under a price or a quota).`),
      h('table', { class: 'table', id: 'usage-table' },
        h('thead', null, h('tr', null, cols.map(([, label]) => h('th', null, label)))),
        h('tbody', null, rows.map((r) => h('tr', { class: 'usage-row' },
          cols.map(([k], i) => h('td', { class: i ? 'num' : null }, fmtValue(r[k]))))))),
      h('h2', null, 'Quotas'),
      h('table', { class: 'table', id: 'quota-table' },
        h('thead', null, h('tr', null, ['Quota', 'Period', 'Spent', 'Held by calls under way', 'Limit'].map((l) => h('th', null, l)))),
        h('tbody', null, limits)));
  }

  async function loadWorkers(node) {
    let workers;
    try {
      workers = (await get('/api/v1/status')).workers || [];
    } catch (err) {
      replace(node, h('h1', null, 'Workers'), errorBox(err));
      throw err;
    }
    replace(node, h('h1', null, 'Workers'),
      h('p', { class: 'muted' }, 'The hosts working on this store\'s runs, and the runs each holds a lease on.'),
      h('table', { class: 'table', id: 'workers-table' },
        h('thead', null, h('tr', null, ['Worker', 'Kind', 'State', 'Concurrency', 'Last seen', 'Runs held'].map((label) => h('th', null, label)))),
        h('tbody', null, workers.length ? workers.map((w) => h('tr', { class: 'worker-row', dataset: { id: w.id, state: w.state } },
          h('td', null, w.id),
          h('td', null, w.kind),
          h('td', null, w.state),
          h('td', { class: 'num' }, fmtValue(w.concurrency)),
          h('td', { class: 'num' }, `${(w.seen_ms_ago / 1000).toFixed(1)}s ago`),
          h('td', { class: 'worker-runs' }, (w.runs || []).length
            ? (w.runs || []).map((id) => h('a', { href: runHref(id), class: 'run-link' }, id.slice(0, 8)))
            : '—')))
          : h('tr', null, h('td', { colspan: 6, class: 'empty' }, 'No worker has registered with this store yet.')))));
  }

  // ------------------------------------------------------------- submit

  /** The JSON Schema at `ref` (`#/$defs/X`) of `root`, or `schema` itself. */
  function resolved(schema, root) {
    if (schema && typeof schema.$ref === 'string' && schema.$ref.startsWith('#/')) {
      return schema.$ref.slice(2).split('/').reduce((at, key) => (at ? at[key] : undefined), root) || {};
    }
    return schema || {};
  }

  /** The kind of form field a property's schema gets, or null for JSON. */
  function fieldKind(schema) {
    if (Array.isArray(schema.enum)) return 'enum';
    const type = Array.isArray(schema.type) ? schema.type.find((t) => t !== 'null') : schema.type;
    if (type === 'string' || type === 'integer' || type === 'number' || type === 'boolean') return type;
    if (type === 'array' && schema.items && (schema.items.type === 'string')) return 'lines';
    return null;
  }

  /**
   * A form made from a task's input schema, one field per property, kept in
   * step with the JSON text (`input`), which stays what is sent; properties
   * of other shapes are edited in the JSON text.
   */
  function schemaFields(schemaRoot, input) {
    const schema = resolved(schemaRoot, schemaRoot);
    if (schema.type !== 'object' || !schema.properties) return null;
    const required = new Set(schema.required || []);
    const fields = [];
    const read = () => {
      try {
        const value = JSON.parse(input.value);
        return value && typeof value === 'object' && !Array.isArray(value) ? value : {};
      } catch {
        return {};
      }
    };
    const write = (name, value) => {
      const current = read();
      if (value === undefined) delete current[name];
      else current[name] = value;
      input.value = JSON.stringify(current, null, 2);
    };
    for (const [name, raw] of Object.entries(schema.properties)) {
      const prop = resolved(raw, schemaRoot);
      const kind = fieldKind(prop);
      if (!kind) continue;
      const id = `field-${name}`;
      let control;
      if (kind === 'boolean') {
        control = h('input', { id, type: 'checkbox', onchange: () => write(name, control.checked) });
      } else if (kind === 'enum') {
        control = h('select', { id, onchange: () => write(name, prop.enum[Number(control.value)]) },
          h('option', { value: '' }, '—'),
          prop.enum.map((option, i) => h('option', { value: String(i) }, JSON.stringify(option))));
      } else if (kind === 'lines') {
        control = h('textarea', { id, rows: 3, placeholder: 'one per line',
          oninput: () => write(name, control.value.split('\n').filter((line) => line !== '')) });
      } else {
        const numeric = kind === 'integer' || kind === 'number';
        control = h('input', { id, type: numeric ? 'number' : 'text', step: kind === 'integer' ? '1' : numeric ? 'any' : null,
          oninput: () => {
            if (control.value === '') return write(name, undefined);
            write(name, numeric ? Number(control.value) : control.value);
          } });
      }
      const current = read()[name];
      if (current !== undefined) {
        if (kind === 'boolean') control.checked = Boolean(current);
        else if (kind === 'lines' && Array.isArray(current)) control.value = current.join('\n');
        else if (kind === 'enum') control.value = String(prop.enum.findIndex((o) => JSON.stringify(o) === JSON.stringify(current)));
        else control.value = String(current);
      }
      const hint = [prop.description, required.has(name) ? 'required' : null].filter(Boolean).join(' · ');
      fields.push(h('div', { class: 'schema-field' },
        h('label', { for: id }, name), control, hint ? h('span', { class: 'muted' }, hint) : null));
    }
    return fields.length ? h('fieldset', { id: 'submit-fields' }, h('legend', null, 'Input'), fields) : null;
  }

  function submitView(query) {
    const taskSelect = h('select', { id: 'submit-task', required: true });
    const input = h('textarea', { id: 'submit-input', rows: 8, spellcheck: 'false' }, '{}');
    const info = h('p', { id: 'submit-task-info', class: 'muted' });
    const fieldsSlot = h('div', { id: 'submit-fields-slot' });
    const status = h('div', { id: 'submit-status' });
    const submitButton = h('button', { id: 'submit-go', type: 'submit' }, 'Submit');
    let tasks = [];
    const form = h('form', { id: 'submit-form', class: 'card' },
      h('h1', null, 'Submit a run'),
      h('label', { for: 'submit-task' }, 'Task'), taskSelect, info, fieldsSlot,
      h('label', { for: 'submit-input' }, 'Input (JSON)'), input,
      h('div', { class: 'actions' }, submitButton),
      status);

    const draftKey = (task) => `cairn.input.${task}`;
    function chooseTask() {
      const task = tasks.find((t) => t.name === taskSelect.value);
      const saved = sessionStorage.getItem(draftKey(taskSelect.value));
      if (saved !== null) input.value = saved;
      if (!task) {
        info.textContent = '';
        return;
      }
      const s = task.stats || {};
      info.textContent = `environment ${task.environment || 'default'}; ${s.runs || 0} run(s), ${s.succeeded || 0} succeeded, ${s.failed || 0} failed`;
      // A task that describes its input gets a form made from the schema.
      const fields = task.interface ? schemaFields(task.interface.input, input) : null;
      replace(fieldsSlot, fields);
    }
    taskSelect.addEventListener('change', chooseTask);

    form.addEventListener('submit', async (event) => {
      event.preventDefault();
      let value;
      try {
        value = input.value.trim() ? JSON.parse(input.value) : null;
      } catch (err) {
        replace(status, h('p', { class: 'form-error', id: 'submit-error' }, `The input is not valid JSON: ${err.message}`));
        return;
      }
      sessionStorage.setItem(draftKey(taskSelect.value), input.value);
      submitButton.disabled = true;
      replace(status, h('p', { class: 'muted' }, 'Submitting…'));
      try {
        const run = await post('/api/v1/runs', { task: taskSelect.value, input: value, wait: false });
        go(runHref(run.run_id));
      } catch (err) {
        submitButton.disabled = false;
        replace(status, errorBox(err, { id: 'submit-error' }));
      }
    });

    return {
      key: 'submit',
      node: form,
      async start() {
        try {
          tasks = (await get('/api/v1/tasks')).tasks || [];
        } catch (err) {
          replace(status, errorBox(err));
          return;
        }
        const wanted = query.get('task');
        replace(taskSelect, tasks.map((t) => h('option', { value: t.name, selected: t.name === wanted }, t.name)));
        chooseTask();
        form.dataset.ready = 'true';
      },
    };
  }

  // --------------------------------------------------------------- boot

  function boot() {
    adoptTokenFromUrl();
    $('#logout').addEventListener('click', () => signedOut('Signed out.'));
    window.addEventListener('hashchange', () => {
      adoptTokenFromUrl();
      render();
    });
    render();
  }

  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', boot);
  else boot();
})();
