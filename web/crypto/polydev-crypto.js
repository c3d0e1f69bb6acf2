// Polydev's zero-knowledge format for the browser and other WebCrypto
// runtimes: the key hierarchy, the KDF record, the symmetric envelope, the
// sealed (HPKE) envelope and key wrapping, exactly as docs/crypto.md
// specifies them. The Go package internal/crypto is the other
// implementation; both pass testdata/crypto/vectors.json.
//
// WebCrypto does AES-256-GCM, PBKDF2 and HKDF. Argon2id (hash-wasm) and HPKE
// (@hpke/core with the X-Wing and X25519 KEMs) come from pinned, vendored
// bundles in ../vendor (see ../vendor/refresh.sh). No build step is needed to
// serve this file.
//
// Every failure is a CryptoError whose `code` is one of the stable codes of
// docs/crypto.md §2.2. Keys are SecretKey / PrivateKey objects that print as
// [REDACTED] and can be wiped.

import { argon2id } from "../vendor/argon2.js";
import {
  Aes256Gcm,
  CipherSuite,
  DhkemX25519HkdfSha256,
  HkdfSha256,
  XWing,
} from "../vendor/hpke.js";

const subtle = globalThis.crypto.subtle;
const utf8 = new TextEncoder();
const REDACTED = "[REDACTED]";
const inspect = Symbol.for("nodejs.util.inspect.custom");

// ---------------------------------------------------------------- errors

/** The stable error codes of docs/crypto.md §2.2. */
export const codes = Object.freeze([
  "malformed",
  "unknown_version",
  "unsupported_suite",
  "unsupported_kdf",
  "invalid_kdf_params",
  "weak_kdf_params",
  "open_failed",
]);

/** A failure of this module; `code` is one of `codes`. */
export class CryptoError extends Error {
  constructor(code, message) {
    super(`${code.replaceAll("_", " ")}: ${message}`);
    this.name = "CryptoError";
    this.code = code;
  }
}

const fail = (code, message) => {
  throw new CryptoError(code, message);
};

// ------------------------------------------------------------- encodings

const B64 = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
const B64_INDEX = new Int16Array(128).fill(-1);
for (let i = 0; i < 64; i++) B64_INDEX[B64.charCodeAt(i)] = i;

/** Standard base64 with padding (docs/crypto.md §2). */
export function encodeText(bytes) {
  let out = "";
  let i = 0;
  for (; i + 2 < bytes.length; i += 3) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8) | bytes[i + 2];
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + B64[n & 63];
  }
  if (i + 1 === bytes.length) {
    const n = bytes[i] << 16;
    out += B64[n >> 18] + B64[(n >> 12) & 63] + "==";
  } else if (i + 2 === bytes.length) {
    const n = (bytes[i] << 16) | (bytes[i + 1] << 8);
    out += B64[n >> 18] + B64[(n >> 12) & 63] + B64[(n >> 6) & 63] + "=";
  }
  return out;
}

/** Strict base64: accepts only what encodeText would have produced. */
export function decodeText(text) {
  if (typeof text !== "string" || text.length % 4 !== 0) fail("malformed", "invalid base64");
  const pad = text.endsWith("==") ? 2 : text.endsWith("=") ? 1 : 0;
  const out = new Uint8Array((text.length / 4) * 3 - pad);
  let o = 0;
  for (let i = 0; i < text.length; i += 4) {
    const last = i + 4 === text.length;
    let n = 0;
    for (let j = 0; j < 4; j++) {
      const c = text.charCodeAt(i + j);
      let v;
      if (c === 61 /* = */ && last && j >= 4 - pad) v = 0;
      else if (c < 128 && (v = B64_INDEX[c]) >= 0) {
        /* ok */
      } else fail("malformed", "invalid base64");
      n = (n << 6) | v;
    }
    const bytes = [(n >> 16) & 255, (n >> 8) & 255, n & 255];
    const keep = last ? 3 - pad : 3;
    // Non-zero pad bits would decode the same as zero ones: refuse them.
    for (let j = keep; j < 3; j++) if (bytes[j] !== 0) fail("malformed", "invalid base64");
    for (let j = 0; j < keep; j++) out[o++] = bytes[j];
  }
  return out;
}

