// Package sandboxtest is the conformance suite every sandbox.Driver runs:
// boot to ready, inspect, stop, stop twice, stop before ready, a VMM killed
// from outside, the cleanup stack racing a start, and the copy-on-write
// overlay leaving the golden image untouched. Each case checks that the
// cleanup stack leaves the VM's state dir empty and no process behind.
package sandboxtest

import (
	"bytes"
	"context"
	"crypto/sha256"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"polydev/internal/sandbox"
)

// Env is what the suite needs from the driver's test.
type Env struct {
	Driver sandbox.Driver
	Image  sandbox.Image // must boot to an agent that answers ready
	// MemoryMiB for the guest; default 256.
	MemoryMiB int
	// BootTimeout bounds boot-to-ready; default 120s (software emulation
	// on a busy machine is slow).
	BootTimeout time.Duration
}

// NewMachine returns a Machine with every path inside a fresh temp dir.
func NewMachine(t testing.TB, e Env) *sandbox.Machine {
	t.Helper()
	dir, err := os.MkdirTemp("", "sbt-")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(dir) })
	id := fmt.Sprintf("%010x", time.Now().UnixNano()&0xffffffffff)
	mem := e.MemoryMiB
	if mem == 0 {
		mem = 256
	}
	return &sandbox.Machine{
		ID: id, Marker: sandbox.MarkerPrefix + id, Dir: dir,
		APISocket:   filepath.Join(dir, "api.sock"),
		AgentSocket: filepath.Join(dir, "agent.sock"),
		Overlay:     filepath.Join(dir, "overlay.qcow2"),
		Config:      filepath.Join(dir, "config.json"),
		LogFile:     filepath.Join(dir, "vmm.log"),
		Image:       e.Image, MemoryMiB: mem, VCPUs: 1, OverlayBytes: 200 << 20,
	}
}

// Run runs the suite.
func Run(t *testing.T, e Env) {
	if e.BootTimeout == 0 {
		e.BootTimeout = 120 * time.Second
	}
	t.Run("Lifecycle", func(t *testing.T) { lifecycle(t, e) })
	t.Run("StopBeforeReady", func(t *testing.T) { stopBeforeReady(t, e) })
	t.Run("KilledFromOutside", func(t *testing.T) { killed(t, e) })
	t.Run("CleanupRacesStart", func(t *testing.T) { cleanupRacesStart(t, e) })
}

// start starts m, failing the test on error, and returns its cleanup.
func start(t *testing.T, e Env, m *sandbox.Machine) *sandbox.Cleanup {
	t.Helper()
	var placed atomic.Int64
	m.Place = func(pid int) error { placed.Store(int64(pid)); return nil }
	cl := &sandbox.Cleanup{}
	t.Cleanup(func() { cl.Run(context.Background(), 10*time.Second) })
	if err := e.Driver.Start(context.Background(), m, cl); err != nil {
		dumpLog(t, m)
		t.Fatalf("Start: %v", err)
	}
	if m.PID <= 0 || m.Done == nil {
		t.Fatalf("after Start: PID %d, Done %v; want both set", m.PID, m.Done)
	}
	if got := placed.Load(); got != int64(m.PID) {
		t.Errorf("Place called with pid %d; want %d", got, m.PID)
	}
	checkArgv(t, m)
	return cl
}

func checkArgv(t *testing.T, m *sandbox.Machine) {
	t.Helper()
	b, err := os.ReadFile(fmt.Sprintf("/proc/%d/cmdline", m.PID))
	if err != nil {
		t.Fatalf("read argv: %v", err)
	}
	args := strings.Split(string(bytes.TrimRight(b, "\x00")), "\x00")
	hasMarker, hasDir := false, false
	for _, a := range args {
		hasMarker = hasMarker || a == m.Marker
		hasDir = hasDir || strings.Contains(a, m.Dir+"/")
	}
	if !hasMarker || !hasDir {
		t.Errorf("VMM argv has marker %v, state dir %v; want both (Reconcile finds strays by them)", hasMarker, hasDir)
	}
}

func waitReady(t *testing.T, e Env, m *sandbox.Machine) time.Duration {
	t.Helper()
	startAt := time.Now()
	ctx, cancel := context.WithTimeout(context.Background(), e.BootTimeout)
	defer cancel()
	if err := e.Driver.WaitReady(ctx, m); err != nil {
		dumpLog(t, m)
		t.Fatalf("WaitReady: %v", err)
	}
	return time.Since(startAt)
}

func dumpLog(t *testing.T, m *sandbox.Machine) {
	b, _ := os.ReadFile(m.LogFile)
	if len(b) > 4000 {
		b = b[len(b)-4000:]
	}
	t.Logf("VMM log tail:\n%s", b)
}

