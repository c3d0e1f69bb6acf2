package crypto_test

import (
	"errors"
	"fmt"
	"testing"
	"time"

	"polydev/internal/crypto"
)

func TestKeyStatement(t *testing.T) {
	t.Parallel()
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	again, err := crypto.ParseIdentity(id.Record())
	if err != nil {
		t.Fatal(err)
	}
	if again.Public() != id.Public() {
		t.Fatalf("identity record round trip changed the public key")
	}
	if s := fmt.Sprintf("%v %s %+v", id, id, id); s != "[REDACTED] [REDACTED] [REDACTED]" {
		t.Fatalf("identity printed as %q", s)
	}
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	other, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
	now := time.Unix(1_800_000_000, 0)
	st := crypto.KeyStatement{KeyID: "rk-1", PublicKey: priv.Public().String(), CreatedAt: now, ExpiresAt: now.Add(time.Hour)}
	sig, err := id.Sign(st)
	if err != nil {
		t.Fatal(err)
	}
	if err := crypto.VerifyKeyStatement(id.Public(), st, sig); err != nil {
		t.Fatalf("valid statement: %v", err)
	}
	stranger, _ := crypto.GenerateIdentity()
	changed := []struct {
		name     string
		identity string
		st       crypto.KeyStatement
		want     error
	}{
		{"other identity", stranger.Public(), st, crypto.ErrOpenFailed},
		{"other key", id.Public(), crypto.KeyStatement{KeyID: st.KeyID, PublicKey: other.Public().String(), CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt}, crypto.ErrOpenFailed},
		{"other id", id.Public(), crypto.KeyStatement{KeyID: "rk-2", PublicKey: st.PublicKey, CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt}, crypto.ErrOpenFailed},
		{"later expiry", id.Public(), crypto.KeyStatement{KeyID: st.KeyID, PublicKey: st.PublicKey, CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt.Add(time.Second)}, crypto.ErrOpenFailed},
		{"newline in id", id.Public(), crypto.KeyStatement{KeyID: "rk-1\nx", PublicKey: st.PublicKey, CreatedAt: st.CreatedAt, ExpiresAt: st.ExpiresAt}, crypto.ErrMalformed},
		{"private record as identity", id.Record(), st, crypto.ErrUnknownVersion},
	}
	for _, c := range changed {
		if err := crypto.VerifyKeyStatement(c.identity, c.st, sig); !errors.Is(err, c.want) {
			t.Errorf("%s: got %v; want %v", c.name, err, c.want)
		}
	}
}

func TestPrivateKeyRecordExport(t *testing.T) {
	t.Parallel()
	for _, suite := range crypto.Suites {
		priv, err := crypto.GenerateKeyPair(suite)
		if err != nil {
			t.Fatal(err)
		}
		rec, err := priv.ExportRecord()
		if err != nil {
			t.Fatal(err)
		}
		back, err := crypto.ParsePrivateKeyRecord(rec)
		if err != nil {
			t.Fatal(err)
		}
		ctx := crypto.GrantContext("u", "r")
		env, err := crypto.SealTo(priv.Public(), ctx, []byte("grant"))
		if err != nil {
			t.Fatal(err)
		}
		if pt, err := crypto.OpenSealed(back, ctx, env); err != nil || string(pt) != "grant" {
			t.Fatalf("%s: exported key opened %q, %v", suite, pt, err)
		}
		priv.Wipe()
		if _, err := priv.ExportRecord(); err == nil {
			t.Fatalf("%s: a wiped key exported a record", suite)
		}
	}
}

func TestCheckSealedText(t *testing.T) {
	t.Parallel()
	priv, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
	env, err := crypto.SealTo(priv.Public(), crypto.GrantContext("u", "r"), []byte("x"))
	if err != nil {
		t.Fatal(err)
	}
	sym, _ := crypto.Seal(crypto.NewKey(), crypto.MessageContext("u", "m"), []byte("x"))
	cases := []struct {
		name string
		text string
		max  int
		want error
	}{
		{"sealed", env, 4096, nil},
		{"too long", env, 100, crypto.ErrMalformed},
		{"symmetric envelope", sym, 4096, crypto.ErrUnknownVersion},
		{"not base64", "%%%", 4096, crypto.ErrMalformed},
		{"empty", "", 4096, crypto.ErrMalformed},
	}
	for _, c := range cases {
		err := crypto.CheckSealedText(c.text, c.max)
		if (c.want == nil) != (err == nil) || (c.want != nil && !errors.Is(err, c.want)) {
			t.Errorf("%s: got %v; want %v", c.name, err, c.want)
		}
	}
}
