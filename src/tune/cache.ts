// The tuning cache: winners by device identity, kernel family and signature. Persisted as one JSON file under the
// user's cache folder in Node (WEBJIT_TUNE_CACHE=path overrides, =off disables) and in IndexedDB in browsers;
// exportable and importable as JSON so an app can ship pre-tuned results for the devices it knows.
import type { Family, Params } from './site.js';
import { importNode } from '../util/node.js';

export interface TuneEntry {
  params: Params;
  /** Median ms of one kernel run with the default parameters and with the winner, on this device. */
  defaultMs: number;
  tunedMs: number;
  /** Candidates verified and timed for this entry. */
  tried: number;
  /** Candidates rejected by verification. */
  rejected: number;
  at: string;
}

export interface TuneCacheJson {
  format: 'webjit-tuning';
  version: 1;
  /** device identity → `${family}|${sig}` → entry */
  devices: Record<string, Record<string, TuneEntry>>;
}

const FORMAT = 'webjit-tuning';

export const entryKey = (family: Family, sig: string) => `${family}|${sig}`;

export class TuneCache {
  private readonly devices = new Map<string, Map<string, TuneEntry>>();
  private dirty = false;

  get(device: string, family: Family, sig: string): TuneEntry | undefined {
    return this.devices.get(device)?.get(entryKey(family, sig));
  }

  set(device: string, family: Family, sig: string, e: TuneEntry): void {
    let m = this.devices.get(device);
    if (!m) { m = new Map(); this.devices.set(device, m); }
    m.set(entryKey(family, sig), e);
    this.dirty = true;
  }

  /** Entries of one device. */
  entries(device: string): [string, TuneEntry][] {
    return [...(this.devices.get(device) ?? new Map<string, TuneEntry>())];
  }

  get size(): number {
    let n = 0;
    for (const m of this.devices.values()) n += m.size;
    return n;
  }

  toJSON(): TuneCacheJson {
    const devices: TuneCacheJson['devices'] = {};
    for (const [d, m] of this.devices) devices[d] = Object.fromEntries(m);
    return { format: FORMAT, version: 1, devices };
  }

  /** Merges entries from JSON (an exported cache); entries for the same key are replaced. Returns how many. */
  import(json: unknown): number {
    const j = (typeof json === 'string' ? JSON.parse(json) : json) as Partial<TuneCacheJson>;
    if (!j || j.format !== FORMAT || j.version !== 1 || typeof j.devices !== 'object' || j.devices === null) {
      throw new TypeError(`not a webjit tuning cache (expected format '${FORMAT}' version 1)`);
    }
    let n = 0;
    for (const [d, entries] of Object.entries(j.devices)) {
      for (const [k, e] of Object.entries(entries ?? {})) {
        if (!e || typeof e !== 'object' || typeof e.params !== 'object' || e.params === null) continue;
        const sep = k.indexOf('|');
        if (sep < 0) continue;
        this.set(d, k.slice(0, sep) as Family, k.slice(sep + 1), e);
        n++;
      }
    }
    return n;
  }

  /** Unsaved changes since the last load or save. */
  get changed(): boolean { return this.dirty; }
  markSaved(): void { this.dirty = false; }
}

/** Where the cache lives: a file path in Node, 'indexeddb' in browsers, or null (persistence off). */
export async function cacheLocation(): Promise<string | null> {
  const env = typeof process !== 'undefined' ? process.env : undefined;
  if (env?.WEBJIT_TUNE_CACHE === 'off') return null;
  if (env?.WEBJIT_TUNE_CACHE) return env.WEBJIT_TUNE_CACHE;
  if (typeof process !== 'undefined' && process.versions?.node) {
    const os = await importNode<typeof import('node:os')>('node:os');
    const path = await importNode<typeof import('node:path')>('node:path');
    const base = env?.XDG_CACHE_HOME || path.join(os.homedir(), '.cache');
    return path.join(base, 'webjit', 'tuning.json');
  }
  return typeof indexedDB !== 'undefined' ? 'indexeddb' : null;
}

const IDB_NAME = 'webjit', IDB_STORE = 'tuning', IDB_KEY = 'cache';

function idb(): Promise<IDBDatabase> {
  return new Promise((resolve, reject) => {
    const req = indexedDB.open(IDB_NAME, 1);
    req.onupgradeneeded = () => req.result.createObjectStore(IDB_STORE);
    req.onsuccess = () => resolve(req.result);
    req.onerror = () => reject(req.error);
  });
}

/** The persisted cache (empty when there is none or it cannot be read: a cache never stops a session). */
export async function loadCache(location?: string | null): Promise<TuneCache> {
  const cache = new TuneCache();
  const where = location === undefined ? await cacheLocation() : location;
  if (!where) return cache;
  try {
    if (where === 'indexeddb') {
      const db = await idb();
      const json = await new Promise<unknown>((resolve, reject) => {
        const req = db.transaction(IDB_STORE, 'readonly').objectStore(IDB_STORE).get(IDB_KEY);
        req.onsuccess = () => resolve(req.result);
        req.onerror = () => reject(req.error);
      });
      db.close();
      if (json) cache.import(json);
    } else {
      const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
      const text = await fs.readFile(where, 'utf8').catch(() => null);
      if (text) cache.import(text);
    }
  } catch {
    // A damaged cache is ignored (and replaced at the next save).
  }
  cache.markSaved();
  return cache;
}

/** Writes the cache (atomically in Node: a temporary file renamed over the old one). */
export async function saveCache(cache: TuneCache, location?: string | null): Promise<void> {
  const where = location === undefined ? await cacheLocation() : location;
  if (!where) return;
  const json = cache.toJSON();
  if (where === 'indexeddb') {
    const db = await idb();
    await new Promise<void>((resolve, reject) => {
      const tx = db.transaction(IDB_STORE, 'readwrite');
      tx.objectStore(IDB_STORE).put(json, IDB_KEY);
      tx.oncomplete = () => resolve();
      tx.onerror = () => reject(tx.error);
    });
    db.close();
  } else {
    const fs = await importNode<typeof import('node:fs/promises')>('node:fs/promises');
    const path = await importNode<typeof import('node:path')>('node:path');
    await fs.mkdir(path.dirname(where), { recursive: true });
    // Another process may have added entries since this one loaded: merge them under ours.
    const onDisk = new TuneCache();
    const text = await fs.readFile(where, 'utf8').catch(() => null);
    if (text) { try { onDisk.import(text); } catch { /* replaced */ } }
    onDisk.import(json);
    const tmp = `${where}.${process.pid}.tmp`;
    await fs.writeFile(tmp, JSON.stringify(onDisk.toJSON(), null, 1));
    await fs.rename(tmp, where);
  }
  cache.markSaved();
}

/** The process-wide cache, loaded once. */
let shared: Promise<TuneCache> | null = null;
export function sharedCache(): Promise<TuneCache> {
  shared ??= loadCache();
  return shared;
}
