// Graph IR: typed values with static or symbolic dims, nodes, subgraphs, model-local functions.
import type { DType, Tensor } from '../tensor.js';

/** A dimension: a number when static, a name when symbolic, null when unknown. */
export type Dim = number | string | null;

export type ValueType =
  | { kind: 'tensor'; dtype: DType | null; shape: Dim[] | null }
  | { kind: 'sparse'; dtype: DType | null; shape: Dim[] | null }
  | { kind: 'sequence'; elem: ValueType | null }
  | { kind: 'optional'; elem: ValueType | null }
  | { kind: 'map'; key: DType; value: ValueType | null };

export interface ValueInfo {
  name: string;
  type: ValueType | null;
}

export type AttrType =
  | 'float' | 'int' | 'string' | 'tensor' | 'graph' | 'sparse_tensor' | 'type_proto'
  | 'floats' | 'ints' | 'strings' | 'tensors' | 'graphs' | 'sparse_tensors' | 'type_protos';

export interface Attribute {
  name: string;
  type: AttrType;
  /** number | string | Tensor | Graph | ValueType, or an array of one of them. */
  value: number | string | Tensor | Graph | ValueType | number[] | string[] | Tensor[] | Graph[] | ValueType[];
  /** In a function body: take the value from the caller's attribute of this name. */
  refAttrName?: string;
}

export interface Node {
  name: string;
  opType: string;
  /** '' for the default ai.onnx domain. */
  domain: string;
  /** '' marks an omitted optional input. */
  inputs: string[];
  outputs: string[];
  attrs: Map<string, Attribute>;
}

export interface Graph {
  name: string;
  nodes: Node[];
  inputs: ValueInfo[];
  outputs: ValueInfo[];
  initializers: Map<string, Tensor>;
  valueInfo: Map<string, ValueInfo>;
}

export interface FunctionDef {
  name: string;
  domain: string;
  inputs: string[];
  outputs: string[];
  attributes: string[];
  attributeDefaults: Map<string, Attribute>;
  nodes: Node[];
  opsets: Map<string, number>;
}

export interface Model {
  irVersion: number;
  producer: string;
  /** Operator set version per domain ('' = ai.onnx). */
  opsets: Map<string, number>;
  graph: Graph;
  functions: Map<string, FunctionDef>;
  metadata: Map<string, string>;
}

export const functionKey = (domain: string, name: string) => `${domain}::${name}`;

export function tensorType(dtype: DType | null, shape: Dim[] | null): ValueType {
  return { kind: 'tensor', dtype, shape };
}

export function formatType(t: ValueType | null): string {
  if (!t) return '?';
  switch (t.kind) {
    case 'tensor': case 'sparse':
      return `${t.kind === 'sparse' ? 'sparse ' : ''}${t.dtype ?? '?'}[${t.shape ? t.shape.map((d) => d ?? '?').join(',') : '...'}]`;
    case 'sequence': return `seq(${formatType(t.elem)})`;
    case 'optional': return `optional(${formatType(t.elem)})`;
    case 'map': return `map(${t.key},${formatType(t.value)})`;
  }
}
