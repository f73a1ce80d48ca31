// makler's status page: polls the program's own JSON (/v1/…) once a second and keeps the page
// in step, without reloading it. One page for both programs: the broker answers /v1/services,
// the balancer /v1/backends.
//
// Everything shown here (service names, addresses, metadata) comes from strangers on the LAN:
// the DOM is built with createElement and textContent only, never from HTML strings, so a name
// or a value such as `<img src=x onerror=alert(1)>` is shown as text and creates no element.
'use strict';

(() => {
  const POLL_MS = 1000;
  // The most services whose instances are fetched each round (one request each): the open
  // ones among those the filter shows, in order.
  const DETAIL_LIMIT = 50;
  // Services open when they first appear: the first ones of the list.
  const OPEN_BY_DEFAULT = 20;
  // The most instances of one service shown (the answer says when there are more).
  const INSTANCE_LIMIT = 200;
  // While the page is not visible (another tab), it polls this seldom.
  const HIDDEN_POLL_MS = 10000;
  const TIMEOUT_MS = 4000;

  const $ = (id) => document.getElementById(id);
  const view = $('view');
  const status = $('status');
  const banner = $('banner');

  /** An element with class/data attributes and children (strings become text nodes). */
  function el(tag, attrs, ...children) {
    const node = document.createElement(tag);
    for (const [name, value] of Object.entries(attrs || {})) {
      if (value !== undefined && value !== null) node.setAttribute(name, String(value));
    }
    for (const child of children) {
      if (child === null || child === undefined) continue;
      node.append(child instanceof Node ? child : document.createTextNode(String(child)));
    }
    return node;
  }

  /** A duration in seconds as a person reads it: 7 s, 3 min 20 s, 2 h 5 min, 4 d 1 h. */
  function duration(seconds) {
    if (typeof seconds !== 'number' || !Number.isFinite(seconds)) return '—';
    const s = Math.max(0, Math.round(seconds));
    if (s < 60) return `${s} s`;
    const two = (big, bigUnit, small, smallUnit) => (small === 0 ? `${big} ${bigUnit}` : `${big} ${bigUnit} ${small} ${smallUnit}`);
    if (s < 3600) return two(Math.floor(s / 60), 'min', s % 60, 's');
    if (s < 86400) return two(Math.floor(s / 3600), 'h', Math.floor((s % 3600) / 60), 'min');
    return two(Math.floor(s / 86400), 'd', Math.floor((s % 86400) / 3600), 'h');
  }

  /** A byte count as a person reads it: 512 B, 4.1 KiB, 20 MiB. */
  function bytes(n) {
    const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
    let value = n;
    let unit = 0;
    while (value >= 1024 && unit < units.length - 1) { value /= 1024; unit += 1; }
    return unit === 0 ? `${value} B` : `${value < 10 ? value.toFixed(1) : Math.round(value)} ${units[unit]}`;
  }

  /** Any JSON value as short text. */
  function text(value) {
    if (value === null || value === undefined || value === '') return '—';
    if (typeof value === 'object') return JSON.stringify(value);
    return String(value);
  }

  /** The pill class for a state word: passing/up green, failing/down red, draining amber. */
  function tone(state) {
    const s = String(state ?? '').toLowerCase();
    if (/^(pass|passing|ok|up|healthy|alive|connected|open)$/.test(s)) return 'ok';
    if (/^(fail|failing|critical|down|dead|unreachable|refused|closed)$/.test(s)) return 'bad';
    if (/^(drain|draining|warn|warning|suspect|starting|unknown|stale)$/.test(s)) return 'warn';
    return '';
  }

  function pill(state) {
    if (state === null || state === undefined || state === '') return '—';
    return el('span', { class: `pill ${tone(state)}`.trim() }, text(state));
  }

  /** Metadata, an object of key → value ("" or null for a key alone) or a list of pairs. */
  function metadata(meta) {
    const box = el('div', { class: 'meta' });
    const pairs = Array.isArray(meta)
      ? meta.map((p) => String(p))
      : Object.entries(meta || {}).map(([k, v]) => (v === null || v === true || v === '' ? k : `${k}=${typeof v === 'object' ? JSON.stringify(v) : v}`));
    if (pairs.length === 0) box.append('—');
    for (const pair of pairs) box.append(el('code', {}, pair));
    return box;
  }

  const LABELS = {
    addr: 'Address', id: 'Id', state: 'State', last_heard_s: 'Last heard', age_s: 'Age', ttl_left_s: 'Time left',
    check: 'Check', check_state: 'Check state', meta: 'Metadata', origin: 'Origin', weight: 'Weight',
    connections: 'Connections', total: 'Total', leases: 'Leases', source: 'Source', bytes_to: 'Sent',
    bytes_from: 'Received', failures: 'Failures', complete: 'Complete', instances: 'Instances',
  };
  const label = (key) => LABELS[key] || key.replace(/_s$/, '').replace(/_/g, ' ');

  /** One cell for `key` of a row, formatted by what the key means. */
  function cell(key, value) {
    const td = el('td', { 'data-label': label(key), 'data-key': key });
    if (key === 'addr') td.append(el('span', { class: 'addr' }, text(value)));
    else if (key === 'state' || key === 'check_state') td.append(pill(value));
    else if (key === 'meta') td.append(metadata(value));
    else if (key.endsWith('_s') && typeof value === 'number') { td.className = 'num'; td.append(duration(value)); }
    else if (key.startsWith('bytes') && typeof value === 'number') { td.className = 'num'; td.append(bytes(value)); }
    else if (typeof value === 'number') { td.className = 'num'; td.append(String(value)); }
    else if (typeof value === 'boolean') td.append(value ? 'yes' : 'no');
    else td.append(text(value));
    return td;
  }

  /**
   * A table of `rows` (JSON objects): the `preferred` keys first, then any other key the rows
   * carry but `omit`, so that a field the program adds later still shows.
   */
  function table(rows, preferred, rowAttrs, omit = []) {
    const keys = preferred.filter((k) => rows.some((r) => k in r));
    for (const row of rows) for (const k of Object.keys(row)) if (!keys.includes(k) && !omit.includes(k)) keys.push(k);
    const head = el('tr', {}, ...keys.map((k) => el('th', { scope: 'col' }, label(k))));
    const body = el('tbody');
    for (const row of rows) body.append(el('tr', rowAttrs(row), ...keys.map((k) => cell(k, row[k]))));
    return el('table', {}, el('thead', {}, head), body);
  }

  function section(id, title) {
    const count = el('span', { class: 'count' });
    const body = el('div', { class: 'body' });
    const node = el('section', { id, class: 'card' }, el('h2', {}, title, ' ', count), body);
    return { node, count, body };
  }

  // ---------------------------------------------------------------------------------------
  // The broker: services, their instances, peers and bridges.

  const broker = {
    services: null, peers: null, bridges: null, filter: '',
    /** name → { node (a <details>), count, body } */
    rows: new Map(),

    build() {
      this.services = section('services', 'Services');
      const input = el('input', { type: 'search', placeholder: 'filter by name', 'aria-label': 'filter services by name' });
      input.addEventListener('input', () => { this.filter = input.value.trim().toLowerCase(); this.applyFilter(); });
      this.list = el('div', { id: 'service-list' });
      this.services.node.insertBefore(el('div', { class: 'filter' }, input), this.services.body);
      this.services.body.replaceWith(this.list);
      this.peers = section('peers', 'Peers');
      this.bridges = section('bridges', 'Bridges');
      view.replaceChildren(this.services.node, this.peers.node, this.bridges.node);
      $('json-links').replaceChildren(el('a', { href: '/v1/services' }, '/v1/services'), ' ', el('a', { href: '/v1/peers' }, '/v1/peers'));
      $('program').textContent = 'makler-broker';
    },

    async poll() {
      const [catalog, peers] = await Promise.all([getJson('/v1/services'), getJson('/v1/peers', true)]);
      this.header(catalog.node || {});
      this.catalog(Array.isArray(catalog.services) ? catalog.services : [], catalog.truncated);
      const wanted = this.shown().filter(([, row]) => row.node.open).slice(0, DETAIL_LIMIT);
      const answers = await Promise.all(wanted.map(([name]) =>
        getJson(`/v1/services/${encodeURIComponent(name)}?limit=${INSTANCE_LIMIT}`, true).then((d) => [name, d], (e) => [name, e])));
      for (const [name, answer] of answers) this.instances(name, answer);
      const skipped = this.shown().filter(([, row]) => row.node.open).slice(DETAIL_LIMIT);
      for (const [, row] of skipped) {
        row.body.replaceChildren(el('p', { class: 'note' }, `Not updated: only the first ${DETAIL_LIMIT} open services are fetched. Close some or filter.`));
      }
      this.peerTables(peers);
    },

    header(node) {
      $('where').textContent = text(node.addr);
      const parts = [];
      if (node.cluster !== undefined) parts.push(['cluster ', node.cluster]);
      if (node.version !== undefined) parts.push(['version ', node.version]);
      if (node.ttl_s !== undefined) parts.push(['TTL ', duration(node.ttl_s)]);
      const line = $('node');
      line.replaceChildren();
      parts.forEach(([name, value], i) => {
        if (i > 0) line.append(' · ');
        line.append(name, el('b', {}, text(value)));
      });
    },

    shown() {
      return [...this.rows].filter(([, row]) => !row.node.hidden);
    },

    catalog(services, truncated) {
      const names = new Set();
      let total = 0;
      services.forEach((service, i) => {
        const name = String(service.name);
        names.add(name);
        const count = Array.isArray(service.instances) ? service.instances.length : Number(service.instances) || 0;
        total += count;
        let row = this.rows.get(name);
        if (!row) {
          const counter = el('span', { class: 'count' });
          const body = el('div', { class: 'body' }, el('p', { class: 'note' }, 'loading…'));
          const node = el('details', { class: 'service', 'data-name': name },
            el('summary', {}, el('span', { class: 'name' }, name), counter), body);
          if (this.rows.size < OPEN_BY_DEFAULT) node.open = true;
          row = { node, count: counter, body };
          this.rows.set(name, row);
          node.hidden = !this.matches(name);
        }
        row.count.textContent = count === 1 ? '1 instance' : `${count} instances`;
        const at = this.list.children[i];
        if (at !== row.node) this.list.insertBefore(row.node, at || null);
      });
      for (const [name, row] of this.rows) {
        if (!names.has(name)) { row.node.remove(); this.rows.delete(name); }
      }
      this.services.count.textContent = `${services.length}${truncated ? '+' : ''} · ${total} instances`;
      if (truncated) {
        if (!this.more) this.more = el('p', { class: 'note' });
        this.more.textContent = `The first ${services.length} services by name; the broker has more.`;
        this.list.after(this.more);
      } else if (this.more) this.more.remove();
      if (services.length === 0) {
        if (!this.empty) this.empty = el('p', { class: 'empty' }, 'No service is registered.');
        this.list.append(this.empty);
      } else if (this.empty) this.empty.remove();
    },

    matches(name) {
      return !this.filter || name.toLowerCase().includes(this.filter);
    },

    applyFilter() {
      for (const [name, row] of this.rows) row.node.hidden = !this.matches(name);
    },

    instances(name, answer) {
      const row = this.rows.get(name);
      if (!row) return;
      if (answer instanceof Error || answer === null) {
        row.body.replaceChildren(el('p', { class: 'note' }, answer ? `Could not fetch: ${answer.message}` : 'Gone.'));
        return;
      }
      const list = Array.isArray(answer.instances) ? answer.instances : [];
      const parts = [];
      if (list.length === 0) parts.push(el('p', { class: 'empty' }, 'No instance.'));
      else {
        // The id (a 36-character UUID) is the row's tooltip rather than a column.
        parts.push(table(list, ['addr', 'age_s', 'ttl_left_s', 'check_state', 'check', 'meta', 'origin', 'source', 'leases'],
          (inst) => ({ class: 'instance', 'data-id': inst.id, 'data-addr': inst.addr, title: inst.id ? `lease ${inst.id}` : null }),
          ['id']));
      }
      if (answer.truncated) parts.push(el('p', { class: 'note' }, `Showing the first ${list.length} instances.`));
      row.body.replaceChildren(...parts);
    },

    peerTables(answer) {
      const fill = (part, rows, what) => {
        part.count.textContent = `${rows.length}`;
        part.body.replaceChildren(rows.length === 0
          ? el('p', { class: 'empty' }, `No ${what}.`)
          : table(rows, ['addr', 'state', 'last_heard_s'], (r) => ({ 'data-addr': r.addr })));
      };
      const data = answer || {};
      fill(this.peers, Array.isArray(data.peers) ? data.peers : [], 'peer');
      fill(this.bridges, Array.isArray(data.bridges) ? data.bridges : [], 'bridge');
    },
  };

  // ---------------------------------------------------------------------------------------
  // The balancer: its service, policy and backends.

  const balancer = {
    build() {
      this.backends = section('backends', 'Backends');
      view.replaceChildren(this.backends.node);
      $('json-links').replaceChildren(el('a', { href: '/v1/backends' }, '/v1/backends'));
      $('program').textContent = 'makler-balancer';
    },

    async poll() {
      const data = await getJson('/v1/backends');
      $('where').textContent = text(data.service);
      const line = $('node');
      line.replaceChildren('policy ', el('b', {}, text(data.policy)));
      const rows = Array.isArray(data.backends) ? data.backends : [];
      const open = typeof data.connections === 'number'
        ? data.connections : rows.reduce((sum, b) => sum + (Number(b.connections) || 0), 0);
      const up = rows.filter((b) => tone(b.state) === 'ok').length;
      // Cut at the answer's limit (1,000 by default), as the services view says of its own.
      const truncated = data.truncated === true;
      const shown = `${rows.length}${truncated ? '+' : ''}`;
      line.append(' · ', el('b', {}, String(up)), ` of ${shown} up · `, el('b', {}, String(open)), open === 1 ? ' open connection' : ' open connections');
      this.backends.count.textContent = shown;
      const parts = [rows.length === 0
        ? el('p', { class: 'empty' }, 'No backend.')
        : table(rows, ['addr', 'state', 'weight', 'connections', 'total'], (b) => ({ class: 'backend', 'data-addr': b.addr }))];
      if (truncated) {
        parts.push(el('p', { class: 'note more' }, `Showing the first ${rows.length} backends by address; the balancer has more.`));
      }
      this.backends.body.replaceChildren(...parts);
    },
  };

  // ---------------------------------------------------------------------------------------
  // Polling, and telling the reader how fresh the page is.

  /** GETs `path` as JSON; with `optional`, a 404 gives null instead of an error. */
  async function getJson(path, optional) {
    const abort = new AbortController();
    const timer = setTimeout(() => abort.abort(), TIMEOUT_MS);
    try {
      const response = await fetch(path, { cache: 'no-store', signal: abort.signal, headers: { accept: 'application/json' } });
      if (optional && response.status === 404) return null;
      if (!response.ok) {
        const error = new Error(`${path} answered ${response.status}`);
        error.status = response.status;
        throw error;
      }
      return await response.json();
    } catch (e) {
      if (e.name === 'AbortError') throw new Error(`${path} did not answer within ${TIMEOUT_MS / 1000} s`);
      throw e;
    } finally {
      clearTimeout(timer);
    }
  }

  /** Which program serves this page: the broker answers /v1/services, the balancer /v1/backends. */
  async function detect() {
    if (await getJson('/v1/services', true) !== null) return broker;
    if (await getJson('/v1/backends', true) !== null) return balancer;
    throw new Error('neither /v1/services nor /v1/backends answers');
  }

  let program = null;
  let lastOk = null;
  let failingSince = null;
  let polling = false;
  let next = null;

  function showStatus() {
    const ago = lastOk === null ? null : duration((Date.now() - lastOk) / 1000);
    if (failingSince === null) {
      status.dataset.state = lastOk === null ? 'loading' : 'ok';
      status.textContent = lastOk === null ? 'loading…' : `updated ${ago} ago`;
    } else {
      status.dataset.state = 'down';
      status.textContent = lastOk === null ? 'no answer yet' : `not answering; updated ${ago} ago`;
    }
  }

  async function tick() {
    polling = true;
    try {
      if (program === null) {
        program = await detect();
        program.build();
      }
      await program.poll();
      lastOk = Date.now();
      failingSince = null;
      banner.hidden = true;
      delete view.dataset.stale;
      document.body.dataset.loaded = program === broker ? 'broker' : 'balancer';
    } catch (e) {
      if (failingSince === null) failingSince = Date.now();
      const since = new Date(failingSince).toLocaleTimeString();
      const who = program === balancer ? 'The balancer' : program === broker ? 'The broker' : 'The program';
      banner.textContent = `${who} at ${location.host} is not answering since ${since} (${e.message || e}). `
        + 'The page shows what it last said and keeps trying.';
      banner.hidden = false;
      if (lastOk !== null) view.dataset.stale = '';
    }
    showStatus();
    polling = false;
    next = setTimeout(tick, document.hidden ? HIDDEN_POLL_MS : POLL_MS);
  }

  setInterval(showStatus, 1000);
  tick();
  // Back on the page after a while away: fresh data now rather than after the slow interval
  // (one chain of polls only: the waiting one is cancelled).
  document.addEventListener('visibilitychange', () => {
    if (!document.hidden && !polling) {
      clearTimeout(next);
      tick();
    }
  });
})();
