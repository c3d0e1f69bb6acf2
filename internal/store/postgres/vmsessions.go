package postgres

import (
	"context"
	"fmt"
	"slices"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"polydev/internal/store"
)

// Login VM sessions (internal/store/vmsessions.go). The user's side runs
// as polydev_app under the owner policy; HostVMSessions runs as
// polydev_vmm, which sees only the live sessions of the host named by the
// transaction's polydev.host_id setting (migration 00008).

var (
	_ store.VMSessions = (*DB)(nil)
	_ store.VMHosts    = (*DB)(nil)
)

// vmmRole reconciles a host's login VMs without a signed-in user.
const vmmRole = "polydev_vmm"

// The columns polydev_vmm may read are exactly these.
const vmSessionColumns = `id, user_id, provider, vm_id, vm_ip, host_id, status, created_at, booting_at, ready_at,
	authenticating_at, ended_at, token_captured_at, destroyed_at, expires_at`

func scanVMSession(row pgx.Row) (store.VMSession, error) {
	var s store.VMSession
	var id, user uuid.UUID
	var booting, ready, authenticating, ended, captured, destroyed, expires *time.Time
	err := row.Scan(&id, &user, &s.Provider, &s.VMID, &s.VMIP, &s.HostID, &s.Status, &s.CreatedAt,
		&booting, &ready, &authenticating, &ended, &captured, &destroyed, &expires)
	if err != nil {
		return s, err
	}
	s.ID, s.UserID, s.CreatedAt = id.String(), user.String(), s.CreatedAt.UTC()
	for _, p := range []struct {
		dst *time.Time
		src *time.Time
	}{{&s.BootingAt, booting}, {&s.ReadyAt, ready}, {&s.AuthenticatingAt, authenticating}, {&s.EndedAt, ended},
		{&s.TokenCapturedAt, captured}, {&s.DestroyedAt, destroyed}, {&s.ExpiresAt, expires}} {
		if p.src != nil {
			*p.dst = p.src.UTC()
		}
	}
	return s, nil
}

// CreateVMSession inserts s for the acting user (see store.VMSessions). A
// zero CreatedAt becomes the database's clock.
func (db *DB) CreateVMSession(ctx context.Context, as string, s *store.VMSession) error {
	const op = "create vm session"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	if s.UserID != "" {
		if owner, ok := parseID(s.UserID); !ok || owner != user {
			return fmt.Errorf("postgres: %s: a session belongs to the acting user: %w", op, store.ErrNotFound)
		}
	}
	id, ok := uuid.New(), true
	if s.ID != "" {
		id, ok = parseID(s.ID)
	}
	if !ok {
		return fmt.Errorf("postgres: %s: session id is not a UUID: %w", op, store.ErrInvalid)
	}
	if s.Status == "" {
		s.Status = store.VMBooting
	}
	if s.Status != store.VMBooting {
		return fmt.Errorf("postgres: %s: a new session is booting, not %q: %w", op, s.Status, store.ErrInvalid)
	}
	var created time.Time
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `insert into vm_sessions (id, user_id, provider, vm_id, vm_ip, host_id, status,
				created_at, booting_at, expires_at)
			values ($1, $2, $3, $4, $5, $6, $7, coalesce($8, now()), $9, $10)
			returning created_at`,
			id, user, s.Provider, s.VMID, s.VMIP, s.HostID, s.Status, nullTime(s.CreatedAt), nullTime(s.BootingAt),
			nullTime(s.ExpiresAt)).Scan(&created)
	})
	if err != nil {
		return wrap(op, err)
	}
	s.ID, s.UserID, s.CreatedAt = id.String(), user.String(), created.UTC()
	for _, p := range []*time.Time{&s.BootingAt, &s.ExpiresAt} {
		if !p.IsZero() {
			*p = micro(*p)
		}
	}
	return nil
}

