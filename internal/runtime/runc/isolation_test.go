package runc_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/runctest"
)

type probeResult struct {
	Probe   string `json:"probe"`
	Allowed bool   `json:"allowed"`
	Detail  string `json:"detail"`
}

// parseProbe finds the probe's JSON line in out.
func parseProbe(out []byte) (probeResult, bool) {
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	for i := len(lines) - 1; i >= 0; i-- {
		var r probeResult
		if json.Unmarshal([]byte(lines[i]), &r) == nil && r.Probe != "" {
			return r, true
		}
	}
	return probeResult{}, false
}

func probeIn(t *testing.T, l *runc.Lease, args ...string) (probeResult, bool, error) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	out, err := l.Exec(ctx, append([]string{"/polydev", "worker", "probe"}, args...)...)
	r, ok := parseProbe(out)
	if !ok && args[0] == "pids" && strings.Contains(string(out), "failed to create new OS thread") && strings.Contains(string(out), "errno=11") {
		// The pids limit stopped the probe's own runtime from making a
		// thread before fork did: blocked just the same.
		return probeResult{Probe: "pids", Detail: "the Go runtime could not create a thread: EAGAIN"}, true, nil
	}
	if !ok {
		t.Logf("probe %v printed %q (err %v)", args, out, err)
	}
	return r, ok, err
}

