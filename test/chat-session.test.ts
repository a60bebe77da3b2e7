// Multi-turn chat with the KV cache kept between turns (GenerateOptions.reusePrefix, ChatSession), on the trained pair
// (test/fixtures/lm): a turn runs only what is new, and its reply is the reply a fresh prefill of the whole chat gives.
import assert from 'node:assert/strict';
import { test } from 'node:test';
import { ChatSession } from '../src/generate/chat.js';
import { TextGenerator } from '../src/generate/generate.js';
import { TextTokenizer } from '../src/generate/tokenizer.js';
import { InputError } from '../src/errors.js';
import { loadLlm } from '../src/llm/model_io.js';
import type { LlmWeights } from '../src/llm/types.js';

const F = 'test/fixtures/lm';
// The trained pair's tokenizer has no chat template: a plain-text one ("User: …\n\nAssistant:"), a reply written as it
// was generated (after "Assistant:", its own leading space), so that the next turn's prompt repeats its tokens.
const TEMPLATE = "{{ bos_token }}{% for m in messages %}{% if m['role'] == 'assistant' %}Assistant:{{ m['content'] }}{% else %}{{ m['role'] | capitalize }}: {{ m['content'] }}{% endif %}\n\n{% endfor %}{% if add_generation_prompt %}Assistant:{% endif %}";

let pair: Promise<{ target: LlmWeights; draft: LlmWeights; tok: TextTokenizer }> | null = null;
const load = () => (pair ??= (async () => {
  const [target, draft, tok] = await Promise.all([loadLlm(`${F}/target.q4.safetensors`), loadLlm(`${F}/draft.q4.safetensors`), TextTokenizer.fromFile(`${F}/tokenizer.json`)]);
  return { target, draft, tok };
})());

for (const backend of ['reference', 'wasm'] as const) {
  test(`chat (${backend}): each turn runs only its new tokens, and replies as a fresh prefill of the whole chat does`, async () => {
    const { target, tok } = await load();
    const gen = await TextGenerator.create(target, { backend, threads: 1, capacity: 512, tokenizer: tok });
    const chat = new ChatSession(gen, { system: 'You answer questions about Debian packages.', chatTemplate: TEMPLATE });
    const turns = ['What does the package manager do?', 'And what is a source package?', 'Thanks. One more: what is a mirror?'];
    let before = 0;
    for (const [t, text] of turns.entries()) {
      const g = chat.send(text, { maxTokens: 24 });
      await g.all();
      const s = g.stats!;
      const promptIds = tok.encode(g.promptText!, { addSpecialTokens: false });
      assert.equal(s.promptTokens, promptIds.length);
      // The fresh reference: a generator that never saw the chat, the same messages.
      const fresh = await TextGenerator.create(target, { backend, threads: 1, capacity: 512, tokenizer: tok });
      const f = fresh.generate({ messages: chat.messages.slice(0, -1), chatTemplate: TEMPLATE }, { maxTokens: 24 });
      await f.all();
      await fresh.release();
      assert.equal(f.promptText, g.promptText, `turn ${t}: the same prompt`);
      assert.deepEqual(g.ids, f.ids, `turn ${t}: the reply with the cache kept equals a fresh prefill's`);
      console.log(`turn ${t} (${backend}): ${s.promptTokens} prompt tokens, ${s.reusedTokens} from the cache: ${JSON.stringify(g.text)}`);
      if (t === 0) assert.equal(s.reusedTokens, 0, 'the first turn has nothing cached');
      else {
        // The last prompt and (re-encoded the same) the start of its reply: the last prompt is a prefix of this one.
        assert.ok(s.reusedTokens! > before, `turn ${t}: ${s.reusedTokens} reused, the last prompt had ${before}`);
        assert.ok(s.reusedTokens! < s.promptTokens, 'the new user message runs');
      }
      before = s.promptTokens;
      assert.deepEqual(chat.messages.slice(-2), [{ role: 'user', content: text }, { role: 'assistant', content: g.text }]);
    }
    assert.equal(chat.messages.length, 1 + 2 * turns.length);
    await gen.release();
  });
}

