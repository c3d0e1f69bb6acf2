package sandbox_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"polydev/internal/sandbox"
	"polydev/internal/sandbox/qemu"
)

// The zero-trace test runs the manager as a child process (this test
// binary re-executed with childEnv set), kills it or its VMs with SIGKILL at
// chosen points, restarts it (which reconciles), and finally checks that
// the host looks exactly as before.

const childEnv = "POLYDEV_TEST_VM_MANAGER_CHILD"

func TestMain(m *testing.M) {
	if cfg := os.Getenv(childEnv); cfg != "" {
		os.Exit(runChild(cfg))
	}
	os.Exit(m.Run())
}

type childConfig struct {
	Config sandbox.Config
	Accel  string
}

// printRecorder reports to the parent on stdout.
type printRecorder struct{ out *lineWriter }

func (p printRecorder) Status(context.Context, sandbox.Transition) error { return nil }
func (p printRecorder) Removed(_ context.Context, r sandbox.Report) error {
	p.out.printf("removed %s %s %s errors=%d", r.VMID, r.Reason, strings.Join(r.Removed, ","), len(r.Errors))
	return nil
}

type lineWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lineWriter) printf(format string, a ...any) {
	l.mu.Lock()
	defer l.mu.Unlock()
	fmt.Fprintf(l.w, format+"\n", a...)
}

// runChild is the manager process: it obeys "alloc SID", "destroy SID" and
// "close" on stdin and reports on stdout.
func runChild(cfgJSON string) int {
	var cc childConfig
	if err := json.Unmarshal([]byte(cfgJSON), &cc); err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	out := &lineWriter{w: os.Stdout}
	ctx := context.Background()
	d, err := qemu.New(ctx, qemu.Options{Accel: cc.Accel})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	m, err := sandbox.NewManager(ctx, cc.Config, d, printRecorder{out}, log)
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		return 2
	}
	out.printf("started")
	sc := bufio.NewScanner(os.Stdin)
	for sc.Scan() {
		cmd, sid, _ := strings.Cut(sc.Text(), " ")
		switch cmd {
		case "alloc":
			go func() {
				info, err := m.Allocate(ctx, sandbox.Owner{SessionID: sid})
				if err != nil {
					out.printf("allocerr %s %v", sid, err)
					return
				}
				out.printf("ready %s %s %d", sid, info.VMID, info.PID)
			}()
		case "destroy":
			go func() {
				r, err := m.Destroy(ctx, sid)
				out.printf("destroyed %s %s %v clean=%v", sid, strings.Join(r.Removed, ","), err, r.Clean())
			}()
		case "close":
			err := m.Close(ctx)
			out.printf("closed %v", err)
			return 0
		}
	}
	return 0
}

// child is a running manager process.
type child struct {
	t     *testing.T
	cmd   *exec.Cmd
	in    io.WriteCloser
	lines chan string
	done  chan struct{}

	mu        sync.Mutex
	reclaimed int // VMs reported removed by reconcile
}

func startChild(t *testing.T, cfg sandbox.Config, accel string, stderr io.Writer) *child {
	t.Helper()
	b, _ := json.Marshal(childConfig{Config: cfg, Accel: accel})
	cmd := exec.Command(os.Args[0], "-test.run=^$")
	cmd.Env = append(os.Environ(), childEnv+"="+string(b))
	cmd.Stderr = stderr
	in, _ := cmd.StdinPipe()
	outp, _ := cmd.StdoutPipe()
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	c := &child{t: t, cmd: cmd, in: in, lines: make(chan string, 100), done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(outp)
		for sc.Scan() {
			line := sc.Text()
			if strings.HasPrefix(line, "removed ") && strings.Contains(line, " reconcile ") {
				c.mu.Lock()
				c.reclaimed++
				c.mu.Unlock()
			}
			c.lines <- line
		}
		close(c.lines)
		cmd.Wait()
		close(c.done)
	}()
	return c
}

func (c *child) send(line string) { fmt.Fprintln(c.in, line) }

// expect waits for a line starting with prefix, skipping others.
func (c *child) expect(prefix string, timeout time.Duration) (string, bool) {
	c.t.Helper()
	deadline := time.After(timeout)
	for {
		select {
		case l, ok := <-c.lines:
			if !ok {
				return "", false
			}
			if strings.HasPrefix(l, prefix) {
				return l, true
			}
		case <-deadline:
			return "", false
		}
	}
}

func (c *child) kill() {
	c.cmd.Process.Kill()
	<-c.done
}

