// Small SVG charts: a sparkline and a multi-series line chart with a time axis. Every
// chart carries a text summary for screen readers; nothing here needs a library.

import { h, s } from './dom.js';

/** A sparkline of `values` (oldest first); `label` describes it for assistive tech. */
export function sparkline(values, label) {
  const w = 120, ht = 28, pad = 2;
  const svg = s('svg', { class: 'spark', viewBox: `0 0 ${w} ${ht}`, role: 'img', 'aria-label': label });
  if (values.length < 2) {
    svg.append(s('line', { x1: 0, x2: w, y1: ht - pad, y2: ht - pad, class: 'axis' }));
    return svg;
  }
  const max = Math.max(...values, 1);
  const pts = values.map((v, i) =>
    `${(pad + (i * (w - 2 * pad)) / (values.length - 1)).toFixed(1)},${(ht - pad - (v / max) * (ht - 2 * pad)).toFixed(1)}`);
  svg.append(s('title', {}, label), s('polyline', { points: pts.join(' '), class: 'c0' }));
  return svg;
}

function niceMax(v) {
  if (v <= 0) return 1;
  const p = 10 ** Math.floor(Math.log10(v));
  for (const m of [1, 2, 2.5, 5, 10]) if (v <= m * p) return m * p;
  return 10 * p;
}

/**
 * A line chart. `times`: Unix seconds per point; `series`: [{name, values}]; `format`:
 * how a y value reads. Returns a figure with the chart, a legend and a hidden table.
 */
export function lineChart({ title, times, series, format = String, yMax }) {
  const w = 960, ht = 220, left = 64, right = 10, top = 10, bottom = 26;
  const max = yMax ?? niceMax(Math.max(0, ...series.flatMap((x) => x.values)));
  const x = (i) => left + (i * (w - left - right)) / Math.max(times.length - 1, 1);
  const y = (v) => top + (ht - top - bottom) * (1 - v / max);
  const svg = s('svg', { class: 'chart', viewBox: `0 0 ${w} ${ht}`, role: 'img', 'aria-label': title });
  svg.append(s('title', {}, title));
  for (const f of [0, 0.5, 1]) {
    svg.append(
      s('line', { x1: left, x2: w - right, y1: y(max * f), y2: y(max * f), class: 'axis' }),
      s('text', { x: left - 6, y: y(max * f) + 4, 'text-anchor': 'end' }, format(max * f)));
  }
  const ticks = Math.min(6, times.length);
  for (let k = 0; k < ticks; k++) {
    const i = Math.round((k * (times.length - 1)) / Math.max(ticks - 1, 1));
    const t = new Date(times[i] * 1000);
    const anchor = k === 0 ? 'start' : k === ticks - 1 ? 'end' : 'middle';
    svg.append(s('text', { x: x(i), y: ht - 8, 'text-anchor': anchor },
      t.toLocaleTimeString([], { hour: '2-digit', minute: '2-digit' })));
  }
  series.forEach((ser, n) => {
    const pts = ser.values.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(s('polyline', { points: pts, class: `c${n % 5}` }));
  });
  const legend = h('ul', { class: 'legend' }, series.map((ser, n) =>
    h('li', {}, s('svg', { width: 14, height: 4, 'aria-hidden': 'true' },
      s('rect', { width: 14, height: 4, class: `f${n % 5}` })), ' ', ser.name)));
  const total = (ser) => ser.values.reduce((a, b) => a + b, 0);
  const table = h('table', { class: 'visually-hidden' },
    h('caption', {}, title),
    h('tr', {}, h('th', {}, 'series'), h('th', {}, 'total'), h('th', {}, 'latest')),
    series.map((ser) => h('tr', {}, h('td', {}, ser.name), h('td', {}, format(total(ser))),
      h('td', {}, format(ser.values[ser.values.length - 1] ?? 0)))));
  return h('figure', { class: 'panel' }, h('figcaption', {}, h('strong', {}, title)), svg, legend, table);
}
