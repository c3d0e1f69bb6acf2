package crypto_test

import (
	"errors"
	"testing"

	"polydev/internal/crypto"
)

func TestSealedTextSuite(t *testing.T) {
	t.Parallel()
	for _, suite := range crypto.Suites {
		priv, err := crypto.GenerateKeyPair(suite)
		if err != nil {
			t.Fatal(err)
		}
		ctx := crypto.ProviderTokenContext("00000000-0000-4000-8000-000000000001", "openai")
		env, err := crypto.SealTo(priv.Public(), ctx, []byte("sk-test"))
		if err != nil {
			t.Fatal(err)
		}
		if got, err := crypto.SealedTextSuite(env, 4096); err != nil || got != suite {
			t.Errorf("%s: SealedTextSuite = %v, %v; want the suite", suite, got, err)
		}
		if _, err := crypto.SealedTextSuite(env, 16); !errors.Is(err, crypto.ErrMalformed) {
			t.Errorf("%s: over the size limit: %v; want ErrMalformed", suite, err)
		}
		b, _ := crypto.DecodeText(env)
		if _, err := crypto.SealedTextSuite(crypto.EncodeText(b[:20]), 4096); err == nil {
			t.Errorf("%s: a truncated envelope passed", suite)
		}
	}
	key := crypto.NewKey()
	sym, err := crypto.WrapKey(key, crypto.AccountKeyContext("00000000-0000-4000-8000-000000000001"), crypto.NewKey())
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"", "not base64!", sym} {
		if _, err := crypto.SealedTextSuite(bad, 4096); err == nil {
			t.Errorf("SealedTextSuite(%.20q) passed", bad)
		}
	}
}
