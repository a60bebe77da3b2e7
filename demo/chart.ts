// The latency chart: one series of per-run milliseconds per engine, drawn as SVG (no chart library).

export interface Series {
  label: string;
  color: string;
  ms: number[];
}

export const median = (xs: number[]): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s.length ? (s.length % 2 ? s[s.length >> 1] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2) : NaN;
};

const NS = 'http://www.w3.org/2000/svg';

function el(name: string, attrs: Record<string, string | number>, text?: string): SVGElement {
  const e = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) e.setAttribute(k, String(v));
  if (text !== undefined) e.textContent = text;
  return e;
}

/** A line chart of each series' runs (x: run number, y: ms from 0), with each median as a dashed line. */
export function latencyChart(series: Series[], title: string): SVGSVGElement {
  const W = 560, H = 260, L = 52, R = 150, T = 22, B = 34;
  const n = Math.max(1, ...series.map((s) => s.ms.length));
  const top = niceCeil(Math.max(1e-3, ...series.flatMap((s) => s.ms)));
  const x = (i: number) => L + (n === 1 ? 0.5 : i / (n - 1)) * (W - L - R);
  const y = (ms: number) => T + (1 - ms / top) * (H - T - B);
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title }) as SVGSVGElement;
  svg.append(el('text', { x: L, y: 14, 'font-size': 12, fill: '#333' }, title));
  for (let k = 0; k <= 4; k++) {
    const v = (top * k) / 4;
    svg.append(el('line', { x1: L, x2: W - R, y1: y(v), y2: y(v), stroke: '#e3e6ea' }));
    svg.append(el('text', { x: L - 6, y: y(v) + 4, 'font-size': 11, 'text-anchor': 'end', fill: '#555' }, String(+v.toPrecision(3))));
  }
  svg.append(el('text', { x: 12, y: T + (H - T - B) / 2, 'font-size': 11, fill: '#555', transform: `rotate(-90 12 ${T + (H - T - B) / 2})`, 'text-anchor': 'middle' }, 'ms per run'));
  for (let i = 0; i < n; i++) {
    if (n <= 12 || i % Math.ceil(n / 12) === 0 || i === n - 1) {
      svg.append(el('text', { x: x(i), y: H - B + 14, 'font-size': 11, 'text-anchor': 'middle', fill: '#555' }, String(i + 1)));
    }
  }
  svg.append(el('text', { x: L + (W - L - R) / 2, y: H - 4, 'font-size': 11, 'text-anchor': 'middle', fill: '#555' }, 'warm run'));
  series.forEach((s, k) => {
    if (!s.ms.length) return;
    const pts = s.ms.map((v, i) => `${x(i).toFixed(1)},${y(v).toFixed(1)}`).join(' ');
    svg.append(el('polyline', { points: pts, fill: 'none', stroke: s.color, 'stroke-width': 2, class: 'series', 'data-engine': s.label }));
    s.ms.forEach((v, i) => svg.append(el('circle', { cx: x(i), cy: y(v), r: 3, fill: s.color, class: 'point', 'data-engine': s.label, 'data-ms': v.toFixed(3) })));
    const m = median(s.ms);
    svg.append(el('line', { x1: L, x2: W - R, y1: y(m), y2: y(m), stroke: s.color, 'stroke-dasharray': '4 3', 'stroke-width': 1 }));
    const ly = T + 16 + k * 36;
    svg.append(el('rect', { x: W - R + 12, y: ly - 9, width: 10, height: 10, fill: s.color }));
    svg.append(el('text', { x: W - R + 28, y: ly, 'font-size': 12, fill: '#222' }, s.label));
    svg.append(el('text', { x: W - R + 28, y: ly + 15, 'font-size': 11, fill: '#555' }, `median ${fmt(m)} ms`));
  });
  return svg;
}

function niceCeil(v: number): number {
  const p = 10 ** Math.floor(Math.log10(v));
  // Tops whose quarters (the grid lines) are round numbers.
  for (const m of [1, 1.2, 1.6, 2, 2.4, 3, 4, 5, 6, 8, 10]) if (m * p >= v) return m * p;
  return 10 * p;
}

export function fmt(ms: number): string {
  return ms >= 100 ? ms.toFixed(0) : ms >= 10 ? ms.toFixed(1) : ms.toFixed(2);
}
