// Worker thread of the conformance pool: runs the tests it is sent, one at a time.
import { parentPort } from 'node:worker_threads';
import { runTest, type RunOptions } from './runner.js';

parentPort!.on('message', async (msg: { dir: string; opts: RunOptions }) => {
  try {
    parentPort!.postMessage(await runTest(msg.dir, msg.opts));
  } catch (e) {
    parentPort!.postMessage({ name: msg.dir, dir: msg.dir, op: '?', status: 'error', standard: true, message: String(e), ms: 0 });
  }
});
