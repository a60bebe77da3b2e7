// WebGPU elementwise ops and FusedElementwise groups: the shared EwProgram (src/codegen/ew.ts) rendered as one WGSL
// kernel, one thread per output element, with the broadcast walk's strides baked in.
import type { Node } from '../../../graph/ir.js';
import { sizeOf, type DType } from '../../../tensor.js';
import { EW_OPS, EwProgram, type EwDType, type EwSpec, type EwVal, fusedProgram, nodeProgram } from '../../../codegen/ew.js';
import { mathPrelude } from '../../../codegen/wgsl/math.js';
import { GRID_PARAMS, LINEAR_GROUP, f32Lit, grid, i32Lit, registerGpuOp, storageDecls, type GpuOpPlan, type GpuPlanContext, type GpuValueDesc } from '../kernel.js';
import { enumerate, spaceSize, withDefault, type Fault, type Params, type TuneSite } from '../../../tune/site.js';
import { faultOf, replaceFirst, withF16Helpers, withoutFault } from '../faults.js';
import { raggedBroadcast } from '../sites.js';

const WG = 256;
const REG: Record<EwDType, string> = { float32: 'f32', int32: 'i32', int64: 'i32', uint8: 'i32', bool: 'bool' };
const STORE: Record<EwDType, string> = { float32: 'f32', int32: 'i32', int64: 'i32', uint8: 'i32', bool: 'u32' };

/** A WGSL expression for instruction i of the spec (operands are earlier `v{k}` lets). */
function expr(spec: EwSpec, i: number, offs: string[]): string {
  const ins = spec.instrs[i];
  const a = ins.args.map((k) => `v${k}`);
  const t0 = ins.args.length ? spec.instrs[ins.args[0]].dtype : ins.dtype;
  const isF = t0 === 'float32';
  const p = ins.p ?? [];
  const lit = (x: number, dt: EwDType) => (dt === 'float32' ? f32Lit(x) : dt === 'bool' ? (x ? 'true' : 'false') : i32Lit(x));
  switch (ins.op) {
    case 'in': {
      const k = p[0];
      const dt = spec.inputs[k].dtype;
      const load = `in${k}[${offs[k]}]`;
      return dt === 'bool' ? `(${load} != 0u)` : load;
    }
    case 'const': return lit(p[0], ins.dtype);
    case 'add': return `(${a[0]} + ${a[1]})`;
    case 'sub': return `(${a[0]} - ${a[1]})`;
    case 'mul': return `(${a[0]} * ${a[1]})`;
    case 'div': return isF ? `(${a[0]} / ${a[1]})` : `select(${a[0]} / ${a[1]}, 0, ${a[1]} == 0)`;
    case 'max': return `max(${a[0]}, ${a[1]})`;
    case 'min': return `min(${a[0]}, ${a[1]})`;
    case 'neg': return `(-${a[0]})`;
    case 'abs': return `abs(${a[0]})`;
    case 'relu': return isF ? `max(${a[0]}, 0.0)` : `max(${a[0]}, 0)`;
    case 'eq': return `(${a[0]} == ${a[1]})`;
    case 'lt': return `(${a[0]} < ${a[1]})`;
    case 'gt': return `(${a[0]} > ${a[1]})`;
    case 'le': return `(${a[0]} <= ${a[1]})`;
    case 'ge': return `(${a[0]} >= ${a[1]})`;
    case 'not': return `(!${a[0]})`;
    case 'and': return `(${a[0]} && ${a[1]})`;
    case 'or': return `(${a[0]} || ${a[1]})`;
    case 'xor': return `(${a[0]} != ${a[1]})`;
    case 'where': return `select(${a[2]}, ${a[1]}, ${a[0]})`;
    case 'cast': return castExpr(a[0], t0, ins.dtype);
    case 'sqrt': return `sqrt(${a[0]})`;
    case 'recip': return `(1.0 / ${a[0]})`;
    case 'exp': return `exp(${a[0]})`;
    case 'log': return `log(${a[0]})`;
    case 'tanh': return `wj_tanh(${a[0]})`;
    case 'erf': return `wj_erf(${a[0]})`;
    case 'sigmoid': return `wj_sigmoid(${a[0]})`;
    case 'floor': return `floor(${a[0]})`;
    case 'ceil': return `ceil(${a[0]})`;
    case 'leakyrelu': return `select(${a[0]}, ${a[0]} * ${f32Lit(p[0])}, ${a[0]} < 0.0)`;
    case 'elu': return `wj_elu(${a[0]}, ${f32Lit(p[0])})`;
    case 'hardsigmoid': return `clamp(${a[0]} * ${f32Lit(p[0])} + ${f32Lit(p[1])}, 0.0, 1.0)`;
    case 'hardswish': return `(${a[0]} * clamp(${a[0]} * ${f32Lit(1 / 6)} + 0.5, 0.0, 1.0))`;
    case 'softplus': return `wj_softplus(${a[0]})`;
    case 'gelu': return `wj_gelu(${a[0]})`;
    case 'gelu_tanh': return `wj_gelu_tanh(${a[0]})`;
    case 'clip': return `min(max(${a[0]}, ${f32Lit(p[0])}), ${f32Lit(p[1])})`;
    case 'clip2': return `min(max(${a[0]}, ${a[1]}), ${a[2]})`;
    case 'clip_lo': return `max(${a[0]}, ${a[1]})`;
    case 'clip_hi': return `min(${a[0]}, ${a[1]})`;
    case 'pow': return `wj_pow(${a[0]}, ${a[1]})`;
    case 'powc': {
      const y = p[0];
      if (y === 1) return a[0];
      if (y === 2) return `(${a[0]} * ${a[0]})`;
      if (y === 3) return `(${a[0]} * ${a[0]} * ${a[0]})`;
      if (y === 0.5) return `sqrt(${a[0]})`;
      if (y === -1) return `(1.0 / ${a[0]})`;
      return `wj_pow(${a[0]}, ${f32Lit(y)})`;
    }
    default: throw new RangeError(`no WGSL for elementwise op ${ins.op}`);
  }
}

