// Talking to the control plane: the session (cookie + anti-CSRF header) and /v1 calls.

let session = null;
const listeners = new Set();

export class ApiError extends Error {
  constructor(status, code, message) { super(message); this.status = status; this.code = code; }
}

export function current() { return session; }
export function can(scope) { return !!(session && session.allowed[scope]); }
export function onSignOut(f) { listeners.add(f); }

function signedOut() {
  if (!session) return;
  session = null;
  for (const f of listeners) f();
}

async function answer(r) {
  if (r.status === 204) return null;
  const text = await r.text();
  let body = null;
  try { body = text ? JSON.parse(text) : null; } catch { body = null; }
  if (!r.ok) {
    if (r.status === 401) signedOut();
    const e = (body && body.error) || {};
    throw new ApiError(r.status, e.code || 'http_' + r.status, e.message || `${r.status} ${r.statusText}`);
  }
  return body;
}

export async function loadSession() {
  const r = await fetch('/ui/session', { credentials: 'same-origin' });
  session = r.ok ? await r.json() : null;
  return session;
}

/** Signs in with `{token}` or with the one-time `{link}` `halo serve` prints. */
export async function signIn(credentials) {
  const r = await fetch('/ui/session', {
    method: 'POST', credentials: 'same-origin',
    headers: { 'content-type': 'application/json' },
    body: JSON.stringify(credentials),
  });
  session = await answer(r);
  return session;
}

export async function signOut() {
  if (session) {
    await fetch('/ui/session', { method: 'DELETE', headers: { 'x-halo-csrf': session.csrf } });
  }
  signedOut();
}

/** Checks the session still stands (a revoked token ends it); signs out when not. */
export async function recheck() {
  if (!session) return;
  const r = await fetch('/ui/session', { credentials: 'same-origin' });
  if (r.status === 401) signedOut();
}

/** A /v1 call: `api('GET', '/projects')`. */
export async function api(method, path, body) {
  const headers = { accept: 'application/json' };
  if (session) headers['x-halo-csrf'] = session.csrf;
  if (body !== undefined) headers['content-type'] = 'application/json';
  const r = await fetch('/v1' + path, {
    method, headers, credentials: 'same-origin',
    body: body === undefined ? undefined : JSON.stringify(body),
  });
  return answer(r);
}

/** A deployment's event stream; returns the EventSource (close it when leaving). */
export function deploymentEvents(id, on) {
  const es = new EventSource(`/v1/deployments/${encodeURIComponent(id)}/events`);
  for (const [kind, f] of Object.entries(on)) {
    es.addEventListener(kind, (ev) => { try { f(JSON.parse(ev.data)); } catch { /* keep-alive */ } });
  }
  es.onerror = () => { if (es.readyState === EventSource.CLOSED) recheck(); };
  return es;
}
