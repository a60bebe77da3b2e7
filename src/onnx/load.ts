// Loading a model from bytes (browser and Node) or from a path (Node, with external data files).
import { ModelFormatError, WebjitError } from '../errors.js';
import type { Model } from '../graph/ir.js';
import { decodeModel, type DecodeOptions } from './decode.js';
import { importNode } from '../util/node.js';

export type ModelSource = string | Uint8Array | ArrayBuffer;

export interface LoadOptions {
  /** External data files by location, for models loaded from bytes. */
  externalData?: Map<string, Uint8Array> | Record<string, Uint8Array>;
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node;

export async function loadModel(src: ModelSource, opts: LoadOptions = {}): Promise<Model> {
  let bytes: Uint8Array;
  let loadExternal: DecodeOptions['loadExternal'];
  const given = opts.externalData instanceof Map ? opts.externalData : new Map(Object.entries(opts.externalData ?? {}));
  const fromGiven = (loc: string, off: number, len: number | undefined) => {
    const f = given.get(loc);
    if (!f) throw new ModelFormatError(`external data file '${loc}' was not provided`, {}, 'pass it in options.externalData');
    return slice(f, off, len, loc);
  };
  if (typeof src === 'string') {
    if (!isNode) throw new WebjitError('loading from a path needs Node.js; in a browser pass the model bytes');
    const fs = await importNode<typeof import('node:fs')>('node:fs');
    const path = await importNode<typeof import('node:path')>('node:path');
    try {
      bytes = new Uint8Array(fs.readFileSync(src));
    } catch (e) {
      throw new ModelFormatError(`cannot read model file '${src}': ${(e as Error).message}`);
    }
    const dir = path.dirname(src);
    const files = new Map<string, Uint8Array>();
    loadExternal = (loc, off, len) => {
      if (given.has(loc)) return fromGiven(loc, off, len);
      const p = path.resolve(dir, loc);
      if (path.relative(dir, p).startsWith('..')) {
        throw new ModelFormatError(`external data location '${loc}' points outside the model's folder`);
      }
      let f = files.get(p);
      if (!f) {
        try { f = new Uint8Array(fs.readFileSync(p)); } catch (e) {
          throw new ModelFormatError(`cannot read external data file '${loc}': ${(e as Error).message}`);
        }
        files.set(p, f);
      }
      return slice(f, off, len, loc);
    };
  } else {
    bytes = src instanceof Uint8Array ? src : new Uint8Array(src);
    loadExternal = fromGiven;
  }
  return decodeModel(bytes, { loadExternal });
}

function slice(f: Uint8Array, off: number, len: number | undefined, loc: string): Uint8Array {
  const end = len === undefined ? f.length : off + len;
  if (off < 0 || end > f.length || end < off) {
    throw new ModelFormatError(`external data [${off}, ${end}) is outside '${loc}' (${f.length} bytes)`);
  }
  return f.subarray(off, end);
}
