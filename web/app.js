// The landing page's encryption check: the key hierarchy of docs/crypto.md,
// end to end, in the visitor's browser. Nothing leaves the page.
import * as pc from "./crypto/polydev-crypto.js";

const out = document.getElementById("out");
const log = (line) => (out.textContent += line + "\n");

async function timed(label, fn) {
  const t0 = performance.now();
  const v = await fn();
  log(`${label.padEnd(44)} ${(performance.now() - t0).toFixed(1).padStart(8)} ms`);
  return v;
}

async function check() {
  out.textContent = "";
  const user = crypto.randomUUID();
  const params = pc.defaultKDFParams();
  const master = await timed("Argon2id master key (64 MiB, t=3, p=4)", () => pc.deriveMasterKey("a passphrase typed here", params));
  const { authKey, wrapKey } = await timed("HKDF auth and wrap keys", () => pc.deriveSubkeys(master));
  master.wipe();
  const account = pc.SecretKey.generate();
  const wrapped = await timed("wrap the account key", () => pc.wrapKey(wrapKey, pc.contexts.accountKey(user), account));
  const me = await timed("X-Wing key pair", () => pc.generateKeyPair("xwing"));
  const conv = pc.SecretKey.generate();
  const msgId = crypto.randomUUID();
  const env = await timed("seal a message (AES-256-GCM)", () => pc.seal(conv, pc.contexts.message(user, msgId), new TextEncoder().encode("hello")));
  const back = await timed("open it", () => pc.open(conv, pc.contexts.message(user, msgId), env));
  const sealed = await timed("seal a provider token to the X-Wing key", () => pc.sealTo(me.publicKey, pc.contexts.providerToken(user, "openai"), new TextEncoder().encode("token")));
  const token = await timed("open it", () => pc.openSealed(me, pc.contexts.providerToken(user, "openai"), sealed));
  let moved = "refused";
  try {
    await pc.open(conv, pc.contexts.message(user, crypto.randomUUID()), env);
    moved = "OPENED — this is a bug";
  } catch (e) {
    moved = `refused (${e.code})`;
  }
  log("");
  log(`message round trip:        ${new TextDecoder().decode(back) === "hello" ? "ok" : "FAILED"}`);
  log(`token round trip:          ${new TextDecoder().decode(token) === "token" ? "ok" : "FAILED"}`);
  log(`ciphertext moved to another row: ${moved}`);
  log(`what the server would get: authKey ${authKey.text().slice(0, 12)}…, wrapped account key ${wrapped.length} chars`);
  log(`printing a key shows:      ${String(account)}`);
}

document.getElementById("run").addEventListener("click", () => check().catch((e) => log(`error: ${e.message}`)));
