package controlplane_test

// What the control plane adds to a login VM's allocation and destruction:
// link/start and DELETE over loopback HTTP on both store backends, with a
// real Manager whose warm pool is never empty because its driver is the
// test double stubDriver (no VMM; docs/performance.md):
//
//	go test ./internal/controlplane -run '^$' -bench LoginVM -benchtime 200x
//
// The VMs' own allocation, boot and destroy times are `polydev bench vm`'s.

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/http"
	"slices"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/sandbox"
	"polydev/internal/store"
)

func BenchmarkLoginVMStartDestroy(b *testing.B) {
	benchBackends(b, func(b *testing.B, st store.Store) {
		env := startVMServer(b, st, &stubDriver{}, sandbox.Image{Kernel: "/stub/kernel"},
			func(m *sandbox.Config, _ *controlplane.Config) { m.PoolSize = 2; m.MaxVMs = 4 })
		priv, _ := crypto.GenerateKeyPair(crypto.DefaultSuite)
		body := registerBody(b, priv.Public().String())
		if err := post(env.base, "/v1/auth/register", body, 201); err != nil {
			b.Fatal(err)
		}
		var reg map[string]any
		json.Unmarshal(body, &reg)
		login, _ := json.Marshal(map[string]any{"email": reg["email"], "auth_key": reg["auth_key"]})
		resp, err := http.Post(env.base+"/v1/auth/login", "application/json", bytes.NewReader(login))
		if err != nil {
			b.Fatal(err)
		}
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		token, _ := out["token"].(string)
		call := func(method, path string, want int) (map[string]any, error) {
			req, _ := http.NewRequest(method, env.base+path, nil)
			req.Header.Set("Authorization", "Bearer "+token)
			resp, err := http.DefaultClient.Do(req)
			if err != nil {
				return nil, err
			}
			defer resp.Body.Close()
			var m map[string]any
			json.NewDecoder(resp.Body).Decode(&m)
			if resp.StatusCode != want {
				return nil, fmt.Errorf("%s %s: %d %v; want %d", method, path, resp.StatusCode, m, want)
			}
			return m, nil
		}
		var starts, destroys []time.Duration
		b.ResetTimer()
		for range b.N {
			t0 := time.Now()
			s, err := call("POST", "/v1/accounts/openai/link/start", 201)
			if err != nil {
				b.Fatal(err)
			}
			t1 := time.Now()
			if _, err := call("DELETE", "/v1/accounts/link/sessions/"+s["login_vm_session_id"].(string), 200); err != nil {
				b.Fatal(err)
			}
			starts, destroys = append(starts, t1.Sub(t0)), append(destroys, time.Since(t1))
		}
		b.StopTimer()
		pct := func(l []time.Duration, p float64) float64 {
			slices.Sort(l)
			return float64(l[int(p*float64(len(l)-1))]) / 1e6
		}
		b.ReportMetric(pct(starts, 0.50), "start-p50-ms")
		b.ReportMetric(pct(starts, 0.99), "start-p99-ms")
		b.ReportMetric(pct(destroys, 0.50), "destroy-p50-ms")
		b.ReportMetric(pct(destroys, 0.99), "destroy-p99-ms")
	})
}
