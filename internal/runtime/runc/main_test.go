package runc_test

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

// The image every test shares: built once from a static polydev binary.
var (
	imageOnce sync.Once
	imageDir  string
	imageBin  string
	imageErr  error
	tmpRoot   string
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	code := m.Run()
	if tmpRoot != "" {
		os.RemoveAll(tmpRoot)
	}
	os.Exit(code)
}

// need skips (or, under CI, fails) a test without root or runc.
func need(t *testing.T) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "runtime containers need root (runc)")
	}
	testenv.LookPath(t, "runc", "apt-get install runc")
}

// image returns the runtime image directory, building it on first use.
func image(t *testing.T) string {
	t.Helper()
	need(t)
	imageOnce.Do(func() {
		tmpRoot, imageErr = os.MkdirTemp("", "polydev-runc-test-")
		if imageErr != nil {
			return
		}
		if imageErr = os.Chmod(tmpRoot, 0o711); imageErr != nil {
			return
		}
		imageBin = filepath.Join(tmpRoot, "polydev")
		cmd := exec.Command("go", "build", "-trimpath", "-ldflags=-s -w", "-o", imageBin, "./cmd/polydev")
		cmd.Dir = testenv.RepoRoot(t)
		cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
		if out, err := cmd.CombinedOutput(); err != nil {
			imageErr = fmt.Errorf("go build: %v: %s", err, out)
			return
		}
		m, err := runc.LoadManifest("runtime")
		if err != nil {
			imageErr = err
			return
		}
		imageDir = filepath.Join(tmpRoot, "image")
		_, imageErr = runc.Build(m, imageBin, imageDir)
	})
	if imageErr != nil {
		t.Fatal(imageErr)
	}
	return imageDir
}

// newRoot returns a fresh pool root directory traversable by the
// containers' users.
func newRoot(t *testing.T) string {
	t.Helper()
	image(t)
	d, err := os.MkdirTemp(tmpRoot, "root-")
	if err != nil {
		t.Fatal(err)
	}
	if err := os.Chmod(d, 0o711); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { os.RemoveAll(d) })
	return d
}

func testLogger(t *testing.T) *slog.Logger {
	return slog.New(slog.NewTextHandler(testWriter{t}, &slog.HandlerOptions{Level: slog.LevelInfo}))
}

type testWriter struct{ t *testing.T }

func (w testWriter) Write(p []byte) (int, error) {
	w.t.Helper()
	w.t.Log(string(p))
	return len(p), nil
}

// newPool starts a pool for a test and closes it at the end.
func newPool(t *testing.T, cfg runc.Config) *runc.Pool {
	t.Helper()
	if cfg.Image == "" {
		cfg.Image = image(t)
	}
	if cfg.Root == "" {
		cfg.Root = newRoot(t)
	}
	if cfg.Log == nil {
		cfg.Log = testLogger(t)
	}
	if cfg.Default.MinIdle == 0 {
		cfg.Default.MinIdle = -1 // no background refill unless asked
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
