// WGSL GEMM generators: a register-tiled kernel (workgroup tiles of A and B in shared memory, each thread a TM×TN block
// of C held as vec4s, the next K tile prefetched into registers) and a skinny kernel for a few rows (decode), both with
// the epilogue (scale, bias, activation, residual) in the store. Every size is baked in; guards only where ragged.
import { GRID_PARAMS, LINEAR_GROUP, f32Lit } from '../../backends/webgpu/kernel.js';
import { activationExpr, mathPrelude } from './math.js';
import { sgmLoad, sgmStore } from './sgm.js';

export interface MatmulTile {
  BM: number; BN: number; BK: number; TM: number; TN: number;
  /** Two workgroup buffers for A and B: the next K tile is stored into one while the other is read, one barrier per K tile. */
  db?: boolean;
  /** A thread's row quads spread over the tile (quad i·TY + ty, as B's column quads are i·TX + tx): for TM = 8 rows ty·4 and BM/2 + ty·4. */
  splitA?: boolean;
  /** Threads in 8×4 blocks per 32-wide subgroup (tx fastest) instead of whole rows of TX: fewer distinct workgroup-memory reads per warp. */
  warp?: boolean;
  /** The k loop over the tile written out in the WGSL (BK steps) rather than left to the compiler. */
  unroll?: boolean;
  /**
   * A tile kept row-major (As[m][k quad], one vec4 store per loaded vec4 instead of four transposed scalar stores);
   * the inner loop reads each row's vec4 of 4 k values and runs 4 k steps on it.
   */
  aRows?: boolean;
  /**
   * K split over this many workgroups (dispatch z; no batch): each writes its partial tile, without the epilogue, to
   * a scratch [splitK, M, N]; splitKReduce sums the parts and applies the epilogue. Its K tiles must divide evenly.
   */
  splitK?: number;
}

/** How the sweep and tests name a tile: BMxBNxBK TMxTN and the variant flags. */
export function tileName(t: MatmulTile): string {
  const flags = [t.db ? 'db' : '', t.splitA ? 'sa' : '', t.warp ? 'w' : '', t.unroll ? 'u' : '', t.aRows ? 'ar' : ''].filter(Boolean);
  if ((t.splitK ?? 1) > 1) flags.push(`k/${t.splitK}`);
  return `${t.BM}x${t.BN}x${t.BK} ${t.TM}x${t.TN}${flags.length ? ` ${flags.join('+')}` : ''}`;
}

export interface MatmulEpilogue {
  /** Multiplies A·B (Gemm's alpha). */
  alpha?: number;
  /** A bias input: one value per column ('n'), per row ('m') or one scalar; times biasScale (Gemm's beta). */
  bias?: 'n' | 'm' | 'scalar';
  biasScale?: number;
  act?: string;
  actAlpha?: number;
  actBeta?: number;
  /** An input shaped like C added after the activation (times residualScale). */
  residual?: boolean;
  residualScale?: number;
}

export interface MatmulSpec {
  M: number; N: number; K: number;
  /** Batch dims of C (above M, N) and the element strides of A's and B's matrices along them (0 = broadcast). */
  batchDims: number[];
  aBatchStrides: number[];
  bBatchStrides: number[];
  epilogue: MatmulEpilogue;
  /** B is stored as f16 (a weight converted once at load, `precision: 'f16'`); products and sums stay f32. */
  bF16?: boolean;
}

/** Binding order of the generated kernels: A, B, [bias], [residual], C. */
export function matmulBindingCount(e: MatmulEpilogue): number {
  return 3 + (e.bias ? 1 : 0) + (e.residual ? 1 : 0);
}

export function tileValid(t: MatmulTile, maxInvocations: number, maxStorage: number): boolean {
  const threads = (t.BM / t.TM) * (t.BN / t.TN);
  return t.TM % 4 === 0 && t.TN % 4 === 0 && t.BM % t.TM === 0 && t.BN % t.TN === 0 && t.BK % 4 === 0 &&
    threads <= maxInvocations && threads >= 32 && (t.BM * t.BK) % (4 * threads) === 0 && (t.BK * t.BN) % (4 * threads) === 0 &&
    (t.BM + t.BN) * t.BK * 4 * (t.db ? 2 : 1) <= maxStorage &&
    (!t.warp || ((t.BN / t.TN) % 8 === 0 && (t.BM / t.TM) % 4 === 0));
}

/** Whether a split of K into `S` parts suits the spec and tile: no batch, whole K tiles per part, vec4 rows of C. */
export function splitKValid(s: MatmulSpec, t: MatmulTile, S: number): boolean {
  return S === 1 || (Number.isInteger(S) && S > 1 && s.batchDims.length === 0 && s.N % 4 === 0 && Math.ceil(s.K / t.BK) % S === 0);
}

