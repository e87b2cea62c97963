// One deployment: phases with timings, the build log (live while it builds), the file tree
// with sizes and a search, the diff against any other deployment, links and metadata.

import { h, s, mount, when, badge, bytes, ms, field, errorBox, short, toast } from './dom.js';
import { api, can, deploymentEvents } from './api.js';
import { confirmPromote } from './project.js';

const TERMINAL = new Set(['ready', 'error', 'canceled', 'deleted']);
const SHOWN = 500;

function phases(d) {
  const list = d.phases || [];
  const total = Math.max(1, ...list.map((p) => p.duration_ms || 0));
  return h('div', { class: 'phases panel', id: 'phases' }, list.map((p) => h('div', { class: 'phase' },
    h('span', {}, p.name, ' ', badge(p.status)),
    h('span', { class: 'bar', 'aria-hidden': 'true' }, s('svg', { viewBox: '0 0 100 10', preserveAspectRatio: 'none' },
      s('rect', { width: (100 * (p.duration_ms || 0)) / total, height: 10, class: 'f0' }))),
    h('span', {}, ms(p.duration_ms)))));
}

function line(e) {
  const parts = [e.at.slice(11, 23), e.type];
  if (e.phase) parts.push(e.phase);
  if (e.status) parts.push(e.status);
  if (e.message) parts.push(e.message);
  if (e.duration_ms !== undefined) parts.push(`(${ms(e.duration_ms)})`);
  if (e.missing !== undefined) parts.push(`${e.missing} to upload`);
  return parts.join('  ') + '\n';
}

function tree(files, sizes, query) {
  const paths = Object.keys(files).sort();
  const size = (p) => sizes[files[p]];
  if (query) {
    const q = query.toLowerCase();
    const hits = paths.filter((p) => p.toLowerCase().includes(q));
    return [h('p', { class: 'muted', role: 'status' }, `${hits.length} of ${paths.length} files match.`),
      h('ul', { class: 'tree' }, hits.slice(0, SHOWN).map((p) => h('li', {}, p, h('span', { class: 'size' }, bytes(size(p))))))];
  }
  const root = { dirs: new Map(), files: [] };
  for (const p of paths.slice(0, 20000)) {
    const segs = p.split('/');
    let node = root;
    for (const seg of segs.slice(0, -1)) {
      if (!node.dirs.has(seg)) node.dirs.set(seg, { dirs: new Map(), files: [] });
      node = node.dirs.get(seg);
    }
    node.files.push([segs[segs.length - 1], p]);
  }
  const total = (node) => [...node.dirs.values()].reduce((a, d) => a + total(d), 0)
    + node.files.reduce((a, [, p]) => a + (size(p) || 0), 0);
  const render = (node) => h('ul', {},
    [...node.dirs].map(([name, d]) => h('li', {}, h('details', {},
      h('summary', {}, `${name}/`, h('span', { class: 'size' }, bytes(total(d)))), render(d)))),
    node.files.map(([name, p]) => h('li', {}, name, h('span', { class: 'size' }, bytes(size(p))))));
  return [paths.length > 20000 ? h('p', { class: 'muted' }, 'The first 20,000 paths; search finds any.') : null,
    h('div', { class: 'tree' }, render(root))];
}

