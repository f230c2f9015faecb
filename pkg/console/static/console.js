// iotfabric console. Reads the REST API (/v1) and follows its watch streams
// (server-sent events). Every value shown goes through textContent or
// setAttribute: nothing from the API is ever parsed as HTML.
'use strict';
(() => {
  const cfg = { apiPrefix: '/v1', graphite: false, sensorTargets: '', alertAfterSeconds: 300 };
  const S = {
    gateways: new Map(), networks: new Map(), peers: [], peersError: '',
    summary: null, events: [], maxEvents: 500, ready: false,
    // Endpoints of the page shown (network or gateway), by id; routes of the network shown.
    view: { key: '', endpoints: new Map(), more: false, routes: new Map(), routesSynced: false, error: '' },
    live: {}, pendingRevs: [], ipam: new Map(), sensor: { target: '', series: null, error: '', at: 0 },
  };
  const enumNames = {
    gw: ['unspecified', 'registered', 'up', 'down'],
    ep: ['unspecified', 'pending', 'active'],
    ev: ['unspecified', 'put', 'delete', 'synced'],
    enc: ['unspecified', 'mpls-o-udp', 'mpls-o-gre', 'vxlan'],
    origin: ['unspecified', 'local', 'imported'],
    reason: ['unspecified', 'stream-opened', 'registered', 'stream-ended', 'stream-closed', 'send-failed', 'controllers-gone'],
  };
  const prefixes = { gw: 'GATEWAY_STATE_', ep: 'ENDPOINT_STATE_', ev: 'EVENT_TYPE_', enc: 'ENCAPSULATION_', origin: 'ROUTE_ORIGIN_', reason: 'GATEWAY_LINK_REASON_' };

  // enumName turns a protojson enum (name or number) into a short lower-case word.
  function enumName(kind, v) {
    if (v === undefined || v === null) return 'unspecified';
    if (typeof v === 'number') return enumNames[kind][v] || String(v);
    const s = String(v);
    const p = prefixes[kind];
    return (s.startsWith(p) ? s.slice(p.length) : s).toLowerCase().replace(/_/g, '-');
  }

  // ---- DOM ----
  function add(el, kids) {
    for (const k of kids) {
      if (k === null || k === undefined || k === false) continue;
      if (Array.isArray(k)) add(el, k);
      else if (k instanceof Node) el.appendChild(k);
      else el.appendChild(document.createTextNode(String(k)));
    }
    return el;
  }
  function setAttrs(el, attrs) {
    for (const [k, v] of Object.entries(attrs || {})) {
      if (v === undefined || v === null || v === false) continue;
      if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
      else el.setAttribute(k, String(v));
    }
  }
  function h(tag, attrs, ...kids) {
    const el = document.createElement(tag);
    setAttrs(el, attrs);
    return add(el, kids);
  }
  const SVGNS = 'http://www.w3.org/2000/svg';
  function s(tag, attrs, ...kids) {
    const el = document.createElementNS(SVGNS, tag);
    setAttrs(el, attrs);
    return add(el, kids);
  }
  // fill replaces the children of el (null and false kids are left out).
  function fill(el, ...kids) {
    el.replaceChildren();
    return add(el, kids);
  }
  function table(headers, rows, cls) {
    return h('div', { class: 'table-wrap' }, h('table', { class: cls },
      h('thead', null, h('tr', null, headers.map(x => h('th', { scope: 'col', class: x.cls }, x.t || x)))),
      h('tbody', null, rows)));
  }
  const glyphs = { up: '✔', established: '✔', active: '✔', down: '✖', registered: '◌', pending: '◌' };
  function stateLabel(word) {
    return h('span', { class: 'st st-' + (glyphs[word] ? word : 'warn') }, (glyphs[word] || '?') + ' ' + word);
  }
  function link(href, text) { return h('a', { href }, text); }
  function gwLink(name) { return link('#/gateways/' + encodeURIComponent(name), name); }
  function netLink(name) { return link('#/networks/' + encodeURIComponent(name), name); }
  function ago(ts) {
    if (!ts) return 'never';
    const t = Date.parse(ts);
    if (isNaN(t)) return String(ts);
    const d = Math.max(0, (Date.now() - t) / 1000);
    if (d < 60) return Math.round(d) + ' s ago';
    if (d < 3600) return Math.round(d / 60) + ' min ago';
    if (d < 86400) return Math.round(d / 3600) + ' h ago';
    return Math.round(d / 86400) + ' d ago';
  }
  function when(ts) { return h('time', { datetime: ts || '', title: ts || '' }, ago(ts)); }
  function duration(sec) {
    sec = Number(sec) || 0;
    if (sec <= 0) return '—';
    const d = Math.floor(sec / 86400), hh = Math.floor(sec % 86400 / 3600), m = Math.floor(sec % 3600 / 60);
    return (d ? d + 'd ' : '') + (d || hh ? hh + 'h ' : '') + m + 'm ' + Math.floor(sec % 60) + 's';
  }
  function list(v) { return (v || []).join(', '); }

  // ---- API ----
  async function getJSON(path) {
    const r = await fetch(path, { headers: { Accept: 'application/json' } });
    let body = null;
    try { body = await r.json(); } catch (e) { /* not JSON */ }
    if (!r.ok) {
      const msg = body && body.message ? (body.codeName ? body.codeName + ': ' : '') + body.message : 'HTTP ' + r.status;
      throw new Error(msg);
    }
    return body;
  }
  function api(path) { return cfg.apiPrefix + path; }
  function q(path, params) {
    const u = new URLSearchParams();
    for (const [k, v] of Object.entries(params)) if (v !== '' && v !== undefined && v !== null) u.set(k, v);
    const qs = u.toString();
    return qs ? path + (path.includes('?') ? '&' : '?') + qs : path;
  }
  async function listAll(path, key, pageSize) {
    const items = [];
    let tok = '', rev = 0;
    do {
      const b = await getJSON(q(path, { page_size: pageSize, page_token: tok }));
      for (const x of b[key] || []) items.push(x);
      if (!rev && b.revision) rev = Number(b.revision);
      tok = b.nextPageToken || '';
    } while (tok);
    return { items, revision: rev };
  }

  // ---- live state ----
  function setLive(on) {
    const el = document.getElementById('live');
    el.textContent = on ? 'live' : 'reconnecting';
    el.className = 'live ' + (on ? 'on' : 'off');
  }
  function logEvent(kind, type, name, detail) {
    S.events.unshift({ t: new Date(), kind, type, name, detail: detail || '' });
    if (S.events.length > S.maxEvents) S.events.length = S.maxEvents;
  }

  // Apply one event of each watch to the state.
  const apply = {
    gateways(ev) {
      const t = enumName('ev', ev.type), g = ev.gateway || {};
      if (t === 'put') {
        const old = S.gateways.get(g.name);
        const was = old ? enumName('gw', old.state) : 'new', now = enumName('gw', g.state);
        S.gateways.set(g.name, g);
        logEvent('gateway', t, g.name, was === now ? 'state ' + now : was + ' → ' + now);
      } else if (t === 'delete') {
        S.gateways.delete(g.name);
        logEvent('gateway', t, g.name);
      }
      // The gateways' counts come from S.gateways: the summary stays as it is.
    },
    networks(ev) {
      const t = enumName('ev', ev.type), n = ev.network || {};
      if (t === 'put') S.networks.set(n.name, n);
      else if (t === 'delete') S.networks.delete(n.name);
      else return;
      logEvent('network', t, n.name, (n.subnets || []).join(', '));
      refreshSummarySoon();
    },
    endpoints(ev) {
      const t = enumName('ev', ev.type), e = ev.endpoint || {};
      const v = S.view;
      if (t === 'put') {
        if (viewHas(e)) v.endpoints.set(e.id, e);
        logEvent('endpoint', t, e.id, [e.network, e.gateway, list(e.addresses), enumName('ep', e.state)].join(' · '));
      } else if (t === 'delete') {
        v.endpoints.delete(e.id);
        logEvent('endpoint', t, e.id);
      }
      refreshSummarySoon();
    },
    routes(ev) {
      const v = S.view;
      const t = enumName('ev', ev.type), r = ev.route || {};
      if (t === 'synced') { v.routesSynced = true; return; }
      const key = r.prefix + ' ' + r.routeDistinguisher;
      if (t === 'put') v.routes.set(key, r);
      else if (t === 'delete') v.routes.delete(key);
      if (v.routesSynced) logEvent('route', t, r.prefix, [r.network, r.routeDistinguisher, 'label ' + (r.label || 0)].join(' · '));
    },
  };

  // Live keeps the state current: it lists (gateways, networks, the summary
  // with the endpoints' revision, the endpoints of the page), then follows
  // the watches from those revisions through one stream (/ui/api/watch); on
  // any error it lists again and starts over.
  const Live = {
    rev: { gateways: 0, networks: 0, endpoints: 0 }, es: null, delay: 500, routes: '',
    async sync() {
      const [gws, nets, , viewRev] = await Promise.all([listAll(api('/gateways'), 'gateways', 5000), listAll(api('/networks'), 'networks', 5000), refreshSummary(), loadViewEndpoints()]);
      S.gateways = new Map(gws.items.map(g => [g.name, g]));
      S.networks = new Map(nets.items.map(n => [n.name, n]));
      if (!S.summary) throw new Error(S.summaryError || 'no summary');
      // The endpoints are followed from the older of the two listings (the
      // summary's and the page's, read in parallel): an endpoint created
      // between them reaches the page through the watch.
      let epRev = Number(S.summary.endpointRevision);
      if (viewRev > 0 && (epRev === 0 || viewRev < epRev)) epRev = viewRev;
      this.rev = { gateways: gws.revision, networks: nets.revision, endpoints: epRev };
    },
    async start() {
      try {
        await this.sync();
        this.open();
      } catch (e) {
        this.fail();
      }
    },
    // open (re)opens the stream from the revisions seen, with the routes of the page's network.
    open() {
      if (this.es) this.es.close();
      S.view.routes = new Map(); S.view.routesSynced = false;
      const es = new EventSource(q('/ui/api/watch', { ...this.rev, routes: this.routes }));
      this.es = es;
      es.onopen = () => { this.delay = 500; setLive(true); };
      for (const kind of Object.keys(apply)) {
        es.addEventListener(kind, (m) => {
          if (this.es !== es) return;
          let ev;
          try { ev = JSON.parse(m.data); } catch (e) { return; }
          if (ev.revision && kind in this.rev) {
            const r = Number(ev.revision);
            if (r > this.rev[kind]) this.rev[kind] = r;
            S.pendingRevs.push(r);
          }
          apply[kind](ev);
          schedule();
        });
      }
      es.addEventListener('fail', () => this.fail());
      es.onerror = () => this.fail();
    },
    fail() {
      if (this.es) this.es.close();
      this.es = null;
      setLive(false);
      setTimeout(() => this.start(), this.delay);
      this.delay = Math.min(this.delay * 2, 10000);
    },
    // follow changes the network whose routes the stream carries.
    follow(network) {
      if (this.routes === network) return;
      this.routes = network;
      if (this.es) this.open();
    },
  };

  function viewHas(e) {
    const [kind, name] = S.view.key.split(':');
    return (kind === 'network' && e.network === name) || (kind === 'gateway' && e.gateway === name);
  }
  // loadViewEndpoints lists the endpoints of the page's network or gateway
  // and returns the listing's revision (0: none).
  async function loadViewEndpoints() {
    const v = S.view;
    const [kind, name] = v.key.split(':');
    if (kind !== 'network' && kind !== 'gateway') return 0;
    let rev = 0;
    try {
      const b = await getJSON(q(api('/endpoints'), { [kind]: name, page_size: 500 }));
      if (S.view !== v) return 0;
      v.endpoints = new Map((b.endpoints || []).map(e => [e.id, e]));
      v.more = !!b.nextPageToken;
      v.error = '';
      rev = Number(b.revision || 0);
    } catch (e) {
      v.error = e.message;
    }
    schedule();
    return rev;
  }

  let summaryTimer = null, summaryBusy = false;
  async function refreshSummary() {
    summaryBusy = true;
    try { S.summary = await getJSON('/ui/api/summary'); S.summaryError = ''; } catch (e) { S.summaryError = e.message; }
    summaryBusy = false;
    schedule();
  }
  function refreshSummarySoon() {
    if (summaryTimer) return;
    summaryTimer = setTimeout(async () => {
      if (summaryBusy) { summaryTimer = null; refreshSummarySoon(); return; }
      await refreshSummary();
      summaryTimer = null;
    }, 1000);
  }

  async function pollPeers() {
    try {
      const { items } = await listAll(api('/peers'), 'peers', 5000);
      const before = new Map(S.peers.map(p => [(p.peer || {}).address, p.state]));
      for (const p of items) {
        const a = (p.peer || {}).address, was = before.get(a);
        if (was !== undefined && was !== p.state) logEvent('peer', 'change', a, was + ' → ' + p.state);
      }
      S.peers = items; S.peersError = '';
    } catch (e) { S.peersError = e.message; }
    schedule();
  }

  // ---- rendering ----
  let page = null, frame = 0;
  function schedule() {
    if (frame) return;
    frame = requestAnimationFrame(render);
  }
  function render() {
    frame = 0;
    if (page && page.update) page.update();
    // One mark per change that is now on the page; the benchmark reads them.
    for (const r of S.pendingRevs) performance.mark('console-rev-' + r);
    S.pendingRevs = [];
    if (performance.getEntriesByType('mark').length > 2000) performance.clearMarks();
  }

  function gatewayAlerts() {
    const out = [];
    const limit = cfg.alertAfterSeconds * 1000;
    for (const g of S.gateways.values()) {
      const st = enumName('gw', g.state);
      if (st === 'up') continue;
      const seen = g.lastSeen ? Date.parse(g.lastSeen) : 0;
      const age = seen ? Date.now() - seen : Infinity;
      if (age < limit) continue;
      out.push({ g, st, text: st === 'down' ? (g.lastSeen ? 'offline since ' + ago(g.lastSeen) : 'offline, never seen') : 'headless: its agent has not reported (last seen ' + ago(g.lastSeen) + ')' });
    }
    return out;
  }

  function gatewayTable(rows, limit, counts) {
    const order = { down: 0, registered: 1, unspecified: 2, up: 3 };
    rows.sort((a, b) => (order[enumName('gw', a.state)] - order[enumName('gw', b.state)]) || (a.name < b.name ? -1 : 1));
    const shown = rows.slice(0, limit);
    return [table(['State', 'Gateway', { t: 'Underlay', cls: 'hide-narrow' }, 'Last seen', 'Endpoints'],
      shown.map(g => h('tr', { 'data-gateway': g.name },
        h('td', null, stateLabel(enumName('gw', g.state))),
        h('td', null, gwLink(g.name)),
        h('td', { class: 'mono hide-narrow' }, g.underlayAddress || ''),
        h('td', null, when(g.lastSeen)),
        h('td', null, counts ? String(counts[g.name] || 0) : '')))),
    rows.length > limit ? h('p', { class: 'muted' }, `${rows.length - limit} more not shown; narrow the filter.`) : null];
  }

  function filterBox(state, key, label, onChange) {
    const id = 'filter-' + key;
    return h('div', { class: 'toolbar' }, h('label', { for: id }, label),
      h('input', { id, type: 'search', value: state[key] || '', autocomplete: 'off',
        oninput: (e) => { state[key] = e.target.value; onChange(); } }));
  }

  const pages = {};
  let interactiveMarked = false;

  pages.overview = () => {
    const st = { filter: '' };
    const cards = h('div', { class: 'cards', id: 'cards' });
    const alerts = h('ul', { class: 'alerts', id: 'alerts' });
    const gws = h('div', { id: 'overview-gateways' });
    const err = h('p', { class: 'error', role: 'alert' });
    const root = h('div', null, h('h1', null, 'Overview'), err, cards, h('h2', null, 'Alerts'), alerts,
      h('h2', null, 'Gateways'), filterBox(st, 'filter', 'Filter gateways', () => drawGateways()), gws);
    function drawGateways() {
      const f = st.filter.toLowerCase();
      const rows = [...S.gateways.values()].filter(g => !f || g.name.toLowerCase().includes(f) || enumName('gw', g.state).includes(f));
      fill(gws, ...gatewayTable(rows, 100, S.summary && S.summary.gatewayEndpoints));
    }
    function update() {
      const sm = S.summary;
      err.textContent = S.summaryError || '';
      const states = { up: 0, down: 0, registered: 0 };
      for (const g of S.gateways.values()) { const w = enumName('gw', g.state); states[w] = (states[w] || 0) + 1; }
      const peersUp = S.peers.filter(p => p.state === 'established').length;
      const card = (n, l, id) => h('div', { class: 'card', id }, h('div', { class: 'n' }, String(n)), h('div', { class: 'l' }, l));
      fill(cards,
        card(S.gateways.size, 'gateways', 'card-gateways'),
        card(states.up, '✔ online', 'card-up'),
        card(states.down, '✖ offline', 'card-down'),
        card(states.registered, '◌ not yet reported', 'card-registered'),
        card(S.networks.size, 'networks', 'card-networks'),
        card(sm ? sm.endpoints : '…', 'endpoints' + (sm ? ` (${(sm.endpointStates || {}).active || 0} active)` : ''), 'card-endpoints'),
        S.peersError ? card('—', 'BGP sessions: ' + S.peersError, 'card-peers') : card(`${peersUp}/${S.peers.length}`, 'BGP sessions established', 'card-peers'));
      const items = [];
      for (const a of gatewayAlerts()) items.push(h('li', null, '✖ gateway ', gwLink(a.g.name), ' ' + a.text));
      for (const p of S.peers) if (p.state !== 'established') items.push(h('li', null, '✖ BGP peer ' + (p.peer || {}).address + ' is ' + p.state + (p.reason ? ': ' + p.reason : '')));
      for (const n of S.networks.values()) for (const c of n.conditions || []) items.push(h('li', null, '⚠ network ', netLink(n.name), ` ${c.type}: ${c.message}`));
      const shown = items.slice(0, 50);
      if (items.length > 50) shown.push(h('li', null, `… and ${items.length - 50} more`));
      fill(alerts, ...(shown.length ? shown : [h('li', { class: 'none' }, '✔ no alerts')]));
      drawGateways();
      if (!interactiveMarked && S.ready && (sm || S.summaryError)) {
        interactiveMarked = true;
        performance.mark('console-interactive');
      }
    }
    return { root, update };
  };

  pages.gateways = () => {
    const st = { filter: '' };
    const body = h('div');
    const root = h('div', null, h('h1', null, 'Gateways'), filterBox(st, 'filter', 'Filter gateways', () => update()), body);
    function update() {
      const f = st.filter.toLowerCase();
      const rows = [...S.gateways.values()].filter(g => !f || g.name.toLowerCase().includes(f) || enumName('gw', g.state).includes(f) || (g.underlayAddress || '').includes(f));
      fill(body, ...gatewayTable(rows, 500, S.summary && S.summary.gatewayEndpoints));
    }
    return { root, update };
  };

  const knownGatewayFields = new Set(['name', 'state', 'underlayAddress', 'encapsulations', 'lastSeen', 'revision', 'conditions',
    'architecture', 'agentVersion', 'kernelFeatures']);
  function valueText(v) { return typeof v === 'object' ? (Array.isArray(v) && v.every(x => typeof x !== 'object') ? v.join(', ') : JSON.stringify(v)) : String(v); }

  function endpointTable(eps, withNetwork) {
    const rows = [...eps].sort((a, b) => a.id < b.id ? -1 : 1);
    return table(['Endpoint', withNetwork ? 'Network' : 'Gateway', 'Addresses', { t: 'MAC', cls: 'hide-narrow' }, 'Label', 'State'],
      rows.map(e => h('tr', { 'data-endpoint': e.id },
        h('td', { class: 'mono' }, e.id, e.pod ? h('div', { class: 'muted' }, `pod ${e.pod.namespace}/${e.pod.name}`) : null),
        h('td', null, withNetwork ? netLink(e.network) : gwLink(e.gateway)),
        h('td', { class: 'mono' }, list(e.addresses)),
        h('td', { class: 'mono hide-narrow' }, e.mac || ''),
        h('td', null, String(e.label || '—')),
        h('td', null, stateLabel(enumName('ep', e.state)), (e.conditions || []).map(c => h('div', { class: 'st-warn' }, `⚠ ${c.type}: ${c.message}`))))));
  }

  const linkReasons = {
    registered: 'its agent registered',
    'stream-opened': 'route stream opened',
    'stream-ended': 'route stream ended by the agent or its link (agent stopped, connection reset, keepalive timeout)',
    'stream-closed': 'route stream closed by the controller (replaced, agent too slow, or controller stopping)',
    'send-failed': 'sending on the route stream failed',
    'controllers-gone': 'the controllers streaming to it are gone',
  };
  function linkReason(v) { const w = enumName('reason', v); return linkReasons[w] || w; }

  function tunnelTable(ts) {
    return table(['Remote', 'Behind', 'Encapsulation', { t: 'Offered', cls: 'hide-narrow' }, 'Routes', { t: 'Labels', cls: 'hide-narrow' }, { t: 'Networks', cls: 'hide-narrow' }],
      ts.map(t => h('tr', { 'data-tunnel': t.remote },
        h('td', { class: 'mono' }, t.remote),
        h('td', null, t.remoteGateway ? ['gateway ', gwLink(t.remoteGateway)] : t.peer ? 'BGP peer ' + t.peer : '—'),
        h('td', null, enumName('enc', t.encapsulation) === 'unspecified' ? h('span', { class: 'st st-warn' }, '⚠ none in common') : enumName('enc', t.encapsulation)),
        h('td', { class: 'hide-narrow' }, (t.offered || []).map(e => enumName('enc', e)).join(', ')),
        h('td', null, String(t.routes || 0)), h('td', { class: 'hide-narrow' }, String(t.labels || 0)),
        h('td', { class: 'hide-narrow' }, (t.networks || []).map((n, i) => [i ? ', ' : '', netLink(n)])))));
  }

  function linkHistoryTable(evs) {
    return table(['Time', 'State', 'Reason', { t: 'Detail', cls: 'hide-narrow' }],
      evs.map(e => h('tr', { 'data-link-state': enumName('gw', e.state) },
        h('td', null, h('time', { datetime: e.time || '' }, e.time ? new Date(e.time).toLocaleString() : ''), ' ', h('span', { class: 'muted' }, '(' + ago(e.time) + ')')),
        h('td', null, stateLabel(enumName('gw', e.state))),
        h('td', null, linkReason(e.reason)),
        h('td', { class: 'mono hide-narrow' }, e.detail || ''))));
  }

  pages.gateway = (name) => {
    S.view = { key: 'gateway:' + name, endpoints: new Map(), more: false, routes: new Map(), error: '' };
    loadViewEndpoints();
    const info = h('div'), eps = h('div'), tun = h('div', { id: 'gateway-tunnels' }), hist = h('div', { id: 'gateway-links' });
    const root = h('div', null, h('h1', null, 'Gateway ', h('span', { class: 'mono' }, name)), info,
      h('h2', null, 'Endpoints'), eps, h('h2', null, 'Tunnels'), tun, h('h2', null, 'Link history'), hist);
    // The tunnels and the link history (GET /v1/gateways/{name}/links):
    // loaded on opening, after each change of the gateway, and every 15 s.
    const ln = { data: null, error: '', timer: 0, seen: S.events.length ? S.events[0] : null };
    async function loadLinks() {
      try {
        const b = await getJSON(api('/gateways/' + encodeURIComponent(name) + '/links'));
        if (page !== self) return;
        ln.data = b; ln.error = '';
      } catch (e) { ln.error = e.message; }
      schedule();
    }
    function loadLinksSoon() {
      clearTimeout(ln.timer);
      ln.timer = setTimeout(loadLinks, 300);
    }
    const poll = setInterval(loadLinks, 15000);
    function update() {
      // A change of this gateway since the last draw: its links changed too.
      if (S.events.length && S.events[0] !== ln.seen) {
        const fresh = [];
        for (const e of S.events) { if (e === ln.seen) break; fresh.push(e); }
        ln.seen = S.events[0];
        if (fresh.some(e => e.kind === 'gateway' && e.name === name)) loadLinksSoon();
      }
      const g = S.gateways.get(name);
      if (!g) { fill(info, h('p', { class: 'error' }, 'No such gateway (or not loaded yet).')); } else {
        const rows = [['State', stateLabel(enumName('gw', g.state))], ['Last seen', h('span', null, when(g.lastSeen), ' ', h('span', { class: 'muted' }, g.lastSeen || ''))],
          ['Underlay address', g.underlayAddress || ''], ['Encapsulations', (g.encapsulations || []).map(e => enumName('enc', e)).join(', ') || 'default'],
          ['Revision', g.revision || ''],
          // What the agent said of itself at its last registration.
          ['Architecture', g.architecture || '—'], ['Agent version', g.agentVersion || '—'], ['Kernel features', list(g.kernelFeatures) || '—']];
        // Whatever else the API's Gateway carries (agent, kernel features...), as it comes.
        for (const [k, v] of Object.entries(g)) {
          if (knownGatewayFields.has(k) || v === null || v === '' || (Array.isArray(v) && !v.length)) continue;
          rows.push([k, valueText(v)]);
        }
        for (const c of g.conditions || []) rows.push(['Condition', `⚠ ${c.type}: ${c.message}`]);
        fill(info, h('dl', { class: 'kv' }, rows.map(([k, v]) => [h('dt', null, k), h('dd', null, v)])));
      }
      const v = S.view;
      fill(eps, v.error ? h('p', { class: 'error' }, v.error) : endpointTable(v.endpoints.values(), true),
        v.more ? h('p', { class: 'muted' }, 'Only the first 500 endpoints are listed.') : null);
      const d = ln.data;
      if (ln.error) {
        fill(tun, h('p', { class: 'error' }, ln.error));
        fill(hist, h('p', { class: 'error' }, ln.error));
      } else if (!d) {
        fill(tun, h('p', { class: 'muted' }, 'Loading…'));
        fill(hist, h('p', { class: 'muted' }, 'Loading…'));
      } else {
        const ts = d.tunnels || [], evs = d.history || [];
        fill(tun, ts.length ? tunnelTable(ts) : h('p', { class: 'muted' }, 'No tunnels: the gateway receives no route of another gateway or edge router.'));
        fill(hist, h('p', { class: 'muted' }, `As controller ${d.controller || '?'} saw it since it started: ${d.historyTotal || 0} transitions` +
            (Number(d.historyTotal || 0) > evs.length ? `, the last ${evs.length} shown` : '') + '.'),
          evs.length ? linkHistoryTable(evs) : null);
      }
    }
    const self = { root, update, leave: () => { clearInterval(poll); clearTimeout(ln.timer); } };
    loadLinks();
    return self;
  };

  pages.networks = () => {
    const body = h('div');
    const root = h('div', null, h('h1', null, 'Networks'), body);
    function update() {
      const counts = (S.summary && S.summary.networkEndpoints) || {};
      const rows = [...S.networks.values()].sort((a, b) => a.name < b.name ? -1 : 1);
      fill(body, rows.length ? table(['Network', 'Id', 'Subnets', { t: 'Route targets', cls: 'hide-narrow' }, 'Endpoints', 'Conditions'],
        rows.map(n => h('tr', { 'data-network': n.name },
          h('td', null, netLink(n.name)), h('td', null, String(n.id || '')), h('td', { class: 'mono' }, list(n.subnets)),
          h('td', { class: 'mono hide-narrow' }, [n.autoRouteTarget, ...(n.importRouteTargets || []).map(x => 'import ' + x), ...(n.exportRouteTargets || []).map(x => 'export ' + x)].filter(Boolean).join(', ')),
          h('td', null, String(counts[n.name] || 0)),
          h('td', null, (n.conditions || []).map(c => h('div', { class: 'st-warn' }, `⚠ ${c.type}: ${c.message}`)))))) : h('p', { class: 'muted' }, 'No networks.'));
    }
    return { root, update };
  };

  pages.network = (name) => {
    S.view = { key: 'network:' + name, endpoints: new Map(), more: false, routes: new Map(), routesSynced: false, error: '' };
    loadViewEndpoints();
    Live.follow(name);
    const info = h('div'), eps = h('div'), routes = h('div');
    const root = h('div', null, h('h1', null, 'Network ', h('span', { class: 'mono', id: 'network-name' }, name)), info,
      h('h2', null, 'Endpoints'), eps, h('h2', null, 'Routes'), routes);
    function update() {
      const n = S.networks.get(name);
      fill(info, !n ? h('p', { class: 'error' }, 'No such network (or not loaded yet).') : h('dl', { class: 'kv' },
        [['Id', n.id], ['Subnets', list(n.subnets)], ['Route target', n.autoRouteTarget], ['Imports', list(n.importRouteTargets) || '—'],
          ['Exports', list(n.exportRouteTargets) || '—'], ['Encapsulations', (n.encapsulations || []).map(e => enumName('enc', e)).join(', ') || 'default'],
          ...(n.conditions || []).map(c => ['Condition', `⚠ ${c.type}: ${c.message}`])].map(([k, v]) => [h('dt', null, k), h('dd', null, String(v ?? ''))])));
      const v = S.view;
      fill(eps, v.error ? h('p', { class: 'error' }, v.error) : endpointTable(v.endpoints.values(), false),
        v.more ? h('p', { class: 'muted' }, 'Only the first 500 endpoints are listed.') : null);
      const rs = [...v.routes.values()].sort((a, b) => a.prefix < b.prefix ? -1 : 1);
      fill(routes, table(['Prefix', 'RD', 'Label', { t: 'Next hop', cls: 'hide-narrow' }, 'Route targets', 'Source'],
        rs.map(r => h('tr', { 'data-route': r.prefix },
          h('td', { class: 'mono' }, r.prefix), h('td', { class: 'mono' }, r.routeDistinguisher || ''), h('td', null, String(r.label || '')),
          h('td', { class: 'mono hide-narrow' }, r.nextHop || ''), h('td', { class: 'mono' }, list(r.routeTargets)),
          h('td', null, enumName('origin', r.origin) === 'imported' ? 'peer ' + (r.peer || '?') : 'endpoint ' + (r.endpoint || '?'))))),
      v.routesSynced ? null : h('p', { class: 'muted' }, 'Loading routes…'));
    }
    return { root, update, leave: () => Live.follow('') };
  };

  pages.peers = () => {
    const body = h('div');
    const root = h('div', null, h('h1', null, 'BGP peers'), body);
    function update() {
      fill(body, S.peersError ? h('p', { class: 'error' }, S.peersError) : null,
        S.peers.length ? table(['Peer', 'ASN', 'State', 'Uptime', 'Prefixes in', 'Prefixes out', { t: 'Limit', cls: 'hide-narrow' }, { t: 'Source', cls: 'hide-narrow' }],
          S.peers.map(p => h('tr', { 'data-peer': (p.peer || {}).address },
            h('td', { class: 'mono' }, (p.peer || {}).address), h('td', null, String((p.peer || {}).asn || '')),
            h('td', null, stateLabel(p.state || 'unknown'), p.reason ? h('div', { class: 'muted' }, p.reason) : null),
            h('td', null, duration(p.uptimeSeconds)), h('td', null, String(p.prefixesReceived || 0)), h('td', null, String(p.prefixesSent || 0)),
            h('td', { class: 'hide-narrow' }, String(p.maxPrefixes || '')), h('td', { class: 'hide-narrow' }, p.source || ''))))
          : h('p', { class: 'muted' }, 'No BGP peers.'));
    }
    return { root, update };
  };

  pages.events = () => {
    const st = { filter: '' };
    const body = h('div');
    const root = h('div', null, h('h1', null, 'Events'),
      h('p', { class: 'muted' }, `Changes seen by this page since it was opened (the last ${S.maxEvents}).`),
      filterBox(st, 'filter', 'Filter events', () => update()), body);
    function update() {
      const f = st.filter.toLowerCase();
      const rows = S.events.filter(e => !f || (e.kind + ' ' + e.name + ' ' + e.detail).toLowerCase().includes(f));
      fill(body, rows.length ? table(['Time', 'Kind', 'Change', 'Object', 'Detail'], rows.map(e => h('tr', null,
        h('td', null, e.t.toLocaleTimeString()), h('td', null, e.kind), h('td', null, e.type),
        h('td', { class: 'mono' }, e.kind === 'gateway' ? gwLink(e.name) : e.kind === 'network' ? netLink(e.name) : e.name), h('td', null, e.detail))))
        : h('p', { class: 'muted' }, 'No events yet.'));
    }
    return { root, update };
  };

  // ---- topology ----
  async function loadIpam() {
    const now = Date.now();
    await Promise.all([...S.networks.keys()].map(async (n) => {
      const c = S.ipam.get(n);
      if (c && now - c.at < 10000) return;
      try {
        const b = await getJSON(api('/ipam/' + encodeURIComponent(n)));
        const gws = new Set();
        for (const sub of b.subnets || []) for (const bl of sub.blocks || []) if (bl.gateway) gws.add(bl.gateway);
        S.ipam.set(n, { at: now, gateways: gws });
      } catch (e) { S.ipam.set(n, { at: now, gateways: new Set(), error: e.message }); }
    }));
    schedule();
  }

  pages.topology = () => {
    const body = h('div');
    const root = h('div', null, h('h1', null, 'Topology'),
      h('p', { class: 'legend' }, h('span', null, '■ online'), h('span', null, '☒ offline'), h('span', null, '● not yet reported'),
        h('span', { class: 'muted' }, 'Gateways are grouped by the networks they hold addresses in; select one for its page.')), body);
    loadIpam();
    const timer = setInterval(loadIpam, 10000);
    function update() { fill(body, drawTopology()); }
    return { root, update, leave: () => clearInterval(timer) };
  };

  function drawTopology() {
    const W = 1000, cell = 16, pad = 10, cols = Math.floor((W - 2 * pad) / cell);
    const groups = [];
    const placed = new Set();
    for (const n of [...S.networks.keys()].sort()) {
      const gws = [...((S.ipam.get(n) || {}).gateways || [])].filter(g => S.gateways.has(g)).sort();
      gws.forEach(g => placed.add(g));
      groups.push({ title: `network ${n} — ${gws.length} gateways`, href: '#/networks/' + encodeURIComponent(n), gws });
    }
    const rest = [...S.gateways.keys()].filter(g => !placed.has(g)).sort();
    if (rest.length) groups.push({ title: `no network — ${rest.length} gateways`, gws: rest });
    const kids = [];
    // Edge routers (BGP peers) on top, the controller below them.
    const peers = S.peers.length ? S.peers : [];
    const pw = 150, ctlY = 70;
    peers.forEach((p, i) => {
      const x = pad + i * (pw + 10), a = (p.peer || {}).address || '?';
      const up = p.state === 'established';
      kids.push(s('line', { class: 'edge', x1: x + pw / 2, y1: 40, x2: W / 2, y2: ctlY, 'stroke-dasharray': up ? null : '4 3' }));
      kids.push(s('a', { href: '#/peers' }, s('rect', { class: 'node-box', x, y: 10, width: pw, height: 30, rx: 4 }),
        s('text', { x: x + 6, y: 29 }, `${up ? '✔' : '✖'} ${a} (${p.state})`)));
    });
    kids.push(s('rect', { class: 'node-box', x: W / 2 - 80, y: ctlY, width: 160, height: 30, rx: 4 }),
      s('text', { x: W / 2 - 72, y: ctlY + 19 }, 'controller'));
    let y = ctlY + 60;
    for (const g of groups) {
      const rows = Math.max(1, Math.ceil(g.gws.length / cols));
      const gh = 24 + rows * cell + pad;
      kids.push(s('line', { class: 'edge', x1: W / 2, y1: ctlY + 30, x2: W / 2, y2: y }));
      const title = s('text', { x: pad + 6, y: y + 16 }, g.title);
      kids.push(s('rect', { class: 'group', x: pad, y, width: W - 2 * pad, height: gh, rx: 4 }), g.href ? s('a', { href: g.href }, title) : title);
      g.gws.forEach((name, i) => {
        const gw = S.gateways.get(name), st = enumName('gw', gw.state);
        const x = pad + 4 + (i % cols) * cell, yy = y + 24 + Math.floor(i / cols) * cell;
        const shape = st === 'up' ? s('rect', { class: 'gw-up', x, y: yy, width: cell - 4, height: cell - 4 })
          : st === 'down' ? s('g', { class: 'gw-down' }, s('rect', { x, y: yy, width: cell - 4, height: cell - 4, fill: 'none', stroke: '#cf222e', 'stroke-width': 2 }),
            s('path', { d: `M${x} ${yy}L${x + cell - 4} ${yy + cell - 4}M${x + cell - 4} ${yy}L${x} ${yy + cell - 4}`, stroke: '#cf222e', 'stroke-width': 2 }))
          : s('circle', { class: 'gw-other', cx: x + (cell - 4) / 2, cy: yy + (cell - 4) / 2, r: (cell - 4) / 2 });
        kids.push(s('a', { href: '#/gateways/' + encodeURIComponent(name), 'aria-label': `gateway ${name} ${st}`, 'data-gateway': name },
          s('title', null, `${name} — ${st}`), shape));
      });
      y += gh + 12;
    }
    return s('svg', { class: 'topo', viewBox: `0 0 ${W} ${y}`, role: 'img', 'aria-label': 'Topology: edge routers, controller, networks and their gateways' },
      s('title', null, 'Topology'), kids);
  }

  // ---- sensors ----
  async function loadSensors() {
    const sn = S.sensor;
    if (!cfg.graphite) return;
    try {
      const b = await getJSON(q('/ui/graphite/render', { target: sn.target, from: '-1h', format: 'json', maxDataPoints: 300 }));
      sn.series = Array.isArray(b) ? b : []; sn.error = ''; sn.at = Date.now();
    } catch (e) { sn.error = e.message; }
    schedule();
  }

  function chart(series) {
    const pts = (series.datapoints || []).filter(p => p[0] !== null);
    const W = 300, H = 64, L = 34, B = 12;
    if (!pts.length) return h('p', { class: 'muted' }, 'no data in the last hour');
    let lo = Math.min(...pts.map(p => p[0])), hi = Math.max(...pts.map(p => p[0]));
    if (lo === hi) { lo -= 1; hi += 1; }
    const t0 = pts[0][1], t1 = Math.max(pts[pts.length - 1][1], t0 + 1);
    const xy = pts.map(p => `${(L + (p[1] - t0) / (t1 - t0) * (W - L - 4)).toFixed(1)},${(4 + (hi - p[0]) / (hi - lo) * (H - B - 8)).toFixed(1)}`).join(' ');
    return s('svg', { class: 'chart', viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': `${series.target}: ${pts.length} points from ${lo} to ${hi}` },
      s('text', { x: 2, y: 10 }, String(+hi.toPrecision(4))), s('text', { x: 2, y: H - B }, String(+lo.toPrecision(4))),
      s('text', { x: L, y: H - 2 }, new Date(t0 * 1000).toLocaleTimeString()),
      s('text', { x: W - 52, y: H - 2 }, new Date(t1 * 1000).toLocaleTimeString()),
      s('polyline', { points: xy }));
  }

  pages.sensors = () => {
    const sn = S.sensor;
    if (!sn.target) sn.target = cfg.sensorTargets;
    const body = h('div');
    const input = h('input', { id: 'sensor-target', value: sn.target, size: 40, autocomplete: 'off' });
    const form = h('form', { class: 'toolbar', onsubmit: (e) => { e.preventDefault(); sn.target = input.value; loadSensors(); } },
      h('label', { for: 'sensor-target' }, 'Graphite target'), input, h('button', { type: 'submit' }, 'Show'));
    const root = h('div', null, h('h1', null, 'Sensors'), cfg.graphite ? form : null, body);
    loadSensors();
    const timer = setInterval(loadSensors, 10000);
    function update() {
      if (!cfg.graphite) { fill(body, h('p', { class: 'muted' }, 'No Graphite is configured (console.graphite_url).')); return; }
      if (sn.error) { fill(body, h('p', { class: 'error' }, sn.error)); return; }
      if (!sn.series) { fill(body, h('p', null, 'Loading…')); return; }
      // Group the series by node: the target without its last segment.
      const groups = new Map();
      for (const x of sn.series) {
        const k = x.target.includes('.') ? x.target.slice(0, x.target.lastIndexOf('.')) : x.target;
        if (!groups.has(k)) groups.set(k, []);
        groups.get(k).push(x);
      }
      if (!groups.size) { fill(body, h('p', { class: 'muted' }, 'No series match ' + sn.target + '.')); return; }
      fill(body, [...groups.keys()].sort().map(k => h('section', { 'data-node': k }, h('h2', { class: 'mono' }, k),
        table(['Reading', 'Latest', 'At', { t: 'Last hour', cls: 'spark' }], groups.get(k).map(x => {
          const last = [...(x.datapoints || [])].reverse().find(p => p[0] !== null);
          return h('tr', { 'data-metric': x.target }, h('td', { class: 'mono' }, x.target.slice(k.length + 1)),
            h('td', null, last ? String(+last[0].toPrecision(6)) : '—'),
            h('td', null, last ? new Date(last[1] * 1000).toLocaleTimeString() : ''),
            h('td', { class: 'spark' }, chart(x)));
        })))));
    }
    return { root, update, leave: () => clearInterval(timer) };
  };

  // ---- routing ----
  function route() {
    const hash = location.hash.replace(/^#\/?/, '') || 'overview';
    const [name, ...rest] = hash.split('/');
    const arg = rest.length ? decodeURIComponent(rest.join('/')) : '';
    if (page && page.leave) page.leave();
    S.view = { key: '', endpoints: new Map(), more: false, routes: new Map(), error: '' };
    let make = pages[name] || pages.overview;
    if (name === 'networks' && arg) make = pages.network;
    if (name === 'gateways' && arg) make = pages.gateway;
    page = make(arg);
    const main = document.getElementById('main');
    fill(main, page.root);
    for (const a of document.querySelectorAll('header nav a')) {
      if (a.getAttribute('href') === '#/' + name) a.setAttribute('aria-current', 'page'); else a.removeAttribute('aria-current');
    }
    document.title = (name || 'overview') + (arg ? ' ' + arg : '') + ' — iotfabric';
    page.update();
  }
  window.addEventListener('hashchange', () => { route(); document.getElementById('main').focus(); });

  async function main() {
    // The lists start at once; the configuration (Graphite, alert age) comes alongside.
    const conf = getJSON('/ui/config.json').then(c => Object.assign(cfg, c), () => { /* defaults */ });
    route();
    await Promise.all([Live.start(), pollPeers(), conf.then(() => { if (location.hash.startsWith('#/sensors')) route(); })]);
    S.ready = true;
    render();
    setInterval(pollPeers, 5000);
    setInterval(schedule, 15000); // "x min ago" and alerts age
  }
  if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', main); else main();
})();
