package firecracker

import (
	"errors"
	"fmt"
	"os"
	"os/exec"

	"golang.org/x/sys/unix"
)

// KVM ioctls (linux/kvm.h).
const (
	kvmGetAPIVersion = 0xAE00
	kvmCreateVM      = 0xAE01
	kvmAPIVersion    = 12
)

// KVMUsable reports, as an error saying why not, whether this host can run
// KVM guests: /dev/kvm opens read-write, speaks the stable API and lets
// this process create a VM. A /dev/kvm that exists is not enough (nested
// virtualisation switched off, a container without the device cgroup).
func KVMUsable() error {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("kvm: %w", err)
	}
	defer f.Close()
	v, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmGetAPIVersion, 0)
	if errno != 0 {
		return fmt.Errorf("kvm: KVM_GET_API_VERSION: %w", errno)
	}
	if v != kvmAPIVersion {
		return fmt.Errorf("kvm: api version %d, want %d", v, kvmAPIVersion)
	}
	vm, _, errno := unix.Syscall(unix.SYS_IOCTL, f.Fd(), kvmCreateVM, 0)
	if errno != 0 {
		return fmt.Errorf("kvm: KVM_CREATE_VM: %w", errno)
	}
	unix.Close(int(vm))
	return nil
}

// Available reports, as an error saying why not, whether this host can run
// the driver as configured: the firecracker binary (and the jailer, when
// configured) is found and KVM is usable.
func Available(cfg Config) error {
	if err := cfg.setDefaults(); err != nil {
		return err
	}
	var errs []error
	if _, err := exec.LookPath(cfg.Binary); err != nil {
		errs = append(errs, fmt.Errorf("firecracker binary %q not found: %w", cfg.Binary, err))
	}
	if cfg.Jailer != nil {
		if _, err := exec.LookPath(cfg.Jailer.Binary); err != nil {
			errs = append(errs, fmt.Errorf("jailer binary %q not found: %w", cfg.Jailer.Binary, err))
		}
	}
	if err := KVMUsable(); err != nil {
		errs = append(errs, err)
	}
	return errors.Join(errs...)
}
