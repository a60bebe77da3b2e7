// Spelling of WGSL's subgroup-matrix loads and stores (Dawn's chromium_experimental_subgroup_matrix). Dawn moved the
// memory layout from a bool argument into the template list (`subgroupMatrixLoad<T, row_major>(p, offset, stride)`,
// `subgroupMatrixStore<col_major>(p, offset, value, stride)`) and warns on every call written the older way; browsers with
// an older Dawn know only the older way. The device's creation probes which one its compiler takes (device.ts).

/** Whether this process's WebGPU compiles the layout-in-the-template form (set once a device with subgroup matrices is made). */
export const sgmSyntax = { layoutTemplate: false };

const layout = (colMajor: boolean): string => (colMajor ? 'col_major' : 'row_major');

/** WGSL loading a subgroup matrix of type `type` from `ptr` at element `off`, `stride` elements between rows (or columns). */
export function sgmLoad(type: string, ptr: string, off: string, colMajor: boolean, stride: string): string {
  return sgmSyntax.layoutTemplate
    ? `subgroupMatrixLoad<${type}, ${layout(colMajor)}>(${ptr}, ${off}, ${stride})`
    : `subgroupMatrixLoad<${type}>(${ptr}, ${off}, ${colMajor}, ${stride})`;
}

/** WGSL storing subgroup matrix `value` to `ptr` at element `off`, `stride` elements between rows (or columns). */
export function sgmStore(ptr: string, off: string, value: string, colMajor: boolean, stride: string): string {
  return sgmSyntax.layoutTemplate
    ? `subgroupMatrixStore<${layout(colMajor)}>(${ptr}, ${off}, ${value}, ${stride})`
    : `subgroupMatrixStore(${ptr}, ${off}, ${value}, ${colMajor}, ${stride})`;
}

/** A kernel that compiles only where the layout-in-the-template form is known (its f16 16×16 operands are what the kernels use). */
export function sgmProbeKernel(c: { M: number; K: number; componentType: string }): string {
  const T = c.componentType;
  return `${T === 'f16' ? 'enable f16;\n' : ''}enable chromium_experimental_subgroup_matrix;
@group(0) @binding(0) var<storage, read_write> b: array<${T}>;
var<workgroup> w: array<${T}, ${c.M * c.K}>;
@compute @workgroup_size(64)
fn main() {
  let m = subgroupMatrixLoad<subgroup_matrix_left<${T}, ${c.K}, ${c.M}>, row_major>(&b, 0u, ${c.K}u);
  subgroupMatrixStore<col_major>(&w, 0u, m, ${c.M}u);
  workgroupBarrier();
  b[0] = w[1];
}
`;
}
