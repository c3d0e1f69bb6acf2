package crypto_test

// The generator of testdata/crypto/vectors.json. It runs with a fixed random
// seed (testing/cryptotest), so its output is reproducible byte for byte:
//
//	go test ./internal/crypto -run TestVectorFile -update
//
// Must-fail cases declare the error code the specification requires; the
// checkers of both implementations compare against that declaration, never
// against what an implementation happened to return.

import (
	"bytes"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"testing/cryptotest"

	"polydev/internal/crypto"
)

const vectorSeed = 0x706f6c7964657601 // "polydev\x01"

const (
	userA = "0b6a3c1e-5d2f-4a7b-9c8d-1e2f3a4b5c6d"
	userB = "7f8e9d0c-1b2a-4c3d-8e4f-5a6b7c8d9e0f"
	conv1 = "3c2b1a09-8f7e-4d6c-9b5a-493827160504"
	msg1  = "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d"
)

func flipBit(text string, bit int) string {
	b, err := crypto.DecodeText(text)
	if err != nil {
		panic(err)
	}
	b[bit/8] ^= 1 << (bit % 8)
	return crypto.EncodeText(b)
}

func truncate(text string, n int) string {
	b, err := crypto.DecodeText(text)
	if err != nil {
		panic(err)
	}
	return crypto.EncodeText(b[:n])
}

func setByte(text string, i int, v byte) string {
	b, err := crypto.DecodeText(text)
	if err != nil {
		panic(err)
	}
	b[i] = v
	return crypto.EncodeText(b)
}

func envLen(text string) int {
	b, err := crypto.DecodeText(text)
	if err != nil {
		panic(err)
	}
	return len(b)
}

func must[T any](v T, err error) T {
	if err != nil {
		panic(err)
	}
	return v
}

func hexOf(b []byte) string { return hex.EncodeToString(b) }

// generateVectors makes the whole case list; seeded, it is the committed
// file, unseeded it is a fresh set with new keys and nonces.
func generateVectors(t *testing.T, seeded bool) *vectorFile {
	if seeded {
		cryptotest.SetGlobalRandom(t, vectorSeed)
	}
	f := &vectorFile{
		Format:    "polydev-crypto-vectors",
		Version:   1,
		Generator: "go test ./internal/crypto -run TestVectorFile -update",
	}
	f.KDF = genKDF()
	f.Symmetric = genSymmetric()
	f.Sealed = genSealed()
	f.Wrap = genWrap()
	f.PublicKey = genPublicKeys()
	f.Hierarchy = genHierarchy()
	return f
}

func kdfRecord(p crypto.KDFParams) string { return string(must(json.Marshal(p))) }

