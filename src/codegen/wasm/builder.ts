// WebAssembly bytecode emitter: module sections, functions, and the scalar + SIMD128 instructions kernels use.

export type ValType = 'i32' | 'i64' | 'f32' | 'f64' | 'v128';
const VT: Record<ValType, number> = { i32: 0x7f, i64: 0x7e, f32: 0x7d, f64: 0x7c, v128: 0x7b };

/** Scratch for float constants: their little-endian bytes without a new typed array per constant. */
const F32 = new Float32Array(4);
const F32_BYTES = new Uint8Array(F32.buffer);
const F64 = new Float64Array(1);
const F64_BYTES = new Uint8Array(F64.buffer);

export class ByteWriter {
  // A growable byte buffer: generators emit tens of thousands of bytes, often from cold (interpreted) code.
  private buf = new Uint8Array(256);
  private len = 0;

  /** The bytes written so far (a copy). */
  get bytes(): number[] { return Array.from(this.buf.subarray(0, this.len)); }

  /** Number of bytes written so far. */
  get length(): number { return this.len; }

  /** The bytes written so far, as a view that the next write may invalidate. */
  view(): Uint8Array { return this.buf.subarray(0, this.len); }

  private grow(n: number): void {
    const b = new Uint8Array(Math.max(this.buf.length * 2, this.len + n));
    b.set(this.buf.subarray(0, this.len));
    this.buf = b;
  }

  u8(b: number): this {
    if (this.len === this.buf.length) this.grow(1);
    this.buf[this.len++] = b;
    return this;
  }
  u32(v: number): this {
    v >>>= 0;
    if (this.len + 5 > this.buf.length) this.grow(5);
    const buf = this.buf;
    if (v < 0x80) { buf[this.len++] = v; return this; }
    do { let b = v & 0x7f; v >>>= 7; if (v) b |= 0x80; buf[this.len++] = b; } while (v);
    return this;
  }
  s32(v: number): this {
    v |= 0;
    if (this.len + 5 > this.buf.length) this.grow(5);
    const buf = this.buf;
    if (v >= -64 && v < 64) { buf[this.len++] = v & 0x7f; return this; }
    for (;;) {
      const b = v & 0x7f;
      v >>= 7;
      if ((v === 0 && !(b & 0x40)) || (v === -1 && b & 0x40)) { buf[this.len++] = b; return this; }
      buf[this.len++] = b | 0x80;
    }
  }
  s64(v: bigint): this {
    for (;;) {
      const b = Number(v & 0x7fn);
      v >>= 7n;
      if ((v === 0n && !(b & 0x40)) || (v === -1n && b & 0x40)) { this.u8(b); return this; }
      this.u8(b | 0x80);
    }
  }
  f32(x: number): this { F32[0] = x; return this.vec(F32_BYTES.subarray(0, 4)); }
  f64(x: number): this { F64[0] = x; return this.vec(F64_BYTES); }
  str(s: string): this { const b = new TextEncoder().encode(s); this.u32(b.length); return this.vec(b); }
  vec(items: ArrayLike<number>): this {
    const n = items.length;
    if (this.len + n > this.buf.length) this.grow(n);
    if (items instanceof Uint8Array) this.buf.set(items, this.len);
    else for (let i = 0; i < n; i++) this.buf[this.len + i] = items[i];
    this.len += n;
    return this;
  }
}

export interface Local { index: number; type: ValType }

/** One function's code. Methods append instructions; operand order is the stack machine's. */
export class FunctionBuilder {
  readonly code = new ByteWriter();
  readonly params: Local[];
  private readonly extra: ValType[] = [];
  private depth = 0;

  constructor(readonly name: string, params: ValType[], readonly results: ValType[] = []) {
    this.params = params.map((type, index) => ({ index, type }));
  }

  local(type: ValType): Local {
    this.extra.push(type);
    return { index: this.params.length + this.extra.length - 1, type };
  }

  param(i: number): Local { return this.params[i]; }

