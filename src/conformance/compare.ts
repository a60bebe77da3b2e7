// Output comparison with the ONNX backend-test tolerances: |a-b| <= atol + rtol*|b|, NaN equals NaN.
import { numbers } from '../ops/util.js';
import { isBig, MapValue, OptionalValue, Tensor, TensorSequence, type Value } from '../tensor.js';

export interface CompareResult {
  ok: boolean;
  /** Largest |a-b| seen over numeric values. */
  maxAbsErr: number;
  reason?: string;
}

export function compareValues(got: Value | undefined, want: Value, rtol = 1e-3, atol = 1e-7): CompareResult {
  if (got === undefined) return { ok: false, maxAbsErr: Infinity, reason: 'no output produced' };
  if (want instanceof Tensor) {
    if (!(got instanceof Tensor)) return bad(`expected a tensor, got ${got.constructor.name}`);
    return compareTensors(got, want, rtol, atol);
  }
  if (want instanceof TensorSequence) {
    if (!(got instanceof TensorSequence)) return bad(`expected a sequence, got ${got.constructor.name}`);
    if (got.items.length !== want.items.length) return bad(`sequence length ${got.items.length}, expected ${want.items.length}`);
    let max = 0;
    for (let i = 0; i < want.items.length; i++) {
      const r = compareTensors(got.items[i], want.items[i], rtol, atol);
      if (!r.ok) return { ...r, reason: `sequence item ${i}: ${r.reason}` };
      max = Math.max(max, r.maxAbsErr);
    }
    return { ok: true, maxAbsErr: max };
  }
  if (want instanceof OptionalValue) {
    const g = got instanceof OptionalValue ? got.value : got;
    if (want.value === null) return g === null ? { ok: true, maxAbsErr: 0 } : bad('expected an empty optional');
    if (g === null) return bad('got an empty optional');
    return compareValues(g, want.value, rtol, atol);
  }
  if (want instanceof MapValue) return bad('map outputs are not compared');
  return bad('unknown value kind');
}

const bad = (reason: string): CompareResult => ({ ok: false, maxAbsErr: Infinity, reason });

export function compareTensors(got: Tensor, want: Tensor, rtol: number, atol: number): CompareResult {
  if (got.type !== want.type) return bad(`dtype ${got.type}, expected ${want.type}`);
  if (got.dims.length !== want.dims.length || got.dims.some((d, i) => d !== want.dims[i])) {
    return bad(`shape [${got.dims.join(',')}], expected [${want.dims.join(',')}]`);
  }
  if (want.type === 'string') {
    const g = got.data as string[], w = want.data as string[];
    for (let i = 0; i < w.length; i++) if (g[i] !== w[i]) return bad(`string ${i} is '${g[i]}', expected '${w[i]}'`);
    return { ok: true, maxAbsErr: 0 };
  }
  if (isBig(want.type)) {
    const g = got.data as BigInt64Array, w = want.data as BigInt64Array;
    let max = 0;
    for (let i = 0; i < w.length; i++) {
      if (g[i] !== w[i]) {
        const d = Math.abs(Number(g[i] - w[i]));
        if (d > atol + rtol * Math.abs(Number(w[i]))) return { ok: false, maxAbsErr: d, reason: `element ${i} is ${g[i]}, expected ${w[i]}` };
        max = Math.max(max, d);
      }
    }
    return { ok: true, maxAbsErr: max };
  }
  const g = numbers(got), w = numbers(want);
  let max = 0, firstBad = -1;
  for (let i = 0; i < w.length; i++) {
    const a = g[i], b = w[i];
    if (Number.isNaN(b)) { if (!Number.isNaN(a)) { firstBad = firstBad < 0 ? i : firstBad; max = Infinity; } continue; }
    if (a === b) continue;
    const d = Math.abs(a - b);
    if (!(d <= atol + rtol * Math.abs(b))) { if (firstBad < 0) firstBad = i; }
    if (!(d <= max)) max = Number.isNaN(d) ? Infinity : d;
  }
  if (firstBad >= 0) return { ok: false, maxAbsErr: max, reason: `element ${firstBad} is ${g[firstBad]}, expected ${w[firstBad]}; max |err| ${max}` };
  return { ok: true, maxAbsErr: max };
}
