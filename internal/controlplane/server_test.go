package controlplane_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/store"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

// start runs a real server on a loopback port and returns its base URL and
// a function that stops it and reports Run's error.
func start(t *testing.T) (string, func() error) {
	t.Helper()
	return startWith(t, sqliteStore(t), nil)
}

// sqliteStore opens a fresh, migrated SQLite store in a temp dir.
func sqliteStore(t testing.TB) store.Store {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "polydev.db"), sqlite.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// startWith runs a real server on a loopback port over st, logging to
// logw (nil: discard).
func startWith(t testing.TB, st store.Store, logw io.Writer) (string, func() error) {
	t.Helper()
	if logw == nil {
		logw = io.Discard
	}
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", Dev: true, ShutdownTimeout: 5 * time.Second,
		Store: st, SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32)},
		slog.New(slog.NewJSONHandler(logw, nil)), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	select {
	case a := <-addrc:
		stop := func() error { cancel(); return <-errc }
		t.Cleanup(func() { cancel() })
		return "http://" + a.String(), stop
	case err := <-errc:
		cancel()
		t.Fatalf("server did not start: %v", err)
	}
	return "", nil
}

func get(t *testing.T, url string) (*http.Response, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp, string(b)
}

func TestServesHealthAndWebApp(t *testing.T) {
	t.Parallel()
	base, stop := start(t)
	for _, tc := range []struct {
		path, contentType, body string
		status                  int
	}{
		{"/healthz", "application/json", `"status":"ok"`, 200},
		{"/readyz", "application/json", `"status":"ready"`, 200},
		{"/", "text/html", "<title>Polydev</title>", 200},
		{"/crypto/polydev-crypto.js", "text/javascript", "export async function deriveMasterKey", 200},
		{"/vendor/hpke.js", "text/javascript", "", 200},
		{"/test/crypto.test.mjs", "", "", 404},
		{"/vendor/package.json", "", "", 404},
	} {
		resp, body := get(t, base+tc.path)
		if resp.StatusCode != tc.status || !strings.HasPrefix(resp.Header.Get("Content-Type"), tc.contentType) || !strings.Contains(body, tc.body) {
			t.Errorf("GET %s: status %d, type %q; want %d, %q, body ∋ %q", tc.path, resp.StatusCode, resp.Header.Get("Content-Type"), tc.status, tc.contentType, tc.body)
		}
	}
	resp, _ := get(t, base+"/")
	if csp := resp.Header.Get("Content-Security-Policy"); !strings.Contains(csp, "default-src 'self'") || !strings.Contains(csp, "frame-ancestors 'none'") {
		t.Errorf("Content-Security-Policy = %q", csp)
	}
	if err := stop(); err != nil {
		t.Fatalf("graceful shutdown: %v", err)
	}
	if _, err := http.Get(base + "/healthz"); err == nil {
		t.Fatal("server still answers after shutdown")
	}
}

func TestConfigValidate(t *testing.T) {
	t.Parallel()
	for _, c := range []controlplane.Config{
		{Addr: "localhost", ShutdownTimeout: time.Second},
		{Addr: "127.0.0.1:0"},
		{Addr: "127.0.0.1:0", ShutdownTimeout: time.Second, SessionTTL: time.Hour, PreloginSecret: make([]byte, 32)}, // no store
	} {
		if c.Validate() == nil {
			t.Errorf("Validate(%+v) = nil; want an error", c)
		}
	}
}
