package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"polydev/internal/store"
)

// Egress ports (store/egress.go). Every change runs in one BEGIN IMMEDIATE
// transaction on the single writer, so choosing a free port and taking it
// cannot interleave with another allocation, in this process or another.

var _ store.Egress = (*DB)(nil)

// currentPort is the acting user's port for provider, 0 when not linked.
func currentPort(ctx context.Context, tx *sql.Tx, as, provider string) (int, error) {
	var port int
	err := tx.QueryRowContext(ctx, `SELECT decodo_port FROM provider_tokens WHERE user_id = ? AND provider = ?`,
		as, provider).Scan(&port)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, nil
	}
	return port, err
}

// holdPort takes port for the acting user, or confirms they hold it:
// store.ErrConflict when another user does, store.ErrNotFound when the
// user does not exist, store.ErrInvalid for a port outside 1..65535.
func holdPort(ctx context.Context, tx *sql.Tx, as string, port int) error {
	_, err := tx.ExecContext(ctx, `INSERT INTO egress_ports (port, user_id, allocated_at)
		SELECT ?, id, ? FROM users WHERE id = ? ON CONFLICT (port) DO NOTHING`, port, encodeTime(time.Now()), as)
	if err != nil {
		return err
	}
	var holder string
	err = tx.QueryRowContext(ctx, `SELECT user_id FROM egress_ports WHERE port = ?`, port).Scan(&holder)
	switch {
	case errors.Is(err, sql.ErrNoRows):
		return store.ErrNotFound // the insert found no user
	case err != nil:
		return err
	case holder != as:
		return store.ErrConflict
	}
	return nil
}

// releasePort gives up the acting user's port unless one of their tokens
// still egresses through it.
func releasePort(ctx context.Context, tx *sql.Tx, as string, port int) error {
	_, err := tx.ExecContext(ctx, `DELETE FROM egress_ports WHERE user_id = ? AND port = ?
		AND NOT EXISTS (SELECT 1 FROM provider_tokens WHERE user_id = ? AND decodo_port = ?)`, as, port, as, port)
	return err
}

// freePort is the highest port of r that no user holds and that is not
// the default port of an existing user; store.ErrPortsExhausted if none.
func freePort(ctx context.Context, tx *sql.Tx, r store.PortRange) (int, error) {
	var port int
	err := tx.QueryRowContext(ctx, `WITH RECURSIVE candidates (port) AS (
			SELECT ? UNION ALL SELECT port - 1 FROM candidates WHERE port > ?
		)
		SELECT c.port FROM candidates c
		WHERE NOT EXISTS (SELECT 1 FROM egress_ports e WHERE e.port = c.port)
		AND NOT EXISTS (SELECT 1 FROM users u WHERE u.number = c.port - ? + 1)
		LIMIT 1`, r.Base+r.Size-1, r.Base, r.Base).Scan(&port)
	if errors.Is(err, sql.ErrNoRows) {
		return 0, store.ErrPortsExhausted
	}
	return port, err
}

const tokenColumns = `user_id, provider, encrypted_refresh_token, scopes, expires_at,
	decodo_port, egress_ip, last_rotated_at, last_used_at, created_at`

type rowScanner interface{ Scan(dest ...any) error }

func scanToken(row rowScanner) (*store.ProviderToken, error) {
	var t store.ProviderToken
	var scopes string
	err := row.Scan(&t.UserID, &t.Provider, &t.EncryptedRefreshToken, &scopes, timeDest{&t.ExpiresAt},
		&t.EgressPort, &t.EgressIP, timeDest{&t.LastRotatedAt}, timeDest{&t.LastUsedAt}, timeDest{&t.CreatedAt})
	if err != nil {
		return nil, err
	}
	if err := json.Unmarshal([]byte(scopes), &t.Scopes); err != nil {
		return nil, errors.New("malformed scopes in the database")
	}
	if len(t.Scopes) == 0 {
		t.Scopes = nil
	}
	return &t, nil
}