const concat = (...parts) => {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let o = 0;
  for (const p of parts) {
    out.set(p, o);
    o += p.length;
  }
  return out;
};

const u16 = (v) => new Uint8Array([v >> 8, v & 255]);
const readU16 = (b, i) => (b[i] << 8) | b[i + 1];

// ------------------------------------------------------------------- keys

export const KEY_SIZE = 32;

// Secrets print as [REDACTED] through String(), JSON.stringify and Node's
// util.inspect.
class Redacted {
  toString() {
    return REDACTED;
  }
  toJSON() {
    return REDACTED;
  }
  [inspect]() {
    return REDACTED;
  }
}

/**
 * A 256-bit secret key (master, wrap, account, conversation). Prints as
 * [REDACTED]; wipe() zeroes it.
 */
export class SecretKey extends Redacted {
  #bytes;
  constructor(bytes) {
    super();
    if (!(bytes instanceof Uint8Array) || bytes.length !== KEY_SIZE) {
      fail("malformed", `key is ${bytes?.length} bytes, want ${KEY_SIZE}`);
    }
    this.#bytes = new Uint8Array(bytes);
  }
  /** A fresh random key. */
  static generate() {
    const b = globalThis.crypto.getRandomValues(new Uint8Array(KEY_SIZE));
    const k = new SecretKey(b);
    b.fill(0);
    return k;
  }
  /** Zeroes the key; it is unusable afterwards. Safe twice. */
  wipe() {
    this.#bytes?.fill(0);
    this.#bytes = null;
  }
  get valid() {
    return this.#bytes !== null;
  }
  // Module-internal access; not part of the API.
  static _raw(k) {
    if (!(k instanceof SecretKey) || k.#bytes === null) fail("malformed", "no key");
    return k.#bytes;
  }
}

/** The key sent to the server at registration and login. */
export class AuthKey extends SecretKey {
  /** The base64 form for the request body. */
  text() {
    return encodeText(SecretKey._raw(this));
  }
}

/** Raw key bytes, for test vectors only. */
export function rawKeyBytesForTesting(key) {
  return new Uint8Array(SecretKey._raw(key));
}

// ---------------------------------------------------------------- context

const NAME = /^[a-z][a-z0-9_.-]{0,63}$/;
const ID = /^[\x21-\x7e]{0,255}$/;

/** Checks a context against docs/crypto.md §4. */
export function validateContext(ctx) {
  if (ctx === null || typeof ctx !== "object") fail("malformed", "context must be an object");
  for (const f of ["table", "field"]) {
    if (typeof ctx[f] !== "string" || !NAME.test(ctx[f])) {
      fail("malformed", `context ${f} must be 1-64 bytes of [a-z0-9_.-] starting with a-z`);
    }
  }
  for (const f of ["row", "owner"]) {
    const v = ctx[f] ?? "";
    if (typeof v !== "string" || !ID.test(v)) {
      fail("malformed", `context ${f} must be 0-255 bytes of printable ASCII`);
    }
  }
}

function contextBytes(ctx, kind) {
  validateContext(ctx);
  const parts = [utf8.encode("polydev\0"), new Uint8Array([kind])];
  for (const f of ["table", "field", "row", "owner"]) {
    const b = utf8.encode(ctx[f] ?? "");
    parts.push(u16(b.length), b);
  }
  return concat(...parts);
}

/** The places of docs/crypto.md §4. */
export const contexts = Object.freeze({
  accountKey: (userId) => ({ table: "users", field: "wrapped_account_key", row: userId, owner: userId }),
  privateKey: (userId) => ({ table: "users", field: "wrapped_private_key", row: userId, owner: userId }),
  conversationKey: (userId, conversationId) => ({ table: "conversations", field: "wrapped_key", row: conversationId, owner: userId }),
  conversationTitle: (userId, conversationId) => ({ table: "conversations", field: "encrypted_title", row: conversationId, owner: userId }),
  message: (userId, messageId) => ({ table: "messages", field: "encrypted_content", row: messageId, owner: userId }),
  chunk: (userId, messageId, seq, final) => ({ table: "messages", field: final ? "chunk_final" : "chunk", row: `${messageId}:${seq}`, owner: userId }),
  providerToken: (userId, provider) => ({ table: "provider_tokens", field: "encrypted_refresh_token", row: provider, owner: userId }),
  grant: (userId, requestId) => ({ table: "grants", field: "grant", row: requestId, owner: userId }),
});

// -------------------------------------------------------------------- KDF

export const ARGON2ID = "argon2id";
export const PBKDF2_SHA256 = "pbkdf2-sha256";

const deepFreeze = (o) => {
  for (const v of Object.values(o)) if (typeof v === "object") deepFreeze(v);
  return Object.freeze(o);
};

/** Bounds of docs/crypto.md §3.3 (frozen: nothing in the page can loosen them). */
export const kdfBounds = deepFreeze({
  argon2id: { memory_kib: [65536, 1048576], iterations: [3, 16], parallelism: [1, 16] },
  "pbkdf2-sha256": { iterations: [600000, 10000000] },
  salt: [16, 64],
  argon2idMaxCost: 3 * 1024 * 1024, // memory_kib × iterations
  recordMaxBytes: 1024,
});

const KDF_MEMBERS = {
  argon2id: ["algorithm", "iterations", "memory_kib", "parallelism", "salt", "version"],
  "pbkdf2-sha256": ["algorithm", "iterations", "salt", "version"],
};

const randomSalt = () => globalThis.crypto.getRandomValues(new Uint8Array(32));

/** The default KDF parameters (Argon2id 64 MiB, t=3, p=4) with a fresh salt. */
export const defaultKDFParams = () => ({ algorithm: ARGON2ID, salt: randomSalt(), memoryKiB: 65536, iterations: 3, parallelism: 4 });

/** PBKDF2-SHA256 at 600,000 iterations with a fresh salt. */
export const defaultPBKDF2Params = () => ({ algorithm: PBKDF2_SHA256, salt: randomSalt(), iterations: 600000 });

function checkBound(name, v, [lo, hi]) {
  if (v > hi) fail("invalid_kdf_params", `${name} ${v} above the maximum ${hi}`);
  if (v < lo) fail("weak_kdf_params", `${name} ${v} below the minimum ${lo}`);
}

/**
 * Parses and checks a KDF record (a JSON string), following the rules of
 * docs/crypto.md §3.1 in order. Weak parameters are refused with
 * weak_kdf_params before anything is derived.
 */
export function parseKDFParams(json) {
  if (typeof json !== "string" || !json.isWellFormed() || utf8.encode(json).length > kdfBounds.recordMaxBytes) {
    fail("invalid_kdf_params", `record must be UTF-8 text of at most ${kdfBounds.recordMaxBytes} bytes`);
  }
  let m;
  try {
    m = JSON.parse(json);
  } catch {
    fail("invalid_kdf_params", "not JSON");
  }
  if (m === null || typeof m !== "object" || Array.isArray(m)) fail("invalid_kdf_params", "not a JSON object");
  if (typeof m.version !== "number") fail("invalid_kdf_params", "version missing or not a number");
  if (m.version !== 1) fail("unknown_version", `kdf record version ${m.version}`);
  if (typeof m.algorithm !== "string") fail("invalid_kdf_params", "algorithm missing or not a string");
  const want = KDF_MEMBERS[Object.hasOwn(KDF_MEMBERS, m.algorithm) ? m.algorithm : ""];
  if (!want) fail("unsupported_kdf", JSON.stringify(m.algorithm));
  const got = Object.keys(m).sort();
  if (got.length !== want.length || got.some((k, i) => k !== want[i])) {
    fail("invalid_kdf_params", `${m.algorithm} record must have exactly the members ${want.join(", ")}`);
  }
  if (typeof m.salt !== "string") fail("invalid_kdf_params", "salt is not a string");
  let salt;
  try {
    salt = decodeText(m.salt);
  } catch {
    fail("invalid_kdf_params", "salt is not base64");
  }
  if (salt.length < 16 || salt.length > 64) fail("invalid_kdf_params", "salt must be 16-64 bytes");
  for (const name of want) {
    if (name === "algorithm" || name === "salt" || name === "version") continue;
    if (!Number.isInteger(m[name])) fail("invalid_kdf_params", `${name} must be an integer`);
  }
  const b = kdfBounds[m.algorithm];
  for (const name of Object.keys(b)) checkBound(name, m[name], b[name]);
  const p = m.algorithm === ARGON2ID
    ? { algorithm: ARGON2ID, salt, memoryKiB: m.memory_kib, iterations: m.iterations, parallelism: m.parallelism }
    : { algorithm: PBKDF2_SHA256, salt, iterations: m.iterations };
  validateKDFParams(p); // the cost bound
  return p;
}

/** Checks a parameters object (as returned by parseKDFParams). */
export function validateKDFParams(p) {
  if (!(p?.salt instanceof Uint8Array) || p.salt.length < 16 || p.salt.length > 64) {
    fail("invalid_kdf_params", "salt must be 16-64 bytes");
  }
  if (p.algorithm === ARGON2ID) {
    const b = kdfBounds.argon2id;
    for (const [name, v] of [["memory_kib", p.memoryKiB], ["iterations", p.iterations], ["parallelism", p.parallelism]]) {
      if (!Number.isInteger(v)) fail("invalid_kdf_params", `${name} must be an integer`);
      checkBound(name, v, b[name]);
    }
    if (p.memoryKiB * p.iterations > kdfBounds.argon2idMaxCost) {
      fail("invalid_kdf_params", `memory_kib × iterations above the maximum ${kdfBounds.argon2idMaxCost}`);
    }
  } else if (p.algorithm === PBKDF2_SHA256) {
    if (!Number.isInteger(p.iterations)) fail("invalid_kdf_params", "iterations must be an integer");
    checkBound("iterations", p.iterations, kdfBounds["pbkdf2-sha256"].iterations);
  } else {
    fail("unsupported_kdf", JSON.stringify(p?.algorithm));
  }
}

/** The canonical JSON form of a KDF record. */
export function kdfParamsToJSON(p) {
  validateKDFParams(p);
  const salt = encodeText(p.salt);
  return p.algorithm === ARGON2ID
    ? `{"version":1,"algorithm":"argon2id","salt":"${salt}","memory_kib":${p.memoryKiB},"iterations":${p.iterations},"parallelism":${p.parallelism}}`
    : `{"version":1,"algorithm":"pbkdf2-sha256","salt":"${salt}","iterations":${p.iterations}}`;
}

const UNASSIGNED = /[\p{Cn}]/u;

// UTF-8(NFC(password)) as fresh bytes (docs/crypto.md §3.2). Refuses
// invalid UTF-8, lone surrogates and code points unassigned in this
// engine's Unicode tables: normalisation of assigned characters is stable
// across Unicode versions, so implementations that both accept a password
// normalise it identically. A byte-order mark is a character like any other.
function passwordBytes(password) {
  let s = password;
  if (password instanceof Uint8Array) {
    try {
      s = new TextDecoder("utf-8", { fatal: true, ignoreBOM: true }).decode(password);
    } catch {
      fail("malformed", "password is not valid UTF-8");
    }
  }
  if (typeof s !== "string") fail("malformed", "password must be a string or UTF-8 bytes");
  if (!s.isWellFormed()) fail("malformed", "password is not valid UTF-8");
  if (UNASSIGNED.test(s)) fail("malformed", `password has a code point unassigned in Unicode ${globalThis.process?.versions?.unicode ?? "(this engine)"}`);
  const b = utf8.encode(s.normalize("NFC"));
  if (b.length < 1 || b.length > 4096) {
    b.fill(0);
    fail("malformed", "password must be 1-4096 bytes");
  }
  return b;
}

/**
 * Stretches a password into the master key (docs/crypto.md §3.2). Validates
 * the parameters first and refuses weak ones before any work.
 */
export async function deriveMasterKey(password, params) {
  validateKDFParams(params);
  const pw = passwordBytes(password);
  let out;
  try {
    if (params.algorithm === ARGON2ID) {
      out = await argon2id({
        password: pw,
        salt: params.salt,
        iterations: params.iterations,
        memorySize: params.memoryKiB,
        parallelism: params.parallelism,
        hashLength: KEY_SIZE,
        outputType: "binary",
      });
    } else {
      const base = await subtle.importKey("raw", pw, "PBKDF2", false, ["deriveBits"]);
      out = new Uint8Array(
        await subtle.deriveBits({ name: "PBKDF2", hash: "SHA-256", salt: params.salt, iterations: params.iterations }, base, 256),
      );
    }
    return new SecretKey(out);
  } finally {
    pw.fill(0);
    out?.fill(0);
  }
}

async function hkdf(master, info) {
  const base = await subtle.importKey("raw", SecretKey._raw(master), "HKDF", false, ["deriveBits"]);
  return new Uint8Array(
    await subtle.deriveBits({ name: "HKDF", hash: "SHA-256", salt: new Uint8Array(0), info: utf8.encode(info) }, base, 256),
  );
}

/**
 * Derives { authKey, wrapKey } from the master key (docs/crypto.md §3.4).
 * authKey.text() is what is sent to the server; wrapKey never leaves.
 */
export async function deriveSubkeys(master) {
  const a = await hkdf(master, "polydev/v1/auth-key");
  const w = await hkdf(master, "polydev/v1/wrap-key");
  try {
    return { authKey: new AuthKey(a), wrapKey: new SecretKey(w) };
  } finally {
    a.fill(0);
    w.fill(0);
  }
}

// ---------------------------------------------------- symmetric envelope

const KIND_SYMMETRIC = 0x01;
const KIND_SEALED = 0x02;
const KIND_PUBLIC_KEY = 0x03;
const KIND_PRIVATE_KEY = 0x04;
const NONCE_SIZE = 12;
const TAG_SIZE = 16;
const MIN_SYMMETRIC = 1 + NONCE_SIZE + TAG_SIZE;

async function aesKey(key, usage) {
  return subtle.importKey("raw", SecretKey._raw(key), "AES-GCM", false, [usage]);
}

/** Encrypts plaintext under key, bound to ctx; returns the binary envelope. */
export async function sealBytes(key, ctx, plaintext) {
  const aad = contextBytes(ctx, KIND_SYMMETRIC);
  const k = await aesKey(key, "encrypt");
  const nonce = globalThis.crypto.getRandomValues(new Uint8Array(NONCE_SIZE));
  const ct = await subtle.encrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, k, plaintext ?? new Uint8Array(0));
  return concat(new Uint8Array([KIND_SYMMETRIC]), nonce, new Uint8Array(ct));
}

