package firecracker

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"polydev/internal/sandbox"
	"polydev/internal/sandbox/sandboxtest"
)

// machine returns a Machine laid out the way the Manager lays one out,
// under dir.
func machine(dir string, rootfs bool) *sandbox.Machine {
	id := "0a1b2c3d"
	vmDir := filepath.Join(dir, id)
	m := &sandbox.Machine{
		ID: id, Marker: "polydev-vm-" + id, Dir: vmDir,
		APISocket: filepath.Join(vmDir, "api.sock"), AgentSocket: filepath.Join(vmDir, "agent.sock"),
		Overlay: filepath.Join(vmDir, "overlay.img"), Config: filepath.Join(vmDir, "config.json"),
		LogFile: filepath.Join(vmDir, "vmm.log"), Tap: "tap-" + id, MAC: "02:fc:0a:1b:2c:3d",
		Image:     sandbox.Image{Kernel: filepath.Join(dir, "vmlinux"), Initrd: filepath.Join(dir, "initrd.cpio"), Cmdline: "console=ttyS0 panic=-1"},
		MemoryMiB: 512, VCPUs: 1, OverlayBytes: 200 << 20,
	}
	if rootfs {
		m.Image.Rootfs = filepath.Join(dir, "golden.img")
	}
	return m
}

func newDriver(t *testing.T, cfg Config) *Driver {
	t.Helper()
	d, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	return d
}

// TestConfigGeneration: the configuration file is Firecracker's
// --config-file format with the Machine's resources, the golden disk
// read-only and the overlay writable.
func TestConfigGeneration(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{})
	m := machine("/var/lib/polydev/vms", true)
	l, err := d.layoutFor(m)
	if err != nil {
		t.Fatal(err)
	}
	b, err := json.Marshal(buildConfig(m, l))
	if err != nil {
		t.Fatal(err)
	}
	var got map[string]any
	if err := json.Unmarshal(b, &got); err != nil {
		t.Fatal(err)
	}
	want := map[string]any{
		"boot-source": map[string]any{
			"kernel_image_path": "/var/lib/polydev/vms/vmlinux",
			"initrd_path":       "/var/lib/polydev/vms/initrd.cpio",
			"boot_args":         "console=ttyS0 panic=-1 polydev.overlay=/dev/vdb",
		},
		"drives": []any{
			map[string]any{"drive_id": "rootfs", "path_on_host": "/var/lib/polydev/vms/golden.img", "is_root_device": false, "is_read_only": true},
			map[string]any{"drive_id": "overlay", "path_on_host": "/var/lib/polydev/vms/0a1b2c3d/overlay.img", "is_root_device": false, "is_read_only": false},
		},
		"machine-config":     map[string]any{"vcpu_count": 1.0, "mem_size_mib": 512.0, "smt": false},
		"network-interfaces": []any{map[string]any{"iface_id": "eth0", "host_dev_name": "tap-0a1b2c3d", "guest_mac": "02:fc:0a:1b:2c:3d"}},
		"vsock":              map[string]any{"vsock_id": "agent", "guest_cid": 3.0, "uds_path": "/var/lib/polydev/vms/0a1b2c3d/agent.sock"},
	}
	gotJSON, _ := json.MarshalIndent(got, "", " ")
	wantJSON, _ := json.MarshalIndent(want, "", " ")
	if string(gotJSON) != string(wantJSON) {
		t.Errorf("config:\n%s\nwant\n%s", gotJSON, wantJSON)
	}

	// No golden disk (an initramfs image): no drives, no overlay hint; a
	// rootfs without initramfs is the root device.
	m2 := machine("/v", false)
	c2 := buildConfig(m2, layout{vmmKernel: "k"})
	if len(c2.Drives) != 0 || strings.Contains(c2.BootSource.BootArgs, "polydev.overlay") {
		t.Errorf("initramfs-only config: drives %v, boot args %q", c2.Drives, c2.BootSource.BootArgs)
	}
	m3 := machine("/v", true)
	m3.Image.Initrd = ""
	c3 := buildConfig(m3, layout{vmmKernel: "k", vmmRootfs: "r", vmmOverlay: "o"})
	if !*c3.Drives[0].IsRootDevice || *c3.Drives[1].IsRootDevice {
		t.Errorf("rootfs without initramfs: root device flags %v, %v; want true, false", *c3.Drives[0].IsRootDevice, *c3.Drives[1].IsRootDevice)
	}
	if c3.BootSource.InitrdPath != "" {
		t.Errorf("initrd path %q; want none", c3.BootSource.InitrdPath)
	}
}