// vmmPids lists live VMM processes under root (found by the test itself,
// from argv, not by the manager's code).
func vmmPids(root string) []int {
	ents, _ := os.ReadDir("/proc")
	var pids []int
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, _ := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		marked := false
		for _, a := range strings.Split(string(b), "\x00") {
			marked = marked || strings.HasPrefix(a, sandbox.MarkerPrefix)
		}
		if marked && strings.Contains(string(b), root+"/") && sandbox.ProcessAlive(pid) {
			pids = append(pids, pid)
		}
	}
	return pids
}

// reapZombies waits for this process's exited children that no exec.Cmd
// owns: VMMs orphaned by a killed manager re-parent to the test (a child
// subreaper) and end as its zombies once reconcile kills them.
func reapZombies() {
	self := strconv.Itoa(os.Getpid())
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		pid, err := strconv.Atoi(e.Name())
		if err != nil {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/stat")
		if err != nil {
			continue
		}
		s := string(b)
		i := strings.LastIndexByte(s, ')')
		if i < 0 {
			continue
		}
		f := strings.Fields(s[i+1:])
		if len(f) > 1 && f[0] == "Z" && f[1] == self {
			var ws unix.WaitStatus
			unix.Wait4(pid, &ws, unix.WNOHANG, nil)
		}
	}
}

// crashPoints: the first three need no VM to reach ready and are cheap
// under software emulation; the rest each boot one.
var crashPoints = []string{
	"vmm_killed_while_booting",
	"manager_killed_at_startup",
	"manager_killed_while_booting",
	"manager_killed_after_ready",
	"vmm_killed_after_ready",
	"manager_killed_mid_destroy",
	"manager_killed_with_warm_pool",
	"clean_destroy",
}

const cheapPoints = 3

// pickPoint covers every point once, in order, then picks at random,
// half the time among the cheap ones, to keep the run short.
func pickPoint(i int, rng *rand.Rand) string {
	if i < len(crashPoints) {
		return crashPoints[i]
	}
	if rng.IntN(2) == 0 {
		return crashPoints[rng.IntN(cheapPoints)]
	}
	return crashPoints[rng.IntN(len(crashPoints))]
}