func genKDF() []kdfCase {
	var out []kdfCase
	derive := func(name, password string, p crypto.KDFParams) {
		rec := kdfRecord(p)
		mk := must(crypto.DeriveMasterKey([]byte(password), p))
		auth, wrap := must2(crypto.DeriveSubkeys(mk))
		out = append(out, kdfCase{Name: name, Record: rec, Canonical: rec, Password: &password,
			MasterKey: hexOf(mk.RawForTest()), AuthKey: hexOf(auth.RawForTest()), WrapKey: hexOf(wrap.RawForTest())})
	}
	argon := crypto.DefaultKDFParams()
	derive("argon2id default", "correct horse battery staple", argon)
	// The same password, composed and decomposed, derives the same key (NFC).
	a1 := crypto.DefaultKDFParams()
	a1.Parallelism, a1.Iterations = 1, 4
	a1.Salt = a1.Salt[:16]
	derive("argon2id p=1 t=4, NFC composed password", "caf\u00e9 \u00fcber na\u00efve", a1)
	derive("argon2id p=1 t=4, NFD decomposed password derives the same key", "cafe\u0301 u\u0308ber nai\u0308ve", a1)
	pb := crypto.DefaultPBKDF2Params()
	derive("pbkdf2-sha256 600000", "correct horse battery staple", pb)
	pb2 := crypto.DefaultPBKDF2Params()
	pb2.Iterations = 650_000
	pb2.Salt = append(pb2.Salt, pb2.Salt...)
	derive("pbkdf2-sha256 650000, 64-byte salt, non-ASCII password", "\u30d1\u30b9\u30ef\u30fc\u30c9\U0001F511", pb2)

	salt := crypto.EncodeText(argon.Salt)
	// Parse-only cases: valid records that are not canonical.
	out = append(out,
		kdfCase{Name: "numbers written with a fraction are the same integers",
			Record:    `{"version":1.0,"algorithm":"argon2id","salt":"` + salt + `","memory_kib":65536.0,"iterations":3,"parallelism":4}`,
			Canonical: `{"version":1,"algorithm":"argon2id","salt":"` + salt + `","memory_kib":65536,"iterations":3,"parallelism":4}`},
		kdfCase{Name: "member order and whitespace do not matter; cost exactly at the maximum",
			Record:    "{ \"parallelism\": 2, \"iterations\": 3, \"memory_kib\": 1048576,\n \"salt\": \"" + salt + "\", \"algorithm\": \"argon2id\", \"version\": 1 }",
			Canonical: `{"version":1,"algorithm":"argon2id","salt":"` + salt + `","memory_kib":1048576,"iterations":3,"parallelism":2}`},
		kdfCase{Name: "pbkdf2 at its maximum",
			Record:    `{"version":1,"algorithm":"pbkdf2-sha256","salt":"` + salt + `","iterations":10000000}`,
			Canonical: `{"version":1,"algorithm":"pbkdf2-sha256","salt":"` + salt + `","iterations":10000000}`},
	)
	a := func(m, t, p string) string {
		return `{"version":1,"algorithm":"argon2id","salt":"` + salt + `","memory_kib":` + m + `,"iterations":` + t + `,"parallelism":` + p + `}`
	}
	fail := func(name, rec, code string) { out = append(out, kdfCase{Name: name, Record: rec, Error: code}) }
	fail("argon2id memory below the minimum (downgrade)", a("65535", "3", "4"), "weak_kdf_params")
	fail("argon2id iterations below the minimum (downgrade)", a("65536", "2", "4"), "weak_kdf_params")
	fail("argon2id parallelism zero", a("65536", "3", "0"), "weak_kdf_params")
	fail("argon2id negative memory", a("-65536", "3", "4"), "weak_kdf_params")
	fail("argon2id memory above the maximum", a("1048577", "3", "4"), "invalid_kdf_params")
	fail("argon2id iterations above the maximum", a("65536", "17", "4"), "invalid_kdf_params")
	fail("argon2id parallelism above the maximum", a("65536", "3", "17"), "invalid_kdf_params")
	fail("argon2id memory × iterations above the maximum cost", a("1048576", "4", "4"), "invalid_kdf_params")
	fail("argon2id 512 MiB × 7 above the maximum cost", a("524288", "7", "1"), "invalid_kdf_params")
	fail("record longer than 1024 bytes", a("65536", "3", "4")+strings.Repeat(" ", 1025), "invalid_kdf_params")
	fail("argon2id huge memory does not wrap around", a("4294967296065536", "3", "4"), "invalid_kdf_params")
	fail("number too large for a double", a("1e999", "3", "4"), "invalid_kdf_params")
	fail("fractional iterations", a("65536", "3.5", "4"), "invalid_kdf_params")
	fail("iterations as a string", a("65536", `"3"`, "4"), "invalid_kdf_params")
	fail("parallelism null", a("65536", "3", "null"), "invalid_kdf_params")
	fail("pbkdf2 iterations below the minimum (downgrade)", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":599999}`, "weak_kdf_params")
	fail("pbkdf2 iterations above the maximum", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":10000001}`, "invalid_kdf_params")
	fail("pbkdf2 with an argon2 member", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000,"parallelism":4}`, "invalid_kdf_params")
	fail("argon2id missing parallelism", `{"version":1,"algorithm":"argon2id","salt":"`+salt+`","memory_kib":65536,"iterations":3}`, "invalid_kdf_params")
	fail("unknown member", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000,"pepper":"x"}`, "invalid_kdf_params")
	fail("unknown version", `{"version":2,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000}`, "unknown_version")
	fail("version as a string", `{"version":"1","algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000}`, "invalid_kdf_params")
	fail("missing version", `{"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000}`, "invalid_kdf_params")
	fail("unknown algorithm", `{"version":1,"algorithm":"scrypt","salt":"`+salt+`","n":32768}`, "unsupported_kdf")
	fail("algorithm is not a string", `{"version":1,"algorithm":1,"salt":"`+salt+`","iterations":600000}`, "invalid_kdf_params")
	short := crypto.EncodeText(argon.Salt[:15])
	fail("salt of 15 bytes", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+short+`","iterations":600000}`, "invalid_kdf_params")
	long := crypto.EncodeText(append(append([]byte{}, pb2.Salt...), 0))
	fail("salt of 65 bytes", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+long+`","iterations":600000}`, "invalid_kdf_params")
	fail("salt not strict base64 (no padding)", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt[:len(salt)-1]+`","iterations":600000}`, "invalid_kdf_params")
	fail("salt with a line break", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt[:8]+`\n`+salt[8:]+`","iterations":600000}`, "invalid_kdf_params")
	fail("not an object", `["argon2id"]`, "invalid_kdf_params")
	fail("null", `null`, "invalid_kdf_params")
	fail("not JSON", `version=1`, "invalid_kdf_params")
	fail("trailing data", `{"version":1,"algorithm":"pbkdf2-sha256","salt":"`+salt+`","iterations":600000} {}`, "invalid_kdf_params")
	out = append(out,
		kdfCase{Name: "empty password", Record: kdfRecord(pb), Password: new(""), Error: "malformed"},
		kdfCase{Name: "password with an unassigned code point", Record: kdfRecord(pb), Password: new("pass\u0378word"), Error: "malformed"},
		kdfCase{Name: "password with a noncharacter", Record: kdfRecord(pb), Password: new("pass\ufdd0word"), Error: "malformed"},
		kdfCase{Name: "password of 4097 bytes", Record: kdfRecord(pb), Password: new(strings.Repeat("a", 4097)), Error: "malformed"},
	)
	return out
}

func must2[A, B any](a A, b B, err error) (A, B) {
	if err != nil {
		panic(err)
	}
	return a, b
}

func genSymmetric() []symCase {
	key := crypto.NewKey()
	other := crypto.NewKey()
	ctx := crypto.MessageContext(userA, msg1)
	var out []symCase
	ok := func(name string, c crypto.Context, pt []byte) string {
		env := must(crypto.Seal(key, c, pt))
		out = append(out, symCase{Name: name, Key: hexOf(key.RawForTest()), Context: toV(c), Plaintext: hexOf(pt), Envelope: env})
		return env
	}
	env := ok("message", ctx, []byte("Hello from Polydev: the server never sees this."))
	ok("empty plaintext", crypto.ConversationTitleContext(userA, conv1), nil)
	ok("empty row and owner", crypto.Context{Table: "t", Field: "f"}, []byte{0, 1, 2, 0xff})
	ok("final stream chunk", crypto.ChunkContext(userA, msg1, 41, true), []byte(" tokens"))
	big := make([]byte, 4096)
	for i := range big {
		big[i] = byte(i * 7)
	}
	ok("4 KiB binary", ctx, big)

	fail := func(name string, k crypto.Key, c crypto.Context, e, code string) {
		out = append(out, symCase{Name: name, Key: hexOf(k.RawForTest()), Context: toV(c), Envelope: e, Error: code})
	}
	wrong := func(mut func(*crypto.Context)) crypto.Context { c := ctx; mut(&c); return c }
	fail("wrong key", other, ctx, env, "open_failed")
	fail("moved to another row", key, wrong(func(c *crypto.Context) { c.Row = msg1[:35] + "e" }), env, "open_failed")
	fail("moved to another user", key, wrong(func(c *crypto.Context) { c.Owner = userB }), env, "open_failed")
	fail("moved to another field", key, wrong(func(c *crypto.Context) { c.Field = "encrypted_title" }), env, "open_failed")
	fail("moved to another table", key, wrong(func(c *crypto.Context) { c.Table = "conversations" }), env, "open_failed")
	fail("chunk sequence changed", key, crypto.ChunkContext(userA, msg1, 40, true), out[3].Envelope, "open_failed")
	fail("final chunk presented as non-final", key, crypto.ChunkContext(userA, msg1, 41, false), out[3].Envelope, "open_failed")
	n := envLen(env)
	for _, b := range []struct {
		name string
		bit  int
		code string
	}{
		{"flipped bit in the kind byte", 0, "unknown_version"},
		{"flipped bit in the nonce (first byte)", 8, "open_failed"},
		{"flipped bit in the nonce (last byte)", 12*8 + 7, "open_failed"},
		{"flipped bit in the ciphertext", 13*8 + 3, "open_failed"},
		{"flipped bit in the tag (first byte)", (n-16)*8 + 5, "open_failed"},
		{"flipped bit in the tag (last bit)", n*8 - 1, "open_failed"},
	} {
		fail(b.name, key, ctx, flipBit(env, b.bit), b.code)
	}
	fail("truncated by one byte", key, ctx, truncate(env, n-1), "open_failed")
	fail("truncated to the tag of an empty plaintext", key, ctx, truncate(env, 29), "open_failed")
	fail("shorter than the minimum", key, ctx, truncate(env, 28), "malformed")
	fail("only the kind byte", key, ctx, truncate(env, 1), "malformed")
	fail("empty", key, ctx, "", "malformed")
	fail("unknown version byte 0x09", key, ctx, setByte(env, 0, 0x09), "unknown_version")
	fail("a sealed envelope's kind byte", key, ctx, setByte(env, 0, 0x02), "unknown_version")
	fail("base64 with a line break", key, ctx, env[:20]+"\n"+env[20:], "malformed")
	fail("base64 without padding", key, ctx, must(crypto.Seal(key, ctx, []byte("ab")))[:43], "malformed")
	fail("base64url alphabet", key, ctx, "AQ-_"+env[4:], "malformed")
	fail("context table with an upper-case letter", key, wrong(func(c *crypto.Context) { c.Table = "Messages" }), env, "malformed")
	fail("context row with a space", key, wrong(func(c *crypto.Context) { c.Row = "a b" }), env, "malformed")
	fail("context with an empty field", key, wrong(func(c *crypto.Context) { c.Field = "" }), env, "malformed")
	return out
}

func genSealed() []sealedCase {
	var out []sealedCase
	ctx := crypto.ProviderTokenContext(userA, "anthropic")
	keys := map[string]*crypto.PrivateKey{}
	envs := map[string]string{}
	for _, s := range crypto.Suites {
		priv := must(crypto.GenerateKeyPair(s))
		keys[s.Name] = priv
		rec := hexOf(must(priv.RecordForTest()))
		pub := priv.Public().String()
		ok := func(name string, c crypto.Context, pt []byte) string {
			env := must(crypto.SealTo(priv.Public(), c, pt))
			out = append(out, sealedCase{Name: s.Name + ": " + name, Suite: s.Name, PrivateKey: rec, PublicKey: pub,
				Context: toV(c), Plaintext: hexOf(pt), Envelope: env})
			return env
		}
		env := ok("provider token", ctx, []byte(`{"refresh_token":"rt-test-0001","expires_at":"2026-12-01T00:00:00Z"}`))
		envs[s.Name] = env
		ok("empty plaintext", crypto.GrantContext(userA, "req-1"), nil)
		other := must(crypto.GenerateKeyPair(s))
		fail := func(name string, k *crypto.PrivateKey, c crypto.Context, e, code string) {
			out = append(out, sealedCase{Name: s.Name + ": " + name, Suite: k.Suite().Name, PrivateKey: hexOf(must(k.RecordForTest())),
				PublicKey: k.Public().String(), Context: toV(c), Envelope: e, Error: code})
		}
		c2 := ctx
		c2.Owner = userB
		c3 := ctx
		c3.Field = "encrypted_access_token" // another purpose: another info string
		c4 := ctx
		c4.Row = "openai"
		n := envLen(env)
		nenc := n - 7 - 16 - len(`{"refresh_token":"rt-test-0001","expires_at":"2026-12-01T00:00:00Z"}`)
		fail("wrong private key", other, ctx, env, "open_failed")
		fail("moved to another user", priv, c2, env, "open_failed")
		fail("another purpose (info)", priv, c3, env, "open_failed")
		fail("another row", priv, c4, env, "open_failed")
		fail("flipped bit in the kind byte", priv, ctx, flipBit(env, 1), "unknown_version")
		fail("flipped bit in the kem id", priv, ctx, flipBit(env, 2*8), "unsupported_suite")
		fail("flipped bit in the kdf id", priv, ctx, flipBit(env, 4*8), "unsupported_suite")
		fail("flipped bit in the aead id", priv, ctx, flipBit(env, 6*8+2), "unsupported_suite")
		fail("flipped bit in the encapsulated key", priv, ctx, flipBit(env, 7*8+8*nenc/2+1), "open_failed")
		fail("flipped bit in the ciphertext", priv, ctx, flipBit(env, (7+nenc)*8+4), "open_failed")
		fail("flipped bit in the tag", priv, ctx, flipBit(env, n*8-1), "open_failed")
		fail("truncated by one byte", priv, ctx, truncate(env, n-1), "open_failed")
		fail("shorter than header, enc and tag", priv, ctx, truncate(env, 7+nenc+15), "malformed")
		fail("header only", priv, ctx, truncate(env, 7), "malformed")
		fail("truncated header", priv, ctx, truncate(env, 6), "malformed")
		fail("symmetric kind byte", priv, ctx, setByte(env, 0, 0x01), "unknown_version")
		fail("aead ChaCha20-Poly1305 is not accepted", priv, ctx, setByte(env, 6, 0x03), "unsupported_suite")
		fail("aead AES-128-GCM is not accepted", priv, ctx, setByte(env, 6, 0x01), "unsupported_suite")
	}
	// An envelope of one suite opened with a key of the other.
	out = append(out,
		sealedCase{Name: "x25519 envelope, xwing key", Suite: "xwing", PrivateKey: hexOf(must(keys["xwing"].RecordForTest())),
			PublicKey: keys["xwing"].Public().String(), Context: toV(ctx), Envelope: envs["x25519"], Error: "unsupported_suite"},
		sealedCase{Name: "xwing envelope, x25519 key", Suite: "x25519", PrivateKey: hexOf(must(keys["x25519"].RecordForTest())),
			PublicKey: keys["x25519"].Public().String(), Context: toV(ctx), Envelope: envs["xwing"], Error: "unsupported_suite"},
	)
	return out
}

func genWrap() []wrapCase {
	var out []wrapCase
	wk := crypto.NewKey()
	ak := crypto.NewKey()
	ctx := crypto.AccountKeyContext(userA)
	w := must(crypto.WrapKey(wk, ctx, ak))
	wkHex := hexOf(wk.RawForTest())
	out = append(out, wrapCase{Name: "account key", Type: "key", WrappingKey: wkHex, Context: toV(ctx), Unwrapped: hexOf(ak.RawForTest()), Wrapped: w})
	ck := crypto.NewKey()
	cctx := crypto.ConversationKeyContext(userA, conv1)
	out = append(out, wrapCase{Name: "conversation key", Type: "key", WrappingKey: hexOf(ak.RawForTest()), Context: toV(cctx),
		Unwrapped: hexOf(ck.RawForTest()), Wrapped: must(crypto.WrapKey(ak, cctx, ck))})
	pctx := crypto.PrivateKeyContext(userA)
	for _, s := range crypto.Suites {
		priv := must(crypto.GenerateKeyPair(s))
		out = append(out, wrapCase{Name: s.Name + " private key", Type: "private_key", WrappingKey: hexOf(ak.RawForTest()), Context: toV(pctx),
			Unwrapped: hexOf(must(priv.RecordForTest())), PublicKey: priv.Public().String(), Wrapped: must(crypto.WrapPrivateKey(ak, pctx, priv))})
	}
	rec := must(out[2].unwrappedBytes())
	fail := func(name, typ string, k crypto.Key, c crypto.Context, wrapped, code string) {
		out = append(out, wrapCase{Name: name, Type: typ, WrappingKey: hexOf(k.RawForTest()), Context: toV(c), Wrapped: wrapped, Error: code})
	}
	other := crypto.NewKey()
	fail("account key, wrong wrapping key (wrong password)", "key", other, ctx, w, "open_failed")
	fail("account key wrapped for another user", "key", wk, crypto.AccountKeyContext(userB), w, "open_failed")
	fail("account key presented as a conversation key", "key", wk, crypto.ConversationKeyContext(userA, userA), w, "open_failed")
	fail("31-byte key", "key", wk, ctx, must(crypto.Seal(wk, ctx, make([]byte, 31))), "malformed")
	fail("33-byte key", "key", wk, ctx, must(crypto.Seal(wk, ctx, make([]byte, 33))), "malformed")
	fail("private key record with an unknown kem", "private_key", ak, pctx, must(crypto.Seal(ak, pctx, append([]byte{4, 0x00, 0x21}, rec[3:]...))), "unsupported_suite")
	fail("private key record of the wrong length", "private_key", ak, pctx, must(crypto.Seal(ak, pctx, rec[:len(rec)-1])), "malformed")
	fail("private key record with a public key kind byte", "private_key", ak, pctx, must(crypto.Seal(ak, pctx, append([]byte{3}, rec[1:]...))), "unknown_version")
	fail("empty private key record", "private_key", ak, pctx, must(crypto.Seal(ak, pctx, nil)), "malformed")
	fail("private key, wrong wrapping key", "private_key", other, pctx, out[2].Wrapped, "open_failed")
	return out
}

func (c wrapCase) unwrappedBytes() ([]byte, error) { return hex.DecodeString(c.Unwrapped) }

func genPublicKeys() []publicKeyCase {
	var out []publicKeyCase
	for _, s := range crypto.Suites {
		pub := must(crypto.GenerateKeyPair(s)).Public()
		text := pub.String()
		b := pub.Bytes()
		out = append(out,
			publicKeyCase{Name: s.Name, PublicKey: text, Suite: s.Name, Key: hexOf(b[3:])},
			publicKeyCase{Name: s.Name + " one byte short", PublicKey: crypto.EncodeText(b[:len(b)-1]), Error: "malformed"},
			publicKeyCase{Name: s.Name + " one byte long", PublicKey: crypto.EncodeText(append(b, 0)), Error: "malformed"},
			publicKeyCase{Name: s.Name + " private key kind byte", PublicKey: setByte(text, 0, 0x04), Error: "unknown_version"},
		)
	}
	// Keys a KEM must refuse (§6.2): small-order and non-canonical X25519
	// shares, alone or inside X-Wing, and an ML-KEM key failing the modulus
	// check.
	x := func(u []byte) string { return crypto.EncodeText(append([]byte{3, 0x00, 0x20}, u...)) }
	for i, lo := range crypto.LowOrderX25519ForTest {
		out = append(out, publicKeyCase{Name: fmt.Sprintf("x25519 small-order point %d", i), PublicKey: x(lo[:]), Error: "malformed"})
	}
	good := must(crypto.GenerateKeyPair(crypto.SuiteX25519)).Public().Bytes()[3:]
	high := append([]byte{}, good...)
	high[31] |= 0x80
	p := append(bytes.Repeat([]byte{0xff}, 31), 0x7f)
	p[0] = 0xed
	out = append(out,
		publicKeyCase{Name: "x25519 share with the top bit set", PublicKey: x(high), Error: "malformed"},
		publicKeyCase{Name: "x25519 share equal to p", PublicKey: x(p), Error: "malformed"},
	)
	xw := must(crypto.GenerateKeyPair(crypto.SuiteXWing)).Public().Bytes()
	zeroX := append([]byte{}, xw...)
	clear(zeroX[len(zeroX)-32:])
	badM := append([]byte{}, xw...)
	badM[3] = 0xff // first 12-bit coefficient becomes ≥ 3329
	badM[4] |= 0x0f
	out = append(out,
		publicKeyCase{Name: "xwing with a zero X25519 share", PublicKey: crypto.EncodeText(zeroX), Error: "malformed"},
		publicKeyCase{Name: "xwing with an ML-KEM coefficient not below q", PublicKey: crypto.EncodeText(badM), Error: "malformed"},
	)
	out = append(out,
		publicKeyCase{Name: "unknown kem (DHKEM P-256)", PublicKey: crypto.EncodeText(append([]byte{3, 0x00, 0x10}, make([]byte, 65)...)), Error: "unsupported_suite"},
		publicKeyCase{Name: "kind byte only", PublicKey: crypto.EncodeText([]byte{3}), Error: "malformed"},
		publicKeyCase{Name: "empty", PublicKey: "", Error: "malformed"},
		publicKeyCase{Name: "not base64", PublicKey: "not a key!", Error: "malformed"},
	)
	return out
}

func genHierarchy() []hierarchyCase {
	password := "Tr0ub4dor&3 — a passphrase"
	p := crypto.DefaultKDFParams()
	mk := must(crypto.DeriveMasterKey([]byte(password), p))
	auth, wrap := must2(crypto.DeriveSubkeys(mk))
	ak := crypto.NewKey()
	priv := must(crypto.GenerateKeyPair(crypto.DefaultSuite))
	ck := crypto.NewKey()
	const message = "What is the capital of France?"
	const token = `sk-test-000000000000000000000000`
	return []hierarchyCase{{
		Name:                   "register, then log in and read a message and a provider token",
		Password:               password,
		KDFRecord:              kdfRecord(p),
		UserID:                 userA,
		AuthKey:                must(auth.Text()),
		WrappedAccountKey:      must(crypto.WrapKey(wrap, crypto.AccountKeyContext(userA), ak)),
		AccountKey:             hexOf(ak.RawForTest()),
		WrappedPrivateKey:      must(crypto.WrapPrivateKey(ak, crypto.PrivateKeyContext(userA), priv)),
		PublicKey:              priv.Public().String(),
		ConversationID:         conv1,
		WrappedConversationKey: must(crypto.WrapKey(ak, crypto.ConversationKeyContext(userA, conv1), ck)),
		ConversationKey:        hexOf(ck.RawForTest()),
		MessageID:              msg1,
		EncryptedMessage:       must(crypto.Seal(ck, crypto.MessageContext(userA, msg1), []byte(message))),
		Message:                message,
		Provider:               "openai",
		SealedToken:            must(crypto.SealTo(priv.Public(), crypto.ProviderTokenContext(userA, "openai"), []byte(token))),
		Token:                  token,
	}}
}
