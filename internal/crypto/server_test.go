package crypto_test

import (
	"bytes"
	"encoding/json"
	"errors"
	"testing"

	"polydev/internal/crypto"
)

func TestAuthKeyHash(t *testing.T) {
	t.Parallel()
	auth := must(crypto.AuthKey{Key: crypto.NewKey()}.Text())
	other := must(crypto.AuthKey{Key: crypto.NewKey()}.Text())
	hash, salt, algo, err := crypto.HashAuthKey(auth)
	if err != nil {
		t.Fatal(err)
	}
	hash2, salt2, _, _ := crypto.HashAuthKey(auth)
	if bytes.Equal(salt, salt2) || bytes.Equal(hash, hash2) {
		t.Fatal("two hashes of one key share a salt or a value")
	}
	for _, tc := range []struct {
		name string
		key  string
		want bool
	}{
		{"right key", auth, true},
		{"other key", other, false},
		{"malformed key", "not base64", false},
		{"short key", crypto.EncodeText(make([]byte, 16)), false},
		{"empty", "", false},
	} {
		ok, err := crypto.VerifyAuthKey(tc.key, hash, salt, algo)
		if err != nil || ok != tc.want {
			t.Errorf("%s: VerifyAuthKey = %v, %v; want %v", tc.name, ok, err, tc.want)
		}
	}
	if _, _, _, err := crypto.HashAuthKey("AAAA"); !errors.Is(err, crypto.ErrMalformed) {
		t.Errorf("HashAuthKey(short) = %v; want ErrMalformed", err)
	}
	for _, bad := range []string{"", "argon2id$v=19$m=19456,t=2", "argon2id$v=19$m=99999999,t=2,p=1", "argon2i$v=19$m=19456,t=2,p=1",
		"argon2id$v=19$m=19456,t=2,p=1,x", "argon2id$v=19$m=019456,t=2,p=1"} {
		if _, err := crypto.VerifyAuthKey(auth, hash, salt, bad); !errors.Is(err, crypto.ErrUnsupportedKDF) {
			t.Errorf("VerifyAuthKey(algo %q) = %v; want ErrUnsupportedKDF", bad, err)
		}
	}
	dh, ds, da := crypto.DummyAuthHash()
	if ok, err := crypto.VerifyAuthKey(auth, dh, ds, da); ok || err != nil {
		t.Errorf("dummy hash matched: %v, %v", ok, err)
	}
}

func TestFakeKDFParams(t *testing.T) {
	t.Parallel()
	secret := bytes.Repeat([]byte{7}, 32)
	a, b := crypto.FakeKDFParams(secret, "a@example.test"), crypto.FakeKDFParams(secret, "a@example.test")
	c := crypto.FakeKDFParams(secret, "b@example.test")
	d := crypto.FakeKDFParams(bytes.Repeat([]byte{8}, 32), "a@example.test")
	ja, jb, jc := string(must(json.Marshal(a))), string(must(json.Marshal(b))), string(must(json.Marshal(c)))
	if ja != jb {
		t.Error("fake parameters differ between calls for one email")
	}
	if ja == jc || bytes.Equal(a.Salt, d.Salt) {
		t.Error("fake salts do not depend on the email and the secret")
	}
	real := crypto.DefaultKDFParams()
	real.Salt = a.Salt
	if string(must(json.Marshal(real))) != ja {
		t.Errorf("fake record %s does not have the default record's shape", ja)
	}
	if _, err := crypto.ParseKDFParams([]byte(ja)); err != nil {
		t.Errorf("fake record does not parse: %v", err)
	}
}
