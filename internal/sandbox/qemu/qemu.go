// Package qemu is the sandbox Driver for QEMU's microvm machine: a minimal
// x86 machine with virtio-mmio devices and no PCI or firmware, booted
// straight into a kernel. It uses KVM when KVM can actually run a guest on
// this host (probed once by booting the kernel) and software emulation
// (TCG) otherwise. The VM is controlled over QMP on its API socket; the
// in-VM agent reports ready on a virtio-serial port whose host end is a
// unix socket in the VM's state dir; the root disk is a qcow2 overlay whose
// backing file is the shared golden image.
package qemu

import (
	"bufio"
	"bytes"
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"os"
	"os/exec"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"time"

	"polydev/internal/sandbox"
)

// Accel names an accelerator.
const (
	AccelAuto = "auto"
	AccelKVM  = "kvm"
	AccelTCG  = "tcg"
)

// Driver starts QEMU microvm VMs. The zero value is not usable; use New.
type Driver struct {
	qemu  string // qemu-system-x86_64
	img   string // qemu-img
	accel string
	once  sync.Once
}

var _ sandbox.Driver = (*Driver)(nil)

// Options configures New.
type Options struct {
	QEMU    string // default: qemu-system-x86_64 from PATH
	QEMUImg string // default: qemu-img from PATH
	// Accel is AccelAuto (default: probe KVM, fall back to TCG), AccelKVM or AccelTCG.
	Accel string
	// ProbeKernel is the kernel the KVM probe boots (required for AccelAuto).
	ProbeKernel string
}

// New finds the binaries and decides the accelerator.
func New(ctx context.Context, o Options) (*Driver, error) {
	d := &Driver{qemu: o.QEMU, img: o.QEMUImg, accel: o.Accel}
	var err error
	if d.qemu == "" {
		if d.qemu, err = exec.LookPath("qemu-system-x86_64"); err != nil {
			return nil, fmt.Errorf("qemu driver: %w (apt-get install qemu-system-x86)", err)
		}
	}
	if d.img == "" {
		if d.img, err = exec.LookPath("qemu-img"); err != nil {
			return nil, fmt.Errorf("qemu driver: %w (apt-get install qemu-utils)", err)
		}
	}
	switch d.accel {
	case "", AccelAuto:
		d.accel = AccelTCG
		if o.ProbeKernel != "" && KVMWorks(ctx, d.qemu, o.ProbeKernel) {
			d.accel = AccelKVM
		}
	case AccelKVM, AccelTCG:
	default:
		return nil, fmt.Errorf("qemu driver: unknown accelerator %q", d.accel)
	}
	return d, nil
}

// Name implements sandbox.Driver.
func (d *Driver) Name() string { return "qemu" }

// Accel reports the accelerator in use ("kvm" or "tcg").
func (d *Driver) Accel() string { return d.accel }

// KVMWorks reports whether KVM can run a guest here: /dev/kvm opens and a
// KVM guest gets as far as the kernel's first message within two seconds.
// (On some nested hosts /dev/kvm exists but guests hang in early boot.)
func KVMWorks(ctx context.Context, qemuBin, kernel string) bool {
	f, err := os.OpenFile("/dev/kvm", os.O_RDWR, 0)
	if err != nil {
		return false
	}
	f.Close()
	ctx, cancel := context.WithTimeout(ctx, 2*time.Second)
	defer cancel()
	cmd := exec.CommandContext(ctx, qemuBin, "-M", "microvm,accel=kvm", "-cpu", "host", "-m", "128",
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot", "-serial", "stdio",
		"-kernel", kernel, "-append", "console=ttyS0 panic=-1 rdinit=/none")
	out, err := cmd.StdoutPipe()
	if err != nil {
		return false
	}
	if err := cmd.Start(); err != nil {
		return false
	}
	defer cmd.Wait()
	defer cmd.Process.Kill()
	sc := bufio.NewScanner(out)
	for sc.Scan() {
		if strings.Contains(sc.Text(), "Linux version") {
			return true
		}
	}
	return false
}

// config is what Start writes to m.Config: the exact command line, for
// the operator and for Reconcile's report.
type config struct {
	ID    string   `json:"id"`
	Accel string   `json:"accel"`
	Argv  []string `json:"argv"`
}

