package runc_test

import (
	"bufio"
	"context"
	"fmt"
	"io/fs"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strconv"
	"strings"
	"syscall"
	"testing"
	"time"

	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

const helperEnv = "POLYDEV_RUNC_TEST_HELPER"

// helperMain is the pool owner that TestKilledOwnerLeavesNothing kills: it
// fills a pool, starts a request that never ends, says READY and waits.
func helperMain() int {
	root, img := os.Getenv("POLYDEV_RUNC_ROOT"), os.Getenv("POLYDEV_RUNC_IMAGE")
	ctx := context.Background()
	p, err := runc.New(ctx, runc.Config{Root: root, Image: img, Pools: map[string]runc.PoolSize{"openai": {MinIdle: 2, MaxTotal: 8}}})
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	stall := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.WriteHeader(200)
		w.(http.Flusher).Flush()
		select {}
	}))
	for len(p.Stats()) == 0 || p.Stats()[0].Idle < 2 {
		time.Sleep(20 * time.Millisecond)
	}
	l, err := p.Checkout(ctx, "openai", "user")
	if err != nil {
		fmt.Println("ERROR", err)
		return 1
	}
	task := echoTask("user", stall.URL, 1, "first")
	_ = l.Run(ctx, wire.OpEcho, task, func(e worker.Event) error {
		if e.Chunk != nil && e.Chunk.EncryptedChunk == "first" {
			fmt.Println("READY")
		}
		return nil
	})
	select {}
}

// hostState is what a runtime could leave on the host, restricted to what
// belongs to one pool root and prefix.
type hostState struct {
	runc    []string // runc list under the root
	cgroups []string // cgroup dirs named with the prefix
	mounts  []string // mount points under the root
	entries []string // files, dirs and sockets under root/c
	procs   []string // processes running as a container uid
	tmpRunc []string // go-runc exec temp files in /tmp
}

func snapshot(t *testing.T, root, prefix string) hostState {
	t.Helper()
	var s hostState
	out, _ := exec.Command("runc", "--root", filepath.Join(root, "runc"), "list", "-q").Output()
	s.runc = strings.Fields(string(out))
	filepath.WalkDir("/sys/fs/cgroup", func(p string, d fs.DirEntry, err error) error {
		if err != nil || !d.IsDir() {
			return nil
		}
		if strings.HasPrefix(d.Name(), prefix) {
			s.cgroups = append(s.cgroups, p)
			return filepath.SkipDir
		}
		if strings.Count(strings.TrimPrefix(p, "/sys/fs/cgroup"), "/") >= 2 {
			return filepath.SkipDir
		}
		return nil
	})
	if b, err := os.ReadFile("/proc/self/mountinfo"); err == nil {
		for _, l := range strings.Split(string(b), "\n") {
			if strings.Contains(l, root) {
				s.mounts = append(s.mounts, l)
			}
		}
	}
	filepath.WalkDir(filepath.Join(root, "c"), func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != filepath.Join(root, "c") {
			s.entries = append(s.entries, p)
		}
		return nil
	})
	procs, _ := filepath.Glob("/proc/[0-9]*/status")
	for _, st := range procs {
		f, err := os.Open(st)
		if err != nil {
			continue
		}
		// A process running as a container uid, not counting zombies: a
		// killed container's processes wait for the host's init to reap
		// them, holding no memory or files.
		sc := bufio.NewScanner(f)
		zombie := false
		for sc.Scan() {
			f := strings.Fields(sc.Text())
			if len(f) > 1 && f[0] == "State:" && f[1] == "Z" {
				zombie = true
			}
			if len(f) > 1 && f[0] == "Uid:" && !zombie {
				if uid, _ := strconv.Atoi(f[1]); uid >= 1<<28 {
					s.procs = append(s.procs, st)
				}
			}
		}
		f.Close()
	}
	s.tmpRunc, _ = filepath.Glob(filepath.Join(os.TempDir(), "runc-process*"))
	sort.Strings(s.procs)
	return s
}

func (s hostState) empty() bool {
	return len(s.runc)+len(s.cgroups)+len(s.mounts)+len(s.entries)+len(s.procs)+len(s.tmpRunc) == 0
}

