package postgres

import (
	"context"
	"errors"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"polydev/internal/store"
)

// Egress ports (store/egress.go). Everything runs as polydev_app with the
// acting user's claims; the one look across users — which port is free —
// is polydev_egress.free_port, a SECURITY DEFINER function that returns a
// port number and nothing else (migrations/00006_egress_ports.sql).
// Transactions that take ports hold a transaction-level advisory lock, so
// two of them never choose the same free port; the primary key on
// egress_ports.port would refuse the second anyway.

var _ store.Egress = (*DB)(nil)

// egressLockID is the advisory lock of port allocation ("polyegrs").
const egressLockID = 0x706f6c7965677273

func lockEgress(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, "select pg_advisory_xact_lock($1)", int64(egressLockID))
	return err
}

// currentPort is the acting user's port for provider, 0 when not linked.
func currentPort(ctx context.Context, tx pgx.Tx, user uuid.UUID, provider string) (int, error) {
	var port int
	err := tx.QueryRow(ctx, "select decodo_port from provider_tokens where user_id = $1 and provider = $2", user, provider).Scan(&port)
	if errors.Is(err, pgx.ErrNoRows) {
		return 0, nil
	}
	return port, err
}

// holdPort takes port for the acting user, or confirms they hold it. A
// port held by another user stays invisible under the policies, so "not
// inserted and not visible" means someone else has it: store.ErrConflict.
func holdPort(ctx context.Context, tx pgx.Tx, user uuid.UUID, port int) error {
	if _, err := tx.Exec(ctx, `insert into egress_ports (port, user_id) values ($1, $2)
		on conflict (port) do nothing`, port, user); err != nil {
		return err
	}
	var mine bool
	if err := tx.QueryRow(ctx, "select exists (select 1 from egress_ports where port = $1)", port).Scan(&mine); err != nil {
		return err
	}
	if !mine {
		return store.ErrConflict
	}
	return nil
}

// releasePort gives up the acting user's port unless one of their tokens
// still egresses through it.
func releasePort(ctx context.Context, tx pgx.Tx, user uuid.UUID, port int) error {
	_, err := tx.Exec(ctx, `delete from egress_ports where user_id = $1 and port = $2
		and not exists (select 1 from provider_tokens where user_id = $1 and decodo_port = $2)`, user, port)
	return err
}

// freePort asks polydev_egress.free_port; store.ErrPortsExhausted when it
// finds none.
func freePort(ctx context.Context, tx pgx.Tx, r store.PortRange) (int, error) {
	var port *int
	if err := tx.QueryRow(ctx, "select polydev_egress.free_port($1, $2)", r.Base, r.Size).Scan(&port); err != nil {
		return 0, err
	}
	if port == nil {
		return 0, store.ErrPortsExhausted
	}
	return *port, nil
}

const tokenColumns = `user_id, provider, encrypted_refresh_token, scopes, expires_at,
	decodo_port, egress_ip, last_rotated_at, last_used_at, created_at`

func scanToken(row pgx.Row) (*store.ProviderToken, error) {
	var t store.ProviderToken
	var expires, rotated, used *time.Time
	err := row.Scan(&t.UserID, &t.Provider, &t.EncryptedRefreshToken, &t.Scopes, &expires,
		&t.EgressPort, &t.EgressIP, &rotated, &used, &t.CreatedAt)
	if err != nil {
		return nil, err
	}
	t.ExpiresAt, t.LastRotatedAt, t.LastUsedAt = orZero(expires), orZero(rotated), orZero(used)
	t.CreatedAt = t.CreatedAt.UTC()
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
		return false, wrap(op, err)
	}
	user, ok := parseID(as)
	if !ok {
		return false, wrap(op, store.ErrNotFound)
	}
	if err := checkOwner(op, t.UserID, user); err != nil {
		return false, err
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	var first bool
	var stored *store.ProviderToken
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		relink := func() error {
			var err error
			stored, err = scanToken(tx.QueryRow(ctx, `update provider_tokens
				set encrypted_refresh_token = $3, scopes = $4, expires_at = $5
				where user_id = $1 and provider = $2 returning `+tokenColumns,
				user, t.Provider, t.EncryptedRefreshToken, scopes, nullTime(t.ExpiresAt)))
			return err
		}
		if err := relink(); !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		if err := lockEgress(ctx, tx); err != nil {
			return err
		}
		// A concurrent first link of the same provider may have committed
		// while this one waited for the lock: then this is a relink.
		if err := relink(); !errors.Is(err, pgx.ErrNoRows) {
			return err
		}
		first = true
		var err error
		var number int64
		if err := tx.QueryRow(ctx, "select number from users where id = $1", user).Scan(&number); err != nil {
			return err // pgx.ErrNoRows: store.ErrNotFound
		}
		port := 0
		if def := r.Default(number); r.Contains(def) {
			// A savepoint, so that a refused insert (which aborts a
			// PostgreSQL transaction) leaves the fallback possible.
			err := pgx.BeginFunc(ctx, tx, func(sp pgx.Tx) error { return holdPort(ctx, sp, user, def) })
			switch {
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
			if err := holdPort(ctx, tx, user, port); err != nil {
				return err
			}
		}
		stored, err = scanToken(tx.QueryRow(ctx, `insert into provider_tokens (user_id, provider, encrypted_refresh_token,
				scopes, expires_at, decodo_port)
			values ($1, $2, $3, $4, $5, $6) returning `+tokenColumns,
			user, t.Provider, t.EncryptedRefreshToken, scopes, nullTime(t.ExpiresAt), port))
		return err
	})
	if err != nil {
		return false, wrap(op, err)
	}
	*t = *stored
	return first, nil
}

