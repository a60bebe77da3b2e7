// Runs one ONNX backend test folder (model.onnx + test_data_set_*/) and classifies the result.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { UnsupportedError, WebjitError } from '../errors.js';
import type { Graph, ValueType } from '../graph/ir.js';
import { decodeModel, decodeValueProto } from '../onnx/decode.js';
import { subgraphsOf } from '../graph/topo.js';
import { InferenceSession, type BackendName } from '../session.js';
import type { Value } from '../tensor.js';
import { compareValues } from './compare.js';

export type Status = 'passed' | 'failed' | 'unsupported' | 'error';

export interface TestResult {
  name: string;
  dir: string;
  /** The op the test is about (for the per-op summary). */
  op: string;
  status: Status;
  /** In the standard ai.onnx domain and free of string, sequence, optional and training ops. */
  standard: boolean;
  maxAbsErr?: number;
  message?: string;
  ms: number;
}

export interface RunOptions {
  backend: BackendName;
  noFallback: boolean;
}

export function listTests(dirs: string[], filter?: RegExp): string[] {
  const out: string[] = [];
  for (const d of dirs) {
    if (!fs.existsSync(d)) continue;
    for (const name of fs.readdirSync(d).sort()) {
      const p = path.join(d, name);
      if (fs.existsSync(path.join(p, 'model.onnx')) && (!filter || filter.test(name))) out.push(p);
    }
  }
  return out;
}

const kindOf = (t: ValueType | null): 'tensor' | 'sequence' | 'optional' | 'map' =>
  t?.kind === 'sequence' ? 'sequence' : t?.kind === 'optional' ? 'optional' : t?.kind === 'map' ? 'map' : 'tensor';

export async function runTest(dir: string, opts: RunOptions): Promise<TestResult> {
  const name = path.basename(dir);
  const t0 = performance.now();
  let op = name.replace(/^test_/, '');
  let standard = true;
  try {
    const m = decodeModel(new Uint8Array(fs.readFileSync(path.join(dir, 'model.onnx'))));
    op = primaryOp(name, m.graph.nodes.map((n) => n.opType));
    standard = isStandard(m.graph);
  } catch { /* reported by create below */ }
  const result = (status: Status, extra: Partial<TestResult> = {}): TestResult =>
    ({ name, dir, op, status, standard, ms: performance.now() - t0, ...extra });
  let session: InferenceSession;
  try {
    session = await InferenceSession.create(path.join(dir, 'model.onnx'), { backend: opts.backend, optimize: false, fallback: !opts.noFallback, threads: opts.backend === 'wasm' ? 1 : undefined });
  } catch (e) {
    return classifyError(e, result);
  }
  const g = session.model.graph;
  const inputs = g.inputs.filter((i) => !g.initializers.has(i.name));
  const sets = fs.readdirSync(dir).filter((d) => d.startsWith('test_data_set_')).sort();
  let maxErr = 0;
  for (const set of sets) {
    const sd = path.join(dir, set);
    const feeds = new Map<string, Value>();
    try {
      inputs.forEach((vi, k) => {
        const f = path.join(sd, `input_${k}.pb`);
        if (fs.existsSync(f)) feeds.set(vi.name, decodeValueProto(new Uint8Array(fs.readFileSync(f)), kindOf(vi.type)));
      });
    } catch (e) {
      return result('error', { message: `reading test data: ${(e as Error).message}` });
    }
    let outs: Value[];
    try {
      outs = await session.runValues(feeds);
    } catch (e) {
      return classifyError(e, result);
    }
    for (let k = 0; k < g.outputs.length; k++) {
      const f = path.join(sd, `output_${k}.pb`);
      if (!fs.existsSync(f)) continue;
      const want = decodeValueProto(new Uint8Array(fs.readFileSync(f)), kindOf(g.outputs[k].type));
      const c = compareValues(outs[k], want);
      if (!c.ok) return result('failed', { maxAbsErr: c.maxAbsErr, message: `${set} output ${k} '${g.outputs[k].name}': ${c.reason}` });
      maxErr = Math.max(maxErr, c.maxAbsErr);
    }
  }
  await session.release();
  return result('passed', { maxAbsErr: maxErr });
}

function classifyError(e: unknown, result: (s: Status, x?: Partial<TestResult>) => TestResult): TestResult {
  const msg = e instanceof Error ? `${e.name}: ${e.message}` : String(e);
  if (e instanceof UnsupportedError) return result('unsupported', { message: msg });
  return result('error', { message: msg + (e instanceof WebjitError ? '' : `\n${(e as Error)?.stack ?? ''}`) });
}

/** The op a test is about: the graph op whose name best matches the test name. */
function primaryOp(testName: string, ops: string[]): string {
  const t = testName.replace(/^test_/, '').replace(/_/g, '').toLowerCase();
  let best = ops[0] ?? '?';
  let bestLen = 0;
  for (const o of new Set(ops)) {
    const l = o.toLowerCase();
    if (t.startsWith(l) && l.length > bestLen) { best = o; bestLen = l.length; }
  }
  return best;
}

const NON_STANDARD_OPS = new Set([
  'StringNormalizer', 'StringConcat', 'StringSplit', 'RegexFullMatch', 'TfIdfVectorizer',
  'SequenceConstruct', 'SequenceEmpty', 'SequenceAt', 'SequenceInsert', 'SequenceErase', 'SequenceLength',
  'SplitToSequence', 'ConcatFromSequence', 'SequenceMap', 'Optional', 'OptionalHasElement', 'OptionalGetElement',
  'Gradient', 'Adagrad', 'Adam', 'Momentum',
]);

/** The subset the acceptance bar counts: ai.onnx ops only, no string/sequence/optional/training ops or values. */
function isStandard(g: Graph): boolean {
  const plain = (t: ValueType | null) => !t || (t.kind === 'tensor' && t.dtype !== 'string');
  if (![...g.inputs, ...g.outputs].every((v) => plain(v.type))) return false;
  return g.nodes.every((n) => n.domain === '' && !NON_STANDARD_OPS.has(n.opType) && subgraphsOf(n).every(isStandard));
}
