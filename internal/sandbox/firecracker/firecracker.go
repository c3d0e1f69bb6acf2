// Package firecracker is the sandbox.Driver for Firecracker microVMs, the
// production VMM on hosts with KVM. It uses the official Go SDK
// (github.com/firecracker-microvm/firecracker-go-sdk) for the VMM's API
// over its Unix socket and for building the firecracker and jailer
// command lines; the process itself is started and watched here, so that
// the driver keeps no state between calls (a restarted manager can still
// stop what an earlier one started, by the pid and marker in the Machine).
//
// A VM's life, in plain words: Start writes the VM's configuration file
// (Firecracker's --config-file format, built from the API's own models),
// creates the overlay disk, launches firecracker (directly, or through
// the jailer into a chroot under its own uid and gid), places it in the
// VM's cgroup while the guest has not run yet, applies the configuration
// over the API socket and starts the instance. Each of those resources is
// registered on the cleanup stack the moment it exists. WaitReady talks to
// the in-VM agent over vsock: Firecracker exposes the guest's vsock as a
// Unix socket on the host, where "CONNECT <port>" opens a stream to the
// agent's port, and the agent answers "ping <nonce>" with
// "ready <nonce>". Stop asks the VMM to shut the guest down, then kills
// it, and returns once the process is gone.
//
// Firecracker has no copy-on-write disk format: the golden disk is
// attached read-only and shared, and the VM's overlay is a second,
// writable disk capped at the overlay budget (see buildConfig).
package firecracker

import (
	"bufio"
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"syscall"
	"time"

	sdk "github.com/firecracker-microvm/firecracker-go-sdk"
	"github.com/firecracker-microvm/firecracker-go-sdk/client/models"
	"github.com/sirupsen/logrus"

	"polydev/internal/sandbox"
)

// Driver runs VMs with Firecracker. Build it with New.
type Driver struct {
	cfg Config
	log *logrus.Entry // the SDK's logger, silenced: the Manager logs
}

var _ sandbox.Driver = (*Driver)(nil)

// New returns a driver for cfg. It checks the configuration only; Available
// says whether the host can run Firecracker at all.
func New(cfg Config) (*Driver, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	l := logrus.New()
	l.SetOutput(io.Discard)
	return &Driver{cfg: cfg, log: logrus.NewEntry(l)}, nil
}

// Name is "firecracker".
func (d *Driver) Name() string { return "firecracker" }

// ResourceJail is the kind of the jailer's chroot directory on the cleanup
// stack and in reports.
const ResourceJail = "jail"

// Start launches m's VMM and starts the guest (see sandbox.Driver).
func (d *Driver) Start(ctx context.Context, m *sandbox.Machine, cl *sandbox.Cleanup) error {
	l, err := d.layoutFor(m)
	if err != nil {
		return err
	}
	if m.Image.Rootfs != "" {
		if err := createOverlay(m.Overlay, m.OverlayBytes, cl); err != nil {
			return err
		}
	}
	// The VMM creates the sockets (with a jailer, the driver makes the
	// symlinks to them first); their undo step exists before either.
	cl.Add(sandbox.ResourceSocket, removeFile(l.apiSocket, l.agentSocket))
	if l.jailed {
		if err := d.prepareJail(m, l, cl); err != nil {
			return err
		}
	}
	cfg := buildConfig(m, l)
	cl.Add(sandbox.ResourceConfig, removeFile(m.Config))
	if err := writeConfig(m.Config, cfg); err != nil {
		return fmt.Errorf("firecracker: config: %w", err)
	}
	if l.cgroupDir != "" {
		cl.Add(sandbox.ResourceCgroup, removeCgroup(l.cgroupDir))
	}

	exited, err := d.launch(m, l, cl)
	if err != nil {
		return err
	}
	if l.cgroupDir == "" && m.Place != nil {
		if err := m.Place(m.PID); err != nil {
			return fmt.Errorf("firecracker: placing the vmm in its cgroup: %w", err)
		}
	}
	client := sdk.NewClient(l.apiSocket, d.log, false)
	if err := waitAPI(ctx, client, exited); err != nil {
		return err
	}
	if err := apply(ctx, client, cfg); err != nil {
		return err
	}
	action := models.InstanceActionInfoActionTypeInstanceStart
	if _, err := client.CreateSyncAction(ctx, &models.InstanceActionInfo{ActionType: &action}); err != nil {
		return fmt.Errorf("firecracker: starting the instance: %w", apiError(err, exited))
	}
	return nil
}

