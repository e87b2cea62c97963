// One project: its deployments (filters, cursor pages, live status), promote and roll back
// with the diff against production, custom domains, the release history, and settings.

import { h, mount, when, badge, ms, field, toast, confirmDialog, errorBox, short } from './dom.js';
import { api, can, deploymentEvents } from './api.js';
import { duration } from './projects.js';
import { webhooksSection } from './hooks.js';

const TERMINAL = new Set(['ready', 'error', 'canceled', 'deleted']);

function attribution(d) {
  const m = d.metadata || {};
  const parts = [];
  if (m.git_branch) parts.push(h('span', { title: 'branch' }, m.git_branch));
  if (m.git_commit) parts.push(h('code', { title: m.git_commit }, m.git_commit.slice(0, 8)));
  if (m.git_author) parts.push(h('span', { class: 'muted' }, m.git_author));
  return parts.length ? parts.flatMap((p, i) => (i ? [' · ', p] : [p])) : h('span', { class: 'muted' }, '—');
}

/** The confirmation of a promote or rollback: what changes against production. */
export async function confirmPromote(d, project) {
  const prod = project.production_deployment_id;
  let body;
  if (!prod) {
    body = h('p', {}, 'Nothing serves production yet; this deployment will.');
  } else {
    const diff = await api('GET', `/deployments/${d.id}/diff?against=${prod}&limit=200`);
    const sign = { added: ['+', 'add'], changed: ['~', 'chg'], removed: ['−', 'del'] };
    body = h('div', {},
      h('p', {}, `Against production (${short(prod)}): `,
        h('strong', { class: 'add' }, `${diff.added} added`), ', ',
        h('strong', { class: 'chg' }, `${diff.changed} changed`), ', ',
        h('strong', { class: 'del' }, `${diff.removed} removed`), `, ${diff.unchanged} unchanged.`),
      h('ul', { class: 'diff-list', 'aria-label': 'Changed files' }, diff.files.map((f) =>
        h('li', { class: sign[f.change][1] }, `${sign[f.change][0]} ${f.path}`))),
      diff.truncated ? h('p', { class: 'muted' }, 'First 200 shown.') : null);
  }
  const rollback = prod && d.id !== prod && d.number < (project.production_number || Infinity);
  const verb = rollback ? 'Roll back' : 'Promote';
  if (!(await confirmDialog(`${verb} to #${d.number}?`, body, verb, rollback))) return false;
  await api('POST', `/deployments/${d.id}/promote`);
  toast(`#${d.number} now serves production`);
  return true;
}

