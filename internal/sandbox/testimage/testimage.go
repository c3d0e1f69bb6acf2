// Package testimage builds the tiny login-VM image the tests and
// `polydev bench vm` boot: Debian's cloud kernel as installed on this
// machine, an initramfs holding a static busybox, the virtio modules and the
// static agent (cmd/polydev-agent) that reports ready, and a small
// golden disk each VM sees through its own overlay.
//
// The build downloads nothing and is reproducible: the cpio archive has
// fixed owners and times, and the output directory is named by a hash of
// every input, so a second build with the same inputs is a cache hit.
package testimage

import (
	"bytes"
	"context"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"sort"
	"strings"

	"polydev/internal/sandbox"
)

// Cmdline is the kernel command line: serial console, quiet, reboot at once
// on panic (QEMU's -no-reboot turns that into an exit). Under software
// emulation microvm has no clock the kernel can calibrate the TSC against,
// so tsc_early_khz gives it a nominal frequency (without it boot stalls);
// the rest skips work a throwaway VM does not need.
const Cmdline = "console=ttyS0 quiet panic=-1 tsc_early_khz=2000000 no_timer_check mitigations=off audit=0 security=none cryptomgr.notests"

// GoldenSize is the golden disk's size.
const GoldenSize = 16 << 20

// modules are loaded by /init in this order (dependencies first).
var modules = []string{
	"kernel/drivers/virtio/virtio_ring.ko",
	"kernel/drivers/virtio/virtio.ko",
	"kernel/drivers/virtio/virtio_mmio.ko",
	"kernel/drivers/char/virtio_console.ko",
	"kernel/drivers/block/virtio_blk.ko",
	"kernel/net/core/failover.ko",
	"kernel/drivers/net/net_failover.ko",
	"kernel/drivers/net/virtio_net.ko",
}

const initScript = `#!/bin/busybox sh
/bin/busybox mount -t devtmpfs dev /dev
/bin/busybox mount -t proc proc /proc
/bin/busybox mount -t sysfs sys /sys
for m in %s; do /bin/busybox insmod /lib/modules/$m.ko; done
exec /bin/polydev-agent agent
`

// Options says where the inputs are and where the image goes.
type Options struct {
	CacheDir string // output root; the image goes to CacheDir/<hash>/
	Agent    string // a static agent binary (see BuildAgent), or a static polydev
	Busybox  string // default /bin/busybox (Debian's busybox-static)
	Kernel   string // default: the newest /boot/vmlinuz-*-cloud-amd64
}

// FindKernel returns the newest installed Debian cloud kernel and its
// release name, or an error saying which package provides it.
func FindKernel() (path, release string, err error) {
	ks, _ := filepath.Glob("/boot/vmlinuz-*-cloud-amd64")
	if len(ks) == 0 {
		return "", "", errors.New("no /boot/vmlinuz-*-cloud-amd64 (apt-get install linux-image-cloud-amd64)")
	}
	sort.Slice(ks, func(i, j int) bool { return versionLess(ks[i], ks[j]) })
	path = ks[len(ks)-1]
	return path, strings.TrimPrefix(filepath.Base(path), "vmlinuz-"), nil
}

func versionLess(a, b string) bool {
	out, err := exec.Command("dpkg", "--compare-versions", a, "lt", b).CombinedOutput()
	_ = out
	if err == nil {
		return true
	}
	var ee *exec.ExitError
	if errors.As(err, &ee) {
		return false
	}
	return a < b
}

// StaticBinary reports whether path is a statically linked ELF executable
// (no program interpreter), as the initramfs needs.
func StaticBinary(path string) bool {
	f, err := elf.Open(path)
	if err != nil {
		return false
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return false
		}
	}
	return true
}

// BuildAgent compiles the static agent (cmd/polydev-agent, the code of
// `polydev agent` without the rest of polydev, so the initramfs stays small)
// from the source tree at repoRoot into out (CGO_ENABLED=0, -trimpath and
// no VCS stamp for reproducibility).
func BuildAgent(ctx context.Context, repoRoot, out string) error {
	cmd := exec.CommandContext(ctx, "go", "build", "-trimpath", "-buildvcs=false", "-ldflags=-s -w", "-o", out, "./cmd/polydev-agent")
	cmd.Dir = repoRoot
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0")
	if b, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("build agent: %w: %s", err, b)
	}
	return nil
}

