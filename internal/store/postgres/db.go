package postgres

import (
	"context"
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgxpool"

	"polydev/internal/store"
)

// DB is a store.Store on PostgreSQL. It is safe for concurrent use.
type DB struct {
	pool   *pgxpool.Pool
	latest int64 // the newest migration in this build
}

var _ store.Store = (*DB)(nil)

// Open connects to the database named by appDSN, which must log in as the
// application's login role (a NOINHERIT member of polydev_app and
// polydev_auth; see the package documentation), and checks that the
// server answers. It does not check the schema: Ping does, so that a
// server can start before its database is migrated and report not ready.
// The DB must be closed.
// DefaultMaxConns is the connection pool's size unless the DSN sets
// pool_max_conns.
const DefaultMaxConns = 32

func Open(ctx context.Context, appDSN string) (*DB, error) {
	latest, err := latestVersion()
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	cfg, err := pgxpool.ParseConfig(appDSN)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err) // pgx leaves the password out
	}
	// pgx's default pool is max(4, CPUs): far too small for a server that
	// keeps a transaction per request and streams many chats at once. A
	// pool_max_conns in the DSN still wins.
	if !strings.Contains(appDSN, "pool_max_conns") {
		cfg.MaxConns = DefaultMaxConns
	}
	pool, err := pgxpool.NewWithConfig(ctx, cfg)
	if err != nil {
		return nil, fmt.Errorf("postgres: open: %w", err)
	}
	if err := pool.Ping(ctx); err != nil {
		pool.Close()
		return nil, fmt.Errorf("postgres: open: %w", sanitize(err))
	}
	return &DB{pool: pool, latest: latest}, nil
}

// Close closes the pool's connections, waiting for those in use to come
// back. It is safe to call more than once.
func (db *DB) Close() error {
	db.pool.Close() // idempotent
	return nil
}

// Ping reports whether the database is reachable, migrated at least to
// this build's newest migration, and reached through a login role that
// cannot bypass the policies. A database at a newer version passes: during
// a release the migrations run before the switch, and a rollback must
// still find the old build ready.
func (db *DB) Ping(ctx context.Context) error {
	var version int64
	err := pgx.BeginFunc(ctx, db.pool, func(tx pgx.Tx) error {
		// As polydev_app, so that this also proves the roles and grants
		// exist; the version table is the one thing it may read without
		// claims.
		if _, err := tx.Exec(ctx, "select set_config('role', 'polydev_app', true)"); err != nil {
			return roleError(appRole, err)
		}
		return tx.QueryRow(ctx, "select coalesce(max(version_id), 0) from "+versionTable).Scan(&version)
	})
	if err != nil {
		return fmt.Errorf("postgres: ping: schema version: %w", sanitize(err))
	}
	if version < db.latest {
		return fmt.Errorf("postgres: ping: schema at migration %d, this build needs %d: run the migrations", version, db.latest)
	}

	// Outside any transaction of ours the login role must reach no
	// application table: a superuser, the tables' owner or a member that
	// inherits polydev_auth's privileges would make every query that
	// slipped past the role switch a query across tenants.
	var reachable int
	err = db.pool.QueryRow(ctx, `select count(*) from pg_class c
		join pg_namespace n on n.oid = c.relnamespace
		where n.nspname = 'public' and c.relkind in ('r', 'p')
		and has_table_privilege(c.oid, 'select, insert, update, delete, truncate, references, trigger')`).Scan(&reachable)
	if err != nil {
		return fmt.Errorf("postgres: ping: checking the login role: %w", sanitize(err))
	}
	if reachable > 0 {
		return errors.New("postgres: ping: the login role holds privileges on application tables by itself " +
			"(it must be a NOINHERIT member of polydev_app and polydev_auth, not a superuser or the owner)")
	}
	return nil
}
