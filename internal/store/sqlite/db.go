// Package sqlite is the embedded store backend: store.Store on one SQLite
// file, through modernc.org/sqlite (pure Go, no cgo). It is what
// `polydev serve --dev` and single-host installs use; production runs
// store/postgres, and both pass the conformance suite in store/storetest.
//
// # The idea
//
// SQLite lets many connections read at once but only one write at a time.
// So a DB holds two pools on the same file: a writer pool of exactly one
// connection, through which every change goes in a BEGIN IMMEDIATE
// transaction, and a pool of read-only connections (PRAGMA query_only) for
// the reads. In WAL mode readers never block the writer nor it them, and
// writers queue on the Go side, in order, instead of spinning on
// SQLITE_BUSY. Every connection of both pools gets the same pragmas from
// the DSN (WAL journal, synchronous=FULL so a committed change survives a
// power cut, foreign keys on, a busy timeout for other processes such as
// `polydev migrate`), because SQLite pragmas are per connection and a pool
// opens connections whenever it likes.
//
// # Tenancy
//
// Every statement that reads or changes a user's rows carries the acting
// user's id `as` in its WHERE clause (messages through a join with their
// conversation); inserts take the owner from `SELECT … FROM users WHERE
// id = ?`. A row of another user is therefore indistinguishable from a
// missing one: ErrNotFound, for reads, updates and deletes alike. A record
// that names another user as its owner (Session.UserID,
// ProviderToken.UserID, Conversation.UserID different from `as`) is refused
// with store.ErrNotFound, as that user does not exist for the caller; an
// empty owner means `as`.
//
// # Values
//
// Ids are UUIDs, stored in canonical lowercase form; an id that is not a
// UUID is ErrNotFound in a lookup and ErrInvalid in an insert. Timestamps
// are stored as fixed-width RFC 3339 text in UTC with microseconds
// ("2006-01-02T15:04:05.000000Z"), truncated to the microsecond like
// PostgreSQL's timestamptz through pgx, so text order is time order and a
// value round-trips exactly; they come back in time.UTC. The records passed
// to the Create, Put and Add methods are updated with what was stored
// (canonical ids, assigned numbers and times).
//
// # Errors
//
// Unique violations are store.ErrConflict; check, not-null, foreign-key and
// type violations are store.ErrInvalid; missing or foreign rows are
// store.ErrNotFound. Each is wrapped with the operation ("create user:
// conflict"). No error carries SQL text or stored values; other database
// failures read "database error" plus SQLite's result code name, with the
// driver's error reachable through errors.As for logs.
//
// # Migrations
//
// The schema lives in migrations/*.sql, embedded and applied with goose.
// Open does not migrate unless asked (WithMigrate); Ping fails with
// ErrSchemaVersion until the database is at this binary's version, so a
// server never runs against a schema it does not know. Migrate and
// (*DB).Migrate apply pending migrations; (*DB).SchemaVersion reports
// where the database is and where this binary would take it.
package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
	"log/slog"
	"net/url"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"time"

	"github.com/pressly/goose/v3"

	"polydev/internal/store"

	_ "modernc.org/sqlite" // registers the "sqlite" database/sql driver
)

// DB is a store.Store on one SQLite file. It must be closed.
type DB struct {
	w *sql.DB // the single writer connection; see the package doc
	r *sql.DB // read-only connections

	migrations *goose.Provider
	target     int64 // the newest migration version embedded in this binary

	closeOnce sync.Once
	closeErr  error
}

var _ store.Store = (*DB)(nil)

// Option adjusts Open.
type Option func(*options)

type options struct {
	migrate     bool
	busyTimeout time.Duration
	readers     int
	logger      *slog.Logger
}

// WithMigrate makes Open apply pending migrations before returning.
func WithMigrate() Option { return func(o *options) { o.migrate = true } }

// WithBusyTimeout sets how long a statement waits for a lock held by
// another process before failing with SQLITE_BUSY (default 5s). Writers of
// this process never wait on each other there: they queue for the single
// writer connection.
func WithBusyTimeout(d time.Duration) Option { return func(o *options) { o.busyTimeout = d } }

// WithReaders sets the number of read-only connections (default: the
// number of CPUs, at least 2).
func WithReaders(n int) Option { return func(o *options) { o.readers = n } }

// WithLogger sets where migrations are logged (default: nowhere).
func WithLogger(l *slog.Logger) Option { return func(o *options) { o.logger = l } }

