// The LLM prefill GEMM on the tensor cores: Y = X Wᵀ for a tile of 64 tokens with WGSL subgroup matrices (16×16×16,
// f16 operands, f32 sums; Chromium's experimental `chromium_experimental_subgroup_matrix`). Per K step the workgroup
// dequantises its BN rows of W (4/8-bit groups or f32) to f16 and stages the tile's tokens of x (RMS-normalised as
// gemmKernel does) as f16 in workgroup memory, loading the next step's words and x into registers while its subgroups
// multiply. Each subgroup owns fm×fn result matrices; they leave through a per-subgroup scratch where the lanes apply
// gemmKernel's epilogues (q/k/v with RoPE and the cache, SiLU·mul, residual, head), so bindings, row pairs and
// dispatch (ceil(units / units-per-tile) × ceil(T / 64)) are those of gemmKernel.
//
// `emulate`: the same kernel with each subgroup-matrix operation written out in plain WGSL over the same workgroup
// tiles (a virtual subgroup of SG lanes sums every 16×16 product in f32 and keeps its sums in workgroup memory). Devices
// without subgroup matrices (the software driver of the tests) run it, which checks the staging, dequantisation,
// offsets and epilogues that the tensor cores use; only the products' order of summation differs.
//
// Precision: x and the dequantised weights are rounded to f16 (11 significant bits) before the products; the sums are
// f32. Against gemmKernel (f32 throughout) the outputs differ by ~2^-11 of the terms' magnitudes.
import { chunkAt, epilogueLines, gatherCopy, gemvUnits, itemSlot, matDecls, paired, quantHelpers, rmsPass, scaleOf, tileRow, wordAt, wordDequant, xRow, zeroOf, type GemmSpec } from './wgsl.js';
import { sgmLoad, sgmStore } from '../codegen/wgsl/sgm.js';

const u = (n: number): string => `${n}u`;

/** Result matrices (16×16) per subgroup along tokens (fm) and rows (fn); subgroups along each (sm, sn); K steps of 16. */
export interface TcTile {
  fm: number; fn: number; sm: number; sn: number; kSteps: number;
  /** K steps whose words and x are in flight in registers: 1 (the next step's; default) or 2. */
  ahead?: 1 | 2;
}

/**
 * The default: 64 tokens × 128 rows, 8 subgroups of 2×2 result matrices, K steps of 64 (the runtime takes steps of 32
 * where K holds no whole step of 64), two steps in flight. On the H100 at 7B shapes (int8 x), a 256-token forward took
 * 62.1 ms of GPU time against 65.5 with steps of 32, 65.9–82.4 with 128-token tiles and 161.5 for gemmKernel
 * (bench/results/gpu/h100-tc-prefill2-7b-s28.txt); two steps in flight: 62.3 → 59.3 ms, a 256-token prompt 64.8 →
 * 61.6 ms, 1024 tokens 325.6 → 315.2 (medians of 9, bench/results/gpu/h100-tc-ahead-7b-s29.txt).
 */
export const TC_TILE: TcTile = { fm: 2, fn: 2, sm: 2, sn: 4, kSteps: 4, ahead: 2 };
/** Lanes of a subgroup the kernel is written for (the device's subgroups must be exactly this wide and contiguous). */
export const TC_SG = 32;
/** f16 elements appended to each staged row (spreads a fragment's rows over the banks). */
const PAD = 8;

export function tcDims(t: TcTile): { BM: number; BN: number; BK: number; NSG: number; NT: number } {
  const NSG = t.sm * t.sn;
  return { BM: t.sm * t.fm * 16, BN: t.sn * t.fn * 16, BK: t.kSteps * 16, NSG, NT: NSG * TC_SG };
}

/** Units (rows, or row pairs) of a tile. */
export const gemmTcUnitsPerTile = (s: Pick<GemmSpec, 'epi'>, t: TcTile): number => tcDims(t).BN / (paired(s.epi) ? 2 : 1);

/** Workgroup bytes of the kernel (emulated: with every subgroup's sums). */
export function gemmTcBytes(s: Pick<GemmSpec, 'norm'>, t: TcTile, emulate: boolean): number {
  const { BM, BN, BK, NSG } = tcDims(t);
  return (BM + BN) * (BK + PAD) * 2 + NSG * 1024 + (s.norm ? BM * 20 : 0) + (emulate ? NSG * t.fm * t.fn * 1024 : 0);
}

/**
 * Whether the kernel runs this matrix with this tile: K a whole number of K steps, a K step a whole number of W words,
 * a word within one quantization group, and the device's limits.
 */