func (d *Driver) args(m *sandbox.Machine) []string {
	machine := "microvm,accel=" + d.accel
	cpu := "host"
	cmdline := m.Image.Cmdline
	if d.accel == AccelTCG {
		// Software emulation: the legacy timers give the kernel a clock.
		machine += ",pit=on,pic=on,rtc=on"
		cpu = "max"
	}
	accel := []string{}
	if d.accel == AccelTCG {
		// TCG's translation cache defaults to 1 GiB, which the VM's cgroup
		// memory limit would not survive; 32 MiB is plenty for a login VM.
		accel = []string{"-accel", "tcg,tb-size=32"}
		machine = strings.Replace(machine, ",accel=tcg", "", 1)
	}
	a := []string{
		"-name", m.Marker,
		"-M", machine, "-cpu", cpu,
	}
	a = append(a, accel...)
	a = append(a, []string{
		"-m", strconv.Itoa(m.MemoryMiB), "-smp", strconv.Itoa(m.VCPUs),
		"-nodefaults", "-no-user-config", "-nographic", "-no-reboot",
		"-S", // start paused: the manager places the process in its cgroup first
		"-qmp", "unix:" + m.APISocket + ",server=on,wait=off",
		"-serial", "stdio",
		"-kernel", m.Image.Kernel,
		"-append", cmdline,
		"-device", "virtio-serial-device",
		"-chardev", "socket,id=agent,path=" + m.AgentSocket + ",server=on,wait=off",
		"-device", "virtserialport,chardev=agent,name=org.polydev.agent",
	}...)
	if m.Image.Initrd != "" {
		a = append(a, "-initrd", m.Image.Initrd)
	}
	if m.Image.Rootfs != "" {
		a = append(a, "-drive", "id=root,file="+m.Overlay+",format=qcow2,if=none,discard=unmap",
			"-device", "virtio-blk-device,drive=root")
	}
	if m.Tap != "" {
		a = append(a, "-netdev", "tap,id=net0,ifname="+m.Tap+",script=no,downscript=no",
			"-device", "virtio-net-device,netdev=net0,mac="+m.MAC)
	}
	return a
}

// Start implements sandbox.Driver.
func (d *Driver) Start(ctx context.Context, m *sandbox.Machine, cl *sandbox.Cleanup) error {
	// Each resource is pushed right after it exists; should the stack have
	// run already (destroyed while starting), Add undoes it at once.
	if m.Image.Rootfs != "" {
		out, err := exec.CommandContext(ctx, d.img, "create", "-q", "-f", "qcow2", "-F", "raw",
			"-b", m.Image.Rootfs, m.Overlay).CombinedOutput()
		cl.Add(sandbox.ResourceOverlay, removeFiles(m.Overlay))
		if err != nil {
			return fmt.Errorf("qemu start: overlay: %w: %s", err, strings.TrimSpace(string(out)))
		}
	}
	argv := d.args(m)
	b, _ := json.MarshalIndent(config{ID: m.ID, Accel: d.accel, Argv: append([]string{d.qemu}, argv...)}, "", "  ")
	err := os.WriteFile(m.Config, append(b, '\n'), 0o600)
	cl.Add(sandbox.ResourceConfig, removeFiles(m.Config))
	if err != nil {
		return fmt.Errorf("qemu start: config: %w", err)
	}
	logf, err := os.OpenFile(m.LogFile, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o600)
	if err != nil {
		return fmt.Errorf("qemu start: log: %w", err)
	}
	defer logf.Close()

	// Not CommandContext: the VM outlives the request that started it.
	cmd := exec.Command(d.qemu, argv...)
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = &syscall.SysProcAttr{Setpgid: true}
	if err := cmd.Start(); err != nil {
		return fmt.Errorf("qemu start: %w", err)
	}
	done := make(chan struct{})
	go func() { cmd.Wait(); close(done) }()
	m.PID, m.Done = cmd.Process.Pid, done
	// QEMU creates its sockets as it starts; the process is stopped first.
	cl.Add(sandbox.ResourceSocket, removeFiles(m.APISocket, m.AgentSocket))
	cl.Add(sandbox.ResourceProcess, func(ctx context.Context) (bool, error) {
		if err := d.Stop(ctx, m); err != nil {
			return false, err
		}
		// When this step runs late (the stack ran while Start was under
		// way), the socket step ran before the process existed: remove
		// what it may have created since.
		removeFiles(m.APISocket, m.AgentSocket)(ctx)
		return true, nil
	})
	if m.Place != nil {
		if err := m.Place(m.PID); err != nil {
			return fmt.Errorf("qemu start: place in cgroup: %w", err)
		}
	}
	q, err := dialQMP(exitCtx(ctx, done), m.APISocket)
	if err != nil {
		return d.exited(done, fmt.Errorf("qemu start: %w", err))
	}
	defer q.Close()
	if _, err := q.run("cont", nil); err != nil {
		return d.exited(done, fmt.Errorf("qemu start: %w", err))
	}
	return nil
}

// exited wraps err with ErrExited when the process is gone.
func (d *Driver) exited(done <-chan struct{}, err error) error {
	select {
	case <-done:
		return fmt.Errorf("%w: %w", sandbox.ErrExited, err)
	default:
		return err
	}
}

// exitCtx is ctx, cancelled also when done closes.
func exitCtx(ctx context.Context, done <-chan struct{}) context.Context {
	ctx, cancel := context.WithCancel(ctx)
	go func() {
		select {
		case <-done:
			cancel()
		case <-ctx.Done():
		}
	}()
	return ctx
}

