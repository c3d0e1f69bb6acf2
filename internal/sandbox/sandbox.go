// Package sandbox runs login VMs: throwaway microVMs in which a user signs in
// to a provider's CLI. The idea in plain words:
//
//   - A Driver knows one kind of VMM (QEMU microvm, Firecracker). It starts a
//     VM from a Machine description, waits until the in-VM agent says
//     "ready", inspects it over its API socket and stops it.
//   - The Manager owns everything around the driver: per-VM state dir, tap
//     device, cgroup, a cap on concurrent VMs with a queue, a warm pool of
//     pre-booted VMs, a maximum lifetime, and destruction.
//   - Every resource a VM acquires registers its undo step on a Cleanup
//     stack the moment it exists. Destroy runs the stack in reverse, cannot
//     be cancelled half-way, is idempotent, and reports what it removed.
//   - Reconcile finds anything on the host that carries the manager's naming
//     but that no live VM owns (after a crash, say) and removes it.
//
// The Manager reports status transitions and removals through a Recorder,
// which the store implements (vm_sessions and audit_log).
package sandbox

import (
	"context"
	"errors"
	"time"
)

// Status is a login VM session's state, as stored in vm_sessions.status.
// A session moves booting → ready → authenticating → completed | failed →
// destroyed; failed and destroyed can be reached from any earlier state.
type Status string

// The statuses of a login VM session.
const (
	StatusBooting        Status = "booting"
	StatusReady          Status = "ready"
	StatusAuthenticating Status = "authenticating"
	StatusCompleted      Status = "completed"
	StatusFailed         Status = "failed"
	StatusDestroyed      Status = "destroyed"
)

// Errors callers branch on.
var (
	// ErrNotFound: no live VM is bound to the session id.
	ErrNotFound = errors.New("sandbox: no such login vm")
	// ErrClosed: the manager is closed.
	ErrClosed = errors.New("sandbox: manager closed")
	// ErrExited: the VMM process ended (crashed, was killed, or the guest
	// powered off) before the operation completed.
	ErrExited = errors.New("sandbox: vmm process exited")
	// ErrBadTransition: the requested status change is not allowed from the
	// session's current status.
	ErrBadTransition = errors.New("sandbox: status transition not allowed")
)

// Image is the golden image a VM boots: kernel, optional initramfs and an
// optional root disk that each VM sees through its own copy-on-write overlay.
// The files are read-only to the manager and shared by every VM.
type Image struct {
	Kernel  string // path of an uncompressed or bzImage kernel
	Initrd  string // path of an initramfs; "" for none
	Rootfs  string // path of the golden root disk (raw); "" for none
	Cmdline string // kernel command line, e.g. "console=ttyS0 quiet panic=-1"
}

// Machine describes one VM for a Driver. The Manager fills every field
// before Start; the paths all lie inside Dir, the VM's state dir, so that
// removing Dir removes every file the VM had.
type Machine struct {
	ID string // short lowercase hex id; the tap is "tap-"+ID
	// Marker must appear as one whole argument in the VMM process's argv
	// (QEMU: -name; Firecracker: --id), and Dir must appear inside some
	// argument: Reconcile identifies stray VMM processes by both.
	Marker string

	Dir         string // state dir, <root>/<id>
	APISocket   string // the VMM's control socket (QMP, Firecracker API)
	AgentSocket string // the readiness channel's host end (virtio-serial, vsock UDS)
	Overlay     string // copy-on-write overlay over Image.Rootfs (budget OverlayBytes)
	Config      string // the driver's config file for this VM
	LogFile     string // VMM stdout/stderr (serial console)

	Tap          string // tap device name, already created by the Manager
	MAC          string // guest MAC address for the tap NIC
	Image        Image
	MemoryMiB    int   // guest memory
	VCPUs        int   // guest vCPUs
	OverlayBytes int64 // virtual size cap of the overlay

	// PID is set by the driver's Start once the VMM process exists.
	PID int
	// Done is set by the driver's Start: it is closed once the VMM process
	// has exited and been reaped. Nil for a machine this process did not
	// start (Stop then polls the pid).
	Done <-chan struct{}
	// Place moves a process into the VM's cgroup. Drivers call it with the
	// VMM's pid right after the process exists and before the guest runs
	// (QEMU starts paused with -S; Firecracker before InstanceStart).
	Place func(pid int) error
}

// State is what Inspect learns from the VMM over its API socket.
type State struct {
	PID     int
	Running bool   // the guest's vCPUs run (QMP "running", Firecracker "Running")
	Detail  string // the VMM's own word for its state, e.g. "running", "paused", "prelaunch"
}

