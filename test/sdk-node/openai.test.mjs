// The official OpenAI Node SDK against the emulator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import OpenAI from 'openai';
import { root, prompt, reply, stats, waitFor } from './emulator.mjs';

const client = (apiKey = 'test-key') => new OpenAI({ baseURL: `${root}/openai/v1`, apiKey, maxRetries: 0 });
const messages = [
  { role: 'system', content: 'answer briefly' },
  { role: 'user', content: prompt },
];

test('openai chat completion', async () => {
  const r = await client().chat.completions.create({ model: 'gpt-4o-mini', messages });
  assert.equal(r.object, 'chat.completion');
  assert.equal(r.choices[0].message.content, reply);
  assert.equal(r.choices[0].finish_reason, 'stop');
  assert.deepEqual([r.usage.prompt_tokens, r.usage.completion_tokens, r.usage.total_tokens], [5, 11, 16]);
});

test('openai chat completion stream with usage', async () => {
  const stream = await client().chat.completions.create({
    model: 'gpt-4o-mini', messages, stream: true, stream_options: { include_usage: true }, max_completion_tokens: 4,
  });
  let text = '';
  let finish = null;
  let usage = null;
  for await (const chunk of stream) {
    assert.equal(chunk.object, 'chat.completion.chunk');
    for (const c of chunk.choices) {
      text += c.delta.content ?? '';
      finish = c.finish_reason ?? finish;
    }
    usage = chunk.usage ?? usage;
  }
  assert.equal(text, 'hello node world lorem');
  assert.equal(finish, 'length');
  assert.deepEqual([usage.prompt_tokens, usage.completion_tokens], [5, 4]);
});

test('openai responses stream', async () => {
  const stream = await client().responses.create({ model: 'gpt-4o-mini', input: prompt, stream: true });
  let text = '';
  let final = null;
  for await (const ev of stream) {
    if (ev.type === 'response.output_text.delta') text += ev.delta;
    if (ev.type === 'response.completed') final = ev.response;
  }
  assert.equal(text, reply);
  assert.equal(final.output_text ?? final.output[0].content[0].text, reply);
  assert.equal(final.usage.output_tokens, 11);
});

test('openai cut stream rejects', async () => {
  const stream = await client().chat.completions.create({ model: 'gpt-4o-mini+cut_after=2', messages, stream: true });
  let text = '';
  await assert.rejects(async () => {
    for await (const chunk of stream) text += chunk.choices[0]?.delta?.content ?? '';
  });
  assert.equal(text, 'hello node');
});

test('openai abort is seen by the emulator', async () => {
  const before = (await stats()).aborted;
  const ac = new AbortController();
  const stream = await client().chat.completions.create(
    { model: 'gpt-4o-mini+tps=20;tokens=10000', messages, stream: true }, { signal: ac.signal });
  // The SDK ends an aborted stream's iteration quietly (or with an abort
  // error); what matters is that the emulator saw the connection go.
  try {
    for await (const chunk of stream) if (chunk.choices[0]?.delta?.content) ac.abort();
  } catch (e) {
    assert.ok(e instanceof OpenAI.APIUserAbortError || e.name === 'AbortError', String(e));
  }
  await waitFor((s) => s.aborted > before);
});

const errorCases = [
  { name: '401', key: 'invalid-key', model: 'gpt-4o-mini', cls: OpenAI.AuthenticationError, status: 401, code: 'invalid_api_key' },
  { name: '429', key: 'k', model: 'gpt-4o-mini+fail=429;retry_after=2s', cls: OpenAI.RateLimitError, status: 429, code: 'rate_limit_exceeded', retryAfter: '2' },
  { name: '500', key: 'k', model: 'gpt-4o-mini+fail=500', cls: OpenAI.InternalServerError, status: 500, type: 'server_error' },
  { name: '503', key: 'k', model: 'gpt-4o-mini+fail=503', cls: OpenAI.InternalServerError, status: 503, type: 'server_error' },
];
for (const tc of errorCases) {
  test(`openai error ${tc.name}`, async () => {
    for (const stream of [false, true]) {
      const err = await client(tc.key).chat.completions.create({ model: tc.model, messages, stream }).then(
        () => assert.fail('no error'), (e) => e);
      assert.ok(err instanceof tc.cls, `stream=${stream}: ${err}`);
      assert.equal(err.status, tc.status);
      if (tc.code) assert.equal(err.code, tc.code);
      if (tc.type) assert.equal(err.type, tc.type);
      assert.ok(err.requestID, 'x-request-id');
      assert.equal(err.headers.get('retry-after'), tc.retryAfter ?? null);
    }
  });
}

test('openai sdk retries through fail_first', async () => {
  const c = new OpenAI({ baseURL: `${root}/openai/v1`, apiKey: 'k', maxRetries: 2 });
  const before = (await stats()).requests;
  const r = await c.chat.completions.create({ model: 'gpt-4o-mini+fail=500;fail_first=2;retry_after=10ms;id=node-openai', messages });
  assert.equal(r.choices[0].message.content, reply);
  assert.equal((await stats()).requests - before, 3);
});
