package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"polydev/internal/sandbox"
	"polydev/internal/sandbox/qemu"
	"polydev/internal/sandbox/testimage"
)

// vmBenchResult is the JSON `polydev bench vm --json` prints.
type vmBenchResult struct {
	N           int            `json:"n"`
	Driver      string         `json:"driver"`
	Accel       string         `json:"accel"`
	AllocateMS  map[string]any `json:"allocate_ms"`
	BootReadyMS map[string]any `json:"boot_to_ready_ms"`
	DestroyMS   map[string]any `json:"destroy_ms"`
	Leftovers   int            `json:"leftovers"`
}

func runBenchVM(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "bench vm [--json] [--n N]", `
Measures the login VM manager on this host with the test image (Debian's
cloud kernel, busybox, the static agent): allocation from a warm pool of one
VM (p50/p99), cold boot to ready of the pool's VMs (p50/p99), destroy
(p50/p99), and leftovers — everything on the host a snapshot finds under the
manager's state root, tap devices, cgroups and mounts after the manager
closed, which must be 0. Needs root, qemu-system-x86_64, qemu-img, the
linux-image-cloud-amd64 package and busybox-static; boots N+1 VMs.`)
	asJSON := fs.Bool("json", false, "print JSON")
	n := fs.Int("n", 10, "allocations to measure")
	agent := fs.String("agent", "", "static agent binary for the test image (default: this executable if static, else build cmd/polydev-agent with --src)")
	src := fs.String("src", "", "source tree to build the agent from when this executable is not static")
	cache := fs.String("image-cache", filepath.Join(os.TempDir(), "polydev-bench-vm-image"), "where the test image is built")
	accel := fs.String("accel", qemu.AccelAuto, "QEMU accelerator: auto, kvm or tcg")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *n < 1 {
		return fmt.Errorf("--n must be at least 1")
	}
	if os.Geteuid() != 0 {
		return errors.New("needs root (tap devices, cgroups)")
	}
	img, err := benchImage(ctx, *agent, *src, *cache)
	if err != nil {
		return err
	}
	drv, err := qemu.New(ctx, qemu.Options{Accel: *accel, ProbeKernel: img.Kernel})
	if err != nil {
		return err
	}
	root, err := os.MkdirTemp("", "polydev-bench-vm-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(root)
	root = filepath.Join(root, "vms")
	before := sandbox.Snapshot(root, "/sys/fs/cgroup")
	cfg := sandbox.Config{Root: root, HostID: "bench", Image: img, PoolSize: 1, MaxVMs: 2, ReconcileEvery: -1, BootTimeout: 5 * time.Minute}
	rec := &benchRecorder{}
	log := slog.New(slog.DiscardHandler)
	mgr, err := sandbox.NewManager(ctx, cfg, drv, rec, log)
	if err != nil {
		return err
	}
	var alloc, destroy []time.Duration
	runErr := func() error {
		for i := 0; i < *n; i++ {
			for mgr.PoolReady() < 1 {
				if ctx.Err() != nil {
					return ctx.Err()
				}
				time.Sleep(5 * time.Millisecond)
			}
			sid := fmt.Sprintf("bench-%d", i)
			start := time.Now()
			if _, err := mgr.Allocate(ctx, sandbox.Owner{SessionID: sid}); err != nil {
				return err
			}
			alloc = append(alloc, time.Since(start))
			start = time.Now()
			r, err := mgr.Destroy(ctx, sid)
			if err != nil {
				return err
			}
			destroy = append(destroy, time.Since(start))
			if !r.Clean() {
				return fmt.Errorf("destroy %s: %v", r.VMID, r.Errors)
			}
			if !*asJSON {
				fmt.Fprintf(e.stderr, "  %d/%d: allocate %v, destroy %v\n", i+1, *n, alloc[i].Round(time.Microsecond), destroy[i].Round(time.Millisecond))
			}
		}
		return nil
	}()
	closeErr := mgr.Close(context.WithoutCancel(ctx))
	if runErr != nil {
		return runErr
	}
	if closeErr != nil {
		return closeErr
	}
	left := before.Diff(sandbox.Snapshot(root, "/sys/fs/cgroup"))
	boots := rec.boots()
	res := vmBenchResult{
		N: *n, Driver: drv.Name(), Accel: drv.Accel(),
		AllocateMS:  map[string]any{"p50": percentile(alloc, 50), "p99": percentile(alloc, 99)},
		BootReadyMS: map[string]any{"p50": percentile(boots, 50), "p99": percentile(boots, 99), "n": len(boots)},
		DestroyMS:   map[string]any{"p50": percentile(destroy, 50), "p99": percentile(destroy, 99)},
		Leftovers:   len(left),
	}
	for _, l := range left {
		fmt.Fprintln(e.stderr, "leftover:", l)
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		if err := enc.Encode(res); err != nil {
			return err
		}
	} else {
		fmt.Fprintf(e.stdout, "login VMs (%s, %s), n=%d\n", res.Driver, res.Accel, res.N)
		fmt.Fprintf(e.stdout, "  allocate from warm pool  p50 %.3f ms  p99 %.3f ms\n", res.AllocateMS["p50"], res.AllocateMS["p99"])
		fmt.Fprintf(e.stdout, "  cold boot to ready       p50 %.0f ms  p99 %.0f ms (%d boots)\n", res.BootReadyMS["p50"], res.BootReadyMS["p99"], len(boots))
		fmt.Fprintf(e.stdout, "  destroy                  p50 %.1f ms  p99 %.1f ms\n", res.DestroyMS["p50"], res.DestroyMS["p99"])
		fmt.Fprintf(e.stdout, "  leftovers                %d\n", res.Leftovers)
	}
	if res.Leftovers > 0 {
		return fmt.Errorf("%d leftovers on the host", res.Leftovers)
	}
	return nil
}

// benchImage builds (or finds in the cache) the test image.
func benchImage(ctx context.Context, agent, src, cache string) (sandbox.Image, error) {
	if agent == "" {
		self, err := os.Executable()
		if err == nil && testimage.StaticBinary(self) {
			agent = self
		} else if src != "" {
			agent = filepath.Join(cache, "polydev-agent")
			if err := os.MkdirAll(cache, 0o755); err != nil {
				return sandbox.Image{}, err
			}
			if err := testimage.BuildAgent(ctx, src, agent); err != nil {
				return sandbox.Image{}, err
			}
		} else {
			return sandbox.Image{}, errors.New("this executable is not static: pass --agent (a binary built with CGO_ENABLED=0 from ./cmd/polydev-agent) or --src (the source tree)")
		}
	}
	return testimage.Build(ctx, testimage.Options{CacheDir: cache, Agent: agent})
}

// benchRecorder collects boot-to-ready times from the transitions.
type benchRecorder struct {
	mu      sync.Mutex
	booting map[string]time.Time
	ready   []time.Duration
}

func (r *benchRecorder) Status(_ context.Context, t sandbox.Transition) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.booting == nil {
		r.booting = map[string]time.Time{}
	}
	switch t.Status {
	case sandbox.StatusBooting:
		r.booting[t.VMID] = t.At
	case sandbox.StatusReady:
		if b, ok := r.booting[t.VMID]; ok {
			r.ready = append(r.ready, t.At.Sub(b))
		}
	}
	return nil
}

func (r *benchRecorder) Removed(context.Context, sandbox.Report) error { return nil }

func (r *benchRecorder) boots() []time.Duration {
	r.mu.Lock()
	defer r.mu.Unlock()
	return append([]time.Duration(nil), r.ready...)
}
