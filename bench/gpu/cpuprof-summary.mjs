// Summarises a V8 .cpuprofile (from node --cpu-prof): the top functions by self and by inclusive time, ms per run.
import fs from 'node:fs';
const [dir, runsArg] = process.argv.slice(2);
const runs = Number(runsArg ?? 1);
const f = fs.readdirSync(dir).find((x) => x.endsWith('.cpuprofile'));
const p = JSON.parse(fs.readFileSync(`${dir}/${f}`, 'utf8'));
const byId = new Map(p.nodes.map((n) => [n.id, n]));
const parent = new Map();
for (const n of p.nodes) for (const c of n.children ?? []) parent.set(c, n.id);
const self = new Map(), incl = new Map();
const key = (n) => `${n.callFrame.functionName || '(anon)'} ${n.callFrame.url.split('/').pop()}:${n.callFrame.lineNumber}`;
p.samples.forEach((id, i) => {
  const dt = p.timeDeltas[i] ?? 0;
  const seen = new Set();
  let x = id, first = true;
  while (x !== undefined) {
    const k = key(byId.get(x));
    if (first) { self.set(k, (self.get(k) ?? 0) + dt); first = false; }
    if (!seen.has(k)) { seen.add(k); incl.set(k, (incl.get(k) ?? 0) + dt); }
    x = parent.get(x);
  }
});
const show = (m, n) => [...m].sort((a, b) => b[1] - a[1]).slice(0, n).forEach(([k, v]) => console.log(`${(v / 1000 / runs).toFixed(3).padStart(8)} ms/run  ${k}`));
console.log('--- self'); show(self, 25);
console.log('--- inclusive'); show(incl, 30);
