package sqlite

import (
	"context"
	"database/sql"
	"database/sql/driver"
	"errors"
	"fmt"
	"time"

	"github.com/google/uuid"
	"modernc.org/sqlite"
	sqlite3 "modernc.org/sqlite/lib"

	"polydev/internal/store"
)

// How values cross the boundary: ids, timestamps, and errors.

// canonicalID returns id in canonical lowercase UUID form, as PostgreSQL's
// uuid type would store it.
func canonicalID(id string) (string, bool) {
	u, err := uuid.Parse(id)
	if err != nil {
		return "", false
	}
	return u.String(), true
}

// ownID validates the id of a new record, choosing one when generate is set
// and id is empty.
func ownID(id *string, generate bool) error {
	if *id == "" && generate {
		*id = uuid.NewString()
		return nil
	}
	c, ok := canonicalID(*id)
	if !ok {
		return fmt.Errorf("id is not a uuid: %w", store.ErrInvalid)
	}
	*id = c
	return nil
}

// owner resolves the owner a record names against the acting user: empty
// means `as`; another user is ErrNotFound (they do not exist for `as`).
func owner(userID *string, as string) error {
	if *userID == "" {
		*userID = as
		return nil
	}
	if c, ok := canonicalID(*userID); !ok || c != as {
		return store.ErrNotFound
	}
	*userID = as
	return nil
}

// timeLayout is fixed width so that text order is time order.
const timeLayout = "2006-01-02T15:04:05.000000Z"

// utcMicro is t as stored: UTC, truncated to the microsecond (as pgx
// sends a time.Time to PostgreSQL).
func utcMicro(t time.Time) time.Time { return t.UTC().Truncate(time.Microsecond) }

func encodeTime(t time.Time) string { return utcMicro(t).Format(timeLayout) }

// nullTime stores the zero time as NULL.
func nullTime(t time.Time) any {
	if t.IsZero() {
		return nil
	}
	return encodeTime(t)
}

// checkTimes refuses times the fixed-width layout cannot hold.
func checkTimes(ts ...time.Time) error {
	for _, t := range ts {
		if y := utcMicro(t).Year(); y < 1 || y > 9999 {
			return fmt.Errorf("time out of range: %w", store.ErrInvalid)
		}
	}
	return nil
}

// timeDest scans a stored timestamp (NULL: the zero time) into *t.
type timeDest struct{ t *time.Time }

func (d timeDest) Scan(v any) error {
	var s string
	switch v := v.(type) {
	case nil:
		*d.t = time.Time{}
		return nil
	case string:
		s = v
	case []byte:
		s = string(v)
	default:
		return errors.New("timestamp column holds a non-text value")
	}
	t, err := time.Parse(timeLayout, s)
	if err != nil {
		return errors.New("malformed timestamp in the database")
	}
	*d.t = t
	return nil
}

// nullString stores "" as NULL, for nullable text columns.
func nullString(s string) any {
	if s == "" {
		return nil
	}
	return s
}

// textBytes passes bytes kept in a TEXT column (exact bytes, as
// PostgreSQL's text keeps them); nil stays NULL so NOT NULL catches it.
func textBytes(b []byte) any {
	if b == nil {
		return nil
	}
	return string(b)
}

// fail wraps err with the operation after classifying it.
func fail(ctx context.Context, op string, err error) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("%s: %w", op, classify(ctx, err))
}

// classify maps an error to the store's kinds, or to an error whose
// message holds no SQL and no values.
func classify(ctx context.Context, err error) error {
	if errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrConflict) || errors.Is(err, store.ErrInvalid) ||
		errors.Is(err, ErrSchemaVersion) {
		return err
	}
	if errors.Is(err, sql.ErrNoRows) {
		return store.ErrNotFound
	}
	var se *sqlite.Error
	if errors.As(err, &se) {
		switch code := se.Code(); {
		case code == sqlite3.SQLITE_CONSTRAINT_UNIQUE, code == sqlite3.SQLITE_CONSTRAINT_PRIMARYKEY,
			code == sqlite3.SQLITE_CONSTRAINT_ROWID:
			return store.ErrConflict
		case code == sqlite3.SQLITE_CONSTRAINT_FOREIGNKEY:
			// Every foreign key points at the acting user or their
			// conversation: the parent does not exist for the caller
			// (as in the PostgreSQL backend).
			return store.ErrNotFound
		case code&0xff == sqlite3.SQLITE_CONSTRAINT:
			// CHECK, NOT NULL, DATATYPE (STRICT tables).
			return store.ErrInvalid
		}
	}
	if cerr := ctx.Err(); cerr != nil {
		return cerr
	}
	if errors.Is(err, sql.ErrConnDone) || errors.Is(err, sql.ErrTxDone) || errors.Is(err, driver.ErrBadConn) ||
		errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err // fixed messages, no SQL
	}
	dbe := &dbError{err: err, code: -1}
	if se != nil {
		dbe.code = se.Code()
	}
	return dbe
}

// dbError is a database failure the store has no kind for. Its message
// gives only SQLite's result code; the driver's error, which may quote
// SQL, stays reachable through errors.As for whoever logs it.
type dbError struct {
	code int
	err  error
}

func (e *dbError) Error() string {
	if e.code < 0 {
		return "database error"
	}
	if s, ok := sqlite.ErrorCodeString[e.code]; ok {
		return "database error: " + s
	}
	if s, ok := sqlite.ErrorCodeString[e.code&0xff]; ok {
		return fmt.Sprintf("database error: %s, extended code %d", s, e.code)
	}
	return fmt.Sprintf("database error: code %d", e.code)
}

func (e *dbError) Unwrap() error { return e.err }