// Build returns the image for o, building it into the cache unless it is
// there already.
func Build(ctx context.Context, o Options) (sandbox.Image, error) {
	if o.Busybox == "" {
		o.Busybox = "/bin/busybox"
	}
	release := ""
	if o.Kernel == "" {
		k, r, err := FindKernel()
		if err != nil {
			return sandbox.Image{}, err
		}
		o.Kernel, release = k, r
	} else {
		release = strings.TrimPrefix(filepath.Base(o.Kernel), "vmlinuz-")
	}
	if !StaticBinary(o.Busybox) {
		return sandbox.Image{}, fmt.Errorf("test image: %s is not a static binary (apt-get install busybox-static)", o.Busybox)
	}
	if !StaticBinary(o.Agent) {
		return sandbox.Image{}, fmt.Errorf("test image: agent %s is not a static binary (build with CGO_ENABLED=0)", o.Agent)
	}
	modDir := filepath.Join("/lib/modules", release)

	// The inputs, in a fixed order; their contents name the output.
	type input struct{ name, src string }
	inputs := []input{{"vmlinuz", o.Kernel}, {"busybox", o.Busybox}, {"polydev", o.Agent}}
	var names []string
	for _, m := range modules {
		inputs = append(inputs, input{"mod/" + filepath.Base(m), filepath.Join(modDir, m)})
		names = append(names, strings.TrimSuffix(filepath.Base(m), ".ko"))
	}
	script := fmt.Sprintf(initScript, strings.Join(names, " "))
	h := sha256.New()
	fmt.Fprintf(h, "polydev test image v1\n%s\n%s\n", script, Cmdline)
	for _, in := range inputs {
		f, err := os.Open(in.src)
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("test image: %w", err)
		}
		fmt.Fprintf(h, "%s\n", in.name)
		_, err = io.Copy(h, f)
		f.Close()
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("test image: read %s: %w", in.src, err)
		}
	}
	key := hex.EncodeToString(h.Sum(nil))[:16]
	dir := filepath.Join(o.CacheDir, key)
	img := sandbox.Image{
		Kernel:  filepath.Join(dir, "vmlinuz"),
		Initrd:  filepath.Join(dir, "initrd.cpio"),
		Rootfs:  filepath.Join(dir, "golden.img"),
		Cmdline: Cmdline,
	}
	if _, err := os.Stat(filepath.Join(dir, "done")); err == nil {
		return img, nil
	}

	if err := os.MkdirAll(o.CacheDir, 0o755); err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	tmp, err := os.MkdirTemp(o.CacheDir, "build-")
	if err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	if err := os.Chmod(tmp, 0o755); err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	defer os.RemoveAll(tmp)
	if err := copyFile(o.Kernel, filepath.Join(tmp, "vmlinuz"), 0o644); err != nil {
		return sandbox.Image{}, err
	}
	var cpio bytes.Buffer
	w := newCPIO(&cpio)
	for _, d := range []string{"bin", "dev", "lib", "lib/modules", "proc", "sys", "tmp"} {
		w.dir(d)
	}
	w.charDev("dev/console", 5, 1)
	w.file("init", 0o755, []byte(script))
	for _, in := range inputs[1:] {
		b, err := os.ReadFile(in.src)
		if err != nil {
			return sandbox.Image{}, fmt.Errorf("test image: %w", err)
		}
		switch {
		case in.name == "busybox":
			w.file("bin/busybox", 0o755, b)
			w.symlink("bin/sh", "busybox")
		case in.name == "polydev":
			w.file("bin/polydev-agent", 0o755, b)
		default:
			w.file("lib/modules/"+strings.TrimPrefix(in.name, "mod/"), 0o644, b)
		}
	}
	if err := w.close(); err != nil {
		return sandbox.Image{}, err
	}
	if err := os.WriteFile(filepath.Join(tmp, "initrd.cpio"), cpio.Bytes(), 0o644); err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	golden := make([]byte, GoldenSize)
	copy(golden, "POLYDEV-GOLDEN-1")
	if err := os.WriteFile(filepath.Join(tmp, "golden.img"), golden, 0o444); err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	if err := os.WriteFile(filepath.Join(tmp, "done"), []byte(key+"\n"), 0o644); err != nil {
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	if err := os.Rename(tmp, dir); err != nil {
		// Built concurrently by another process: use theirs.
		if _, serr := os.Stat(filepath.Join(dir, "done")); serr == nil {
			return img, nil
		}
		return sandbox.Image{}, fmt.Errorf("test image: %w", err)
	}
	return img, nil
}

func copyFile(src, dst string, mode os.FileMode) error {
	b, err := os.ReadFile(src)
	if err != nil {
		return fmt.Errorf("test image: %w", err)
	}
	if err := os.WriteFile(dst, b, mode); err != nil {
		return fmt.Errorf("test image: %w", err)
	}
	return nil
}
