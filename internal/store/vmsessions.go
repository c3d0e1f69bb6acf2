package store

import (
	"context"
	"time"
)

// Login VM sessions: one row per login VM a user asked for (vm_sessions).
// The row is created by the control plane before the VM is allocated and
// then follows the VM's life:
//
//	booting → ready → authenticating → completed | failed → destroyed
//
// completed can also follow ready directly (a CLI that needed no browser
// step), as the login-VM manager allows; failed can be reached from
// booting, ready and authenticating; destroyed from every status. Each status has its own timestamp, set once, the
// first time the session reaches it.

// The statuses of a login VM session (vm_sessions.status).
const (
	VMBooting        = "booting"
	VMReady          = "ready"
	VMAuthenticating = "authenticating"
	VMCompleted      = "completed"
	VMFailed         = "failed"
	VMDestroyed      = "destroyed"
)

// VMStatusFrom lists, for each status, the statuses a session may move to
// it from. A status also "moves" to itself: recording it again succeeds and
// keeps the first time.
var VMStatusFrom = map[string][]string{
	VMBooting:        {VMBooting},
	VMReady:          {VMBooting, VMReady},
	VMAuthenticating: {VMReady, VMAuthenticating},
	VMCompleted:      {VMReady, VMAuthenticating, VMCompleted},
	VMFailed:         {VMBooting, VMReady, VMAuthenticating, VMFailed},
	VMDestroyed:      {VMBooting, VMReady, VMAuthenticating, VMCompleted, VMFailed, VMDestroyed},
}

// VMSession is a login VM session. It holds no secret: the VM's id and
// address, the host it runs on, its status and when each status began.
type VMSession struct {
	ID       string // UUID, chosen by the control plane
	UserID   string
	Provider string
	VMID     string // the manager's id of the VM ("" until one is bound)
	VMIP     string
	HostID   string // the host whose manager runs the VM
	Status   string

	CreatedAt        time.Time
	BootingAt        time.Time // the VM's boot began (a warm-pool VM: before CreatedAt)
	ReadyAt          time.Time
	AuthenticatingAt time.Time
	EndedAt          time.Time // completed or failed, as Status says
	TokenCapturedAt  time.Time
	DestroyedAt      time.Time
	ExpiresAt        time.Time // the VM's lifetime ends; zero: unknown
}

// Live reports whether the session's VM may still exist.
func (s *VMSession) Live() bool { return s.Status != VMDestroyed }

// VMStatusChange is one status change of a session.
type VMStatusChange struct {
	Status string
	At     time.Time // when the session reached Status; zero: now
	VMID   string    // the VM bound to the session; "" leaves it unchanged
}

// VMSessions keeps the acting user's login VM sessions.
type VMSessions interface {
	// CreateVMSession inserts s (its ID chosen by the caller, or a new
	// UUID when empty) for the acting user with status booting, assigning
	// CreatedAt. A user has at most one live (not destroyed) session per
	// provider: a second is ErrConflict, as is a taken id. An unknown
	// provider or a status other than booting is ErrInvalid.
	CreateVMSession(ctx context.Context, as string, s *VMSession) error
	// VMSession returns one of the acting user's sessions.
	VMSession(ctx context.Context, as, id string) (*VMSession, error)
	// LiveVMSessions lists the acting user's sessions that are not
	// destroyed, newest first.
	LiveVMSessions(ctx context.Context, as string) ([]VMSession, error)
	// SetVMSessionStatus moves one of the acting user's sessions to
	// c.Status, setting that status's timestamp. Recording the current
	// status again succeeds and keeps the first time. A move that
	// VMStatusFrom does not allow is ErrConflict; an unknown status is
	// ErrInvalid.
	SetVMSessionStatus(ctx context.Context, as, id string, c VMStatusChange) error
}

// VMHosts is the login-VM manager's view of the sessions, used without a
// signed-in user: at start-up and on a timer the manager of a host
// reconciles what runs there with what the store believes is live. It
// reaches only the live sessions of the named host, and no ciphertext.
// In PostgreSQL it runs as its own role, polydev_vmm (see
// store/postgres).
type VMHosts interface {
	// HostVMSessions lists the sessions on hostID that are not destroyed,
	// oldest first. An empty hostID is ErrInvalid.
	HostVMSessions(ctx context.Context, hostID string) ([]VMSession, error)
}

// LoginVMStore is what Store keeps of login VMs: the users' sessions and
// the managers' host view.
type LoginVMStore interface {
	VMSessions
	VMHosts
}