func TestZeroTrace(t *testing.T) {
	d, cfg := env(t)
	n := 50
	if s := os.Getenv("POLYDEV_ZERO_TRACE_N"); s != "" {
		n, _ = strconv.Atoi(s)
	}
	if err := unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0); err != nil {
		t.Fatalf("become child subreaper: %v", err)
	}
	defer unix.Prctl(unix.PR_SET_CHILD_SUBREAPER, 0, 0, 0, 0)
	seed := uint64(time.Now().UnixNano())
	rng := rand.New(rand.NewPCG(seed, 1))
	t.Logf("zero-trace: %d lifecycles, seed %d, accelerator %s", n, seed, d.Accel())

	logPath := cfg.Root + ".managers.log"
	if p := os.Getenv("POLYDEV_ZERO_TRACE_LOG"); p != "" {
		logPath = p
	}
	stderr, err := os.Create(logPath)
	if err != nil {
		os.MkdirAll(cfg.Root, 0o700)
		stderr, _ = os.Create(logPath)
	}
	defer stderr.Close()
	os.RemoveAll(cfg.Root)
	before := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	counts := map[string]int{}
	reclaimed := 0
	ms := func(max int) time.Duration { return time.Duration(rng.IntN(max+1)) * time.Millisecond }
	const boot = 3 * time.Minute

	// Killed by the test timeout, this test would leave the VMs of its last
	// lifecycle behind (under a temp root no later manager reconciles):
	// stop early instead, fail, and still run the final reconcile.
	deadline, hasDeadline := t.Deadline()
	for i := 0; i < n; i++ {
		if hasDeadline && time.Until(deadline) < 3*time.Minute {
			t.Errorf("stopped after %d of %d lifecycles: the test deadline is near (run with a longer -timeout)", i, n)
			break
		}
		point := pickPoint(i, rng)
		ccfg := cfg
		if point == "manager_killed_with_warm_pool" {
			ccfg.PoolSize = 1
		}
		c := startChild(t, ccfg, d.Accel(), stderr)
		sid := fmt.Sprintf("s%d", i)
		detail := ""
		if point == "manager_killed_at_startup" {
			// Killed during its start-up reconcile (or just after).
			delay := ms(80)
			time.Sleep(delay)
			detail = fmt.Sprintf("after %v", delay)
			c.kill()
		} else {
			if _, ok := c.expect("started", time.Minute); !ok {
				t.Fatalf("lifecycle %d: manager did not start", i)
			}
			c.send("alloc " + sid)
			switch point {
			case "manager_killed_while_booting":
				delay := ms(2500)
				time.Sleep(delay)
				detail = fmt.Sprintf("after %v", delay)
				c.kill()
			case "vmm_killed_while_booting":
				var pids []int
				for deadline := time.Now().Add(time.Minute); len(pids) == 0 && time.Now().Before(deadline); {
					pids = vmmPids(cfg.Root)
					time.Sleep(time.Millisecond)
				}
				delay := ms(1500)
				time.Sleep(delay)
				for _, p := range pids {
					syscall.Kill(p, syscall.SIGKILL)
				}
				detail = fmt.Sprintf("vmm killed %v after start", delay)
				if l, ok := c.expect("allocerr "+sid, boot); !ok {
					t.Errorf("lifecycle %d: allocation did not fail after its VMM was killed (%s)", i, l)
				}
				c.kill()
			case "manager_killed_with_warm_pool":
				// The manager has one warm VM booting or ready and this
				// allocation booting beside it.
				delay := ms(6000)
				time.Sleep(delay)
				detail = fmt.Sprintf("after %v", delay)
				c.kill()
			case "manager_killed_after_ready":
				if _, ok := c.expect("ready "+sid, boot); !ok {
					t.Fatalf("lifecycle %d: not ready", i)
				}
				delay := ms(300)
				time.Sleep(delay)
				detail = fmt.Sprintf("%v after ready", delay)
				c.kill()
			case "vmm_killed_after_ready":
				l, ok := c.expect("ready "+sid, boot)
				if !ok {
					t.Fatalf("lifecycle %d: not ready", i)
				}
				f := strings.Fields(l)
				pid, _ := strconv.Atoi(f[len(f)-1])
				syscall.Kill(pid, syscall.SIGKILL)
				if _, ok := c.expect("removed ", 30*time.Second); !ok {
					t.Errorf("lifecycle %d: manager did not destroy the VM whose VMM died", i)
				}
				delay := ms(100)
				time.Sleep(delay)
				detail = fmt.Sprintf("manager killed %v after the VM's removal", delay)
				c.kill()
			case "manager_killed_mid_destroy":
				if _, ok := c.expect("ready "+sid, boot); !ok {
					t.Fatalf("lifecycle %d: not ready", i)
				}
				c.send("destroy " + sid)
				delay := time.Duration(rng.IntN(40000)) * time.Microsecond
				time.Sleep(delay)
				detail = fmt.Sprintf("%v into destroy", delay)
				c.kill()
			case "clean_destroy":
				if _, ok := c.expect("ready "+sid, boot); !ok {
					t.Fatalf("lifecycle %d: not ready", i)
				}
				c.send("destroy " + sid)
				if l, ok := c.expect("destroyed "+sid, time.Minute); !ok || !strings.Contains(l, "clean=true") {
					t.Errorf("lifecycle %d: destroy: %q", i, l)
				}
				c.send("close")
				if l, ok := c.expect("closed", time.Minute); !ok || l != "closed <nil>" {
					t.Errorf("lifecycle %d: close: %q", i, l)
				}
				<-c.done
			}
		}
		c.mu.Lock()
		reclaimed += c.reclaimed
		c.mu.Unlock()
		counts[point]++
		t.Logf("lifecycle %2d: %-30s %s", i, point, detail)
		reapZombies()
	}

	// Restart: the start-up reconcile removes whatever the crashes left.
	c := startChild(t, cfg, d.Accel(), stderr)
	if _, ok := c.expect("started", time.Minute); !ok {
		t.Fatal("final manager did not start")
	}
	c.send("close")
	if l, ok := c.expect("closed", time.Minute); !ok || l != "closed <nil>" {
		t.Errorf("final close: %q", l)
	}
	<-c.done
	c.mu.Lock()
	reclaimed += c.reclaimed
	c.mu.Unlock()
	for i := 0; i < 50; i++ {
		reapZombies()
		time.Sleep(10 * time.Millisecond)
	}
	after := sandbox.Snapshot(cfg.Root, "/sys/fs/cgroup")
	diff := before.Diff(after)
	var zombies []int
	for _, p := range vmmPids(cfg.Root) {
		zombies = append(zombies, p)
	}
	t.Logf("zero-trace: %d lifecycles; crash points covered: %v; VMs reclaimed by reconcile: %d; leftovers: %d",
		n, counts, reclaimed, len(diff)+len(zombies))
	if len(diff) > 0 {
		t.Errorf("left on the host after %d lifecycles:\n  %s", n, strings.Join(diff, "\n  "))
	}
	if reclaimed == 0 && n >= len(crashPoints) {
		t.Errorf("no VM was reclaimed: the crash points did not leave anything for reconcile to find")
	}
}
