// Building the page safely: every text goes in as text (never as HTML), and the few
// formatting helpers every page shares.

const SVG = 'http://www.w3.org/2000/svg';

function build(el, attrs, children) {
  for (const [k, v] of Object.entries(attrs || {})) {
    if (v === undefined || v === null || v === false) continue;
    if (k.startsWith('on')) el.addEventListener(k.slice(2), v);
    else if (k === 'class') el.setAttribute('class', v);
    else el.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children.flat(Infinity)) {
    if (c === undefined || c === null || c === false) continue;
    el.append(c instanceof Node ? c : document.createTextNode(String(c)));
  }
  return el;
}

/** An HTML element: h('a', {href: '#/'}, 'Home'). */
export function h(tag, attrs, ...children) {
  return build(document.createElement(tag), attrs, children);
}

/** An SVG element. */
export function s(tag, attrs, ...children) {
  return build(document.createElementNS(SVG, tag), attrs, children);
}

/** Replaces what `el` holds. */
export function mount(el, ...children) {
  el.replaceChildren();
  build(el, {}, children);
  return el;
}

export function bytes(n) {
  if (n === null || n === undefined) return '—';
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let i = 0;
  while (n >= 1024 && i < units.length - 1) { n /= 1024; i++; }
  return `${i ? n.toFixed(1) : n} ${units[i]}`;
}

export function ms(n) {
  if (n === null || n === undefined) return '—';
  if (n < 1000) return `${n} ms`;
  if (n < 60000) return `${(n / 1000).toFixed(1)} s`;
  return `${Math.floor(n / 60000)} min ${Math.round((n % 60000) / 1000)} s`;
}

export function ago(iso) {
  if (!iso) return '—';
  const secs = Math.round((Date.now() - Date.parse(iso)) / 1000);
  if (secs < 60) return `${Math.max(secs, 0)} s ago`;
  if (secs < 3600) return `${Math.floor(secs / 60)} min ago`;
  if (secs < 86400) return `${Math.floor(secs / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

/** A time element: relative text, the exact time on hover and for screen readers. */
export function when(iso) {
  if (!iso) return '—';
  return h('time', { datetime: iso, title: new Date(iso).toLocaleString() }, ago(iso));
}

export function badge(status) {
  return h('span', { class: `badge s-${status}`, 'data-status': status }, status);
}

/** A labelled form field. */
export function field(label, input, hint) {
  const id = input.id || `f-${Math.random().toString(36).slice(2, 9)}`;
  input.id = id;
  return h('div', { class: 'field' },
    h('label', { for: id }, label), input,
    hint ? h('span', { class: 'hint' }, hint) : null);
}

export function toast(text) {
  const t = document.getElementById('toast');
  t.textContent = text;
  clearTimeout(toast.timer);
  toast.timer = setTimeout(() => { t.textContent = ''; }, 5000);
}

/** A modal confirmation; resolves true when confirmed. */
export function confirmDialog(title, body, action, danger) {
  return new Promise((resolve) => {
    const dlg = h('dialog', { 'aria-labelledby': 'dlg-title' });
    const done = (v) => { dlg.close(); dlg.remove(); resolve(v); };
    mount(dlg,
      h('h2', { id: 'dlg-title' }, title), body,
      h('div', { class: 'toolbar' },
        h('button', { class: danger ? 'danger' : '', onclick: () => done(true), 'data-confirm': '' }, action),
        h('button', { class: 'secondary', onclick: () => done(false) }, 'Cancel')));
    dlg.addEventListener('cancel', () => done(false));
    document.body.append(dlg);
    dlg.showModal();
  });
}

export function errorBox(err) {
  return h('p', { class: 'error', role: 'alert' }, err.message || String(err));
}

export function short(id) {
  return id ? id.slice(0, 12) : '—';
}