// TestCommandWithoutJailer: the marker is one whole argument and the state
// dir appears inside one (what Reconcile looks for).
func TestCommandWithoutJailer(t *testing.T) {
	t.Parallel()
	d := newDriver(t, Config{Binary: "/opt/fc/firecracker"})
	m := machine("/var/lib/polydev/vms", true)
	l, err := d.layoutFor(m)
	if err != nil {
		t.Fatal(err)
	}
	bin, args := d.command(m, l)
	if bin != "/opt/fc/firecracker" {
		t.Errorf("binary %q", bin)
	}
	want := []string{"--id", "polydev-vm-0a1b2c3d", "--api-sock", "/var/lib/polydev/vms/0a1b2c3d/api.sock"}
	if !slices.Equal(args, want) {
		t.Errorf("args %q; want %q", args, want)
	}
	if l.apiSocket != m.APISocket || l.agentSocket != m.AgentSocket || l.jailDir != "" || l.cgroupDir != "" || len(l.links) != 0 {
		t.Errorf("layout without jailer: %+v", l)
	}
}

// TestJailer: paths inside and outside the chroot, the jailer's command
// line, and where its cgroup would be.
func TestJailer(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		jail       JailerConfig
		wantArgs   []string
		wantCgroup string
	}{
		{
			name: "defaults",
			jail: JailerConfig{UID: 990, GID: 991},
			wantArgs: []string{"--id", "polydev-vm-0a1b2c3d", "--uid", "990", "--gid", "991", "--exec-file", "/usr/local/bin/firecracker",
				"--cgroup-version", "2", "--chroot-base-dir", "/var/lib/polydev/vms/0a1b2c3d/jail",
				"--", "--api-sock", "/var/lib/polydev/vms/0a1b2c3d/api.sock"},
		},
		{
			name: "cgroups and netns",
			jail: JailerConfig{Binary: "/usr/local/bin/jailer", UID: 990, GID: 991, ChrootBase: "/srv/fc/", CgroupVersion: "2",
				ParentCgroup: "fc-vms", Cgroups: []string{"cpuset.cpus=2-3", "memory.max=600000000"}, NetNS: "/var/run/netns/vm0"},
			wantArgs: []string{"--id", "polydev-vm-0a1b2c3d", "--uid", "990", "--gid", "991", "--exec-file", "/usr/local/bin/firecracker",
				"--cgroup-version", "2", "--chroot-base-dir", "/srv/fc", "--netns", "/var/run/netns/vm0",
				"--parent-cgroup", "fc-vms", "--cgroup", "cpuset.cpus=2-3", "--cgroup", "memory.max=600000000",
				"--", "--api-sock", "/var/lib/polydev/vms/0a1b2c3d/api.sock"},
			wantCgroup: "/sys/fs/cgroup/fc-vms/polydev-vm-0a1b2c3d",
		},
	} {
		t.Run(tc.name, func(t *testing.T) {
			jail := tc.jail
			d := newDriver(t, Config{Binary: "/usr/local/bin/firecracker", Jailer: &jail})
			m := machine("/var/lib/polydev/vms", true)
			l, err := d.layoutFor(m)
			if err != nil {
				t.Fatal(err)
			}
			base := filepath.Clean(tc.jail.ChrootBase)
			if tc.jail.ChrootBase == "" {
				base = filepath.Join(m.Dir, "jail") // the jail goes with the state dir
			}
			root := filepath.Join(base, "firecracker", "polydev-vm-0a1b2c3d", "root")
			if l.jailDir != filepath.Dir(root) || l.chrootRoot != root {
				t.Errorf("jail dir %q, chroot %q; want %q, %q", l.jailDir, l.chrootRoot, filepath.Dir(root), root)
			}
			wantRemove := l.jailDir
			if tc.jail.ChrootBase == "" {
				wantRemove = base
			}
			if l.jailRemove != wantRemove {
				t.Errorf("destroy removes %q; want %q", l.jailRemove, wantRemove)
			}
			// The VMM's socket paths are the state dir's, inside the
			// chroot; the host reaches them through symlinks at the
			// Machine's paths.
			if l.apiSocket != m.APISocket || l.agentSocket != m.AgentSocket ||
				l.jailAPISocket != root+m.APISocket || l.jailAgentSocket != root+m.AgentSocket {
				t.Errorf("host sockets %q, %q → %q, %q", l.apiSocket, l.agentSocket, l.jailAPISocket, l.jailAgentSocket)
			}
			if l.vmmAPISocket != m.APISocket || l.vmmVsock != m.AgentSocket || l.vmmKernel != "/kernel" ||
				l.vmmInitrd != "/initrd" || l.vmmRootfs != "/rootfs.img" || l.vmmOverlay != "/overlay.img" {
				t.Errorf("paths the vmm sees: %+v", l)
			}
			wantLinks := [][2]string{
				{m.Image.Kernel, root + "/kernel"}, {m.Image.Initrd, root + "/initrd"},
				{m.Image.Rootfs, root + "/rootfs.img"}, {m.Overlay, root + "/overlay.img"},
			}
			if !slices.Equal(l.links, wantLinks) {
				t.Errorf("links %q; want %q", l.links, wantLinks)
			}
			if l.cgroupDir != tc.wantCgroup {
				t.Errorf("jailer cgroup %q; want %q", l.cgroupDir, tc.wantCgroup)
			}
			bin, args := d.command(m, l)
			wantBin := tc.jail.Binary
			if wantBin == "" {
				wantBin = "jailer"
			}
			if bin != wantBin || !slices.Equal(args, tc.wantArgs) {
				t.Errorf("command %s %q;\nwant %s %q", bin, args, wantBin, tc.wantArgs)
			}
			cfg := buildConfig(m, l)
			if *cfg.BootSource.KernelImagePath != "/kernel" || *cfg.Vsock.UdsPath != m.AgentSocket || *cfg.Drives[1].PathOnHost != "/overlay.img" {
				t.Errorf("jailed config paths: %s %s %s", *cfg.BootSource.KernelImagePath, *cfg.Vsock.UdsPath, *cfg.Drives[1].PathOnHost)
			}
		})
	}
}

