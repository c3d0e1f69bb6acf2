package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"polydev/internal/store"
)

// Sessions: logins, found by the hash of their bearer token.

const sessionColumns = `id, user_id, token_hash, created_at, expires_at, last_seen_at, revoked_at, client_ip, user_agent`

// CreateSession inserts s for the acting user. s.UserID must be `as` or
// empty (then set to `as`); another user's id is refused with
// store.ErrNotFound, as is an `as` that does not exist. An empty s.ID gets
// a new UUID; a zero CreatedAt becomes now and a zero LastSeenAt
// CreatedAt; ExpiresAt is required (ErrInvalid). A taken token hash is
// store.ErrConflict.
func (db *DB) CreateSession(ctx context.Context, as string, s *store.Session) error {
	const op = "create session"
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
	if s.ExpiresAt.IsZero() {
		return fail(ctx, op, fmt.Errorf("no expiry: %w", store.ErrInvalid))
	}
	if s.CreatedAt.IsZero() {
		s.CreatedAt = time.Now()
	}
	if s.LastSeenAt.IsZero() {
		s.LastSeenAt = s.CreatedAt
	}
	if err := checkTimes(s.CreatedAt, s.ExpiresAt, s.LastSeenAt, s.RevokedAt); err != nil {
		return fail(ctx, op, err)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		// The owner comes from the acting user's row: no row, no session.
		return oneRow(tx.ExecContext(ctx, `INSERT INTO sessions (`+sessionColumns+`)
			SELECT ?, id, ?, ?, ?, ?, ?, ?, ? FROM users WHERE id = ?`,
			s.ID, s.TokenHash, encodeTime(s.CreatedAt), encodeTime(s.ExpiresAt), encodeTime(s.LastSeenAt),
			nullTime(s.RevokedAt), s.ClientIP, s.UserAgent, as))
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	s.CreatedAt, s.ExpiresAt, s.LastSeenAt = utcMicro(s.CreatedAt), utcMicro(s.ExpiresAt), utcMicro(s.LastSeenAt)
	if !s.RevokedAt.IsZero() {
		s.RevokedAt = utcMicro(s.RevokedAt)
	}
	return nil
}

// ActiveSession finds the session whose token hash is tokenHash, unrevoked
// and with expires_at after now, and records now as its last use when the
// recorded one is store.SessionTouchInterval old or more (last_seen_at
// never moves backwards when lookups race). The session is returned as
// found, so its LastSeenAt is the recorded use before this one.
//
// The lookup runs on a reader: unknown tokens, the bulk of any guessing,
// and most known ones never take the write lock. When it writes, the
// update re-checks revocation and expiry, so a session revoked in between
// is not found.
func (db *DB) ActiveSession(ctx context.Context, tokenHash []byte, now time.Time) (*store.Session, error) {
	const op = "active session"
	if err := checkTimes(now); err != nil {
		return nil, fail(ctx, op, err)
	}
	at := encodeTime(now)
	var s store.Session
	err := db.r.QueryRowContext(ctx, `SELECT `+sessionColumns+` FROM sessions
		WHERE token_hash = ? AND revoked_at IS NULL AND expires_at > ?`, tokenHash, at).
		Scan(&s.ID, &s.UserID, &s.TokenHash, timeDest{&s.CreatedAt}, timeDest{&s.ExpiresAt}, timeDest{&s.LastSeenAt},
			timeDest{&s.RevokedAt}, &s.ClientIP, &s.UserAgent)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	if now.Sub(s.LastSeenAt) < store.SessionTouchInterval {
		return &s, nil
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE sessions SET last_seen_at = max(last_seen_at, ?)
			WHERE id = ? AND user_id = ? AND revoked_at IS NULL AND expires_at > ?`, at, s.ID, s.UserID, at))
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return &s, nil
}

// RevokeSession marks one of the acting user's sessions revoked at now. A
// session already revoked keeps its first revocation time and the call
// succeeds (logging out twice is not an error).
func (db *DB) RevokeSession(ctx context.Context, as, id string, now time.Time) error {
	const op = "revoke session"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := checkTimes(now); err != nil {
		return fail(ctx, op, err)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE sessions SET revoked_at = coalesce(revoked_at, ?)
			WHERE id = ? AND user_id = ?`, encodeTime(now), id, as))
	})
	return fail(ctx, op, err)
}
