package sqlite

import (
	"testing"

	"polydev/internal/store"
)

// TestMigrationKeepsTokens: migration 00003 turns the ports of existing
// provider tokens into their users' holdings and keeps every token.
func TestMigrationKeepsTokens(t *testing.T) {
	t.Parallel()
	db, _ := openDB(t)
	if _, err := db.migrations.UpTo(ctx(), 2); err != nil {
		t.Fatal(err)
	}
	u := mustUser(t, db)
	for _, p := range []string{"openai", "google"} {
		if _, err := db.w.ExecContext(ctx(), `INSERT INTO provider_tokens (user_id, provider, encrypted_refresh_token, decodo_port, egress_ip)
			VALUES (?, ?, 'sealed-'||?, 10001, '203.0.113.1')`, u.ID, p, p); err != nil {
			t.Fatal(err)
		}
	}
	if err := db.Migrate(ctx()); err != nil {
		t.Fatalf("Migrate: %v", err)
	}
	ts, err := db.ProviderTokens(ctx(), u.ID)
	if err != nil || len(ts) != 2 || ts[0].EncryptedRefreshToken != "sealed-google" || ts[1].EgressPort != 10001 || ts[1].EgressIP != "203.0.113.1" {
		t.Fatalf("tokens after the migration: %+v, %v", ts, err)
	}
	var holder string
	if err := db.r.QueryRowContext(ctx(), `SELECT user_id FROM egress_ports WHERE port = 10001`).Scan(&holder); err != nil || holder != u.ID {
		t.Errorf("port 10001 after the migration: held by %q, %v; want the user", holder, err)
	}
	// The foreign key is in force: a token cannot name a port its user
	// does not hold.
	_, err = db.w.ExecContext(ctx(), `UPDATE provider_tokens SET decodo_port = 10002 WHERE user_id = ?`, u.ID)
	if classify(ctx(), err) != store.ErrNotFound {
		t.Errorf("a token moved to a port nobody holds: %v; want a foreign-key refusal", err)
	}
	if err := db.Ping(ctx()); err != nil {
		t.Errorf("Ping after the migration: %v", err)
	}
}
