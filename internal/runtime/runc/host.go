package runc

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"time"

	gorunc "github.com/containerd/go-runc"
	specs "github.com/opencontainers/runtime-spec/specs-go"
	"golang.org/x/sys/unix"
)

func lookPath(name string) (string, error) { return exec.LookPath(name) }

// tailBuffer keeps the last few KiB a container (and runc) wrote to
// stderr, for error messages. The worker never writes secrets there.
type tailBuffer struct {
	mu sync.Mutex
	b  []byte
}

func (t *tailBuffer) Write(p []byte) (int, error) {
	t.mu.Lock()
	defer t.mu.Unlock()
	t.b = append(t.b, p...)
	if len(t.b) > 4096 {
		t.b = append([]byte(nil), t.b[len(t.b)-4096:]...)
	}
	return len(p), nil
}

func (t *tailBuffer) String() string {
	t.mu.Lock()
	defer t.mu.Unlock()
	return strings.TrimSpace(string(t.b))
}

// stdio gives runc and the container /dev/null for stdin and stdout and a
// pipe for stderr, read into a tailBuffer. Real files keep exec.Cmd from
// waiting on the detached container's copies.
type stdio struct {
	null *os.File
	r, w *os.File
}

var _ gorunc.IO = (*stdio)(nil)

func newStdio(tail *tailBuffer) (*stdio, error) {
	null, err := os.OpenFile(os.DevNull, os.O_RDWR, 0)
	if err != nil {
		return nil, err
	}
	r, w, err := os.Pipe()
	if err != nil {
		null.Close()
		return nil, err
	}
	go func() {
		br := bufio.NewReader(r)
		_, _ = io.Copy(tail, br)
		r.Close()
	}()
	return &stdio{null: null, r: r, w: w}, nil
}

func (s *stdio) Stdin() io.WriteCloser  { return nil }
func (s *stdio) Stdout() io.ReadCloser  { return nil }
func (s *stdio) Stderr() io.ReadCloser  { return nil }
func (s *stdio) Close() error           { s.closeChildEnds(); return nil }
func (s *stdio) closeChildEnds()        { s.null.Close(); s.w.Close() }
func (s *stdio) Set(cmd *exec.Cmd)      { cmd.Stdin, cmd.Stdout, cmd.Stderr = s.null, s.null, s.w }
func (s *stdio) CloseAfterStart() error { return nil }

// cgroupRoot is where cgroup v1 controllers (or the v2 tree) are mounted.
const cgroupRoot = "/sys/fs/cgroup"

// cgroupDirs lists the cgroup directories named name in every hierarchy.
func cgroupDirs(match func(string) bool) []string {
	var out []string
	ctrls, _ := os.ReadDir(cgroupRoot)
	dirs := []string{cgroupRoot}
	for _, c := range ctrls {
		if c.IsDir() {
			dirs = append(dirs, filepath.Join(cgroupRoot, c.Name()))
		}
	}
	for _, d := range dirs {
		ents, _ := os.ReadDir(d)
		for _, e := range ents {
			if e.IsDir() && match(e.Name()) {
				out = append(out, filepath.Join(d, e.Name()))
			}
		}
	}
	return out
}

// removeCgroups removes the cgroups of container id that runc left (it
// normally removes them itself), killing any process still in them.
func removeCgroups(id string, log *slog.Logger) int {
	n := 0
	for _, d := range cgroupDirs(func(name string) bool { return name == id }) {
		if drainCgroup(d, log) {
			n++
		}
	}
	return n
}

// drainCgroup kills the processes in cgroup dir d, waits for the kernel to
// let them go, and removes d. It reports whether d was removed.
func drainCgroup(d string, log *slog.Logger) bool {
	var err error
	for try := 0; try < 100; try++ {
		if b, rerr := os.ReadFile(filepath.Join(d, "cgroup.procs")); rerr == nil {
			for _, f := range strings.Fields(string(b)) {
				var pid int
				if _, err := fmt.Sscan(f, &pid); err == nil && pid > 0 {
					_ = unix.Kill(pid, unix.SIGKILL)
				}
			}
		}
		if err = unix.Rmdir(d); err == nil || errors.Is(err, unix.ENOENT) {
			return err == nil
		}
		if !errors.Is(err, unix.EBUSY) {
			break
		}
		time.Sleep(20 * time.Millisecond)
	}
	log.Warn("runtime pool: remove cgroup failed", "cgroup", d, "err", err)
	return false
}

