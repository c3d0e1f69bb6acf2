package controlplane_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/controlplane"
	"polydev/internal/store"
	"polydev/web"
)

// fakeClock is a settable clock for servers under test.
type fakeClock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *fakeClock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *fakeClock) add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// startClocked runs a server over st on clk with the given session cache
// lifetime and returns its base URL.
func startClocked(t *testing.T, st store.Store, clk *fakeClock, cache time.Duration) string {
	t.Helper()
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", Dev: true, ShutdownTimeout: 5 * time.Second,
		Store: st, SessionTTL: time.Hour, SessionCache: cache, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32), Now: clk.now},
		slog.New(slog.NewJSONHandler(io.Discard, nil)), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	t.Cleanup(cancel)
	addrc := make(chan net.Addr, 1)
	go srv.Run(ctx, func(a net.Addr) { addrc <- a })
	return "http://" + (<-addrc).String()
}

// TestSessionCache: the revocations a server makes take effect there at
// once, cache or not; another server on the same database sees them within
// its session cache's lifetime, or at once with the cache off.
func TestSessionCache(t *testing.T) {
	st := sqliteStore(t)
	clk := &fakeClock{t: time.Now().UTC()}
	a := startClocked(t, st, clk, 2*time.Second)
	b := startClocked(t, st, clk, 2*time.Second)
	uncached := startClocked(t, st, clk, -1)

	acct := newAccount(t, uuid.NewString()+"@example.com", "correct horse battery staple")
	reg := &apiClient{t: t, base: a}
	if s, o, _ := reg.call("POST", "/v1/auth/register", acct.body); s != 201 {
		t.Fatalf("register: %d %v", s, o)
	}
	login := func() string {
		t.Helper()
		s, o := loginAs(t, &apiClient{t: t, base: a}, acct.email, acct.password)
		if s != 200 {
			t.Fatalf("login: %d %v", s, o)
		}
		return o["token"].(string)
	}
	me := func(base, token string) int {
		t.Helper()
		s, _, _ := (&apiClient{t: t, base: base, token: token}).call("GET", "/v1/auth/me", nil)
		return s
	}
	one, two := login(), login()
	for _, base := range []string{a, b, uncached} {
		for _, tok := range []string{one, two} {
			if s := me(base, tok); s != 200 {
				t.Fatalf("a fresh session: %d", s)
			}
		}
	}

	// Logout on a: refused at once on a and where nothing is cached; b
	// still has it cached, for at most its cache's lifetime.
	if s, _, _ := (&apiClient{t: t, base: a, token: one}).call("POST", "/v1/auth/logout", nil); s != 204 {
		t.Fatalf("logout: %d", s)
	}
	if s := me(a, one); s != 401 {
		t.Errorf("the logged-out session on the server that revoked it: %d; want 401", s)
	}
	if s := me(uncached, one); s != 401 {
		t.Errorf("the logged-out session on a server without a cache: %d; want 401", s)
	}
	if s := me(b, one); s != 200 {
		t.Errorf("the logged-out session on another server, within its cache lifetime: %d; want 200 (cached)", s)
	}
	clk.add(2 * time.Second)
	if s := me(b, one); s != 401 {
		t.Errorf("the logged-out session on another server after its cache lifetime: %d; want 401", s)
	}
	// The other session is unaffected, everywhere.
	for _, base := range []string{a, b, uncached} {
		if s := me(base, two); s != 200 {
			t.Errorf("the other session after a logout: %d; want 200", s)
		}
	}
}