func TestConfigValidation(t *testing.T) {
	t.Parallel()
	for _, c := range []Config{
		{Jailer: &JailerConfig{UID: 0, GID: 990}},
		{Jailer: &JailerConfig{UID: 990, GID: 0}},
		{Jailer: &JailerConfig{UID: 990, GID: 990, ChrootBase: "srv/jailer"}},
		{Jailer: &JailerConfig{UID: 990, GID: 990, CgroupVersion: "3"}},
	} {
		if _, err := New(c); err == nil {
			t.Errorf("New(%+v) = nil error", *c.Jailer)
		}
	}
	d := newDriver(t, Config{})
	for _, marker := range []string{"", "polydev vm", "polydev/../x", strings.Repeat("a", 65)} {
		m := machine("/v", false)
		m.Marker = marker
		if _, err := d.layoutFor(m); err == nil {
			t.Errorf("layoutFor(marker %q) = nil error", marker)
		}
	}
	if d.cfg.AgentPort != DefaultAgentPort || d.cfg.Binary != "firecracker" {
		t.Errorf("defaults: %+v", d.cfg)
	}
}

// startFailing runs Start where the VMM binary cannot be executed and
// returns its error and the cleanup stack.
func startFailing(t *testing.T, cfg Config, m *sandbox.Machine) (error, *sandbox.Cleanup) {
	t.Helper()
	for _, p := range []string{m.Image.Kernel, m.Image.Initrd, m.Image.Rootfs} {
		if p != "" {
			if err := os.WriteFile(p, []byte("image "+filepath.Base(p)), 0o644); err != nil {
				t.Fatal(err)
			}
		}
	}
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	cl := &sandbox.Cleanup{}
	err := newDriver(t, cfg).Start(context.Background(), m, cl)
	return err, cl
}

// TestStartRegistersCleanup: everything Start creates before it fails is
// on the cleanup stack, and running the stack removes all of it.
func TestStartRegistersCleanup(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := machine(dir, true)
	err, cl := startFailing(t, Config{Binary: filepath.Join(dir, "no-such-firecracker")}, m)
	if err == nil || !strings.Contains(err.Error(), "no-such-firecracker") {
		t.Fatalf("Start with a missing binary: %v; want an error naming it", err)
	}
	fi, err := os.Stat(m.Overlay)
	if err != nil || fi.Size() != m.OverlayBytes || fi.Mode().Perm() != 0o600 {
		t.Errorf("overlay before cleanup: %v, %v", fi, err)
	}
	var written vmConfig
	b, err := os.ReadFile(m.Config)
	if err != nil || json.Unmarshal(b, &written) != nil || *written.Drives[1].PathOnHost != m.Overlay {
		t.Errorf("config file before cleanup: %s, %v", b, err)
	}
	if m.PID != 0 {
		t.Errorf("PID = %d with no process", m.PID)
	}
	removed, errs := cl.Run(context.Background(), 5*time.Second)
	if len(errs) != 0 {
		t.Errorf("cleanup errors: %v", errs)
	}
	// Reverse order of registration; the sockets never existed.
	if want := []string{sandbox.ResourceConfig, sandbox.ResourceOverlay}; !slices.Equal(removed, want) {
		t.Errorf("removed %v; want %v", removed, want)
	}
	for _, p := range []string{m.Overlay, m.Config} {
		if _, err := os.Stat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after cleanup: %v", p, err)
		}
	}
	for _, p := range []string{m.Image.Kernel, m.Image.Rootfs} {
		if _, err := os.Stat(p); err != nil {
			t.Errorf("image file %s removed by cleanup: %v", p, err)
		}
	}
}

