// Peers that live in Python (bench/peer.py): onnxruntime's native CPU build, the oracle where onnxruntime-node is not
// installed (the GPU machine's bundle leaves its 45 MB library out; its Python has onnxruntime of the same version),
// and PyTorch on CUDA, the op suite's physical reference. One long-lived process speaks JSON lines; tensors travel as
// .npy files in a temporary folder; each engine times its own runs.
import { spawn, type ChildProcessWithoutNullStreams } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { createInterface } from 'node:readline';
import { decodeNpy, encodeNpy } from '../cli/npy.js';
import type { Tensor } from '../tensor.js';
import { RESIDENT, type Engine, type EngineSession, type Feeds } from './engines.js';

/** Debian's python3 (where its python3-torch and python3-onnx are) unless WEBJIT_PYTHON names another. */
export const pythonExe = (): string => process.env.WEBJIT_PYTHON ?? (fs.existsSync('/usr/bin/python3') ? '/usr/bin/python3' : 'python3');

type Reply = Record<string, unknown> & { error?: string };

export class PythonPeer {
  private proc: ChildProcessWithoutNullStreams;
  private pending: ((r: Reply) => void)[] = [];
  private dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-peer-'));
  private files = 0;
  private dead: string | null = null;

  private constructor(script: string) {
    this.proc = spawn(pythonExe(), [script], { stdio: ['pipe', 'pipe', 'pipe'] });
    let stderr = '';
    this.proc.stderr.on('data', (d) => { stderr = (stderr + d).slice(-2000); });
    const fail = (why: string) => {
      this.dead = why;
      for (const p of this.pending.splice(0)) p({ error: why });
    };
    this.proc.on('error', (e) => fail(`python3 did not start: ${e.message}`));
    this.proc.on('exit', (code) => fail(`bench/peer.py exited (${code}): ${stderr.trim().split('\n').pop() ?? ''}`));
    createInterface({ input: this.proc.stdout }).on('line', (line) => this.pending.shift()?.({ ...JSON.parse(line) }));
  }

  /** Starts bench/peer.py and asks what it has: { ort?: version, torch?: 'version on GPU' } (empty without Python). */
  static async start(script: string): Promise<{ peer: PythonPeer; have: { ort?: string; torch?: string } }> {
    const peer = new PythonPeer(script);
    const r = await peer.ask({ cmd: 'probe' });
    return { peer, have: (r.have as { ort?: string; torch?: string }) ?? {} };
  }

  ask(req: object): Promise<Reply> {
    if (this.dead) return Promise.resolve({ error: this.dead });
    return new Promise((resolve) => {
      this.pending.push(resolve);
      this.proc.stdin.write(`${JSON.stringify(req)}\n`);
    });
  }

  private file(bytes: Uint8Array, ext: string): string {
    const f = path.join(this.dir, `${this.files++}.${ext}`);
    fs.writeFileSync(f, bytes);
    return f;
  }

  /** Model bytes as a file, written once per bytes object (a base-size model is half a gigabyte). */
  private modelFiles = new WeakMap<Uint8Array, string>();
  private modelFile(bytes: Uint8Array): string {
    let f = this.modelFiles.get(bytes);
    if (!f) { f = this.file(bytes, 'onnx'); this.modelFiles.set(bytes, f); }
    return f;
  }

  /** Feeds as .npy files, written once per feeds object. */
  private feedFiles = new WeakMap<Feeds, Record<string, string>>();
  private feedsOf(feeds: Feeds): Record<string, string> {
    let f = this.feedFiles.get(feeds);
    if (!f) {
      f = {};
      for (const [k, t] of Object.entries(feeds)) f[k] = this.file(encodeNpy(t), 'npy');
      this.feedFiles.set(feeds, f);
    }
    return f;
  }

  /** An engine on this peer: 'ort' (onnxruntime CPU), 'torch' (CUDA, inputs and outputs copied), 'torch-resident'. */
  engine(kind: 'ort' | 'torch' | 'torch-resident', name: string, threads = 1): Engine {
    const ok = (r: Reply): Reply => { if (r.error) throw new Error(r.error); return r; };
    return {
      name: kind === 'torch-resident' ? `${name}${RESIDENT}` : name,
      create: async (model): Promise<EngineSession> => {
        const file = typeof model === 'string' ? model : this.modelFile(model);
        const c = ok(await this.ask({ cmd: 'create', engine: kind, model: file, threads }));
        const id = c.id as number;
        let last = NaN;
        return {
          run: async (feeds) => {
            const r = ok(await this.ask({ cmd: 'run', id, feeds: this.feedsOf(feeds), out: this.dir }));
            last = r.ms as number;
            const out: Record<string, Tensor> = {};
            for (const [k, f] of Object.entries(r.outputs as Record<string, string>)) out[k] = decodeNpy(new Uint8Array(fs.readFileSync(f)), f);
            return out;
          },
          release: async () => { await this.ask({ cmd: 'release', id }); },
          selfTimed: {
            createMs: c.createMs as number,
            lastRunMs: () => last,
            timeRuns: async (feeds, opts) => ok(await this.ask({ cmd: 'time', id, feeds: this.feedsOf(feeds), ...opts })).times as number[],
          },
        };
      },
    };
  }

  close(): void {
    this.proc.stdin.end();
    fs.rmSync(this.dir, { recursive: true, force: true });
  }
}