// The pool's owner is killed with SIGKILL mid-request; a restart on the same
// root removes every container, cgroup, mount, socket and directory it
// left, and the host looks as it did before.
func TestKilledOwnerLeavesNothing(t *testing.T) {
	img := image(t)
	root := newRoot(t)
	probe := newPool(t, runc.Config{Root: root, UserNS: "off"}) // only to learn the prefix
	prefix := probe.Prefix()
	probe.Close()
	var before hostState
	for deadline := time.Now().Add(5 * time.Second); ; time.Sleep(50 * time.Millisecond) {
		if before = snapshot(t, root, prefix); before.empty() || time.Now().After(deadline) {
			break
		}
	}
	if !before.empty() {
		t.Fatalf("host not clean before the test: %+v", before)
	}

	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), helperEnv+"=1", "POLYDEV_RUNC_ROOT="+root, "POLYDEV_RUNC_IMAGE="+img)
	cmd.Stderr = os.Stderr
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	ready := make(chan string, 1)
	go func() {
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			ready <- sc.Text()
		}
		close(ready)
	}()
	select {
	case line := <-ready:
		if line != "READY" {
			cmd.Process.Kill()
			t.Fatalf("helper: %s", line)
		}
	case <-time.After(time.Minute):
		cmd.Process.Kill()
		t.Fatal("helper never became ready")
	}
	// Whatever happens below, a reclaim runs at the end.
	t.Cleanup(func() {
		if p, err := runc.New(context.Background(), runc.Config{Root: root, Image: img, Default: runc.PoolSize{MinIdle: -1}}); err == nil {
			p.Close()
		}
	})
	if err := cmd.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	_ = cmd.Wait()

	left := snapshot(t, root, prefix)
	if len(left.runc) == 0 || len(left.cgroups) == 0 || len(left.entries) == 0 || len(left.procs) == 0 {
		t.Fatalf("the killed owner should have left containers behind: %+v", left)
	}
	t.Logf("left behind by the killed owner: %d containers, %d cgroup dirs, %d files and dirs, %d processes",
		len(left.runc), len(left.cgroups), len(left.entries), len(left.procs))

	// Restart: the start-up reclaim removes it all.
	p := newPool(t, runc.Config{Root: root, Image: img, Default: runc.PoolSize{MinIdle: -1}})
	p.Close()
	deadline := time.Now().Add(5 * time.Second)
	var after hostState
	for {
		after = snapshot(t, root, prefix)
		if after.empty() || time.Now().After(deadline) {
			break
		}
		time.Sleep(50 * time.Millisecond)
	}
	if !after.empty() {
		t.Errorf("after restart: left %+v; want nothing", after)
	}
}

// The reconcile timer removes what no live container owns — here a stray
// container directory with a socket and a stray cgroup — and leaves the
// live containers alone.
func TestReconcileTimer(t *testing.T) {
	root := newRoot(t)
	p := newPool(t, runc.Config{Root: root, ReconcileEvery: 200 * time.Millisecond})
	ctx := context.Background()
	l, err := p.Checkout(ctx, "openai", "u")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	stray := filepath.Join(root, "c", p.Prefix()+"-stray")
	if err := os.MkdirAll(stray, 0o700); err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("unix", filepath.Join(stray, "worker.sock"))
	if err != nil {
		t.Fatal(err)
	}
	ln.Close()
	cg := filepath.Join("/sys/fs/cgroup/pids", p.Prefix()+"-stray")
	if err := os.Mkdir(cg, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { syscall.Rmdir(cg) })
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, e1 := os.Stat(stray)
		_, e2 := os.Stat(cg)
		if os.IsNotExist(e1) && os.IsNotExist(e2) {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("after reconcile: stray dir %v, stray cgroup %v; want both gone", e1, e2)
		}
		time.Sleep(50 * time.Millisecond)
	}
	if _, err := os.Stat(l.Dir()); err != nil {
		t.Errorf("the live container's directory: %v", err)
	}
	if _, err := collect(ctx, l, echoTask("u", "", 0, "x")); err != nil {
		t.Errorf("the live container after reconcile: %v", err)
	}
}
