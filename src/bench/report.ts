// The benchmark report: rows as the bench command measured them, rendered as a self-contained HTML page with one
// bar chart per suite (webjit's speed relative to the best web peer and to the best peer, log scale) and the tables.

export interface BenchRow {
  suite: 'ops' | 'models';
  category: string;
  name: string;
  engine: string;
  /** ok: within 1e-4 of max|ref| of onnxruntime-node; wrong: not (no time counts); error: the engine failed. */
  check: 'ok' | 'wrong' | 'error' | 'unchecked';
  error?: string;
  relErr: number | null;
  createMs: number;
  firstMs: number;
  medianMs: number;
  minMs: number;
  maxMs: number;
  gflops?: number;
  gbs?: number;
  /** On webjit's rows: the fastest correct peer's median over webjit's. */
  vsBest?: { engine: string; ratio: number };
  /** On webjit's rows: the same against the fastest web peer (onnxruntime-web, TensorFlow.js). */
  vsWeb?: { engine: string; ratio: number };
}

export interface BenchReport {
  date: string;
  commit: string;
  device: string;
  node: string;
  /** The machine the process ran on (the GPU suite's device is the adapter). */
  host?: string;
  threads: number;
  rounds: number;
  suite: string;
  /** max|err| / max|ref| within which an output counted as correct. */
  tolerance?: number;
  notes?: string[];
  rows: BenchRow[];
}

