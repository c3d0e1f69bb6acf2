package firecracker

import (
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"

	"polydev/internal/sandbox"
)

// Config configures the Firecracker driver. Zero fields take the defaults.
type Config struct {
	// Binary is the firecracker executable; default "firecracker" from PATH.
	Binary string
	// Jailer, when not nil, runs every VM through Firecracker's jailer:
	// its own chroot, uid/gid and (optionally) cgroup and network
	// namespace. Production hosts should set it.
	Jailer *JailerConfig
	// AgentPort is the vsock port the in-VM agent listens on for the
	// readiness channel; default 1024.
	AgentPort uint32
}

// JailerConfig configures the jailer (firecracker/docs/jailer.md).
type JailerConfig struct {
	// Binary is the jailer executable; default "jailer" from PATH.
	Binary string
	// UID and GID the VMM runs as after the jailer drops privileges. They
	// must not be 0, and should be a user that owns nothing else.
	UID, GID int
	// ChrootBase is where the jailer builds each VM's chroot,
	// <ChrootBase>/firecracker/<marker>/root. By default (empty) it is
	// <state dir>/jail, inside the VM's own state dir: the jail then goes
	// with the state dir, also when Reconcile removes what a crashed
	// manager left. It must be on the same file system as the images,
	// since the kernel, initramfs, golden disk and overlay are
	// hard-linked into the chroot (a copy per VM would cost the boot
	// budget).
	ChrootBase string
	// CgroupVersion is "1" or "2"; default "2".
	CgroupVersion string
	// ParentCgroup is the jailer's parent cgroup; default "polydev-fc".
	ParentCgroup string
	// Cgroups are jailer --cgroup settings, e.g. "cpuset.cpus=2-3". When
	// empty (the default) the jailer creates no cgroup and the VMM is
	// placed in the Manager's per-VM cgroup, which carries the memory and
	// CPU limits, exactly as with QEMU. When set, the jailer's cgroup
	// <ParentCgroup>/<vm id> holds the VMM instead and is removed on
	// destroy.
	Cgroups []string
	// CgroupRoot is where the cgroup file system is mounted; default
	// /sys/fs/cgroup. Only used to remove the jailer's cgroup.
	CgroupRoot string
	// NetNS is an optional network namespace path the jailer joins.
	NetNS string
}

// DefaultAgentPort is the vsock port of the agent's readiness channel.
const DefaultAgentPort = 1024

// guestCID is the VM's vsock context id. Firecracker's vsock is a Unix
// socket on the host, so every VM may use the same one.
const guestCID = 3

func (c *Config) setDefaults() error {
	if c.Binary == "" {
		c.Binary = "firecracker"
	}
	if c.AgentPort == 0 {
		c.AgentPort = DefaultAgentPort
	}
	if j := c.Jailer; j != nil {
		if j.Binary == "" {
			j.Binary = "jailer"
		}
		if j.ChrootBase != "" {
			if !filepath.IsAbs(j.ChrootBase) {
				return fmt.Errorf("firecracker: jailer chroot base %q must be absolute", j.ChrootBase)
			}
			j.ChrootBase = filepath.Clean(j.ChrootBase)
		}
		if j.CgroupVersion == "" {
			j.CgroupVersion = "2"
		}
		if j.CgroupVersion != "1" && j.CgroupVersion != "2" {
			return fmt.Errorf("firecracker: jailer cgroup version %q: want 1 or 2", j.CgroupVersion)
		}
		if j.ParentCgroup == "" {
			j.ParentCgroup = "polydev-fc"
		}
		if j.CgroupRoot == "" {
			j.CgroupRoot = "/sys/fs/cgroup"
		}
		if j.UID <= 0 || j.GID <= 0 {
			return errors.New("firecracker: the jailer needs a uid and gid other than root's")
		}
	}
	return nil
}

// vmIDPattern is what Firecracker and the jailer accept as an id.
var vmIDPattern = regexp.MustCompile(`^[a-zA-Z0-9-]{1,64}$`)

