package runc_test

import (
	"context"
	"io"
	"net/http/httptest"
	"strings"
	"testing"

	"polydev/internal/metrics"
	"polydev/internal/runtime/runc"
)

// /metrics reports the pool's size, checkouts, waits and failures in the
// Prometheus text format.
func TestMetrics(t *testing.T) {
	p := newPool(t, runc.Config{})
	reg := metrics.NewRegistry()
	reg.MustRegister(p.Collector())
	ctx := context.Background()
	l, err := p.Checkout(ctx, "anthropic", "u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(ctx, l, echoTask("u", "", 0, "x")); err != nil {
		t.Fatal(err)
	}
	l.Release()
	srv := httptest.NewServer(metrics.Handler(reg))
	defer srv.Close()
	resp, err := srv.Client().Get(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	body, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if ct := resp.Header.Get("Content-Type"); !strings.HasPrefix(ct, "text/plain; version=0.0.4") {
		t.Errorf("content type: got %q", ct)
	}
	for _, want := range []string{
		`polydev_runtime_checkouts_total{kind="cold",provider="anthropic"} 1`,
		`polydev_runtime_pool_containers{provider="anthropic",state="sticky"} 1`,
		`polydev_runtime_pool_containers{provider="anthropic",state="idle"} 0`,
		`polydev_runtime_pool_max_containers{provider="anthropic"} 128`,
		`polydev_runtime_checkout_wait_seconds_count{provider="anthropic"} 1`,
		`polydev_runtime_container_start_seconds_count{provider="anthropic"} 1`,
	} {
		if !strings.Contains(string(body), want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
