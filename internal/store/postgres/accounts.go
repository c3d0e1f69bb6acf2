package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
	"github.com/jackc/pgx/v5/pgtype"

	"polydev/internal/store"
)

// This file holds the account side of the store: users, the
// pre-authentication lookups, sessions and the audit log.

const userColumns = `id, number, email, coalesce(encrypted_master_key_hint, ''), kdf_params,
	auth_hash, auth_salt, auth_algo, wrapped_account_key, wrapped_private_key, public_key,
	created_at, updated_at`

func scanUser(row pgx.Row) (*store.User, error) {
	var u store.User
	var kdf string
	err := row.Scan(&u.ID, &u.Number, &u.Email, &u.EncryptedMasterKeyHint, &kdf,
		&u.AuthHash, &u.AuthSalt, &u.AuthAlgo, &u.WrappedAccountKey, &u.WrappedPrivateKey, &u.PublicKey,
		&u.CreatedAt, &u.UpdatedAt)
	if err != nil {
		return nil, err
	}
	u.KDFParams = []byte(kdf)
	u.CreatedAt, u.UpdatedAt = u.CreatedAt.UTC(), u.UpdatedAt.UTC()
	return &u, nil
}

// CreateUser inserts u. An empty u.ID is filled with a new random UUID.
// The transaction first looks the email up as polydev_auth, so that the
// usual conflict (an email already registered) does not use up a user
// number, from which egress ports derive; a race between two
// registrations of one email is still caught by the unique constraint.
// Then it sets the new id as the claims, the only way the users policy
// lets a row in.
func (db *DB) CreateUser(ctx context.Context, u *store.User) error {
	const op = "create user"
	id, ok := uuid.New(), true
	if u.ID != "" {
		id, ok = parseID(u.ID)
	}
	if !ok {
		return fmt.Errorf("postgres: %s: user id is not a UUID: %w", op, store.ErrInvalid)
	}
	var hint *string
	if u.EncryptedMasterKeyHint != "" {
		hint = &u.EncryptedMasterKeyHint
	}
	var number int64
	var created, updated time.Time
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := enterAuth(ctx, tx); err != nil {
			return err
		}
		var taken bool
		if err := tx.QueryRow(ctx, "select exists (select 1 from users where email = $1)", u.Email).Scan(&taken); err != nil {
			return err
		}
		if taken {
			return fmt.Errorf("email taken: %w", store.ErrConflict)
		}
		if err := actAs(ctx, tx, id); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `insert into users (id, email, encrypted_master_key_hint, kdf_params,
				auth_hash, auth_salt, auth_algo, wrapped_account_key, wrapped_private_key, public_key)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10)
			returning number, created_at, updated_at`,
			id, u.Email, hint, nullText(u.KDFParams), u.AuthHash, u.AuthSalt, u.AuthAlgo,
			u.WrappedAccountKey, u.WrappedPrivateKey, u.PublicKey).Scan(&number, &created, &updated)
	})
	if err != nil {
		return wrap(op, err)
	}
	u.ID, u.Number, u.CreatedAt, u.UpdatedAt = id.String(), number, created.UTC(), updated.UTC()
	return nil
}

// User returns the acting user's record.
func (db *DB) User(ctx context.Context, as string) (*store.User, error) {
	const op = "user"
	id, ok := parseID(as)
	if !ok {
		return nil, wrap(op, store.ErrNotFound)
	}
	var u *store.User
	err := db.asUser(ctx, id, func(tx pgx.Tx) (err error) {
		u, err = scanUser(tx.QueryRow(ctx, "select "+userColumns+" from users where id = $1", id))
		return err
	})
	return u, wrap(op, err)
}

// SetCredentials replaces the acting user's password-derived fields and
// revokes their other sessions, at the database's clock. A keepSession
// that is empty, malformed or not the user's keeps nothing.
func (db *DB) SetCredentials(ctx context.Context, as string, c store.Credentials, keepSession string) error {
	const op = "set credentials"
	id, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	var keep pgtype.UUID
	if k, ok := parseID(keepSession); ok {
		keep = pgtype.UUID{Bytes: k, Valid: true}
	}
	return wrap(op, db.asUser(ctx, id, func(tx pgx.Tx) error {
		tag, err := tx.Exec(ctx, `update users set kdf_params = $2, auth_hash = $3, auth_salt = $4,
				auth_algo = $5, wrapped_account_key = $6, wrapped_private_key = $7, updated_at = now()
			where id = $1`,
			id, nullText(c.KDFParams), c.AuthHash, c.AuthSalt, c.AuthAlgo, c.WrappedAccountKey, c.WrappedPrivateKey)
		if err != nil {
			return err
		}
		if tag.RowsAffected() == 0 {
			return store.ErrNotFound
		}
		_, err = tx.Exec(ctx, `update sessions set revoked_at = now()
			where user_id = $1 and revoked_at is null and ($2::uuid is null or id <> $2)`, id, keep)
		return err
	}))
}

