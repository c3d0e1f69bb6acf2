package postgres

import (
	"context"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"path"
	"strconv"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/stdlib"
	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var embedded embed.FS

const (
	// metaSchema holds goose's version table, outside public: every table
	// in public is an application table under row-level security.
	metaSchema   = "polydev_meta"
	versionTable = metaSchema + ".goose_db_version"

	// migrateLockID is the advisory lock that serializes concurrent
	// Migrate calls on one database (two deploys, say). Any constant
	// works; this one spells "polydev".
	migrateLockID = 0x706f6c79646576
)

// migrations returns the SQL migrations, rooted at their directory.
func migrations() fs.FS {
	sub, err := fs.Sub(embedded, "migrations")
	if err != nil {
		panic(err) // the directory is embedded at build time
	}
	return sub
}

// latestVersion returns the newest migration version in this build.
func latestVersion() (int64, error) {
	names, err := fs.Glob(migrations(), "*.sql")
	if err != nil {
		return 0, err
	}
	var latest int64
	for _, name := range names {
		prefix, _, _ := strings.Cut(path.Base(name), "_")
		v, err := strconv.ParseInt(prefix, 10, 64)
		if err != nil {
			return 0, fmt.Errorf("migration %s: no version number", name)
		}
		latest = max(latest, v)
	}
	if latest == 0 {
		return 0, errors.New("no migrations embedded")
	}
	return latest, nil
}

// Migrate brings the database named by ownerDSN up to the newest schema in
// this build, and returns the schema version before and after. It is safe
// to run again (nothing happens when the schema is current) and from
// several processes at once (they take turns).
//
// ownerDSN must connect as the role that owns, or is to own, the tables:
// it needs to create tables in public and, where they are missing, the
// roles polydev_app and polydev_auth (CREATEROLE), the auth schema and the
// polydev_meta schema. On Supabase that is the postgres role. It must not
// be the DSN the application serves with (see the package documentation).
//
// logger receives goose's progress messages; nil discards them. Errors
// carry PostgreSQL's full message: they are for the operator, and the
// only SQL in them is the migrations' own.
func Migrate(ctx context.Context, ownerDSN string, logger *slog.Logger) (from, to int64, err error) {
	if logger == nil {
		logger = slog.New(slog.DiscardHandler)
	}
	cfg, err := pgx.ParseConfig(ownerDSN)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: %w", err)
	}
	db := stdlib.OpenDB(*cfg)
	defer db.Close()

	// One connection holds the lock for the whole run; goose works on
	// others from the same pool.
	conn, err := db.Conn(ctx)
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: connecting: %w", err)
	}
	defer conn.Close()
	if _, err := conn.ExecContext(ctx, "select pg_advisory_lock($1)", int64(migrateLockID)); err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: taking the migration lock: %w", err)
	}
	defer conn.ExecContext(context.WithoutCancel(ctx), "select pg_advisory_unlock($1)", int64(migrateLockID))
	if _, err := conn.ExecContext(ctx, "create schema if not exists "+metaSchema); err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: creating schema %s: %w", metaSchema, err)
	}

	p, err := goose.NewProvider(goose.DialectPostgres, db, migrations(),
		goose.WithTableName(versionTable),
		goose.WithDisableGlobalRegistry(true),
		goose.WithSlog(logger))
	if err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: %w", err)
	}
	if from, err = p.GetDBVersion(ctx); err != nil {
		return 0, 0, fmt.Errorf("postgres: migrate: reading the schema version: %w", err)
	}
	if _, err := p.Up(ctx); err != nil {
		return from, 0, fmt.Errorf("postgres: migrate: %w", err)
	}
	if to, err = p.GetDBVersion(ctx); err != nil {
		return from, 0, fmt.Errorf("postgres: migrate: reading the schema version: %w", err)
	}
	return from, to, nil
}
