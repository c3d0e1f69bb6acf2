package postgres

import (
	"context"
	"errors"
	"fmt"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"polydev/internal/store"
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
// claims naming user) in one round trip: the role switch and the
// statements go out as one pipeline, which PostgreSQL runs as one implicit
// transaction — the SET LOCALs end with it, and an error in any statement
// rolls all of them back. Use it for a few statements that need no answer
// from one another; the results reach the queued callbacks in order. A
// callback's error does not stop the statements after it: guard writes in
// SQL. A statement queued with trip.row or trip.affect that finds no row
// makes the whole call store.ErrNotFound.
func (db *DB) oneTrip(ctx context.Context, user uuid.UUID, queue func(t *trip)) error {
	return db.pipeline(ctx, appRole, actAsSQL, []any{user.String()}, queue)
}

// oneTripAuth is oneTrip as polydev_auth, with empty claims.
func (db *DB) oneTripAuth(ctx context.Context, queue func(t *trip)) error {
	return db.pipeline(ctx, authRole, enterAuthSQL, nil, queue)
}

func (db *DB) pipeline(ctx context.Context, role, enter string, args []any, queue func(t *trip)) error {
	t := &trip{Batch: &pgx.Batch{}}
	t.Queue(enter, args...).QueryRow(func(row pgx.Row) error {
		// Only this statement's own failure means the switch failed.
		return roleError(role, row.Scan(nil, nil, nil))
	})
	queue(t)
	err := db.pool.SendBatch(ctx, t.Batch).Close()
	if t.missing {
		return store.ErrNotFound
	}
	return err
}

// trip is a pipeline being queued. An expected "no such row" is recorded
// in missing rather than returned by a callback: pgx drops the
// connection's cached statements for the whole batch on any callback
// error, and a lookup that finds nothing is no reason to prepare them all
// again.
type trip struct {
	*pgx.Batch
	missing bool
}

// row queues a statement that returns one row, scanned by scan; no row
// makes the call store.ErrNotFound.
func (t *trip) row(sql string, args []any, scan func(pgx.Row) error) {
	t.Queue(sql, args...).QueryRow(func(r pgx.Row) error {
		err := scan(r)
		if errors.Is(err, pgx.ErrNoRows) {
			t.missing = true
			return nil
		}
		return err
	})
}

// affect queues a statement that must change a row; none makes the call
// store.ErrNotFound.
func (t *trip) affect(sql string, args ...any) {
	t.Queue(sql, args...).Exec(func(tag pgconn.CommandTag) error {
		if tag.RowsAffected() == 0 {
			t.missing = true
		}
		return nil
	})
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