// checkClean runs the cleanup stack and checks nothing is left.
func checkClean(t *testing.T, m *sandbox.Machine, cl *sandbox.Cleanup) []string {
	t.Helper()
	removed, errs := cl.Run(context.Background(), 10*time.Second)
	if len(errs) > 0 {
		t.Errorf("cleanup errors: %v", errs)
	}
	if sandbox.ProcessAlive(m.PID) {
		t.Errorf("VMM pid %d alive after cleanup", m.PID)
	}
	ents, _ := os.ReadDir(m.Dir)
	var left []string
	for _, e := range ents {
		if e.Name() != filepath.Base(m.LogFile) {
			left = append(left, e.Name())
		}
	}
	if len(left) > 0 {
		t.Errorf("left in state dir after cleanup: %v", left)
	}
	again, errs := cl.Run(context.Background(), time.Second)
	if len(again) > 0 || len(errs) > 0 {
		t.Errorf("second cleanup run removed %v, errors %v; want nothing", again, errs)
	}
	return removed
}

func lifecycle(t *testing.T, e Env) {
	m := NewMachine(t, e)
	goldenBefore := fileHash(t, m.Image.Rootfs)
	cl := start(t, e, m)
	took := waitReady(t, e, m)
	t.Logf("%s: boot to ready %v", e.Driver.Name(), took.Round(time.Millisecond))
	// The channel survives the manager disconnecting and coming back.
	time.Sleep(100 * time.Millisecond)
	waitReady(t, e, m)
	st, err := e.Driver.Inspect(context.Background(), m)
	if err != nil {
		t.Fatalf("Inspect: %v", err)
	}
	if !st.Running || st.PID != m.PID {
		t.Errorf("Inspect = %+v; want running with pid %d", st, m.PID)
	}
	if m.Image.Rootfs != "" {
		if _, err := os.Stat(m.Overlay); err != nil {
			t.Errorf("overlay: %v", err)
		}
	}
	if err := e.Driver.Stop(context.Background(), m); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	if err := e.Driver.Stop(context.Background(), m); err != nil {
		t.Errorf("second Stop: %v; want nil", err)
	}
	if _, err := e.Driver.Inspect(context.Background(), m); !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("Inspect after Stop: %v; want ErrExited", err)
	}
	removed := checkClean(t, m, cl)
	// Sockets are not required in the list: a VMM that quits cleanly may
	// remove its own.
	want := []string{sandbox.ResourceProcess, sandbox.ResourceConfig}
	if m.Image.Rootfs != "" {
		want = append(want, sandbox.ResourceOverlay)
	}
	for _, w := range want {
		found := false
		for _, r := range removed {
			found = found || r == w
		}
		if !found {
			t.Errorf("cleanup removed %v; want it to include %q", removed, w)
		}
	}
	if m.Image.Rootfs != "" {
		if got := fileHash(t, m.Image.Rootfs); got != goldenBefore {
			t.Errorf("golden image changed by a VM: the overlay is not copy-on-write")
		}
	}
}

func stopBeforeReady(t *testing.T, e Env) {
	m := NewMachine(t, e)
	cl := start(t, e, m)
	if err := e.Driver.Stop(context.Background(), m); err != nil {
		t.Fatalf("Stop before ready: %v", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Driver.WaitReady(ctx, m); !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("WaitReady after Stop: %v; want ErrExited", err)
	}
	checkClean(t, m, cl)
}

func killed(t *testing.T, e Env) {
	m := NewMachine(t, e)
	cl := start(t, e, m)
	waitReady(t, e, m)
	if err := syscall.Kill(m.PID, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	select {
	case <-m.Done:
	case <-time.After(10 * time.Second):
		t.Fatal("Done not closed 10s after SIGKILL")
	}
	if _, err := e.Driver.Inspect(context.Background(), m); !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("Inspect after kill: %v; want ErrExited", err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.Driver.WaitReady(ctx, m); !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("WaitReady after kill: %v; want ErrExited", err)
	}
	if err := e.Driver.Stop(context.Background(), m); err != nil {
		t.Errorf("Stop after kill: %v; want nil", err)
	}
	checkClean(t, m, cl)
}

// cleanupRacesStart runs the cleanup stack while Start is under way: every
// resource Start acquires after the run must still be undone.
func cleanupRacesStart(t *testing.T, e Env) {
	for _, delay := range []time.Duration{0, 20 * time.Millisecond, 80 * time.Millisecond} {
		m := NewMachine(t, e)
		cl := &sandbox.Cleanup{}
		done := make(chan error, 1)
		go func() { done <- e.Driver.Start(context.Background(), m, cl) }()
		time.Sleep(delay)
		cl.Run(context.Background(), 10*time.Second)
		<-done // Start may fail or succeed; either way nothing may remain
		cl.Run(context.Background(), 10*time.Second)
		if m.Done != nil {
			select {
			case <-m.Done:
			case <-time.After(10 * time.Second):
				t.Errorf("delay %v: VMM still running after cleanup", delay)
			}
		}
		ents, _ := os.ReadDir(m.Dir)
		var left []string
		for _, en := range ents {
			if en.Name() != filepath.Base(m.LogFile) {
				left = append(left, en.Name())
			}
		}
		if len(left) > 0 {
			t.Errorf("delay %v: left in state dir: %v", delay, left)
		}
	}
}

func fileHash(t *testing.T, path string) [32]byte {
	t.Helper()
	if path == "" {
		return [32]byte{}
	}
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return sha256.Sum256(b)
}
