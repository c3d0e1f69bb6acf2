package sandbox_test

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"polydev/internal/sandbox"
	"polydev/internal/sandbox/qemu"
	"polydev/internal/sandbox/sandboxtest"
)

// recorder keeps what the Manager reports.
type recorder struct {
	mu      sync.Mutex
	status  map[string][]sandbox.Status
	removed []sandbox.Report
}

func (r *recorder) Status(_ context.Context, t sandbox.Transition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.status == nil {
		r.status = map[string][]sandbox.Status{}
	}
	if t.At.IsZero() || t.VMID == "" {
		return fmt.Errorf("transition %+v lacks time or vm id", t)
	}
	r.status[t.SessionID] = append(r.status[t.SessionID], t.Status)
	return nil
}

func (r *recorder) Removed(_ context.Context, rep sandbox.Report) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	r.removed = append(r.removed, rep)
	return nil
}

func (r *recorder) statuses(sid string) string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var s []string
	for _, st := range r.status[sid] {
		s = append(s, string(st))
	}
	return strings.Join(s, ",")
}

var (
	drvOnce sync.Once
	drv     *qemu.Driver
	drvErr  error
)

// env returns the driver and a config rooted in a fresh temp dir.
func env(t *testing.T) (*qemu.Driver, sandbox.Config) {
	t.Helper()
	img := sandboxtest.Image(t)
	drvOnce.Do(func() { drv, drvErr = qemu.New(context.Background(), qemu.Options{ProbeKernel: img.Kernel}) })
	if drvErr != nil {
		t.Fatal(drvErr)
	}
	root := filepath.Join(t.TempDir(), "vms")
	return drv, sandbox.Config{
		Root: root, HostID: "test-host", Image: img, MemoryMiB: 320,
		PoolSize: -1, BootTimeout: 3 * time.Minute, ReconcileEvery: -1,
	}
}

func newManager(t *testing.T, d sandbox.Driver, cfg sandbox.Config, rec sandbox.Recorder) *sandbox.Manager {
	t.Helper()
	log := slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelDebug}))
	m, err := sandbox.NewManager(context.Background(), cfg, d, rec, log)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { m.Close(context.Background()) })
	return m
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Logf("%s", strings.TrimRight(string(p), "\n"))
	return len(p), nil
}

func assertNoTrace(t *testing.T, cfg sandbox.Config, before sandbox.HostSnapshot) {
	t.Helper()
	after := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	if d := before.Diff(after); len(d) > 0 {
		t.Errorf("left on the host:\n  %s", strings.Join(d, "\n  "))
	}
}

