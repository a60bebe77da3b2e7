// Malformed input: mutants of real models (bytes and structure) either load, create a session and run, or throw
// webjit's typed error; never a crash, a hang, an untyped exception or an unhandled rejection.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { fuzz, fuzzCorpus } from './fuzz/harness.js';

const CASES = Number(process.env.WEBJIT_FUZZ_CASES ?? 10_000);

test(`fuzz: ${CASES} mutants of real models never crash or hang, on the reference and Wasm backends`, { timeout: 3_600_000 }, async () => {
  const files = fuzzCorpus();
  const rep = await fuzz(files, CASES);
  console.log(`fuzz: ${rep.cases} cases over ${files.length} files: ${rep.ok} worked, ${rep.typed} typed errors (${rep.runTyped} of them in run), `
    + `${rep.ran} ran to the end, ${rep.crashes.length} crashes, ${rep.hangs.length} hangs, peak RSS ${rep.peakRssMb} MiB; by backend ${JSON.stringify(rep.byBackend)}; by mutation ${JSON.stringify(rep.byKind)}`);
  assert.equal(rep.cases, CASES);
  assert.deepEqual(rep.hangs, []);
  assert.deepEqual(rep.crashes.slice(0, 5), []);
  // No mutant may allocate without bound: the whole process (both workers) stays under 4 GiB.
  assert.ok(rep.peakRssMb < 4096, `peak RSS ${rep.peakRssMb} MiB`);
  // Mutants must reach every stage, or the test proves little.
  assert.ok(rep.typed > CASES / 10, `only ${rep.typed} typed errors`);
  assert.ok(rep.ran > CASES / 20, `only ${rep.ran} mutants ran to the end`);
  assert.ok(rep.runTyped > CASES / 50, `only ${rep.runTyped} typed errors at run`);
  assert.ok(Object.keys(rep.byKind).length >= 15, `mutation kinds: ${Object.keys(rep.byKind).join(', ')}`);
});

test('fuzz harness self-check: an untyped error, an unhandled rejection and a hang are each reported, and the cases after them still run', { timeout: 120_000 }, async () => {
  const files = fuzzCorpus().slice(5, 9);
  const rep = await fuzz(files, 40, { jobs: 1, caseTimeoutMs: 3000, inject: { crash: 5, reject: 17, hang: 29 } });
  assert.equal(rep.cases, 40);
  assert.deepEqual(rep.hangs.map((h) => h.c), [29]);
  assert.deepEqual(rep.crashes.map((c) => c.c).sort((a, b) => a - b), [5, 17]);
  assert.match(rep.crashes.find((c) => c.c === 5)!.message, /TypeError: injected crash/);
  assert.match(rep.crashes.find((c) => c.c === 17)!.message, /injected unhandled rejection/);
  assert.equal(rep.ok + rep.typed + rep.crashes.length + rep.hangs.length, 40, 'every other case ran to an outcome');
});

test('fuzz regressions: every mutant that once crashed or hung now works or throws a typed error', { timeout: 300_000 }, async () => {
  // Case numbers name mutants exactly. Found by the on-demand runs (session 6): a Conv pad list of 2^32 (4457), Split
  // num_outputs 2^31 (10521, a fatal V8 array size), MaxPool pads of the wrong length (19918, an endless loop), Wasm
  // Pad with an absurd size (5247), an undefined folded constant (256200), a Concat axis of 2^31 (816793), and a NaN
  // shape that corrupted the Wasm allocator for every later session of the worker (974539, then 974547 failed).
  const files = fuzzCorpus();
  for (const [first, n] of [[4457, 1], [5247, 1], [10521, 1], [19918, 1], [256200, 1], [816793, 1], [974539, 9]]) {
    const rep = await fuzz(files, n, { first, jobs: 1 });
    assert.equal(rep.cases, n);
    assert.deepEqual([...rep.crashes.map((c) => `${c.c}: ${c.message.split('\n')[0]}`), ...rep.hangs.map((h) => `${h.c}: hang`)], [], `cases ${first}..${first + n - 1}`);
  }
});