export function gemmTcValid(s: GemmSpec, t: TcTile, maxWorkgroupStorage: number, maxInvocations: number, emulate = false): boolean {
  const { BM, BK, NT } = tcDims(t);
  const WPW = 32 / s.m.bits;
  return s.m.K % BK === 0 && BK % WPW === 0 && (s.m.kind === 'f32' || s.m.group % WPW === 0) &&
    s.m.wpr * WPW === s.m.K && NT <= maxInvocations && gemmTcBytes(s, t, emulate) <= maxWorkgroupStorage;
}

export function gemmTcKernel(s: GemmSpec, t: TcTile, emulate = false): string {
  const { m, norm, gather, epi } = s;
  const P = paired(epi) ? 2 : 1;
  const { BM, BN, BK, NSG, NT } = tcDims(t);
  const SA = BK + PAD, SB = BK + PAD, SG = TC_SG;
  const UT = BN / P, U = gemvUnits(s), K4 = m.K / 4, KT = m.K / BK;
  const WPW = 32 / m.bits, WS = BK / WPW; // weights a word, words a row a step
  // 4-bit groups of whole runs of 32 with rows of whole vec4s: an item is 32 weights of a row (one 16-byte load, one
  // scale and zero point); else a W word (WPW weights, their group's scale and zero point each).
  const vec = m.kind === 'q' && m.bits === 4 && m.group % 32 === 0 && m.stride % 4 === 0 && BK % 32 === 0;
  const IW = vec ? BK / 32 : WS; // W items a row a step
  const ITW = Math.ceil((BN * IW) / NT), ITX = Math.ceil((BM * (BK / 4)) / NT);
  const range = (n: number) => Array.from({ length: n }, (_, i) => i);
  const slot = itemSlot(NT);
  // A W item's tile row r, run or word wi, and matrix row (loads; stores of word items, which read their scales then).
  const wItem = (row: boolean) => `let r = it / ${u(IW)};\n      let wi = it % ${u(IW)};${row ? `\n      let row = ${tileRow(epi, U, 'r')};` : ''}`;
  const xItem = `let tt = it / ${u(BK / 4)};\n      let k4 = it % ${u(BK / 4)};`;
  // A run's scale and zero point are loaded with its words, and x's norm weights with x: all in flight together while
  // the previous step's products run (loaded where they are used, each waited for before the step's stores).
  // With two steps ahead (TcTile.ahead), register set b (0, 1) holds every other step: slot j of set b is j + b·IT.
  const vecMeta = (kt: string, j: number) => vec ? `\n      { let g = (${kt} * ${u(BK)} + wi * 32u) / ${u(m.group)}; ps[${j}] = ${scaleOf(m, 'row', 'g')}; pz[${j}] = ${zeroOf(m, 'row', 'g')}; }` : '';
  const loadStep = (kt: string, b = 0): string => [
    ...range(ITW).map((j) => slot(j, BN * IW, `${wItem(true)}\n      pw[${j + b * ITW}] = ${vec ? `W[${chunkAt(m, 'row', `${kt} * ${u(IW)} + wi`)}]` : `w32(${wordAt(m, 'row', `${kt} * ${u(WS)} + wi`)})`};${vecMeta(kt, j + b * ITW)}`)),
    ...range(ITX).map((j) => slot(j, BM * (BK / 4), `${xItem}\n      px[${j + b * ITX}] = X[${xRow(s, 'min(t0 + tt, rows - 1u)')} * ${u(K4)} + ${kt} * ${u(BK / 4)} + k4];${norm ? `\n      pn[${j + b * ITX}] = NW[${kt} * ${u(BK / 4)} + k4];` : ''}`)),
  ].join('\n    ');
  // One W word → WPW weights of row r (tile row, [n][k] in Bs), dequantised and rounded to f16.
  const wordWeights = (j: number, kt: string): string[] => {
    if (vec && m.scaleF16) {
      // f16 scales: the nibbles become halves 1024 + code two at a time (nibbles e and e + 4 of a word, OR-ed into the
      // mantissa of 1024), and (code − zero) · scale is taken in f16 pairs: the difference is exact and the product
      // is rounded once, as the f32 path's f16(…) does (its product is exact in f32). Fewer instructions and registers
      // than the f32 path: with two steps in flight on the H100 (7B shapes, a 256-token forward) 59.3 ms against 64.9
      // (bench/results/gpu/h100-tc-ahead-7b-s29.txt, h100-tc-ahead-f32dq-7b-s29.txt).
      const out = ['let bo = r * ' + u(SB) + ' + wi * 32u;', `let zh = vec2<f16>(f16(1024.0 + pz[${j}]));`, `let sh = vec2<f16>(f16(ps[${j}]));`];
      for (let q = 0; q < 4; q++) {
        out.push(`{ ${range(4).map((e) => `let v${e} = (bitcast<vec2<f16>>(((wd[${q}] >> ${u(4 * e)}) & 0x000F000Fu) | 0x64006400u) - zh) * sh;`).join(' ')}`);
        out.push(`  ${range(8).map((e) => `Bs[bo + ${u(8 * q + e)}] = v${e % 4}.${e < 4 ? 'x' : 'y'};`).join(' ')} }`);
      }
      return out;
    }
    if (vec) {
      const out: string[] = [];
      // 4 words: weights 8q … 8q+7 of the run in word q (nibble e is weight 8q + e).
      out.push(`let sc = ps[${j}];`, `let zp = vec4f(pz[${j}]);`, 'let bo = r * ' + u(SB) + ' + wi * 32u;');
      for (let q = 0; q < 4; q++) {
        const w = `wd[${q}]`;
        out.push(`{ let lo = vec4<f16>((nib(${w}, vec4<u32>(0u, 4u, 8u, 12u)) - zp) * sc); let hi = vec4<f16>((nib(${w}, vec4<u32>(16u, 20u, 24u, 28u)) - zp) * sc);`);
        out.push(`  ${range(8).map((e) => `Bs[bo + ${u(8 * q + e)}] = ${e < 4 ? 'lo' : 'hi'}[${e % 4}];`).join(' ')} }`);
      }
      return out;
    }
    const d = wordDequant(m, `(${kt} * ${u(BK)} + wi * ${u(WPW)}) / ${u(m.group)}`);
    return [...d.lines, `let bo = r * ${u(SB)} + wi * ${u(WPW)};`, ...range(WPW).map((e) => `Bs[bo + ${u(e)}] = f16(${d.value(e)});`)];
  };
  const storeStep = (b = 0, kt = 'kt'): string => [
    ...range(ITW).map((j) => slot(j, BN * IW, `${wItem(!vec)}\n      let wd = pw[${j + b * ITW}];\n      ${wordWeights(j + b * ITW, kt).join('\n      ')}`)),
    ...range(ITX).map((j) => slot(j, BM * (BK / 4), `${xItem}
      let v = px[${j + b * ITX}]${norm ? ` * pn[${j + b * ITX}] * rinv[tt]` : ''};
      let ao = tt * ${u(SA)} + k4 * 4u;
      As[ao] = f16(v.x); As[ao + 1u] = f16(v.y); As[ao + 2u] = f16(v.z); As[ao + 3u] = f16(v.w);`)),
  ].join('\n    ');

  const accBase = (i: number, j: number) => `(sg * ${u(t.fm * t.fn)} + ${u(i * t.fn + j)}) * 256u`;
  const aOff = (i: number, kk: number) => `(wr + ${u(i * 16)}) * ${u(SA)} + ${u(kk * 16)}`;
  const bOff = (j: number, kk: number) => `(wc + ${u(j * 16)}) * ${u(SB)} + ${u(kk * 16)}`;
  const compute: string[] = [];
  for (let kk = 0; kk < t.kSteps; kk++) {
    if (emulate) {
      // C[r][c] += Σ_k A[r][k] · B[k][c], A row-major at aOff (stride SA), B column-major at bOff (stride SB).
      for (let i = 0; i < t.fm; i++) {
        for (let j = 0; j < t.fn; j++) {
          compute.push(`{ let ao = ${aOff(i, kk)}; let bo = ${bOff(j, kk)}; let base = ${accBase(i, j)};
      for (var e = lane; e < 256u; e += ${u(SG)}) {
        let ar = ao + (e / 16u) * ${u(SA)}; let bc = bo + (e % 16u) * ${u(SB)};
        var sum = 0.0;
        for (var k = 0u; k < 16u; k++) { sum += f32(As[ar + k]) * f32(Bs[bc + k]); }
        Acc[base + e] += sum;
      } }`);
        }
      }
      continue;
    }
    compute.push('{');
    for (let i = 0; i < t.fm; i++) compute.push(`let a${i} = ${sgmLoad('subgroup_matrix_left<f16, 16, 16>', '&As', aOff(i, kk), false, u(SA))};`);
    for (let j = 0; j < t.fn; j++) compute.push(`let b${j} = ${sgmLoad('subgroup_matrix_right<f16, 16, 16>', '&Bs', bOff(j, kk), true, u(SB))};`);
    for (let i = 0; i < t.fm; i++) for (let j = 0; j < t.fn; j++) compute.push(`acc${i}_${j} = subgroupMatrixMultiplyAccumulate(a${i}, b${j}, acc${i}_${j});`);
    compute.push('}');
  }

  // Each result matrix leaves through the subgroup's 16×16 scratch; its lanes then run the epilogue per output (a
  // pair's two rows are neighbouring tile columns: a unit's halves never straddle a 16-column matrix).
  const epi1 = epilogueLines(s).join('\n          ');
  const outs = range(t.fm).flatMap((i) => range(t.fn).map((j) => {
    const store = emulate
      ? `for (var e = lane; e < 256u; e += ${u(SG)}) { Cs[sg * 256u + e] = Acc[${accBase(i, j)} + e]; }`
      : `${sgmStore('&Cs', 'sg * 256u', `acc${i}_${j}`, false, '16u')};`;
    const body = P === 1
      ? `for (var q = lane; q < 256u; q += ${u(SG)}) {
        let t = t0 + wr + ${u(i * 16)} + q / 16u; let un = u0 + wc + ${u(j * 16)} + q % 16u;
        if (t < rows && un < ${u(U)}) {
          let ya = Cs[sg * 256u + q];
          ${epi1}
        }
      }`
      : `for (var q = lane; q < 128u; q += ${u(SG)}) {
        let rr = q / 8u; let pc = q % 8u;
        let t = t0 + wr + ${u(i * 16)} + rr; let un = u0 + (wc + ${u(j * 16)}) / 2u + pc;
        if (t < rows && un < ${u(U)}) {
          let ya = Cs[sg * 256u + rr * 16u + 2u * pc]; let yb = Cs[sg * 256u + rr * 16u + 2u * pc + 1u];
          ${epi1}
        }
      }`;
    return `{
    ${store}
    workgroupBarrier();
    ${body}
    workgroupBarrier();
  }`;
  }));

  // A step: its stores from register set b, then the loads of step kt + A into the same set (A = 1: the next step's
  // words and x, loaded while this step's products run; A = 2: sets alternate by step, so a load has a step's
  // products, the other set's stores and the next step's products to arrive), then the products.
  const A = t.ahead ?? 1;
  const step = (b: number, kt: string) => `${storeStep(b, kt)}
    workgroupBarrier();
    if (${kt} + ${u(A)} < ${u(KT)}) {
      let kn = ${kt} + ${u(A)};
      ${loadStep('kn', b)}
    }
    ${compute.join('\n    ')}
    workgroupBarrier();`;
  const loop = A === 1 ? `${loadStep('0u')}
  for (var kt = 0u; kt < ${u(KT)}; kt++) {
    ${step(0, 'kt')}
  }` : `${loadStep('0u')}
  ${KT > 1 ? loadStep('1u', 1) : ''}
  for (var kt = 0u; kt < ${u(KT)}; kt += 2u) {
    ${step(0, 'kt')}
    ${KT % 2 ? `if (kt + 1u < ${u(KT)}) {` : '{'}
    let k1 = kt + 1u;
    ${step(1, 'k1')}
    }
  }`;
  const accDecls = emulate
    ? `for (var e = lid; e < ${u(NSG * t.fm * t.fn * 256)}; e += ${u(NT)}) { Acc[e] = 0.0; }`
    : range(t.fm).flatMap((i) => range(t.fn).map((j) => `var acc${i}_${j}: subgroup_matrix_result<f32, 16, 16>;`)).join('\n  ');
  const code = `${matDecls(s).replace(/^enable f16;\n/, '')}
var<workgroup> As: array<f16, ${BM * SA}>;
var<workgroup> Bs: array<f16, ${BN * SB}>;
var<workgroup> Cs: array<f32, ${NSG * 256}>;
${emulate ? `var<workgroup> Acc: array<f32, ${NSG * t.fm * t.fn * 256}>;` : ''}
${norm ? `var<workgroup> ssr: array<f32, ${4 * BM}>;\nvar<workgroup> rinv: array<f32, ${BM}>;` : ''}
${quantHelpers(m.bits)}
@compute @workgroup_size(${NT})
fn main(@builtin(workgroup_id) wid: vec3u, @builtin(local_invocation_index) lid: u32) {
  let rows = ${epi.kind === 'head' ? 'MT[3]' : 'MT[0]'};
  let t0 = wid.y * ${u(BM)};
  if (t0 >= rows) { return; }
  ${gather ? gatherCopy(K4, BM, NT) : ''}
  let u0 = wid.x * ${u(UT)};
  let sg = lid / ${u(SG)}; let lane = lid % ${u(SG)};
  let wr = (sg / ${u(t.sn)}) * ${u(t.fm * 16)}; let wc = (sg % ${u(t.sn)}) * ${u(t.fn * 16)};
  ${norm ? rmsPass(s, BM, NT) : ''}
  ${accDecls}
  var pw: array<${vec ? 'vec4<u32>' : 'u32'}, ${ITW * A}>;
  var px: array<vec4f, ${ITX * A}>;${vec ? `\n  var ps: array<f32, ${ITW * A}>;\n  var pz: array<f32, ${ITW * A}>;` : ''}${norm ? `\n  var pn: array<vec4f, ${ITX * A}>;` : ''}
  ${loop}
  ${outs.join('\n  ')}
}
`;
  return `enable f16;\n${emulate ? '' : 'enable chromium_experimental_subgroup_matrix;\ndiagnostic(off, chromium.subgroup_matrix_uniformity);\n'}${code}`;
}