export async function projectPage(main, id) {
  let project = await api('GET', `/projects/${encodeURIComponent(id)}`);
  const filters = { target: '', status: '' };
  const cursors = [null];
  const streams = new Map();
  const tbody = h('tbody', { id: 'deployments' });
  const pager = h('div', { class: 'pager' });
  const header = h('div');

  async function loadProject() {
    project = await api('GET', `/projects/${project.id}`);
    if (project.production_deployment_id) {
      const p = await api('GET', `/deployments/${project.production_deployment_id}`);
      project.production_number = p.number;
    }
    mount(header,
      h('h1', {}, project.name),
      h('dl', { class: 'kv panel' },
        h('dt', {}, 'Production URL'), h('dd', {}, h('a', { href: project.url }, project.url)),
        h('dt', {}, 'Serving'), h('dd', {}, project.production_deployment_id
          ? h('a', { href: `#/deployments/${project.production_deployment_id}` }, `#${project.production_number} (${short(project.production_deployment_id)})`)
          : 'nothing yet'),
        h('dt', {}, 'Created'), h('dd', {}, when(project.created_at))));
  }

  function actions(d) {
    if (!can('deployments:write') || d.status !== 'ready' || d.id === project.production_deployment_id) return '';
    const rollback = project.production_number && d.number < project.production_number;
    return h('button', {
      class: rollback ? 'secondary' : '', 'data-action': 'promote',
      onclick: async () => {
        try { if (await confirmPromote(d, project)) await refresh(); } catch (e) { toast(e.message); }
      },
    }, rollback ? `Roll back to #${d.number}` : `Promote #${d.number}`);
  }

  function setStatus(tr, status) {
    const cell = tr.querySelector('.status');
    if (cell.firstChild && cell.firstChild.dataset.status === status) return;
    mount(cell, badge(status));
  }

  // A browser keeps at most six HTTP/1.1 connections to one origin, and every event
  // stream holds one: follow the newest few unfinished deployments live, and let the list
  // refresh show the rest (a page of abandoned queued deployments must not stall the page).
  const LIVE = 2;

  function watch(d, tr) {
    if (TERMINAL.has(d.status) || streams.has(d.id) || streams.size >= LIVE) return;
    const es = deploymentEvents(d.id, {
      status: (e) => {
        const row = tbody.querySelector(`tr[data-id="${d.id}"]`) || tr;
        setStatus(row, e.status);
        if (e.terminal) { es.close(); streams.delete(d.id); refresh(); }
      },
    });
    streams.set(d.id, es);
  }

  function row(d) {
    const prod = d.id === project.production_deployment_id;
    const tr = h('tr', { 'data-id': d.id, class: prod ? 'current' : '' },
      h('td', {}, h('a', { href: `#/deployments/${d.id}` }, `#${d.number}`)),
      h('td', { class: 'status' }, badge(d.status)),
      h('td', {}, prod ? h('span', { class: 'badge prod' }, 'production') : d.target),
      h('td', {}, attribution(d)),
      h('td', {}, when(d.created_at)),
      h('td', { class: 'hide-narrow' }, ms(duration(d))),
      h('td', { class: 'actions' }, actions(d)));
    tr.dataset.sig = `${d.status}|${prod}|${project.production_number}`;
    return tr;
  }

  async function refresh() {
    const q = new URLSearchParams({ project_id: project.id, limit: '20' });
    if (filters.target) q.set('target', filters.target);
    if (filters.status) q.set('status', filters.status);
    const cursor = cursors[cursors.length - 1];
    if (cursor) q.set('cursor', cursor);
    await loadProject();
    const page = await api('GET', `/deployments?${q}`);
    // Streams of deployments no longer on this page end.
    for (const [id, es] of streams) {
      if (!page.data.some((d) => d.id === id)) { es.close(); streams.delete(id); }
    }
    const rows = page.data.map((d) => {
      const old = tbody.querySelector(`tr[data-id="${d.id}"]`);
      const fresh = row(d);
      // Keep the row (and the focus in it) unless what it shows changed.
      const keep = old && old.dataset.sig === fresh.dataset.sig ? old : fresh;
      if (old && keep === fresh && old.contains(document.activeElement)) {
        const again = fresh.querySelector('button, a');
        queueMicrotask(() => again && again.focus());
      }
      watch(d, keep);
      return keep;
    });
    tbody.replaceChildren(...rows);
    if (!rows.length) tbody.append(h('tr', {}, h('td', { colspan: 7, class: 'muted' }, 'No deployments match.')));
    mount(pager,
      h('button', { class: 'secondary', disabled: cursors.length < 2, onclick: () => { cursors.pop(); refresh(); } }, 'Newer'),
      h('button', { class: 'secondary', disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); refresh(); } }, 'Older'));
  }

  const select = (name, options) => {
    const el = h('select', { name, onchange: () => { filters[name] = el.value; cursors.splice(1); refresh(); } },
      options.map(([v, t]) => h('option', { value: v }, t)));
    return el;
  };

  mount(main, header,
    h('h2', {}, 'Deployments'),
    h('div', { class: 'toolbar' },
      field('Target', select('target', [['', 'Any'], ['production', 'Production'], ['preview', 'Preview']])),
      field('Status', select('status', [['', 'Any (not deleted)'], ['queued', 'Queued'], ['building', 'Building'],
        ['ready', 'Ready'], ['error', 'Error'], ['canceled', 'Canceled'], ['deleted', 'Deleted']]))),
    h('div', { class: 'scroll' }, h('table', {},
      h('caption', { class: 'visually-hidden' }, 'Deployments, newest first'),
      h('thead', {}, h('tr', {}, ['Deployment', 'Status', 'Target', 'Branch · commit · author', 'Created'].map((t) => h('th', {}, t)),
        h('th', { class: 'hide-narrow' }, 'Duration'), h('th', {}, h('span', { class: 'visually-hidden' }, 'Actions')))),
      tbody)),
    pager,
    await domains(project),
    await releases(project),
    await webhooksSection(project),
    settings(project));
  await refresh();
  // New deployments appear without a reload; their status then follows their event stream.
  const timer = setInterval(() => { if (!document.hidden && cursors.length === 1) refresh().catch(() => {}); }, 2000);
  return () => { clearInterval(timer); for (const es of streams.values()) es.close(); };
}

async function domains(project) {
  const { data } = await api('GET', `/aliases?project_id=${project.id}`);
  const custom = data.filter((a) => a.kind !== 'preview');
  const out = h('div');
  const list = h('ul', {}, custom.map((a) => h('li', {},
    h('a', { href: a.url }, a.host), ` → ${a.target === 'production' ? 'production' : short(a.deployment_id)}`,
    a.certificate ? h('span', { class: 'muted' }, ` · certificate ${a.certificate.status || ''}`) : null,
    can('aliases:write') && a.kind === 'custom' ? [' ', h('button', { class: 'secondary', onclick: async () => {
      if (!(await confirmDialog(`Remove ${a.host}?`, h('p', {}, 'It stops serving at once.'), 'Remove', true))) return;
      try { await api('DELETE', `/aliases/${encodeURIComponent(a.host)}`); location.reload(); } catch (e) { mount(out, errorBox(e)); }
    } }, 'Remove')] : null)));
  const host = h('input', { type: 'text', name: 'host', placeholder: 'www.example.com' });
  const form = can('aliases:write') ? h('form', { class: 'toolbar', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await api('PUT', `/aliases/${encodeURIComponent(host.value.trim())}`, { project_id: project.id, target: 'production' });
      location.reload();
    } catch (e) { mount(out, errorBox(e)); }
  } }, field('Add a custom domain (follows production)', host), h('button', { type: 'submit' }, 'Add')) : null;
  return h('section', {}, h('h2', {}, 'Domains'), h('div', { class: 'panel' },
    custom.length ? list : h('p', { class: 'muted' }, 'Only the production host so far.'), form, out));
}

