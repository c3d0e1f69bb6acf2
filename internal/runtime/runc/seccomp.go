package runc

import (
	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// seccompProfile is a deny-list: every system call is allowed except those
// below, which fail with EPERM (clone3 with ENOSYS, so that C libraries and
// the Go runtime fall back to clone, whose flags can be inspected).
//
// Why a deny-list and not an allow-list: the worker is one static Go binary
// whose runtime's system calls change between Go releases; an allow-list
// that is one call short breaks workers in production in ways that are hard
// to see. The deny-list sits on top of the other layers — a user namespace,
// no capabilities at all, no_new_privs, a read-only rootfs, a network
// namespace with loopback only — and removes the kernel surfaces that
// escapes and privilege escalations historically go through: new
// namespaces (unshare, setns, clone with namespace flags), mounts, ptrace and
// cross-process memory access, keyrings, BPF, perf, userfaultfd, kernel
// modules and kexec, raw and packet sockets.
func seccompProfile() *specs.LinuxSeccomp {
	eperm := uint(1) // EPERM
	enosys := uint(38)
	denied := []string{
		"mount", "umount", "umount2", "pivot_root", "chroot", "move_mount", "open_tree",
		"fsopen", "fsconfig", "fsmount", "fspick", "mount_setattr",
		"unshare", "setns",
		"ptrace", "process_vm_readv", "process_vm_writev", "kcmp", "pidfd_getfd",
		"keyctl", "add_key", "request_key",
		"bpf", "perf_event_open", "userfaultfd", "lookup_dcookie",
		"init_module", "finit_module", "delete_module", "kexec_load", "kexec_file_load",
		"reboot", "swapon", "swapoff", "acct", "quotactl", "quotactl_fd",
		"settimeofday", "clock_settime", "clock_adjtime", "adjtimex", "stime",
		"iopl", "ioperm", "syslog", "vhangup", "personality",
		"open_by_handle_at", "name_to_handle_at",
		"nfsservctl", "uselib", "sysfs", "_sysctl", "ustat",
		"io_uring_setup", "io_uring_enter", "io_uring_register",
		"fanotify_init", "mbind", "migrate_pages", "move_pages", "set_mempolicy",
	}
	const (
		afPacket  = 17
		afInet    = 2
		afInet6   = 10
		sockRaw   = 3
		sockType  = 0xf // the type bits, without SOCK_NONBLOCK and SOCK_CLOEXEC
		nsFlags   = 0x7E020000
		newUser   = 0x10000000
		newNS     = 0x00020000
		newNet    = 0x40000000
		newPID    = 0x20000000
		newCgroup = 0x02000000
		newIPC    = 0x08000000
		newUTS    = 0x04000000
	)
	rules := []specs.LinuxSyscall{
		{Names: denied, Action: specs.ActErrno, ErrnoRet: &eperm},
		{Names: []string{"clone3"}, Action: specs.ActErrno, ErrnoRet: &enosys},
		// Packet sockets, whatever the type.
		{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: afPacket, Op: specs.OpEqualTo}}},
	}
	// Raw IPv4 and IPv6 sockets.
	for _, family := range []uint64{afInet, afInet6} {
		rules = append(rules, specs.LinuxSyscall{Names: []string{"socket"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{
				{Index: 0, Value: family, Op: specs.OpEqualTo},
				{Index: 1, Value: sockType, ValueTwo: sockRaw, Op: specs.OpMaskedEqual},
			}})
	}
	// clone with any namespace flag (the flags are clone's first argument on
	// x86-64).
	for _, f := range []uint64{newUser, newNS, newNet, newPID, newCgroup, newIPC, newUTS} {
		rules = append(rules, specs.LinuxSyscall{Names: []string{"clone"}, Action: specs.ActErrno, ErrnoRet: &eperm,
			Args: []specs.LinuxSeccompArg{{Index: 0, Value: f, ValueTwo: f, Op: specs.OpMaskedEqual}}})
	}
	return &specs.LinuxSeccomp{
		DefaultAction: specs.ActAllow,
		Architectures: []specs.Arch{specs.ArchX86_64, specs.ArchX86, specs.ArchX32},
		Syscalls:      rules,
	}
}
