// `webjit info`: a model's inputs, outputs, opsets, op histogram, parameter count and bytes.
import { formatType, type Graph } from '../graph/ir.js';
import { loadModel } from '../onnx/load.js';
import { subgraphsOf } from '../graph/topo.js';
import { DTYPES, Tensor } from '../tensor.js';

export async function infoCommand(model: string, json: boolean): Promise<number> {
  const m = await loadModel(model);
  const g = m.graph;
  const hist = new Map<string, number>();
  let params = 0, bytes = 0;
  const walk = (gr: Graph) => {
    for (const n of gr.nodes) {
      const k = n.domain ? `${n.domain}.${n.opType}` : n.opType;
      hist.set(k, (hist.get(k) ?? 0) + 1);
      const v = n.opType === 'Constant' ? n.attrs.get('value')?.value : undefined;
      if (v instanceof Tensor) { params += v.size; bytes += Math.ceil(v.size * DTYPES[v.type].rawBytes); }
      subgraphsOf(n).forEach(walk);
    }
    for (const t of gr.initializers.values()) { params += t.size; bytes += Math.ceil(t.size * DTYPES[t.type].rawBytes); }
  };
  walk(g);
  const inputs = g.inputs.filter((i) => !g.initializers.has(i.name)).map((i) => ({ name: i.name, type: formatType(i.type) }));
  const outputs = g.outputs.map((o) => ({ name: o.name, type: formatType(o.type) }));
  const opsets = Object.fromEntries([...m.opsets].map(([d, v]) => [d || 'ai.onnx', v]));
  const ops = Object.fromEntries([...hist].sort((a, b) => b[1] - a[1]));
  if (json) {
    console.log(JSON.stringify({ ir_version: m.irVersion, producer: m.producer, opsets, inputs, outputs, ops, parameters: params, parameter_bytes: bytes }));
    return 0;
  }
  console.log(`model      ${model}`);
  console.log(`ir         ${m.irVersion}${m.producer ? `, produced by ${m.producer}` : ''}`);
  console.log(`opsets     ${Object.entries(opsets).map(([d, v]) => `${d} ${v}`).join(', ')}`);
  console.log('inputs');
  for (const i of inputs) console.log(`  ${i.name}: ${i.type}`);
  console.log('outputs');
  for (const o of outputs) console.log(`  ${o.name}: ${o.type}`);
  console.log(`parameters ${params.toLocaleString('en-US')} (${(bytes / 1048576).toFixed(2)} MiB)`);
  console.log(`nodes      ${[...hist.values()].reduce((a, b) => a + b, 0)}`);
  for (const [op, c] of Object.entries(ops)) console.log(`  ${op.padEnd(28)} ${c}`);
  return 0;
}
