package controlplane_test

// Register and login throughput and latency over real HTTP on loopback, on
// both store backends (docs/performance.md):
//
//	go test ./internal/controlplane -run '^$' -bench . -benchtime 200x

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/crypto"
	"polydev/internal/store"
)

func benchBackends(b *testing.B, fn func(b *testing.B, st store.Store)) {
	b.Run("sqlite", func(b *testing.B) { fn(b, sqliteStore(b)) })
	b.Run("postgres", func(b *testing.B) {
		st, _, _ := postgresStore(b)
		fn(b, st)
	})
}

// registerBody is a well-formed registration without the client's KDF work
// (the server cannot tell): random auth key, envelopes under a random key.
func registerBody(b *testing.B, pub string) []byte {
	id := uuid.NewString()
	k := crypto.NewKey()
	wak, _ := crypto.Seal(k, crypto.AccountKeyContext(id), make([]byte, 32))
	wpk, _ := crypto.Seal(k, crypto.PrivateKeyContext(id), make([]byte, 35))
	auth, _ := crypto.AuthKey{Key: crypto.NewKey()}.Text()
	kdf, _ := json.Marshal(crypto.DefaultKDFParams())
	body, _ := json.Marshal(map[string]any{"user_id": id, "email": "b-" + id[:13] + "@example.org", "kdf": json.RawMessage(kdf),
		"auth_key": auth, "wrapped_account_key": wak, "wrapped_private_key": wpk, "public_key": pub})
	return body
}

// measure runs do b.N times over 4 concurrent clients and reports
// throughput and latency percentiles.
func measure(b *testing.B, do func(i int64) error) {
	var mu sync.Mutex
	var lat []time.Duration
	var n atomic.Int64
	b.SetParallelism(2) // 2 × GOMAXPROCS (2) = 4 concurrent clients
	start := time.Now()
	b.RunParallel(func(pb *testing.PB) {
		var mine []time.Duration
		for pb.Next() {
			t0 := time.Now()
			if err := do(n.Add(1)); err != nil {
				b.Error(err)
				return
			}
			mine = append(mine, time.Since(t0))
		}
		mu.Lock()
		lat = append(lat, mine...)
		mu.Unlock()
	})
	elapsed := time.Since(start)
	slices.Sort(lat)
	if len(lat) == 0 {
		return
	}
	pct := func(p float64) float64 { return float64(lat[int(p*float64(len(lat)-1))]) / 1e6 }
	b.ReportMetric(float64(len(lat))/elapsed.Seconds(), "req/s")
	b.ReportMetric(pct(0.50), "p50-ms")
	b.ReportMetric(pct(0.99), "p99-ms")
}

func post(base, path string, body []byte, want int) error {
	resp, err := http.Post(base+path, "application/json", bytes.NewReader(body))
	if err != nil {
		return err
	}
	resp.Body.Close()
	if resp.StatusCode != want {
		return fmt.Errorf("%s: %d; want %d", path, resp.StatusCode, want)
	}
	return nil
}

func BenchmarkRegister(b *testing.B) {
	benchBackends(b, func(b *testing.B, st store.Store) {
		base, _ := startWith(b, st, nil)
		priv, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
		pub := priv.Public().String()
		bodies := make([][]byte, b.N+1)
		for i := range bodies {
			bodies[i] = registerBody(b, pub)
		}
		b.ResetTimer()
		measure(b, func(i int64) error { return post(base, "/v1/auth/register", bodies[i], 201) })
	})
}

func BenchmarkLogin(b *testing.B) {
	benchBackends(b, func(b *testing.B, st store.Store) {
		base, _ := startWith(b, st, nil)
		priv, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
		body := registerBody(b, priv.Public().String())
		if err := post(base, "/v1/auth/register", body, 201); err != nil {
			b.Fatal(err)
		}
		var reg map[string]any
		json.Unmarshal(body, &reg)
		login, _ := json.Marshal(map[string]any{"email": reg["email"], "auth_key": reg["auth_key"]})
		b.ResetTimer()
		measure(b, func(int64) error { return post(base, "/v1/auth/login", login, 200) })
	})
}