// DeleteUser erases the acting user. The foreign keys do the rest: every
// row the user owns goes, and their audit events stay without the link.
func (db *DB) DeleteUser(ctx context.Context, as string) error {
	const op = "delete user"
	id, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, id, func(tx pgx.Tx) error {
		return mustAffect(tx.Exec(ctx, "delete from users where id = $1", id))
	}))
}

// UserByEmail finds a user by exact email, as polydev_auth.
func (db *DB) UserByEmail(ctx context.Context, email string) (*store.User, error) {
	var u *store.User
	err := db.asAuth(ctx, func(tx pgx.Tx) (err error) {
		u, err = scanUser(tx.QueryRow(ctx, "select "+userColumns+" from users where email = $1", email))
		return err
	})
	return u, wrap("user by email", err)
}

const sessionColumns = "id, user_id, token_hash, created_at, expires_at, last_seen_at, revoked_at, client_ip, user_agent"

func scanSession(row pgx.Row) (*store.Session, error) {
	var s store.Session
	var revoked *time.Time
	err := row.Scan(&s.ID, &s.UserID, &s.TokenHash, &s.CreatedAt, &s.ExpiresAt, &s.LastSeenAt, &revoked, &s.ClientIP, &s.UserAgent)
	if err != nil {
		return nil, err
	}
	s.CreatedAt, s.ExpiresAt, s.LastSeenAt = s.CreatedAt.UTC(), s.ExpiresAt.UTC(), s.LastSeenAt.UTC()
	if revoked != nil {
		s.RevokedAt = revoked.UTC()
	}
	return &s, nil
}

// ActiveSession finds an unrevoked session unexpired at now, as
// polydev_auth, records now as its last use when the recorded one is
// store.SessionTouchInterval old or more, and returns it as it was before:
// LastSeenAt is the previous recorded use.
func (db *DB) ActiveSession(ctx context.Context, tokenHash []byte, now time.Time) (*store.Session, error) {
	var s *store.Session
	// One statement, in one round trip with the role switch. The update
	// runs only when the recorded use is SessionTouchInterval old or more,
	// so most lookups lock and write nothing.
	err := db.oneTripAuth(ctx, func(t *trip) {
		t.row(`with found as (
				select `+sessionColumns+` from sessions
				where token_hash = $1 and revoked_at is null and expires_at > $2
			), touched as (
				update sessions set last_seen_at = greatest(sessions.last_seen_at, $2) from found
				where sessions.id = found.id and found.last_seen_at <= $3
			)
			select `+sessionColumns+` from found`, []any{tokenHash, micro(now), micro(now.Add(-store.SessionTouchInterval))},
			func(row pgx.Row) (err error) {
				s, err = scanSession(row)
				return err
			})
	})
	return s, wrap("active session", err)
}

// CreateSession inserts s for the acting user. An empty s.ID is filled
// with a new random UUID, an empty s.UserID with the acting user, a zero
// CreatedAt with the database's clock and a zero LastSeenAt with
// CreatedAt. A session for someone else, or one that never expires, is
// store.ErrInvalid.
func (db *DB) CreateSession(ctx context.Context, as string, s *store.Session) error {
	const op = "create session"
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
	if s.ExpiresAt.IsZero() {
		return fmt.Errorf("postgres: %s: no expiry: %w", op, store.ErrInvalid)
	}
	var created, expires, lastSeen time.Time
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `insert into sessions (id, user_id, token_hash, created_at, expires_at, last_seen_at, revoked_at, client_ip, user_agent)
			values ($1, $2, $3, coalesce($4, now()), $5, coalesce($6, $4, now()), $7, $8, $9)
			returning created_at, expires_at, last_seen_at`,
			id, user, s.TokenHash, nullTime(s.CreatedAt), micro(s.ExpiresAt), nullTime(s.LastSeenAt), nullTime(s.RevokedAt), s.ClientIP, s.UserAgent,
		).Scan(&created, &expires, &lastSeen)
	})
	if err != nil {
		return wrap(op, err)
	}
	s.ID, s.UserID = id.String(), user.String()
	s.CreatedAt, s.ExpiresAt, s.LastSeenAt = created.UTC(), expires.UTC(), lastSeen.UTC()
	return nil
}

