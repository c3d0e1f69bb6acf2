package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"

	"log/slog"
	"net"
	"os"
	"slices"
	"sync"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/sandbox"
	"polydev/internal/sandbox/qemu"
	"polydev/internal/sandbox/sandboxtest"
	"polydev/internal/store"
	"polydev/internal/testenv"
	"polydev/web"
)

// stubDriver is a sandbox.Driver test double: it starts no VMM. Everything
// around it is real — the Manager's state dirs, taps, cgroups, queue,
// lifetime and destroy, the recorder, the store and HTTP over loopback —
// so the API's logic is tested fast; TestLoginVMAPIWithQEMU runs the same
// path with real QEMU VMs. Its "process" is a channel: Start registers
// its undo step as a process would, WaitReady answers at once (or fails
// when told to), Stop closes it.
type stubDriver struct {
	mu    sync.Mutex
	fail  bool
	alive map[string]chan struct{}
}

func (d *stubDriver) Name() string { return "stub" }

func (d *stubDriver) Start(_ context.Context, m *sandbox.Machine, cl *sandbox.Cleanup) error {
	done := make(chan struct{})
	d.mu.Lock()
	if d.alive == nil {
		d.alive = map[string]chan struct{}{}
	}
	d.alive[m.ID] = done
	d.mu.Unlock()
	m.Done = done
	cl.Add(sandbox.ResourceProcess, func(ctx context.Context) (bool, error) { return d.stop(m.ID), nil })
	return nil
}

func (d *stubDriver) stop(id string) bool {
	d.mu.Lock()
	defer d.mu.Unlock()
	done, ok := d.alive[id]
	if ok {
		close(done)
		delete(d.alive, id)
	}
	return ok
}

func (d *stubDriver) WaitReady(ctx context.Context, m *sandbox.Machine) error {
	d.mu.Lock()
	fail := d.fail
	d.mu.Unlock()
	if fail {
		return errors.New("stub: the guest did not come up")
	}
	return nil
}

func (d *stubDriver) Inspect(context.Context, *sandbox.Machine) (sandbox.State, error) {
	return sandbox.State{Running: true, Detail: "stub"}, nil
}

func (d *stubDriver) Stop(_ context.Context, m *sandbox.Machine) error { d.stop(m.ID); return nil }

func (d *stubDriver) setFail(f bool) { d.mu.Lock(); d.fail = f; d.mu.Unlock() }

const testHost = "test-host"

// vmEnv is a control plane with a login-VM manager over one store.
type vmEnv struct {
	st   store.Store
	mgr  *sandbox.Manager
	root string
	base string
	logs *bytes.Buffer
}

// startVMServer runs a Manager over drv (state under a fresh root) and a
// control plane with it, over loopback.
func startVMServer(t testing.TB, st store.Store, drv sandbox.Driver, img sandbox.Image, tune func(*sandbox.Config, *controlplane.Config)) *vmEnv {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "login VM tests need root (tap devices, cgroups)")
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	log := slog.New(slog.NewJSONHandler(syncWriter{&logs, &mu}, nil))
	root := t.TempDir()
	mcfg := sandbox.Config{Root: root, HostID: testHost, Image: img, MaxVMs: 2, PoolSize: -1, MemoryMiB: 256,
		CgroupParent: "polydev-test-api", ReconcileEvery: -1}
	ccfg := controlplane.Config{Addr: "127.0.0.1:0", Dev: true, ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32),
		LoginVMHost: testHost, LoginVMWait: 2 * time.Minute, LoginVMReconcileEvery: -1}
	if tune != nil {
		tune(&mcfg, &ccfg)
	}
	mgr, err := sandbox.NewManager(context.Background(), mcfg, drv, controlplane.NewVMRecorder(st, log), log)
	if err != nil {
		t.Fatalf("NewManager: %v", err)
	}
	t.Cleanup(func() { mgr.Close(context.Background()) })
	ccfg.LoginVMs = mgr
	ccfg.LoginVMLifetime = mcfg.MaxLifetime
	srv, err := controlplane.New(ccfg, log, web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	t.Cleanup(func() { cancel(); <-errc })
	select {
	case a := <-addrc:
		return &vmEnv{st: st, mgr: mgr, root: root, base: "http://" + a.String(), logs: &logs}
	case err := <-errc:
		t.Fatalf("server did not start: %v", err)
	}
	return nil
}

// signedIn registers and logs in a new user, returning their client.
func signedIn(t *testing.T, base, email string) (*apiClient, string) {
	t.Helper()
	c := &apiClient{t: t, base: base}
	a := newAccount(t, email, "correct horse battery staple")
	if s, out, _ := c.call("POST", "/v1/auth/register", a.body); s != 201 {
		t.Fatalf("register: %d %v", s, out)
	}
	s, out := loginAs(t, c, email, a.password)
	if s != 200 {
		t.Fatalf("login: %d %v", s, out)
	}
	c.token = out["token"].(string)
	return c, a.userID
}

