package postgres_test

import (
	"errors"
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/store"
	"polydev/internal/store/postgres"
	"polydev/internal/store/storetest"
)

// templateVersion is the version the shared template was migrated to.
func templateVersion(t *testing.T) int64 {
	t.Helper()
	admin := connect(t, newDatabase(t, true).ownerDSN)
	var v int64
	if err := admin.QueryRow(t.Context(), "select max(version_id) from polydev_meta.goose_db_version").Scan(&v); err != nil {
		t.Fatal(err)
	}
	return v
}

func TestMigrateIsIdempotent(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, false)
	from, to, err := postgres.Migrate(t.Context(), d.ownerDSN, nil)
	if err != nil || from != 0 || to < 1 {
		t.Fatalf("Migrate on an empty database: %d → %d, %v; want 0 → the newest version", from, to, err)
	}
	if want := templateVersion(t); to != want {
		t.Errorf("Migrate reached %d; the template is at %d", to, want)
	}
	for range 2 {
		from2, to2, err := postgres.Migrate(t.Context(), d.ownerDSN, nil)
		if err != nil || from2 != to || to2 != to {
			t.Errorf("Migrate again: %d → %d, %v; want %d → %d", from2, to2, err, to, to)
		}
	}
	db := open(t, d.appDSN)
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping after Migrate: %v", err)
	}
}

func TestMigrateConcurrently(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, false)
	const n = 3
	var wg sync.WaitGroup
	errs := make([]error, n)
	tos := make([]int64, n)
	for i := range n {
		wg.Go(func() { _, tos[i], errs[i] = postgres.Migrate(t.Context(), d.ownerDSN, nil) })
	}
	wg.Wait()
	for i := range n {
		if errs[i] != nil || tos[i] != tos[0] || tos[i] < 1 {
			t.Errorf("concurrent Migrate %d: to %d, %v; want no error and the same version as the others", i, tos[i], errs[i])
		}
	}
}

// TestMigrateOnSupabase runs the migrations where Supabase's auth schema,
// an auth.uid() of its own and its API roles with default privileges on
// new tables already exist. The function must be left as it was and still
// be what the policies use; the API roles must end up with nothing.
func TestMigrateOnSupabase(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, false)
	c := cluster(t)
	// Older Supabase read only request.jwt.claim.sub; the store sets both.
	c.Psql(t, d.name, `
		DO $$ BEGIN
			CREATE ROLE anon NOLOGIN;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		DO $$ BEGIN
			CREATE ROLE authenticated NOLOGIN;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		DO $$ BEGIN
			CREATE ROLE service_role NOLOGIN BYPASSRLS; -- as on Supabase: it bypasses RLS
		EXCEPTION WHEN duplicate_object OR unique_violation THEN NULL; END $$;
		CREATE SCHEMA auth;
		GRANT USAGE ON SCHEMA auth TO anon, authenticated, service_role;
		CREATE FUNCTION auth.uid() RETURNS uuid LANGUAGE sql STABLE
			AS $$ select nullif(current_setting('request.jwt.claim.sub', true), '')::uuid $$;
		ALTER DEFAULT PRIVILEGES IN SCHEMA public GRANT ALL ON TABLES TO anon, authenticated, service_role;
	`)
	const fn = "select p.oid || ' ' || p.prosrc from pg_proc p where p.oid = 'auth.uid()'::regprocedure"
	before := c.Psql(t, d.name, fn)
	if _, _, err := postgres.Migrate(t.Context(), d.ownerDSN, nil); err != nil {
		t.Fatalf("Migrate over an existing auth.uid(): %v", err)
	}
	if after := c.Psql(t, d.name, fn); after != before {
		t.Errorf("auth.uid() was replaced:\nbefore %q\nafter  %q", before, after)
	}
	if got := c.Psql(t, d.name, `select count(*) from pg_class c, unnest(array['anon', 'authenticated', 'service_role']) r
		where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
		and has_any_column_privilege(r, c.oid, 'select, insert, update, references')
		or c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and has_table_privilege(r, c.oid, 'delete, truncate')`); got != "0\n" {
		t.Errorf("tables Supabase's API roles can reach: %s; want 0", got)
	}

	// The store works on top of that function.
	db := open(t, d.appDSN)
	if err := db.Ping(t.Context()); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	u := &store.User{Email: "supabase@example.test", KDFParams: []byte("{}"), AuthHash: []byte{1}, AuthSalt: []byte{2}}
	if err := db.CreateUser(t.Context(), u); err != nil {
		t.Fatalf("CreateUser: %v", err)
	}
	if got, err := db.User(t.Context(), u.ID); err != nil || got.Email != u.Email {
		t.Errorf("User: %+v, %v", got, err)
	}
}