// RevokeSession marks one of the acting user's sessions revoked at now.
// Revoking a revoked session succeeds and keeps the first revocation time.
func (db *DB) RevokeSession(ctx context.Context, as, id string, now time.Time) error {
	const op = "revoke session"
	user, ok1 := parseID(as)
	sid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		return mustAffect(tx.Exec(ctx, `update sessions set revoked_at = coalesce(revoked_at, $3)
			where id = $1 and user_id = $2`, sid, user, micro(now)))
	}))
}

// Record appends e. An event of a user is written as that user (the
// policy checks the claims match); an event of no user (e.UserID empty)
// is written as polydev_auth. The id is taken from the sequence first
// because polydev_auth may not read the row it inserts. An empty Detail is
// stored as "{}". A user id that names no user is store.ErrNotFound.
func (db *DB) Record(ctx context.Context, e *store.AuditEvent) error {
	const op = "record audit event"
	var user pgtype.UUID
	run := db.asAuth
	if e.UserID != "" {
		id, ok := parseID(e.UserID)
		if !ok {
			return fmt.Errorf("postgres: %s: user id is not a UUID: %w", op, store.ErrInvalid)
		}
		user = pgtype.UUID{Bytes: id, Valid: true}
		run = func(ctx context.Context, fn func(pgx.Tx) error) error { return db.asUser(ctx, id, fn) }
	}
	detail := e.Detail
	if detail == "" {
		detail = "{}"
	}
	var eventID int64
	var created time.Time
	err := run(ctx, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `with next as (
				select nextval(pg_get_serial_sequence('public.audit_log', 'id')) as id, now() as at
			), ins as (
				insert into audit_log (id, user_id, event, client_ip, detail, created_at)
				select next.id, $1::uuid, $2::text, $3::text, $4::text, next.at from next
			)
			select id, at from next`, user, e.Event, e.ClientIP, detail).Scan(&eventID, &created)
	})
	if err != nil {
		return wrap(op, err)
	}
	e.ID, e.CreatedAt, e.Detail = eventID, created.UTC(), detail
	if user.Valid {
		e.UserID = uuid.UUID(user.Bytes).String()
	}
	return nil
}

// AuditEvents lists up to limit of the acting user's events, newest first.
// A limit below 1 is store.ErrInvalid.
func (db *DB) AuditEvents(ctx context.Context, as string, limit int) ([]store.AuditEvent, error) {
	const op = "audit events"
	id, ok := parseID(as)
	if limit < 1 {
		return nil, fmt.Errorf("postgres: %s: limit %d: %w", op, limit, store.ErrInvalid)
	}
	if !ok {
		return nil, nil // like any user without events
	}
	var events []store.AuditEvent
	err := db.asUser(ctx, id, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select id, user_id::text, event, client_ip, detail, created_at from audit_log
			where user_id = $1 order by created_at desc, id desc limit $2`, id, limit)
		if err != nil {
			return err
		}
		events, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.AuditEvent, error) {
			var e store.AuditEvent
			err := row.Scan(&e.ID, &e.UserID, &e.Event, &e.ClientIP, &e.Detail, &e.CreatedAt)
			e.CreatedAt = e.CreatedAt.UTC()
			return e, err
		})
		return err
	})
	return events, wrap(op, err)
}

// mustAffect turns an update or delete that matched no row, which is what
// another user's row looks like under the policies, into store.ErrNotFound.
func mustAffect(tag pgconn.CommandTag, err error) error {
	if err != nil {
		return err
	}
	if tag.RowsAffected() == 0 {
		return store.ErrNotFound
	}
	return nil
}

// micro is t as stored: UTC, truncated to the microsecond.
func micro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

// nullTime is t as stored, or NULL for the zero time.
func nullTime(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	m := micro(t)
	return &m
}

// nullText passes an empty byte string as NULL, so a NOT NULL column refuses
// it (store.ErrInvalid) instead of storing "".
func nullText(b []byte) any {
	if len(b) == 0 {
		return nil
	}
	return string(b)
}
