package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"
)

// The two roles every transaction runs as (see the package documentation).
const (
	appRole  = "polydev_app"
	authRole = "polydev_auth"
)

// asUser runs fn in a transaction as polydev_app, with the claims naming
// user as the acting user: auth.uid() = user for every statement in fn.
func (db *DB) asUser(ctx context.Context, user uuid.UUID, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := actAs(ctx, tx, user); err != nil {
			return err
		}
		return fn(tx)
	})
}

// asAuth runs fn in a transaction as polydev_auth, which has no claims and
// reaches only what the pre-authentication lookups need.
func (db *DB) asAuth(ctx context.Context, fn func(pgx.Tx) error) error {
	return pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		if err := enterAuth(ctx, tx); err != nil {
			return err
		}
		return fn(tx)
	})
}

// oneTrip runs the statements queue adds as user (polydev_app with the
// claims naming user), or as polydev_auth when user is uuid.Nil, in one
// round trip: the role switch and the statements go out as one pipeline,
// which PostgreSQL runs as one implicit transaction — the SET LOCALs end
// with it, and an error in any statement rolls all of them back. Use it
// for a few statements that need no answer from one another; the results
// reach the queued callbacks in order. A statement's callback returning an
// error does not stop the statements after it: guard writes in SQL.
func (db *DB) oneTrip(ctx context.Context, user uuid.UUID, queue func(b *pgx.Batch)) error {
	b := &pgx.Batch{}
	role := appRole
	entered := false
	enter := func(pgconn.CommandTag) error { entered = true; return nil }
	if user == uuid.Nil {
		role = authRole
		b.Queue(enterAuthSQL).Exec(enter)
	} else {
		b.Queue(actAsSQL, user.String()).Exec(enter)
	}
	queue(b)
	err := db.pool.SendBatch(ctx, b).Close()
	if err != nil && !entered {
		return roleError(role, err)
	}
	return err
}

// actAs switches the transaction to polydev_app and sets its claims to
// user, in one round trip. set_config('role', r, true) is what SET LOCAL
// ROLE r does, in a form that takes parameters; PostgREST sets up its
// transactions the same way. The claim is set in both places auth.uid()
// reads, so that nothing left on the connection can stand in for it. Like
// every SET LOCAL, all of it ends with the transaction.
func actAs(ctx context.Context, tx pgx.Tx, user uuid.UUID) error {
	_, err := tx.Exec(ctx, actAsSQL, user.String())
	return roleError(appRole, err)
}

const actAsSQL = `select
	set_config('role', 'polydev_app', true),
	set_config('request.jwt.claims', json_build_object('sub', $1::text)::text, true),
	set_config('request.jwt.claim.sub', $1::text, true)`

const enterAuthSQL = `select
	set_config('role', 'polydev_auth', true),
	set_config('request.jwt.claims', '', true),
	set_config('request.jwt.claim.sub', '', true)`

// enterAuth switches the transaction to polydev_auth, with empty claims.
func enterAuth(ctx context.Context, tx pgx.Tx) error {
	_, err := tx.Exec(ctx, enterAuthSQL)
	return roleError(authRole, err)
}

// roleError explains a failure to switch roles, which means the database
// is not migrated or the login role is not set up, not that a record is
// bad: it must not read as one of the store's error kinds.
func roleError(role string, err error) error {
	if err == nil {
		return nil
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		return err
	}
	return fmt.Errorf("entering role %s (%s): is the database migrated and the login role granted %s, %s?",
		role, describe(pgErr), appRole, authRole)
}

// parseID parses a UUID argument. Callers decide what a malformed one
// means: for an id to look up, no such row (store.ErrNotFound); for a
// record to insert, store.ErrInvalid.
func parseID(s string) (uuid.UUID, bool) {
	id, err := uuid.Parse(s)
	return id, err == nil
}