  // --- control -----------------------------------------------------------------------------
  block(body: () => void): this { this.code.u8(0x02).u8(0x40); this.depth++; body(); this.depth--; this.code.u8(0x0b); return this; }
  loop(body: () => void): this { this.code.u8(0x03).u8(0x40); this.depth++; body(); this.depth--; this.code.u8(0x0b); return this; }
  if_(then: () => void, else_?: () => void): this {
    this.code.u8(0x04).u8(0x40);
    this.depth++;
    then();
    if (else_) { this.code.u8(0x05); else_(); }
    this.depth--;
    this.code.u8(0x0b);
    return this;
  }
  br(depth: number): this { this.code.u8(0x0c).u32(depth); return this; }
  br_if(depth: number): this { this.code.u8(0x0d).u32(depth); return this; }
  return_(): this { this.code.u8(0x0f); return this; }
  drop(): this { this.code.u8(0x1a); return this; }
  select(): this { this.code.u8(0x1b); return this; }

  /**
   * for (i = start; i < end; i += step) body(): `start`/`end` push an i32; `step` is a constant.
   * The loop exits before the first iteration when start >= end.
   */
  for_(i: Local, start: () => void, end: () => void, step: number, body: () => void): this {
    start(); this.set(i);
    this.block(() => {
      this.get(i); end(); this.op(0x4e); this.br_if(0); // i >= end → exit (signed)
      this.loop(() => {
        body();
        this.get(i); this.i32(step); this.op(0x6a); this.tee(i);
        end(); this.op(0x48); this.br_if(0); // i < end → repeat
      });
    });
    return this;
  }

  // --- locals and constants ------------------------------------------------------------------
  get(l: Local): this { this.code.u8(0x20).u32(l.index); return this; }
  set(l: Local): this { this.code.u8(0x21).u32(l.index); return this; }
  tee(l: Local): this { this.code.u8(0x22).u32(l.index); return this; }
  i32(v: number): this { this.code.u8(0x41).s32(v); return this; }
  i64(v: bigint): this { this.code.u8(0x42).s64(v); return this; }
  f32c(v: number): this { this.code.u8(0x43).f32(v); return this; }
  f64c(v: number): this { this.code.u8(0x44).f64(v); return this; }

  /** A raw single-byte opcode (see OP). */
  op(code: number): this { this.code.u8(code); return this; }

  // --- memory (align is log2 bytes) ----------------------------------------------------------
  private mem(code: number, align: number, offset: number): this { this.code.u8(code).u32(align).u32(offset >>> 0); return this; }
  i32_load(offset = 0, align = 2): this { return this.mem(0x28, align, offset); }
  i64_load(offset = 0, align = 3): this { return this.mem(0x29, align, offset); }
  f32_load(offset = 0, align = 2): this { return this.mem(0x2a, align, offset); }
  f64_load(offset = 0, align = 3): this { return this.mem(0x2b, align, offset); }
  i32_load8_u(offset = 0): this { return this.mem(0x2d, 0, offset); }
  i32_load8_s(offset = 0): this { return this.mem(0x2c, 0, offset); }
  i32_load16_u(offset = 0): this { return this.mem(0x2f, 1, offset); }
  i32_store(offset = 0, align = 2): this { return this.mem(0x36, align, offset); }
  i64_store(offset = 0, align = 3): this { return this.mem(0x37, align, offset); }
  f32_store(offset = 0, align = 2): this { return this.mem(0x38, align, offset); }
  f64_store(offset = 0, align = 3): this { return this.mem(0x39, align, offset); }
  i32_store8(offset = 0): this { return this.mem(0x3a, 0, offset); }
  i32_store16(offset = 0): this { return this.mem(0x3b, 1, offset); }

