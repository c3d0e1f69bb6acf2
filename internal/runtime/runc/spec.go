package runc

import (
	"path/filepath"
	"strconv"

	specs "github.com/opencontainers/runtime-spec/specs-go"
)

// Limits are a worker container's resource limits.
type Limits struct {
	MemoryBytes int64   // memory and memory+swap; default 256 MiB
	CPUs        float64 // CPU quota in cores; default 0.5
	Pids        int64   // processes and threads; default 64
	TmpBytes    int64   // size of the /tmp tmpfs; default 16 MiB
}

func (l Limits) withDefaults() Limits {
	if l.MemoryBytes == 0 {
		l.MemoryBytes = 256 << 20
	}
	if l.CPUs == 0 {
		l.CPUs = 0.5
	}
	if l.Pids == 0 {
		l.Pids = 64
	}
	if l.TmpBytes == 0 {
		l.TmpBytes = 16 << 20
	}
	return l
}

// workerUID is the worker's uid and gid inside the container: not root even
// there.
const workerUID = 1000

// idMap is the host uid/gid range a container's ids 0..idRange-1 map to.
type idMap struct {
	enabled bool   // a user namespace; else the worker runs as hostUID directly
	hostID  uint32 // host id of container id 0 (userns), or the worker's host uid
}

const idRange = 65536

// hostWorkerID is the host uid the worker process has.
func (m idMap) hostWorkerID() int {
	if m.enabled {
		return int(m.hostID) + workerUID
	}
	return int(m.hostID)
}

// containerSpec is the OCI configuration of one worker container: rootfs is
// the shared read-only image rootfs, dir the container's own directory
// (holding run/ for the worker socket and egress/ for the gateway socket).
func containerSpec(id, rootfs, dir, cgroupsPath string, lim Limits, ids idMap) *specs.Spec {
	lim = lim.withDefaults()
	uid := uint32(workerUID)
	if !ids.enabled {
		uid = ids.hostID
	}
	period := uint64(100000)
	quota := int64(lim.CPUs * float64(period))
	mem := lim.MemoryBytes
	swappiness := uint64(0)
	pids := lim.Pids
	noexec := []string{"nosuid", "nodev", "noexec"}
	s := &specs.Spec{
		Version:  "1.0.2",
		Hostname: "worker",
		Root:     &specs.Root{Path: rootfs, Readonly: true},
		Process: &specs.Process{
			User:            specs.User{UID: uid, GID: uid},
			Args:            []string{"/polydev", "worker", "--listen-fd", "3"},
			Env:             []string{"PATH=/", "GOMAXPROCS=1", "GODEBUG=madvdontneed=1"},
			Cwd:             "/",
			NoNewPrivileges: true,
			Capabilities:    &specs.LinuxCapabilities{}, // none, in every set
			Rlimits: []specs.POSIXRlimit{
				{Type: "RLIMIT_CORE", Hard: 0, Soft: 0},
				{Type: "RLIMIT_NOFILE", Hard: 1024, Soft: 1024},
			},
			OOMScoreAdj: intPtr(1000),
		},
		Mounts: []specs.Mount{
			{Destination: "/proc", Type: "proc", Source: "proc", Options: noexec},
			{Destination: "/dev", Type: "tmpfs", Source: "tmpfs", Options: []string{"nosuid", "noexec", "strictatime", "mode=755", "size=64k"}},
			{Destination: "/dev/pts", Type: "devpts", Source: "devpts", Options: []string{"nosuid", "noexec", "newinstance", "ptmxmode=0666", "mode=0620"}},
			{Destination: "/tmp", Type: "tmpfs", Source: "tmpfs", Options: append(append([]string{}, noexec...), "mode=1777", "size="+strconv.FormatInt(lim.TmpBytes, 10))},
			{Destination: "/run/egress", Type: "bind", Source: filepath.Join(dir, "egress"), Options: append([]string{"rbind", "ro"}, noexec...)},
		},
		Linux: &specs.Linux{
			CgroupsPath: cgroupsPath,
			Resources: &specs.LinuxResources{
				Devices: []specs.LinuxDeviceCgroup{{Allow: false, Access: "rwm"}},
				Memory:  &specs.LinuxMemory{Limit: &mem, Swap: &mem, Swappiness: &swappiness},
				CPU:     &specs.LinuxCPU{Quota: &quota, Period: &period},
				Pids:    &specs.LinuxPids{Limit: pids},
			},
			Namespaces: []specs.LinuxNamespace{
				{Type: specs.PIDNamespace},
				{Type: specs.NetworkNamespace}, // loopback only
				{Type: specs.IPCNamespace},
				{Type: specs.UTSNamespace},
				{Type: specs.MountNamespace},
			},
			MaskedPaths: []string{
				"/proc/acpi", "/proc/asound", "/proc/kcore", "/proc/keys", "/proc/latency_stats",
				"/proc/timer_list", "/proc/timer_stats", "/proc/sched_debug", "/proc/scsi",
				"/sys/firmware", "/proc/sysrq-trigger",
			},
			ReadonlyPaths: []string{
				"/proc/bus", "/proc/fs", "/proc/irq", "/proc/sys",
			},
			Seccomp: seccompProfile(),
		},
	}
	if ids.enabled {
		s.Linux.Namespaces = append(s.Linux.Namespaces, specs.LinuxNamespace{Type: specs.UserNamespace})
		s.Linux.UIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.hostID, Size: idRange}}
		s.Linux.GIDMappings = []specs.LinuxIDMapping{{ContainerID: 0, HostID: ids.hostID, Size: idRange}}
		// Inside a user namespace the kernel refuses a new cgroup device
		// list, and devices come in as bind mounts anyway.
	} else {
		s.Linux.Devices = nil
	}
	return s
}

func intPtr(i int) *int { return &i }
