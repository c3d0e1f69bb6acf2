// Tests of the browser crypto module (web/crypto/polydev-crypto.js), run with
// Node's built-in test runner: node --test web/test/*.test.mjs

import { describe, it } from "node:test";
import assert from "node:assert/strict";
import { createHash } from "node:crypto";
import { readFileSync } from "node:fs";
import { inspect } from "node:util";
import * as pc from "../crypto/polydev-crypto.js";
import { checkers, bytesToHex } from "./vectors.mjs";

const root = new URL("../../", import.meta.url);
const vectorBytes = readFileSync(new URL("testdata/crypto/vectors.json", root));
const vectors = JSON.parse(vectorBytes.toString("utf8"));
const enc = new TextEncoder();

describe("shared vectors (testdata/crypto/vectors.json)", () => {
  it("match the checksum the generator recorded", () => {
    const want = readFileSync(new URL("testdata/crypto/vectors.json.sha256", root), "utf8").split(/\s+/)[0];
    assert.equal(createHash("sha256").update(vectorBytes).digest("hex"), want);
  });
  for (const [group, check] of Object.entries(checkers)) {
    describe(group, () => {
      it("has cases", () => assert.ok(vectors[group]?.length > 0));
      for (const c of vectors[group] ?? []) {
        it(c.error ? `${c.name} → ${c.error}` : c.name, () => check(c));
      }
    });
  }
});

describe("vector checker sensitivity", () => {
  // For every valid case, one changed bit in any declared value must make the
  // check fail — the checker cannot pass by accident.
  const fields = {
    symmetric: ["key", "plaintext", "envelope", "context.table", "context.field", "context.row", "context.owner"],
    sealed: ["private_key_record", "public_key", "plaintext", "envelope", "context.field", "context.row", "context.owner"],
    wrap: ["wrapping_key", "unwrapped", "wrapped", "public_key", "context.row"],
    public_keys: ["public_key", "key", "suite"],
    kdf: ["master_key", "auth_key", "wrap_key"],
    hierarchy: ["password", "kdf_record", "user_id", "auth_key", "wrapped_account_key", "account_key", "wrapped_private_key",
      "public_key", "conversation_id", "wrapped_conversation_key", "conversation_key", "message_id", "encrypted_message",
      "message", "provider", "sealed_token", "token"],
  };
  for (const [group, names] of Object.entries(fields)) {
    it(`${group}: every value is checked`, async () => {
      let tampered = 0;
      // KDF cases: only those with a derivation have outputs to tamper with.
      for (const c of vectors[group].filter((c) => !c.error && (group !== "kdf" || c.password !== undefined))) {
        for (const path of names) {
          const [a, b] = path.split(".");
          const holder = b ? structuredClone(c[a]) : null;
          const orig = b ? holder[b] : c[a];
          if (!orig) continue;
          const chars = [...orig];
          const i = Math.floor(orig.length / 2);
          chars[i] = String.fromCharCode(orig.charCodeAt(i) ^ 1);
          const changed = { ...c, ...(b ? { [a]: { ...holder, [b]: chars.join("") } } : { [a]: chars.join("") }) };
          tampered++;
          await assert.rejects(checkers[group](changed), undefined, `${c.name}: ${path} changed and the check passed`);
        }
      }
      assert.ok(tampered >= names.length, `only ${tampered} values tampered`);
    });
  }
});

