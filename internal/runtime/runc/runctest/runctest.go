// Package runctest gives tests a runtime image and pool roots for real runc
// containers: the static polydev binary is built once per test process, the
// image made from it, and both removed when the tests end.
//
// A package using it runs its tests through Main:
//
//	func TestMain(m *testing.M) { os.Exit(runctest.Main(m)) }
//
// and a test needing containers calls Image (which skips, or fails under
// CI=true, without root or runc) and NewPool.
package runctest

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"polydev/internal/runtime/runc"
	"polydev/internal/testenv"
)

var (
	once   sync.Once
	tmp    string
	bin    string
	image  string
	errImg error
)

// Main runs the tests and removes the image afterwards.
func Main(m *testing.M) int {
	code := m.Run()
	if tmp != "" {
		os.RemoveAll(tmp)
	}
	return code
}

// Need skips (or, under CI, fails) a test without root or runc.
func Need(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "runtime containers need root (runc)")
	}
	testenv.LookPath(t, "runc", "apt-get install runc")
}

// Image returns the runtime image directory, building it on first use.
func Image(t testing.TB) string {
	t.Helper()
	Need(t)
	once.Do(func() {
		if tmp, errImg = os.MkdirTemp("", "polydev-runctest-"); errImg != nil {
			return
		}
		// The containers' mapped users must traverse it.
		if errImg = os.Chmod(tmp, 0o711); errImg != nil {
			return
		}
		bin = filepath.Join(tmp, "polydev")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", bin, "./cmd/polydev")
		cmd.Dir = testenv.RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			errImg = fmt.Errorf("go build: %v: %s", err, out)
			return
		}
		m, err := runc.LoadManifest("runtime")
		if err != nil {
			errImg = err
			return
		}
		image = filepath.Join(tmp, "image")
		_, errImg = runc.Build(m, bin, image)
	})
	if errImg != nil {
		t.Fatal(errImg)
	}
	return image
}

// Binary is the static polydev binary the image holds.
func Binary(t testing.TB) string {
	t.Helper()
	Image(t)
	return bin
}

// Root returns a fresh pool root, removed when the test ends.
func Root(t testing.TB) string {
	t.Helper()
	Image(t)
	d, err := os.MkdirTemp(tmp, "root-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

// NewPool starts a pool for a test (image, root and a test logger filled
// in when empty; no background refill unless cfg asks) and closes it when
// the test ends.
func NewPool(t testing.TB, cfg runc.Config) *runc.Pool {
	t.Helper()
	if cfg.Image == "" {
		cfg.Image = Image(t)
	}
	if cfg.Root == "" {
		cfg.Root = Root(t)
	}
	if cfg.Log == nil {
		cfg.Log = slog.New(slog.NewTextHandler(testWriter{t}, nil))
	}
	if cfg.Default.MinIdle == 0 {
		cfg.Default.MinIdle = -1
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	p, err := runc.New(ctx, cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

type testWriter struct{ t testing.TB }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Log(string(p))
	return len(p), nil
}
