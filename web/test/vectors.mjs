// The JavaScript checker (and maker) of the shared vector schema of
// testdata/crypto/vectors.json. It mirrors internal/crypto/vectorcheck_test.go:
// each case is checked against the error code it declares, or, for a valid
// case, against every value it declares.

import * as pc from "../crypto/polydev-crypto.js";

const enc = new TextEncoder();
const dec = new TextDecoder();

export const hexToBytes = (h) => {
  if (typeof h !== "string" || h.length % 2 !== 0 || !/^[0-9a-f]*$/.test(h)) throw new Error(`bad hex in vector: ${h}`);
  return Uint8Array.from(h.match(/../g) ?? [], (x) => parseInt(x, 16));
};
export const bytesToHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

// expect runs fn and compares its outcome with the declared code ("" or
// undefined for success). It returns the result or a sentinel on expected
// failure, and throws on a mismatch.
const EXPECTED_FAILURE = Symbol("expected failure");
async function expect(want, fn) {
  let result;
  try {
    result = await fn();
  } catch (e) {
    if (!(e instanceof pc.CryptoError)) throw new Error(`got a non-CryptoError ${e?.name}: ${e?.message}; want ${want || "success"}`);
    if (e.code !== want) throw new Error(`got error code "${e.code}" (${e.message}); want ${want ? `"${want}"` : "success"}`);
    return EXPECTED_FAILURE;
  }
  if (want) throw new Error(`succeeded; want error "${want}"`);
  return result;
}

function hexEq(what, wantHex, got) {
  const g = bytesToHex(got);
  if (g !== wantHex) throw new Error(`${what}: got ${g}; want ${wantHex}`);
}

const key = (h) => new pc.SecretKey(hexToBytes(h));

export async function checkKDF(c) {
  const p = await expect(c.password === undefined ? c.error : "", () => pc.parseKDFParams(c.record));
  if (p === EXPECTED_FAILURE) return;
  if (c.canonical !== undefined && pc.kdfParamsToJSON(p) !== c.canonical) {
    throw new Error(`canonical form: got ${pc.kdfParamsToJSON(p)}; want ${c.canonical}`);
  }
  if (c.password === undefined) return;
  const mk = await expect(c.error, () => pc.deriveMasterKey(c.password, p));
  if (mk === EXPECTED_FAILURE) return;
  hexEq("master key", c.master_key, pc.rawKeyBytesForTesting(mk));
  const { authKey, wrapKey } = await pc.deriveSubkeys(mk);
  hexEq("auth key", c.auth_key, pc.rawKeyBytesForTesting(authKey));
  hexEq("wrap key", c.wrap_key, pc.rawKeyBytesForTesting(wrapKey));
}

export async function checkSymmetric(c) {
  const pt = await expect(c.error, () => pc.open(key(c.key), c.context, c.envelope));
  if (pt !== EXPECTED_FAILURE) hexEq("plaintext", c.plaintext ?? "", pt);
}

export async function checkSealed(c) {
  const priv = await pc.parsePrivateKeyRecord(hexToBytes(c.private_key_record));
  if (priv.suite !== c.suite) throw new Error(`private key suite ${priv.suite}; vector says ${c.suite}`);
  if (priv.publicKey.toString() !== c.public_key) throw new Error("public key does not match the private key");
  const pt = await expect(c.error, () => pc.openSealed(priv, c.context, c.envelope));
  if (pt !== EXPECTED_FAILURE) hexEq("plaintext", c.plaintext ?? "", pt);
}

export async function checkWrap(c) {
  const wk = key(c.wrapping_key);
  if (c.type === "key") {
    const k = await expect(c.error, () => pc.unwrapKey(wk, c.context, c.wrapped));
    if (k !== EXPECTED_FAILURE) hexEq("unwrapped key", c.unwrapped, pc.rawKeyBytesForTesting(k));
    return;
  }
  if (c.type !== "private_key") throw new Error(`unknown wrap type ${c.type}`);
  const k = await expect(c.error, () => pc.unwrapPrivateKey(wk, c.context, c.wrapped));
  if (k === EXPECTED_FAILURE) return;
  hexEq("unwrapped private key record", c.unwrapped, pc.privateKeyRecord(k));
  if (k.publicKey.toString() !== c.public_key) throw new Error("public key of the unwrapped key differs");
}

export async function checkPublicKey(c) {
  const pk = await expect(c.error, () => pc.parsePublicKey(c.public_key));
  if (pk === EXPECTED_FAILURE) return;
  if (pk.suite !== c.suite) throw new Error(`suite: got ${pk.suite}; want ${c.suite}`);
  if (pk.toString() !== c.public_key) throw new Error("public key does not re-encode to itself");
  hexEq("key", c.key, pk.bytes().subarray(3));
}

