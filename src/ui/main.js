// The dashboard's shell: sign-in, navigation and the hash router. Each page is a function
// (main element, route params) that may return a cleanup (closing streams and timers).

import { h, mount, field, errorBox } from './dom.js';
import { loadSession, signIn, signOut, current, can, onSignOut, recheck } from './api.js';
import { projectsPage, trafficPage } from './projects.js';
import { projectPage } from './project.js';
import { deploymentPage } from './deployment.js';
import { tokensPage, auditPage, storagePage } from './admin.js';
import { certificatesPage } from './hooks.js';

const main = document.getElementById('main');
let cleanup = null;

const routes = [
  [/^#?\/?$/, projectsPage, 'projects'],
  [/^#\/projects\/([^/]+)$/, projectPage, 'projects'],
  [/^#\/deployments\/([^/]+)$/, deploymentPage, 'projects'],
  [/^#\/traffic$/, trafficPage, 'traffic'],
  [/^#\/tokens$/, tokensPage, 'tokens'],
  [/^#\/audit$/, auditPage, 'audit'],
  [/^#\/storage$/, storagePage, 'storage'],
  [/^#\/certificates$/, certificatesPage, 'certificates'],
];

function nav(active) {
  const links = [['#/', 'Projects', 'projects'], ['#/traffic', 'Traffic', 'traffic'], ['#/audit', 'Audit log', 'audit'], ['#/certificates', 'Certificates', 'certificates']];
  if (can('admin')) links.push(['#/tokens', 'Tokens', 'tokens'], ['#/storage', 'Storage', 'storage']);
  mount(document.getElementById('nav'), links.map(([href, text, key]) =>
    h('a', { href, 'aria-current': key === active ? 'page' : null }, text)));
  const s = current();
  mount(document.getElementById('who'), s
    ? [h('span', {}, 'Signed in as ', h('strong', {}, s.token.name)),
      h('button', { class: 'secondary', id: 'sign-out', onclick: () => signOut() }, 'Sign out')]
    : []);
}

function signInPage() {
  nav(null);
  const input = h('input', { type: 'password', name: 'token', autocomplete: 'off', required: true, id: 'token' });
  const out = h('div');
  const form = h('form', { class: 'stack panel', onsubmit: async (ev) => {
    ev.preventDefault();
    try {
      await signIn({ token: input.value });
      input.value = '';
      route();
    } catch (e) {
      mount(out, errorBox(e.status === 401 ? new Error('That token does not work: unknown, revoked or expired.') : e));
    }
  } },
  field('API token', input, 'An admin token (halo serve writes one to its data directory), or any token made under Tokens. The dashboard keeps a session cookie, never the token.'),
  h('div', {}, h('button', { type: 'submit' }, 'Sign in')), out);
  mount(main, h('h1', {}, 'Sign in to Halo'), form);
  input.focus();
}

async function route() {
  if (cleanup) { cleanup(); cleanup = null; }
  document.getElementById('toast').textContent = '';
  // The one-time sign-in link `halo serve` prints on first start (`/ui/#link=…`): redeemed
  // once, and taken out of the address bar and the history first.
  const link = location.hash.match(/^#link=([0-9a-f]+)$/);
  let refused = false;
  if (link) {
    history.replaceState(null, '', '#/');
    try { await signIn({ link: link[1] }); } catch { refused = true; }
  }
  if (!current()) {
    signInPage();
    if (refused) {
      main.querySelector('form').append(errorBox(new Error('That sign-in link was already used or has expired: sign in with the admin token.')));
    }
    return;
  }
  const hash = location.hash || '#/';
  for (const [re, page, key] of routes) {
    const m = hash.match(re);
    if (!m) continue;
    nav(key);
    mount(main, h('p', { class: 'muted' }, 'Loading…'));
    try {
      cleanup = (await page(main, ...m.slice(1).map(decodeURIComponent))) || null;
    } catch (e) {
      mount(main, errorBox(e));
    }
    main.focus({ preventScroll: true });
    return;
  }
  nav(null);
  mount(main, h('h1', {}, 'Not found'), h('p', {}, h('a', { href: '#/' }, 'Back to projects')));
}

onSignOut(() => route());
window.addEventListener('hashchange', route);
// A token revoked elsewhere (another tab, the CLI, another replica) ends the session:
// notice within a few seconds even when this page makes no call of its own.
setInterval(() => { if (!document.hidden) recheck(); }, 3000);
document.addEventListener('visibilitychange', () => { if (!document.hidden) recheck(); });

loadSession().then(route, () => route());