// WebGPU: greedy tokens come from a stream with steps in flight (plain) or from GPU-chained draft rounds.
for (const backend of ['wasm', 'webgpu'] as const) test(`reusePrefix (${backend}): a prompt that extends the last prompt and its output keeps all of it cached; a consumer that stops early leaves what it took; speculative rounds leave a valid cache`, { timeout: 600_000 }, async () => {
  const { target, draft, tok } = await load();
  const p0 = tok.encode('The Debian project', { addSpecialTokens: true });
  for (const withDraft of [false, true]) {
    const what = `${backend}, ${withDraft ? 'with the draft (k = 3)' : 'plain'}`;
    const gen = await TextGenerator.create(target, { backend, threads: 1, capacity: 256, tokenizer: tok, ...(withDraft ? { draft, draftTokens: 3 } : {}) });
    const fresh = await TextGenerator.create(target, { backend, threads: 1, capacity: 256, tokenizer: tok });
    const a = gen.generate(p0, { maxTokens: 12 });
    await a.all();
    // The next prompt: the last prompt, its output, and more text.
    const p1 = [...p0, ...a.ids, ...tok.encode(' and the', { addSpecialTokens: false })];
    const b = gen.generate(p1, { maxTokens: 10, reusePrefix: true });
    await b.all();
    assert.equal(b.stats!.reusedTokens, p0.length + a.ids.length - 1, `${what}: all but the last output token was cached`);
    const fb = fresh.generate(p1, { maxTokens: 10 });
    await fb.all();
    assert.deepEqual(b.ids, fb.ids, `${what}: the same tokens as a fresh prefill`);
    // A consumer that stops after 3 tokens: the cache holds the prompt and 2 of them.
    const c = gen.generate(p0, { maxTokens: 20, reusePrefix: true });
    let n = 0;
    for await (const _ of c) if (++n === 3) break;
    assert.equal(c.stats, null, 'stopped early: no stats');
    const p2 = [...p0, ...c.ids, 42];
    const d = gen.generate(p2, { maxTokens: 6, reusePrefix: true });
    await d.all();
    assert.equal(d.stats!.reusedTokens, p0.length + 2, `${what}: the prompt and two of the three tokens taken`);
    const fd = fresh.generate(p2, { maxTokens: 6 });
    await fd.all();
    assert.deepEqual(d.ids, fd.ids, `${what}: after an early stop`);
    // Without reusePrefix nothing is reused, and a different prompt shares only its common start.
    const e = gen.generate([p0[0], 7, 8, 9], { maxTokens: 2, reusePrefix: true });
    await e.all();
    assert.equal(e.stats!.reusedTokens, 1);
    await gen.release();
    await fresh.release();
  }
});

test('chat: a failed turn leaves the messages as they were; a template error is an InputError at send()', async () => {
  const { target, tok } = await load();
  const gen = await TextGenerator.create(target, { backend: 'reference', capacity: 40, tokenizer: tok });
  const chat = new ChatSession(gen, { chatTemplate: TEMPLATE });
  await chat.send('Hello', { maxTokens: 4 }).all();
  assert.equal(chat.messages.length, 2);
  // The cache's capacity (40) is too small for a long turn: the error ends the generation, the messages stay.
  await assert.rejects(chat.send('word '.repeat(60), { maxTokens: 4 }).all());
  assert.equal(chat.messages.length, 2, 'the failed turn was not added');
  const bad = new ChatSession(gen, { chatTemplate: "{{ raise_exception('no chats here') }}" });
  assert.throws(() => bad.send('Hi'), (e: unknown) => e instanceof InputError && /no chats here/.test((e as Error).message));
  assert.equal(bad.messages.length, 0);
  await gen.release();
});

test('CLI: generate --chat without --prompt converses on stdin, a turn a line, the cache kept between turns', { timeout: 120_000 }, async () => {
  const { spawnSync } = await import('node:child_process');
  const fs = await import('node:fs');
  const os = await import('node:os');
  const path = await import('node:path');
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-chat-'));
  const tpl = path.join(dir, 'chat.jinja');
  fs.writeFileSync(tpl, TEMPLATE);
  const args = ['bin/webjit.js', 'generate', `${F}/target.q4.safetensors`, '--tokenizer', `${F}/tokenizer.json`, '--chat', '--chat-template', tpl,
    '--system', 'Answer briefly.', '--max-tokens', '8', '--threads', '1', '--json'];
  const r = spawnSync(process.execPath, args, { encoding: 'utf8', input: 'What is Debian?\nAnd a source package?\n\nnot read\n', env: { ...process.env, WEBJIT_TUNE_CACHE: 'off' } });
  assert.equal(r.status, 0, r.stderr);
  const turns = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { turn: number; text: string; ids: number[]; prompt_tokens: number; reused_tokens: number });
  assert.equal(turns.length, 2, 'an empty line ends the conversation');
  assert.deepEqual(turns.map((t) => t.turn), [1, 2]);
  assert.equal(turns[0].reused_tokens, 0);
  assert.ok(turns[1].reused_tokens > turns[0].prompt_tokens && turns[1].reused_tokens < turns[1].prompt_tokens, JSON.stringify(turns[1]));
  // The same conversation in the API gives the same replies.
  const { target, tok } = await load();
  const gen = await TextGenerator.create(target, { backend: 'wasm', threads: 1, capacity: 512, tokenizer: tok });
  const chat = new ChatSession(gen, { system: 'Answer briefly.', chatTemplate: TEMPLATE });
  for (const [i, q] of ['What is Debian?', 'And a source package?'].entries()) {
    const g = chat.send(q, { maxTokens: 8 });
    await g.all();
    assert.deepEqual(g.ids, turns[i].ids, `turn ${i + 1}`);
  }
  await gen.release();
  fs.rmSync(dir, { recursive: true });
});
