package crypto_test

// Fuzz targets for every decoder of untrusted bytes. Run one with e.g.
//
//	go test ./internal/crypto -run '^$' -fuzz '^FuzzOpen$' -fuzztime 10m
//
// (scripts/fuzz.sh runs them all). Crashers the fuzzer finds are written to
// testdata/fuzz/<Target>/ and replayed by every ordinary `go test` run.

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"os"
	"testing"

	"polydev/internal/crypto"
)

// seedVectors loads the shared vectors to seed the corpora with real
// envelopes, keys and records, valid and must-fail.
func seedVectors(f *testing.F) *vectorFile {
	data, err := os.ReadFile(vectorPath)
	if err != nil {
		f.Fatal(err)
	}
	var v vectorFile
	if err := json.Unmarshal(data, &v); err != nil {
		f.Fatal(err)
	}
	return &v
}

// known reports whether err is nil or one of the package's error kinds: a
// decoder must never fail in any other way (and never panic).
func known(t *testing.T, err error) {
	t.Helper()
	if c := crypto.Code(err); c == "internal" {
		t.Fatalf("error outside the defined kinds: %v", err)
	}
}

func decodeOrNil(s string) []byte {
	b, _ := crypto.DecodeText(s)
	return b
}

// FuzzOpen: symmetric envelope parsing and opening, with an arbitrary
// context.
func FuzzOpen(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.Symmetric {
		f.Add(decodeOrNil(c.Envelope), c.Context.Table, c.Context.Field, c.Context.Row, c.Context.Owner)
	}
	key := crypto.NewKey()
	f.Fuzz(func(t *testing.T, env []byte, table, field, row, owner string) {
		ctx := crypto.Context{Table: table, Field: field, Row: row, Owner: owner}
		pt, err := crypto.OpenBytes(key, ctx, env)
		known(t, err)
		if err == nil {
			t.Fatalf("opened a forged envelope under a random key: %x", pt)
		}
		// Whatever the context, a valid one must round-trip.
		if ctx.Validate() == nil {
			sealed, err := crypto.SealBytes(key, ctx, env)
			if err != nil {
				t.Fatal(err)
			}
			back, err := crypto.OpenBytes(key, ctx, sealed)
			if err != nil || !bytes.Equal(back, env) {
				t.Fatalf("round trip failed: %v", err)
			}
		}
	})
}

// FuzzDecodeText: the strict base64 codec agrees with encoding/base64 —
// it accepts exactly the canonical encodings, decodes them to the same
// bytes, and encodes any bytes as encoding/base64 does.
func FuzzDecodeText(f *testing.F) {
	for _, s := range []string{"", "AA==", "AAE=", "AAEC", "AB==", "A\nA==", "-_==", "====", "A===", "AA=A", "QUJD", "/+8="} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		b, err := crypto.DecodeText(s)
		known(t, err)
		ref, refErr := base64.StdEncoding.Strict().DecodeString(s)
		canonical := refErr == nil && base64.StdEncoding.EncodeToString(ref) == s
		if (err == nil) != canonical {
			t.Fatalf("DecodeText(%q) error %v; encoding/base64 says canonical=%v", s, err, canonical)
		}
		if err == nil && !bytes.Equal(b, ref) {
			t.Fatalf("DecodeText(%q) = %x; want %x", s, b, ref)
		}
		raw := []byte(s)
		if got, want := crypto.EncodeText(raw), base64.StdEncoding.EncodeToString(raw); got != want {
			t.Fatalf("EncodeText(%x) = %q; want %q", raw, got, want)
		}
	})
}

// FuzzOpenSealed: sealed envelope parsing and opening with keys of both
// suites.
func FuzzOpenSealed(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.Sealed {
		f.Add(decodeOrNil(c.Envelope), c.Context.Row)
	}
	var keys []*crypto.PrivateKey
	for _, s := range crypto.Suites {
		k, err := crypto.GenerateKeyPair(s)
		if err != nil {
			f.Fatal(err)
		}
		keys = append(keys, k)
	}
	f.Fuzz(func(t *testing.T, env []byte, row string) {
		ctx := crypto.Context{Table: "provider_tokens", Field: "encrypted_refresh_token", Row: row, Owner: "u"}
		for _, k := range keys {
			pt, err := crypto.OpenSealedBytes(k, ctx, env)
			known(t, err)
			if err == nil {
				t.Fatalf("opened a forged sealed envelope: %x", pt)
			}
		}
	})
}

// FuzzParseKDFParams: the KDF record parser. Whatever it accepts is within
// bounds and survives a canonical round trip.
func FuzzParseKDFParams(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.KDF {
		f.Add([]byte(c.Record))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		p, err := crypto.ParseKDFParams(data)
		known(t, err)
		if err != nil {
			return
		}
		if err := p.Validate(); err != nil {
			t.Fatalf("accepted a record that fails Validate: %v", err)
		}
		canon, err := json.Marshal(p)
		if err != nil {
			t.Fatal(err)
		}
		q, err := crypto.ParseKDFParams(canon)
		if err != nil {
			t.Fatalf("canonical form %s does not parse: %v", canon, err)
		}
		again, _ := json.Marshal(q)
		if !bytes.Equal(canon, again) {
			t.Fatalf("canonical form is not stable: %s then %s", canon, again)
		}
	})
}

// FuzzParsePublicKey: public key records. Whatever parses re-encodes to the
// same bytes.
func FuzzParsePublicKey(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.PublicKey {
		f.Add(decodeOrNil(c.PublicKey))
	}
	f.Fuzz(func(t *testing.T, data []byte) {
		pk, err := crypto.ParsePublicKeyBytes(data)
		known(t, err)
		if err == nil && !bytes.Equal(pk.Bytes(), data) {
			t.Fatalf("public key record does not re-encode to itself")
		}
	})
}

// FuzzUnwrapPrivateKey: private key records as they come out of a wrapped
// envelope (the wrapping key being right, the record itself arbitrary).
func FuzzUnwrapPrivateKey(f *testing.F) {
	v := seedVectors(f)
	for _, c := range v.Wrap {
		if c.Type == "private_key" {
			b, _ := c.unwrappedBytes()
			f.Add(b)
		}
	}
	f.Fuzz(func(t *testing.T, rec []byte) {
		k, err := crypto.ParsePrivateKeyRecordForTest(rec)
		known(t, err)
		if err != nil {
			return
		}
		back, err := k.RecordForTest()
		if err != nil {
			t.Fatal(err)
		}
		if len(back) != len(rec) || !bytes.Equal(back[:3], rec[:3]) {
			t.Fatalf("private key record changed shape: %x → %x", rec, back)
		}
	})
}