// Driver runs VMs of one VMM kind. Drivers keep no state between calls
// beyond what is in the Machine, so a manager restarted after a crash can
// still Stop what an earlier one started (Reconcile does not need the driver:
// it kills by pid and removes files).
type Driver interface {
	// Name is a short identifier: "qemu", "firecracker".
	Name() string

	// Start creates the driver's files (overlay, config), launches the VMM
	// process, places it with m.Place, and lets the guest run. It registers
	// an undo step on cl for each resource as soon as that resource exists
	// (kinds ResourceOverlay, ResourceConfig, ResourceSocket,
	// ResourceProcess), so that a failure or a crash half-way leaves
	// nothing the cleanup stack does not know about. It returns once the
	// guest has been started, without waiting for readiness. On error the
	// caller runs cl; Start does not.
	Start(ctx context.Context, m *Machine, cl *Cleanup) error

	// WaitReady blocks until the agent inside the guest reports ready on
	// the channel at m.AgentSocket. It returns nil on ready, an error
	// wrapping ErrExited if the VMM process ended first, or ctx.Err().
	WaitReady(ctx context.Context, m *Machine) error

	// Inspect asks the VMM over m.APISocket for its state. It returns an
	// error wrapping ErrExited if the process is gone.
	Inspect(ctx context.Context, m *Machine) (State, error)

	// Stop ends the VMM and returns once the process is gone (reaped). A
	// driver may ask the VMM to quit first but must not wait long for it
	// (SIGKILL within ~50 ms): a login VM keeps nothing worth a clean
	// shutdown, and destroy has a budget of 200 ms. Stopping a VM whose
	// process is already gone returns nil.
	Stop(ctx context.Context, m *Machine) error
}

// Resource kinds a Cleanup step removes; the Report lists them.
const (
	ResourceProcess  = "process"
	ResourceSocket   = "socket"
	ResourceOverlay  = "overlay"
	ResourceConfig   = "config"
	ResourceTap      = "tap"
	ResourceStateDir = "state_dir"
	ResourceCgroup   = "cgroup"
)

// Report says what destroying or reclaiming one VM removed.
type Report struct {
	VMID      string
	SessionID string // "" for a warm-pool VM never allocated, or unknown
	HostID    string
	Reason    string   // "destroy", "lifetime", "boot_failed", "close", "reconcile"
	Removed   []string // resource kinds, in removal order, e.g. ["process","socket",...]
	Errors    []string // steps that failed, "kind: error"; empty when clean
	Took      time.Duration
	At        time.Time
}

// Clean reports whether every undo step succeeded.
func (r Report) Clean() bool { return len(r.Errors) == 0 }

// Transition is one status change of a login VM session.
type Transition struct {
	SessionID string
	VMID      string
	HostID    string
	Status    Status
	At        time.Time
}

// Recorder persists what the Manager does. The store implements it over
// vm_sessions (status and timestamps) and audit_log (removals). Calls come
// from the Manager's goroutines, possibly concurrently; an error is logged
// by the Manager and does not stop it (the VM is still destroyed).
type Recorder interface {
	// Status records a session's status change at t.At. The Manager only
	// sends transitions for sessions it was given by Allocate, in order:
	// booting (with the VM's boot start time), ready (its ready time),
	// then authenticating, completed or failed as reported by SetStatus,
	// and finally destroyed.
	Status(ctx context.Context, t Transition) error

	// Removed records an audit_log event for a destroyed or reclaimed VM,
	// listing the removed resources (Report.Removed) and any errors.
	Removed(ctx context.Context, r Report) error
}

// Owner says whom an allocated VM serves; it is written to the VM's state
// dir so that Reconcile can name the session of a VM it reclaims.
type Owner struct {
	SessionID string // vm_sessions.id, chosen by the caller
	UserID    string
	Provider  string
}

// Info is a snapshot of a live VM bound to a session.
type Info struct {
	SessionID string
	VMID      string
	HostID    string
	Status    Status
	Tap       string
	PID       int
	BootedAt  time.Time // VMM start
	ReadyAt   time.Time // agent reported ready
	ExpiresAt time.Time // lifetime end: the Manager destroys it then
}

// The Manager's public API (manager.go):
//
//	func NewManager(ctx context.Context, cfg Config, d Driver, rec Recorder, log *slog.Logger) (*Manager, error)
//	    Validates cfg, reconciles the root once, starts the warm pool and the
//	    reconcile timer. Must Close.
//	func (m *Manager) Allocate(ctx context.Context, o Owner) (Info, error)
//	    Takes a ready VM from the warm pool (or boots one, waiting in the
//	    queue when MaxVMs are live) and binds it to o.SessionID; records
//	    booting and ready. A VM is bound at most once and never returns to
//	    the pool. Errors: ctx errors while queued or booting, ErrClosed,
//	    boot failures.
//	func (m *Manager) Get(sessionID string) (Info, error)          // ErrNotFound
//	func (m *Manager) SetStatus(ctx context.Context, sessionID string, s Status) error
//	    authenticating, completed or failed; ErrNotFound, ErrBadTransition.
//	func (m *Manager) Destroy(ctx context.Context, sessionID string) (Report, error)
//	    Idempotent: a second call returns ErrNotFound. Not cancellable
//	    half-way: runs with context.WithoutCancel and Config.DestroyTimeout.
//	    Records destroyed and the Report.
//	func (m *Manager) Reconcile(ctx context.Context) ([]Report, error)
//	    Removes everything under the manager's naming no live VM owns.
//	func (m *Manager) Close(ctx context.Context) error
//	    Destroys every VM (pool and bound), stops the timers. Idempotent.