// createOverlay makes the VM's writable disk: a sparse file of size bytes,
// which is also the most the guest can write.
func createOverlay(path string, size int64, cl *sandbox.Cleanup) error {
	if size <= 0 {
		return fmt.Errorf("firecracker: overlay budget %d bytes", size)
	}
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("firecracker: overlay: %w", err)
	}
	cl.Add(sandbox.ResourceOverlay, removeFile(path))
	defer f.Close()
	if err := f.Truncate(size); err != nil {
		return fmt.Errorf("firecracker: overlay: %w", err)
	}
	return f.Close()
}

// prepareJail builds the chroot the jailer will enter: the image files
// hard-linked in, the overlay handed to the jail's uid, the state dir's
// path recreated inside for the sockets (owned by the jail's uid, which
// creates them), and symlinks at the Machine's socket paths to where the
// sockets will be.
func (d *Driver) prepareJail(m *sandbox.Machine, l layout, cl *sandbox.Cleanup) error {
	j := d.cfg.Jailer
	cl.Add(ResourceJail, removeAll(l.jailRemove))
	sockDir := filepath.Join(l.chrootRoot, m.Dir)
	if err := os.MkdirAll(sockDir, 0o711); err != nil {
		return fmt.Errorf("firecracker: jail: %w", err)
	}
	if err := os.Chown(sockDir, j.UID, j.GID); err != nil {
		return fmt.Errorf("firecracker: jail: %w", err)
	}
	if err := os.Chmod(sockDir, 0o700); err != nil {
		return fmt.Errorf("firecracker: jail: %w", err)
	}
	for _, ln := range l.links {
		if err := os.Link(ln[0], ln[1]); err != nil {
			if errors.Is(err, syscall.EXDEV) {
				return fmt.Errorf("firecracker: jail: %s is on another file system than the chroot base %s: %w",
					ln[0], l.chrootBase, err)
			}
			return fmt.Errorf("firecracker: jail: %w", err)
		}
	}
	if m.Image.Rootfs != "" {
		if err := os.Chown(m.Overlay, j.UID, j.GID); err != nil {
			return fmt.Errorf("firecracker: jail: overlay owner: %w", err)
		}
	}
	for _, sl := range [][2]string{{l.jailAPISocket, l.apiSocket}, {l.jailAgentSocket, l.agentSocket}} {
		if err := os.Symlink(sl[0], sl[1]); err != nil {
			return fmt.Errorf("firecracker: jail: %w", err)
		}
	}
	return nil
}

// launch starts the VMM process with its output in m.LogFile and registers
// its undo step. The returned channel closes when the process has exited
// and been reaped; the goroutine that reaps it ends with it.
func (d *Driver) launch(m *sandbox.Machine, l layout, cl *sandbox.Cleanup) (<-chan struct{}, error) {
	bin, args := d.command(m, l)
	logf, err := os.OpenFile(m.LogFile, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, fmt.Errorf("firecracker: log file: %w", err)
	}
	defer logf.Close() // the child has its own descriptor
	cmd := exec.Command(bin, args...)
	cmd.Stdout, cmd.Stderr = logf, logf
	// Its own process group: a signal meant for the server (Ctrl-C in a
	// terminal) does not reach the VMs; the Manager stops them.
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return nil, fmt.Errorf("firecracker: starting %s: %w", bin, err)
	}
	m.PID = cmd.Process.Pid
	cl.Add(sandbox.ResourceProcess, func(ctx context.Context) (bool, error) {
		alive := processAlive(m.PID, m.Marker)
		return alive, d.Stop(ctx, m)
	})
	exited := make(chan struct{})
	go func() {
		cmd.Wait()
		close(exited)
	}()
	m.Done = exited
	return exited, nil
}

