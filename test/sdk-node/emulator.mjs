// Shared setup: where the emulator runs (POLYDEV_EMULATOR_URL, set by the Go
// test that starts it) and the answer it gives, by its documented rule.
import assert from 'node:assert/strict';

export const root = process.env.POLYDEV_EMULATOR_URL;
assert.ok(root, 'POLYDEV_EMULATOR_URL must name a running polydev emulator (http://127.0.0.1:PORT)');

export const prompt = 'hello node world';
// The emulator echoes the last user message's words, then 8 filler words.
export const reply = 'hello node world lorem ipsum dolor sit amet consectetur adipiscing elit';

export async function stats() {
  const r = await fetch(`${root}/emulator/stats`);
  return r.json();
}

// waitFor polls the emulator's stats until cond holds (or 10 s pass).
export async function waitFor(cond) {
  const end = Date.now() + 10_000;
  for (;;) {
    const s = await stats();
    if (cond(s)) return s;
    if (Date.now() > end) throw new Error(`emulator stats never matched: ${JSON.stringify(s)}`);
    await new Promise((r) => setTimeout(r, 20));
  }
}
