package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/sandbox"
	"polydev/internal/sandbox/firecracker"
	"polydev/internal/sandbox/qemu"
	"polydev/internal/sandbox/testimage"
	"polydev/internal/store"
)

// vmFlags are serve's login-VM settings (docs/sandbox.md).
type vmFlags struct {
	driver                 string
	root                   string
	max, warm              int
	lifetime               time.Duration
	hostID                 string
	kernel, initrd, rootfs string
	cmdline                string
	fcBinary               string
	jailerUID, jailerGID   int
	jailerChroot           string
}

func addVMFlags(fs *flag.FlagSet) *vmFlags {
	f := &vmFlags{}
	host, _ := os.Hostname()
	fs.StringVar(&f.driver, "vm-driver", os.Getenv("POLYDEV_VM_DRIVER"),
		"login VM driver: qemu, firecracker or none (env POLYDEV_VM_DRIVER; default none, or with --dev what works on this host)")
	fs.StringVar(&f.root, "vm-root", envOr("POLYDEV_VM_ROOT", sandbox.DefaultRoot), "login VM state root (env POLYDEV_VM_ROOT)")
	fs.IntVar(&f.max, "vm-max", envInt("POLYDEV_VM_MAX", 8), "most login VMs alive at once, warm pool included (env POLYDEV_VM_MAX)")
	fs.IntVar(&f.warm, "vm-warm", envInt("POLYDEV_VM_WARM", 2), "login VMs kept booted and ready; 0 for none (env POLYDEV_VM_WARM)")
	fs.DurationVar(&f.lifetime, "vm-lifetime", envDuration("POLYDEV_VM_LIFETIME", 10*time.Minute),
		"a login VM is destroyed this long after it was given to a user (env POLYDEV_VM_LIFETIME)")
	fs.StringVar(&f.hostID, "vm-host-id", envOr("POLYDEV_VM_HOST_ID", host), "this host's id in vm_sessions (env POLYDEV_VM_HOST_ID)")
	fs.StringVar(&f.kernel, "vm-kernel", os.Getenv("POLYDEV_VM_KERNEL"),
		"login image kernel (env POLYDEV_VM_KERNEL; with --dev and none given, a test image is built from this host's kernel and a static polydev or polydev-agent)")
	fs.StringVar(&f.initrd, "vm-initrd", os.Getenv("POLYDEV_VM_INITRD"), "login image initramfs (env POLYDEV_VM_INITRD)")
	fs.StringVar(&f.rootfs, "vm-rootfs", os.Getenv("POLYDEV_VM_ROOTFS"), "login image golden root disk, raw (env POLYDEV_VM_ROOTFS)")
	fs.StringVar(&f.cmdline, "vm-cmdline", os.Getenv("POLYDEV_VM_CMDLINE"), "login image kernel command line (env POLYDEV_VM_CMDLINE)")
	fs.StringVar(&f.fcBinary, "vm-firecracker", envOr("POLYDEV_VM_FIRECRACKER", "firecracker"), "firecracker binary (env POLYDEV_VM_FIRECRACKER)")
	fs.IntVar(&f.jailerUID, "vm-jailer-uid", envInt("POLYDEV_VM_JAILER_UID", 0),
		"run Firecracker through its jailer as this uid (env POLYDEV_VM_JAILER_UID; 0: no jailer)")
	fs.IntVar(&f.jailerGID, "vm-jailer-gid", envInt("POLYDEV_VM_JAILER_GID", 0), "the jailer's gid (env POLYDEV_VM_JAILER_GID)")
	fs.StringVar(&f.jailerChroot, "vm-jailer-chroot", os.Getenv("POLYDEV_VM_JAILER_CHROOT"),
		"the jailer's chroot base, on the file system of the image (env POLYDEV_VM_JAILER_CHROOT; default: inside each VM's state dir)")
	return f
}

func envInt(name string, def int) int {
	if n, err := strconv.Atoi(os.Getenv(name)); err == nil {
		return n
	}
	return def
}