// Escape and isolation probes, run from inside a worker container: every
// one must fail. The same probes run on the host first, where each must
// succeed, so a probe that cannot detect success would fail this test.
func TestIsolationProbes(t *testing.T) {
	p := newPool(t, runc.Config{Limits: runc.Limits{MemoryBytes: 256 << 20, Pids: 64}})
	ctx := context.Background()
	a, err := p.Checkout(ctx, "openai", "user-a")
	if err != nil {
		t.Fatal(err)
	}
	defer a.Release()
	b, err := p.Checkout(ctx, "openai", "user-b")
	if err != nil {
		t.Fatal(err)
	}
	defer b.Release()

	// Things the probes aim at: a host loopback port, a host abstract unix
	// socket, container b's sockets and b's tmpfs.
	tcp, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer tcp.Close()
	abstract := "@polydev-probe-" + fmt.Sprint(os.Getpid())
	ul, err := net.Listen("unix", abstract)
	if err != nil {
		t.Fatal(err)
	}
	defer ul.Close()
	go acceptAll(tcp)
	go acceptAll(ul)
	marker := "tmp-marker-" + fmt.Sprint(time.Now().UnixNano())
	if r, ok, err := probeIn(t, b, "write_keep", "/tmp/"+marker); !ok || !r.Allowed {
		t.Fatalf("writing b's own tmpfs: %+v %v", r, err)
	}
	bPID, err := b.InitPID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	bTmp := fmt.Sprintf("/proc/%d/root/tmp/%s", bPID, marker)
	if _, err := os.Stat(bTmp); err != nil {
		t.Fatalf("the marker in b's tmpfs is not where the host sees it: %v", err)
	}

	probes := []struct {
		name   string
		args   []string
		host   bool // also run on the host, where it must be allowed
		hostAs []string
	}{
		{"mount", []string{"mount"}, false, nil},
		{"unshare", []string{"unshare"}, false, nil},
		{"ptrace of another process", []string{"ptrace", "1"}, false, nil},
		{"raw socket", []string{"raw_socket"}, true, nil},
		{"connect to a host loopback port", []string{"connect", tcp.Addr().String()}, true, nil},
		{"connect to a host abstract unix socket", []string{"unix_connect", abstract}, true, nil},
		{"reach another container's worker socket", []string{"unix_connect", filepath.Join(b.Dir(), "worker.sock")}, true, nil},
		{"reach another container's gateway socket", []string{"unix_connect", filepath.Join(b.Dir(), "egress", "egress.sock")}, true, nil},
		{"read another user's tmpfs", []string{"read", bTmp}, true, nil},
		{"read the worker's environment (not dumpable)", []string{"read", "/proc/1/environ"}, false, nil},
		{"write the rootfs", []string{"write", "/polydev-probe"}, true, []string{"write", filepath.Join(t.TempDir(), "probe")}},
		{"write the rootfs /etc", []string{"write", "/etc/probe"}, false, nil},
		{"write the gateway mount", []string{"write", "/run/egress/probe"}, false, nil},
		{"exceed the pids limit", []string{"pids", "200"}, false, nil},
	}
	for _, pr := range probes {
		if pr.host {
			args := pr.args
			if pr.hostAs != nil {
				args = pr.hostAs
			}
			out, err := exec.Command(runctest.Binary(t), append([]string{"worker", "probe"}, args...)...).CombinedOutput()
			r, ok := parseProbe(out)
			if !ok || !r.Allowed {
				t.Errorf("control: probe %q on the host: got %+v (%v, %s); want allowed", pr.name, r, err, out)
			}
		}
		r, ok, err := probeIn(t, a, pr.args...)
		switch {
		case !ok:
			t.Errorf("probe %q: no result (%v)", pr.name, err)
		case r.Allowed:
			t.Errorf("probe %q: ALLOWED inside the container (%s)", pr.name, r.Detail)
		default:
			t.Logf("probe %q: blocked: %s", pr.name, r.Detail)
		}
	}

	// Memory: the allocation gets the process killed by the OOM killer.
	r, ok, err := probeIn(t, a, "memory", "512")
	if ok && r.Allowed {
		t.Errorf("probe memory: allocated 512 MiB past a 256 MiB limit")
	} else if err == nil || !strings.Contains(err.Error(), "137") {
		t.Errorf("probe memory: got %v; want the probe killed (exit 137)", err)
	} else {
		t.Logf("probe memory: killed: %v", err)
	}
	// The worker survives its sibling's death, and b's marker is intact.
	if _, err := collect(ctx, a, echoTask("user-a", "", 0, "still alive")); err != nil {
		t.Errorf("worker after the memory probe: %v", err)
	}

	// What the kernel says about the worker's own process.
	st, ok, _ := probeIn(t, a, "status")
	if !ok {
		t.Fatal("status probe failed")
	}
	t.Logf("inside the container:\n%s", st.Detail)
	for _, want := range []string{"CapInh: 0000000000000000", "CapPrm: 0000000000000000", "CapEff: 0000000000000000", "CapBnd: 0000000000000000", "CapAmb: 0000000000000000", "NoNewPrivs: 1", "Seccomp: 2", "Uid: 1000 1000 1000 1000"} {
		if !strings.Contains(st.Detail, want) {
			t.Errorf("status: missing %q", want)
		}
	}
	if p.UserNS() {
		if strings.Contains(st.Detail, "uid_map: 0 0 4294967295") || !strings.Contains(st.Detail, "uid_map: 0 ") {
			t.Errorf("status: container root is host root: %s", st.Detail)
		}
	} else {
		t.Log("no user namespace on this host: the worker runs as an unprivileged host uid")
	}
	nif, ok, _ := probeIn(t, a, "netifs")
	if !ok || nif.Detail != "lo" {
		t.Errorf("network interfaces: got %q; want only lo", nif.Detail)
	}
}

func acceptAll(l net.Listener) {
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		c.Close()
	}
}

// Everything the worker writes goes to tmpfs, and a request empties it.
func TestTmpfsEmptiedBetweenRequests(t *testing.T) {
	p := newPool(t, runc.Config{})
	ctx := context.Background()
	l, err := p.Checkout(ctx, "openai", "u")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Release()
	if r, ok, err := probeIn(t, l, "write_keep", "/tmp/leftover"); !ok || !r.Allowed {
		t.Fatalf("write /tmp: %+v %v", r, err)
	}
	r, _, _ := probeIn(t, l, "ls", "/tmp")
	if r.Detail != "leftover" {
		t.Fatalf("ls /tmp before: got %q", r.Detail)
	}
	if _, err := collect(ctx, l, echoTask("u", "", 0, "x")); err != nil {
		t.Fatal(err)
	}
	r, _, _ = probeIn(t, l, "ls", "/tmp")
	if r.Detail != "" {
		t.Errorf("ls /tmp after a request: got %q; want empty", r.Detail)
	}
	var buf bytes.Buffer
	buf.WriteString("")
}