export async function checkHierarchy(c) {
  const p = pc.parseKDFParams(c.kdf_record);
  const mk = await pc.deriveMasterKey(c.password, p);
  const { authKey, wrapKey } = await pc.deriveSubkeys(mk);
  mk.wipe();
  if (authKey.text() !== c.auth_key) throw new Error(`auth key: got ${authKey.text()}; want ${c.auth_key}`);
  const ak = await pc.unwrapKey(wrapKey, pc.contexts.accountKey(c.user_id), c.wrapped_account_key);
  hexEq("account key", c.account_key, pc.rawKeyBytesForTesting(ak));
  const priv = await pc.unwrapPrivateKey(ak, pc.contexts.privateKey(c.user_id), c.wrapped_private_key);
  if (priv.publicKey.toString() !== c.public_key) throw new Error("unwrapped private key does not match the public key");
  const ck = await pc.unwrapKey(ak, pc.contexts.conversationKey(c.user_id, c.conversation_id), c.wrapped_conversation_key);
  hexEq("conversation key", c.conversation_key, pc.rawKeyBytesForTesting(ck));
  const msg = dec.decode(await pc.open(ck, pc.contexts.message(c.user_id, c.message_id), c.encrypted_message));
  if (msg !== c.message) throw new Error(`message: got ${msg}; want ${c.message}`);
  const tok = dec.decode(await pc.openSealed(priv, pc.contexts.providerToken(c.user_id, c.provider), c.sealed_token));
  if (tok !== c.token) throw new Error(`token: got ${tok}; want ${c.token}`);
}

export const checkers = {
  kdf: checkKDF,
  symmetric: checkSymmetric,
  sealed: checkSealed,
  wrap: checkWrap,
  public_keys: checkPublicKey,
  hierarchy: checkHierarchy,
};

/** Checks every case; returns [{group, name, error}] (error undefined when it passed). */
export async function checkAll(file) {
  const out = [];
  for (const [group, check] of Object.entries(checkers)) {
    for (const c of file[group] ?? []) {
      try {
        await check(c);
        out.push({ group, name: c.name });
      } catch (error) {
        out.push({ group, name: c.name, error });
      }
    }
  }
  return out;
}

/**
 * Makes fresh valid cases of every kind and suite with this implementation,
 * in the shared schema, for the other implementation to check.
 */
export async function makeVectors() {
  const user = "js-user-0001";
  const ctx = pc.contexts.message(user, "js-msg-0001");
  const text = enc.encode("made in JavaScript \u{1F510}");
  const f = { format: "polydev-crypto-vectors", version: 1, generator: "web/test/interop.mjs make", kdf: [], symmetric: [], sealed: [], wrap: [], public_keys: [], hierarchy: [] };

  const argon = { ...pc.defaultKDFParams(), parallelism: 1 };
  for (const [name, p] of [["argon2id", argon], ["pbkdf2-sha256", pc.defaultPBKDF2Params()]]) {
    const password = "js p\u00e4ssword";
    const mk = await pc.deriveMasterKey(password, p);
    const { authKey, wrapKey } = await pc.deriveSubkeys(mk);
    const rec = pc.kdfParamsToJSON(p);
    f.kdf.push({ name: `js ${name}`, record: rec, canonical: rec, password, master_key: bytesToHex(pc.rawKeyBytesForTesting(mk)), auth_key: bytesToHex(pc.rawKeyBytesForTesting(authKey)), wrap_key: bytesToHex(pc.rawKeyBytesForTesting(wrapKey)) });
  }

  const k = pc.SecretKey.generate();
  for (const [name, pt] of [["message", text], ["empty", new Uint8Array(0)], ["64 KiB", globalThis.crypto.getRandomValues(new Uint8Array(65536))]]) {
    f.symmetric.push({ name: `js ${name}`, key: bytesToHex(pc.rawKeyBytesForTesting(k)), context: ctx, plaintext: bytesToHex(pt), envelope: await pc.seal(k, ctx, pt) });
  }

  const wk = pc.SecretKey.generate();
  const ak = pc.SecretKey.generate();
  const actx = pc.contexts.accountKey(user);
  f.wrap.push({ name: "js account key", type: "key", wrapping_key: bytesToHex(pc.rawKeyBytesForTesting(wk)), context: actx, unwrapped: bytesToHex(pc.rawKeyBytesForTesting(ak)), wrapped: await pc.wrapKey(wk, actx, ak) });

  for (const suite of pc.suites) {
    const priv = await pc.generateKeyPair(suite);
    const rec = bytesToHex(pc.privateKeyRecord(priv));
    const pub = priv.publicKey.toString();
    const sctx = pc.contexts.providerToken(user, "google");
    for (const [name, pt] of [["token", text], ["empty", new Uint8Array(0)]]) {
      f.sealed.push({ name: `js ${suite} ${name}`, suite, private_key_record: rec, public_key: pub, context: sctx, plaintext: bytesToHex(pt), envelope: await pc.sealTo(priv.publicKey, sctx, pt) });
    }
    f.public_keys.push({ name: `js ${suite}`, public_key: pub, suite, key: bytesToHex(priv.publicKey.bytes().subarray(3)) });
    const pctx = pc.contexts.privateKey(user);
    f.wrap.push({ name: `js ${suite} private key`, type: "private_key", wrapping_key: bytesToHex(pc.rawKeyBytesForTesting(ak)), context: pctx, unwrapped: rec, public_key: pub, wrapped: await pc.wrapPrivateKey(ak, pctx, priv) });
  }
  return f;
}
