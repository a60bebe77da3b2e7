// The WebGPU device: found through navigator.gpu (browsers) or the `webgpu` package (Dawn, in Node), with the features
// and limits the kernel generators specialise to; one device per process, shared by sessions, recreated after a loss.
import { DeviceLostError, UnsupportedError } from '../../errors.js';
import { importNode } from '../../util/node.js';
import { sgmProbeKernel, sgmSyntax } from '../../codegen/wgsl/sgm.js';

/** What the generators may use on this device. */
export interface GpuCaps {
  f16: boolean;
  subgroups: boolean;
  /** WGSL's packed_4x8_integer_dot_product (dot4I8Packed). */
  dot4: boolean;
  /** Subgroup-matrix configurations (tensor cores from WGSL, Dawn's chromium-experimental-subgroup-matrix). */
  subgroupMatrix: { M: number; N: number; K: number; componentType: string; resultComponentType: string }[];
  /** Its WGSL takes a subgroup matrix's memory layout as a template argument (codegen/wgsl/sgm.ts); probed where subgroupMatrix is not empty. */
  sgmLayoutTemplate?: boolean;
  /** The subgroup size when the adapter has only one (NVIDIA: 32), else 0. */
  subgroupSize: number;
  timestamps: boolean;
  maxWorkgroupStorage: number;
  maxInvocations: number;
  maxWorkgroupSizeX: number;
  maxBufferSize: number;
  maxBindingSize: number;
  maxStorageBuffers: number;
  maxWorkgroupsPerDim: number;
  /** e.g. 'nvidia nvidia-h100-80gb-hbm3' or 'mesa llvmpipe' */
  name: string;
  /** Software drivers (lavapipe, SwiftShader): correct, never fast. */
  software: boolean;
}

export interface GpuContext {
  /** The GPU entry object: Dawn's instance in Node, which must stay referenced while its devices live. */
  gpu: GPU;
  device: GPUDevice;
  caps: GpuCaps;
  /** Set once the device is lost (destroyed, driver reset); every later use throws a DeviceLostError. */
  lost: { reason: string; message: string } | null;
}

/**
 * Dawn toggles that expose shader-f16 and the tensor-core subgroup matrices on NVIDIA's Vulkan driver; benchmarks may add
 * more through WEBJIT_DAWN_FLAGS (';'-separated, e.g. disable-dawn-features=timestamp_quantization for per-kernel times).
 */
const DAWN_FLAGS = ['enable-dawn-features=allow_unsafe_apis,vulkan_enable_f16_on_nvidia',
  ...(typeof process !== 'undefined' && process.env?.WEBJIT_DAWN_FLAGS ? process.env.WEBJIT_DAWN_FLAGS.split(';') : [])];
const WANTED: GPUFeatureName[] = ['shader-f16', 'subgroups', 'timestamp-query', 'chromium-experimental-subgroup-matrix' as GPUFeatureName];

let shared: Promise<GpuContext> | null = null;

/** The process's GPU device (created on first use; a lost one is replaced). */
export function acquireGpu(): Promise<GpuContext> {
  if (shared) {
    const p = shared;
    return p.then((ctx) => (ctx.lost ? ((shared === p ? (shared = null) : null), acquireGpu()) : ctx));
  }
  const p = createGpu();
  shared = p;
  p.catch(() => { if (shared === p) shared = null; });
  return p;
}

async function gpuEntry(): Promise<GPU> {
  const nav = (globalThis as { navigator?: { gpu?: GPU } }).navigator;
  if (nav?.gpu) return nav.gpu;
  if (typeof process === 'undefined' || !process.versions?.node) {
    throw new UnsupportedError('this browser has no WebGPU (navigator.gpu is missing)', {}, "use backend 'wasm'");
  }
  return dawnInstance();
}

/**
 * In Node: a Dawn instance from the `webgpu` package with the toggles above, and Dawn's enums (GPUBufferUsage …) as
 * globals, as in a browser. `asNavigator` also makes it `navigator.gpu`, for other WebGPU libraries in the same
 * process (the benchmark's peers), which then share webjit's instance.
 */
export async function dawnInstance(asNavigator = false): Promise<GPU> {
  let mod: { create: (flags: string[]) => GPU; globals: Record<string, unknown> };
  try {
    mod = await importNode<typeof mod>('webgpu');
  } catch (e) {
    throw new UnsupportedError(`WebGPU in Node needs the 'webgpu' package (${(e as Error).message})`, {}, "npm install webgpu, or use backend 'wasm'");
  }
  for (const [k, v] of Object.entries(mod.globals)) if (!(k in globalThis)) (globalThis as Record<string, unknown>)[k] = v;
  const gpu = mod.create(DAWN_FLAGS);
  if (asNavigator) {
    const g = globalThis as { navigator?: { gpu?: GPU } };
    if (g.navigator) Object.defineProperty(g.navigator, 'gpu', { value: gpu, configurable: true });
    else g.navigator = { gpu };
  }
  return gpu;
}

