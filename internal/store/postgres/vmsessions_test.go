package postgres_test

import (
	"slices"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
)

// TestVMMRole checks polydev_vmm, the role reconcile runs as, in the
// catalogue and in raw SQL: it reads only the metadata of live sessions of
// the host named by polydev.host_id, and writes nothing.
func TestVMMRole(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, true)
	admin, app := connect(t, d.ownerDSN), connect(t, d.appDSN)
	ctx := t.Context()

	var attrs string
	if err := admin.QueryRow(ctx, `select rolsuper::text || rolbypassrls::text || rolcanlogin::text from pg_roles
		where rolname = 'polydev_vmm'`).Scan(&attrs); err != nil {
		t.Fatal(err)
	}
	if attrs != "falsefalsefalse" {
		t.Errorf("polydev_vmm superuser, bypassrls, login = %s; want all false", attrs)
	}
	var reach []string
	err := admin.QueryRow(ctx, `select coalesce(array_agg(x order by x), '{}') from (
			select c.relname || ' ' || p as x
			from pg_class c cross join unnest(array['select', 'insert', 'update', 'delete']) p
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and has_table_privilege('polydev_vmm', c.oid, p)
			union all
			select c.relname || ' ' || p || ' ' || a.attname
			from pg_class c cross join unnest(array['select', 'insert', 'update']) p
			join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and has_column_privilege('polydev_vmm', c.oid, a.attnum, p)
		) reach`).Scan(&reach)
	if err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, col := range []string{"id", "user_id", "provider", "vm_id", "vm_ip", "host_id", "status", "created_at", "booting_at",
		"ready_at", "authenticating_at", "ended_at", "token_captured_at", "destroyed_at", "expires_at"} {
		want = append(want, "vm_sessions select "+col)
	}
	slices.Sort(want)
	if !slices.Equal(reach, want) {
		t.Errorf("polydev_vmm's privileges:\n%q\nwant\n%q", reach, want)
	}

	// Two users, sessions on two hosts, one destroyed.
	a, b := seed(t, admin, 10001), seed(t, admin, 10002) // each has a 'ready' session with host ''
	live, dead, other := uuid.NewString(), uuid.NewString(), uuid.NewString()
	for _, q := range []struct{ id, user, provider, host, status string }{
		{live, a.user, "google", "h1", "ready"},
		{dead, b.user, "google", "h1", "destroyed"},
		{other, b.user, "anthropic", "h2", "booting"},
	} {
		if _, err := admin.Exec(ctx, `insert into vm_sessions (id, user_id, provider, host_id, status, webrtc_offer)
			values ($1, $2, $3, $4, $5, 'offer')`, q.id, q.user, q.provider, q.host, q.status); err != nil {
			t.Fatal(err)
		}
	}
	vmm := func(host string, fn func(tx pgx.Tx)) {
		t.Helper()
		tx, err := app.Begin(ctx)
		if err != nil {
			t.Fatal(err)
		}
		defer tx.Rollback(ctx)
		if _, err := tx.Exec(ctx, "select set_config('role', 'polydev_vmm', true), set_config('polydev.host_id', $1, true)", host); err != nil {
			t.Fatal(err)
		}
		fn(tx)
	}
	ids := func(tx pgx.Tx) []string {
		rows, err := tx.Query(ctx, "select id::text from vm_sessions order by id")
		if err != nil {
			t.Fatalf("select as polydev_vmm: %v", err)
		}
		got, err := pgx.CollectRows(rows, pgx.RowTo[string])
		if err != nil {
			t.Fatal(err)
		}
		return got
	}
	for _, c := range []struct {
		host string
		want []string
	}{
		{"h1", []string{live}},
		{"h2", []string{other}},
		{"", nil}, // the seeded sessions have no host: never visible
		{"h3", nil},
	} {
		vmm(c.host, func(tx pgx.Tx) {
			if got := ids(tx); !slices.Equal(got, c.want) {
				t.Errorf("polydev_vmm with host %q sees %v; want %v", c.host, got, c.want)
			}
		})
	}
	for _, q := range []string{
		"select webrtc_offer from vm_sessions",
		"update vm_sessions set status = 'destroyed'",
		"delete from vm_sessions",
		"insert into vm_sessions (id, user_id, provider, host_id, status) values (gen_random_uuid(), '" + a.user + "', 'openai', 'h1', 'booting')",
		"select count(*) from users",
		"insert into audit_log (event) values ('x')",
	} {
		vmm("h1", func(tx pgx.Tx) {
			if _, err := tx.Exec(ctx, q); sqlState(err) != "42501" {
				t.Errorf("as polydev_vmm: %s: %v; want insufficient_privilege", q, err)
			}
		})
	}

	// The store's own method, through the app login role.
	db := open(t, d.appDSN)
	if err := db.Ping(ctx); err != nil {
		t.Fatalf("Ping with polydev_vmm granted: %v", err)
	}
	hs, err := db.HostVMSessions(ctx, "h1")
	if err != nil || len(hs) != 1 || hs[0].ID != live || hs[0].UserID != a.user {
		t.Errorf("HostVMSessions(h1) = %+v, %v; want the live session of A", hs, err)
	}
}