// Open opens the SQLite database at path, creating the file (mode 0600) if
// it does not exist; its directory must exist. It does not migrate unless
// WithMigrate is given. The returned DB must be closed.
func Open(ctx context.Context, path string, opts ...Option) (_ *DB, err error) {
	o := options{busyTimeout: 5 * time.Second, readers: max(2, runtime.GOMAXPROCS(0))}
	for _, opt := range opts {
		opt(&o)
	}
	if o.logger == nil {
		o.logger = slog.New(slog.DiscardHandler)
	}
	if o.readers < 1 || o.busyTimeout < 0 {
		return nil, errors.New("sqlite: open: readers must be at least 1 and the busy timeout not negative")
	}
	if path == "" || strings.ContainsRune(path, '?') {
		// '?' would start the driver's DSN parameters.
		return nil, errors.New("sqlite: open: the path must be non-empty and contain no '?'")
	}
	// An absolute path never begins with "file:", which SQLite would read
	// as a URI, nor names the special ":memory:" database.
	abs, err := filepath.Abs(path)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	// The file holds auth hashes and ciphertext: owner only. SQLite gives
	// the -wal and -shm files the main file's mode.
	f, err := os.OpenFile(abs, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	f.Close()

	db := &DB{}
	defer func() {
		if err != nil {
			db.Close()
		}
	}()

	// The writer first: its first connection switches the file to WAL
	// before any reader (query_only) connects.
	db.w, err = sql.Open("sqlite", dsn(abs, o.busyTimeout, false))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	db.w.SetMaxOpenConns(1)
	db.w.SetMaxIdleConns(1)
	db.w.SetConnMaxIdleTime(0)
	db.w.SetConnMaxLifetime(0)
	if err := checkPragmas(ctx, db.w); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}

	db.r, err = sql.Open("sqlite", dsn(abs, o.busyTimeout, true))
	if err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	db.r.SetMaxOpenConns(o.readers)
	db.r.SetMaxIdleConns(o.readers)
	if err := checkPragmas(ctx, db.r); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}

	if err := db.initMigrations(o.logger); err != nil {
		return nil, fmt.Errorf("sqlite: open: %w", err)
	}
	if o.migrate {
		if err := db.Migrate(ctx); err != nil {
			return nil, fmt.Errorf("sqlite: open: %w", err)
		}
	}
	return db, nil
}

// dsn is the modernc.org/sqlite data source name for path. The _pragma
// parameters run on every new connection, which is the only way to give
// each pooled connection the same settings. busy_timeout is applied first
// by the driver; the rest in lexicographic order, so journal_mode comes
// before query_only.
func dsn(path string, busy time.Duration, readOnly bool) string {
	q := url.Values{}
	q.Add("_pragma", fmt.Sprintf("busy_timeout(%d)", busy.Milliseconds()))
	q.Add("_pragma", "foreign_keys(1)")
	q.Add("_pragma", "journal_mode(WAL)")
	q.Add("_pragma", "synchronous(FULL)")
	if readOnly {
		// A write through a reader is a bug; make it fail loudly.
		q.Add("_pragma", "query_only(1)")
	} else {
		// Take the write lock at BEGIN, not at the first write: a
		// transaction that read first and then tried to upgrade could
		// fail with SQLITE_BUSY_SNAPSHOT if another process wrote in
		// between, and the busy handler cannot help with that.
		q.Set("_txlock", "immediate")
	}
	// Double-quoted strings are identifiers, never string literals.
	q.Set("_dqs", "0")
	return path + "?" + q.Encode()
}

// checkPragmas connects once and confirms the settings that safety rests
// on took effect (WAL can silently stay off on some file systems).
func checkPragmas(ctx context.Context, db *sql.DB) error {
	var mode string
	var fk, sync int
	if err := db.QueryRowContext(ctx, "PRAGMA journal_mode").Scan(&mode); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA foreign_keys").Scan(&fk); err != nil {
		return err
	}
	if err := db.QueryRowContext(ctx, "PRAGMA synchronous").Scan(&sync); err != nil {
		return err
	}
	if !strings.EqualFold(mode, "wal") || fk != 1 || sync != 2 {
		return fmt.Errorf("pragmas did not take effect: journal_mode=%s foreign_keys=%d synchronous=%d", mode, fk, sync)
	}
	return nil
}

// Ping checks that the database answers and that its schema is at the
// version this binary was built for; otherwise the error wraps
// ErrSchemaVersion.
func (db *DB) Ping(ctx context.Context) error {
	current, pending, err := db.schemaState(ctx)
	if err != nil {
		return fmt.Errorf("ping: %w", classify(ctx, err))
	}
	switch {
	case current > db.target:
		return fmt.Errorf("ping: %w: database at version %d is newer than this binary's %d", ErrSchemaVersion, current, db.target)
	case pending:
		return fmt.Errorf("ping: %w: database at version %d, this binary needs %d; run polydev migrate", ErrSchemaVersion, current, db.target)
	}
	return nil
}

// Close closes both pools. It is safe to call more than once; later calls
// return nil.
func (db *DB) Close() error {
	db.closeOnce.Do(func() {
		// Not db.migrations.Close: it would close db.w, which is ours.
		var errs []error
		if db.r != nil {
			errs = append(errs, db.r.Close())
		}
		// The writer last: when the last connection closes SQLite
		// checkpoints the WAL into the main file.
		if db.w != nil {
			errs = append(errs, db.w.Close())
		}
		db.closeErr = errors.Join(errs...)
	})
	return db.closeErr
}

// write runs fn in a write transaction (BEGIN IMMEDIATE) on the writer.
// fn must use only tx: the writer has a single connection, so reaching for
// db.w inside fn would wait on itself.
func (db *DB) write(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.w.BeginTx(ctx, nil)
	if err != nil {
		return err
	}
	if err := fn(tx); err != nil {
		tx.Rollback()
		return err
	}
	return tx.Commit()
}

// read runs fn in a read transaction, for reads that need one snapshot
// across statements.
func (db *DB) read(ctx context.Context, fn func(tx *sql.Tx) error) error {
	tx, err := db.r.BeginTx(ctx, &sql.TxOptions{ReadOnly: true})
	if err != nil {
		return err
	}
	defer tx.Rollback()
	if err := fn(tx); err != nil {
		return err
	}
	return tx.Commit()
}

// oneRow turns a statement that changed no row into ErrNotFound: the row
// does not exist or belongs to another user, and the two must look alike.
func oneRow(res sql.Result, err error) error {
	if err != nil {
		return err
	}
	n, err := res.RowsAffected()
	if err != nil {
		return err
	}
	if n == 0 {
		return store.ErrNotFound
	}
	return nil
}