/** Encrypts plaintext under key, bound to ctx; returns the text envelope. */
export async function seal(key, ctx, plaintext) {
  return encodeText(await sealBytes(key, ctx, plaintext));
}

function parseSymmetric(b) {
  if (b.length === 0) fail("malformed", "empty envelope");
  if (b[0] !== KIND_SYMMETRIC) fail("unknown_version", `envelope kind 0x${b[0].toString(16)}, want symmetric 0x01`);
  if (b.length < MIN_SYMMETRIC) fail("malformed", `symmetric envelope shorter than ${MIN_SYMMETRIC} bytes`);
  return { nonce: b.subarray(1, 1 + NONCE_SIZE), ct: b.subarray(1 + NONCE_SIZE) };
}

/** Opens a binary symmetric envelope in ctx. */
export async function openBytes(key, ctx, envelope) {
  const { nonce, ct } = parseSymmetric(envelope);
  const aad = contextBytes(ctx, KIND_SYMMETRIC);
  const k = await aesKey(key, "decrypt");
  try {
    return new Uint8Array(await subtle.decrypt({ name: "AES-GCM", iv: nonce, additionalData: aad, tagLength: 128 }, k, ct));
  } catch {
    fail("open_failed", "symmetric envelope");
  }
}

/** Opens a text symmetric envelope in ctx. */
export async function open(key, ctx, envelope) {
  return openBytes(key, ctx, decodeText(envelope));
}

