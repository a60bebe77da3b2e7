// Feature probes for the Wasm backend, in one place: SIMD, relaxed SIMD, threads.
import { ModuleBuilder, SIMD } from '../../codegen/wasm/builder.js';

function validates(build: (mb: ModuleBuilder) => void, shared = false): boolean {
  try {
    const mb = new ModuleBuilder({ min: 1, max: 1 }, shared);
    build(mb);
    return WebAssembly.validate(mb.build() as BufferSource);
  } catch {
    return false;
  }
}

export const hasSimd = (): boolean => validates((mb) => {
  const f = mb.func('f', [], ['v128']);
  f.f32x4_const(1).f32x4_const(2).simd(SIMD.f32x4_add);
});

export const hasRelaxedSimd = (): boolean => validates((mb) => {
  const f = mb.func('f', [], ['v128']);
  f.f32x4_const(1).f32x4_const(2).f32x4_const(3).simd(SIMD.f32x4_relaxed_madd);
});

/** Threads need SharedArrayBuffer, and in a browser a cross-origin isolated page. */
export function threadsAvailable(): { ok: boolean; why?: string } {
  // Checked first: a browser page that is not cross-origin isolated has no SharedArrayBuffer either, and the headers
  // are what the page's author can change.
  const g = globalThis as { crossOriginIsolated?: boolean };
  if (g.crossOriginIsolated === false) return { ok: false, why: 'the page is not cross-origin isolated (COOP/COEP headers)' };
  if (typeof SharedArrayBuffer === 'undefined') return { ok: false, why: 'SharedArrayBuffer is not available' };
  if (!validates((mb) => { mb.func('f', []); }, true)) return { ok: false, why: 'shared Wasm memory is not supported' };
  return { ok: true };
}

export function hardwareThreads(): number {
  const g = globalThis as { navigator?: { hardwareConcurrency?: number } };
  return Math.max(1, g.navigator?.hardwareConcurrency ?? 1);
}