export async function deploymentPage(main, id) {
  let d = await api('GET', `/deployments/${encodeURIComponent(id)}`);
  const project = await api('GET', `/projects/${d.project_id}`);
  const head = h('div');
  const log = h('pre', { class: 'log', id: 'log', tabindex: 0, 'aria-label': 'Build log' });
  const phaseBox = h('div');
  let es = null;

  function header() {
    const prod = project.production_deployment_id === d.id;
    const meta = Object.entries(d.metadata || {});
    mount(head,
      h('p', {}, h('a', { href: `#/projects/${project.id}` }, `← ${project.name}`)),
      h('h1', {}, `${project.name} #${d.number} `, h('span', { id: 'status' }, badge(d.status)),
        prod ? [' ', h('span', { class: 'badge prod' }, 'production')] : null),
      h('dl', { class: 'kv panel' },
        h('dt', {}, 'Preview'), h('dd', {}, h('a', { href: d.url, id: 'preview-link' }, d.url)),
        d.aliases.length ? [h('dt', {}, 'Also at'), h('dd', {}, d.aliases.flatMap((u, i) => [i ? ', ' : '', h('a', { href: u }, u)]))] : null,
        h('dt', {}, 'Id'), h('dd', {}, h('code', {}, d.id)),
        h('dt', {}, 'Target'), h('dd', {}, d.target),
        h('dt', {}, 'Created'), h('dd', {}, when(d.created_at), d.created_by ? ` by ${d.created_by}` : ''),
        h('dt', {}, 'Files'), h('dd', {}, `${d.file_count} files, ${bytes(d.total_bytes)}`),
        h('dt', {}, 'Took'), h('dd', {}, `queued ${ms(d.timings.queued_ms)}, building ${ms(d.timings.building_ms)}`),
        d.error ? [h('dt', {}, 'Error'), h('dd', { class: 'error' }, d.error)] : null,
        meta.map(([k, v]) => [h('dt', {}, k), h('dd', {}, v)])),
      can('deployments:write') && d.status === 'ready' && !prod
        ? h('button', { 'data-action': 'promote', onclick: async () => {
          try { if (await confirmPromote(d, { ...project, production_number: await prodNumber() })) location.reload(); } catch (e) { toast(e.message); }
        } }, 'Promote to production') : null);
  }
  async function prodNumber() {
    if (!project.production_deployment_id) return null;
    return (await api('GET', `/deployments/${project.production_deployment_id}`)).number;
  }

  header();
  mount(phaseBox, phases(d));
  const { data: entries } = await api('GET', `/deployments/${d.id}/logs`);
  log.textContent = entries.map(line).join('');
  let last = entries.length ? entries[entries.length - 1].id : 0;
  if (!TERMINAL.has(d.status)) {
    const append = (e) => {
      if (e.id <= last) return;
      last = e.id;
      log.append(line(e));
      log.scrollTop = log.scrollHeight;
    };
    es = deploymentEvents(d.id, {
      phase: append, progress: append,
      status: async (e) => {
        append(e);
        mount(head.querySelector('#status'), badge(e.status));
        if (e.terminal) {
          es.close();
          d = await api('GET', `/deployments/${d.id}`);
          header();
          mount(phaseBox, phases(d));
        }
      },
    });
  }

  // Files.
  const fileBox = h('div', {}, h('p', { class: 'muted' }, 'Loading files…'));
  const search = h('input', { type: 'search', name: 'q', placeholder: 'Filter paths' });
  const loadFiles = () => api('GET', `/deployments/${d.id}/files?sizes=true`).then((f) => {
    const show = () => mount(fileBox, tree(f.files, f.sizes || {}, search.value.trim()));
    search.addEventListener('input', show);
    show();
  }, (e) => mount(fileBox, errorBox(e)));
  // A very large tree is fetched only when asked for (its list alone is megabytes).
  if (d.file_count > 50000) {
    mount(fileBox, h('button', { class: 'secondary', onclick: () => {
      mount(fileBox, h('p', { class: 'muted' }, 'Loading files…'));
      loadFiles();
    } }, `Load the list of ${d.file_count.toLocaleString()} files`));
  } else {
    loadFiles();
  }

  // Diff against another deployment of the project.
  const { data: others } = await api('GET', `/deployments?project_id=${project.id}&limit=100`);
  const against = h('select', { name: 'against' },
    h('option', { value: '' }, 'Choose a deployment…'),
    others.filter((o) => o.id !== d.id).map((o) => h('option', { value: o.id },
      `#${o.number} ${o.status}${o.id === project.production_deployment_id ? ' (production)' : ''}`)));
  const diffBox = h('div', { 'aria-live': 'polite' });
  against.addEventListener('change', async () => {
    if (!against.value) return mount(diffBox);
    try {
      const r = await api('GET', `/deployments/${d.id}/diff?against=${against.value}&limit=500`);
      const sign = { added: ['+', 'add'], changed: ['~', 'chg'], removed: ['−', 'del'] };
      mount(diffBox,
        h('p', {}, `${r.added} added, ${r.changed} changed, ${r.removed} removed, ${r.unchanged} unchanged (this deployment against ${short(r.from)}).`),
        h('ul', { class: 'diff-list' }, r.files.map((x) => h('li', { class: sign[x.change][1] }, `${sign[x.change][0]} ${x.path}`))),
        r.truncated ? h('p', { class: 'muted' }, 'First 500 shown.') : null);
    } catch (e) { mount(diffBox, errorBox(e)); }
  });

  mount(main, head,
    h('h2', {}, 'Phases'), phaseBox,
    h('h2', {}, 'Build log'), log,
    h('h2', {}, 'Files'), h('div', { class: 'panel' }, field('Search files', search), fileBox),
    h('h2', {}, 'Compare'), h('div', { class: 'panel' }, field('Against', against), diffBox));
  return () => { if (es) es.close(); };
}
