// What a warm tuning cache adds to session creation: create + first run with tuning 'off' and with 'cache'
// (fresh process per measurement is not needed: the cache file is read through loadCache each time here).
// Usage: WEBJIT_DIST=dist WEBJIT_TUNE_CACHE=FILE node bench/tune-create.mjs MODEL BACKEND B S
const dist = process.env.WEBJIT_DIST ?? new URL('../dist', import.meta.url).pathname;
const { InferenceSession, Tensor } = await import(`${dist}/src/index.js`);
const { loadCache } = await import(`${dist}/src/tune/cache.js`);
const [model, backend = 'wasm', bs = '1', ss = '128'] = process.argv.slice(2);
const B = Number(bs), S = Number(ss), n = B * S;
const feeds = {
  input_ids: new Tensor('int64', BigInt64Array.from({ length: n }, (_, i) => BigInt(i % 2)), [B, S]),
  attention_mask: new Tensor('int64', new BigInt64Array(n).fill(1n), [B, S]),
  token_type_ids: new Tensor('int64', new BigInt64Array(n), [B, S]),
};
const median = (xs) => [...xs].sort((a, b) => a - b)[xs.length >> 1];
const t = performance.now();
const cache = await loadCache();
const loadMs = performance.now() - t;
const times = { off: [], cache: [] };
for (let i = 0; i < 5; i++) {
  for (const tuning of ['off', 'cache']) {
    const t0 = performance.now();
    const s = await InferenceSession.create(model, { backend, threads: 2, tuning });
    await s.run(feeds);
    times[tuning].push(performance.now() - t0);
    await s.release();
  }
}
console.log(`${model} ${backend}: create + first run, median of 5 interleaved: tuning off ${median(times.off).toFixed(1)} ms, warm cache ${median(times.cache).toFixed(1)} ms (${(median(times.cache) - median(times.off)).toFixed(1)} ms); cache file ${cache.size} entries read in ${loadMs.toFixed(1)} ms`);