/**
 * Sums the K parts of a split-K GEMM (scratch P [S, M, N], vec4s) and applies the epilogue: one vec4 of C per
 * invocation. Bindings: P, [bias], [residual], C. Dispatch: grid(ceil(M·N/4 / 256)).
 */
export function splitKReduce(s: MatmulSpec, S: number): string {
  const { M, N } = s, e = s.epilogue, n4 = (M * N) / 4;
  const st = [0, 1, 2, 3].map((c) => `{ let col = col0 + ${c}u; let idx = row * ${N}u + col; C[idx] = ${epilogueExpr(e, `v[${c}]`, 'row', 'col', 'idx')}; }`);
  const code = `@group(0) @binding(0) var<storage, read> P: array<vec4f>;
${epilogueDecls(e, 1)}
@group(0) @binding(${1 + (e.bias ? 1 : 0) + (e.residual ? 1 : 0)}) var<storage, read_write> C: array<f32>;
@compute @workgroup_size(256)
fn main(${GRID_PARAMS}) {
  ${LINEAR_GROUP}
  let i = group * 256u + lid;
  if (i >= ${n4}u) { return; }
  var v = P[i];
  for (var p = 1u; p < ${S}u; p++) { v += P[p * ${n4}u + i]; }
  let row = i / ${N / 4}u;
  let col0 = (i % ${N / 4}u) * 4u;
  ${st.join('\n  ')}
}`;
  return `${mathPrelude(code)}\n${code}`;
}

/** Offset of an operand's last matrix: the clamp bound of loads that the ragged edge reads past. */
function lastBatchOffset(strides: number[], dims: number[]): number {
  return strides.reduce((t, x, d) => t + x * (dims[d] - 1), 0);
}

function batchOffsets(s: MatmulSpec): string {
  if (s.batchDims.length === 0) return 'let offA = 0u; let offB = 0u; let offC = 0u;';
  const lines = ['var rem = wg.z;', 'var offA = 0u;', 'var offB = 0u;'];
  for (let d = s.batchDims.length - 1; d >= 0; d--) {
    lines.push(`{ let c = rem % ${s.batchDims[d]}u; rem = rem / ${s.batchDims[d]}u; offA += c * ${s.aBatchStrides[d]}u; offB += c * ${s.bBatchStrides[d]}u; }`);
  }
  lines.push(`let offC = wg.z * ${s.M * s.N}u;`);
  return lines.join('\n  ');
}

export function epilogueDecls(e: MatmulEpilogue, first: number): string {
  const out: string[] = [];
  let b = first;
  if (e.bias) out.push(`@group(0) @binding(${b++}) var<storage, read> bias: array<f32>;`);
  if (e.residual) out.push(`@group(0) @binding(${b++}) var<storage, read> resid: array<f32>;`);
  return out.join('\n');
}

/** WGSL statements turning `v` (f32) of element (row, col, idx = offC + row*N + col) into the stored value. */
export function epilogueExpr(e: MatmulEpilogue, v: string, row: string, col: string, idx: string): string {
  let x = e.alpha !== undefined && e.alpha !== 1 ? `(${v} * ${f32Lit(e.alpha)})` : v;
  if (e.bias) {
    const bi = e.bias === 'n' ? `bias[${col}]` : e.bias === 'm' ? `bias[${row}]` : 'bias[0]';
    x = `(${x} + ${e.biasScale !== undefined && e.biasScale !== 1 ? `${bi} * ${f32Lit(e.biasScale)}` : bi})`;
  }
  const act = activationExpr(e.act ?? 'none', x, e.actAlpha, e.actBeta);
  if (act === null) throw new RangeError(`no epilogue for activation ${e.act}`);
  x = act;
  if (e.residual) x = `(${x} + ${e.residualScale !== undefined && e.residualScale !== 1 ? `resid[${idx}] * ${f32Lit(e.residualScale)}` : `resid[${idx}]`})`;
  return x;
}

