// Fuzz worker: loads and creates sessions for mutants of the model files it is given; reports each case.
import * as fs from 'node:fs';
import { parentPort, workerData } from 'node:worker_threads';
import { WebjitError } from '../../src/errors.js';
import { InferenceSession } from '../../src/session.js';
import { mutate } from './mutate.js';

interface Job { files: string[]; first: number; count: number }
const job = workerData as Job;
const sources = job.files.map((f) => new Uint8Array(fs.readFileSync(f)));

for (let c = job.first; c < job.first + job.count; c++) {
  const fi = c % sources.length;
  const { bytes, kind } = mutate(sources[fi], c);
  parentPort!.postMessage({ type: 'start', c, file: job.files[fi], kind });
  let outcome: 'ok' | 'typed' | 'crash' = 'ok';
  let message = '';
  try {
    const s = await InferenceSession.create(bytes);
    await s.release();
  } catch (e) {
    if (e instanceof WebjitError) outcome = 'typed';
    else { outcome = 'crash'; message = e instanceof Error ? `${e.name}: ${e.message}\n${e.stack}` : String(e); }
  }
  parentPort!.postMessage({ type: 'done', c, outcome, message });
}
parentPort!.postMessage({ type: 'end' });
