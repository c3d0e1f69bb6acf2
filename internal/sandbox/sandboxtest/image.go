package sandboxtest

import (
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"polydev/internal/sandbox"
	"polydev/internal/sandbox/testimage"
	"polydev/internal/testenv"
)

var (
	imgOnce sync.Once
	img     sandbox.Image
	imgErr  error
)

// CacheDir is where tests keep the built test image between runs.
func CacheDir() string { return filepath.Join(os.TempDir(), "polydev-test-image-vm") }

// Image returns the test image, building it (and a static polydev agent
// from this source tree) on first use; it calls testenv.Missing when this
// host cannot run VMs (not root, no qemu, no kernel, no static busybox).
func Image(t testing.TB) sandbox.Image {
	t.Helper()
	Require(t)
	imgOnce.Do(func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Minute)
		defer cancel()
		dir := CacheDir()
		if imgErr = os.MkdirAll(dir, 0o755); imgErr != nil {
			return
		}
		tmp, err := os.CreateTemp(dir, "agent-")
		if err != nil {
			imgErr = err
			return
		}
		tmp.Close()
		defer os.Remove(tmp.Name())
		if imgErr = testimage.BuildAgent(ctx, testenv.RepoRoot(t), tmp.Name()); imgErr != nil {
			return
		}
		img, imgErr = testimage.Build(ctx, testimage.Options{CacheDir: dir, Agent: tmp.Name()})
	})
	if imgErr != nil {
		t.Fatalf("build test image: %v", imgErr)
	}
	return img
}

// Require calls testenv.Missing unless this host can run the VM tests.
func Require(t testing.TB) {
	t.Helper()
	if os.Geteuid() != 0 {
		testenv.Missing(t, "login VM tests need root (taps, cgroups)")
	}
	testenv.LookPath(t, "qemu-system-x86_64", "apt-get install qemu-system-x86")
	testenv.LookPath(t, "qemu-img", "apt-get install qemu-utils")
	if _, _, err := testimage.FindKernel(); err != nil {
		testenv.Missing(t, "%v", err)
	}
	if !testimage.StaticBinary("/bin/busybox") {
		testenv.Missing(t, "/bin/busybox is not static (apt-get install busybox-static)")
	}
	if _, err := exec.LookPath("go"); err != nil {
		testenv.Missing(t, "go toolchain needed to build the in-VM agent")
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testenv.Missing(t, "/dev/net/tun missing (tap devices)")
	}
}
