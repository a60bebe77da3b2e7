// Graph IR passes and shape inference on real models.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { loadModel } from '../src/onnx/load.js';
import { optimizeGraph } from '../src/graph/passes.js';
import { inferShapes } from '../src/graph/shapes.js';
import type { Graph } from '../src/graph/ir.js';
import { topoOrder } from '../src/graph/topo.js';
import { GraphError } from '../src/errors.js';
import { fixture, OCR_REC } from './helpers.js';

test('shape inference carries symbolic dims through the encoder', async () => {
  const m = await loadModel(fixture('encoder-small.onnx'));
  const types = inferShapes(m);
  const out = types.get('last_hidden_state');
  assert.ok(out && out.kind === 'tensor');
  assert.equal(out.dtype, 'float32');
  assert.deepEqual(out.shape, ['batch', 'sequence', 128]);
  // Every MatMul output in the encoder gets a rank-3 shape with the symbolic batch and sequence dims.
  const mm = m.graph.nodes.filter((n) => n.opType === 'MatMul').map((n) => types.get(n.outputs[0]));
  assert.ok(mm.length >= 8);
  for (const t of mm) assert.ok(t?.kind === 'tensor' && t.shape && t.shape[0] === 'batch', JSON.stringify(t));
});

test('passes fold Constant nodes, remove dead nodes and keep outputs', async () => {
  const m = await loadModel(OCR_REC);
  const before = m.graph.nodes.length;
  const consts = m.graph.nodes.filter((n) => n.opType === 'Constant').length;
  const s = optimizeGraph(m);
  assert.equal(s.constantsLifted, consts);
  assert.ok(m.graph.nodes.length < before - consts + 1, `${m.graph.nodes.length} nodes of ${before}`);
  assert.ok(!m.graph.nodes.some((n) => n.opType === 'Constant'));
  assert.equal(m.graph.outputs.length, 1);
});

test('identity elimination rewires consumers; a cycle is a typed GraphError', () => {
  const g: Graph = {
    name: 'g', initializers: new Map(), valueInfo: new Map(),
    inputs: [{ name: 'x', type: null }], outputs: [{ name: 'z', type: null }],
    nodes: [
      { name: 'a', opType: 'Identity', domain: '', inputs: ['x'], outputs: ['y'], attrs: new Map() },
      { name: 'b', opType: 'Relu', domain: '', inputs: ['y'], outputs: ['z'], attrs: new Map() },
    ],
  };
  const m = { irVersion: 8, producer: '', opsets: new Map([['', 17]]), graph: g, functions: new Map(), metadata: new Map() };
  const s = optimizeGraph(m);
  assert.equal(s.identitiesRemoved, 1);
  assert.deepEqual(g.nodes.map((n) => n.inputs[0]), ['x']);
  const cyc: Graph = { ...g, nodes: [
    { name: 'p', opType: 'Relu', domain: '', inputs: ['q'], outputs: ['p1'], attrs: new Map() },
    { name: 'q', opType: 'Relu', domain: '', inputs: ['p1'], outputs: ['q'], attrs: new Map() },
  ] };
  assert.throws(() => topoOrder(cyc), (e: unknown) => e instanceof GraphError && /cycle/.test(e.message));
});