function castExpr(x: string, from: EwDType, to: EwDType): string {
  if (from === to || REG[from] === REG[to] && to !== 'uint8') return x;
  if (to === 'bool') return from === 'float32' ? `(${x} != 0.0)` : `(${x} != 0)`;
  if (from === 'bool') return to === 'float32' ? `select(0.0, 1.0, ${x})` : `select(0, 1, ${x})`;
  if (to === 'float32') return `f32(${x})`;
  if (to === 'uint8') return from === 'float32' ? `(i32(${x}) & 255)` : `(${x} & 255)`;
  return `i32(${x})`; // f32 → i32 / int64: truncation toward zero
}

/** Threads per workgroup and elements per thread (E > 1: a thread's elements are WG apart, loads stay coalesced). */
export interface EwLaunch { WG: number; E: number }

/** One WGSL kernel for the spec: thread i computes output element i (E elements per thread: i, i + WG, …). */
export function ewKernel(spec: EwSpec, launch: EwLaunch = { WG, E: 1 }): { code: string; n: number } {
  const n = sizeOf(spec.shape);
  const r = spec.shape.length;
  const dense: number[] = new Array(r);
  for (let d = r - 1, s = 1; d >= 0; d--) { dense[d] = s; s *= spec.shape[d]; }
  // Coordinates only when some input reads with non-dense strides.
  const needCoords = spec.inputs.some((x) => x.strides.some((s, d) => s !== dense[d]));
  const lines: string[] = [];
  if (needCoords) {
    lines.push('var rem = i;');
    for (let d = r - 1; d >= 0; d--) {
      if (d === 0) lines.push('let c0 = rem;');
      else lines.push(`let c${d} = rem % ${spec.shape[d]}u; rem = rem / ${spec.shape[d]}u;`);
    }
  }
  const offs = spec.inputs.map((x) => {
    if (x.strides.every((s, d) => s === dense[d])) return 'i';
    const terms = x.strides.map((s, d) => (s === 0 ? '' : s === 1 ? `c${d}` : `c${d} * ${s}u`)).filter(Boolean);
    return terms.length ? terms.join(' + ') : '0u';
  });
  spec.instrs.forEach((ins, k) => lines.push(`let v${k}: ${REG[ins.dtype]} = ${expr(spec, k, offs)};`));
  spec.outputs.forEach((o, k) => {
    const v = `v${o.value}`;
    lines.push(`out${k}[i] = ${o.dtype === 'bool' ? `select(0u, 1u, ${v})` : v};`);
  });
  const decls = storageDecls([
    ...spec.inputs.map((x, k) => ({ name: `in${k}`, type: STORE[x.dtype] })),
    ...spec.outputs.map((o, k) => ({ name: `out${k}`, type: STORE[o.dtype], write: true })),
  ]);
  const wg = launch.WG, E = launch.E;
  const body = E === 1 ? `${decls}
@compute @workgroup_size(${wg})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let i = group * ${wg}u + lid;
  if (i >= ${n}u) { return; }
  ${lines.join('\n  ')}
}` : `${decls}
@compute @workgroup_size(${wg})
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  for (var e = 0u; e < ${E}u; e++) {
    let i = group * ${wg * E}u + e * ${wg}u + lid;
    if (i >= ${n}u) { break; }
    ${lines.join('\n    ')}
  }
}`;
  return { code: `${mathPrelude(body)}\n${body}`, n };
}

