// Tokens (create with scopes and project limits, secret shown once, revoke), the audit
// log of routing changes, and the storage view (blob index, what GC would collect).

import { h, mount, when, bytes, field, confirmDialog, errorBox, short } from './dom.js';
import { api, current } from './api.js';

const SCOPES = ['projects:read', 'projects:write', 'deployments:read', 'deployments:write', 'files:write', 'aliases:write', 'admin'];

export async function tokensPage(main) {
  const [{ data: tokens }, { data: projects }] = await Promise.all([api('GET', '/tokens'), api('GET', '/projects')]);
  const out = h('div', { 'aria-live': 'polite' });
  const name = h('input', { type: 'text', name: 'name', required: true, maxlength: 100 });
  const boxes = SCOPES.map((sc) => h('input', { type: 'checkbox', name: 'scope', value: sc }));
  const limit = h('select', { name: 'projects', multiple: true, size: Math.min(5, Math.max(2, projects.length)) },
    projects.map((p) => h('option', { value: p.id }, p.name)));
  const days = h('input', { type: 'number', name: 'expires_days', min: 1, max: 3650 });
  const form = h('form', { class: 'stack panel', id: 'new-token', onsubmit: async (ev) => {
    ev.preventDefault();
    const ids = [...limit.selectedOptions].map((o) => o.value);
    const body = { name: name.value, scopes: boxes.filter((b) => b.checked).map((b) => b.value) };
    if (ids.length) body.project_ids = ids;
    if (days.value) body.expires_in = Number(days.value) * 86400;
    try {
      const t = await api('POST', '/tokens', body);
      mount(out, h('div', { class: 'panel', role: 'status' },
        h('p', {}, 'Token ', h('strong', {}, t.name), ' created. Copy its secret now: it is never shown again.'),
        h('p', { class: 'secret', id: 'token-secret' }, t.token),
        h('button', { class: 'secondary', onclick: () => navigator.clipboard.writeText(t.token) }, 'Copy'),
        ' ', h('a', { href: '#/tokens', onclick: (e2) => { e2.preventDefault(); tokensPage(main); } }, 'Done')));
      out.querySelector('button').focus();
    } catch (e) { mount(out, errorBox(e)); }
  } },
  field('Name', name),
  h('fieldset', {}, h('legend', {}, 'Scopes'), SCOPES.map((sc, i) => h('label', { class: 'inline' }, boxes[i], sc))),
  field('Only these projects (none selected: every project)', limit, 'Ctrl or ⌘ to choose several. An admin token cannot be limited.'),
  field('Expires after (days)', days, 'Empty: never.'),
  h('div', {}, h('button', { type: 'submit' }, 'Create token')));
  const me = current().token.id;
  mount(main, h('h1', {}, 'Tokens'),
    h('div', { class: 'scroll' }, h('table', { id: 'tokens' },
      h('thead', {}, h('tr', {}, ['Name', 'Scopes', 'Projects', 'Created', 'Expires', ''].map((t) => h('th', {}, t)))),
      h('tbody', {}, tokens.map((t) => h('tr', { 'data-id': t.id },
        h('td', {}, t.name, t.id === me ? h('span', { class: 'muted' }, ' (this session)') : ''),
        h('td', {}, t.scopes.join(', ')),
        h('td', {}, t.project_ids ? t.project_ids.map((p) => (projects.find((x) => x.id === p) || { name: p }).name).join(', ') : 'all'),
        h('td', {}, when(t.created_at)), h('td', {}, t.expires_at ? when(t.expires_at) : 'never'),
        h('td', {}, h('button', { class: 'danger', 'data-action': 'revoke', onclick: async () => {
          if (!(await confirmDialog(`Revoke ${t.name}?`, h('p', {}, 'Every client and dashboard session using it stops working at once.'), 'Revoke', true))) return;
          try { await api('DELETE', `/tokens/${t.id}`); tokensPage(main); } catch (e) { mount(out, errorBox(e)); }
        } }, 'Revoke'))))))),
    h('h2', {}, 'New token'), out, form);
}

export async function auditPage(main) {
  const cursors = [null];
  const box = h('div');
  async function load() {
    const q = new URLSearchParams({ limit: '50' });
    const c = cursors[cursors.length - 1];
    if (c) q.set('cursor', c);
    const page = await api('GET', `/aliases/history?${q}`);
    mount(box, h('div', { class: 'scroll' }, h('table', { id: 'audit' },
      h('thead', {}, h('tr', {}, ['When', 'Revision', 'Action', 'Host', 'From', 'To', 'By'].map((t) => h('th', {}, t)))),
      h('tbody', {}, page.data.map((e) => h('tr', {}, h('td', {}, when(e.at)), h('td', {}, e.revision), h('td', {}, e.action),
        h('td', {}, e.host || '—'),
        h('td', {}, e.from_deployment_id ? h('a', { href: `#/deployments/${e.from_deployment_id}` }, short(e.from_deployment_id)) : '—'),
        h('td', {}, e.to_deployment_id ? h('a', { href: `#/deployments/${e.to_deployment_id}` }, short(e.to_deployment_id)) : '—'),
        h('td', {}, e.actor.name)))))),
    h('div', { class: 'pager' },
      h('button', { class: 'secondary', disabled: cursors.length < 2, onclick: () => { cursors.pop(); load(); } }, 'Newer'),
      h('button', { class: 'secondary', disabled: !page.next_cursor, onclick: () => { cursors.push(page.next_cursor); load(); } }, 'Older')));
  }
  mount(main, h('h1', {}, 'Audit log'),
    h('p', { class: 'muted' }, 'Every routing change: promotes, rollbacks, previews, domains, protection; who made it and when.'), box);
  await load();
}

export async function storagePage(main) {
  const st = await api('GET', '/storage');
  const out = h('div', { 'aria-live': 'polite' });
  mount(main, h('h1', {}, 'Storage'),
    h('dl', { class: 'kv panel', id: 'storage' },
      h('dt', {}, 'Blobs'), h('dd', {}, st.blobs.toLocaleString()),
      h('dt', {}, 'Bytes'), h('dd', {}, bytes(st.bytes), st.unsized_blobs ? ` (+${st.unsized_blobs} blobs of unknown size)` : ''),
      h('dt', {}, 'GC grace'), h('dd', {}, `${st.gc_grace_secs / 3600} h: a blob is collected only this long after it was last stored or reported present`)),
    h('button', { id: 'gc-dry-run', onclick: async () => {
      mount(out, h('p', { class: 'muted' }, 'Looking…'));
      try {
        const r = await api('POST', '/gc', { dry_run: true });
        mount(out, h('dl', { class: 'kv panel' },
          h('dt', {}, 'Blobs GC would delete'), h('dd', {}, `${r.blobs} (${bytes(r.bytes)})`),
          h('dt', {}, 'Manifests'), h('dd', {}, r.manifests),
          h('dt', {}, 'Deployments retention would delete'), h('dd', {}, r.deployments_deleted.length),
          h('dt', {}, 'Preview hosts that would expire'), h('dd', {}, r.previews_expired.length)));
      } catch (e) { mount(out, errorBox(e)); }
    } }, 'What would GC collect?'), out);
}
