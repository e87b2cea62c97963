// The projects overview, and the traffic page (per-host plots, cache hit ratio, deploy
// durations over time).

import { h, mount, when, badge, bytes, ms, short } from './dom.js';
import { api } from './api.js';
import { sparkline, lineChart } from './charts.js';

export function duration(d) {
  const t = d.timings;
  return t.queued_ms === null || t.building_ms === null ? null : t.queued_ms + t.building_ms;
}

async function recent(projectId, limit) {
  const page = await api('GET', `/deployments?project_id=${encodeURIComponent(projectId)}&limit=${limit}`);
  return page.data;
}

export async function projectsPage(main) {
  const { data: projects } = await api('GET', '/projects');
  const rows = await Promise.all(projects.map(async (p) => [p, await recent(p.id, 20)]));
  const body = rows.map(([p, deps]) => {
    const last = deps[0];
    const times = deps.map(duration).filter((v) => v !== null).reverse();
    return h('tr', {},
      h('td', {}, h('a', { href: `#/projects/${p.id}` }, p.name)),
      h('td', {}, p.production_deployment_id ? h('a', { href: p.url }, p.url) : h('span', { class: 'muted' }, 'not promoted yet')),
      h('td', {}, p.production_deployment_id
        ? h('a', { href: `#/deployments/${p.production_deployment_id}` }, short(p.production_deployment_id)) : '—'),
      h('td', {}, last ? [badge(last.status), ' ', when(last.created_at)] : '—'),
      h('td', { class: 'hide-narrow' }, sparkline(times,
        `Deploy durations of the last ${times.length} deployments: ${times.map(ms).join(', ') || 'none'}`)));
  });
  mount(main,
    h('h1', {}, 'Projects'),
    projects.length === 0
      ? h('p', { class: 'panel' }, 'No projects yet. Deploy one: ', h('code', {}, 'halo deploy ./site --project my-site --prod'))
      : h('div', { class: 'scroll' }, h('table', { id: 'projects' },
        h('caption', { class: 'visually-hidden' }, 'Projects'),
        h('thead', {}, h('tr', {}, h('th', {}, 'Project'), h('th', {}, 'Production URL'),
          h('th', {}, 'Serving'), h('th', {}, 'Last deploy'), h('th', { class: 'hide-narrow' }, 'Deploy durations'))),
        h('tbody', {}, body))));
}

export async function trafficPage(main) {
  const [traffic, { data: projects }] = await Promise.all([api('GET', '/traffic'), api('GET', '/projects')]);
  const parts = [h('h1', {}, 'Traffic')];
  if (!traffic.available) {
    parts.push(h('p', { class: 'panel' },
      'This control-plane replica runs no edge, so it has no traffic to show. Each edge node exports ',
      'its per-host counters on its own /metrics (halo_edge_host_requests_total).'));
  } else {
    const n = traffic.cache.length;
    const times = Array.from({ length: n }, (_, i) => traffic.start + i * traffic.bucket_secs);
    const top = traffic.hosts.slice(0, 5);
    parts.push(h('p', { class: 'muted' }, `Five-minute buckets over the last ${n * traffic.bucket_secs / 3600} hours, as counted by this process's edge.`));
    parts.push(lineChart({
      title: 'Requests per host', times,
      series: top.map((x) => ({ name: x.host, values: x.buckets.map((b) => b.by_class.reduce((a, c) => a + c, 0)) })),
    }));
    parts.push(lineChart({
      title: 'Bytes sent per host', times, format: bytes,
      series: top.map((x) => ({ name: x.host, values: x.buckets.map((b) => b.bytes) })),
    }));
    const classes = ['1xx', '2xx', '3xx', '4xx', '5xx'];
    parts.push(lineChart({
      title: 'Answers by status class (all hosts)', times,
      series: classes.map((name, c) => ({
        name, values: times.map((_, i) => traffic.hosts.reduce((a, x) => a + x.buckets[i].by_class[c], 0)),
      })).filter((ser) => ser.values.some((v) => v > 0)),
    }));
    parts.push(lineChart({
      title: 'Cache hit ratio', times, yMax: 100, format: (v) => `${Math.round(v)} %`,
      series: [{ name: 'hits / reads', values: traffic.cache.map((c) => (c.hits + c.misses ? (100 * c.hits) / (c.hits + c.misses) : 0)) }],
    }));
    if (traffic.hosts.length === 0) parts.push(h('p', { class: 'muted' }, 'No requests in this window yet.'));
  }
  // Deploy durations over time, every project's ready deployments.
  const deps = (await Promise.all(projects.map((p) => recent(p.id, 50)))).flat()
    .filter((d) => d.status === 'ready' && duration(d) !== null)
    .sort((a, b) => Date.parse(a.created_at) - Date.parse(b.created_at));
  if (deps.length > 1) {
    parts.push(lineChart({
      title: 'Deploy durations (ready deployments, oldest first)', format: ms,
      times: deps.map((d) => Date.parse(d.created_at) / 1000),
      series: [{ name: 'queued + building', values: deps.map(duration) }],
    }));
  }
  mount(main, parts);
}
