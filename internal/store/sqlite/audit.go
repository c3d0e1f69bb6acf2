package sqlite

import (
	"context"
	"database/sql"
	"fmt"
	"time"

	"polydev/internal/store"
)

// The audit log: security events, kept after their user is erased.

// Record appends e, assigning e.ID and e.CreatedAt (now). An empty UserID
// records an event without an account; an empty Detail is stored as "{}".
// A UserID that is not a UUID, or of no user, is store.ErrInvalid.
func (db *DB) Record(ctx context.Context, e *store.AuditEvent) error {
	const op = "record audit event"
	var userID any
	if e.UserID != "" {
		id, ok := canonicalID(e.UserID)
		if !ok {
			return fail(ctx, op, fmt.Errorf("user id is not a uuid: %w", store.ErrInvalid))
		}
		userID = id
	}
	detail := e.Detail
	if detail == "" {
		detail = "{}"
	}
	now := utcMicro(time.Now())
	var id int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		return tx.QueryRowContext(ctx, `INSERT INTO audit_log (user_id, event, client_ip, detail, created_at)
			VALUES (?, ?, ?, ?, ?) RETURNING id`, userID, e.Event, e.ClientIP, detail, encodeTime(now)).Scan(&id)
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	e.ID, e.CreatedAt, e.Detail = id, now, detail
	if userID != nil {
		e.UserID = userID.(string)
	}
	return nil
}

// AuditEvents lists up to limit of the acting user's events, newest first
// (by time, then by id). A limit below 1 is store.ErrInvalid.
func (db *DB) AuditEvents(ctx context.Context, as string, limit int) ([]store.AuditEvent, error) {
	const op = "audit events"
	if limit < 1 {
		return nil, fail(ctx, op, fmt.Errorf("limit below 1: %w", store.ErrInvalid))
	}
	as, ok := canonicalID(as)
	if !ok {
		return nil, nil // nobody's events: an empty list, as for any user without events
	}
	rows, err := db.r.QueryContext(ctx, `SELECT id, user_id, event, client_ip, detail, created_at FROM audit_log
		WHERE user_id = ? ORDER BY created_at DESC, id DESC LIMIT ?`, as, limit)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.AuditEvent
	for rows.Next() {
		var e store.AuditEvent
		if err := rows.Scan(&e.ID, &e.UserID, &e.Event, &e.ClientIP, &e.Detail, timeDest{&e.CreatedAt}); err != nil {
			return nil, fail(ctx, op, err)
		}
		out = append(out, e)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}