const EW_AXES = { WG: [32, 64, 128, 256, 512, 1024], E: [1, 2, 4, 8] };

/**
 * The elementwise site: workgroup size WG and elements per thread E (the default: 256 × 1). Pruned: workgroups past
 * maxInvocations, launches with fewer than a few workgroups where smaller ones would have more, workgroups far past n.
 * Vector loads are not a parameter: the ops' WGSL (and the math helpers) are scalar.
 */
function ewSite(spec: EwSpec, n: number, ctx: GpuPlanContext): TuneSite {
  const def: Params = { WG, E: 1 };
  return {
    family: 'elementwise',
    sig: `elementwise:${JSON.stringify(spec)}`,
    default: def,
    space: () => {
      const minGroups = Math.min(8, Math.ceil(n / 256));
      const cands = enumerate(EW_AXES, (p) => {
        const wg = Number(p.WG), E = Number(p.E);
        return wg <= ctx.caps.maxInvocations && wg <= Math.max(32, 2 * n) && Math.ceil(n / (wg * E)) >= minGroups;
      });
      return { candidates: withDefault(def, cands), before: spaceSize(EW_AXES) };
    },
    // Broadcast inputs keep broadcasting: each output axis gets one ragged size.
    ragged: (d) => raggedBroadcast(d, false),
  };
}

/**
 * Plants a fault (faults.ts) in an elementwise kernel: edge, the last element is not computed (guard i < n-1);
 * barrier, which a one-thread-per-element kernel does not have, maps to the nearest bug: a dense input staged through
 * workgroup memory (each thread stores the element of its mirror thread, then reads its own) without the barrier
 * between store and load (planned with E = 1); epilogue, a broadcast input's index one off (else a dense one's);
 * f16acc, which has no sum to accumulate here, rounds the f32 results through f16.
 */