// LinkProviderToken stores the acting user's token, choosing its port on
// the first link (store.Egress).
func (db *DB) LinkProviderToken(ctx context.Context, as string, t *store.ProviderToken, r store.PortRange) (bool, error) {
	const op = "link provider token"
	if err := r.Validate(); err != nil {
		return false, fail(ctx, op, err)
	}
	as, ok := canonicalID(as)
	if !ok {
		return false, fail(ctx, op, store.ErrNotFound)
	}
	if err := owner(&t.UserID, as); err != nil {
		return false, fail(ctx, op, err)
	}
	if err := checkTimes(t.ExpiresAt); err != nil {
		return false, fail(ctx, op, err)
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	scopesJSON, err := json.Marshal(scopes)
	if err != nil {
		return false, fail(ctx, op, err)
	}
	var first bool
	var stored *store.ProviderToken
	err = db.write(ctx, func(tx *sql.Tx) error {
		res, err := tx.ExecContext(ctx, `UPDATE provider_tokens SET encrypted_refresh_token = ?, scopes = ?, expires_at = ?
			WHERE user_id = ? AND provider = ?`, t.EncryptedRefreshToken, string(scopesJSON), nullTime(t.ExpiresAt), as, t.Provider)
		if err != nil {
			return err
		}
		if n, err := res.RowsAffected(); err != nil || n == 1 {
			if err == nil {
				stored, err = scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM provider_tokens
					WHERE user_id = ? AND provider = ?`, as, t.Provider))
			}
			return err
		}
		first = true
		var number int64
		if err := tx.QueryRowContext(ctx, `SELECT number FROM users WHERE id = ?`, as).Scan(&number); err != nil {
			return err // sql.ErrNoRows: store.ErrNotFound
		}
		port := 0
		if def := r.Default(number); r.Contains(def) {
			switch err := holdPort(ctx, tx, as, def); {
			case err == nil:
				port = def
			case !errors.Is(err, store.ErrConflict):
				return err
			}
		}
		if port == 0 {
			if port, err = freePort(ctx, tx, r); err != nil {
				return err
			}
			if err := holdPort(ctx, tx, as, port); err != nil {
				return err
			}
		}
		now := encodeTime(time.Now())
		stored, err = scanToken(tx.QueryRowContext(ctx, `INSERT INTO provider_tokens (user_id, provider, encrypted_refresh_token,
				scopes, expires_at, decodo_port, egress_ip, created_at)
			VALUES (?, ?, ?, ?, ?, ?, '', ?) RETURNING `+tokenColumns,
			as, t.Provider, t.EncryptedRefreshToken, string(scopesJSON), nullTime(t.ExpiresAt), port, now))
		return err
	})
	if err != nil {
		return false, fail(ctx, op, err)
	}
	*t = *stored
	return first, nil
}

// ProviderToken returns the acting user's token for provider.
func (db *DB) ProviderToken(ctx context.Context, as, provider string) (*store.ProviderToken, error) {
	const op = "provider token"
	as, ok := canonicalID(as)
	if !ok {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	t, err := scanToken(db.r.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM provider_tokens
		WHERE user_id = ? AND provider = ?`, as, provider))
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return t, nil
}

// RotateEgress moves the acting user's provider to a fresh port
// (store.Egress).
func (db *DB) RotateEgress(ctx context.Context, as, provider string, r store.PortRange, now time.Time) (int, *store.ProviderToken, error) {
	const op = "rotate egress"
	if err := r.Validate(); err != nil {
		return 0, nil, fail(ctx, op, err)
	}
	as, ok := canonicalID(as)
	if !ok {
		return 0, nil, fail(ctx, op, store.ErrNotFound)
	}
	if err := checkTimes(now); err != nil {
		return 0, nil, fail(ctx, op, err)
	}
	var old int
	var stored *store.ProviderToken
	err := db.write(ctx, func(tx *sql.Tx) error {
		var err error
		if old, err = currentPort(ctx, tx, as, provider); err != nil {
			return err
		}
		if old == 0 {
			return store.ErrNotFound
		}
		port, err := freePort(ctx, tx, r)
		if err != nil {
			return err
		}
		if err := holdPort(ctx, tx, as, port); err != nil {
			return err
		}
		stored, err = scanToken(tx.QueryRowContext(ctx, `UPDATE provider_tokens SET decodo_port = ?, egress_ip = '', last_rotated_at = ?
			WHERE user_id = ? AND provider = ? RETURNING `+tokenColumns, port, encodeTime(now), as, provider))
		if err != nil {
			return err
		}
		return releasePort(ctx, tx, as, old)
	})
	if err != nil {
		return 0, nil, fail(ctx, op, err)
	}
	return old, stored, nil
}

// SetEgressIP records the egress IP seen through port (store.Egress).
func (db *DB) SetEgressIP(ctx context.Context, as, provider string, port int, ip string) error {
	const op = "set egress ip"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		cur, err := currentPort(ctx, tx, as, provider)
		switch {
		case err != nil:
			return err
		case cur == 0:
			return store.ErrNotFound
		case cur != port:
			return store.ErrConflict
		}
		_, err = tx.ExecContext(ctx, `UPDATE provider_tokens SET egress_ip = ? WHERE user_id = ? AND provider = ?`, ip, as, provider)
		return err
	})
	return fail(ctx, op, err)
}

// TouchProviderToken records a use of the token (store.Egress).
func (db *DB) TouchProviderToken(ctx context.Context, as, provider string, now time.Time) error {
	const op = "touch provider token"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := checkTimes(now); err != nil {
		return fail(ctx, op, err)
	}
	at := encodeTime(now)
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE provider_tokens
			SET last_used_at = CASE WHEN last_used_at IS NULL OR last_used_at < ? THEN ? ELSE last_used_at END
			WHERE user_id = ? AND provider = ?`, at, at, as, provider))
	})
	return fail(ctx, op, err)
}
