package sqlite

import (
	"bytes"
	"context"
	"database/sql"
	"errors"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/store"
	"polydev/internal/store/storetest"
)

func ctx() context.Context { return context.Background() }

// openDB opens a database in a fresh temporary directory; closed at the
// end of the test.
func openDB(t *testing.T, opts ...Option) (*DB, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "polydev.db")
	db, err := Open(ctx(), path, opts...)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db, path
}

func newUser() *store.User {
	id := uuid.NewString()
	return &store.User{
		ID: id, Email: "u-" + id[:8] + "@example.test",
		KDFParams: []byte(`{"version":1}`), AuthHash: bytes.Repeat([]byte{1}, 32), AuthSalt: bytes.Repeat([]byte{2}, 16),
		AuthAlgo: "argon2id$m=19456,t=2,p=1", WrappedAccountKey: "wa", WrappedPrivateKey: "wp", PublicKey: "pk",
	}
}

func mustUser(t *testing.T, db *DB) *store.User {
	t.Helper()
	u := newUser()
	if err := db.CreateUser(ctx(), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	return u
}

func TestConformance(t *testing.T) {
	storetest.Run(t, func(t *testing.T) store.Store {
		db, err := Open(ctx(), filepath.Join(t.TempDir(), "polydev.db"), WithMigrate())
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		return db
	})
	if !t.Failed() {
		t.Log("conformance suite passed on sqlite")
	}
}

// Every connection of both pools, not just the first, must carry the
// pragmas: hold several at once so the pools have to open new ones.
func TestPragmasOnEveryConnection(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate(), WithReaders(6))
	type conn struct {
		name     string
		pool     *sql.DB
		readOnly int
	}
	var conns []conn
	for range 6 {
		conns = append(conns, conn{"reader", db.r, 1})
	}
	conns = append(conns, conn{"writer", db.w, 0})

	var held []*sql.Conn
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, c := range conns {
		wg.Go(func() {
			sc, err := c.pool.Conn(ctx())
			if err != nil {
				t.Errorf("%s: Conn: %v", c.name, err)
				return
			}
			mu.Lock()
			held = append(held, sc)
			mu.Unlock()
			for _, p := range []struct {
				pragma string
				want   any
			}{
				{"foreign_keys", int64(1)},
				{"journal_mode", "wal"},
				{"synchronous", int64(2)},
				{"busy_timeout", int64(5000)},
				{"query_only", int64(c.readOnly)},
			} {
				var got any
				if err := sc.QueryRowContext(ctx(), "PRAGMA "+p.pragma).Scan(&got); err != nil {
					t.Errorf("%s: PRAGMA %s: %v", c.name, p.pragma, err)
					continue
				}
				if s, ok := got.(string); ok {
					got = strings.ToLower(s)
				}
				if got != p.want {
					t.Errorf("%s: PRAGMA %s = %v; want %v", c.name, p.pragma, got, p.want)
				}
			}
		})
	}
	wg.Wait()
	if got := db.r.Stats().OpenConnections; got != 6 {
		t.Errorf("reader pool has %d open connections; want the 6 held", got)
	}
	for _, sc := range held {
		sc.Close()
	}
}

// Foreign keys are enforced, not just reported on: an orphan row is refused.
func TestForeignKeysEnforced(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	_, err := db.w.ExecContext(ctx(), `INSERT INTO conversations (id, user_id, provider, wrapped_key) VALUES (?, ?, 'openai', 'k')`,
		uuid.NewString(), uuid.NewString())
	if !errors.Is(classify(ctx(), err), store.ErrNotFound) {
		t.Errorf("orphan conversation: got %v; want a foreign-key violation (ErrNotFound: the parent does not exist)", err)
	}
}