// layout is where one VM's files are, as the host sees them and as the
// VMM is told (the same paths without a jailer; paths inside the chroot
// with one).
type layout struct {
	jailed bool

	// Host paths.
	apiSocket   string // the API socket (with a jailer: a symlink into the chroot)
	agentSocket string // the vsock's Unix socket (likewise)
	chrootBase  string // the jailer's --chroot-base-dir
	jailDir     string // <chrootBase>/firecracker/<marker> ("" without jailer)
	jailRemove  string // what destroy removes: jailDir, or the whole per-VM chroot base
	chrootRoot  string // jailDir/root
	// With a jailer, the sockets as the host reaches them inside the
	// chroot; the symlinks apiSocket and agentSocket point there (the full
	// path may exceed a Unix socket address's 108 bytes).
	jailAPISocket, jailAgentSocket string
	cgroupDir                      string // the jailer's cgroup ("" when it makes none)

	// What the VMM is told.
	vmmAPISocket string
	vmmVsock     string
	vmmKernel    string
	vmmInitrd    string
	vmmRootfs    string
	vmmOverlay   string

	// Files hard-linked into the chroot, host source → host target.
	links [][2]string
}

// Names of the image files inside a jail.
const (
	jailKernel  = "kernel"
	jailInitrd  = "initrd"
	jailRootfs  = "rootfs.img"
	jailOverlay = "overlay.img"
)

// layoutFor computes the paths of m under the driver's configuration. It
// touches nothing.
func (d *Driver) layoutFor(m *sandbox.Machine) (layout, error) {
	if !vmIDPattern.MatchString(m.Marker) {
		return layout{}, fmt.Errorf("firecracker: vm marker %q: want 1-64 letters, digits or hyphens (it is the vmm's --id)", m.Marker)
	}
	j := d.cfg.Jailer
	if j == nil {
		return layout{
			apiSocket: m.APISocket, agentSocket: m.AgentSocket,
			vmmAPISocket: m.APISocket, vmmVsock: m.AgentSocket,
			vmmKernel: m.Image.Kernel, vmmInitrd: m.Image.Initrd, vmmRootfs: m.Image.Rootfs, vmmOverlay: m.Overlay,
		}, nil
	}
	// The jailer's layout: <base>/<exec file name>/<id>/root, where the
	// id is the Marker (the jailer hands it to firecracker as --id).
	base := j.ChrootBase
	if base == "" {
		base = filepath.Join(m.Dir, "jail")
	}
	jailDir := filepath.Join(base, filepath.Base(d.cfg.Binary), m.Marker)
	root := filepath.Join(jailDir, "root")
	// Inside the chroot the sockets keep their paths under the state dir,
	// so that the VMM's argv names the state dir, as Reconcile expects.
	l := layout{
		jailed: true, chrootBase: base, jailDir: jailDir, jailRemove: jailDir, chrootRoot: root,
		apiSocket: m.APISocket, agentSocket: m.AgentSocket,
		jailAPISocket: filepath.Join(root, m.APISocket), jailAgentSocket: filepath.Join(root, m.AgentSocket),
		vmmAPISocket: m.APISocket, vmmVsock: m.AgentSocket, vmmKernel: "/" + jailKernel,
	}
	l.links = append(l.links, [2]string{m.Image.Kernel, filepath.Join(root, jailKernel)})
	if m.Image.Initrd != "" {
		l.vmmInitrd = "/" + jailInitrd
		l.links = append(l.links, [2]string{m.Image.Initrd, filepath.Join(root, jailInitrd)})
	}
	if m.Image.Rootfs != "" {
		l.vmmRootfs, l.vmmOverlay = "/"+jailRootfs, "/"+jailOverlay
		l.links = append(l.links, [2]string{m.Image.Rootfs, filepath.Join(root, jailRootfs)},
			[2]string{m.Overlay, filepath.Join(root, jailOverlay)})
	}
	if j.ChrootBase == "" {
		l.jailRemove = base
	}
	if len(j.Cgroups) > 0 {
		l.cgroupDir = filepath.Join(j.CgroupRoot, j.ParentCgroup, m.Marker)
	}
	return l, nil
}

// vmConfig is a VM's whole configuration in the format of Firecracker's
// --config-file, built from the API's own models. The driver writes it to
// Machine.Config and applies exactly it over the API socket.
type vmConfig struct {
	BootSource        models.BootSource           `json:"boot-source"`
	Drives            []models.Drive              `json:"drives"`
	MachineConfig     models.MachineConfiguration `json:"machine-config"`
	NetworkInterfaces []models.NetworkInterface   `json:"network-interfaces"`
	Vsock             *models.Vsock               `json:"vsock"`
}