const esc = (s: string) => s.replace(/[&<>"]/g, (c) => ({ '&': '&amp;', '<': '&lt;', '>': '&gt;', '"': '&quot;' })[c]!);
const num = (x: number | undefined, d = 2) => (x !== undefined && Number.isFinite(x) ? (x < 10 ? x.toFixed(d) : x.toFixed(1)) : '—');

/** Horizontal bars on a log scale around 1×: per case, webjit against the best web peer and against the best peer. */
function chart(title: string, rows: BenchRow[]): string {
  const w = rows.filter((r) => r.vsBest);
  if (!w.length) return '';
  const ratios = w.flatMap((r) => [r.vsBest!.ratio, r.vsWeb?.ratio ?? 1]);
  const lo = Math.min(0.25, ...ratios.map((r) => r / 1.2)), hi = Math.max(4, ...ratios.map((r) => r * 1.2));
  const L = 330, W = 460, rowH = 30, H = w.length * rowH + 40;
  const x = (r: number) => L + ((Math.log(r) - Math.log(lo)) / (Math.log(hi) - Math.log(lo))) * W;
  const parts: string[] = [];
  for (const t of [0.25, 0.5, 1, 2, 4, 8].filter((t) => t >= lo && t <= hi)) {
    parts.push(`<line x1="${x(t)}" x2="${x(t)}" y1="20" y2="${H - 18}" stroke="${t === 1 ? '#444' : '#ddd'}" stroke-width="${t === 1 ? 1.5 : 1}"/>`);
    parts.push(`<text x="${x(t)}" y="${H - 4}" text-anchor="middle" font-size="11">${t}×</text>`);
  }
  w.forEach((r, i) => {
    const y = 24 + i * rowH;
    const label = r.engine.endsWith(' resident') ? `${r.name.slice(0, 36)} (resident)` : r.name;
    parts.push(`<text x="${L - 8}" y="${y + 16}" text-anchor="end" font-size="12">${esc(label.length > 48 ? `${label.slice(0, 46)}…` : label)}</text>`);
    const bar = (ratio: number, dy: number, color: string, label: string) => {
      const a = x(Math.min(1, ratio)), b = x(Math.max(1, ratio));
      parts.push(`<rect x="${a}" y="${y + dy}" width="${Math.max(1, b - a)}" height="11" fill="${color}"><title>${esc(label)}</title></rect>`);
      parts.push(`<text x="${b + 4}" y="${y + dy + 10}" font-size="10">${ratio.toFixed(2)}×</text>`);
    };
    if (r.vsWeb) bar(r.vsWeb.ratio, 2, '#2f7ed8', `vs ${r.vsWeb.engine}`);
    bar(r.vsBest!.ratio, 14, '#f28f43', `vs ${r.vsBest!.engine}`);
  });
  return `<h3>${esc(title)}</h3>
<svg xmlns="http://www.w3.org/2000/svg" width="${L + W + 60}" height="${H}" font-family="sans-serif">${parts.join('')}</svg>
<p class="legend"><span style="background:#2f7ed8"></span> webjit against the fastest web peer (onnxruntime-web, TensorFlow.js)
<span style="background:#f28f43"></span> against the fastest peer including native onnxruntime (and PyTorch on the GPU). Rows marked
resident compare inputs and outputs left on the GPU with each other. Right of 1×: webjit is faster.</p>`;
}

function table(rows: BenchRow[], models: boolean): string {
  const head = ['case', 'engine', 'median ms', 'min', 'max', ...(models ? ['create ms', 'first run ms'] : ['GFLOP/s', 'GB/s']), 'check', 'webjit vs best web peer', 'vs best peer'];
  const body = rows.map((r) => {
    const check = r.check === 'ok' ? `ok (${r.relErr?.toExponential(1)})` : r.check === 'wrong' ? `<b>WRONG</b> (${r.relErr?.toExponential(1)})` : r.check === 'error' ? `n/a: ${esc((r.error ?? '').slice(0, 80))}` : r.check;
    const cells = [esc(r.name), esc(r.engine), num(r.medianMs), num(r.minMs), num(r.maxMs), ...(models ? [num(r.createMs, 1), num(r.firstMs, 1)] : [num(r.gflops, 1), num(r.gbs, 1)]), check,
      r.vsWeb ? `<b>${r.vsWeb.ratio.toFixed(2)}×</b>` : '', r.vsBest ? `${r.vsBest.ratio.toFixed(2)}×` : ''];
    return `<tr${r.engine.startsWith('webjit') ? ' class="ours"' : ''}>${cells.map((c) => `<td>${c}</td>`).join('')}</tr>`;
  });
  return `<table><tr>${head.map((h) => `<th>${h}</th>`).join('')}</tr>${body.join('\n')}</table>`;
}

export function renderHtml(r: BenchReport): string {
  const sections: string[] = [];
  for (const [suite, title] of [['ops', 'Op suite'], ['models', 'Model suite']] as const) {
    const rows = r.rows.filter((x) => x.suite === suite);
    if (!rows.length) continue;
    const cats = [...new Set(rows.map((x) => x.category))];
    sections.push(`<h2>${title}</h2>`);
    sections.push(chart(`${title}: webjit's speed relative to its peers`, rows.filter((x) => x.engine.startsWith('webjit'))));
    for (const c of cats) {
      if (suite === 'ops') sections.push(`<h3>${esc(c)}</h3>`);
      sections.push(table(rows.filter((x) => x.category === c), suite === 'models'));
    }
  }
  return `<!doctype html>
<html><head><meta charset="utf-8"><title>webjit benchmark ${esc(r.date.slice(0, 10))}</title>
<style>
body { font-family: sans-serif; margin: 2em; max-width: 1200px; color: #222; }
table { border-collapse: collapse; margin: 0.5em 0 1.5em; font-size: 13px; }
td, th { border: 1px solid #ccc; padding: 3px 8px; text-align: right; }
td:first-child, td:nth-child(2), th:first-child, th:nth-child(2) { text-align: left; }
tr.ours { background: #eef5ff; }
.legend span { display: inline-block; width: 12px; height: 12px; margin: 0 4px 0 12px; vertical-align: middle; }
</style></head><body>
<h1>webjit benchmark</h1>
<p>${esc(r.suite === 'gpu' ? 'GPU' : 'CPU')} suite · ${esc(r.date)} · commit <code>${esc(r.commit)}</code> · ${esc(r.device)}${r.host && r.host !== r.device ? ` on ${esc(r.host)}` : ''}
· Node ${esc(r.node)} · ${r.threads} threads per CPU engine · medians over ${r.rounds} round${r.rounds === 1 ? '' : 's'}, engines
interleaved. Every engine's output was checked against ${r.suite === 'gpu' ? "onnxruntime's native CPU build" : 'onnxruntime-node'}
(max|err| / max|ref| ≤ ${r.tolerance ?? 1e-4}) before its time counted.</p>
${(r.notes ?? []).map((n) => `<p>${esc(n)}</p>`).join('\n')}
${sections.join('\n')}
</body></html>
`;
}