// stateDirs lists what is left under the manager's state root.
func stateDirs(t *testing.T, root string) []string {
	t.Helper()
	ents, err := os.ReadDir(root)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for _, e := range ents {
		names = append(names, e.Name())
	}
	return names
}

// auditEvent finds the user's newest event named name.
func auditEvent(t *testing.T, st store.Store, user, name string) (map[string]any, bool) {
	t.Helper()
	evs, err := st.AuditEvents(context.Background(), user, 100)
	if err != nil {
		t.Fatal(err)
	}
	for _, e := range evs {
		if e.Event == name {
			var d map[string]any
			json.Unmarshal([]byte(e.Detail), &d)
			return d, true
		}
	}
	return nil, false
}

func TestLoginVMAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		drv := &stubDriver{}
		env := startVMServer(t, st, drv, sandbox.Image{Kernel: "/stub/kernel"}, nil)
		ada, adaID := signedIn(t, env.base, "ada@example.org")
		bob, _ := signedIn(t, env.base, "bob@example.org")

		s, out, _ := ada.call("POST", "/v1/accounts/openai/link/start", nil)
		id, _ := out["login_vm_session_id"].(string)
		if s != 201 || id == "" || out["status"] != "ready" || out["provider"] != "openai" || out["ready_at"] == nil || out["expires_at"] == nil {
			t.Fatalf("link/start: %d %v; want 201, ready", s, out)
		}
		row, err := st.VMSession(context.Background(), adaID, id)
		if err != nil || row.Status != store.VMReady || row.HostID != testHost || row.VMID == "" || row.ReadyAt.IsZero() || row.BootingAt.IsZero() {
			t.Errorf("the session's row: %+v, %v; want ready on %s with a vm id and times", row, err, testHost)
		}
		// One live VM per user and provider: starting again returns it.
		if s, again, _ := ada.call("POST", "/v1/accounts/openai/link/start", nil); s != 200 || again["login_vm_session_id"] != id {
			t.Errorf("second link/start: %d %v; want 200 with the same session", s, again)
		}
		if s, out, _ := ada.call("POST", "/v1/accounts/acme/link/start", nil); s != 404 || errCode(out) != "unknown_provider" {
			t.Errorf("link/start for an unknown provider: %d %v", s, out)
		}
		if s, out, _ := (&apiClient{t: t, base: env.base}).call("POST", "/v1/accounts/openai/link/start", nil); s != 401 {
			t.Errorf("link/start without a session: %d %v; want 401", s, out)
		}
		if s, got, _ := ada.call("GET", "/v1/accounts/link/sessions/"+id, nil); s != 200 || got["status"] != "ready" {
			t.Errorf("GET: %d %v", s, got)
		}
		if s, list, _ := ada.call("GET", "/v1/accounts/link", nil); s != 200 || len(list["sessions"].([]any)) != 1 {
			t.Errorf("list: %d %v; want one session", s, list)
		}
		if s, _, _ := ada.call("PUT", "/v1/accounts/link/sessions/"+id, nil); s != 405 {
			t.Errorf("PUT: %d; want 405", s)
		}

		// Another user sees nothing of it and cannot destroy it.
		for _, m := range []string{"GET", "DELETE"} {
			if s, out, _ := bob.call(m, "/v1/accounts/link/sessions/"+id, nil); s != 404 {
				t.Errorf("bob %s ada's session: %d %v; want 404", m, s, out)
			}
		}
		if s, list, _ := bob.call("GET", "/v1/accounts/link", nil); s != 200 || len(list["sessions"].([]any)) != 0 {
			t.Errorf("bob's list: %d %v; want none", s, list)
		}
		if _, err := env.mgr.Get(id); err != nil {
			t.Fatalf("bob's attempts destroyed ada's vm: %v", err)
		}

		// Destroy: what was removed, in the answer and in the audit log.
		s, del, _ := ada.call("DELETE", "/v1/accounts/link/sessions/"+id, nil)
		removed := del["removed"]
		for _, kind := range []string{sandbox.ResourceProcess, sandbox.ResourceTap, sandbox.ResourceCgroup, sandbox.ResourceStateDir} {
			if s != 200 || del["status"] != "destroyed" || !slices.Contains(toStrings(removed), kind) {
				t.Errorf("DELETE: %d %v; want destroyed, removed ∋ %s", s, del, kind)
			}
		}
		if s, del2, _ := ada.call("DELETE", "/v1/accounts/link/sessions/"+id, nil); s != 200 || del2["status"] != "destroyed" || del2["removed"] != nil {
			t.Errorf("second DELETE: %d %v; want 200 destroyed, nothing removed", s, del2)
		}
		if d, ok := auditEvent(t, st, adaID, "login_vm_destroyed"); !ok || d["login_vm_session_id"] != id || d["reason"] != "destroy" ||
			!slices.Equal(toStrings(d["removed"]), toStrings(removed)) {
			t.Errorf("audit login_vm_destroyed: %v (%v); want the session and removed %v", d, ok, removed)
		}
		if _, ok := auditEvent(t, st, adaID, "login_vm_start"); !ok {
			t.Error("no login_vm_start audit event")
		}
		if row, _ := st.VMSession(context.Background(), adaID, id); row == nil || row.Status != store.VMDestroyed || row.DestroyedAt.IsZero() {
			t.Errorf("row after destroy: %+v", row)
		}
		if left := stateDirs(t, env.root); len(left) != 0 {
			t.Errorf("state root after destroy: %v; want empty", left)
		}
		// The slot is free again: a new session.
		if s, out, _ := ada.call("POST", "/v1/accounts/openai/link/start", nil); s != 201 || out["login_vm_session_id"] == id {
			t.Errorf("link/start after destroy: %d %v; want a new session", s, out)
		}

		// A boot failure: 503, the session ends destroyed, nothing left.
		drv.setFail(true)
		if s, out, h := ada.call("POST", "/v1/accounts/google/link/start", nil); s != 503 || errCode(out) != "vm_failed" || h.Get("Retry-After") == "" {
			t.Errorf("link/start with a failing boot: %d %v; want 503 vm_failed with Retry-After", s, out)
		}
		drv.setFail(false)
		live, _ := st.LiveVMSessions(context.Background(), adaID)
		if len(live) != 1 || live[0].Provider != "openai" {
			t.Errorf("live sessions after a failed boot: %+v; want only the openai one", live)
		}
	})
}

