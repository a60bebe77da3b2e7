// Time to first token of each turn of a conversation, with the KV cache kept between turns (ChatSession, reusePrefix)
// against a fresh prefill of the whole chat each turn, on the trained target (wasm). Turns alternate between the two
// ways so that this machine's load moves both alike.
// Usage: npx tsx bench/chat-turns.mts [turns=6] [maxTokens=24] [threads=2]
import { ChatSession } from '../src/generate/chat.js';
import { TextGenerator } from '../src/generate/generate.js';
import { TextTokenizer } from '../src/generate/tokenizer.js';
import { loadLlm } from '../src/llm/model_io.js';

const [turns = 6, maxTokens = 24, threads = 2] = process.argv.slice(2).map(Number);
const F = 'test/fixtures/lm';
const TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}Assistant:{{ m['content'] }}{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}{% endif %}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";
const [target, tok] = await Promise.all([loadLlm(`${F}/target.q4.safetensors`), TextTokenizer.fromFile(`${F}/tokenizer.json`)]);
const questions = (await import('node:fs')).readFileSync(`${F}/valid-sample.txt`, 'utf8').split(/(?<=\.)\s+/).filter((l) => l.length > 30 && l.length < 160).slice(0, turns);
const kept = await TextGenerator.create(target, { backend: 'wasm', threads, capacity: 512, tokenizer: tok });
const fresh = await TextGenerator.create(target, { backend: 'wasm', threads, capacity: 512, tokenizer: tok });
const chat = new ChatSession(kept, { system: 'You answer questions about Debian.', chatTemplate: TEMPLATE });
// Warm both runners up.
await kept.generate('Debian', { maxTokens: 4 }).all();
await fresh.generate('Debian', { maxTokens: 4 }).all();
console.log(`turn | prompt tokens | kept in the cache | first token, cache kept (ms) | first token, fresh prefill (ms) | ratio | same reply`);
let sumK = 0, sumF = 0;
for (const [t, q] of questions.entries()) {
  const g = chat.send(q, { maxTokens });
  await g.all();
  const f = fresh.generate({ messages: chat.messages.slice(0, -1), chatTemplate: TEMPLATE }, { maxTokens });
  await f.all();
  const a = g.stats!, b = f.stats!;
  sumK += a.timeToFirstTokenMs;
  sumF += b.timeToFirstTokenMs;
  const same = JSON.stringify(g.ids) === JSON.stringify(f.ids);
  console.log(`${t + 1} | ${a.promptTokens} | ${a.reusedTokens} | ${a.timeToFirstTokenMs.toFixed(1)} | ${b.timeToFirstTokenMs.toFixed(1)} | ${(b.timeToFirstTokenMs / a.timeToFirstTokenMs).toFixed(2)}x | ${same}`);
}
console.log(`all turns: first tokens after ${sumK.toFixed(0)} ms with the cache kept, ${sumF.toFixed(0)} ms with fresh prefills (${(sumF / sumK).toFixed(2)}x)`);
await kept.release();
await fresh.release();
