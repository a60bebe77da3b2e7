// Typed errors: every failure says what went wrong, where (node, op, input) and what to do.

export interface ErrorWhere {
  node?: string;
  op?: string;
  input?: string;
  /** Path inside a protobuf message, e.g. "graph.node[3].attribute[0]". */
  path?: string;
}

export class WebjitError extends Error {
  readonly where: ErrorWhere;
  readonly hint?: string;
  constructor(message: string, where: ErrorWhere = {}, hint?: string) {
    const loc = [
      where.node !== undefined ? `node '${where.node}'` : '',
      where.op ? `op ${where.op}` : '',
      where.input !== undefined ? `input '${where.input}'` : '',
      where.path ? `at ${where.path}` : '',
    ].filter(Boolean).join(', ');
    super(`${loc ? loc + ': ' : ''}${message}${hint ? ` (${hint})` : ''}`);
    this.name = new.target.name;
    this.where = where;
    this.hint = hint;
  }
}

/** The bytes are not a valid ONNX protobuf message. */
export class ModelFormatError extends WebjitError {}
/** The model is valid but uses an operator, attribute or dtype webjit does not implement. */
export class UnsupportedError extends WebjitError {}
/** The graph is inconsistent: a cycle, a missing value, shapes that cannot agree. */
export class GraphError extends WebjitError {}
/** Feeds given to run() do not match the model's inputs. */
export class InputError extends WebjitError {}
/** A kernel failed while running a node (bad data such as out-of-range indices). */
export class ExecutionError extends WebjitError {}
/** A run passed the time limit the session was given (runTimeoutMs). */
export class TimeoutError extends WebjitError {
  constructor(readonly limitMs: number, where: ErrorWhere, inner?: ErrorWhere) {
    super(`the run passed its time limit of ${limitMs} ms${inner ? ` inside its subgraph, at node '${inner.node}' (${inner.op})` : ''}`, where,
      'raise runTimeoutMs, or check the model: a Loop with an absurd trip count or a huge tensor can cause this');
  }
}
/** The model or a tensor exceeds a memory limit. */
export class ResourceLimitError extends WebjitError {}

/** Wraps an unexpected exception thrown inside a node so it carries the node's location. */
export function atNode(err: unknown, node: string, op: string): WebjitError {
  if (err instanceof WebjitError) {
    if (err.where.node !== undefined) return err;
    const e = new (err.constructor as typeof WebjitError)(stripLoc(err), { ...err.where, node, op }, err.hint);
    return e;
  }
  const msg = err instanceof Error ? err.message : String(err);
  return new ExecutionError(msg, { node, op }, 'this is a bug in webjit or invalid data in the model; please report it with the model');
}

function stripLoc(err: WebjitError): string {
  // Message without its location prefix and hint: rebuild from the original parts.
  let m = err.message;
  if (err.hint && m.endsWith(` (${err.hint})`)) m = m.slice(0, -(err.hint.length + 3));
  const i = m.indexOf(': ');
  const hasLoc = err.where.op || err.where.input !== undefined || err.where.path;
  return hasLoc && i >= 0 ? m.slice(i + 2) : m;
}
/** The GPU device was lost (destroyed, driver reset, out of memory): the session must be created again. */
export class DeviceLostError extends WebjitError {}