// WaitReady implements sandbox.Driver: it sends "ping <nonce>" on the
// agent channel and waits for "ready <nonce>".
func (d *Driver) WaitReady(ctx context.Context, m *sandbox.Machine) error {
	ctx = exitCtx(ctx, m.Done)
	// A guest kernel panic does not always end QEMU (microvm may not
	// reset): watch the console for it rather than wait for the timeout.
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	go watchPanic(ctx, m.LogFile, cancel)
	nonceB := make([]byte, 8)
	rand.Read(nonceB)
	nonce := hex.EncodeToString(nonceB)
	var c net.Conn
	for {
		var dl net.Dialer
		var err error
		if c, err = dl.DialContext(ctx, "unix", m.AgentSocket); err == nil {
			break
		}
		select {
		case <-ctx.Done():
			return d.exited(m.Done, fmt.Errorf("qemu wait ready: %w", context.Cause(ctx)))
		case <-time.After(5 * time.Millisecond):
		}
	}
	defer c.Close()
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Now()) })
	defer stop()
	if _, err := fmt.Fprintf(c, "ping %s\n", nonce); err != nil {
		return d.exited(m.Done, fmt.Errorf("qemu wait ready: %w", err))
	}
	sc := bufio.NewScanner(c)
	for sc.Scan() {
		f := strings.Fields(sc.Text())
		if len(f) >= 2 && f[0] == "ready" && f[1] == nonce {
			return nil
		}
	}
	err := sc.Err()
	if err == nil {
		err = errors.New("agent channel closed")
	}
	if ctx.Err() != nil {
		err = context.Cause(ctx)
	}
	return d.exited(m.Done, fmt.Errorf("qemu wait ready: %w", err))
}

// errGuestPanic: the guest kernel panicked before the agent was ready.
var errGuestPanic = errors.New("guest kernel panicked (see the VM's vmm.log)")

func watchPanic(ctx context.Context, logFile string, cancel context.CancelCauseFunc) {
	t := time.NewTicker(100 * time.Millisecond)
	defer t.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-t.C:
			if b, err := os.ReadFile(logFile); err == nil && bytes.Contains(b, []byte("Kernel panic")) {
				cancel(errGuestPanic)
				return
			}
		}
	}
}

// Inspect implements sandbox.Driver with QMP query-status.
func (d *Driver) Inspect(ctx context.Context, m *sandbox.Machine) (sandbox.State, error) {
	if !alive(m) {
		return sandbox.State{PID: m.PID}, fmt.Errorf("qemu inspect: %w", sandbox.ErrExited)
	}
	ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	q, err := dialQMP(exitCtx(ctx, m.Done), m.APISocket)
	if err != nil {
		return sandbox.State{PID: m.PID}, d.exited(m.Done, fmt.Errorf("qemu inspect: %w", err))
	}
	defer q.Close()
	raw, err := q.run("query-status", nil)
	if err != nil {
		return sandbox.State{PID: m.PID}, d.exited(m.Done, fmt.Errorf("qemu inspect: %w", err))
	}
	var st struct {
		Running bool   `json:"running"`
		Status  string `json:"status"`
	}
	if err := json.Unmarshal(raw, &st); err != nil {
		return sandbox.State{PID: m.PID}, fmt.Errorf("qemu inspect: %w", err)
	}
	return sandbox.State{PID: m.PID, Running: st.Running, Detail: st.Status}, nil
}

// Stop implements sandbox.Driver. A login VM keeps nothing worth a clean
// shutdown (its overlay is deleted next), so Stop sends SIGKILL at once —
// the fastest way to end QEMU, and one that does not depend on the guest
// or on QMP answering — and waits until the process is reaped.
func (d *Driver) Stop(ctx context.Context, m *sandbox.Machine) error {
	if m.PID == 0 || !alive(m) {
		return nil
	}
	syscall.Kill(m.PID, syscall.SIGKILL)
	if waitGone(ctx, m, 5*time.Second) {
		return nil
	}
	return fmt.Errorf("qemu stop: pid %d still running", m.PID)
}

// alive reports whether the VMM process still exists (not yet reaped or,
// for a process this one did not start, not yet gone or a zombie).
func alive(m *sandbox.Machine) bool {
	if m.Done != nil {
		select {
		case <-m.Done:
			return false
		default:
			return true
		}
	}
	return sandbox.ProcessAlive(m.PID)
}

func waitGone(ctx context.Context, m *sandbox.Machine, d time.Duration) bool {
	t := time.NewTimer(d)
	defer t.Stop()
	if m.Done != nil {
		select {
		case <-m.Done:
			return true
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		}
	}
	for {
		if !sandbox.ProcessAlive(m.PID) {
			return true
		}
		select {
		case <-t.C:
			return false
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// removeFiles is an undo step removing files; it reports whether any existed.
func removeFiles(paths ...string) func(context.Context) (bool, error) {
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
