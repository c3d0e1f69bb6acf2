package sqlite

import (
	"context"
	"database/sql"
	"encoding/json"
	"errors"
	"time"

	"polydev/internal/store"
)

// Provider tokens: one sealed credential per user and provider.

// PutProviderToken inserts the acting user's token for t.Provider, or
// replaces every field of the existing one but CreatedAt, which keeps the
// time the provider was first linked (a zero CreatedAt on insert becomes
// now). t.UserID must be `as` or empty; another user is store.ErrNotFound.
// An unknown provider or an egress port outside 1..65535 is
// store.ErrInvalid; a port another user holds is store.ErrConflict. The
// port is taken for the user and the one it replaces released if unused
// (egress.go). Zero times are stored as NULL; Scopes as a JSON array.
func (db *DB) PutProviderToken(ctx context.Context, as string, t *store.ProviderToken) error {
	const op = "put provider token"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := owner(&t.UserID, as); err != nil {
		return fail(ctx, op, err)
	}
	created := t.CreatedAt
	if created.IsZero() {
		created = time.Now()
	}
	if err := checkTimes(created, t.ExpiresAt, t.LastRotatedAt, t.LastUsedAt); err != nil {
		return fail(ctx, op, err)
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	scopesJSON, err := json.Marshal(scopes)
	if err != nil {
		return fail(ctx, op, err)
	}
	var createdAt time.Time
	err = db.write(ctx, func(tx *sql.Tx) error {
		old, err := currentPort(ctx, tx, as, t.Provider)
		if err != nil {
			return err
		}
		if err := holdPort(ctx, tx, as, t.EgressPort); err != nil {
			return err
		}
		// INSERT … SELECT takes the owner from the acting user's row; the
		// WHERE clause also keeps SQLite from reading ON CONFLICT as a
		// join constraint.
		err = tx.QueryRowContext(ctx, `INSERT INTO provider_tokens (user_id, provider, encrypted_refresh_token, scopes,
				expires_at, decodo_port, egress_ip, last_rotated_at, last_used_at, created_at)
			SELECT id, ?, ?, ?, ?, ?, ?, ?, ?, ? FROM users WHERE id = ?
			ON CONFLICT (user_id, provider) DO UPDATE SET
				encrypted_refresh_token = excluded.encrypted_refresh_token, scopes = excluded.scopes,
				expires_at = excluded.expires_at, decodo_port = excluded.decodo_port, egress_ip = excluded.egress_ip,
				last_rotated_at = excluded.last_rotated_at, last_used_at = excluded.last_used_at
			RETURNING created_at`,
			t.Provider, t.EncryptedRefreshToken, string(scopesJSON), nullTime(t.ExpiresAt), t.EgressPort, t.EgressIP,
			nullTime(t.LastRotatedAt), nullTime(t.LastUsedAt), encodeTime(created), as).Scan(timeDest{&createdAt})
		if err != nil {
			return err
		}
		if old != 0 && old != t.EgressPort {
			return releasePort(ctx, tx, as, old)
		}
		return nil
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	t.CreatedAt = createdAt
	for _, p := range []*time.Time{&t.ExpiresAt, &t.LastRotatedAt, &t.LastUsedAt} {
		if !p.IsZero() {
			*p = utcMicro(*p)
		}
	}
	return nil
}

// ProviderTokens lists the acting user's tokens, ordered by provider.
func (db *DB) ProviderTokens(ctx context.Context, as string) ([]store.ProviderToken, error) {
	const op = "provider tokens"
	as, ok := canonicalID(as)
	if !ok {
		return nil, nil
	}
	rows, err := db.r.QueryContext(ctx, `SELECT user_id, provider, encrypted_refresh_token, scopes, expires_at,
			decodo_port, egress_ip, last_rotated_at, last_used_at, created_at
		FROM provider_tokens WHERE user_id = ? ORDER BY provider`, as)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.ProviderToken
	for rows.Next() {
		var t store.ProviderToken
		var scopes string
		err := rows.Scan(&t.UserID, &t.Provider, &t.EncryptedRefreshToken, &scopes, timeDest{&t.ExpiresAt},
			&t.EgressPort, &t.EgressIP, timeDest{&t.LastRotatedAt}, timeDest{&t.LastUsedAt}, timeDest{&t.CreatedAt})
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		if err := json.Unmarshal([]byte(scopes), &t.Scopes); err != nil {
			return nil, fail(ctx, op, errors.New("malformed scopes in the database"))
		}
		if len(t.Scopes) == 0 {
			t.Scopes = nil
		}
		out = append(out, t)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}

// DeleteProviderToken removes the acting user's token for provider.
func (db *DB) DeleteProviderToken(ctx context.Context, as, provider string) error {
	const op = "delete provider token"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		var port int
		err := tx.QueryRowContext(ctx, `DELETE FROM provider_tokens WHERE user_id = ? AND provider = ? RETURNING decodo_port`,
			as, provider).Scan(&port)
		if err != nil {
			return err // sql.ErrNoRows: store.ErrNotFound
		}
		return releasePort(ctx, tx, as, port)
	})
	return fail(ctx, op, err)
}