// VMSession returns one of the acting user's sessions.
func (db *DB) VMSession(ctx context.Context, as, id string) (*store.VMSession, error) {
	const op = "vm session"
	user, ok1 := parseID(as)
	sid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return nil, wrap(op, store.ErrNotFound)
	}
	var s store.VMSession
	err := db.asUser(ctx, user, func(tx pgx.Tx) (err error) {
		s, err = scanVMSession(tx.QueryRow(ctx, "select "+vmSessionColumns+" from vm_sessions where id = $1 and user_id = $2", sid, user))
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return &s, nil
}

// LiveVMSessions lists the acting user's sessions that are not destroyed,
// newest first.
func (db *DB) LiveVMSessions(ctx context.Context, as string) ([]store.VMSession, error) {
	const op = "live vm sessions"
	user, ok := parseID(as)
	if !ok {
		return nil, nil
	}
	var out []store.VMSession
	err := db.asUser(ctx, user, func(tx pgx.Tx) (err error) {
		out, err = collectVMSessions(tx.Query(ctx, "select "+vmSessionColumns+` from vm_sessions
			where user_id = $1 and status <> 'destroyed' order by created_at desc, id`, user))
		return err
	})
	return out, wrap(op, err)
}

// HostVMSessions lists the live sessions of hostID, oldest first, as
// polydev_vmm with polydev.host_id set to hostID: the policy, not only the
// WHERE clause, keeps other hosts' and destroyed sessions out.
func (db *DB) HostVMSessions(ctx context.Context, hostID string) ([]store.VMSession, error) {
	const op = "host vm sessions"
	if hostID == "" {
		return nil, fmt.Errorf("postgres: %s: no host id: %w", op, store.ErrInvalid)
	}
	var out []store.VMSession
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		_, err := tx.Exec(ctx, `select
			set_config('role', 'polydev_vmm', true),
			set_config('request.jwt.claims', '', true),
			set_config('request.jwt.claim.sub', '', true),
			set_config('polydev.host_id', $1, true)`, hostID)
		if err := roleError(vmmRole, err); err != nil {
			return err
		}
		out, err = collectVMSessions(tx.Query(ctx, "select "+vmSessionColumns+` from vm_sessions
			where host_id = $1 and status <> 'destroyed' order by created_at, id`, hostID))
		return err
	})
	return out, wrap(op, err)
}

func collectVMSessions(rows pgx.Rows, err error) ([]store.VMSession, error) {
	if err != nil {
		return nil, err
	}
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.VMSession, error) { return scanVMSession(row) })
}

// vmStatusColumn is the timestamp column each status sets.
var vmStatusColumn = map[string]string{
	store.VMBooting:        "booting_at",
	store.VMReady:          "ready_at",
	store.VMAuthenticating: "authenticating_at",
	store.VMCompleted:      "ended_at",
	store.VMFailed:         "ended_at",
	store.VMDestroyed:      "destroyed_at",
}

// SetVMSessionStatus moves one of the acting user's sessions to c.Status
// (see store.VMSessions). The row is locked while the move is checked.
func (db *DB) SetVMSessionStatus(ctx context.Context, as, id string, c store.VMStatusChange) error {
	const op = "set vm session status"
	user, ok1 := parseID(as)
	sid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return wrap(op, store.ErrNotFound)
	}
	col, known := vmStatusColumn[c.Status]
	if !known {
		return fmt.Errorf("postgres: %s: unknown status %q: %w", op, c.Status, store.ErrInvalid)
	}
	from := store.VMStatusFrom[c.Status]
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		var current string
		if err := tx.QueryRow(ctx, "select status from vm_sessions where id = $1 and user_id = $2 for update", sid, user).Scan(&current); err != nil {
			return err
		}
		if !slices.Contains(from, current) {
			return fmt.Errorf("from %s to %s: %w", current, c.Status, store.ErrConflict)
		}
		// col comes from vmStatusColumn, never from the caller.
		_, err := tx.Exec(ctx, `update vm_sessions set status = $3, `+col+` = coalesce(`+col+`, $4, now()),
				vm_id = case when $5 = '' then vm_id else $5 end
			where id = $1 and user_id = $2`, sid, user, c.Status, nullTime(c.At), c.VMID)
		return err
	}))
}