// TestJailedStartRegistersCleanup: with the jailer the chroot is built, the
// image files hard-linked into it, and all of it goes on cleanup.
func TestJailedStartRegistersCleanup(t *testing.T) {
	t.Parallel()
	if os.Geteuid() != 0 {
		t.Skip("the jail's overlay is handed to another uid, which needs root")
	}
	dir := t.TempDir()
	m := machine(dir, true)
	jail := &JailerConfig{Binary: filepath.Join(dir, "no-such-jailer"), UID: 65534, GID: 65534}
	err, cl := startFailing(t, Config{Jailer: jail}, m)
	if err == nil || !strings.Contains(err.Error(), "no-such-jailer") {
		t.Fatalf("Start with a missing jailer: %v", err)
	}
	root := filepath.Join(m.Dir, "jail", "firecracker", m.Marker, "root")
	sockDir := filepath.Join(root, m.Dir)
	if fi, err := os.Stat(sockDir); err != nil || fi.Mode().Perm() != 0o700 || fi.Sys().(*syscall.Stat_t).Uid != 65534 {
		t.Errorf("socket dir inside the chroot: %v, %v; want mode 0700, owned by the jail's uid", fi, err)
	}
	for _, p := range []string{m.APISocket, m.AgentSocket} {
		if target, err := os.Readlink(p); err != nil || target != filepath.Join(root, p) {
			t.Errorf("%s → %q, %v; want a symlink into the chroot", p, target, err)
		}
	}
	for _, name := range []string{"kernel", "initrd", "rootfs.img", "overlay.img"} {
		if _, err := os.Stat(filepath.Join(root, name)); err != nil {
			t.Errorf("%s not linked into the chroot: %v", name, err)
		}
	}
	var st syscall.Stat_t
	if err := syscall.Stat(filepath.Join(root, "overlay.img"), &st); err != nil || st.Uid != 65534 || st.Nlink != 2 {
		t.Errorf("jailed overlay: uid %d, links %d, %v; want the jail's uid and a hard link", st.Uid, st.Nlink, err)
	}
	removed, errs := cl.Run(context.Background(), 5*time.Second)
	want := []string{sandbox.ResourceConfig, ResourceJail, sandbox.ResourceSocket, sandbox.ResourceOverlay}
	if !slices.Equal(removed, want) || len(errs) != 0 {
		t.Errorf("removed %v, errors %v; want %v", removed, errs, want)
	}
	for _, p := range []string{filepath.Join(m.Dir, "jail"), m.APISocket, m.AgentSocket} {
		if _, err := os.Lstat(p); !errors.Is(err, os.ErrNotExist) {
			t.Errorf("%s after cleanup: %v", p, err)
		}
	}
	if _, err := os.Stat(m.Image.Rootfs); err != nil {
		t.Errorf("golden disk after cleanup: %v", err)
	}
}

// fakeVsock is a test double of Firecracker's host side of vsock: a Unix
// socket that accepts "CONNECT <port>", answers "OK <n>" and then plays
// the agent, answering "ping <nonce>" with "ready <nonce> disk=none".
// It stands in for the VMM only to test this package's half of the
// readiness protocol; the real exchange runs in TestConformance.
func fakeVsock(t *testing.T, path string, port uint32, readyAfter int) {
	t.Helper()
	ln, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	var mu sync.Mutex
	attempts := 0
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReader(c)
				line, _ := r.ReadString('\n')
				mu.Lock()
				attempts++
				n := attempts
				mu.Unlock()
				if line != fmt.Sprintf("CONNECT %d\n", port) || n <= readyAfter {
					return // as Firecracker does while nothing listens on the port
				}
				fmt.Fprintf(c, "OK 1073741824\n")
				line, _ = r.ReadString('\n')
				nonce, _ := strings.CutPrefix(strings.TrimSpace(line), "ping ")
				fmt.Fprintf(c, "ready %s disk=none\n", nonce)
			}()
		}
	}()
}

