package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"time"

	"polydev/internal/store"
)

// Users: registration, the pre-authentication lookup by email, password
// changes and erasure.

const userColumns = `id, number, email, encrypted_master_key_hint, kdf_params, auth_hash, auth_salt, auth_algo,
	wrapped_account_key, wrapped_private_key, public_key, created_at, updated_at`

func scanUser(row *sql.Row) (*store.User, error) {
	var u store.User
	var hint sql.NullString
	err := row.Scan(&u.ID, &u.Number, &u.Email, &hint, &u.KDFParams, &u.AuthHash, &u.AuthSalt, &u.AuthAlgo,
		&u.WrappedAccountKey, &u.WrappedPrivateKey, &u.PublicKey, timeDest{&u.CreatedAt}, timeDest{&u.UpdatedAt})
	if err != nil {
		return nil, err
	}
	u.EncryptedMasterKeyHint = hint.String
	return &u, nil
}

// CreateUser inserts u. An empty u.ID gets a new UUID. u.Number comes from
// users_number_seq, bumped in the same BEGIN IMMEDIATE transaction: the
// write lock is held from the start, so concurrent registrations take
// 1, 2, 3… in turn, and a failed insert rolls the counter back with it
// (no gaps). Numbers of erased users are not reused, as with PostgreSQL's
// identity column.
func (db *DB) CreateUser(ctx context.Context, u *store.User) error {
	const op = "create user"
	if err := ownID(&u.ID, true); err != nil {
		return fail(ctx, op, err)
	}
	now := utcMicro(time.Now())
	var number int64
	err := db.write(ctx, func(tx *sql.Tx) error {
		err := tx.QueryRowContext(ctx, `UPDATE users_number_seq SET last = last + 1 WHERE id = 1 RETURNING last`).Scan(&number)
		if errors.Is(err, sql.ErrNoRows) {
			return errors.New("users_number_seq has no row") // a damaged schema, not a missing user
		}
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO users (`+userColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`,
			u.ID, number, u.Email, nullString(u.EncryptedMasterKeyHint), textBytes(u.KDFParams), u.AuthHash, u.AuthSalt,
			u.AuthAlgo, u.WrappedAccountKey, u.WrappedPrivateKey, u.PublicKey, encodeTime(now), encodeTime(now))
		return err
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	u.Number, u.CreatedAt, u.UpdatedAt = number, now, now
	return nil
}

// User returns the acting user's own record.
func (db *DB) User(ctx context.Context, as string) (*store.User, error) {
	const op = "user"
	as, ok := canonicalID(as)
	if !ok {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	u, err := scanUser(db.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE id = ?`, as))
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return u, nil
}

// UserByEmail finds a user by exact (already lowercased) email; the email
// is compared as a value, never as a pattern.
func (db *DB) UserByEmail(ctx context.Context, email string) (*store.User, error) {
	const op = "user by email"
	u, err := scanUser(db.r.QueryRowContext(ctx, `SELECT `+userColumns+` FROM users WHERE email = ?`, email))
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return u, nil
}

// SetCredentials replaces the password-derived fields and bumps
// updated_at, and in the same transaction revokes (revoked_at = now) every
// unrevoked session of the user except keepSession ("" keeps none). A
// keepSession of another user keeps nothing of theirs and changes nothing
// of theirs: the revocation is scoped to `as`.
func (db *DB) SetCredentials(ctx context.Context, as string, c store.Credentials, keepSession string) error {
	const op = "set credentials"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	if k, ok := canonicalID(keepSession); ok {
		keepSession = k
	}
	now := encodeTime(time.Now())
	err := db.write(ctx, func(tx *sql.Tx) error {
		err := oneRow(tx.ExecContext(ctx, `UPDATE users SET kdf_params = ?, auth_hash = ?, auth_salt = ?, auth_algo = ?,
				wrapped_account_key = ?, wrapped_private_key = ?, updated_at = max(updated_at, ?)
			WHERE id = ?`,
			textBytes(c.KDFParams), c.AuthHash, c.AuthSalt, c.AuthAlgo, c.WrappedAccountKey, c.WrappedPrivateKey, now, as))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `UPDATE sessions SET revoked_at = ?
			WHERE user_id = ? AND id <> ? AND revoked_at IS NULL`, now, as, keepSession)
		return err
	})
	return fail(ctx, op, err)
}

// DeleteUser erases the acting user. Foreign keys do the rest: sessions,
// provider tokens, egress allocations, conversations and their messages,
// VM sessions and jobs cascade; audit_log rows stay, with user_id NULL.
func (db *DB) DeleteUser(ctx context.Context, as string) error {
	const op = "delete user"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `DELETE FROM users WHERE id = ?`, as))
	})
	return fail(ctx, op, err)
}
