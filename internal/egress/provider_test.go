package egress_test

import (
	"context"
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"polydev/internal/egress/egresstest"
	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
)

// TestProvidersStreamThroughTheirPort runs every provider adapter, built
// with the egress client of one port, against the provider emulator — over
// plain HTTP (absolute-form through the proxy) and HTTPS (a CONNECT
// tunnel) — and checks that each streamed answer arrives whole and that
// the proxy served it on that port and no other.
func TestProvidersStreamThroughTheirPort(t *testing.T) {
	t.Parallel()
	const key = "sk-egress-provider-test"
	emu := emulator.New(emulator.Options{Keys: []string{key}})
	t.Cleanup(func() { emu.Close() })
	plain := httptest.NewServer(emu.Handler())
	t.Cleanup(plain.Close)
	tlsSrv := httptest.NewTLSServer(emu.Handler())
	t.Cleanup(tlsSrv.Close)

	up := egresstest.Start(t, 3)
	cfg := up.Config()
	cfg.TLS = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig.Clone()
	p := newProxy(t, cfg)

	for i, name := range registry.Names {
		port := up.Base + i
		for _, root := range []string{plain.URL, tlsSrv.URL} {
			before := map[int]int{}
			for q := up.Base; q < up.Base+up.Size; q++ {
				before[q] = up.Hits(q)
			}
			base := emulator.BaseURL(root, name)
			if name == provider.Google {
				base += "/v1beta" // the adapter is plain HTTP and takes the versioned root
			}
			prov, err := registry.New(name, provider.Config{BaseURL: base, HTTPClient: p.Client(port)})
			if err != nil {
				t.Fatal(err)
			}
			ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
			s, err := prov.Stream(ctx, provider.Credential{APIKey: key}, provider.Request{Model: "test-model",
				Messages: []provider.Message{{Role: provider.RoleUser, Content: "hello through the egress"}}})
			if err != nil {
				cancel()
				t.Fatalf("%s via %s: Stream: %v", name, root, err)
			}
			var text strings.Builder
			var finish string
			for {
				c, err := s.Next()
				if errors.Is(err, io.EOF) {
					break
				}
				if err != nil {
					t.Fatalf("%s via %s: Next: %v", name, root, err)
				}
				text.WriteString(c.Text)
				if c.FinishReason != "" {
					finish = c.FinishReason
				}
			}
			s.Close()
			cancel()
			if text.Len() == 0 || finish == "" {
				t.Errorf("%s via %s: answer %q, finish %q; want a whole answer", name, root, text.String(), finish)
			}
			for q, n := range before {
				if got := up.Hits(q); q == port && got <= n || q != port && got != n {
					t.Errorf("%s via %s on port %d: port %d went from %d to %d requests", name, root, port, q, n, got)
				}
			}
		}
	}
}
