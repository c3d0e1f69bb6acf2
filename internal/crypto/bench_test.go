package crypto_test

// Benchmarks behind the figures in docs/crypto.md §10:
//
//	go test ./internal/crypto -run '^$' -bench . -benchtime 2s

import (
	"fmt"
	"testing"

	"polydev/internal/crypto"
)

func BenchmarkDeriveMasterKey(b *testing.B) {
	for _, p := range []crypto.KDFParams{crypto.DefaultKDFParams(), crypto.DefaultPBKDF2Params()} {
		name := p.Algorithm
		if p.Algorithm == crypto.Argon2id {
			name = fmt.Sprintf("%s-m%dMiB-t%d-p%d", p.Algorithm, p.MemoryKiB/1024, p.Iterations, p.Parallelism)
		} else {
			name = fmt.Sprintf("%s-i%d", p.Algorithm, p.Iterations)
		}
		b.Run(name, func(b *testing.B) {
			for b.Loop() {
				k, err := crypto.DeriveMasterKey([]byte("correct horse battery staple"), p)
				if err != nil {
					b.Fatal(err)
				}
				k.Wipe()
			}
		})
	}
}

var sizes = []int{1 << 10, 4 << 10, 64 << 10}

func BenchmarkSymmetric(b *testing.B) {
	key := crypto.NewKey()
	ctx := crypto.MessageContext("0b6a3c1e-5d2f-4a7b-9c8d-1e2f3a4b5c6d", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
	for _, n := range sizes {
		pt := make([]byte, n)
		env, _ := crypto.Seal(key, ctx, pt)
		b.Run(fmt.Sprintf("seal-%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := crypto.Seal(key, ctx, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("open-%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				if _, err := crypto.Open(key, ctx, env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run(fmt.Sprintf("seal+open-%dKiB", n>>10), func(b *testing.B) {
			b.SetBytes(int64(n))
			for b.Loop() {
				e, err := crypto.Seal(key, ctx, pt)
				if err != nil {
					b.Fatal(err)
				}
				if _, err := crypto.Open(key, ctx, e); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkSealed(b *testing.B) {
	ctx := crypto.ProviderTokenContext("0b6a3c1e-5d2f-4a7b-9c8d-1e2f3a4b5c6d", "openai")
	pt := make([]byte, 256) // a provider token with its metadata
	for _, s := range crypto.Suites {
		priv, err := crypto.GenerateKeyPair(s)
		if err != nil {
			b.Fatal(err)
		}
		pub := priv.Public()
		env, _ := crypto.SealTo(pub, ctx, pt)
		b.Run("seal-"+s.Name, func(b *testing.B) {
			for b.Loop() {
				if _, err := crypto.SealTo(pub, ctx, pt); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("open-"+s.Name, func(b *testing.B) {
			for b.Loop() {
				if _, err := crypto.OpenSealed(priv, ctx, env); err != nil {
					b.Fatal(err)
				}
			}
		})
		b.Run("keygen-"+s.Name, func(b *testing.B) {
			for b.Loop() {
				if _, err := crypto.GenerateKeyPair(s); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

func BenchmarkWrapKey(b *testing.B) {
	wk, k := crypto.NewKey(), crypto.NewKey()
	ctx := crypto.AccountKeyContext("0b6a3c1e-5d2f-4a7b-9c8d-1e2f3a4b5c6d")
	for b.Loop() {
		w, err := crypto.WrapKey(wk, ctx, k)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := crypto.UnwrapKey(wk, ctx, w); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkParsePublicKey(b *testing.B) {
	for _, s := range crypto.Suites {
		priv, _ := crypto.GenerateKeyPair(s)
		raw := priv.Public().Bytes()
		b.Run(s.Name, func(b *testing.B) {
			for b.Loop() {
				if _, err := crypto.ParsePublicKeyBytes(raw); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}

// BenchmarkSymmetricBinary is the envelope without its text form: the
// cryptography alone.
func BenchmarkSymmetricBinary(b *testing.B) {
	key := crypto.NewKey()
	ctx := crypto.MessageContext("0b6a3c1e-5d2f-4a7b-9c8d-1e2f3a4b5c6d", "a1b2c3d4-e5f6-4a7b-8c9d-0e1f2a3b4c5d")
	pt := make([]byte, 4<<10)
	b.SetBytes(int64(len(pt)))
	for b.Loop() {
		e, err := crypto.SealBytes(key, ctx, pt)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := crypto.OpenBytes(key, ctx, e); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkVerifyAuthKey is the server's cost per login attempt.
func BenchmarkVerifyAuthKey(b *testing.B) {
	auth, _ := crypto.AuthKey{Key: crypto.NewKey()}.Text()
	hash, salt, algo, _ := crypto.HashAuthKey(auth)
	for b.Loop() {
		if ok, err := crypto.VerifyAuthKey(auth, hash, salt, algo); !ok || err != nil {
			b.Fatal(ok, err)
		}
	}
}
