package postgres

import (
	"errors"
	"fmt"
	"strings"

	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"polydev/internal/store"
)

// wrap turns an error from one store operation into what callers see: the
// operation, one of the store's error kinds where one applies, and for
// database errors only the SQLSTATE and constraint name. PostgreSQL's
// messages are left out because they may quote the values involved
// ("invalid input syntax for type uuid: ..."), and those are users' data.
func wrap(op string, err error) error {
	if err == nil {
		return nil
	}
	if errors.Is(err, pgx.ErrNoRows) {
		return fmt.Errorf("postgres: %s: %w", op, store.ErrNotFound)
	}
	var pgErr *pgconn.PgError
	if !errors.As(err, &pgErr) {
		if strings.Contains(err.Error(), "failed to encode args") {
			// pgx could not turn an argument into its column's type (a
			// number too large for an int column, say). It has no error
			// type for this, and its message quotes the value.
			return fmt.Errorf("postgres: %s: a value does not fit its column: %w", op, store.ErrInvalid)
		}
		// The store's own kinds, context errors, lost connections.
		return fmt.Errorf("postgres: %s: %w", op, err)
	}
	if kind := kindOf(pgErr); kind != nil {
		return fmt.Errorf("postgres: %s: %w (%s)", op, kind, describe(pgErr))
	}
	return fmt.Errorf("postgres: %s: database error (%s)", op, describe(pgErr))
}

// kindOf classifies a database error as one of the store's error kinds,
// or nil when it is none of them (a broken connection, a server fault).
func kindOf(e *pgconn.PgError) error {
	switch {
	case e.Code == "23505": // unique_violation
		return store.ErrConflict
	case e.Code == "23503": // foreign_key_violation: the parent is not there (see the package doc)
		return store.ErrNotFound
	case strings.HasPrefix(e.Code, "23"): // check, not-null and other integrity violations
		return store.ErrInvalid
	case strings.HasPrefix(e.Code, "22"): // data exceptions: malformed or out-of-range values
		return store.ErrInvalid
	case e.Code == "42501": // insufficient_privilege, including "new row violates row-level security policy"
		return store.ErrInvalid
	}
	return nil
}

// sanitize replaces a database error by its description, keeping other
// errors (context, network) as they are for errors.Is.
func sanitize(err error) error {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return errors.New(describe(pgErr))
	}
	return err
}

// describe names a database error without quoting anything from it that
// could hold data.
func describe(e *pgconn.PgError) string {
	if e.ConstraintName != "" {
		return fmt.Sprintf("sqlstate %s, constraint %s", e.Code, e.ConstraintName)
	}
	return "sqlstate " + e.Code
}
