// The tuning report as a terminal table: per kernel, the space, candidates tried and rejected, default and tuned time.
import type { TuneReport } from './tuner.js';

export function formatReport(r: TuneReport): string {
  const head = ['kernel', 'nodes', 'space', 'tried', 'rejected', 'default ms', 'tuned ms', 'speedup', 'winner'];
  const rows = r.rows.map((x) => [
    `${x.family} ${x.sig.length > 48 ? `${x.sig.slice(0, 47)}…` : x.sig}`, String(x.nodes), `${x.before}→${x.after}`, String(x.tried), String(x.rejected),
    x.defaultMs.toFixed(4), x.tunedMs.toFixed(4), `${(x.defaultMs / x.tunedMs).toFixed(2)}×`,
    x.changed ? Object.entries(x.params).map(([k, v]) => `${k}=${v}`).join(' ') : '(default)',
  ]);
  const w = head.map((h, i) => Math.max(h.length, ...rows.map((row) => row[i].length)));
  const line = (cells: string[]) => cells.map((c, i) => (i === 0 || i === 8 ? c.padEnd(w[i]) : c.padStart(w[i]))).join('  ');
  const out = [line(head), ...rows.map(line)];
  if (r.skipped) out.push(`${r.skipped} kernels left untuned (budget)`);
  out.push(`${r.rows.length} kernels tuned, ${r.rejected} candidates rejected by verification, device ${r.device}`);
  if (r.model) {
    out.push(`whole model: ${r.model.defaultMs.toFixed(3)} ms with the defaults, ${r.model.tunedMs.toFixed(3)} ms tuned: ${r.model.kept ? 'kept' : 'not faster, the defaults put back'}`);
  }
  return out.join('\n');
}

/**
 * Whether a tuned session runs other kernels than its defaults: some winner changed and, where the whole model was
 * checked, was kept. When not, an end-to-end difference between the two sessions is the machine's noise.
 */
export function kernelsChanged(r: TuneReport): boolean {
  return r.rows.some((x) => x.changed) && (!r.model || r.model.kept);
}
