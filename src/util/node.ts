// Node-only modules, imported at run time in a form bundlers leave alone: a browser build never resolves them.

/** True in Node.js (worker threads included), false in browsers. */
export const isNode = typeof process !== 'undefined' && !!process.versions?.node;

/** An environment variable in Node (benchmark and device-experiment knobs); undefined in browsers. */
export function envVar(name: string): string | undefined {
  return typeof process !== 'undefined' ? process.env?.[name] : undefined;
}

/** A positive integer from the environment (envVar), else `fallback`. */
export function envInt(name: string, fallback: number): number {
  const v = Number(envVar(name));
  return Number.isInteger(v) && v > 0 ? v : fallback;
}

/**
 * import() of a Node built-in or a Node-only package (Dawn's `webgpu`). The specifier is a variable and the magic
 * comments tell Vite and webpack not to resolve it, so bundling webjit for a browser neither warns about `node:*`
 * modules nor pulls in native addons. Call it only where isNode holds.
 */
export function importNode<T>(specifier: string): Promise<T> {
  return import(/* @vite-ignore */ /* webpackIgnore: true */ specifier) as Promise<T>;
}
