package crypto_test

import (
	"bytes"
	"crypto/ecdh"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"testing"

	"polydev/internal/crypto"
)

func TestSecretsAreRedacted(t *testing.T) {
	t.Parallel()
	key := crypto.NewKey()
	priv, err := crypto.GenerateKeyPair(crypto.SuiteX25519)
	if err != nil {
		t.Fatal(err)
	}
	auth := crypto.AuthKey{Key: crypto.NewKey()}
	rec, _ := priv.RecordForTest()
	secrets := []string{hex.EncodeToString(key.RawForTest()), hex.EncodeToString(auth.RawForTest()), hex.EncodeToString(rec[3:]),
		crypto.EncodeText(key.RawForTest()), must(auth.Text())}

	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		fmt.Fprintf(&out, verb+"|", key)
		fmt.Fprintf(&out, verb+"|", priv)
		fmt.Fprintf(&out, verb+"|", auth)
		fmt.Fprintf(&out, verb+"|", struct{ K crypto.Key }{key})
	}
	logger := slog.New(slog.NewJSONHandler(&out, nil))
	logger.Info("keys", "key", key, "priv", priv, "auth", auth)
	slog.New(slog.NewTextHandler(&out, nil)).Info("keys", "key", key, "priv", priv, "auth", auth)
	j, err := json.Marshal(map[string]any{"key": key, "priv": priv, "auth": auth})
	if err != nil {
		t.Fatal(err)
	}
	out.Write(j)
	for _, s := range secrets {
		if strings.Contains(out.String(), s) || strings.Contains(strings.ToLower(out.String()), strings.ToLower(s)) {
			t.Fatalf("secret %s… leaked into: %s", s[:8], out.String())
		}
	}
	if n := strings.Count(out.String(), "[REDACTED]"); n < 30 {
		t.Errorf("got %d [REDACTED] markers; want every secret printed as one:\n%s", n, out.String())
	}
}

func TestWipeDisablesEveryCopy(t *testing.T) {
	t.Parallel()
	key := crypto.NewKey()
	ctx := crypto.MessageContext("u", "m")
	env, err := crypto.Seal(key, ctx, []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	alias := key
	key.Wipe()
	key.Wipe() // safe twice
	if alias.Valid() {
		t.Fatal("a copy of a wiped key is still valid")
	}
	if !bytes.Equal(alias.RawForTest(), nil) {
		t.Fatal("wiped key still exposes bytes")
	}
	if _, err := crypto.Open(alias, ctx, env); !errors.Is(err, crypto.ErrMalformed) {
		t.Fatalf("open with a wiped key: got %v; want ErrMalformed", err)
	}
	if _, err := crypto.Seal(crypto.Key{}, ctx, nil); !errors.Is(err, crypto.ErrMalformed) {
		t.Fatalf("seal with the zero key: got %v; want ErrMalformed", err)
	}
	priv, _ := crypto.GenerateKeyPair(crypto.SuiteXWing)
	priv.Wipe()
	if _, err := crypto.WrapPrivateKey(crypto.NewKey(), crypto.PrivateKeyContext("u"), priv); !errors.Is(err, crypto.ErrMalformed) {
		t.Fatalf("wrap a wiped private key: got %v; want ErrMalformed", err)
	}
}

func TestCodes(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		err  error
		want string
	}{
		{nil, ""},
		{crypto.ErrMalformed, "malformed"},
		{fmt.Errorf("op: %w", crypto.ErrOpenFailed), "open_failed"},
		{crypto.ErrUnknownVersion, "unknown_version"},
		{crypto.ErrUnsupportedSuite, "unsupported_suite"},
		{crypto.ErrUnsupportedKDF, "unsupported_kdf"},
		{crypto.ErrInvalidKDFParams, "invalid_kdf_params"},
		{crypto.ErrWeakKDFParams, "weak_kdf_params"},
		{errors.New("other"), "internal"},
	} {
		if got := crypto.Code(tc.err); got != tc.want {
			t.Errorf("Code(%v) = %q; want %q", tc.err, got, tc.want)
		}
	}
}