/** The register-tiled GEMM. Dispatch: [ceil(N/BN), ceil(M/BM), batch]. */
export function tiledMatmul(s: MatmulSpec, t: MatmulTile): string {
  const { M, N, K } = s;
  const { BM, BN, BK, TM, TN } = t;
  const TX = BN / TN, TY = BM / TM, NT = TX * TY;
  const vecA = K % 4 === 0, vecB = N % 4 === 0;
  const LA = (BM * BK) / 4 / NT, LB = (BK * BN) / 4 / NT;
  const guardM = M % BM !== 0, guardN = N % BN !== 0, guardK = K % BK !== 0;
  const S = t.splitK ?? 1;
  // With a K split, each workgroup runs kTiles of the K tiles from its part's first (wg.z) and stores raw sums.
  const kTiles = Math.ceil(K / BK) / S;
  if (!Number.isInteger(kTiles)) throw new RangeError(`split-K ${S} does not divide ${Math.ceil(K / BK)} K tiles`);
  const e: MatmulEpilogue = S > 1 ? {} : s.epilogue;

  // A tile: vec4 v of the tile is row m = v / (BK/4), k quad kq = v % (BK/4); stored transposed As[k][m] (vec4 along m).
  const loadA = (dst: string, l: number) => {
    const v = `(lid + ${l * NT}u)`;
    const m = `(${v} / ${BK / 4}u)`, kq = `(${v} % ${BK / 4}u)`;
    const row = `(row0 + ${m})`, k = `(k0 + ${kq} * 4u)`;
    const conds = [guardM ? `${row} < ${M}u` : '', guardK ? `${k} < ${K}u` : ''].filter(Boolean);
    if (vecA) {
      const ld = `A4[(offA + ${row} * ${K}u + ${k}) / 4u]`;
      return conds.length ? `${dst} = select(vec4f(0.0), ${ld}, ${conds.join(' && ')});` : `${dst} = ${ld};`;
    }
    const comp = (c: number) => {
      const cc = [guardM ? `${row} < ${M}u` : '', `${k} + ${c}u < ${K}u`].filter(Boolean).join(' && ');
      return `select(0.0, A[min(offA + ${row} * ${K}u + ${k} + ${c}u, ${M * K + lastBatchOffset(s.aBatchStrides, s.batchDims) - 1}u)], ${cc})`;
    };
    return `${dst} = vec4f(${[0, 1, 2, 3].map(comp).join(', ')});`;
  };
  const storeA = (src: string, l: number) => {
    const v = `(lid + ${l * NT}u)`;
    // Row-major: vec4 v of the tile is (row v / (BK/4), k quad v % (BK/4)), which is its index As[m * BK/4 + kq].
    if (t.aRows) return `As[${t.db ? 'aBuf + ' : ''}${v}] = ${src};`;
    const m = `(${v} / ${BK / 4}u)`, kq = `(${v} % ${BK / 4}u)`;
    return [0, 1, 2, 3].map((c) => `As[${t.db ? 'aBuf + ' : ''}(${kq} * 4u + ${c}u) * ${BM / 4}u + ${m} / 4u][${m} % 4u] = ${src}[${c}];`).join(' ');
  };
  // B tile: vec4 v is k = v / (BN/4), column quad c4 = v % (BN/4); Bs[k][c4].
  const loadB = (dst: string, l: number) => {
    const v = `(lid + ${l * NT}u)`;
    const k = `(k0 + ${v} / ${BN / 4}u)`, c4 = `(${v} % ${BN / 4}u)`;
    const col = `(col0 + ${c4} * 4u)`;
    if (vecB) {
      const conds = [guardK ? `${k} < ${K}u` : '', guardN ? `${col} < ${N}u` : ''].filter(Boolean);
      const ld = s.bF16 ? `vec4f(B4[(offB + ${k} * ${N}u + ${col}) / 4u])` : `B4[(offB + ${k} * ${N}u + ${col}) / 4u]`;
      return conds.length ? `${dst} = select(vec4f(0.0), ${ld}, ${conds.join(' && ')});` : `${dst} = ${ld};`;
    }
    const comp = (c: number) => {
      const cc = [guardK ? `${k} < ${K}u` : '', `${col} + ${c}u < ${N}u`].filter(Boolean).join(' && ');
      return `select(0.0, f32(B[min(offB + ${k} * ${N}u + ${col} + ${c}u, ${K * N + lastBatchOffset(s.bBatchStrides, s.batchDims) - 1}u)]), ${cc})`;
    };
    return `${dst} = vec4f(${[0, 1, 2, 3].map(comp).join(', ')});`;
  };
  const storeB = (src: string, l: number) => `Bs[${t.db ? 'bBuf + ' : ''}lid + ${l * NT}u] = ${src};`;

  const regsA = Array.from({ length: LA }, (_, l) => `pa${l}`), regsB = Array.from({ length: LB }, (_, l) => `pb${l}`);
  // Row quad of the thread's i4-th A vector: contiguous (ty·TM/4 + i4) or spread over the tile (i4·TY + ty).
  const aQuad = (i4: number) => (t.splitA ? `${i4 * TY}u + ty` : `ty * ${TM / 4}u + ${i4}u`);
  const rowOf = (i: number) => (t.splitA ? `(${(i >> 2) * TY}u + ty) * 4u + ${i & 3}u` : `ty * ${TM}u + ${i}u`);
  const aBase = t.db ? 'aBuf + ' : '', bBase = t.db ? 'bBuf + ' : '';
  const step = (k: string, pre: string) => {
    const out: string[] = [];
    for (let i4 = 0; i4 < TM / 4; i4++) out.push(`${pre}let a${i4} = As[${aBase}${k} * ${BM / 4}u + ${aQuad(i4)}];`);
    for (let j = 0; j < TN / 4; j++) out.push(`${pre}let b${j} = Bs[${bBase}${k} * ${BN / 4}u + ${j * TX}u + tx];`);
    for (let i = 0; i < TM; i++) {
      for (let j = 0; j < TN / 4; j++) out.push(`${pre}acc[${i * (TN / 4) + j}] = fma(vec4f(a${i >> 2}[${i & 3}]), b${j}, acc[${i * (TN / 4) + j}]);`);
    }
    return out;
  };
  // aRows: per k quad, each of the thread's TM rows gives a vec4 of 4 k values; 4 k steps run on them.
  const step4 = (kq: string, pre: string) => {
    const out: string[] = [];
    for (let i = 0; i < TM; i++) out.push(`${pre}let a${i} = As[${aBase}(${rowOf(i)}) * ${BK / 4}u + ${kq}];`);
    for (let kk = 0; kk < 4; kk++) {
      for (let j = 0; j < TN / 4; j++) out.push(`${pre}let b${kk}_${j} = Bs[${bBase}(${kq} * 4u + ${kk}u) * ${BN / 4}u + ${j * TX}u + tx];`);
      for (let i = 0; i < TM; i++) {
        for (let j = 0; j < TN / 4; j++) out.push(`${pre}acc[${i * (TN / 4) + j}] = fma(vec4f(a${i}[${kk}]), b${kk}_${j}, acc[${i * (TN / 4) + j}]);`);
      }
    }
    return out;
  };
  const inner: string[] = [];
  if (t.aRows) {
    if (t.unroll) for (let kq = 0; kq < BK / 4; kq++) inner.push('{', ...step4(`${kq}u`, '  '), '}');
    else inner.push(`for (var kq = 0u; kq < ${BK / 4}u; kq++) {`, ...step4('kq', '  '), '}');
  } else if (t.unroll) {
    for (let k = 0; k < BK; k++) inner.push('{', ...step(`${k}u`, '  '), '}');
  } else {
    inner.push(`for (var k = 0u; k < ${BK}u; k++) {`, ...step('k', '  '), '}');
  }

  const store: string[] = [];
  for (let i = 0; i < TM; i++) {
    store.push(`{ let row = row0 + ${rowOf(i)};`);
    if (guardM) store.push(`if (row < ${M}u) {`);
    for (let j = 0; j < TN / 4; j++) {
      store.push(`{ let col = col0 + (${j * TX}u + tx) * 4u; let v = acc[${i * (TN / 4) + j}];`);
      for (let c = 0; c < 4; c++) {
        const colc = `(col + ${c}u)`, idx = `(offC + row * ${N}u + ${colc})`;
        const st = `C[${idx}] = ${epilogueExpr(e, `v[${c}]`, 'row', colc, idx)};`;
        store.push(guardN || !vecB ? `if (${colc} < ${N}u) { ${st} }` : st);
      }
      store.push('}');
    }
    if (guardM) store.push('}');
    store.push('}');
  }

  let binding = 0;
  const decls = [
    `@group(0) @binding(${binding}) var<storage, read> ${vecA ? 'A4: array<vec4f>' : 'A: array<f32>'};`,
    `@group(0) @binding(${++binding}) var<storage, read> ${vecB ? `B4: array<vec4<${s.bF16 ? 'f16' : 'f32'}>>` : `B: array<${s.bF16 ? 'f16' : 'f32'}>`};`,
    epilogueDecls(e, ++binding),
    `@group(0) @binding(${binding + (e.bias ? 1 : 0) + (e.residual ? 1 : 0)}) var<storage, read_write> C: array<f32>;`,
  ].filter(Boolean).join('\n');
  const nbuf = t.db ? 2 : 1;
  // warp: subgroup w of 32 invocations covers 8 tx × 4 ty (8 consecutive B quads, 4 A quads), the warps tiled over TX × TY.
  const ids = t.warp
    ? `let lane = lid % 32u; let wq = lid / 32u; let tx = (wq % ${TX / 8}u) * 8u + lane % 8u; let ty = (wq / ${TX / 8}u) * 4u + lane / 8u;`
    : 'let tx = l3.x; let ty = l3.y;';
  // db: K tile kt is stored into buffer kt % 2 and read after the one barrier; buffer kt % 2 is written again at kt + 2,
  // after every invocation has passed barrier kt + 1, i.e. finished reading it at kt.
  const kStep = `${regsA.map((r, l) => storeA(r, l)).join('\n    ')}
    ${regsB.map((r, l) => storeB(r, l)).join('\n    ')}
    workgroupBarrier();
    k0 = k0 + ${BK}u;
    if (kt + 1u < ${kTiles}u) {
      ${regsA.map((r, l) => loadA(r, l)).join('\n      ')}
      ${regsB.map((r, l) => loadB(r, l)).join('\n      ')}
    }
    ${inner.join('\n    ')}`;
  const body = t.db
    ? `let aBuf = (kt & 1u) * ${(BK * BM) / 4}u; let bBuf = (kt & 1u) * ${(BK * BN) / 4}u;
    ${kStep}`
    : `${kStep}
    workgroupBarrier();`;
  const code = `${decls}
var<workgroup> As: array<vec4f, ${(nbuf * BK * BM) / 4}>;
var<workgroup> Bs: array<vec4f, ${(nbuf * BK * BN) / 4}>;
@compute @workgroup_size(${t.warp ? `${NT}` : `${TX}, ${TY}`})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l3: vec3u, @builtin(local_invocation_index) lid: u32) {
  ${ids}
  let row0 = wg.y * ${BM}u; let col0 = wg.x * ${BN}u;
  ${S > 1 ? `let offA = 0u; let offB = 0u; let offC = wg.z * ${M * N}u; // part wg.z's [M, N] of the scratch` : batchOffsets(s)}
  var acc: array<vec4f, ${TM * (TN / 4)}>;
  ${regsA.map((r) => `var ${r}: vec4f;`).join(' ')} ${regsB.map((r) => `var ${r}: vec4f;`).join(' ')}
  var k0 = ${S > 1 ? `wg.z * ${kTiles * BK}u` : '0u'};
  ${regsA.map((r, l) => loadA(r, l)).join('\n  ')}
  ${regsB.map((r, l) => loadB(r, l)).join('\n  ')}
  for (var kt = 0u; kt < ${kTiles}u; kt++) {
    ${body}
  }
  ${store.join('\n  ')}
}`;
  return `${s.bF16 ? 'enable f16;\n' : ''}${mathPrelude(code)}\n${code}`;
}

export interface SkinnyParams {
  /** Columns (as vec4 quads) per workgroup and K slices per workgroup: threads = quads × slices. */
  quads: number;
  slices: number;
}

/**
 * C = A·B for few rows (M ≤ 16), B [K, N] with N % 4 == 0: memory-bound on B, so each thread streams vec4 columns of B
 * over a K slice and keeps all M rows' sums; slices reduce through workgroup memory. Dispatch: [ceil(N/4/quads), 1, batch].
 */
export function skinnyMatmul(s: MatmulSpec, p: SkinnyParams): string {
  const { M, N, K } = s;
  const { quads, slices } = p;
  const e = s.epilogue;
  const N4 = N / 4;
  const kPer = Math.ceil(K / slices);
  const accs = Array.from({ length: M }, (_, m) => `acc${m}`);
  const body: string[] = [];
  body.push(`let q = wg.x * ${quads}u + lx;`);
  body.push(`let kb = ly * ${kPer}u; let ke = min(kb + ${kPer}u, ${K}u);`);
  body.push(accs.map((a) => `var ${a} = vec4f(0.0);`).join(' '));
  body.push(`if (q < ${N4}u) {`);
  body.push(`  for (var k = kb; k < ke; k++) {`);
  body.push(`    let b = ${s.bF16 ? 'vec4f(' : ''}B4[offB / 4u + k * ${N4}u + q]${s.bF16 ? ')' : ''};`);
  for (let m = 0; m < M; m++) body.push(`    acc${m} = fma(vec4f(A[offA + ${m * K}u + k]), b, acc${m});`);
  body.push('  }');
  body.push('}');
  // Reduce the slices: red[slice][m][quad].
  body.push(accs.map((a, m) => `red[(ly * ${M}u + ${m}u) * ${quads}u + lx] = ${a};`).join(' '));
  body.push('workgroupBarrier();');
  // Threads of slice 0..M-1 finish row m = ly (when ly < M), summing all slices.
  const store: string[] = [];
  store.push(`for (var m = ly; m < ${M}u; m += ${slices}u) {`);
  store.push(`  var v = vec4f(0.0);`);
  store.push(`  for (var sl = 0u; sl < ${slices}u; sl++) { v += red[(sl * ${M}u + m) * ${quads}u + lx]; }`);
  store.push(`  if (q < ${N4}u) {`);
  for (let c = 0; c < 4; c++) {
    const col = `(q * 4u + ${c}u)`, idx = `(offC + m * ${N}u + ${col})`;
    store.push(`    C[${idx}] = ${epilogueExpr(e, `v[${c}]`, 'm', col, idx)};`);
  }
  store.push('  }');
  store.push('}');
  const decls = [
    '@group(0) @binding(0) var<storage, read> A: array<f32>;',
    `@group(0) @binding(1) var<storage, read> B4: array<vec4<${s.bF16 ? 'f16' : 'f32'}>>;`,
    epilogueDecls(e, 2),
    `@group(0) @binding(${2 + (e.bias ? 1 : 0) + (e.residual ? 1 : 0)}) var<storage, read_write> C: array<f32>;`,
  ].filter(Boolean).join('\n');
  const code = `${decls}
var<workgroup> red: array<vec4f, ${slices * M * quads}>;
@compute @workgroup_size(${quads}, ${slices})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_id) l3: vec3u) {
  let lx = l3.x; let ly = l3.y;
  ${batchOffsets(s)}
  ${body.join('\n  ')}
  ${store.join('\n  ')}
}`;
  return `${s.bF16 ? 'enable f16;\n' : ''}${mathPrelude(code)}\n${code}`;
}

/** A subgroup-matrix configuration of the adapter (Dawn's chromium-experimental-subgroup-matrix). */
export interface SubgroupMatrixConfig { M: number; N: number; K: number; componentType: string; resultComponentType: string }

export interface TensorCoreTile {
  /** Result matrices per subgroup along M and N. */
  fm: number; fn: number;
  /** Subgroups per workgroup along M and N. */
  sm: number; sn: number;
  subgroupSize: number;
}

/**
 * f16 GEMM on the tensor cores: C (f32) = A (f16, [M, K]) · B (f16, [K, N]). Each subgroup owns fm×fn result matrices
 * and streams its fragments of A and B from memory (L1/L2 serve the reuse between subgroups). Matrix loads and stores
 * need workgroup-uniform offsets, so a workgroup is one subgroup (sm = sn = 1) unless offsets come from wg alone. Needs M, N, K multiples of
 * the workgroup tile and of the config's K. Dispatch: [N / (sn·fn·cfg.N), M / (sm·fm·cfg.M), 1].
 */
export function tensorCoreMatmul(M: number, N: number, K: number, cfg: SubgroupMatrixConfig, t: TensorCoreTile): string {
  const T = cfg.componentType, R = cfg.resultComponentType;
  const left = `subgroup_matrix_left<${T}, ${cfg.K}, ${cfg.M}>`, right = `subgroup_matrix_right<${T}, ${cfg.N}, ${cfg.K}>`;
  const result = `subgroup_matrix_result<${R}, ${cfg.N}, ${cfg.M}>`;
  const lines: string[] = [];
  for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) lines.push(`var acc${i}_${j}: ${result};`);
  lines.push(`for (var k = 0u; k < ${K}u; k += ${cfg.K}u) {`);
  for (let i = 0; i < t.fm; i++) lines.push(`  let a${i} = ${sgmLoad(left, '&A', `(row0 + ${i * cfg.M}u) * ${K}u + k`, false, `${K}u`)};`);
  for (let j = 0; j < t.fn; j++) lines.push(`  let b${j} = ${sgmLoad(right, '&B', `k * ${N}u + col0 + ${j * cfg.N}u`, false, `${N}u`)};`);
  for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) lines.push(`  acc${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, acc${i}_${j});`);
  lines.push('}');
  for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) lines.push(`${sgmStore('&C', `(row0 + ${i * cfg.M}u) * ${N}u + col0 + ${j * cfg.N}u`, `acc${i}_${j}`, false, `${N}u`)};`);
  const threads = t.sm * t.sn * t.subgroupSize;
  // One subgroup per workgroup keeps the offsets uniform (a function of the workgroup id alone), as the matrix
  // loads and stores require.
  return `enable f16;
enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read> A: array<${T}>;
@group(0) @binding(1) var<storage, read> B: array<${T}>;
@group(0) @binding(2) var<storage, read_write> C: array<${R}>;
@compute @workgroup_size(${threads})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32) {
  ${t.sm * t.sn === 1 ? `let row0 = wg.y * ${t.fm * cfg.M}u;
  let col0 = wg.x * ${t.fn * cfg.N}u;` : `let sg = lid / ${t.subgroupSize}u;
  let row0 = wg.y * ${t.sm * t.fm * cfg.M}u + (sg / ${t.sn}u) * ${t.fm * cfg.M}u;
  let col0 = wg.x * ${t.sn * t.fn * cfg.N}u + (sg % ${t.sn}u) * ${t.fn * cfg.N}u;`}
  ${lines.join('\n  ')}
}`;
}

export interface TensorCoreStagedTile {
  /** Result matrices per subgroup along M and N. */
  fm: number; fn: number;
  /** Subgroups per workgroup along M and N. */
  sm: number; sn: number;
  /** Steps of the config's K per K tile: the workgroup tile is (sm·fm·cfg.M) × (sn·fn·cfg.N) × (kSteps·cfg.K). */
  kSteps: number;
  /** Two workgroup buffers, one barrier per K tile. */
  db?: boolean;
  /** f16 elements appended to every workgroup row of A and B (spreads the fragment rows over the banks); default 8. */
  pad?: number;
  /**
   * Subgroup index from the subgroup_id builtin instead of local_invocation_index / subgroupSize. The lid form assumes
   * subgroups of consecutive invocations (NVIDIA's warps); on the H200 it ran 226 TFLOP/s at 4096³ (f4x4 s2x2 k32)
   * where subgroup_id ran 37, so it is the default.
   */
  sgBuiltin?: boolean;
  subgroupSize: number;
}

export function tensorCoreStagedBytes(cfg: SubgroupMatrixConfig, t: TensorCoreStagedTile): number {
  const BM = t.sm * t.fm * cfg.M, BN = t.sn * t.fn * cfg.N, BK = t.kSteps * cfg.K, pad = t.pad ?? 8;
  return (BM * (BK + pad) + BK * (BN + pad)) * 2 * (t.db ? 2 : 1);
}

export function tensorCoreStagedValid(M: number, N: number, K: number, cfg: SubgroupMatrixConfig, t: TensorCoreStagedTile, maxInvocations: number, maxStorage: number): boolean {
  const BM = t.sm * t.fm * cfg.M, BN = t.sn * t.fn * cfg.N, BK = t.kSteps * cfg.K, T = t.sm * t.sn * t.subgroupSize;
  return M % BM === 0 && N % BN === 0 && K % BK === 0 && BK % 8 === 0 && BN % 8 === 0 && ((t.pad ?? 8) % 8 === 0) &&
    (BM * BK / 8) % T === 0 && (BK * BN / 8) % T === 0 && T <= maxInvocations && tensorCoreStagedBytes(cfg, t) <= maxStorage;
}

/**
 * f16 tensor-core GEMM with A and B tiles staged in workgroup memory: C (f32) = A (f16, [M, K]) · B (f16, [K, N]).
 * Every invocation copies 16-byte chunks of the next K tile from global memory into registers while the subgroups
 * multiply the current one; each subgroup then loads its fragments from workgroup memory. Fragment offsets depend on
 * the subgroup index: uniform within the subgroup (what the hardware's cooperative loads need) but not across the
 * workgroup, which is what Tint's uniformity analysis checks, so the module turns off its
 * chromium.subgroup_matrix_uniformity diagnostic (a rule Tint provides for this). Needs M, N, K multiples of the tile.
 * Bindings: A and B as array<vec4<u32>> (8 halves per element), C array<f32>.
 * Dispatch: [N / (sn·fn·cfg.N), M / (sm·fm·cfg.M), 1].
 */
export function tensorCoreStagedMatmul(M: number, N: number, K: number, cfg: SubgroupMatrixConfig, t: TensorCoreStagedTile): string {
  const T = cfg.componentType, R = cfg.resultComponentType;
  if (T !== 'f16') throw new RangeError('staged tensor-core GEMM: f16 inputs only');
  const left = `subgroup_matrix_left<${T}, ${cfg.K}, ${cfg.M}>`, right = `subgroup_matrix_right<${T}, ${cfg.N}, ${cfg.K}>`;
  const result = `subgroup_matrix_result<${R}, ${cfg.N}, ${cfg.M}>`;
  const BM = t.sm * t.fm * cfg.M, BN = t.sn * t.fn * cfg.N, BK = t.kSteps * cfg.K;
  const pad = t.pad ?? 8, SA = BK + pad, SB = BN + pad;
  const NT = t.sm * t.sn * t.subgroupSize;
  const LA = (BM * BK) / 8 / NT, LB = (BK * BN) / 8 / NT;
  const kTiles = K / BK;
  const nbuf = t.db ? 2 : 1;
  const loadA = (l: number) => {
    const c = `(lid + ${l * NT}u)`;
    return `pa${l} = A8[((row0 + ${c} / ${BK / 8}u) * ${K}u + k0 + (${c} % ${BK / 8}u) * 8u) / 8u];`;
  };
  const loadB = (l: number) => {
    const c = `(lid + ${l * NT}u)`;
    return `pb${l} = B8[((k0 + ${c} / ${BN / 8}u) * ${N}u + col0 + (${c} % ${BN / 8}u) * 8u) / 8u];`;
  };
  const halves = (dst: string, base: string, src: string) =>
    [0, 1, 2, 3].map((q) => `{ let h = bitcast<vec2<f16>>(${src}[${q}]); ${dst}[${base} + ${2 * q}u] = h.x; ${dst}[${base} + ${2 * q + 1}u] = h.y; }`).join(' ');
  const storeA = (l: number) => {
    const c = `(lid + ${l * NT}u)`;
    return `{ let o = ${t.db ? 'aBuf + ' : ''}(${c} / ${BK / 8}u) * ${SA}u + (${c} % ${BK / 8}u) * 8u; ${halves('As', 'o', `pa${l}`)} }`;
  };
  const storeB = (l: number) => {
    const c = `(lid + ${l * NT}u)`;
    return `{ let o = ${t.db ? 'bBuf + ' : ''}(${c} / ${BN / 8}u) * ${SB}u + (${c} % ${BN / 8}u) * 8u; ${halves('Bs', 'o', `pb${l}`)} }`;
  };
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const compute: string[] = [];
  for (let kk = 0; kk < t.kSteps; kk++) {
    for (let i = 0; i < t.fm; i++) compute.push(`let a${kk}_${i} = ${sgmLoad(left, '&As', `${t.db ? 'aBuf + ' : ''}(wr + ${i * cfg.M}u) * ${SA}u + ${kk * cfg.K}u`, false, `${SA}u`)};`);
    for (let j = 0; j < t.fn; j++) compute.push(`let b${kk}_${j} = ${sgmLoad(right, '&Bs', `${t.db ? 'bBuf + ' : ''}${kk * cfg.K * SB}u + wc + ${j * cfg.N}u`, false, `${SB}u`)};`);
    for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) compute.push(`acc${i}_${j} = subgroupMatrixMultiplyAccumulate(a${kk}_${i}, b${kk}_${j}, acc${i}_${j});`);
  }
  const loads = [...range(LA).map(loadA), ...range(LB).map(loadB)];
  const stores = [...range(LA).map(storeA), ...range(LB).map(storeB)];
  const body = `${t.db ? `let aBuf = (kt & 1u) * ${BM * SA}u; let bBuf = (kt & 1u) * ${BK * SB}u;\n    ` : ''}${stores.join('\n    ')}
    workgroupBarrier();
    k0 = k0 + ${BK}u;
    if (kt + 1u < ${kTiles}u) {
      ${loads.join('\n      ')}
    }
    ${compute.join('\n    ')}${t.db ? '' : '\n    workgroupBarrier();'}`;
  const accs = range(t.fm).flatMap((i) => range(t.fn).map((j) => `var acc${i}_${j}: ${result};`));
  const outs = range(t.fm).flatMap((i) => range(t.fn).map((j) => `${sgmStore('&C', `(row0 + wr + ${i * cfg.M}u) * ${N}u + col0 + wc + ${j * cfg.N}u`, `acc${i}_${j}`, false, `${N}u`)};`));
  return `enable f16;
${t.sgBuiltin ? 'enable subgroups;\n' : ''}enable chromium_experimental_subgroup_matrix;
diagnostic(off, chromium.subgroup_matrix_uniformity);
@group(0) @binding(0) var<storage, read> A8: array<vec4<u32>>;
@group(0) @binding(1) var<storage, read> B8: array<vec4<u32>>;
@group(0) @binding(2) var<storage, read_write> C: array<${R}>;
var<workgroup> As: array<f16, ${nbuf * BM * SA}>;
var<workgroup> Bs: array<f16, ${nbuf * BK * SB}>;
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wg: vec3u, @builtin(local_invocation_index) lid: u32${t.sgBuiltin ? ', @builtin(subgroup_id) sgid: u32' : ''}) {
  let sg = ${t.sgBuiltin ? 'sgid' : `lid / ${t.subgroupSize}u`};
  let row0 = wg.y * ${BM}u; let col0 = wg.x * ${BN}u;
  // This subgroup's block of the workgroup tile (rows wr.., columns wc..).
  let wr = (sg / ${t.sn}u) * ${t.fm * cfg.M}u; let wc = (sg % ${t.sn}u) * ${t.fn * cfg.N}u;
  ${accs.join('\n  ')}
  ${[...range(LA).map((l) => `var pa${l}: vec4<u32>;`), ...range(LB).map((l) => `var pb${l}: vec4<u32>;`)].join(' ')}
  var k0 = 0u;
  ${loads.join('\n  ')}
  for (var kt = 0u; kt < ${kTiles}u; kt++) {
    ${body}
  }
  ${outs.join('\n  ')}
}`;
}

/** How the sweep names a staged tensor-core tile. */
export function tensorCoreStagedName(cfg: SubgroupMatrixConfig, t: TensorCoreStagedTile): string {
  return `tcs ${cfg.M}x${cfg.N}x${cfg.K} f${t.fm}x${t.fn} s${t.sm}x${t.sn} k${t.kSteps * cfg.K}${t.db ? ' db' : ''}${(t.pad ?? 8) !== 8 ? ` p${t.pad}` : ''}${t.sgBuiltin ? ' sgid' : ''}`;
}
