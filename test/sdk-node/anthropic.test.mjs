// The official Anthropic Node SDK against the emulator.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import Anthropic from '@anthropic-ai/sdk';
import { root, prompt, reply, stats, waitFor } from './emulator.mjs';

const client = (apiKey = 'test-key') => new Anthropic({ baseURL: `${root}/anthropic`, apiKey, maxRetries: 0 });
const params = { model: 'claude-emulated', max_tokens: 1024, system: 'answer briefly', messages: [{ role: 'user', content: prompt }] };

test('anthropic message', async () => {
  const msg = await client().messages.create(params);
  assert.equal(msg.type, 'message');
  assert.equal(msg.content[0].text, reply);
  assert.equal(msg.stop_reason, 'end_turn');
  assert.deepEqual([msg.usage.input_tokens, msg.usage.output_tokens], [5, 11]);
});

test('anthropic message stream helper', async () => {
  let text = '';
  const stream = client().messages.stream({ ...params, max_tokens: 4 });
  stream.on('text', (t) => { text += t; });
  const msg = await stream.finalMessage();
  assert.equal(text, 'hello node world lorem');
  assert.equal(msg.content[0].text, text);
  assert.equal(msg.stop_reason, 'max_tokens');
  assert.deepEqual([msg.usage.input_tokens, msg.usage.output_tokens], [5, 4]);
});

test('anthropic raw stream events', async () => {
  const stream = await client().messages.create({ ...params, stream: true });
  const types = [];
  let text = '';
  for await (const ev of stream) {
    types.push(ev.type);
    if (ev.type === 'content_block_delta') text += ev.delta.text;
  }
  assert.equal(text, reply);
  assert.deepEqual([...new Set(types)], ['message_start', 'content_block_start', 'content_block_delta', 'content_block_stop', 'message_delta', 'message_stop']);
});

test('anthropic mid-stream overloaded error', async () => {
  const stream = await client().messages.create({ ...params, model: 'claude-emulated+error_after=2', stream: true });
  let text = '';
  const err = await (async () => {
    for await (const ev of stream) if (ev.type === 'content_block_delta') text += ev.delta.text;
  })().then(() => assert.fail('no error'), (e) => e);
  assert.ok(err instanceof Anthropic.APIError, String(err));
  assert.equal(err.error?.error?.type, 'overloaded_error');
  assert.equal(text, 'hello node');
});

test('anthropic abort is seen by the emulator', async () => {
  const before = (await stats()).aborted;
  const stream = client().messages.stream({ ...params, model: 'claude-emulated+tps=20;tokens=10000' });
  await new Promise((resolve) => stream.on('text', () => { stream.abort(); resolve(); }));
  await assert.rejects(stream.finalMessage());
  await waitFor((s) => s.aborted > before);
});

const errorCases = [
  { name: '401', key: 'invalid-key', model: 'claude-emulated', cls: Anthropic.AuthenticationError, status: 401, type: 'authentication_error' },
  { name: '429', key: 'k', model: 'claude-emulated+fail=429', cls: Anthropic.RateLimitError, status: 429, type: 'rate_limit_error', retryAfter: '1' },
  { name: '500', key: 'k', model: 'claude-emulated+fail=500', cls: Anthropic.InternalServerError, status: 500, type: 'api_error' },
  { name: '529', key: 'k', model: 'claude-emulated+fail=529;retry_after=3s', cls: Anthropic.InternalServerError, status: 529, type: 'overloaded_error', retryAfter: '3' },
];
for (const tc of errorCases) {
  test(`anthropic error ${tc.name}`, async () => {
    for (const stream of [false, true]) {
      const err = await client(tc.key).messages.create({ ...params, model: tc.model, stream }).then(
        () => assert.fail('no error'), (e) => e);
      assert.ok(err instanceof tc.cls, `stream=${stream}: ${err}`);
      assert.equal(err.status, tc.status);
      assert.equal(err.error?.error?.type, tc.type);
      assert.ok(err.requestID, 'request-id');
      assert.equal(err.headers.get('retry-after'), tc.retryAfter ?? null);
    }
  });
}

test('anthropic missing version header is refused', async () => {
  const r = await fetch(`${root}/anthropic/v1/messages`, {
    method: 'POST', headers: { 'x-api-key': 'k', 'content-type': 'application/json' }, body: JSON.stringify(params),
  });
  assert.equal(r.status, 400);
  assert.equal((await r.json()).error.message, 'anthropic-version: header is required');
});
