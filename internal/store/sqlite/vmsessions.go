package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"slices"
	"time"

	"polydev/internal/store"
)

// Login VM sessions (internal/store/vmsessions.go). The rule of one live
// session per user and provider is the partial unique index
// vm_sessions_one_live (migration 00004).

var (
	_ store.VMSessions = (*DB)(nil)
	_ store.VMHosts    = (*DB)(nil)
)

const vmSessionColumns = `id, user_id, provider, vm_id, vm_ip, host_id, status, created_at, booting_at, ready_at,
	authenticating_at, ended_at, token_captured_at, destroyed_at, expires_at`

func scanVMSession(row interface{ Scan(...any) error }) (*store.VMSession, error) {
	var s store.VMSession
	err := row.Scan(&s.ID, &s.UserID, &s.Provider, &s.VMID, &s.VMIP, &s.HostID, &s.Status,
		timeDest{&s.CreatedAt}, timeDest{&s.BootingAt}, timeDest{&s.ReadyAt}, timeDest{&s.AuthenticatingAt},
		timeDest{&s.EndedAt}, timeDest{&s.TokenCapturedAt}, timeDest{&s.DestroyedAt}, timeDest{&s.ExpiresAt})
	if err != nil {
		return nil, err
	}
	return &s, nil
}

// CreateVMSession inserts s for the acting user (see store.VMSessions). A
// zero CreatedAt becomes now, a zero BootingAt stays NULL.
func (db *DB) CreateVMSession(ctx context.Context, as string, s *store.VMSession) error {
	const op = "create vm session"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := owner(&s.UserID, as); err != nil {
		return fail(ctx, op, err)
	}
	if err := ownID(&s.ID, true); err != nil {
		return fail(ctx, op, err)
	}
	if s.Status == "" {
		s.Status = store.VMBooting
	}
	if s.Status != store.VMBooting {
		return fail(ctx, op, fmt.Errorf("a new session is booting, not %q: %w", s.Status, store.ErrInvalid))
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = time.Now()
	}
	if err := checkTimes(s.CreatedAt, s.BootingAt, s.ExpiresAt); err != nil {
		return fail(ctx, op, err)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `INSERT INTO vm_sessions (id, user_id, provider, vm_id, vm_ip, host_id, status,
				created_at, booting_at, expires_at)
			SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ? FROM users WHERE id = ?`,
			s.ID, s.Provider, s.VMID, s.VMIP, s.HostID, s.Status, encodeTime(s.CreatedAt), nullTime(s.BootingAt),
			nullTime(s.ExpiresAt), as))
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	s.CreatedAt = utcMicro(s.CreatedAt)
	for _, p := range []*time.Time{&s.BootingAt, &s.ExpiresAt} {
		if !p.IsZero() {
			*p = utcMicro(*p)
		}
	}
	return nil
}

// VMSession returns one of the acting user's sessions.
func (db *DB) VMSession(ctx context.Context, as, id string) (*store.VMSession, error) {
	const op = "vm session"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	s, err := scanVMSession(db.r.QueryRowContext(ctx, `SELECT `+vmSessionColumns+` FROM vm_sessions
		WHERE id = ? AND user_id = ?`, id, as))
	return s, fail(ctx, op, err)
}

// LiveVMSessions lists the acting user's sessions that are not destroyed,
// newest first.
func (db *DB) LiveVMSessions(ctx context.Context, as string) ([]store.VMSession, error) {
	as, ok := canonicalID(as)
	if !ok {
		return nil, nil
	}
	return db.listVMSessions(ctx, "live vm sessions", `SELECT `+vmSessionColumns+` FROM vm_sessions
		WHERE user_id = ? AND status <> 'destroyed' ORDER BY created_at DESC, id`, as)
}

// HostVMSessions lists the live sessions of hostID, oldest first.
func (db *DB) HostVMSessions(ctx context.Context, hostID string) ([]store.VMSession, error) {
	const op = "host vm sessions"
	if hostID == "" {
		return nil, fail(ctx, op, fmt.Errorf("no host id: %w", store.ErrInvalid))
	}
	return db.listVMSessions(ctx, op, `SELECT `+vmSessionColumns+` FROM vm_sessions
		WHERE host_id = ? AND status <> 'destroyed' ORDER BY created_at, id`, hostID)
}

func (db *DB) listVMSessions(ctx context.Context, op, query string, args ...any) ([]store.VMSession, error) {
	rows, err := db.r.QueryContext(ctx, query, args...)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.VMSession
	for rows.Next() {
		s, err := scanVMSession(rows)
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		out = append(out, *s)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
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
// (see store.VMSessions).
func (db *DB) SetVMSessionStatus(ctx context.Context, as, id string, c store.VMStatusChange) error {
	const op = "set vm session status"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return fail(ctx, op, store.ErrNotFound)
	}
	col, known := vmStatusColumn[c.Status]
	if !known {
		return fail(ctx, op, fmt.Errorf("unknown status %q: %w", c.Status, store.ErrInvalid))
	}
	at := c.At
	if at.IsZero() {
		at = time.Now()
	}
	if err := checkTimes(at); err != nil {
		return fail(ctx, op, err)
	}
	from := store.VMStatusFrom[c.Status]
	err := db.write(ctx, func(tx *sql.Tx) error {
		var current string
		err := tx.QueryRowContext(ctx, `SELECT status FROM vm_sessions WHERE id = ? AND user_id = ?`, id, as).Scan(&current)
		if err != nil {
			return err
		}
		if !slices.Contains(from, current) {
			return fmt.Errorf("from %s to %s: %w", current, c.Status, store.ErrConflict)
		}
		// col comes from vmStatusColumn, never from the caller.
		_, err = tx.ExecContext(ctx, `UPDATE vm_sessions SET status = ?, `+col+` = coalesce(`+col+`, ?),
				vm_id = CASE WHEN ? = '' THEN vm_id ELSE ? END
			WHERE id = ? AND user_id = ?`,
			c.Status, encodeTime(at), c.VMID, c.VMID, id, as)
		return err
	})
	return fail(ctx, op, err)
}