// ProviderToken returns the acting user's token for provider.
func (db *DB) ProviderToken(ctx context.Context, as, provider string) (*store.ProviderToken, error) {
	const op = "provider token"
	user, ok := parseID(as)
	if !ok {
		return nil, wrap(op, store.ErrNotFound)
	}
	var t *store.ProviderToken
	err := db.oneTrip(ctx, user, func(tr *trip) {
		tr.row("select "+tokenColumns+" from provider_tokens where user_id = $1 and provider = $2", []any{user, provider},
			func(row pgx.Row) (err error) {
				t, err = scanToken(row)
				return err
			})
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return t, nil
}

// RotateEgress moves the acting user's provider to a fresh port
// (store.Egress).
func (db *DB) RotateEgress(ctx context.Context, as, provider string, r store.PortRange, now time.Time) (int, *store.ProviderToken, error) {
	const op = "rotate egress"
	if err := r.Validate(); err != nil {
		return 0, nil, wrap(op, err)
	}
	user, ok := parseID(as)
	if !ok {
		return 0, nil, wrap(op, store.ErrNotFound)
	}
	var old int
	var stored *store.ProviderToken
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		if err := lockEgress(ctx, tx); err != nil {
			return err
		}
		var err error
		if old, err = currentPort(ctx, tx, user, provider); err != nil {
			return err
		}
		if old == 0 {
			return store.ErrNotFound
		}
		port, err := freePort(ctx, tx, r)
		if err != nil {
			return err
		}
		if err := holdPort(ctx, tx, user, port); err != nil {
			return err
		}
		stored, err = scanToken(tx.QueryRow(ctx, `update provider_tokens set decodo_port = $3, egress_ip = '', last_rotated_at = $4
			where user_id = $1 and provider = $2 returning `+tokenColumns, user, provider, port, micro(now)))
		if err != nil {
			return err
		}
		return releasePort(ctx, tx, user, old)
	})
	if err != nil {
		return 0, nil, wrap(op, err)
	}
	return old, stored, nil
}

// SetEgressIP records the egress IP seen through port (store.Egress).
func (db *DB) SetEgressIP(ctx context.Context, as, provider string, port int, ip string) error {
	const op = "set egress ip"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		var cur int
		err := tx.QueryRow(ctx, "select decodo_port from provider_tokens where user_id = $1 and provider = $2 for update",
			user, provider).Scan(&cur)
		if err != nil {
			return err
		}
		if cur != port {
			return store.ErrConflict
		}
		_, err = tx.Exec(ctx, "update provider_tokens set egress_ip = $3 where user_id = $1 and provider = $2", user, provider, ip)
		return err
	}))
}

// TouchProviderToken records a use of the token (store.Egress).
func (db *DB) TouchProviderToken(ctx context.Context, as, provider string, now time.Time) error {
	const op = "touch provider token"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.oneTrip(ctx, user, func(t *trip) {
		t.affect(`update provider_tokens set last_used_at = greatest(last_used_at, $3)
			where user_id = $1 and provider = $2`, user, provider, micro(now))
	}))
}