// ------------------------------------------------------- sealed envelope

const SUITES = [
  { name: "xwing", kem: 0x647a, kdf: 0x0001, aead: 0x0002, nenc: 1120, npk: 1216, nsk: 32, make: () => new XWing() },
  { name: "x25519", kem: 0x0020, kdf: 0x0001, aead: 0x0002, nenc: 32, npk: 32, nsk: 32, make: () => new DhkemX25519HkdfSha256() },
];
for (const s of SUITES) {
  let cs;
  Object.defineProperty(s, "cs", {
    get: () => (cs ??= new CipherSuite({ kem: s.make(), kdf: new HkdfSha256(), aead: new Aes256Gcm() })),
  });
}

/** Names of the accepted suites, the default first. */
export const suites = Object.freeze(SUITES.map((s) => s.name));
export const DEFAULT_SUITE = "xwing";

const suiteByName = (name) => SUITES.find((s) => s.name === name) ?? fail("unsupported_suite", String(name));
const suiteByKEM = (id) => SUITES.find((s) => s.kem === id) ?? fail("unsupported_suite", `kem 0x${id.toString(16).padStart(4, "0")}`);

/** A recipient's public key. toString() is its base64 record. */
export class PublicKey {
  #suite;
  #bytes;
  constructor(suite, bytes) {
    this.#suite = suite;
    this.#bytes = bytes;
  }
  get suite() {
    return this.#suite.name;
  }
  static _parts(k) {
    return { suite: k.#suite, bytes: k.#bytes };
  }
  /** The public key record 0x03 ‖ kem_id ‖ pk. */
  bytes() {
    return concat(new Uint8Array([KIND_PUBLIC_KEY]), u16(this.#suite.kem), this.#bytes);
  }
  toString() {
    return encodeText(this.bytes());
  }
}

/** A recipient's private key. Prints as [REDACTED]; wipe() zeroes it. */
export class PrivateKey extends Redacted {
  #suite;
  #sk; // serialized private key bytes
  #public;
  constructor(suite, sk, publicKey) {
    super();
    this.#suite = suite;
    this.#sk = sk;
    this.#public = publicKey;
  }
  get suite() {
    return this.#suite.name;
  }
  get publicKey() {
    return this.#public;
  }
  static _parts(k) {
    if (!(k instanceof PrivateKey) || k.#sk === null) fail("malformed", "no private key");
    return { suite: k.#suite, sk: k.#sk };
  }
  wipe() {
    this.#sk?.fill(0);
    this.#sk = null;
  }
}

async function privateFromSerialized(suite, sk) {
  let pk;
  try {
    pk = await publicOf(suite, sk);
  } catch {
    fail("malformed", `${suite.name} private key rejected`);
  }
  return new PrivateKey(suite, sk, new PublicKey(suite, pk));
}

// The public half of a serialized private key. The @hpke KEMs have no public
// call for this, so it uses their internal derivations (the vendored
// versions are pinned, and the shared vectors check the result for every
// suite): X-Wing expands its seed; DHKEM multiplies the base point.
async function publicOf(suite, sk) {
  const kem = suite.cs.kem;
  if (suite.name === "xwing") {
    if (typeof kem._setup === "function") await kem._setup();
    const [, , pkM, pkX] = await kem._expandDecapsulationKey(sk);
    return concat(pkM, pkX);
  }
  const key = await kem.deserializePrivateKey(sk.slice().buffer);
  return new Uint8Array(await kem.serializePublicKey(await kem._prim.derivePublicKey(key)));
}

// RFC 9180 §7.1.2: SerializePrivateKey for X25519 clamps the scalar. The
// @hpke module serializes the unclamped bytes; clamping gives the same key
// and the same record as Go's crypto/hpke.
function clamp(suite, sk) {
  if (suite.name === "x25519") {
    sk[0] &= 248;
    sk[31] &= 127;
    sk[31] |= 64;
  }
  return sk;
}

/** Makes a new key pair; returns the PrivateKey (its .publicKey is the public half). */
export async function generateKeyPair(suiteName = DEFAULT_SUITE) {
  const suite = suiteByName(suiteName);
  const pair = await suite.cs.kem.generateKeyPair();
  const sk = clamp(suite, new Uint8Array(await suite.cs.kem.serializePrivateKey(pair.privateKey)));
  const pk = new Uint8Array(await suite.cs.kem.serializePublicKey(pair.publicKey));
  return new PrivateKey(suite, sk, new PublicKey(suite, pk));
}

function parseKeyRecord(b, kind, what) {
  if (b.length === 0) fail("malformed", `empty ${what} key record`);
  if (b[0] !== kind) fail("unknown_version", `record kind 0x${b[0].toString(16)}, want ${what} key`);
  if (b.length < 3) fail("malformed", `${what} key record too short`);
  return { suite: suiteByKEM(readU16(b, 1)), key: b.subarray(3) };
}

// Canonical encodings of the X25519 points of small order (RFC 7748 §6.1;
// docs/crypto.md §6.2): sealing to one would yield an all-zero secret.
const LOW_ORDER_X25519 = [
  "0000000000000000000000000000000000000000000000000000000000000000",
  "0100000000000000000000000000000000000000000000000000000000000000",
  "e0eb7a7c3b41b8ae1656e3faf19fc46ada098deb9c32b1fd866205165f49b800",
  "5f9c95bca3508c24b1d0b1559c83ef5b04445cc4581c8e86d8224eddd09f1157",
  "ecffffffffffffffffffffffffffffffffffffffffffffffffffffffffffff7f",
];
const toHex = (b) => Array.from(b, (x) => x.toString(16).padStart(2, "0")).join("");

// A canonical X25519 share: below p = 2^255 - 19, top bit clear, and not of
// small order.
function checkX25519Public(suite, u) {
  if (u[31] & 0x80) fail("malformed", `${suite.name} public key: x25519 share has the top bit set`);
  let geP = u[31] === 0x7f && u[0] >= 0xed;
  for (let i = 1; i < 31 && geP; i++) geP = u[i] === 0xff;
  if (geP) fail("malformed", `${suite.name} public key: x25519 share is not below 2^255 - 19`);
  if (LOW_ORDER_X25519.includes(toHex(u))) fail("malformed", `${suite.name} public key: x25519 share is a point of small order`);
}

// FIPS 203 §7.2 modulus check of an ML-KEM-768 encapsulation key: the 1152
// bytes before rho are 768 12-bit coefficients, each below q = 3329.
function checkMLKEM768Public(ek) {
  for (let i = 0; i < 1152; i += 3) {
    const a = ek[i] | ((ek[i + 1] & 0x0f) << 8);
    const b = (ek[i + 1] >> 4) | (ek[i + 2] << 4);
    if (a >= 3329 || b >= 3329) fail("malformed", "xwing public key: ML-KEM coefficient not below q");
  }
}

/** Parses a binary public key record. */
export async function parsePublicKeyBytes(b) {
  const { suite, key } = parseKeyRecord(b, KIND_PUBLIC_KEY, "public");
  if (key.length !== suite.npk) fail("malformed", `${suite.name} public key is ${key.length} bytes, want ${suite.npk}`);
  // The X25519 share is the whole key, or X-Wing's last 32 bytes.
  checkX25519Public(suite, key.subarray(key.length - 32));
  if (suite.name === "xwing") checkMLKEM768Public(key.subarray(0, 1184));
  try {
    await suite.cs.kem.deserializePublicKey(key.slice().buffer);
  } catch {
    fail("malformed", `${suite.name} public key rejected`);
  }
  return new PublicKey(suite, new Uint8Array(key));
}

/** Parses the text form of a public key record. */
export async function parsePublicKey(text) {
  return parsePublicKeyBytes(decodeText(text));
}

/** The private key record 0x04 ‖ kem_id ‖ sk. The caller wipes it. */
export function privateKeyRecord(priv) {
  const { suite, sk } = PrivateKey._parts(priv);
  return concat(new Uint8Array([KIND_PRIVATE_KEY]), u16(suite.kem), sk);
}

/** Parses a private key record. */
export async function parsePrivateKeyRecord(b) {
  const { suite, key } = parseKeyRecord(b, KIND_PRIVATE_KEY, "private");
  if (key.length !== suite.nsk) fail("malformed", `${suite.name} private key is ${key.length} bytes, want ${suite.nsk}`);
  return privateFromSerialized(suite, clamp(suite, new Uint8Array(key)));
}

const sealedInfo = (ctx) => utf8.encode(`polydev/v1/sealed/${ctx.table}/${ctx.field}`);

/** Seals plaintext to a public key in ctx; returns the binary envelope. */
export async function sealToBytes(pub, ctx, plaintext) {
  const aad = contextBytes(ctx, KIND_SEALED);
  const { suite, bytes } = PublicKey._parts(pub);
  let sender, ct;
  try {
    const pk = await suite.cs.kem.deserializePublicKey(bytes.slice().buffer);
    sender = await suite.cs.createSenderContext({ recipientPublicKey: pk, info: sealedInfo(ctx) });
    ct = new Uint8Array(await sender.seal(plaintext ?? new Uint8Array(0), aad));
  } catch {
    fail("malformed", `hpke ${suite.name} encapsulation to this key failed`);
  }
  return concat(new Uint8Array([KIND_SEALED]), u16(suite.kem), u16(suite.kdf), u16(suite.aead), new Uint8Array(sender.enc), ct);
}

/** Seals plaintext to a public key in ctx; returns the text envelope. */
export async function sealTo(pub, ctx, plaintext) {
  return encodeText(await sealToBytes(pub, ctx, plaintext));
}

function parseSealed(b) {
  if (b.length === 0) fail("malformed", "empty envelope");
  if (b[0] !== KIND_SEALED) fail("unknown_version", `envelope kind 0x${b[0].toString(16)}, want sealed 0x02`);
  if (b.length < 7) fail("malformed", "sealed envelope header truncated");
  const kem = readU16(b, 1), kdf = readU16(b, 3), aead = readU16(b, 5);
  const suite = SUITES.find((s) => s.kem === kem && s.kdf === kdf && s.aead === aead);
  if (!suite) fail("unsupported_suite", `kem 0x${kem.toString(16)} kdf 0x${kdf.toString(16)} aead 0x${aead.toString(16)}`);
  if (b.length < 7 + suite.nenc + TAG_SIZE) fail("malformed", `${suite.name} envelope too short`);
  return { suite, enc: b.subarray(7, 7 + suite.nenc), ct: b.subarray(7 + suite.nenc) };
}

/** Opens a binary sealed envelope with a private key in ctx. */
export async function openSealedBytes(priv, ctx, envelope) {
  const { suite, enc, ct } = parseSealed(envelope);
  const aad = contextBytes(ctx, KIND_SEALED);
  const { suite: keySuite, sk } = PrivateKey._parts(priv);
  if (keySuite !== suite) fail("unsupported_suite", `envelope is sealed with ${suite.name}, key is ${keySuite.name}`);
  let recipient;
  try {
    const key = await suite.cs.kem.deserializePrivateKey(sk.slice().buffer);
    recipient = await suite.cs.createRecipientContext({ recipientKey: key, enc: enc.slice().buffer, info: sealedInfo(ctx) });
  } catch {
    fail("open_failed", `${suite.name} decapsulation`);
  }
  try {
    return new Uint8Array(await recipient.open(ct.slice().buffer, aad));
  } catch {
    fail("open_failed", "sealed envelope");
  }
}

/** Opens a text sealed envelope with a private key in ctx. */
export async function openSealed(priv, ctx, envelope) {
  return openSealedBytes(priv, ctx, decodeText(envelope));
}

// ------------------------------------------------------------ key wrapping

/** Wraps a SecretKey under another at ctx (docs/crypto.md §7). */
export async function wrapKey(wrapping, ctx, key) {
  return seal(wrapping, ctx, SecretKey._raw(key));
}

/** Unwraps a 256-bit key; any other plaintext length is malformed. */
export async function unwrapKey(wrapping, ctx, wrapped) {
  const pt = await open(wrapping, ctx, wrapped);
  try {
    if (pt.length !== KEY_SIZE) fail("malformed", `wrapped key is ${pt.length} bytes, want ${KEY_SIZE}`);
    return new SecretKey(pt);
  } finally {
    pt.fill(0);
  }
}

/** Wraps a private key record under a key at ctx. */
export async function wrapPrivateKey(wrapping, ctx, priv) {
  const rec = privateKeyRecord(priv);
  try {
    return await seal(wrapping, ctx, rec);
  } finally {
    rec.fill(0);
  }
}

/** Unwraps a private key record. */
export async function unwrapPrivateKey(wrapping, ctx, wrapped) {
  const pt = await open(wrapping, ctx, wrapped);
  try {
    return await parsePrivateKeyRecord(pt);
  } finally {
    pt.fill(0);
  }
}