func toStrings(v any) []string {
	var out []string
	for _, x := range v.([]any) {
		out = append(out, x.(string))
	}
	return out
}

// TestLoginVMCapacity: with every slot taken, link/start waits
// LoginVMWait and answers 503 capacity with Retry-After.
func TestLoginVMCapacity(t *testing.T) {
	t.Parallel()
	env := startVMServer(t, sqliteStore(t), &stubDriver{}, sandbox.Image{Kernel: "/stub/kernel"},
		func(m *sandbox.Config, c *controlplane.Config) { m.MaxVMs = 1; c.LoginVMWait = 200 * time.Millisecond })
	ada, adaID := signedIn(t, env.base, "ada@example.org")
	if s, out, _ := ada.call("POST", "/v1/accounts/openai/link/start", nil); s != 201 {
		t.Fatalf("first link/start: %d %v", s, out)
	}
	s, out, h := ada.call("POST", "/v1/accounts/anthropic/link/start", nil)
	if s != 503 || errCode(out) != "capacity" || h.Get("Retry-After") != "30" {
		t.Errorf("link/start at capacity: %d %v, Retry-After %q; want 503 capacity, 30", s, out, h.Get("Retry-After"))
	}
	live, _ := env.st.LiveVMSessions(context.Background(), adaID)
	if len(live) != 1 {
		t.Errorf("live sessions after the refusal: %d; want 1", len(live))
	}
}

// TestLoginVMLifetime: a VM is destroyed at the end of its lifetime and
// the session says so.
func TestLoginVMLifetime(t *testing.T) {
	t.Parallel()
	env := startVMServer(t, sqliteStore(t), &stubDriver{}, sandbox.Image{Kernel: "/stub/kernel"},
		func(m *sandbox.Config, c *controlplane.Config) { m.MaxLifetime = 300 * time.Millisecond })
	ada, adaID := signedIn(t, env.base, "ada@example.org")
	_, out, _ := ada.call("POST", "/v1/accounts/openai/link/start", nil)
	id, _ := out["login_vm_session_id"].(string)
	deadline := time.Now().Add(30 * time.Second)
	for {
		_, got, _ := ada.call("GET", "/v1/accounts/link/sessions/"+id, nil)
		if got["status"] == "destroyed" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("session still %v after its lifetime", got["status"])
		}
		time.Sleep(50 * time.Millisecond)
	}
	// The audit event follows the status change.
	for {
		d, ok := auditEvent(t, env.st, adaID, "login_vm_destroyed")
		if ok {
			if d["reason"] != "lifetime" {
				t.Errorf("audit event: %v; want reason lifetime", d)
			}
			break
		}
		if time.Now().After(deadline) {
			t.Fatal("no login_vm_destroyed audit event after the lifetime")
		}
		time.Sleep(20 * time.Millisecond)
	}
	row, _ := env.st.VMSession(context.Background(), adaID, id)
	if row.Status != store.VMDestroyed || row.EndedAt.IsZero() {
		t.Errorf("row after the lifetime: %+v; want failed then destroyed", row)
	}
}

