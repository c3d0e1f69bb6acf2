package cli

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"

	"polydev/internal/store/postgres"
	"polydev/internal/store/sqlite"
)

// sqliteFile is the database file inside the data directory.
const sqliteFile = "polydev.db"

func runMigrate(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "migrate [flags]", `
Brings the database schema to this build's version: the SQLite file in the
data directory (the default), or a PostgreSQL database. For PostgreSQL, give
a connection string of the schema owner (migrations create tables, roles
and row-level security policies); the server itself connects as a separate,
unprivileged login role (see docs/operations.md).`)
	data := fs.String("data", envOr("POLYDEV_DATA", "./polydev-data"), "data directory for the SQLite database (env POLYDEV_DATA)")
	dbURL := fs.String("database-url", os.Getenv("POLYDEV_DATABASE_URL"), "PostgreSQL connection string of the schema owner (env POLYDEV_DATABASE_URL); empty: SQLite")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	var from, to int64
	var err error
	if *dbURL != "" {
		from, to, err = postgres.Migrate(ctx, *dbURL, log)
	} else {
		if mkErr := os.MkdirAll(*data, 0o700); mkErr != nil {
			return fmt.Errorf("data directory: %w", mkErr)
		}
		from, to, err = sqlite.Migrate(ctx, filepath.Join(*data, sqliteFile))
	}
	if err != nil {
		return err
	}
	if from == to {
		_, err = fmt.Fprintf(e.stdout, "schema is up to date at version %d\n", to)
	} else {
		_, err = fmt.Fprintf(e.stdout, "schema migrated from version %d to %d\n", from, to)
	}
	return err
}

func envOr(name, def string) string {
	if v, ok := os.LookupEnv(name); ok && v != "" {
		return v
	}
	return def
}
