// Timings of the browser crypto module under Node (docs/crypto.md §10):
//
//   node web/test/bench.mjs
import * as pc from "../crypto/polydev-crypto.js";

async function time(label, n, fn) {
  await fn(); // warm up
  const t0 = performance.now();
  for (let i = 0; i < n; i++) await fn();
  console.log(label.padEnd(44), `${((performance.now() - t0) / n).toFixed(3)} ms/op`);
}

const pw = "correct horse battery staple";
await time("argon2id 64 MiB t=3 p=4 (WebAssembly)", 5, () => pc.deriveMasterKey(pw, pc.defaultKDFParams()));
await time("pbkdf2-sha256 600000 (WebCrypto)", 5, () => pc.deriveMasterKey(pw, pc.defaultPBKDF2Params()));
const key = pc.SecretKey.generate();
const ctx = pc.contexts.message("u", "m");
const pt = new Uint8Array(4096);
await time("symmetric seal + open, 4 KiB", 2000, async () => pc.open(key, ctx, await pc.seal(key, ctx, pt)));
for (const suite of pc.suites) {
  const priv = await pc.generateKeyPair(suite);
  const gctx = pc.contexts.grant("u", "r");
  const env = await pc.sealTo(priv.publicKey, gctx, pt.subarray(0, 256));
  await time(`hpke seal to ${suite} (256 B)`, 200, () => pc.sealTo(priv.publicKey, gctx, pt.subarray(0, 256)));
  await time(`hpke open with ${suite}`, 200, () => pc.openSealed(priv, gctx, env));
}