  // --- SIMD128 --------------------------------------------------------------------------------
  simd(code: number): this { this.code.u8(0xfd).u32(code); return this; }
  v128_load(offset = 0, align = 4): this { this.code.u8(0xfd).u32(0x00).u32(align).u32(offset >>> 0); return this; }
  v128_store(offset = 0, align = 4): this { this.code.u8(0xfd).u32(0x0b).u32(align).u32(offset >>> 0); return this; }
  // Threads proposal (0xFE prefix); natural alignment is required. Valid on unshared memories too.
  i32_atomic_load(offset = 0): this { this.code.u8(0xfe).u32(0x10).u32(2).u32(offset >>> 0); return this; }
  i32_atomic_rmw_add(offset = 0): this { this.code.u8(0xfe).u32(0x1e).u32(2).u32(offset >>> 0); return this; }
  /** [addr, expected, replacement] → the old value. */
  i32_atomic_rmw_cmpxchg(offset = 0): this { this.code.u8(0xfe).u32(0x48).u32(2).u32(offset >>> 0); return this; }
  unreachable(): this { this.code.u8(0x00); return this; }
  v128_load32_splat(offset = 0): this { this.code.u8(0xfd).u32(0x09).u32(2).u32(offset >>> 0); return this; }
  v128_const(bytes: ArrayLike<number>): this { this.code.u8(0xfd).u32(0x0c).vec(bytes); return this; }
  f32x4_const(a: number, b = a, c = a, d = a): this {
    F32[0] = a; F32[1] = b; F32[2] = c; F32[3] = d;
    return this.v128_const(F32_BYTES);
  }
  f32x4_extract_lane(l: number): this { this.code.u8(0xfd).u32(0x1f).u8(l); return this; }
  f32x4_replace_lane(l: number): this { this.code.u8(0xfd).u32(0x20).u8(l); return this; }
  i8x16_shuffle(lanes: number[]): this { this.code.u8(0xfd).u32(0x0d).vec(lanes); return this; }

  finish(): { params: ValType[]; results: ValType[]; body: number[] } {
    return { params: this.params.map((p) => p.type), results: this.results, body: Array.from(this.body()) };
  }

  /** The function body (locals, code, end) as bytes. */
  body(): Uint8Array {
    const body = new ByteWriter();
    // Locals grouped in runs of the same type.
    const groups: [number, ValType][] = [];
    for (const t of this.extra) {
      const last = groups[groups.length - 1];
      if (last && last[1] === t) last[0]++;
      else groups.push([1, t]);
    }
    body.u32(groups.length);
    for (const [n, t] of groups) body.u32(n).u8(VT[t]);
    body.vec(this.code.view());
    body.u8(0x0b);
    return body.view();
  }
}

/** Single-byte opcodes (scalar). */
export const OP = {
  i32_eqz: 0x45, i32_eq: 0x46, i32_ne: 0x47, i32_lt_s: 0x48, i32_lt_u: 0x49, i32_gt_s: 0x4a, i32_gt_u: 0x4b,
  i32_le_s: 0x4c, i32_le_u: 0x4d, i32_ge_s: 0x4e, i32_ge_u: 0x4f,
  f32_eq: 0x5b, f32_ne: 0x5c, f32_lt: 0x5d, f32_gt: 0x5e, f32_le: 0x5f, f32_ge: 0x60,
  i32_add: 0x6a, i32_sub: 0x6b, i32_mul: 0x6c, i32_div_s: 0x6d, i32_div_u: 0x6e, i32_rem_s: 0x6f, i32_rem_u: 0x70,
  i32_and: 0x71, i32_or: 0x72, i32_xor: 0x73, i32_shl: 0x74, i32_shr_s: 0x75, i32_shr_u: 0x76,
  i64_add: 0x7c, i64_mul: 0x7e,
  f32_abs: 0x8b, f32_neg: 0x8c, f32_ceil: 0x8d, f32_floor: 0x8e, f32_trunc: 0x8f, f32_nearest: 0x90, f32_sqrt: 0x91,
  f32_add: 0x92, f32_sub: 0x93, f32_mul: 0x94, f32_div: 0x95, f32_min: 0x96, f32_max: 0x97,
  f64_add: 0xa0, f64_sub: 0xa1, f64_mul: 0xa2, f64_div: 0xa3,
  i32_trunc_f32_s: 0xa8, f32_convert_i32_s: 0xb2, f32_convert_i32_u: 0xb3, f32_demote_f64: 0xb6, f64_promote_f32: 0xbb,
  i32_reinterpret_f32: 0xbc, f32_reinterpret_i32: 0xbe,
} as const;

