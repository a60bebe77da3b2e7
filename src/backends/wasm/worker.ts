// Worker thread of the Wasm runtime: instantiates kernels on the shared memory and takes tasks of each launch.
import { C, CMD_EXIT, CMD_YIELD, SPIN_MS, takeTask } from './control.js';
import { importNode } from '../../util/node.js';

type RunFn = (...args: number[]) => void;
interface Port { postMessage(m: unknown): void; on?(e: string, f: (m: unknown) => void): void }

let memory: WebAssembly.Memory;
let ctrl: Int32Array;
const kernels: RunFn[] = [];
let lastGen = 0;

function loop(port: Port): void {
  for (;;) {
    let spins = 0;
    // Poll, looking at the clock every 4096 polls only.
    const until = performance.now() + SPIN_MS;
    while (Atomics.load(ctrl, C.GEN) === lastGen && ((++spins & 4095) !== 0 || performance.now() < until));
    if (Atomics.load(ctrl, C.GEN) === lastGen) {
      Atomics.add(ctrl, C.SLEEPERS, 1);
      Atomics.wait(ctrl, C.GEN, lastGen);
      Atomics.sub(ctrl, C.SLEEPERS, 1);
    }
    const gen = Atomics.load(ctrl, C.GEN);
    lastGen = gen;
    const cmd = Atomics.load(ctrl, C.CMD);
    if (cmd === CMD_YIELD) { port.postMessage({ type: 'yielded' }); return; }
    if (cmd === CMD_EXIT) { port.postMessage({ type: 'exited' }); return; }
    const ntasks = ctrl[C.NTASKS];
    const fn = kernels[ctrl[C.KERNEL]];
    if (!fn) continue; // a launch of a kernel this worker has not received yet: the others take its tasks
    const nargs = ctrl[C.NARGS];
    const args = new Array<number>(nargs + 2);
    for (let i = 0; i < nargs; i++) args[i] = ctrl[C.ARGS + i];
    let done = 0;
    for (let t = takeTask(ctrl, gen, ntasks); t >= 0; t = takeTask(ctrl, gen, ntasks)) {
      args[nargs] = t;
      args[nargs + 1] = t + 1;
      try { fn(...args); } catch { Atomics.store(ctrl, C.ERROR, 1); }
      done++;
    }
    if (done) { Atomics.add(ctrl, C.DONE, done); Atomics.notify(ctrl, C.DONE); }
  }
}

function onMessage(port: Port, m: { type: string; memory?: WebAssembly.Memory; ctrl?: SharedArrayBuffer; modules?: { id: number; module: WebAssembly.Module }[] }): void {
  if (m.type === 'init') {
    memory = m.memory!;
    ctrl = new Int32Array(m.ctrl!);
    // Booted: the first 'modules' message (possibly empty) starts the wait loop.
    port.postMessage({ type: 'ready' });
  } else if (m.type === 'modules') {
    for (const { id, module } of m.modules!) {
      const inst = new WebAssembly.Instance(module, { env: { memory } });
      kernels[id] = inst.exports.run as RunFn;
    }
    lastGen = Atomics.load(ctrl, C.GEN);
    port.postMessage({ type: 'ready' });
    loop(port);
  }
}

const isNode = typeof process !== 'undefined' && !!process.versions?.node;
if (isNode) {
  // No top-level await: a bundler may emit this worker as a classic (iife) script, which cannot have one.
  void importNode<typeof import('node:worker_threads')>('node:worker_threads').then(({ parentPort }) => {
    const port = parentPort as unknown as Port;
    parentPort!.on('message', (m) => onMessage(port, m));
  });
} else {
  const self_ = globalThis as unknown as { onmessage: (e: { data: unknown }) => void; postMessage(m: unknown): void };
  self_.onmessage = (e) => onMessage(self_, e.data as never);
}