function ewFault(code: string, fault: Fault, n: number, wg: number, hasF16: boolean): string {
  switch (fault) {
    case 'edge': return replaceFirst(code, /if \(i >= (\d+)u\)/, 'if (i + 1u >= $1u)', 'element guard');
    case 'barrier': {
      const m = /\b(in\d+)\[i\]/.exec(code);
      if (!m) throw new Error('fault injection: no dense input to stage');
      const type = new RegExp(`var<storage, read> ${m[1]}: array<(\\w+)>;`).exec(code)?.[1];
      if (!type) throw new Error('fault injection: no declaration of the staged input');
      let out = replaceFirst(code, '@compute', `var<workgroup> wj_stage: array<${type}, ${wg}>;\n@compute`, 'stage declaration');
      out = replaceFirst(out, `let i = group * ${wg}u + lid;`, `let i = group * ${wg}u + lid;
  let wj_m = ${wg - 1}u - lid;
  wj_stage[wj_m] = ${m[1]}[min(i - lid + wj_m, ${n - 1}u)];
  /* barrier removed (fault): workgroupBarrier(); */`, 'stage store');
      return out.split(`${m[1]}[i]`).join('wj_stage[lid]');
    }
    case 'epilogue': {
      const loads = [...code.matchAll(/\b(in\d+)\[([^\]\n]+)\]/g)];
      const pick = loads.find((l) => l[2] !== 'i' && l[2] !== '0u') ?? loads.find((l) => l[2] === 'i');
      if (!pick) throw new Error('fault injection: no input load to shift');
      return replaceFirst(code, pick[0], `${pick[1]}[(${pick[2]}) + 1u]`, 'input index');
    }
    case 'f16acc': {
      const outs = [...code.matchAll(/var<storage, read_write> (out\d+): array<f32>;/g)].map((x) => x[1]);
      if (!outs.length) throw new Error('fault injection: f16acc needs an f32 output');
      let out = code;
      for (const o of outs) out = replaceFirst(out, new RegExp(`\\b${o}\\[i\\] = (v\\d+);`), `${o}[i] = wj_h1($1);`, 'f32 result');
      return withF16Helpers(out, hasF16);
    }
  }
}

/** Plans a program whose outputs are `outs`. */
export function planEwProgram(P: EwProgram, outs: EwVal[], ctx: GpuPlanContext): GpuOpPlan | null {
  const s = P.spec(outs);
  if (!s) return null;
  const outputs = s.spec.outputs.map((o) => ({ dtype: o.dtype as DType, dims: s.dims }));
  if (sizeOf(s.dims) === 0) return { outputs, dispatches: [] };
  const n = sizeOf(s.spec.shape);
  const picked = ctx.pick(ewSite(s.spec, n, ctx));
  const fault = faultOf(picked);
  const p = withoutFault(picked);
  let launch: EwLaunch = { WG: Number(p.WG), E: Number(p.E) };
  const ok = (l: EwLaunch) => Number.isInteger(l.WG) && l.WG >= 1 && l.WG <= ctx.caps.maxInvocations && Number.isInteger(l.E) && l.E >= 1;
  if (!ok(launch)) launch = { WG, E: 1 };
  if (fault === 'barrier') launch = { ...launch, E: 1 };
  const k = ewKernel(s.spec, launch);
  const code = fault ? ewFault(k.code, fault, k.n, launch.WG, ctx.caps.f16) : k.code;
  return {
    outputs,
    dispatches: [{
      code,
      bindings: [...s.inputIndex.map((input) => ({ input })), ...outputs.map((_, output) => ({ output }))],
      groups: grid(Math.ceil(k.n / (launch.WG * launch.E)), ctx.caps.maxWorkgroupsPerDim),
    }],
  };
}

function planNode(node: Node, inputs: (GpuValueDesc | undefined)[], ctx: GpuPlanContext, opset: number): GpuOpPlan | null {
  const prog = nodeProgram(node, inputs, opset);
  return prog ? planEwProgram(prog.P, prog.outs, ctx) : null;
}

for (const op of EW_OPS) registerGpuOp(op, planNode);

/** FusedElementwise (domain webjit): the 'graph' attribute's nodes compiled into one kernel. */
registerGpuOp('FusedElementwise', (node, inputs, ctx, opset) => {
  const prog = fusedProgram(node, inputs, opset);
  return prog ? planEwProgram(prog.P, prog.outs, ctx) : null;
});