func TestContextValidate(t *testing.T) {
	t.Parallel()
	long := strings.Repeat("a", 256)
	for _, tc := range []struct {
		ctx crypto.Context
		ok  bool
	}{
		{crypto.Context{Table: "messages", Field: "encrypted_content", Row: "r", Owner: "o"}, true},
		{crypto.Context{Table: "a", Field: "b"}, true},
		{crypto.Context{Table: "a.b-c_9", Field: "x", Row: long[:255], Owner: "~!"}, true},
		{crypto.Context{Table: "", Field: "b"}, false},
		{crypto.Context{Table: "9a", Field: "b"}, false},
		{crypto.Context{Table: "A", Field: "b"}, false},
		{crypto.Context{Table: strings.Repeat("a", 65), Field: "b"}, false},
		{crypto.Context{Table: "a", Field: "b/c"}, false},
		{crypto.Context{Table: "a", Field: "b", Row: long}, false},
		{crypto.Context{Table: "a", Field: "b", Row: "a b"}, false},
		{crypto.Context{Table: "a", Field: "b", Owner: "é"}, false},
		{crypto.Context{Table: "a", Field: "b", Owner: "\x00"}, false},
	} {
		err := tc.ctx.Validate()
		if (err == nil) != tc.ok {
			t.Errorf("Validate(%+v) = %v; want ok=%v", tc.ctx, err, tc.ok)
		}
		if err != nil && !errors.Is(err, crypto.ErrMalformed) {
			t.Errorf("Validate(%+v) = %v; want ErrMalformed", tc.ctx, err)
		}
	}
}

// Context encodings are injective: moving a byte between members changes
// the associated data.
func TestContextEncodingIsUnambiguous(t *testing.T) {
	t.Parallel()
	a, _ := crypto.ContextBytesForTest(crypto.Context{Table: "ab", Field: "c", Row: "d", Owner: "e"}, 1)
	b, _ := crypto.ContextBytesForTest(crypto.Context{Table: "a", Field: "bc", Row: "d", Owner: "e"}, 1)
	c, _ := crypto.ContextBytesForTest(crypto.Context{Table: "ab", Field: "c", Row: "", Owner: "de"}, 1)
	d, _ := crypto.ContextBytesForTest(crypto.Context{Table: "ab", Field: "c", Row: "d", Owner: "e"}, 2)
	for i, x := range [][]byte{b, c, d} {
		if bytes.Equal(a, x) {
			t.Errorf("context %d encodes like the first", i)
		}
	}
	want := "polydev\x00\x01\x00\x02ab\x00\x01c\x00\x01d\x00\x01e"
	if string(a) != want {
		t.Errorf("context bytes = %q; want %q", a, want)
	}
}

func TestSealIsRandomised(t *testing.T) {
	t.Parallel()
	key := crypto.NewKey()
	ctx := crypto.MessageContext("u", "m")
	seen := map[string]bool{}
	for range 100 {
		env, err := crypto.Seal(key, ctx, []byte("same"))
		if err != nil {
			t.Fatal(err)
		}
		if seen[env] {
			t.Fatal("two envelopes of the same plaintext are identical: nonce reuse")
		}
		seen[env] = true
	}
}

