// Operator registry of the reference backend: kernels keyed by (domain, op type), with attribute access.
import { GraphError, UnsupportedError } from '../errors.js';
import type { Attribute, Graph, Node, ValueType } from '../graph/ir.js';
import type { Tensor, Value } from '../tensor.js';

export interface KernelContext {
  readonly node: Node;
  /** Operator-set version in force for the node's domain. */
  readonly opset: number;
  readonly attr: AttrReader;
  /** Runs a subgraph attribute (If/Loop/Scan bodies) with the caller's scope visible. */
  runSubgraph(g: Graph, inputs: (Value | undefined)[]): Value[];
}

/** A kernel takes the node's inputs (undefined where omitted) and returns its outputs in order. */
export type Kernel = (inputs: (Value | undefined)[], ctx: KernelContext) => Value[];

const KERNELS = new Map<string, Kernel>();
const key = (domain: string, op: string) => `${domain}::${op}`;

export function registerOp(opType: string, kernel: Kernel, domain = ''): void {
  KERNELS.set(key(domain, opType), kernel);
}

export function findKernel(domain: string, opType: string): Kernel | undefined {
  return KERNELS.get(key(domain, opType));
}

export function registeredOps(): string[] {
  return [...KERNELS.keys()];
}

export class AttrReader {
  constructor(private readonly node: Node, private readonly attrs: Map<string, Attribute>) {}

  has(name: string): boolean {
    return this.attrs.has(name);
  }

  private get(name: string, types: string[]): Attribute | undefined {
    const a = this.attrs.get(name);
    if (a && !types.includes(a.type)) {
      throw new GraphError(`attribute '${name}' has type ${a.type}, expected ${types.join(' or ')}`,
        { node: this.node.name, op: this.node.opType });
    }
    return a;
  }

  private missing(name: string): never {
    throw new GraphError(`required attribute '${name}' is missing`, { node: this.node.name, op: this.node.opType },
      'the model is invalid; re-export it');
  }

  int(name: string, dflt?: number): number {
    const a = this.get(name, ['int']);
    if (a) return a.value as number;
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  float(name: string, dflt?: number): number {
    const a = this.get(name, ['float']);
    if (a) return a.value as number;
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  string(name: string, dflt?: string): string {
    const a = this.get(name, ['string']);
    if (a) return a.value as string;
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  ints(name: string, dflt?: number[]): number[] {
    const a = this.get(name, ['ints']);
    if (a) return a.value as number[];
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  floats(name: string, dflt?: number[]): number[] {
    const a = this.get(name, ['floats']);
    if (a) return a.value as number[];
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  strings(name: string, dflt?: string[]): string[] {
    const a = this.get(name, ['strings']);
    if (a) return a.value as string[];
    if (dflt === undefined) this.missing(name);
    return dflt;
  }

  tensor(name: string): Tensor | undefined {
    return this.get(name, ['tensor', 'sparse_tensor'])?.value as Tensor | undefined;
  }

  graph(name: string): Graph {
    const a = this.get(name, ['graph']);
    if (!a) this.missing(name);
    return a.value as Graph;
  }

  typeProto(name: string): ValueType | undefined {
    return this.get(name, ['type_proto'])?.value as ValueType | undefined;
  }

  /** Any attribute, raw (Constant's value_* family). */
  raw(name: string): Attribute | undefined {
    return this.attrs.get(name);
  }
}

/** For kernels: reject an input/attribute combination the kernel does not implement. */
export function unsupported(ctx: KernelContext, what: string): never {
  throw new UnsupportedError(what, { node: ctx.node.name, op: ctx.node.opType });
}