// startLoginVMs builds the driver and the Manager the flags ask for and
// puts them in cfg. With no driver (none, or --dev on a host that cannot
// run VMs) the login VM API stays disabled. The returned function closes
// the Manager, destroying every VM.
func (f *vmFlags) startLoginVMs(ctx context.Context, log *slog.Logger, st store.Store, data string, cfg *controlplane.Config) (func(), error) {
	noop := func() {}
	driver := f.driver
	auto := driver == "" && cfg.Dev
	if auto {
		driver = f.autoDriver()
	}
	if driver == "" || driver == "none" {
		log.Info("login VMs: disabled", "hint", "--vm-driver qemu|firecracker")
		return noop, nil
	}
	if auto && os.Geteuid() != 0 {
		log.Warn("login VMs: disabled", "reason", "they need root (tap devices, cgroups)")
		return noop, nil
	}
	img, err := f.image(ctx, data, cfg.Dev)
	if err != nil {
		if auto {
			log.Warn("login VMs: disabled", "driver", driver, "reason", err.Error())
			return noop, nil
		}
		return nil, err
	}
	var drv sandbox.Driver
	switch driver {
	case "qemu":
		drv, err = qemu.New(ctx, qemu.Options{ProbeKernel: img.Kernel})
	case "firecracker":
		fc := firecracker.Config{Binary: f.fcBinary}
		if f.jailerUID != 0 {
			fc.Jailer = &firecracker.JailerConfig{UID: f.jailerUID, GID: f.jailerGID, ChrootBase: f.jailerChroot}
		}
		if err = firecracker.Available(fc); err == nil {
			drv, err = firecracker.New(fc)
		}
	default:
		return nil, fmt.Errorf("--vm-driver %q: want qemu, firecracker or none", driver)
	}
	if err != nil {
		if auto {
			log.Warn("login VMs: disabled", "driver", driver, "reason", err.Error())
			return noop, nil
		}
		return nil, fmt.Errorf("login VMs: %w", err)
	}
	if f.hostID == "" {
		return nil, errors.New("login VMs: --vm-host-id is required (the host name is unknown)")
	}
	warm := f.warm
	if warm <= 0 {
		warm = -1 // the Manager's "none"
	}
	mcfg := sandbox.Config{Root: f.root, HostID: f.hostID, Image: img, MaxVMs: f.max, PoolSize: warm, MaxLifetime: f.lifetime}
	mgr, err := sandbox.NewManager(ctx, mcfg, drv, controlplane.NewVMRecorder(st, log), log)
	if err != nil {
		if auto {
			log.Warn("login VMs: disabled", "driver", driver, "reason", err.Error())
			return noop, nil
		}
		return nil, fmt.Errorf("login VMs: %w", err)
	}
	cfg.LoginVMs, cfg.LoginVMHost, cfg.LoginVMLifetime = mgr, f.hostID, f.lifetime
	log.Info("login VMs: enabled", "driver", drv.Name(), "root", mgr.Config().Root, "max", f.max, "warm", max(warm, 0),
		"lifetime", f.lifetime.String(), "host_id", f.hostID)
	return func() { mgr.Close(context.WithoutCancel(ctx)) }, nil
}

// autoDriver is --dev's choice: Firecracker where it can run and an image
// for it is configured (Firecracker boots only an uncompressed kernel with
// a vsock agent, which the built test image is not), else QEMU, which runs
// anywhere (with KVM or software emulation), else none.
func (f *vmFlags) autoDriver() string {
	if f.kernel != "" && firecracker.Available(firecracker.Config{Binary: f.fcBinary}) == nil {
		return "firecracker"
	}
	if _, err := exec.LookPath("qemu-system-x86_64"); err == nil {
		return "qemu"
	}
	return "none"
}

// image is the configured login image, or with --dev and none configured,
// the test image built from this host's kernel, busybox and a static
// agent (devAgent).
func (f *vmFlags) image(ctx context.Context, data string, dev bool) (sandbox.Image, error) {
	if f.kernel != "" {
		return sandbox.Image{Kernel: f.kernel, Initrd: f.initrd, Rootfs: f.rootfs, Cmdline: f.cmdline}, nil
	}
	if !dev {
		return sandbox.Image{}, errors.New("login VMs: --vm-kernel is required (see docs/sandbox.md for the login image)")
	}
	agent, err := devAgent()
	if err != nil {
		return sandbox.Image{}, err
	}
	bctx, cancel := context.WithTimeout(ctx, 5*time.Minute)
	defer cancel()
	return testimage.Build(bctx, testimage.Options{CacheDir: filepath.Join(data, "vm-image"), Agent: agent})
}

// devAgent finds a static in-VM agent for the test image: polydev-agent
// beside this binary or in PATH, or this binary itself when it is static
// (the image runs "<agent> agent").
func devAgent() (string, error) {
	var candidates []string
	self, selfErr := os.Executable()
	if selfErr == nil {
		candidates = append(candidates, filepath.Join(filepath.Dir(self), "polydev-agent"))
	}
	if p, err := exec.LookPath("polydev-agent"); err == nil {
		candidates = append(candidates, p)
	}
	if selfErr == nil {
		candidates = append(candidates, self)
	}
	for _, c := range candidates {
		if testimage.StaticBinary(c) {
			return c, nil
		}
	}
	return "", errors.New("no --vm-kernel, and no static agent for the test image: build polydev with CGO_ENABLED=0, " +
		"or put a static polydev-agent beside it (CGO_ENABLED=0 go build ./cmd/polydev-agent), or pass --vm-kernel and --vm-initrd")
}
