package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/sandbox"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

// fakeVMs is a test double of the login-VM manager (controlplane's
// LoginVMManager): it hands out VMs that exist only in its map. The
// control plane, its store and HTTP are real; this tests what `polydev
// link` sends and prints. The manager itself is tested with real VMs in
// internal/sandbox and internal/controlplane.
type fakeVMs struct {
	mu  sync.Mutex
	vms map[string]sandbox.Info
}

func (f *fakeVMs) Allocate(_ context.Context, o sandbox.Owner) (sandbox.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now()
	info := sandbox.Info{SessionID: o.SessionID, VMID: "0a1b2c3d4e", HostID: "h", Status: sandbox.StatusReady,
		BootedAt: now, ReadyAt: now, ExpiresAt: now.Add(10 * time.Minute)}
	f.vms[o.SessionID] = info
	return info, nil
}

func (f *fakeVMs) Get(id string) (sandbox.Info, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	info, ok := f.vms[id]
	if !ok {
		return info, sandbox.ErrNotFound
	}
	return info, nil
}

func (f *fakeVMs) Destroy(_ context.Context, id string) (sandbox.Report, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.vms[id]; !ok {
		return sandbox.Report{}, sandbox.ErrNotFound
	}
	delete(f.vms, id)
	return sandbox.Report{SessionID: id, Removed: []string{"process", "tap", "state_dir"}}, nil
}

// TestLink drives `polydev link` against a real control plane. It sets
// environment variables, so it does not run in parallel.
func TestLink(t *testing.T) {
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "p.db"), sqlite.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{1}, 32),
		LoginVMs: &fakeVMs{vms: map[string]sandbox.Info{}}, LoginVMHost: "h", LoginVMReconcileEvery: -1},
		slog.New(slog.DiscardHandler), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc, errc := make(chan net.Addr, 1), make(chan error, 1)
	go func() { errc <- srv.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	defer func() { cancel(); <-errc }()
	t.Setenv("POLYDEV_SERVER", "http://"+(<-addrc).String())
	t.Setenv("POLYDEV_CONFIG_DIR", t.TempDir())
	t.Setenv("POLYDEV_PASSWORD", "correct horse battery staple")

	if code, _, errOut := run("link", "start", "openai"); code != 1 || !strings.Contains(errOut, "not logged in") {
		t.Errorf("link start before login: code %d, stderr %q", code, errOut)
	}
	if code, _, errOut := run("account", "register", "--email", "ada@example.org"); code != 0 {
		t.Fatalf("register: %d %s", code, errOut)
	}
	code, out, errOut := run("link", "start", "openai", "--json")
	var s struct {
		ID     string `json:"login_vm_session_id"`
		Status string `json:"status"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &s) != nil || s.ID == "" || s.Status != "ready" {
		t.Fatalf("link start --json: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{[]string{"link", "start", "openai"}, 0, s.ID + "  openai     ready, destroyed at ", ""},
		{[]string{"link", "status"}, 0, s.ID, ""},
		{[]string{"link", "status", s.ID}, 0, "ready", ""},
		{[]string{"link", "start", "acme"}, 1, "", "unknown provider: use openai, anthropic or google"},
		{[]string{"link", "start"}, 2, "", "name one provider"},
		{[]string{"link", "stop"}, 2, "", "name the session id"},
		{[]string{"link", "stop", s.ID}, 0, "destroyed at", ""},
		{[]string{"link", "stop", s.ID}, 0, "destroyed", ""},
		{[]string{"link", "status"}, 0, "no live login VM", ""},
		{[]string{"link", "status", "00000000-0000-4000-8000-000000000000"}, 1, "", "no such login VM session"},
		{[]string{"link", "nope"}, 2, "", `unknown command "nope"`},
		{[]string{"link"}, 2, "", "Commands:"},
	} {
		code, out, errOut := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.errOut) {
			t.Errorf("polydev %v: code %d, stdout %q, stderr %q; want %d, stdout ∋ %q, stderr ∋ %q",
				tc.args, code, out, errOut, tc.code, tc.out, tc.errOut)
		}
	}
	if _, out, _ := run("link", "stop", s.ID); strings.Contains(out, "removed") {
		t.Errorf("a second stop reported removals: %q", out)
	}
}