func TestMigrations(t *testing.T) {
	t.Parallel()
	db, path := openDB(t)

	err := db.Ping(ctx())
	if !errors.Is(err, ErrSchemaVersion) {
		t.Fatalf("Ping before migrating: got %v; want ErrSchemaVersion", err)
	}
	cur, target, err := db.SchemaVersion(ctx())
	if err != nil || cur != 0 || target < 1 {
		t.Fatalf("SchemaVersion before migrating = %d, %d, %v; want 0, ≥1, nil", cur, target, err)
	}
	// SchemaVersion and Ping only read: goose's table is not created.
	var n int
	db.r.QueryRowContext(ctx(), `SELECT count(*) FROM sqlite_schema WHERE name = ?`, versionTable).Scan(&n)
	if n != 0 {
		t.Error("a status check created the version table")
	}

	for i := range 2 { // the second run finds nothing to do
		if err := db.Migrate(ctx()); err != nil {
			t.Fatalf("Migrate #%d: %v", i+1, err)
		}
		if err := db.Ping(ctx()); err != nil {
			t.Fatalf("Ping after Migrate #%d: %v", i+1, err)
		}
		if cur, tgt, err := db.SchemaVersion(ctx()); err != nil || cur != target || tgt != target {
			t.Fatalf("SchemaVersion after Migrate #%d = %d, %d, %v; want %d, %d", i+1, cur, tgt, err, target, target)
		}
	}
	mustUser(t, db)
	db.Close()

	// The package-level Migrate on an up-to-date database changes nothing.
	from, to, err := Migrate(ctx(), path)
	if err != nil || from != target || to != target {
		t.Errorf("Migrate(up to date) = %d, %d, %v; want %d, %d", from, to, err, target, target)
	}
	// And on a new one migrates from 0.
	from, to, err = Migrate(ctx(), filepath.Join(t.TempDir(), "new.db"))
	if err != nil || from != 0 || to != target {
		t.Errorf("Migrate(new) = %d, %d, %v; want 0, %d", from, to, err, target)
	}

	// A database from a newer release is refused too.
	db2, err := Open(ctx(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer db2.Close()
	if _, err := db2.w.ExecContext(ctx(), `INSERT INTO `+versionTable+` (version_id, is_applied) VALUES (?, 1)`, target+1); err != nil {
		t.Fatal(err)
	}
	if err := db2.Ping(ctx()); !errors.Is(err, ErrSchemaVersion) || !strings.Contains(err.Error(), "newer") {
		t.Errorf("Ping on a newer schema: got %v; want ErrSchemaVersion (newer)", err)
	}
}

// Twenty concurrent registrations get 1..20, no gaps, no duplicates; a
// failed one consumes no number; an erased user's number is not reused.
func TestUserNumbers(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	const n = 20
	createConcurrently(t, n, func(int) *DB { return db })

	dup := newUser()
	dup.Email = strings.Repeat("x", 300) // breaks the length check
	if err := db.CreateUser(ctx(), dup); !errors.Is(err, store.ErrInvalid) {
		t.Fatalf("CreateUser(bad email): got %v; want ErrInvalid", err)
	}
	if u := mustUser(t, db); u.Number != n+1 {
		t.Errorf("after a failed insert: number %d; want %d", u.Number, n+1)
	}
	last := mustUser(t, db)
	if err := db.DeleteUser(ctx(), last.ID); err != nil {
		t.Fatal(err)
	}
	if u := mustUser(t, db); u.Number != last.Number+1 {
		t.Errorf("after erasing number %d: got %d; want %d (numbers are not reused)", last.Number, u.Number, last.Number+1)
	}
}

// Two handles on one file, as two processes would have, register users
// concurrently: BEGIN IMMEDIATE and the busy timeout serialise them across
// handles, so the numbers are still 1..N.
func TestUserNumbersAcrossHandles(t *testing.T) {
	t.Parallel()
	a, path := openDB(t, WithMigrate())
	b, err := Open(ctx(), path)
	if err != nil {
		t.Fatal(err)
	}
	defer b.Close()
	createConcurrently(t, 20, func(i int) *DB {
		if i%2 == 1 {
			return b
		}
		return a
	})
}

// createConcurrently registers n users at once, user i through pick(i),
// and requires their numbers to be exactly 1..n.
func createConcurrently(t *testing.T, n int, pick func(i int) *DB) {
	t.Helper()
	nums := make([]int64, n)
	var wg sync.WaitGroup
	for i := range n {
		db := pick(i)
		wg.Go(func() {
			u := newUser()
			if err := db.CreateUser(ctx(), u); err != nil {
				t.Errorf("CreateUser: %v", err)
			}
			nums[i] = u.Number
		})
	}
	wg.Wait()
	slices.Sort(nums)
	for i, got := range nums {
		if got != int64(i+1) {
			t.Fatalf("numbers = %v; want 1..%d", nums, n)
		}
	}
}

// Errors carry the kind and the operation, never the SQL or the values.
func TestErrors(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	a := mustUser(t, db)
	b := mustUser(t, db)

	dup := newUser()
	dup.Email = a.Email
	err := db.CreateUser(ctx(), dup)
	if !errors.Is(err, store.ErrConflict) {
		t.Fatalf("duplicate email: got %v; want ErrConflict", err)
	}
	if err.Error() != "create user: conflict" {
		t.Errorf("duplicate email: message %q; want %q", err, "create user: conflict")
	}

	for _, tc := range []struct {
		what string
		err  error
		want error
	}{
		{"unknown provider", db.PutProviderToken(ctx(), a.ID, &store.ProviderToken{Provider: "acme'; --", EgressPort: 1}), store.ErrInvalid},
		{"port 0", db.PutProviderToken(ctx(), a.ID, &store.ProviderToken{Provider: "openai"}), store.ErrInvalid},
		{"audit event of no user", db.Record(ctx(), &store.AuditEvent{UserID: uuid.NewString(), Event: "x"}), store.ErrNotFound},
		{"audit event of a non-uuid", db.Record(ctx(), &store.AuditEvent{UserID: "1 or 1=1", Event: "x"}), store.ErrInvalid},
		{"nil auth hash", db.SetCredentials(ctx(), a.ID, store.Credentials{KDFParams: []byte("{}"), AuthSalt: []byte{1}}, ""), store.ErrInvalid},
		{"uppercase email", db.CreateUser(ctx(), func() *store.User { u := newUser(); u.Email = "Secret@Example.test"; return u }()), store.ErrInvalid},
		{"session for another user", db.CreateSession(ctx(), a.ID, &store.Session{UserID: b.ID, TokenHash: []byte{1}, ExpiresAt: time.Now()}), store.ErrNotFound},
		{"session of no user", db.CreateSession(ctx(), uuid.NewString(), &store.Session{TokenHash: []byte{2}, ExpiresAt: time.Now()}), store.ErrNotFound},
		{"session without expiry", db.CreateSession(ctx(), a.ID, &store.Session{TokenHash: []byte{3}}), store.ErrInvalid},
		{"conversation without id", db.CreateConversation(ctx(), a.ID, &store.Conversation{Provider: "openai"}), store.ErrInvalid},
		{"time out of range", db.RevokeSession(ctx(), a.ID, uuid.NewString(), time.Date(10000, 1, 1, 0, 0, 0, 0, time.UTC)), store.ErrInvalid},
		{"audit limit 0", func() error { _, err := db.AuditEvents(ctx(), a.ID, 0); return err }(), store.ErrInvalid},
	} {
		if !errors.Is(tc.err, tc.want) {
			t.Errorf("%s: got %v; want %v", tc.what, tc.err, tc.want)
			continue
		}
		msg := tc.err.Error()
		for _, leak := range []string{"INSERT", "UPDATE", "SELECT", "acme", "Secret", "constraint", a.ID, b.ID} {
			if strings.Contains(msg, leak) {
				t.Errorf("%s: message %q contains %q", tc.what, msg, leak)
			}
		}
	}

	db.Close()
	if err := db.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := db.User(ctx(), a.ID); err == nil || errors.Is(err, store.ErrNotFound) {
		t.Errorf("User after Close: got %v; want a closed-database error", err)
	}
}

// Erasure cascades through foreign keys and keeps the audit trail, unlinked.
func TestDeleteUserKeepsAudit(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	u := mustUser(t, db)
	c := &store.Conversation{ID: uuid.NewString(), Provider: "openai", WrappedKey: "k"}
	for _, err := range []error{
		db.Record(ctx(), &store.AuditEvent{UserID: u.ID, Event: "register"}),
		db.CreateSession(ctx(), u.ID, &store.Session{TokenHash: []byte("h"), ExpiresAt: time.Now().Add(time.Hour)}),
		db.PutProviderToken(ctx(), u.ID, &store.ProviderToken{Provider: "google", EgressPort: 10001}),
		db.CreateConversation(ctx(), u.ID, c),
		db.AddMessages(ctx(), u.ID, &store.Message{ID: uuid.NewString(), ConversationID: c.ID, Role: "user"}),
	} {
		if err != nil {
			t.Fatal(err)
		}
	}
	// PutProviderToken took the port for the user.
	var held int
	if err := db.r.QueryRowContext(ctx(), `SELECT count(*) FROM egress_ports WHERE port = 10001 AND user_id = ?`, u.ID).Scan(&held); err != nil || held != 1 {
		t.Fatalf("egress_ports rows of the user: %d, %v; want 1", held, err)
	}
	if err := db.DeleteUser(ctx(), u.ID); err != nil {
		t.Fatal(err)
	}
	for _, table := range []string{"users", "sessions", "provider_tokens", "egress_ports", "conversations", "messages"} {
		var n int
		if err := db.r.QueryRowContext(ctx(), `SELECT count(*) FROM `+table).Scan(&n); err != nil || n != 0 {
			t.Errorf("%s after erasure: %d rows, %v; want 0", table, n, err)
		}
	}
	var event string
	var userID sql.NullString
	if err := db.r.QueryRowContext(ctx(), `SELECT event, user_id FROM audit_log`).Scan(&event, &userID); err != nil {
		t.Fatalf("audit row after erasure: %v", err)
	}
	if event != "register" || userID.Valid {
		t.Errorf("audit row after erasure = %q, %v; want register with user_id NULL", event, userID)
	}
}

// Stored times are fixed-width UTC text with microseconds; they come back
// truncated to the microsecond in UTC; text order is time order.
func TestTimestamps(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	u := mustUser(t, db)
	zone := time.FixedZone("X", -(7*3600 + 30*60))
	created := time.Date(2030, 1, 2, 3, 4, 5, 999_999_999, zone)
	s := &store.Session{TokenHash: []byte("t"), CreatedAt: created, ExpiresAt: created.Add(time.Hour)}
	if err := db.CreateSession(ctx(), u.ID, s); err != nil {
		t.Fatal(err)
	}
	var raw string
	db.r.QueryRowContext(ctx(), `SELECT created_at FROM sessions WHERE id = ?`, s.ID).Scan(&raw)
	if want := "2030-01-02T10:34:05.999999Z"; raw != want {
		t.Errorf("stored created_at %q; want %q", raw, want)
	}
	got, err := db.ActiveSession(ctx(), s.TokenHash, created.Add(time.Minute))
	if err != nil {
		t.Fatal(err)
	}
	want := created.Truncate(time.Microsecond)
	if !got.CreatedAt.Equal(want) || got.CreatedAt.Location() != time.UTC || !s.CreatedAt.Equal(got.CreatedAt) {
		t.Errorf("CreatedAt = %v (record now %v); want %v in UTC", got.CreatedAt, s.CreatedAt, want)
	}
	if !got.RevokedAt.IsZero() {
		t.Errorf("RevokedAt = %v; want zero", got.RevokedAt)
	}
	// Whole seconds keep their six zeros, so they sort before fractions.
	if a, b := encodeTime(time.Date(2030, 1, 1, 0, 0, 5, 0, time.UTC)), encodeTime(time.Date(2030, 1, 1, 0, 0, 5, 1000, time.UTC)); !(a < b) || len(a) != len(b) {
		t.Errorf("encodeTime: %q, %q are not fixed width and ordered", a, b)
	}
	// SQL defaults have the same shape.
	if _, err := db.w.ExecContext(ctx(), `INSERT INTO audit_log (event) VALUES ('x')`); err != nil {
		t.Fatal(err)
	}
	db.r.QueryRowContext(ctx(), `SELECT created_at FROM audit_log`).Scan(&raw)
	if _, err := time.Parse(timeLayout, raw); err != nil {
		t.Errorf("default created_at %q does not parse with %q", raw, timeLayout)
	}
}

// A lookup that races a newer one does not move last_seen_at backwards;
// revoking twice keeps the first time.
func TestSessionTimesOnlyMoveForward(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t, WithMigrate())
	u := mustUser(t, db)
	t0 := time.Date(2030, 1, 1, 0, 0, 0, 0, time.UTC)
	s := &store.Session{TokenHash: []byte("f"), CreatedAt: t0, ExpiresAt: t0.Add(time.Hour)}
	if err := db.CreateSession(ctx(), u.ID, s); err != nil {
		t.Fatal(err)
	}
	for _, at := range []time.Duration{10 * time.Minute, 5 * time.Minute} {
		if _, err := db.ActiveSession(ctx(), s.TokenHash, t0.Add(at)); err != nil {
			t.Fatal(err)
		}
	}
	got, err := db.ActiveSession(ctx(), s.TokenHash, t0.Add(11*time.Minute))
	if err != nil || !got.LastSeenAt.Equal(t0.Add(10*time.Minute)) {
		t.Errorf("LastSeenAt = %v, %v; want %v", got, err, t0.Add(10*time.Minute))
	}
	for _, at := range []time.Duration{20 * time.Minute, 30 * time.Minute} {
		if err := db.RevokeSession(ctx(), u.ID, strings.ToUpper(s.ID), t0.Add(at)); err != nil {
			t.Fatalf("RevokeSession: %v", err)
		}
	}
	var raw string
	db.r.QueryRowContext(ctx(), `SELECT revoked_at FROM sessions`).Scan(&raw)
	if raw != encodeTime(t0.Add(20*time.Minute)) {
		t.Errorf("revoked_at = %s; want the first revocation", raw)
	}
}

func TestOpen(t *testing.T) {
	t.Parallel()
	_, path := openDB(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("database file mode %v; want 0600", fi.Mode().Perm())
	}
	for _, bad := range []string{"", filepath.Join(t.TempDir(), "x.db?_pragma=foreign_keys(0)")} {
		if db, err := Open(ctx(), bad); err == nil {
			db.Close()
			t.Errorf("Open(%q) succeeded", bad)
		}
	}
	if _, err := Open(ctx(), filepath.Join(t.TempDir(), "missing", "x.db")); err == nil {
		t.Error("Open in a missing directory succeeded")
	}
}