async function releases(project) {
  const { data } = await api('GET', `/aliases/history?project_id=${project.id}&limit=20`);
  const rows = data.filter((e) => e.action !== 'preview');
  return h('section', {}, h('h2', {}, 'Releases'), rows.length
    ? h('div', { class: 'scroll' }, h('table', {},
      h('thead', {}, h('tr', {}, ['When', 'Action', 'Host', 'From', 'To', 'By'].map((t) => h('th', {}, t)))),
      h('tbody', {}, rows.map((e) => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.action),
        h('td', {}, e.host || '—'), h('td', {}, short(e.from_deployment_id)), h('td', {}, short(e.to_deployment_id)),
        h('td', {}, e.actor.name))))))
    : h('p', { class: 'muted' }, 'No releases yet.'));
}

function settings(project) {
  const s = project.settings;
  const out = h('div', { 'aria-live': 'polite' });
  const cb = (name, checked) => h('input', { type: 'checkbox', name, checked });
  const clean = cb('clean_urls', s.clean_urls), spa = cb('spa', s.spa);
  const slash = h('select', { name: 'trailing_slash' }, ['auto', 'always', 'never'].map((v) =>
    h('option', { value: v, selected: v === s.trailing_slash }, v)));
  const num = (name, v) => h('input', { type: 'number', name, min: 0, value: v ?? '' });
  const keepLast = num('keep_last', project.retention.keep_last);
  const keepDays = num('keep_days', project.retention.keep_days);
  const ttl = num('preview_ttl_secs', project.retention.preview_ttl_secs);
  const mode = h('select', { name: 'mode' }, ['none', 'password', 'token'].map((v) =>
    h('option', { value: v, selected: v === project.protection.mode }, v)));
  const prodToo = cb('production', project.protection.production);
  const password = h('input', { type: 'password', name: 'password', autocomplete: 'new-password' });
  const advanced = h('textarea', { name: 'advanced', spellcheck: 'false' },
    JSON.stringify({ hsts: s.hsts, skew: s.skew, proxy: s.proxy }, null, 2));
  const writable = can('projects:write');
  const form = h('form', { class: 'stack panel', id: 'settings', onsubmit: async (ev) => {
    ev.preventDefault();
    let extra;
    try { extra = JSON.parse(advanced.value || '{}'); } catch (e) { mount(out, errorBox(new Error(`Advanced settings: ${e.message}`))); return; }
    const n = (el) => (el.value === '' ? null : Number(el.value));
    const patch = {
      settings: { clean_urls: clean.checked, spa: spa.checked, trailing_slash: slash.value,
        ...Object.fromEntries(Object.entries(extra).filter(([, v]) => v !== undefined && v !== null)) },
      retention: { keep_last: n(keepLast), keep_days: n(keepDays), preview_ttl_secs: n(ttl) },
    };
    // Protection is a routing change (audited, followed by every edge): only when it changed.
    const pr = project.protection;
    if (mode.value !== pr.mode || prodToo.checked !== pr.production || password.value) {
      patch.protection = { mode: mode.value, production: prodToo.checked, ...(password.value ? { password: password.value } : {}) };
    }
    try {
      const p = await api('PATCH', `/projects/${project.id}`, patch);
      project.protection = p.protection;
      password.value = '';
      mount(out, h('p', { role: 'status' }, 'Saved. New deployments use these settings; protection applies at once.',
        p.protection.bypass_token ? [' Bypass token (shown once): ', h('code', {}, p.protection.bypass_token)] : null));
    } catch (e) { mount(out, errorBox(e)); }
  } },
  h('fieldset', { disabled: !writable }, h('legend', {}, 'URLs'),
    h('label', { class: 'inline' }, clean, 'Clean URLs (/about serves about.html)'),
    h('label', { class: 'inline' }, spa, 'Single-page app (unknown paths serve /index.html)'),
    field('Trailing slash', slash)),
  h('fieldset', { disabled: !writable }, h('legend', {}, 'Retention'),
    field('Keep the newest N ready deployments', keepLast), field('…and those promoted in the last D days', keepDays),
    field('Preview hosts expire after (seconds)', ttl)),
  h('fieldset', { disabled: !writable }, h('legend', {}, 'Protection'),
    field('Who may see preview hosts', mode), h('label', { class: 'inline' }, prodToo, 'Production and custom domains too'),
    field('New password', password, 'Leave empty to keep the current one.')),
  field('Advanced (JSON: hsts, skew, proxy)', advanced, 'Headers per path come from the deployment’s own _headers file.'),
  writable ? h('div', {}, h('button', { type: 'submit' }, 'Save settings')) : h('p', { class: 'muted' }, 'This token cannot change settings.'),
  out);
  return h('section', {}, h('h2', {}, 'Settings'), form);
}
