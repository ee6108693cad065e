// tally dashboard: plain JavaScript, no build step, no third-party code.
//
// Login: the API key comes from the URL fragment (#key=..., never sent to the server) or the
// form, and is traded at once for a session (POST /api/v1/session): an HttpOnly cookie plus a
// CSRF token kept in memory here and sent as X-CSRF-Token on every unsafe request.
// Live updates: the /api/v1/events stream (EventSource) when the node has it; otherwise, or
// when it fails, polling the REST routes every 2 s. Routes a node may not have yet answer 404
// and their panel says so. Everything is rendered with textContent, never as markup.
'use strict';

// Errors the browser tests read: uncaught errors, rejected promises, CSP violations, console.error.
window.__tallyErrors = [];
window.addEventListener('error', (e) => window.__tallyErrors.push('error: ' + (e.message || String(e))));
window.addEventListener('unhandledrejection', (e) => window.__tallyErrors.push('rejection: ' + String(e.reason)));
document.addEventListener('securitypolicyviolation', (e) =>
  window.__tallyErrors.push('csp: ' + e.violatedDirective + ' ' + e.blockedURI));
(function () {
  const original = console.error.bind(console);
  console.error = (...args) => { window.__tallyErrors.push('console: ' + args.map(String).join(' ')); original(...args); };
})();