// markedProcess starts a long-running process whose argv carries marker,
// standing in for a VMM that Stop must end.
func markedProcess(t *testing.T, marker string) (*exec.Cmd, <-chan struct{}) {
	t.Helper()
	cmd := exec.Command("sh", "-c", "sleep 600", marker)
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	t.Cleanup(func() { cmd.Process.Kill(); <-done })
	// Until the child has exec'd, its command line is still the test
	// binary's: wait for the marker to show.
	for deadline := time.Now().Add(5 * time.Second); !processAlive(cmd.Process.Pid, marker); time.Sleep(5 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("the stand-in vmm never showed its marker")
		}
	}
	return cmd, done
}

func TestWaitReadyAndStop(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	m := machine(dir, false)
	if err := os.MkdirAll(m.Dir, 0o700); err != nil {
		t.Fatal(err)
	}
	d := newDriver(t, Config{AgentPort: 5005})
	cmd, done := markedProcess(t, m.Marker)
	m.PID = cmd.Process.Pid

	fakeVsock(t, m.AgentSocket, 5005, 3) // the agent is not up for the first 3 tries
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := d.WaitReady(ctx, m); err != nil {
		t.Fatalf("WaitReady: %v", err)
	}

	if !processAlive(m.PID, m.Marker) {
		t.Fatal("the stand-in vmm is not seen alive")
	}
	if processAlive(m.PID, "polydev-vm-other") {
		t.Error("a process without the marker is taken for the vmm")
	}
	if err := d.Stop(ctx, m); err != nil {
		t.Fatalf("Stop: %v", err)
	}
	select {
	case <-done:
	case <-time.After(5 * time.Second):
		t.Fatal("the process is still there after Stop")
	}
	if err := d.Stop(ctx, m); err != nil {
		t.Errorf("second Stop: %v", err)
	}
	err := d.WaitReady(ctx, m)
	if !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("WaitReady after the vmm exited: %v; want ErrExited", err)
	}
	if _, err := d.Inspect(ctx, m); !errors.Is(err, sandbox.ErrExited) {
		t.Errorf("Inspect after the vmm exited: %v; want ErrExited", err)
	}
}

func TestWaitReadyRejectsWrongAnswer(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	sock := filepath.Join(dir, "v.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	defer ln.Close()
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			r := bufio.NewReader(c)
			r.ReadString('\n')
			fmt.Fprintf(c, "OK 1\n")
			r.ReadString('\n')
			fmt.Fprintf(c, "ready not-your-nonce\n")
			c.Close()
		}
	}()
	if err := ping(context.Background(), sock, 1024, "n0nce"); err == nil {
		t.Error("ping accepted a ready line with another nonce")
	}
}

// TestConformance runs the drivers' conformance suite (sandboxtest) with
// real Firecracker microVMs. It needs a firecracker binary and a usable
// KVM, and a Firecracker-bootable image: an uncompressed kernel (vmlinux)
// in POLYDEV_FC_KERNEL and an initramfs whose agent listens on vsock in
// POLYDEV_FC_INITRD (docs/sandbox.md). Elsewhere it is skipped, under CI
// too: this is the one skip allowed in CI, because CI machines run guests
// only under software emulation, which Firecracker does not offer.
func TestConformance(t *testing.T) {
	if err := Available(Config{}); err != nil {
		t.Skipf("FIRECRACKER CONFORMANCE SKIPPED (the one skip allowed under CI): this host cannot run Firecracker: %v. "+
			"Run it on a KVM host with firecracker in PATH; see docs/sandbox.md", err)
	}
	kernel, initrd := os.Getenv("POLYDEV_FC_KERNEL"), os.Getenv("POLYDEV_FC_INITRD")
	if kernel == "" || initrd == "" {
		t.Skip("FIRECRACKER CONFORMANCE SKIPPED (the one skip allowed under CI): set POLYDEV_FC_KERNEL (vmlinux) and " +
			"POLYDEV_FC_INITRD (initramfs with the agent on vsock); see docs/sandbox.md")
	}
	sandboxtest.Run(t, sandboxtest.Env{
		Driver: newDriver(t, Config{}),
		Image:  sandbox.Image{Kernel: kernel, Initrd: initrd, Cmdline: "console=ttyS0 reboot=k panic=-1 pci=off"},
	})
}