describe("secrets are redacted", () => {
  it("SecretKey, AuthKey and PrivateKey print as [REDACTED]", async () => {
    const k = pc.SecretKey.generate();
    const priv = await pc.generateKeyPair("x25519");
    const a = new pc.AuthKey(new Uint8Array(32).fill(7));
    for (const v of [k, priv, a]) {
      assert.equal(String(v), "[REDACTED]");
      assert.equal(`${v}`, "[REDACTED]");
      assert.equal(JSON.stringify({ v }), '{"v":"[REDACTED]"}');
      assert.equal(inspect(v), "[REDACTED]");
    }
    assert.equal(a.text(), pc.encodeText(new Uint8Array(32).fill(7)));
  });
  it("wipe zeroes and disables a key, and is safe twice", async () => {
    const k = pc.SecretKey.generate();
    const ctx = pc.contexts.message("u", "m");
    const env = await pc.seal(k, ctx, enc.encode("x"));
    k.wipe();
    k.wipe();
    assert.equal(k.valid, false);
    await assert.rejects(pc.open(k, ctx, env), { code: "malformed" });
    const priv = await pc.generateKeyPair();
    priv.wipe();
    assert.throws(() => pc.privateKeyRecord(priv), { code: "malformed" });
  });
  it("error messages carry no key or plaintext", async () => {
    const k = pc.SecretKey.generate();
    const secret = "very-secret-plaintext";
    const env = await pc.seal(k, pc.contexts.message("u", "m"), enc.encode(secret));
    const err = await pc.open(k, pc.contexts.message("u", "other"), env).catch((e) => e);
    assert.equal(err.code, "open_failed");
    assert.ok(!err.message.includes(secret));
    assert.ok(!err.message.includes(bytesToHex(pc.rawKeyBytesForTesting(k))));
  });
});

describe("strict base64", () => {
  const cases = [
    ["", new Uint8Array(0)],
    ["AA==", new Uint8Array([0])],
    ["AAE=", new Uint8Array([0, 1])],
    ["AAEC", new Uint8Array([0, 1, 2])],
    ["+/+/", new Uint8Array([0xfb, 0xff, 0xbf])],
  ];
  for (const [text, bytes] of cases) {
    it(`round-trips ${JSON.stringify(text)}`, () => {
      assert.deepEqual(pc.decodeText(text), bytes);
      assert.equal(pc.encodeText(bytes), text);
    });
  }
  for (const bad of ["A", "AA", "AA=", "AA=A", "AB==", "AAF=", "A A=", "AA==\n", "-_==", "AA==AA==", "=AAA", "AAA\u0100"]) {
    it(`refuses ${JSON.stringify(bad)}`, () => assert.throws(() => pc.decodeText(bad), { code: "malformed" }));
  }
  it("agrees with Node's encoder on random input", () => {
    for (let n = 0; n < 64; n++) {
      const b = globalThis.crypto.getRandomValues(new Uint8Array(n));
      const text = Buffer.from(b).toString("base64");
      assert.equal(pc.encodeText(b), text);
      assert.deepEqual(pc.decodeText(text), b);
    }
  });
});

describe("passwords", () => {
  const p = { ...pc.defaultPBKDF2Params() };
  it("the caller's bytes are left alone and derive the same key twice", async () => {
    const pw = enc.encode("hunter2");
    const a = await pc.deriveMasterKey(pw, p);
    assert.deepEqual(pw, enc.encode("hunter2"));
    const b = await pc.deriveMasterKey(pw, p);
    assert.deepEqual(pc.rawKeyBytesForTesting(a), pc.rawKeyBytesForTesting(b));
  });
  it("a leading byte-order mark is kept", async () => {
    const a = await pc.deriveMasterKey(new Uint8Array([0xef, 0xbb, 0xbf, 0x70, 0x77]), p);
    const b = await pc.deriveMasterKey(enc.encode("pw"), p);
    assert.notDeepEqual(pc.rawKeyBytesForTesting(a), pc.rawKeyBytesForTesting(b));
    const c = await pc.deriveMasterKey("\ufeffpw", p);
    assert.deepEqual(pc.rawKeyBytesForTesting(a), pc.rawKeyBytesForTesting(c));
  });
  for (const [name, bad] of [
    ["invalid UTF-8", new Uint8Array([0xff, 0x70, 0x77])],
    ["truncated UTF-8", new Uint8Array([0x61, 0xc3])],
    ["an encoded surrogate", new Uint8Array([0xed, 0xa0, 0x80])],
    ["a lone surrogate", "pw\ud800"],
    ["an unassigned code point", "pw\u0378"],
  ]) {
    it(`refuses ${name}`, async () => {
      await assert.rejects(pc.deriveMasterKey(bad, p), { code: "malformed" });
    });
  }
});

