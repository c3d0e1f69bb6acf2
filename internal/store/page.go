package store

import (
	"encoding/base64"
	"encoding/binary"
	"fmt"
	"time"

	"github.com/google/uuid"
)

// Page cursors, shared by both backends. A cursor is the sort key of the
// last row of the previous page, opaque to callers: base64url (no padding)
// of a kind byte, the row's time as big-endian Unix microseconds and its
// UUID's 16 bytes. It holds nothing the caller could not read from that
// row, and backends only ever compare it against the acting user's own
// rows, so a cursor made for another user reveals nothing of theirs.

// Cursor kinds.
const (
	ConversationCursor byte = 'c' // updated_at, id
	MessageCursor      byte = 'm' // created_at, id
)

const cursorBytes = 1 + 8 + 16

// ErrBadCursor is a cursor that does not parse, or names a row outside the
// list it is used on.
var ErrBadCursor = fmt.Errorf("malformed page cursor: %w", ErrInvalid)

// Cursor is a decoded page cursor.
type Cursor struct {
	At time.Time
	ID uuid.UUID
}

// PageLimit resolves p.Limit: 0 is DefaultPageLimit; negative or above
// MaxPageLimit is ErrInvalid.
func PageLimit(p Page) (int, error) {
	switch {
	case p.Limit == 0:
		return DefaultPageLimit, nil
	case p.Limit < 0 || p.Limit > MaxPageLimit:
		return 0, fmt.Errorf("page limit %d outside 1..%d: %w", p.Limit, MaxPageLimit, ErrInvalid)
	}
	return p.Limit, nil
}

// EncodeCursor makes the cursor of a row; id is the row's UUID as the
// database returned it.
func EncodeCursor(kind byte, at time.Time, id string) string {
	b := make([]byte, 0, cursorBytes)
	b = append(b, kind)
	b = binary.BigEndian.AppendUint64(b, uint64(at.UnixMicro()))
	u := uuid.MustParse(id) // ids come from the database, canonical
	b = append(b, u[:]...)
	return base64.RawURLEncoding.EncodeToString(b)
}

// DecodeCursor parses a cursor of the given kind, strictly: anything that
// EncodeCursor would not have produced, or a time outside the years 1 to
// 9999, is ErrBadCursor.
func DecodeCursor(kind byte, s string) (Cursor, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil || len(b) != cursorBytes || b[0] != kind {
		return Cursor{}, ErrBadCursor
	}
	at := time.UnixMicro(int64(binary.BigEndian.Uint64(b[1:9]))).UTC()
	if y := at.Year(); y < 1 || y > 9999 {
		return Cursor{}, ErrBadCursor
	}
	u, err := uuid.FromBytes(b[9:])
	if err != nil {
		return Cursor{}, ErrBadCursor
	}
	return Cursor{At: at, ID: u}, nil
}