// TestLoginVMReconcile: a live session of this host that the manager does
// not know (its VM was lost with a crashed manager) is closed, at start-up
// by the reconcile loop and on read.
func TestLoginVMReconcile(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		// The user and the stale sessions exist before the server starts.
		u := &store.User{Email: "ada@example.org", KDFParams: []byte(`{}`), AuthHash: []byte{1}, AuthSalt: []byte{2},
			AuthAlgo: "x", WrappedAccountKey: "w", WrappedPrivateKey: "p", PublicKey: "k"}
		if err := st.CreateUser(context.Background(), u); err != nil {
			t.Fatal(err)
		}
		old := time.Now().Add(-time.Hour)
		stale := &store.VMSession{Provider: "openai", HostID: testHost, CreatedAt: old}
		elsewhere := &store.VMSession{Provider: "google", HostID: "other-host", CreatedAt: old}
		for _, v := range []*store.VMSession{stale, elsewhere} {
			if err := st.CreateVMSession(context.Background(), u.ID, v); err != nil {
				t.Fatal(err)
			}
		}
		startVMServer(t, st, &stubDriver{}, sandbox.Image{Kernel: "/stub/kernel"},
			func(_ *sandbox.Config, c *controlplane.Config) { c.LoginVMReconcileEvery = time.Hour })
		deadline := time.Now().Add(30 * time.Second)
		for {
			row, err := st.VMSession(context.Background(), u.ID, stale.ID)
			if err == nil && row.Status == store.VMDestroyed {
				if row.EndedAt.IsZero() {
					t.Errorf("the lost session was not marked failed first: %+v", row)
				}
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("stale session still %+v, %v", row, err)
			}
			time.Sleep(20 * time.Millisecond)
		}
		if row, _ := st.VMSession(context.Background(), u.ID, elsewhere.ID); row.Status != store.VMBooting {
			t.Errorf("another host's session was touched: %+v", row)
		}
		for {
			if _, ok := auditEvent(t, st, u.ID, "login_vm_lost"); ok {
				break
			}
			if time.Now().After(deadline) {
				t.Fatal("no login_vm_lost audit event")
			}
			time.Sleep(20 * time.Millisecond)
		}
	})
}

// TestLoginVMAPIWithQEMU runs link/start, GET and DELETE with real QEMU
// microVMs (software emulation where KVM is not usable) on both backends.
func TestLoginVMAPIWithQEMU(t *testing.T) {
	t.Parallel()
	img := sandboxtest.Image(t)
	backends(t, func(t *testing.T, st store.Store) {
		drv, err := qemu.New(context.Background(), qemu.Options{ProbeKernel: img.Kernel})
		if err != nil {
			testenv.Missing(t, "qemu driver: %v", err)
		}
		env := startVMServer(t, st, drv, img, nil)
		ada, adaID := signedIn(t, env.base, "ada@example.org")
		s, out, _ := ada.call("POST", "/v1/accounts/anthropic/link/start", nil)
		id, _ := out["login_vm_session_id"].(string)
		if s != 201 || out["status"] != "ready" {
			t.Fatalf("link/start: %d %v\n%s", s, out, env.logs)
		}
		info, err := env.mgr.Get(id)
		if err != nil || info.PID == 0 {
			t.Fatalf("manager view: %+v, %v", info, err)
		}
		if s, got, _ := ada.call("GET", "/v1/accounts/link/sessions/"+id, nil); s != 200 || got["status"] != "ready" {
			t.Errorf("GET: %d %v", s, got)
		}
		s, del, _ := ada.call("DELETE", "/v1/accounts/link/sessions/"+id, nil)
		if s != 200 || del["status"] != "destroyed" || !slices.Contains(toStrings(del["removed"]), sandbox.ResourceProcess) {
			t.Errorf("DELETE: %d %v", s, del)
		}
		if sandbox.ProcessAlive(info.PID) {
			t.Errorf("qemu process %d alive after DELETE", info.PID)
		}
		if left := stateDirs(t, env.root); len(left) != 0 {
			t.Errorf("state root after destroy: %v", left)
		}
		if d, ok := auditEvent(t, st, adaID, "login_vm_destroyed"); !ok || !slices.Contains(toStrings(d["removed"]), sandbox.ResourceOverlay) {
			t.Errorf("audit event: %v (%v); want removed ∋ overlay", d, ok)
		}
	})
}