async function createGpu(): Promise<GpuContext> {
  const gpu = await gpuEntry();
  const adapter = await gpu.requestAdapter({ powerPreference: 'high-performance' });
  if (!adapter) {
    throw new UnsupportedError('no WebGPU adapter is available', {},
      "use backend 'wasm'; without a GPU, a software Vulkan driver (Mesa lavapipe) gives Dawn an adapter");
  }
  const features = WANTED.filter((f) => adapter.features.has(f));
  const L = adapter.limits;
  const requiredLimits: Record<string, number> = {};
  for (const k of ['maxBufferSize', 'maxStorageBufferBindingSize', 'maxComputeWorkgroupStorageSize', 'maxComputeInvocationsPerWorkgroup',
    'maxComputeWorkgroupSizeX', 'maxComputeWorkgroupSizeY', 'maxStorageBuffersPerShaderStage', 'maxComputeWorkgroupsPerDimension']) {
    const v = (L as unknown as Record<string, number>)[k];
    if (typeof v === 'number') requiredLimits[k] = v;
  }
  const device = await adapter.requestDevice({ requiredFeatures: features, requiredLimits });
  const info = adapter.info as GPUAdapterInfo & { subgroupMatrixConfigs?: GpuCaps['subgroupMatrix']; subgroupMinSize?: number; subgroupMaxSize?: number };
  const name = `${info.vendor ?? ''} ${info.device || info.description || info.architecture || ''}`.trim() || 'unknown adapter';
  const caps: GpuCaps = {
    f16: device.features.has('shader-f16'),
    subgroups: device.features.has('subgroups'),
    dot4: hasDot4(gpu),
    subgroupMatrix: device.features.has('chromium-experimental-subgroup-matrix' as GPUFeatureName) ? [...(info.subgroupMatrixConfigs ?? [])] : [],
    subgroupSize: info.subgroupMinSize && info.subgroupMinSize === info.subgroupMaxSize ? info.subgroupMinSize : 0,
    timestamps: device.features.has('timestamp-query'),
    maxWorkgroupStorage: device.limits.maxComputeWorkgroupStorageSize,
    maxInvocations: device.limits.maxComputeInvocationsPerWorkgroup,
    maxWorkgroupSizeX: device.limits.maxComputeWorkgroupSizeX,
    maxBufferSize: device.limits.maxBufferSize,
    maxBindingSize: device.limits.maxStorageBufferBindingSize,
    maxStorageBuffers: device.limits.maxStorageBuffersPerShaderStage,
    maxWorkgroupsPerDim: device.limits.maxComputeWorkgroupsPerDimension,
    name,
    software: /llvmpipe|lavapipe|swiftshader|software/i.test(`${name} ${info.description ?? ''} ${info.architecture ?? ''}`),
  };
  if (caps.subgroupMatrix.length) {
    caps.sgmLayoutTemplate = await compiles(device, sgmProbeKernel(caps.subgroupMatrix.find((c) => c.componentType === 'f16') ?? caps.subgroupMatrix[0]));
    sgmSyntax.layoutTemplate = caps.sgmLayoutTemplate;
  }
  const ctx: GpuContext = { gpu, device, caps, lost: null };
  void device.lost.then((l) => { ctx.lost = { reason: String(l.reason), message: l.message }; });
  return ctx;
}

/** Whether `code` compiles into a compute pipeline on `device` without an error. */
async function compiles(device: GPUDevice, code: string): Promise<boolean> {
  device.pushErrorScope('validation');
  let ok = true;
  try {
    const module = device.createShaderModule({ code });
    ok = !(await module.getCompilationInfo()).messages.some((m) => m.type === 'error');
    if (ok) await device.createComputePipelineAsync({ layout: 'auto', compute: { module, entryPoint: 'main' } });
  } catch {
    ok = false;
  }
  return !(await device.popErrorScope()) && ok;
}

/** Whether WGSL on this GPU has packed_4x8_integer_dot_product (dot4I8Packed). */
export function hasDot4(gpu: GPU | undefined): boolean {
  return (gpu as (GPU & { wgslLanguageFeatures?: ReadonlySet<string> }) | undefined)?.wgslLanguageFeatures?.has('packed_4x8_integer_dot_product') ?? false;
}

/** Throws the typed error of a lost device. */
export function checkLost(ctx: GpuContext): void {
  if (ctx.lost) {
    throw new DeviceLostError(`the WebGPU device was lost (${ctx.lost.reason}${ctx.lost.message ? `: ${ctx.lost.message}` : ''})`, {},
      'create the session again (a new device is acquired), or use backend \'wasm\'');
  }
}