// mountsUnder lists mount points at or below dir, deepest first.
func mountsUnder(dir string) []string {
	b, err := os.ReadFile("/proc/self/mountinfo")
	if err != nil {
		return nil
	}
	var out []string
	for _, l := range strings.Split(string(b), "\n") {
		f := strings.Fields(l)
		if len(f) > 4 && (f[4] == dir || strings.HasPrefix(f[4], dir+"/")) {
			out = append(out, f[4])
		}
	}
	for i, j := 0, len(out)-1; i < j; i, j = i+1, j-1 {
		out[i], out[j] = out[j], out[i]
	}
	return out
}

// Reconcile removes everything under the pool's names that no live
// container record owns: runc containers under its root, container
// directories (with their sockets and any mounts), and cgroups. New runs it
// before anything starts (the start-up reclaim); the loop runs it on a
// timer. Each removal is logged.
func (p *Pool) Reconcile(ctx context.Context) error {
	// A container that starts while this runs is in p.all before runc
	// or the filesystem know it, so asking p.all at each step is enough.
	live := func(id string) bool {
		p.mu.Lock()
		defer p.mu.Unlock()
		return p.all[id] != nil
	}
	n := 0
	list, err := p.rc.List(ctx)
	if err != nil {
		return fmt.Errorf("runtime pool: reconcile: runc list: %w", err)
	}
	for _, c := range list {
		if live(c.ID) {
			continue
		}
		if err := p.rc.Delete(ctx, c.ID, &gorunc.DeleteOpts{Force: true}); err != nil {
			p.log.Warn("runtime pool: reclaim container failed", "container", c.ID, "err", err)
			continue
		}
		n++
		p.log.Info("runtime pool: reclaimed container", "container", c.ID, "status", c.Status)
	}
	for _, d := range cgroupDirs(func(name string) bool { return strings.HasPrefix(name, p.prefix+"-") && !live(name) }) {
		// A cgroup whose processes survived runc delete.
		if !drainCgroup(d, p.log) {
			continue
		}
		n++
		p.log.Info("runtime pool: reclaimed cgroup", "cgroup", d)
	}
	cdir := filepath.Join(p.cfg.Root, "c")
	ents, _ := os.ReadDir(cdir)
	for _, e := range ents {
		if live(e.Name()) {
			continue
		}
		dir := filepath.Join(cdir, e.Name())
		for _, m := range mountsUnder(dir) {
			if err := unix.Unmount(m, unix.MNT_DETACH); err != nil {
				p.log.Warn("runtime pool: reclaim mount failed", "mount", m, "err", err)
			} else {
				p.log.Info("runtime pool: reclaimed mount", "mount", m)
			}
		}
		if err := os.RemoveAll(dir); err != nil {
			p.log.Warn("runtime pool: reclaim dir failed", "dir", dir, "err", err)
			continue
		}
		n++
		p.log.Info("runtime pool: reclaimed container dir", "dir", dir)
	}
	p.metrics.reclaimed.Add(float64(n))
	return nil
}

// Exec runs args in the leased container as another worker process (same
// user, capabilities, seccomp profile and limits) and returns what it
// printed, stdout and stderr together. Tests use it for isolation probes.
func (l *Lease) Exec(ctx context.Context, args ...string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(l.c.dir, "config.json"))
	if err != nil {
		return nil, err
	}
	var spec specs.Spec
	if err := json.Unmarshal(b, &spec); err != nil {
		return nil, err
	}
	proc := *spec.Process
	proc.Args = args
	var out bytes.Buffer
	err = l.p.rc.Exec(ctx, l.c.id, proc, &gorunc.ExecOpts{IO: &bufIO{&out}})
	return out.Bytes(), err
}

// InitPID is the host pid of the container's worker.
func (l *Lease) InitPID(ctx context.Context) (int, error) {
	st, err := l.p.rc.State(ctx, l.c.id)
	if err != nil {
		return 0, err
	}
	return st.Pid, nil
}

// Dir is the container's directory on the host.
func (l *Lease) Dir() string { return l.c.dir }

type bufIO struct{ b *bytes.Buffer }

func (b *bufIO) Stdin() io.WriteCloser  { return nil }
func (b *bufIO) Stdout() io.ReadCloser  { return nil }
func (b *bufIO) Stderr() io.ReadCloser  { return nil }
func (b *bufIO) Close() error           { return nil }
func (b *bufIO) Set(cmd *exec.Cmd)      { cmd.Stdout, cmd.Stderr = b.b, b.b }
func (b *bufIO) CloseAfterStart() error { return nil }