func TestKDFDefaultsAndDowngrade(t *testing.T) {
	t.Parallel()
	a, b := crypto.DefaultKDFParams(), crypto.DefaultKDFParams()
	if err := a.Validate(); err != nil {
		t.Fatalf("default params invalid: %v", err)
	}
	if len(a.Salt) != crypto.DefaultSaltSize || bytes.Equal(a.Salt, b.Salt) {
		t.Fatal("default salts are not fresh 32-byte values")
	}
	if a.MemoryKiB != 65536 || a.Iterations != 3 || a.Parallelism != 4 {
		t.Fatalf("defaults = %+v; want argon2id 64 MiB, t=3, p=4", a)
	}
	if err := crypto.DefaultPBKDF2Params().Validate(); err != nil {
		t.Fatalf("default pbkdf2 params invalid: %v", err)
	}
	weak := a
	weak.MemoryKiB = 8192
	if _, err := crypto.DeriveMasterKey([]byte("pw"), weak); !errors.Is(err, crypto.ErrWeakKDFParams) {
		t.Fatalf("derive with weak params: got %v; want ErrWeakKDFParams", err)
	}
	huge := a
	huge.MemoryKiB = 4 << 20
	if _, err := crypto.DeriveMasterKey([]byte("pw"), huge); !errors.Is(err, crypto.ErrInvalidKDFParams) {
		t.Fatalf("derive with huge params: got %v; want ErrInvalidKDFParams", err)
	}
	pb := crypto.DefaultPBKDF2Params()
	pb.Parallelism = 2
	if err := pb.Validate(); !errors.Is(err, crypto.ErrInvalidKDFParams) {
		t.Fatalf("pbkdf2 with parallelism: got %v; want ErrInvalidKDFParams", err)
	}
	if _, err := crypto.DeriveMasterKey(bytes.Repeat([]byte("a"), crypto.MaxPasswordBytes+1), crypto.DefaultPBKDF2Params()); !errors.Is(err, crypto.ErrMalformed) {
		t.Fatalf("overlong password: got %v; want ErrMalformed", err)
	}
	// A record embedded in a larger document is checked just as strictly.
	var doc struct{ KDF crypto.KDFParams }
	if err := json.Unmarshal([]byte(`{"KDF":{"version":1,"algorithm":"pbkdf2-sha256","salt":"AAAAAAAAAAAAAAAAAAAAAA==","iterations":1000}}`), &doc); !errors.Is(err, crypto.ErrWeakKDFParams) {
		t.Fatalf("embedded weak record: got %v; want ErrWeakKDFParams", err)
	}
}

func TestPasswordHandling(t *testing.T) {
	t.Parallel()
	p := crypto.DefaultPBKDF2Params()
	pw := []byte("hunter2 is NFC already")
	orig := append([]byte{}, pw...)
	k1, err := crypto.DeriveMasterKey(pw, p)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(pw, orig) {
		t.Fatalf("DeriveMasterKey changed the caller's password buffer to %q", pw)
	}
	k2, _ := crypto.DeriveMasterKey(pw, p)
	if !k1.Equal(k2) {
		t.Fatal("deriving twice from the same buffer gave different keys")
	}
	// A byte-order mark is a character like any other: kept, not stripped.
	bom, _ := crypto.DeriveMasterKey(append([]byte("\ufeff"), pw...), p)
	if bom.Equal(k1) {
		t.Fatal("a leading BOM was ignored")
	}
	for _, bad := range [][]byte{{0xff, 'p', 'w'}, []byte("a\xc3"), []byte("\xed\xa0\x80")} {
		if _, err := crypto.DeriveMasterKey(bad, p); !errors.Is(err, crypto.ErrMalformed) {
			t.Errorf("password %x: got %v; want ErrMalformed", bad, err)
		}
	}
}

// The small-order list is right: each entry makes X25519 fail.
func TestLowOrderX25519(t *testing.T) {
	t.Parallel()
	priv, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	for i, lo := range crypto.LowOrderX25519ForTest {
		pub, err := ecdh.X25519().NewPublicKey(lo[:])
		if err != nil {
			t.Fatal(err)
		}
		if _, err := priv.ECDH(pub); err == nil {
			t.Errorf("entry %d (%x) is not of small order", i, lo)
		}
	}
}