// Drive ids.
const (
	driveRootfs  = "rootfs"
	driveOverlay = "overlay"
	ifaceTap     = "eth0"
	vsockAgent   = "agent"
)

// buildConfig describes m for the VMM, with the paths of l.
//
// Firecracker has no copy-on-write disk format, so the golden disk is
// attached read-only (/dev/vda, shared by every VM) and the overlay is a
// second, writable disk (/dev/vdb) of at most OverlayBytes, which the
// guest's init stacks over the golden one (overlayfs). The kernel command
// line says so: polydev.overlay=/dev/vdb.
func buildConfig(m *sandbox.Machine, l layout) vmConfig {
	args := m.Image.Cmdline
	c := vmConfig{
		BootSource: models.BootSource{KernelImagePath: sdk.String(l.vmmKernel), InitrdPath: l.vmmInitrd},
		MachineConfig: models.MachineConfiguration{
			VcpuCount: sdk.Int64(int64(m.VCPUs)), MemSizeMib: sdk.Int64(int64(m.MemoryMiB)), Smt: sdk.Bool(false),
		},
		Drives: []models.Drive{},
		Vsock:  &models.Vsock{VsockID: vsockAgent, GuestCid: sdk.Int64(guestCID), UdsPath: sdk.String(l.vmmVsock)},
	}
	if m.Image.Rootfs != "" {
		c.Drives = append(c.Drives,
			models.Drive{DriveID: sdk.String(driveRootfs), PathOnHost: sdk.String(l.vmmRootfs),
				IsRootDevice: sdk.Bool(m.Image.Initrd == ""), IsReadOnly: sdk.Bool(true)},
			models.Drive{DriveID: sdk.String(driveOverlay), PathOnHost: sdk.String(l.vmmOverlay),
				IsRootDevice: sdk.Bool(false), IsReadOnly: sdk.Bool(false)})
		args = joinArgs(args, "polydev.overlay=/dev/vdb")
	}
	c.BootSource.BootArgs = args
	if m.Tap != "" {
		c.NetworkInterfaces = []models.NetworkInterface{{IfaceID: sdk.String(ifaceTap), HostDevName: sdk.String(m.Tap), GuestMac: m.MAC}}
	} else {
		c.NetworkInterfaces = []models.NetworkInterface{}
	}
	return c
}

func joinArgs(a, b string) string {
	if a == "" {
		return b
	}
	return a + " " + b
}

// writeConfig writes c to path, readable by the owner only (it names the
// VM's files; it holds no secret).
func writeConfig(path string, c vmConfig) error {
	b, err := json.MarshalIndent(c, "", "  ")
	if err != nil {
		return err
	}
	return os.WriteFile(path, append(b, '\n'), 0o600)
}

// command returns the program and arguments that start m's VMM. The
// Marker is the VMM's --id (one whole argument, as Reconcile looks for
// it), and the API socket path, inside m.Dir, is an argument too; with a
// jailer it is the same path inside the chroot, and the jailer execs
// firecracker with the same --id.
func (d *Driver) command(m *sandbox.Machine, l layout) (string, []string) {
	fcArgs := []string{"--id", m.Marker, "--api-sock", l.vmmAPISocket}
	j := d.cfg.Jailer
	if j == nil {
		b := sdk.VMCommandBuilder{}.WithBin(d.cfg.Binary).WithArgs(fcArgs)
		return b.Bin(), b.Args()
	}
	// Built here rather than with the SDK's JailerCommandBuilder, which
	// always pins the VMM to NUMA node 0 with cpuset --cgroup settings,
	// so that the jailer would make a cgroup of its own on every host
	// with a NUMA node and hold the VMM out of the Manager's.
	args := []string{"--id", m.Marker, "--uid", strconv.Itoa(j.UID), "--gid", strconv.Itoa(j.GID),
		"--exec-file", d.cfg.Binary, "--cgroup-version", j.CgroupVersion, "--chroot-base-dir", l.chrootBase}
	if j.NetNS != "" {
		args = append(args, "--netns", j.NetNS)
	}
	if len(j.Cgroups) > 0 {
		args = append(args, "--parent-cgroup", j.ParentCgroup)
		for _, c := range j.Cgroups {
			args = append(args, "--cgroup", c)
		}
	}
	args = append(args, "--", "--api-sock", l.vmmAPISocket)
	return j.Binary, args
}
