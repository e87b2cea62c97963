// Signed deploy webhooks of a project (endpoints, their state and delivery log, a test
// event, secret rotation), and the certificates automatic HTTPS holds.

import { h, mount, when, ms, field, confirmDialog, errorBox, toast } from './dom.js';
import { api, can } from './api.js';

const EVENTS = ['deployment.created', 'deployment.ready', 'deployment.error', 'deployment.canceled',
  'deployment.promoted', 'deployment.rolled_back', 'alias.changed', 'certificate.issued', 'certificate.failing'];

function secretShown(w) {
  return h('div', { class: 'panel', role: 'status' },
    h('p', {}, 'Signing secret for ', h('strong', {}, w.url), ' — copy it now, it is not shown again:'),
    h('p', { class: 'secret', id: 'webhook-secret' }, w.secret));
}

async function deliveries(w, box) {
  const { data } = await api('GET', `/webhooks/${w.id}/deliveries`);
  mount(box, data.length
    ? h('div', { class: 'scroll' }, h('table', { class: 'deliveries' },
      h('thead', {}, h('tr', {}, ['When', 'Event', 'Answer', 'Took'].map((t) => h('th', {}, t)))),
      h('tbody', {}, data.map((a) => h('tr', {}, h('td', {}, when(a.at)), h('td', {}, a.type),
        h('td', {}, h('span', { class: `badge ${a.ok ? 's-ready' : 's-error'}` }, a.status ?? 'no answer'), a.error ? ` ${a.error}` : ''),
        h('td', {}, ms(a.duration_ms)))))))
    : h('p', { class: 'muted' }, 'No deliveries yet.'));
}

/** The project page's webhooks section. */
export async function webhooksSection(project) {
  const { data } = await api('GET', `/projects/${project.id}/webhooks`);
  const out = h('div', { 'aria-live': 'polite' });
  const write = can('projects:write');
  const logs = data.map(() => h('div'));
  const list = data.map((w, i) => {
    const log = logs[i];
    const act = (label, key, f, danger) => h('button', { class: danger ? 'danger' : 'secondary', 'data-action': key, onclick: async () => {
      try { await f(); } catch (e) { mount(out, errorBox(e)); }
    } }, label);
    return h('li', { class: 'panel', 'data-id': w.id },
      h('p', {}, h('code', {}, w.url), ' ',
        h('span', { class: `badge ${w.status === 'active' ? 's-ready' : w.status === 'failing' ? 's-queued' : 's-error'}` }, w.status)),
      h('p', { class: 'hint' }, w.events.join(', ')),
      w.disabled_reason ? h('p', { class: 'error' }, w.disabled_reason) : null,
      write ? h('div', { class: 'toolbar' },
        act('Send a test event', 'ping', async () => { await api('POST', `/webhooks/${w.id}/ping`); toast('Test event sent'); await deliveries(w, log); }),
        act('Rotate secret', 'rotate', async () => mount(out, secretShown(await api('POST', `/webhooks/${w.id}/rotate`)))),
        act('Remove', 'remove', async () => {
          if (!(await confirmDialog(`Remove ${w.url}?`, h('p', {}, 'It receives nothing more.'), 'Remove', true))) return;
          await api('DELETE', `/webhooks/${w.id}`);
          location.reload();
        }, true)) : null,
      h('h3', {}, 'Deliveries'), log);
  });
  const url = h('input', { type: 'text', name: 'url', placeholder: 'https://hooks.example.com/halo' });
  const boxes = EVENTS.map((e) => h('input', { type: 'checkbox', name: 'event', value: e }));
  const form = write ? h('form', { class: 'stack panel', id: 'new-webhook', onsubmit: async (ev) => {
    ev.preventDefault();
    const events = boxes.filter((b) => b.checked).map((b) => b.value);
    try {
      const w = await api('POST', `/projects/${project.id}/webhooks`, { url: url.value.trim(), ...(events.length ? { events } : {}) });
      mount(out, secretShown(w));
    } catch (e) { mount(out, errorBox(e)); }
  } },
  field('Endpoint URL', url),
  h('fieldset', {}, h('legend', {}, 'Events (none checked: all)'), EVENTS.map((e, i) => h('label', { class: 'inline' }, boxes[i], e))),
  h('div', {}, h('button', { type: 'submit' }, 'Add endpoint'))) : null;
  const section = h('section', { id: 'webhooks' }, h('h2', {}, 'Webhooks'),
    h('p', { class: 'hint' }, 'Signed (Standard Webhooks) and delivered in order, at least once.'),
    data.length ? h('ul', { class: 'plain' }, list) : h('p', { class: 'muted' }, 'No endpoints.'), out, form);
  // Each endpoint's log, once the section is on the page.
  data.forEach((w, i) => deliveries(w, logs[i]).catch(() => {}));
  return section;
}

export async function certificatesPage(main) {
  const r = await api('GET', '/certificates');
  const out = h('div', { 'aria-live': 'polite' });
  mount(main, h('h1', {}, 'Certificates'),
    !r.acme
      ? h('p', { class: 'panel', id: 'certificates' }, 'Automatic HTTPS is off on this server: start it with ',
        h('code', {}, '--acme-email'), ' (see docs/edge.md) and every production host and custom domain gets a certificate.')
      : h('div', { class: 'scroll' }, h('table', { id: 'certificates' },
        h('thead', {}, h('tr', {}, ['Host', 'State', 'Valid until', 'Issuer', 'Last error', ''].map((t) => h('th', {}, t)))),
        h('tbody', {}, r.data.map((c) => h('tr', {}, h('td', {}, c.host), h('td', {}, h('span', { class: `badge s-${c.state === 'valid' ? 'ready' : c.state === 'failing' ? 'error' : 'queued'}` }, c.state)),
          h('td', {}, c.not_after ? when(c.not_after) : '—'), h('td', {}, c.issuer || '—'), h('td', {}, c.last_error || ''),
          h('td', {}, can('admin') ? h('button', { class: 'secondary', onclick: async () => {
            try { await api('POST', `/certificates/${encodeURIComponent(c.host)}/renew`); toast(`Renewing ${c.host}`); } catch (e) { mount(out, errorBox(e)); }
          } }, 'Renew now') : '')))))),
    out);
}