describe("KDF downgrade protection", () => {
  it("the bounds cannot be loosened at run time", () => {
    assert.throws(() => {
      pc.kdfBounds.argon2id.memory_kib[0] = 8;
    }, TypeError);
    assert.equal(pc.kdfBounds.argon2id.memory_kib[0], 65536);
  });
  it("refuses weak parameters before deriving anything", async () => {
    const p = { ...pc.defaultKDFParams(), memoryKiB: 1024 };
    await assert.rejects(pc.deriveMasterKey("pw", p), { code: "weak_kdf_params" });
    await assert.rejects(pc.deriveMasterKey("pw", { ...pc.defaultPBKDF2Params(), iterations: 1000 }), { code: "weak_kdf_params" });
  });
  it("refuses parameters above the maximums", async () => {
    await assert.rejects(pc.deriveMasterKey("pw", { ...pc.defaultKDFParams(), memoryKiB: 4 << 20 }), { code: "invalid_kdf_params" });
  });
  it("refuses an unknown algorithm", async () => {
    await assert.rejects(pc.deriveMasterKey("pw", { algorithm: "scrypt", salt: new Uint8Array(32) }), { code: "unsupported_kdf" });
  });
  it("default parameters round-trip through the canonical record", () => {
    for (const p of [pc.defaultKDFParams(), pc.defaultPBKDF2Params()]) {
      const json = pc.kdfParamsToJSON(p);
      assert.equal(pc.kdfParamsToJSON(pc.parseKDFParams(json)), json);
    }
  });
});

describe("round trips in this implementation", () => {
  it("symmetric envelopes bind every context member", async () => {
    const k = pc.SecretKey.generate();
    const ctx = { table: "messages", field: "encrypted_content", row: "r1", owner: "u1" };
    const env = await pc.seal(k, ctx, enc.encode("hello"));
    assert.equal(new TextDecoder().decode(await pc.open(k, ctx, env)), "hello");
    for (const member of ["table", "field", "row", "owner"]) {
      await assert.rejects(pc.open(k, { ...ctx, [member]: ctx[member] + "x" }, env), { code: "open_failed" });
    }
  });
  for (const suite of pc.suites) {
    it(`${suite}: seal, wrap the private key, unwrap, open`, async () => {
      const priv = await pc.generateKeyPair(suite);
      const pub = await pc.parsePublicKey(priv.publicKey.toString());
      assert.equal(pub.suite, suite);
      const ctx = pc.contexts.grant("u1", "req-9");
      const env = await pc.sealTo(pub, ctx, enc.encode("grant"));
      const ak = pc.SecretKey.generate();
      const wrapped = await pc.wrapPrivateKey(ak, pc.contexts.privateKey("u1"), priv);
      const back = await pc.unwrapPrivateKey(ak, pc.contexts.privateKey("u1"), wrapped);
      assert.equal(new TextDecoder().decode(await pc.openSealed(back, ctx, env)), "grant");
      await assert.rejects(pc.openSealed(back, pc.contexts.grant("u2", "req-9"), env), { code: "open_failed" });
    });
  }
  it("a stream's chunks cannot be reordered or passed off as final", async () => {
    const k = pc.SecretKey.generate();
    const env = await pc.seal(k, pc.contexts.chunk("u", "m", 3, false), enc.encode("part"));
    await pc.open(k, pc.contexts.chunk("u", "m", 3, false), env);
    await assert.rejects(pc.open(k, pc.contexts.chunk("u", "m", 4, false), env), { code: "open_failed" });
    await assert.rejects(pc.open(k, pc.contexts.chunk("u", "m", 3, true), env), { code: "open_failed" });
  });
});

describe("vendored libraries", () => {
  it("match the checksums recorded in web/vendor/VERSIONS.json", () => {
    const versions = JSON.parse(readFileSync(new URL("web/vendor/VERSIONS.json", root), "utf8"));
    assert.ok(Object.keys(versions.bundles).length >= 2);
    for (const [file, sum] of Object.entries(versions.bundles)) {
      const got = "sha256-" + createHash("sha256").update(readFileSync(new URL(`web/vendor/${file}`, root))).digest("hex");
      assert.equal(got, sum, `${file} changed without refresh.sh`);
    }
  });
});