/** SIMD opcodes (after the 0xfd prefix). */
export const SIMD = {
  i32x4_splat: 0x11, f32x4_splat: 0x13,
  f32x4_eq: 0x41, f32x4_ne: 0x42, f32x4_lt: 0x43, f32x4_gt: 0x44, f32x4_le: 0x45, f32x4_ge: 0x46,
  v128_not: 0x4d, v128_any_true: 0x53, v128_and: 0x4e, v128_andnot: 0x4f, v128_or: 0x50, v128_xor: 0x51, v128_bitselect: 0x52,
  f32x4_ceil: 0x67, f32x4_floor: 0x68, f32x4_trunc: 0x69, f32x4_nearest: 0x6a,
  i32x4_shl: 0xab, i32x4_shr_s: 0xac, i32x4_shr_u: 0xad, i32x4_add: 0xae, i32x4_sub: 0xb1, i32x4_mul: 0xb5,
  i32x4_min_s: 0xb6, i32x4_max_s: 0xb8,
  f32x4_abs: 0xe0, f32x4_neg: 0xe1, f32x4_sqrt: 0xe3, f32x4_add: 0xe4, f32x4_sub: 0xe5, f32x4_mul: 0xe6, f32x4_div: 0xe7,
  f32x4_min: 0xe8, f32x4_max: 0xe9, f32x4_pmin: 0xea, f32x4_pmax: 0xeb,
  i32x4_trunc_sat_f32x4_s: 0xf8, f32x4_convert_i32x4_s: 0xfa,
  f32x4_relaxed_madd: 0x105, f32x4_relaxed_nmadd: 0x106,
} as const;

/** Kernels import a shared memory wherever SharedArrayBuffer exists (threads possible), a plain one otherwise. */
export const SHARED_MEMORY = typeof SharedArrayBuffer !== 'undefined';

/** A module importing one shared memory ("env", "memory") and exporting its functions. */
export class ModuleBuilder {
  private readonly funcs: FunctionBuilder[] = [];

  constructor(private readonly memoryPages = { min: 1, max: 65536 }, private readonly shared = SHARED_MEMORY) {}

  func(name: string, params: ValType[], results: ValType[] = []): FunctionBuilder {
    const f = new FunctionBuilder(name, params, results);
    this.funcs.push(f);
    return f;
  }

  /** Index of a function for `call` (in declaration order). */
  indexOf(f: FunctionBuilder): number { return this.funcs.indexOf(f); }

  build(): Uint8Array {
    const out = new ByteWriter().vec([0x00, 0x61, 0x73, 0x6d, 0x01, 0x00, 0x00, 0x00]);
    const section = (id: number, w: ByteWriter) => { out.u8(id).u32(w.length).vec(w.view()); };
    const bodies = this.funcs.map((f) => f.body());
    const types = new ByteWriter().u32(this.funcs.length);
    for (const f of this.funcs) {
      types.u8(0x60).u32(f.params.length);
      for (const p of f.params) types.u8(VT[p.type]);
      types.u32(f.results.length);
      for (const r of f.results) types.u8(VT[r]);
    }
    section(1, types);
    const imports = new ByteWriter().u32(1).str('env').str('memory').u8(0x02)
      .u8(this.shared ? 0x03 : 0x01).u32(this.memoryPages.min).u32(this.memoryPages.max);
    section(2, imports);
    const fsec = new ByteWriter().u32(bodies.length);
    bodies.forEach((_, i) => fsec.u32(i));
    section(3, fsec);
    const exp = new ByteWriter().u32(this.funcs.length);
    this.funcs.forEach((f, i) => exp.str(f.name).u8(0x00).u32(i));
    section(7, exp);
    const code = new ByteWriter().u32(bodies.length);
    for (const b of bodies) code.u32(b.length).vec(b);
    section(10, code);
    return out.view().slice();
  }
}

/** call: the index comes from ModuleBuilder.indexOf. */
export function call(fb: FunctionBuilder, index: number): void {
  fb.code.u8(0x10).u32(index);
}