(function () {
  const POLL_MS = 2000;
  const SLOW_MS = 10000;
  const CHART_POINTS = 60;
  const STANDING_LOOKUPS = 50;

  const $ = (id) => document.getElementById(id);
  const S = {
    csrf: null,
    status: null,
    peers: [],
    standing: new Map(),   // peer id → StandingInfo, when PeerInfo has no standing fields
    downloads: new Map(),  // content id → DownloadInfo
    content: [],
    market: null,
    rates: [],             // [{up, down}], newest last
    lastTotals: null,      // {up, down, t} from the previous poll of /status
    sort: { key: 'bytes_sent', dir: -1 },
    events: null,
    timers: [],
    live: false,
    missing: new Set(),    // routes this node answered "no such route" for
  };

  // ---- the API ----

  class ApiFailure extends Error {
    constructor(status, body) {
      super(body && body.message ? body.message : 'HTTP ' + status);
      this.status = status;
      this.code = body && body.code;
      // 404 from the router (not from a handler), or 405: the node has no such route yet.
      this.noRoute = status === 405 || (status === 404 && !!body && typeof body.message === 'string' &&
        body.message.startsWith('no such route'));
    }
  }

  async function api(method, path, body) {
    const headers = { Accept: 'application/json' };
    if (body !== undefined) headers['Content-Type'] = 'application/json';
    if (method !== 'GET' && S.csrf) headers['X-CSRF-Token'] = S.csrf;
    const response = await fetch('/api/v1' + path, {
      method,
      headers,
      body: body === undefined ? undefined : JSON.stringify(body),
      credentials: 'same-origin',
      cache: 'no-store',
    });
    const text = await response.text();
    let data = null;
    if (text) {
      try { data = JSON.parse(text); } catch (_) { data = null; }
    }
    if (!response.ok) {
      if (response.status === 401 && path !== '/session' && S.csrf) loggedOut('The session ended; log in again.');
      throw new ApiFailure(response.status, data);
    }
    return data;
  }

  // Fetches an optional route: null and the route remembered as missing when the node lacks it.
  async function optional(path, key) {
    try {
      const data = await api('GET', path);
      S.missing.delete(key);
      return data;
    } catch (e) {
      if (e.noRoute) { S.missing.add(key); return null; }
      throw e;
    }
  }

  // ---- formatting ----

  function bytes(n) {
    if (n === null || n === undefined) return '–';
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let v = Number(n); let i = 0;
    while (v >= 1024 && i < units.length - 1) { v /= 1024; i += 1; }
    return (i === 0 ? String(v) : v.toFixed(v < 10 ? 2 : 1)) + ' ' + units[i];
  }
  const rate = (n) => bytes(n) + '/s';
  const short = (id) => (id ? String(id).slice(0, 12) + '…' : '–');
  const when = (ms) => (ms ? new Date(Number(ms)).toLocaleString() : '–');
  const num = (n) => (n === null || n === undefined ? '–' : Number(n).toLocaleString());

  function cell(text, opts) {
    const td = document.createElement('td');
    td.textContent = text;
    if (opts && opts.num) td.className = 'num';
    if (opts && opts.title) td.title = opts.title;
    if (opts && opts.mono) td.classList.add('mono');
    return td;
  }

  function fill(tableId, emptyId, rows, emptyText) {
    const tbody = $(tableId).tBodies[0];
    // Live updates re-render rows: keep the keyboard focus on the same row's button.
    const focused = tbody.contains(document.activeElement) ? document.activeElement : null;
    const focusKey = focused ? Object.entries(focused.dataset)[0] : null;
    tbody.replaceChildren(...rows);
    if (focusKey) {
      const attr = 'data-' + focusKey[0].replace(/[A-Z]/g, (c) => '-' + c.toLowerCase());
      const again = Array.from(tbody.querySelectorAll('[' + attr + ']'))
        .find((el) => el.getAttribute(attr) === focusKey[1]);
      if (again) again.focus();
    }
    $(tableId).hidden = rows.length === 0;
    const empty = $(emptyId);
    empty.hidden = rows.length !== 0;
    if (emptyText) empty.textContent = emptyText;
  }

  function say(id, text, bad) {
    const el = $(id);
    el.textContent = text;
    el.classList.toggle('bad', !!bad);
  }

  // ---- rendering ----

  function renderStatus() {
    const s = S.status;
    if (!s) return;
    $('identity').textContent = short(s.peer_id) + ' · ' + s.network + ' · ' + s.api_addr + ' · v' + s.version;
    $('identity').title = s.peer_id;
    $('bytes-up').textContent = bytes(s.transfer.bytes_up);
    $('bytes-down').textContent = bytes(s.transfer.bytes_down);
    $('peers-connected').textContent = num(s.peers_connected);
    $('receipts-count').textContent = num(s.store.receipts);
    $('uptime').textContent = 'up ' + Math.floor(s.uptime_s / 60) + ' min';
  }

  // Credits this node earned from a peer (it uploaded) and owes it (it downloaded).
  function peerCredits(p) {
    if (typeof p.credits_sent === 'number') return { earned: p.credits_sent, owed: p.credits_received || 0 };
    const st = S.standing.get(p.peer_id);
    if (st) return { earned: st.taken, owed: st.given };
    return null;
  }
  function peerStanding(p) {
    if (typeof p.standing === 'number') return p.standing;
    const st = S.standing.get(p.peer_id);
    return st ? st.score : null;
  }
  function peerState(p) {
    return p.state || (p.connected ? 'connected' : 'disconnected');
  }

  function renderBalance() {
    let balance = 0; let known = 0; let above = 0;
    for (const p of S.peers) {
      const c = peerCredits(p);
      if (c) { balance += c.earned - c.owed; known += 1; }
      const st = peerStanding(p);
      if (st !== null && st > 0) above += 1;
    }
    const ready = known === S.peers.length;
    $('balance').textContent = ready ? num(balance) : '…';
    $('balance').dataset.value = ready ? String(balance) : '';
    $('standing').textContent = num(above) + ' of ' + num(S.peers.length);
  }

  function renderPeers() {
    const key = S.sort.key; const dir = S.sort.dir;
    const value = (p) => {
      switch (key) {
        case 'standing': return peerStanding(p) ?? -1;
        case 'state': return peerState(p);
        case 'credits': { const c = peerCredits(p); return c ? c.earned - c.owed : 0; }
        default: return p[key] ?? 0;
      }
    };
    const peers = [...S.peers].sort((a, b) => {
      const x = value(a); const y = value(b);
      return (x < y ? -1 : x > y ? 1 : 0) * dir;
    });
    const rows = peers.map((p) => {
      const tr = document.createElement('tr');
      const c = peerCredits(p);
      const st = peerStanding(p);
      tr.append(
        cell(short(p.peer_id), { title: p.peer_id + ' at ' + p.addr, mono: true }),
        cell(peerState(p)),
        cell(st === null ? '–' : st.toFixed(3), { num: true }),
        cell(bytes(p.bytes_sent), { num: true }),
        cell(bytes(p.bytes_received), { num: true }),
        cell(p.up_bps === undefined ? '–' : rate(p.up_bps), { num: true }),
        cell(p.down_bps === undefined ? '–' : rate(p.down_bps), { num: true }),
        cell(c ? num(c.earned - c.owed) : '–', { num: true }),
      );
      return tr;
    });
    fill('peers-table', 'peers-empty', rows);
    for (const th of $('peers-table').tHead.rows[0].cells) {
      const b = th.querySelector('button');
      th.setAttribute('aria-sort', b.dataset.sort === key ? (dir > 0 ? 'ascending' : 'descending') : 'none');
    }
    renderBalance();
  }

  function progressOf(d) {
    if (d.state === 'complete') return 100;
    if (d.size > 0) return Math.min(100, Math.floor((d.bytes_have * 100) / d.size));
    if (d.chunks_total > 0) return Math.min(100, Math.floor((d.chunks_have * 100) / d.chunks_total));
    return 0;
  }

  function renderDownloads() {
    const rows = [...S.downloads.values()].map((d) => {
      const tr = document.createElement('tr');
      tr.dataset.cid = d.content_id;
      const pct = progressOf(d);
      const bar = document.createElement('div');
      bar.className = 'bar';
      bar.setAttribute('role', 'progressbar');
      bar.setAttribute('aria-valuemin', '0');
      bar.setAttribute('aria-valuemax', '100');
      bar.setAttribute('aria-valuenow', String(pct));
      bar.setAttribute('aria-label', 'Download of ' + short(d.content_id));
      bar.dataset.cid = d.content_id;
      const fillEl = document.createElement('span');
      fillEl.style.width = pct + '%';
      bar.append(fillEl);
      const label = document.createElement('span');
      label.className = 'pct';
      label.textContent = pct + '% · ' + bytes(d.bytes_have) + ' of ' + bytes(d.size);
      const progress = document.createElement('td');
      progress.append(bar, label);
      const action = document.createElement('td');
      if (d.state === 'running') {
        const b = document.createElement('button');
        b.type = 'button';
        b.textContent = 'Cancel';
        b.setAttribute('aria-label', 'Cancel download of ' + short(d.content_id));
        b.addEventListener('click', () => cancelDownload(d.content_id, b));
        action.append(b);
      }
      tr.append(cell(short(d.content_id), { title: d.content_id, mono: true }), cell(d.out),
        progress, cell(d.state + (d.error ? ': ' + d.error : '')), cell(num(d.providers), { num: true }), action);
      return tr;
    });
    fill('downloads-table', 'downloads-empty', rows);
  }

  function renderContent() {
    const rows = S.content.map((c) => {
      const tr = document.createElement('tr');
      tr.dataset.cid = c.content_id;
      tr.append(cell(c.name), cell(c.content_id, { mono: true }), cell(bytes(c.size), { num: true }),
        cell(num(c.chunks), { num: true }));
      return tr;
    });
    fill('content-table', 'content-empty', rows);
  }

  function renderMarket() {
    const m = S.market;
    if (!m) return;
    const mine = m.mine.filter((o) => !o.cancelled);
    fill('orders-table', 'orders-empty', mine.map((o) => {
      const tr = document.createElement('tr');
      tr.dataset.order = o.order_id;
      const action = document.createElement('td');
      const b = document.createElement('button');
      b.type = 'button';
      b.textContent = 'Cancel';
      b.dataset.cancelOrder = o.order_id;
      b.setAttribute('aria-label', 'Cancel ' + o.side + ' ' + short(o.order_id));
      b.addEventListener('click', () => cancelOrder(o.order_id, b));
      action.append(b);
      tr.append(cell(short(o.order_id), { title: o.order_id, mono: true }), cell(o.side),
        cell(num(o.bytes), { num: true }), cell(num(o.remaining), { num: true }),
        cell(num(o.price_per_gib), { num: true }), cell(when(o.expires_ms)), action);
      return tr;
    }));
    fill('book-table', 'book-empty', [...m.offers, ...m.bids].map((o) => {
      const tr = document.createElement('tr');
      tr.append(cell(o.side), cell(short(o.owner) + (o.mine ? ' (this node)' : ''), { title: o.owner, mono: true }),
        cell(num(o.remaining), { num: true }), cell(num(o.price_per_gib), { num: true }), cell(when(o.expires_ms)));
      return tr;
    }));
    fill('trades-table', 'trades-empty', m.trades.map((t) => {
      const tr = document.createElement('tr');
      tr.append(cell(short(t.trade_id), { title: t.trade_id, mono: true }), cell(t.role), cell(t.state),
        cell(num(t.bytes), { num: true }), cell(num(t.delivered_bytes), { num: true }),
        cell(num(t.price_per_gib), { num: true }), cell(t.note || ''));
      return tr;
    }));
  }

  function renderReceipts(page) {
    if (page === null) {
      fill('receipts-table', 'receipts-empty', [], 'Receipts are not available on this node (it has no /api/v1/receipts).');
      return;
    }
    fill('receipts-table', 'receipts-empty', page.receipts.map((r) => {
      const tr = document.createElement('tr');
      tr.append(cell(short(r.uploader), { title: r.uploader, mono: true }),
        cell(short(r.downloader), { title: r.downloader, mono: true }), cell(num(r.seq), { num: true }),
        cell(bytes(r.bytes), { num: true }), cell(num(r.credits), { num: true }), cell(when(r.time_ms)));
      return tr;
    }), 'No receipts yet.');
  }

  function renderConflicts(list) {
    if (list === null) {
      fill('conflicts-table', 'conflicts-empty', [], 'Conflicts are not available on this node (it has no /api/v1/conflicts).');
      return;
    }
    fill('conflicts-table', 'conflicts-empty', list.map((c) => {
      const tr = document.createElement('tr');
      const rest = Object.entries(c).filter(([k]) => k !== 'peer')
        .map(([k, v]) => k + ': ' + (typeof v === 'object' ? JSON.stringify(v) : String(v))).join(', ');
      tr.append(cell(short(c.peer), { title: c.peer, mono: true }), cell(rest));
      return tr;
    }), 'No conflicts: every peer has signed consistently.');
  }

  function renderSettings(settings) {
    const form = $('settings-form');
    if (settings === null) {
      form.hidden = true;
      $('settings-empty').hidden = false;
      $('settings-empty').textContent = 'Settings are not available on this node (it has no /api/v1/settings).';
      return;
    }
    $('settings-empty').hidden = true;
    form.hidden = false;
    // Do not overwrite what the user is typing.
    if (form.contains(document.activeElement)) return;
    const put = (id, v) => { $(id).value = v === null || v === undefined ? '' : String(v); };
    put('set-up', settings.upload_bytes_per_s);
    put('set-down', settings.download_bytes_per_s);
    put('set-day', settings.upload_budget_daily);
    put('set-month', settings.upload_budget_monthly);
  }

  // ---- the chart ----

  const SVG = 'http://www.w3.org/2000/svg';
  function pushRate(up, down) {
    S.rates.push({ up: Math.max(0, up), down: Math.max(0, down) });
    while (S.rates.length > CHART_POINTS) S.rates.shift();
    $('rate-up').textContent = rate(Math.round(up));
    $('rate-down').textContent = rate(Math.round(down));
    renderChart();
  }

  function renderChart() {
    const svg = $('chart');
    const w = 600; const h = 160;
    const max = Math.max(1024, ...S.rates.map((r) => Math.max(r.up, r.down)));
    const line = (pick, cls) => {
      const path = document.createElementNS(SVG, 'polyline');
      const offset = CHART_POINTS - S.rates.length;
      const points = S.rates.map((r, i) => {
        const x = ((offset + i) / (CHART_POINTS - 1)) * w;
        const y = h - 4 - (pick(r) / max) * (h - 8);
        return x.toFixed(1) + ',' + y.toFixed(1);
      });
      path.setAttribute('points', points.join(' '));
      path.setAttribute('class', cls);
      return path;
    };
    const grid = [0.25, 0.5, 0.75].map((f) => {
      const l = document.createElementNS(SVG, 'line');
      l.setAttribute('x1', '0'); l.setAttribute('x2', String(w));
      l.setAttribute('y1', String(h * f)); l.setAttribute('y2', String(h * f));
      l.setAttribute('class', 'grid');
      return l;
    });
    svg.replaceChildren(...grid, line((r) => r.down, 'down'), line((r) => r.up, 'up'));
    $('chart-scale').textContent = 'top of the chart: ' + rate(Math.round(max));
  }

  // ---- loading state ----

  async function loadStatus() {
    S.status = await api('GET', '/status');
    renderStatus();
    const t = performance.now();
    const totals = { up: S.status.transfer.bytes_up, down: S.status.transfer.bytes_down, t };
    // Without the event stream, rates come from the change in the totals between polls.
    if (!S.live && S.lastTotals && t > S.lastTotals.t) {
      const dt = (t - S.lastTotals.t) / 1000;
      pushRate((totals.up - S.lastTotals.up) / dt, (totals.down - S.lastTotals.down) / dt);
    }
    S.lastTotals = totals;
  }

  async function loadPeers() {
    S.peers = await api('GET', '/peers');
    const needStanding = S.peers.length > 0 && typeof S.peers[0].credits_sent !== 'number';
    if (needStanding) {
      const ids = S.peers.slice(0, STANDING_LOOKUPS).map((p) => p.peer_id);
      const answers = await Promise.all(ids.map((id) => api('GET', '/standing/' + id).catch(() => null)));
      ids.forEach((id, i) => { if (answers[i]) S.standing.set(id, answers[i]); });
    }
    renderPeers();
  }

  async function loadDownloads() {
    const list = await api('GET', '/downloads');
    S.downloads = new Map(list.map((d) => [d.content_id, d]));
    renderDownloads();
  }

  async function loadContent() {
    S.content = await api('GET', '/content');
    renderContent();
  }

  async function loadMarket() {
    // The book's best 50 of each side: enough for a glance (GET /offers and /bids list all).
    S.market = await api('GET', '/market');
    renderMarket();
  }

  async function loadLedger() {
    renderReceipts(await optional('/receipts?limit=50', 'receipts'));
    renderConflicts(await optional('/conflicts', 'conflicts'));
  }

  async function loadSettings() {
    renderSettings(await optional('/settings', 'settings'));
  }

  function attempt(loader) {
    return loader().catch((e) => {
      if (!S.csrf) return; // logged out meanwhile
      say('feed-state', 'cannot reach the node: ' + e.message, true);
    });
  }

  const FAST = [loadStatus, loadPeers, loadDownloads, loadContent, loadMarket];
  async function refreshAll() {
    await Promise.all([...FAST, loadLedger, loadSettings].map(attempt));
  }

  // Coalesces refreshes that events ask for in a burst.
  const pending = new Map();
  function soon(loader) {
    if (pending.has(loader)) return;
    pending.set(loader, setTimeout(() => { pending.delete(loader); attempt(loader); }, 250));
  }

  // ---- live updates ----

  function every(ms, fn) { S.timers.push(setInterval(fn, ms)); }

  function startPolling(why) {
    S.live = false;
    say('feed-state', 'polling every 2 s' + (why ? ' (' + why + ')' : ''));
    let tick = 0;
    stopTimers();
    every(POLL_MS, () => {
      tick += 1;
      FAST.forEach(attempt);
      if (tick % 5 === 0) { attempt(loadLedger); attempt(loadSettings); }
    });
    // Try the stream again now and then: it may come back (or the node may be upgraded).
    every(SLOW_MS * 3, () => { if (!S.live) probeEvents(); });
  }

  function stopTimers() {
    S.timers.forEach(clearInterval);
    S.timers = [];
  }

  async function probeEvents() {
    // A plain fetch first: EventSource cannot tell "no such route" from a dropped connection.
    const abort = new AbortController();
    let ok = false;
    try {
      const r = await fetch('/api/v1/events', { signal: abort.signal, credentials: 'same-origin', cache: 'no-store' });
      ok = r.ok && (r.headers.get('content-type') || '').startsWith('text/event-stream');
    } catch (_) {
      ok = false;
    }
    abort.abort();
    if (!S.csrf) return;
    if (ok) openEvents(); else if (!S.timers.length) startPolling('no event stream');
  }

  function openEvents() {
    if (S.events) S.events.close();
    const es = new EventSource('/api/v1/events');
    S.events = es;
    const on = (kind, fn) => es.addEventListener(kind, (e) => {
      let data = null;
      try { data = JSON.parse(e.data); } catch (_) { return; }
      fn(data);
    });
    es.onopen = () => {
      S.live = true;
      stopTimers();
      say('feed-state', 'live');
      // A slow refresh still catches what no event reports (standing, uptime).
      every(SLOW_MS, () => { attempt(loadStatus); attempt(loadPeers); });
    };
    es.onerror = () => {
      if (S.events !== es) return;
      es.close();
      S.events = null;
      if (S.csrf) startPolling('event stream lost');
    };
    on('transfer', (d) => {
      pushRate(d.up_bps, d.down_bps);
      if (S.status) {
        S.status.transfer.bytes_up = d.bytes_sent;
        S.status.transfer.bytes_down = d.bytes_received;
        renderStatus();
      }
    });
    on('download', (d) => { S.downloads.set(d.content_id, d); renderDownloads(); });
    on('peer', (p) => {
      const i = S.peers.findIndex((x) => x.peer_id === p.peer_id);
      if (i >= 0) S.peers[i] = p; else S.peers.push(p);
      renderPeers();
      soon(loadStatus);
    });
    on('receipt', () => { soon(loadLedger); soon(loadPeers); soon(loadStatus); });
    on('order', () => soon(loadMarket));
    on('trade', () => soon(loadMarket));
    on('conflict', () => { soon(loadLedger); soon(loadStatus); soon(loadPeers); });
    on('reset', () => refreshAll());
  }

  // ---- actions ----

  function numberOrNull(id) {
    const v = $(id).value.trim();
    return v === '' ? null : Number(v);
  }

  function handle(formId, msgId, action) {
    const form = $(formId);
    form.addEventListener('submit', async (e) => {
      e.preventDefault();
      const button = form.querySelector('button[type=submit]');
      button.disabled = true;
      say(msgId, 'working…');
      try {
        say(msgId, await action());
      } catch (err) {
        say(msgId, err.noRoute ? 'not available on this node' : err.message, true);
      } finally {
        button.disabled = false;
      }
    });
  }

  async function cancelDownload(cid, button) {
    button.disabled = true;
    try {
      const d = await api('DELETE', '/downloads/' + cid);
      if (d && d.content_id) S.downloads.set(d.content_id, d);
      renderDownloads();
    } catch (e) {
      button.disabled = false;
      say('get-msg', e.noRoute ? 'Cancelling downloads is not available on this node.' : e.message, true);
    }
  }

  async function cancelOrder(id, button) {
    button.disabled = true;
    try {
      await api('DELETE', '/orders/' + id);
      say('orders-msg', 'Order ' + short(id) + ' cancelled.');
      await loadMarket();
    } catch (e) {
      button.disabled = false;
      say('orders-msg', e.message, true);
    }
  }

  function wireForms() {
    handle('connect-form', 'connect-msg', async () => {
      const p = await api('POST', '/peers', { peer: $('connect-peer').value.trim() });
      await loadPeers();
      return 'Connected to ' + short(p.peer_id) + '.';
    });
    handle('share-form', 'share-msg', async () => {
      const c = await api('POST', '/content', { path: $('share-path').value.trim() });
      await loadContent();
      return 'Shared ' + c.name + ' as ' + c.content_id;
    });
    handle('get-form', 'get-msg', async () => {
      const d = await api('POST', '/downloads', { content_id: $('get-cid').value.trim(), out: $('get-out').value.trim() });
      S.downloads.set(d.content_id, d);
      renderDownloads();
      return 'Download of ' + short(d.content_id) + ' started.';
    });
    handle('offer-form', 'offer-msg', async () => {
      const o = await api('POST', '/offers', {
        bytes: numberOrNull('offer-bytes'), price_per_gib: numberOrNull('offer-price'),
        max_rate: numberOrNull('offer-rate'), ttl_s: numberOrNull('offer-ttl'),
      });
      await loadMarket();
      return 'Offer ' + short(o.order_id) + ' posted.';
    });
    handle('bid-form', 'bid-msg', async () => {
      const cid = $('bid-cid').value.trim();
      const o = await api('POST', '/bids', {
        bytes: numberOrNull('bid-bytes'), max_price_per_gib: numberOrNull('bid-price'),
        content_id: cid === '' ? null : cid, ttl_s: numberOrNull('bid-ttl'),
      });
      await loadMarket();
      return 'Bid ' + short(o.order_id) + ' posted.';
    });
    handle('settings-form', 'settings-msg', async () => {
      const s = await api('PUT', '/settings', {
        upload_bytes_per_s: numberOrNull('set-up'), download_bytes_per_s: numberOrNull('set-down'),
        upload_budget_daily: numberOrNull('set-day'), upload_budget_monthly: numberOrNull('set-month'),
      });
      document.activeElement.blur();
      renderSettings(s);
      return 'Saved.';
    });
    for (const b of $('peers-table').querySelectorAll('thead button')) {
      b.addEventListener('click', () => {
        const key = b.dataset.sort;
        S.sort = { key, dir: S.sort.key === key ? -S.sort.dir : -1 };
        renderPeers();
      });
    }
    $('logout').addEventListener('click', async () => {
      try { await api('DELETE', '/session'); } catch (_) { /* the session may be gone already */ }
      loggedOut('Logged out.');
    });
    $('login-form').addEventListener('submit', async (e) => {
      e.preventDefault();
      const key = $('login-key').value.trim();
      $('login-key').value = '';
      await login(key);
    });
  }

  // ---- session ----

  function loggedOut(message) {
    S.csrf = null;
    stopTimers();
    if (S.events) { S.events.close(); S.events = null; }
    S.live = false;
    $('main').hidden = true;
    $('logout').hidden = true;
    $('login').hidden = false;
    say('feed-state', 'logged out');
    say('login-msg', message || '');
    document.body.dataset.state = 'login';
  }

  async function start(csrf) {
    S.csrf = csrf;
    $('login').hidden = true;
    $('main').hidden = false;
    $('logout').hidden = false;
    say('login-msg', '');
    await refreshAll();
    document.body.dataset.state = 'ready';
    await probeEvents();
  }

  async function login(key) {
    try {
      const s = await api('POST', '/session', { api_key: key });
      await start(s.csrf_token);
    } catch (e) {
      loggedOut(e.status === 401 ? 'Wrong API key.' : 'Cannot log in: ' + e.message);
    }
  }

  async function boot() {
    wireForms();
    const match = /^#key=([^&]*)/.exec(location.hash);
    if (match) {
      // Out of the address bar and history before anything else happens.
      history.replaceState(null, '', location.pathname + location.search);
      await login(decodeURIComponent(match[1]));
      return;
    }
    try {
      const s = await api('GET', '/session');
      await start(s.csrf_token);
    } catch (_) {
      loggedOut('');
    }
  }

  boot();
})();