func TestManagerLifecycle(t *testing.T) {
	d, cfg := env(t)
	before := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	rec := &recorder{}
	m := newManager(t, d, cfg, rec)
	info, err := m.Allocate(context.Background(), sandbox.Owner{SessionID: "s1", UserID: "u1", Provider: "openai"})
	if err != nil {
		t.Fatal(err)
	}
	if info.Status != sandbox.StatusReady || info.PID == 0 || info.Tap != "tap-"+info.VMID {
		t.Fatalf("Allocate = %+v; want ready with pid and tap", info)
	}
	t.Logf("cold boot to ready: %v", info.ReadyAt.Sub(info.BootedAt).Round(time.Millisecond))

	// Per-VM resources exist while it lives.
	if _, err := os.Stat(filepath.Join("/sys/class/net", info.Tap)); err != nil {
		t.Errorf("tap: %v", err)
	}
	cg, _ := os.ReadFile(fmt.Sprintf("/proc/%d/cgroup", info.PID))
	if !strings.Contains(string(cg), "polydev-vms/") || !strings.Contains(string(cg), info.VMID) {
		t.Errorf("VMM not in its cgroup:\n%s", cg)
	}
	for _, f := range []string{"api.sock", "agent.sock", "overlay.qcow2", "config.json", "owner.json"} {
		if _, err := os.Stat(filepath.Join(cfg.Root, info.VMID, f)); err != nil {
			t.Errorf("state dir: %v", err)
		}
	}
	if err := m.SetStatus(context.Background(), "s1", sandbox.StatusAuthenticating); err != nil {
		t.Errorf("SetStatus authenticating: %v", err)
	}
	if err := m.SetStatus(context.Background(), "s1", sandbox.StatusReady); !errors.Is(err, sandbox.ErrBadTransition) {
		t.Errorf("SetStatus back to ready: %v; want ErrBadTransition", err)
	}
	if err := m.SetStatus(context.Background(), "s1", sandbox.StatusCompleted); err != nil {
		t.Errorf("SetStatus completed: %v", err)
	}

	rep, err := m.Destroy(context.Background(), "s1")
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("destroy took %v, removed %v", rep.Took.Round(time.Millisecond), rep.Removed)
	if !rep.Clean() {
		t.Errorf("destroy errors: %v", rep.Errors)
	}
	for _, k := range []string{sandbox.ResourceProcess, sandbox.ResourceConfig, sandbox.ResourceOverlay,
		sandbox.ResourceTap, sandbox.ResourceCgroup, sandbox.ResourceStateDir} {
		if !strings.Contains(strings.Join(rep.Removed, ","), k) {
			t.Errorf("report removed %v; want %q among them", rep.Removed, k)
		}
	}
	if _, err := m.Destroy(context.Background(), "s1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("second Destroy: %v; want ErrNotFound", err)
	}
	if _, err := m.Get("s1"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("Get after Destroy: %v; want ErrNotFound", err)
	}
	if got, want := rec.statuses("s1"), "booting,ready,authenticating,completed,destroyed"; got != want {
		t.Errorf("recorded %s; want %s", got, want)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoTrace(t, cfg, before)
}

func TestManagerDestroyWhileBooting(t *testing.T) {
	d, cfg := env(t)
	before := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	rec := &recorder{}
	m := newManager(t, d, cfg, rec)
	for i, delay := range []time.Duration{0, 50 * time.Millisecond, 600 * time.Millisecond} {
		sid := fmt.Sprintf("boot-%d", i)
		done := make(chan error, 1)
		go func() {
			_, err := m.Allocate(context.Background(), sandbox.Owner{SessionID: sid})
			done <- err
		}()
		for { // wait until the session is known, then let it boot a while
			if _, err := m.Get(sid); err == nil {
				break
			}
			time.Sleep(time.Millisecond)
		}
		time.Sleep(delay)
		rep, err := m.Destroy(context.Background(), sid)
		if err != nil {
			t.Fatalf("delay %v: Destroy: %v", delay, err)
		}
		if !rep.Clean() {
			t.Errorf("delay %v: destroy errors %v", delay, rep.Errors)
		}
		if err := <-done; err == nil {
			t.Errorf("delay %v: Allocate succeeded for a VM destroyed while booting", delay)
		}
		t.Logf("delay %v: removed %v; statuses %s", delay, rep.Removed, rec.statuses(sid))
		if s := rec.statuses(sid); !strings.HasPrefix(s, "booting") || !strings.HasSuffix(s, "destroyed") {
			t.Errorf("delay %v: recorded %s; want booting … destroyed", delay, s)
		}
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	assertNoTrace(t, cfg, before)
}

func TestManagerPoolQueueLifetime(t *testing.T) {
	d, cfg := env(t)
	before := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	cfg.PoolSize, cfg.MaxVMs, cfg.MaxLifetime = 1, 2, 4*time.Second
	rec := &recorder{}
	m := newManager(t, d, cfg, rec)
	waitPool(t, m, 1)

	// From the pool: the VM is ready at once.
	start := time.Now()
	a, err := m.Allocate(context.Background(), sandbox.Owner{SessionID: "a"})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("allocation from the warm pool took %v", time.Since(start))
	if a.Status != sandbox.StatusReady {
		t.Fatalf("pool allocation status %s; want ready", a.Status)
	}
	// The pool refill and a hold both slots: another allocation queues
	// until its context ends.
	for m.Live() < 2 {
		time.Sleep(time.Millisecond)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 300*time.Millisecond)
	_, err = m.Allocate(ctx, sandbox.Owner{SessionID: "c"})
	cancel()
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("allocation over the cap: %v; want it queued until its deadline", err)
	}
	// a's lifetime (4 s from allocation) ends it.
	deadline := time.Now().Add(30 * time.Second)
	for time.Now().Before(deadline) {
		if _, err := m.Get("a"); err != nil {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := m.Get("a"); !errors.Is(err, sandbox.ErrNotFound) {
		t.Errorf("a alive after its lifetime")
	}
	if got := rec.statuses("a"); got != "booting,ready,failed,destroyed" {
		t.Errorf("a recorded %s; want booting,ready,failed,destroyed (lifetime)", got)
	}
	// The refilled pool hands out a different, fresh VM: none is reused.
	waitPool(t, m, 1)
	b, err := m.Allocate(context.Background(), sandbox.Owner{SessionID: "b"})
	if err != nil {
		t.Fatal(err)
	}
	if b.VMID == a.VMID {
		t.Fatal("a VM was handed out twice")
	}
	if _, err := m.Destroy(context.Background(), "b"); err != nil {
		t.Fatal(err)
	}
	if err := m.Close(context.Background()); err != nil {
		t.Fatal(err)
	}
	rec.mu.Lock()
	for _, r := range rec.removed {
		if r.VMID == a.VMID && r.Reason != "lifetime" {
			t.Errorf("vm a removed for %q; want lifetime", r.Reason)
		}
		if !r.Clean() {
			t.Errorf("vm %s (%s): %v", r.VMID, r.Reason, r.Errors)
		}
	}
	rec.mu.Unlock()
	assertNoTrace(t, cfg, before)
}

func waitPool(t *testing.T, m *sandbox.Manager, n int) {
	t.Helper()
	deadline := time.Now().Add(3 * time.Minute)
	for m.PoolReady() < n {
		if time.Now().After(deadline) {
			t.Fatalf("warm pool not filled to %d", n)
		}
		time.Sleep(20 * time.Millisecond)
	}
}