func TestPing(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, false)
	db := open(t, d.appDSN) // Open succeeds before migration: readiness is Ping's business
	if err := db.Ping(t.Context()); err == nil {
		t.Error("Ping before migration succeeded")
	}
	if _, _, err := postgres.Migrate(t.Context(), d.ownerDSN, nil); err != nil {
		t.Fatal(err)
	}
	if err := db.Ping(t.Context()); err != nil {
		t.Errorf("Ping after migration: %v", err)
	}
	// A schema behind this build is not ready.
	cluster(t).Psql(t, d.name, "delete from polydev_meta.goose_db_version where version_id = (select max(version_id) from polydev_meta.goose_db_version)")
	if err := db.Ping(t.Context()); err == nil || !strings.Contains(err.Error(), "run the migrations") {
		t.Errorf("Ping with the newest migration missing: %v; want an error asking for migrations", err)
	}

	// Connected as the owner (a superuser here), the store would not be
	// bound by the policies outside its transactions: not ready.
	owner := open(t, newDatabase(t, true).ownerDSN)
	if err := owner.Ping(t.Context()); err == nil {
		t.Error("Ping as the schema owner succeeded")
	}
	if err := owner.Close(); err != nil {
		t.Error(err)
	}
	if err := owner.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if err := owner.Ping(t.Context()); err == nil {
		t.Error("Ping after Close succeeded")
	}
}

// TestErrors: the store's errors carry the kind and the operation, never
// the values involved, and a login role that is not set up is reported
// as such, not as a bad record.
func TestErrors(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, true)
	db := open(t, d.appDSN)
	ctx := t.Context()
	u := &store.User{Email: "errors@example.test", KDFParams: []byte("{}"), AuthHash: []byte{1}, AuthSalt: []byte{2}}
	if err := db.CreateUser(ctx, u); err != nil {
		t.Fatal(err)
	}
	conv := &store.Conversation{ID: storetest.NewID(), Provider: "openai", WrappedKey: "k"}
	if err := db.CreateConversation(ctx, u.ID, conv); err != nil {
		t.Fatal(err)
	}
	const secret = "s3cr3t-value"
	const huge = 1234567890123
	for _, c := range []struct {
		what string
		err  error
		want error
	}{
		{"email too short", db.CreateUser(ctx, &store.User{Email: "s", PublicKey: secret, AuthHash: []byte{1}, AuthSalt: []byte{1}}), store.ErrInvalid},
		{"NUL in text", db.CreateUser(ctx, &store.User{Email: "nul@example.test", KDFParams: []byte(secret + "\x00"), AuthHash: []byte{1}, AuthSalt: []byte{1}}), store.ErrInvalid},
		{"missing hash", db.CreateUser(ctx, &store.User{Email: "nohash@example.test", PublicKey: secret}), store.ErrInvalid},
		{"unknown provider", db.PutProviderToken(ctx, u.ID, &store.ProviderToken{Provider: secret, EgressPort: 10001}), store.ErrInvalid},
		{"port out of range", db.PutProviderToken(ctx, u.ID, &store.ProviderToken{Provider: "openai", EncryptedRefreshToken: secret, EgressPort: 70000}), store.ErrInvalid},
		{"malformed id", db.DeleteConversation(ctx, u.ID, secret), store.ErrNotFound},
		{"event of an unknown user", db.Record(ctx, &store.AuditEvent{UserID: uuid.NewString(), Event: secret}), store.ErrNotFound},
		{"conversation of an unknown user", db.CreateConversation(ctx, uuid.NewString(),
			&store.Conversation{ID: storetest.NewID(), Provider: "openai", WrappedKey: secret}), store.ErrNotFound},
		{"number too large for its column", db.AddMessages(ctx, u.ID, &store.Message{ID: storetest.NewID(), ConversationID: conv.ID,
			Role: "user", EncryptedContent: secret, TokensUsed: huge}), store.ErrInvalid},
		{"message id not a UUID", db.AddMessages(ctx, u.ID, &store.Message{ID: secret, ConversationID: uuid.NewString()}), store.ErrInvalid},
	} {
		if !errors.Is(c.err, c.want) {
			t.Errorf("%s: got %v; want %v", c.what, c.err, c.want)
		}
		if c.err == nil {
			continue
		}
		if msg := c.err.Error(); strings.Contains(msg, secret) || strings.Contains(msg, fmt.Sprint(huge)) || strings.Contains(strings.ToLower(msg), "insert") {
			t.Errorf("%s: the error quotes SQL or values: %v", c.what, c.err)
		}
	}

	// A login role that is not a member of the store's roles.
	c := cluster(t)
	outsider := fmt.Sprintf("outsider_%d", shared.n.Add(1))
	c.Psql(t, "postgres", "CREATE ROLE "+outsider+" LOGIN NOINHERIT")
	odb := open(t, d.ownerDSN+" user="+outsider)
	_, err := odb.User(ctx, u.ID)
	if err == nil || errors.Is(err, store.ErrNotFound) || errors.Is(err, store.ErrInvalid) || !strings.Contains(err.Error(), "entering role polydev_app") {
		t.Errorf("User through a login role without membership: %v; want an error about entering the role", err)
	}
	// The same through the one-round-trip path, for both roles.
	_, err = odb.Conversation(ctx, u.ID, conv.ID)
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "entering role polydev_app") {
		t.Errorf("Conversation through a login role without membership: %v; want an error about entering the role", err)
	}
	_, err = odb.ActiveSession(ctx, make([]byte, 32), time.Now())
	if err == nil || errors.Is(err, store.ErrNotFound) || !strings.Contains(err.Error(), "entering role polydev_auth") {
		t.Errorf("ActiveSession through a login role without membership: %v; want an error about entering the role", err)
	}
	if err := odb.Ping(ctx); err == nil {
		t.Error("Ping through a login role without membership succeeded")
	}
}