func TestPasswordChangeRewrapsOnlyTheAccountKey(t *testing.T) {
	t.Parallel()
	const user = "u-1"
	oldP, newP := crypto.DefaultPBKDF2Params(), crypto.DefaultPBKDF2Params()
	oldMK, err := crypto.DeriveMasterKey([]byte("old password"), oldP)
	if err != nil {
		t.Fatal(err)
	}
	oldAuth, oldWrap, _ := crypto.DeriveSubkeys(oldMK)
	account := crypto.NewKey()
	wrapped, _ := crypto.WrapKey(oldWrap, crypto.AccountKeyContext(user), account)
	msg, _ := crypto.Seal(account, crypto.MessageContext(user, "m"), []byte("kept"))

	// Change: unwrap with the old wrap key, re-wrap under the new one.
	ak, err := crypto.UnwrapKey(oldWrap, crypto.AccountKeyContext(user), wrapped)
	if err != nil {
		t.Fatal(err)
	}
	newMK, _ := crypto.DeriveMasterKey([]byte("new password"), newP)
	newAuth, newWrap, _ := crypto.DeriveSubkeys(newMK)
	rewrapped, _ := crypto.WrapKey(newWrap, crypto.AccountKeyContext(user), ak)
	if must(newAuth.Text()) == must(oldAuth.Text()) {
		t.Fatal("auth key did not change with the password")
	}
	if _, err := crypto.UnwrapKey(oldWrap, crypto.AccountKeyContext(user), rewrapped); !errors.Is(err, crypto.ErrOpenFailed) {
		t.Fatalf("old password opened the re-wrapped key: %v", err)
	}
	again, err := crypto.UnwrapKey(newWrap, crypto.AccountKeyContext(user), rewrapped)
	if err != nil || !again.Equal(account) {
		t.Fatalf("new password does not recover the same account key: %v", err)
	}
	if pt, err := crypto.Open(again, crypto.MessageContext(user, "m"), msg); err != nil || string(pt) != "kept" {
		t.Fatalf("old data unreadable after the password change: %v", err)
	}
}

func TestSealedSuiteMismatchAndKeys(t *testing.T) {
	t.Parallel()
	for _, s := range crypto.Suites {
		t.Run(s.Name, func(t *testing.T) {
			t.Parallel()
			priv, err := crypto.GenerateKeyPair(s)
			if err != nil {
				t.Fatal(err)
			}
			pub, err := crypto.ParsePublicKey(priv.Public().String())
			if err != nil || pub.Suite() != s {
				t.Fatalf("public key round trip: %v", err)
			}
			ctx := crypto.GrantContext("u", "r")
			for _, size := range []int{0, 1, 1024, 65536} {
				pt := bytes.Repeat([]byte{0xa5}, size)
				env, err := crypto.SealTo(pub, ctx, pt)
				if err != nil {
					t.Fatal(err)
				}
				got, err := crypto.OpenSealed(priv, ctx, env)
				if err != nil || !bytes.Equal(got, pt) {
					t.Fatalf("size %d: %v", size, err)
				}
			}
			env, err := crypto.SealTo(pub, ctx, []byte("x"))
			if err != nil {
				t.Fatal(err)
			}
			if _, err := crypto.OpenSealed(nil, ctx, env); !errors.Is(err, crypto.ErrMalformed) {
				t.Fatalf("nil key: got %v; want ErrMalformed", err)
			}
			for _, other := range crypto.Suites {
				if other == s {
					continue
				}
				k, _ := crypto.GenerateKeyPair(other)
				if _, err := crypto.OpenSealed(k, ctx, env); !errors.Is(err, crypto.ErrUnsupportedSuite) {
					t.Fatalf("%s key on a %s envelope: got %v; want ErrUnsupportedSuite", other.Name, s.Name, err)
				}
			}
		})
	}
}

func ExampleSeal() {
	convKey := crypto.NewKey()
	ctx := crypto.MessageContext("user-1", "message-1")
	env, _ := crypto.Seal(convKey, ctx, []byte("hello"))

	pt, _ := crypto.Open(convKey, ctx, env)
	fmt.Println(string(pt))

	// The same ciphertext under another row does not open.
	_, err := crypto.Open(convKey, crypto.MessageContext("user-1", "message-2"), env)
	fmt.Println(crypto.Code(err))
	// Output:
	// hello
	// open_failed
}

func ExampleSealTo() {
	userKey, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
	publicText := userKey.Public().String() // stored plain, served to whoever seals to the user

	pub, _ := crypto.ParsePublicKey(publicText)
	ctx := crypto.ProviderTokenContext("user-1", "openai")
	sealed, _ := crypto.SealTo(pub, ctx, []byte("provider credential"))

	pt, _ := crypto.OpenSealed(userKey, ctx, sealed)
	fmt.Println(string(pt), pub.Suite())
	// Output: provider credential xwing
}
