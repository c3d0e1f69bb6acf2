package sqlite

import (
	"context"
	"database/sql"
	"embed"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"

	"github.com/pressly/goose/v3"
)

//go:embed migrations/*.sql
var migrationFiles embed.FS

// ErrSchemaVersion: the database's schema is not the version this binary
// was built for (not migrated yet, or migrated by a newer release).
var ErrSchemaVersion = errors.New("schema version mismatch")

// versionTable is goose's default bookkeeping table.
const versionTable = goose.DefaultTablename

func (db *DB) initMigrations(logger *slog.Logger) error {
	fsys, err := fs.Sub(migrationFiles, "migrations")
	if err != nil {
		return err
	}
	p, err := goose.NewProvider(goose.DialectSQLite3, db.w, fsys,
		goose.WithDisableGlobalRegistry(true), // only the embedded files, no init()-registered Go migrations
		goose.WithSlog(logger),
	)
	if err != nil {
		return fmt.Errorf("migrations: %w", err)
	}
	sources := p.ListSources()
	db.migrations = p
	db.target = sources[len(sources)-1].Version // goose refuses an empty set
	return nil
}

// Migrate applies every pending migration, each in its own transaction on
// the writer connection (so it waits for in-flight writes of this process).
// Already at the latest version, it does nothing. Run it from one process
// at a time: goose takes no lock on SQLite.
func (db *DB) Migrate(ctx context.Context) error {
	if _, err := db.migrations.Up(ctx); err != nil {
		// goose's errors name the migration file, not data; keep them.
		return fmt.Errorf("migrate: %w", err)
	}
	return nil
}

// SchemaVersion reports the version the database is at (0 before the first
// migration) and the version this binary migrates to. It only reads.
func (db *DB) SchemaVersion(ctx context.Context) (current, target int64, err error) {
	current, _, err = db.schemaState(ctx)
	if err != nil {
		return 0, db.target, fmt.Errorf("schema version: %w", classify(ctx, err))
	}
	return current, db.target, nil
}

// Migrate opens the database at path, applies pending migrations and
// closes it, reporting the schema version before and after: the body of
// `polydev migrate`.
func Migrate(ctx context.Context, path string, opts ...Option) (from, to int64, err error) {
	db, err := Open(ctx, path, opts...)
	if err != nil {
		return 0, 0, err
	}
	defer func() {
		if cerr := db.Close(); err == nil && cerr != nil {
			err = fmt.Errorf("sqlite: close: %w", cerr)
		}
	}()
	if from, _, err = db.SchemaVersion(ctx); err != nil {
		return 0, 0, err
	}
	if err := db.Migrate(ctx); err != nil {
		return from, from, err
	}
	to, _, err = db.SchemaVersion(ctx)
	return from, to, err
}

// schemaState reads goose's table without writing (goose's own status
// calls create the table if it is missing, which Ping must not do). It
// returns the highest applied version and whether any embedded migration
// is not applied.
func (db *DB) schemaState(ctx context.Context) (current int64, pending bool, err error) {
	applied := map[int64]bool{}
	err = db.read(ctx, func(tx *sql.Tx) error {
		var n int
		err := tx.QueryRowContext(ctx,
			`SELECT count(*) FROM sqlite_schema WHERE type = 'table' AND name = ?`, versionTable).Scan(&n)
		if err != nil || n == 0 {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT version_id FROM `+versionTable+` WHERE is_applied`)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var v int64
			if err := rows.Scan(&v); err != nil {
				return err
			}
			applied[v] = true
			current = max(current, v)
		}
		return rows.Err()
	})
	if err != nil {
		return 0, false, err
	}
	for _, s := range db.migrations.ListSources() {
		if !applied[s.Version] {
			pending = true
		}
	}
	return current, pending, nil
}