// waitAPI waits until the VMM answers on its API socket.
func waitAPI(ctx context.Context, c *sdk.Client, exited <-chan struct{}) error {
	for {
		if _, err := c.GetMachineConfiguration(); err == nil {
			return nil
		}
		select {
		case <-exited:
			return fmt.Errorf("firecracker: waiting for the api socket: %w", sandbox.ErrExited)
		case <-ctx.Done():
			return fmt.Errorf("firecracker: waiting for the api socket: %w", ctx.Err())
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// apply sends the configuration over the API, in the order Firecracker's
// own --config-file loader uses.
func apply(ctx context.Context, c *sdk.Client, cfg vmConfig) error {
	if _, err := c.PutMachineConfiguration(ctx, &cfg.MachineConfig); err != nil {
		return fmt.Errorf("firecracker: machine config: %w", err)
	}
	if _, err := c.PutGuestBootSource(ctx, &cfg.BootSource); err != nil {
		return fmt.Errorf("firecracker: boot source: %w", err)
	}
	for i := range cfg.Drives {
		if _, err := c.PutGuestDriveByID(ctx, *cfg.Drives[i].DriveID, &cfg.Drives[i]); err != nil {
			return fmt.Errorf("firecracker: drive %s: %w", *cfg.Drives[i].DriveID, err)
		}
	}
	for i := range cfg.NetworkInterfaces {
		n := &cfg.NetworkInterfaces[i]
		if _, err := c.PutGuestNetworkInterfaceByID(ctx, *n.IfaceID, n); err != nil {
			return fmt.Errorf("firecracker: network interface %s: %w", *n.IfaceID, err)
		}
	}
	if cfg.Vsock != nil {
		if _, err := c.PutGuestVsock(ctx, cfg.Vsock); err != nil {
			return fmt.Errorf("firecracker: vsock: %w", err)
		}
	}
	return nil
}

// apiError marks an API failure caused by the VMM's exit as ErrExited.
func apiError(err error, exited <-chan struct{}) error {
	select {
	case <-exited:
		return fmt.Errorf("%w: %v", sandbox.ErrExited, err)
	default:
		return err
	}
}

// WaitReady connects to the agent's vsock port through the VMM's vsock
// socket and waits for "ready <nonce>" in answer to "ping <nonce>".
func (d *Driver) WaitReady(ctx context.Context, m *sandbox.Machine) error {
	l, err := d.layoutFor(m)
	if err != nil {
		return err
	}
	nonce := rand.Text()
	for {
		if !processAlive(m.PID, m.Marker) {
			return fmt.Errorf("firecracker: waiting for the agent: %w", sandbox.ErrExited)
		}
		if err := ping(ctx, l.agentSocket, d.cfg.AgentPort, nonce); err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker: waiting for the agent: %w", ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// ping makes one attempt at the readiness exchange.
func ping(ctx context.Context, uds string, port uint32, nonce string) error {
	var dialer net.Dialer
	conn, err := dialer.DialContext(ctx, "unix", uds)
	if err != nil {
		return err
	}
	defer conn.Close()
	deadline := time.Now().Add(2 * time.Second)
	if d, ok := ctx.Deadline(); ok && d.Before(deadline) {
		deadline = d
	}
	conn.SetDeadline(deadline)
	r := bufio.NewReader(conn)
	if _, err := fmt.Fprintf(conn, "CONNECT %d\n", port); err != nil {
		return err
	}
	line, err := r.ReadString('\n')
	if err != nil {
		return err
	}
	if !strings.HasPrefix(line, "OK ") {
		return fmt.Errorf("vsock handshake: %q", strings.TrimSpace(line))
	}
	if _, err := fmt.Fprintf(conn, "ping %s\n", nonce); err != nil {
		return err
	}
	line, err = r.ReadString('\n')
	if err != nil {
		return err
	}
	if f := strings.Fields(line); len(f) < 2 || f[0] != "ready" || f[1] != nonce {
		return fmt.Errorf("agent answered %q", strings.TrimSpace(line))
	}
	return nil
}

// Inspect asks the VMM for the instance's state.
func (d *Driver) Inspect(ctx context.Context, m *sandbox.Machine) (sandbox.State, error) {
	l, err := d.layoutFor(m)
	if err != nil {
		return sandbox.State{}, err
	}
	if !processAlive(m.PID, m.Marker) {
		return sandbox.State{}, fmt.Errorf("firecracker: inspect: %w", sandbox.ErrExited)
	}
	info, err := sdk.NewClient(l.apiSocket, d.log, false).GetInstanceInfo(ctx)
	if err != nil {
		if !processAlive(m.PID, m.Marker) {
			return sandbox.State{}, fmt.Errorf("firecracker: inspect: %w", sandbox.ErrExited)
		}
		return sandbox.State{}, fmt.Errorf("firecracker: inspect: %w", err)
	}
	st := sandbox.State{PID: m.PID}
	if info.Payload != nil && info.Payload.State != nil {
		st.Detail = *info.Payload.State
		st.Running = st.Detail == models.InstanceInfoStateRunning
	}
	return st, nil
}

// stopGrace is how long Stop waits after asking the guest to shut down
// before it kills the VMM. A login VM keeps nothing worth a clean shutdown
// (its disk is thrown away), so this is short.
const stopGrace = 50 * time.Millisecond

// Stop ends m's VMM and returns once the process is gone.
func (d *Driver) Stop(ctx context.Context, m *sandbox.Machine) error {
	if !processAlive(m.PID, m.Marker) {
		return nil
	}
	if l, err := d.layoutFor(m); err == nil {
		actx, cancel := context.WithTimeout(ctx, stopGrace)
		action := models.InstanceActionInfoActionTypeSendCtrlAltDel
		sdk.NewClient(l.apiSocket, d.log, false).CreateSyncAction(actx, &models.InstanceActionInfo{ActionType: &action})
		for processAlive(m.PID, m.Marker) && actx.Err() == nil {
			select {
			case <-actx.Done():
			case <-time.After(2 * time.Millisecond):
			}
		}
		cancel()
	}
	if !processAlive(m.PID, m.Marker) {
		return nil
	}
	if err := syscall.Kill(m.PID, syscall.SIGKILL); err != nil && !errors.Is(err, syscall.ESRCH) {
		return fmt.Errorf("firecracker: kill %d: %w", m.PID, err)
	}
	for processAlive(m.PID, m.Marker) {
		select {
		case <-ctx.Done():
			return fmt.Errorf("firecracker: vmm %d still there after SIGKILL: %w", m.PID, ctx.Err())
		case <-time.After(2 * time.Millisecond):
		}
	}
	return nil
}

// processAlive reports whether pid is a live (not zombie) process whose
// command line carries marker as a whole argument: a pid reused by
// another program is not ours.
func processAlive(pid int, marker string) bool {
	if pid <= 0 {
		return false
	}
	stat, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return false
	}
	// The state follows the command name, which is in parentheses and
	// may itself contain them.
	if i := strings.LastIndexByte(string(stat), ')'); i < 0 || i+2 >= len(stat) || stat[i+2] == 'Z' || stat[i+2] == 'X' {
		return false
	}
	cmdline, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/cmdline")
	if err != nil {
		return false
	}
	for _, a := range strings.Split(string(cmdline), "\x00") {
		if a == marker {
			return true
		}
	}
	return false
}

// removeFile is an undo step that removes files; it reports whether any
// was there.
func removeFile(paths ...string) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		removed := false
		var errs []error
		for _, p := range paths {
			err := os.Remove(p)
			switch {
			case err == nil:
				removed = true
			case !errors.Is(err, os.ErrNotExist):
				errs = append(errs, err)
			}
		}
		return removed, errors.Join(errs...)
	}
}

// removeAll is an undo step that removes a directory tree.
func removeAll(dir string) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		if _, err := os.Lstat(dir); errors.Is(err, os.ErrNotExist) {
			return false, nil
		}
		return true, os.RemoveAll(dir)
	}
}

// removeCgroup removes an (empty) cgroup directory.
func removeCgroup(dir string) func(context.Context) (bool, error) {
	return func(context.Context) (bool, error) {
		err := syscall.Rmdir(dir)
		switch {
		case err == nil:
			return true, nil
		case errors.Is(err, syscall.ENOENT):
			return false, nil
		default:
			return false, fmt.Errorf("rmdir %s: %w", dir, err)
		}
	}
}
