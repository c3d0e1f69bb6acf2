package postgres_test

import (
	"crypto/rand"
	"errors"
	"fmt"
	"slices"
	"strings"
	"testing"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"
	"github.com/jackc/pgx/v5/pgconn"

	"polydev/internal/store"
	"polydev/internal/store/postgres"
	"polydev/internal/store/storetest"
)

func TestConformance(t *testing.T) {
	t.Parallel()
	storetest.Run(t, func(t *testing.T) store.Store {
		return open(t, newDatabase(t, true).appDSN)
	})
	if !t.Failed() {
		t.Log("conformance suite passed on postgres")
	}
}

// open opens the store as the application would; Close is left to the
// caller (the conformance suite checks it is safe twice) but also
// registered as a cleanup.
func open(t *testing.T, appDSN string) *postgres.DB {
	t.Helper()
	db, err := postgres.Open(t.Context(), appDSN)
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	t.Cleanup(func() { db.Close() })
	return db
}

// connect opens a plain connection for raw SQL.
func connect(t *testing.T, dsn string) *pgx.Conn {
	t.Helper()
	conn, err := pgx.Connect(t.Context(), dsn)
	if err != nil {
		t.Fatalf("connecting: %v", err)
	}
	t.Cleanup(func() { conn.Close(t.Context()) })
	return conn
}

// appTables is every application table, with the predicate that picks
// one user's rows in it (%[1]s: the user's id, %[2]s: their message's id),
// a SET clause polydev_app is granted (empty: it may not update the
// table), and whether it may delete from it.
var appTables = []struct {
	name, owned, update string
	canDelete           bool
}{
	{"users", "id = '%[1]s'", "updated_at = now()", true},
	{"sessions", "user_id = '%[1]s'", "revoked_at = now()", false},
	{"audit_log", "user_id = '%[1]s'", "", false},
	{"provider_tokens", "user_id = '%[1]s'", "encrypted_refresh_token = 'pwned'", true},
	{"egress_ports", "user_id = '%[1]s'", "", true},
	{"conversations", "user_id = '%[1]s'", "encrypted_title = 'pwned'", true},
	{"messages", "id = '%[2]s'", "", false},
	{"vm_sessions", "user_id = '%[1]s'", "status = 'failed'", true},
	{"job_executions", "user_id = '%[1]s'", "exit_code = 99", true},
}

// owner is a user seeded with one row in every table.
type owner struct{ user, conv, msg string }

func (o owner) pred(owned string) string { return fmt.Sprintf(owned, o.user, o.msg) }

func seed(t *testing.T, admin *pgx.Conn, port int) owner {
	t.Helper()
	o := owner{uuid.NewString(), uuid.NewString(), uuid.NewString()}
	hash := make([]byte, 32)
	rand.Read(hash)
	for _, q := range []struct {
		sql  string
		args []any
	}{
		{`insert into users (id, email, kdf_params, auth_hash, auth_salt, auth_algo, wrapped_account_key, wrapped_private_key, public_key)
			values ($1, $2, '{}', '\x01', '\x02', 'a', 'w', 'p', 'k')`, []any{o.user, o.user + "@example.test"}},
		{`insert into sessions (id, user_id, token_hash, created_at, expires_at, last_seen_at)
			values (gen_random_uuid(), $1, $2, now(), now() + interval '1 hour', now())`, []any{o.user, hash}},
		{`insert into audit_log (user_id, event) values ($1, 'seed')`, []any{o.user}},
		{`insert into egress_ports (port, user_id) values ($2, $1)`, []any{o.user, port}},
		{`insert into provider_tokens (user_id, provider, encrypted_refresh_token, decodo_port) values ($1, 'openai', 'tok', $2)`, []any{o.user, port}},
		{`insert into conversations (id, user_id, provider, wrapped_key) values ($2, $1, 'openai', 'k')`, []any{o.user, o.conv}},
		{`insert into messages (id, conversation_id, role, encrypted_content) values ($1, $2, 'user', 'c')`, []any{o.msg, o.conv}},
		{`insert into vm_sessions (id, user_id, provider, status) values (gen_random_uuid(), $1, 'openai', 'ready')`, []any{o.user}},
		{`insert into job_executions (id, user_id, provider, wrapped_key, encrypted_command)
			values (gen_random_uuid(), $1, 'openai', 'k', 'c')`, []any{o.user}},
	} {
		if _, err := admin.Exec(t.Context(), q.sql, q.args...); err != nil {
			t.Fatalf("seeding: %v\n%s", err, q.sql)
		}
	}
	return o
}

// inRole runs fn in a transaction of conn that does what the store does:
// SET LOCAL ROLE and, unless sub is empty, claims naming sub. The
// transaction is committed if it can be, so that a write that got through
// would stick.
func inRole(t *testing.T, conn *pgx.Conn, role, sub string, fn func(tx pgx.Tx)) {
	t.Helper()
	tx, err := conn.Begin(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	defer tx.Rollback(t.Context())
	if _, err := tx.Exec(t.Context(), "set local role "+role); err != nil {
		t.Fatalf("set local role %s: %v", role, err)
	}
	if sub != "" {
		if _, err := tx.Exec(t.Context(), "select set_config('request.jwt.claims', json_build_object('sub', $1::text)::text, true)", sub); err != nil {
			t.Fatal(err)
		}
	}
	fn(tx)
	if err := tx.Commit(t.Context()); err != nil && !errors.Is(err, pgx.ErrTxCommitRollback) {
		t.Fatal(err)
	}
}

// countRows counts the rows of table the transaction can see.
func countRows(t *testing.T, tx pgx.Tx, table string) (int, error) {
	var n int
	err := tx.QueryRow(t.Context(), "select count(*) from "+table).Scan(&n)
	return n, err
}

func sqlState(err error) string {
	var pgErr *pgconn.PgError
	if errors.As(err, &pgErr) {
		return pgErr.Code
	}
	return ""
}

// rowsFingerprint summarises a user's rows in a table, as the superuser
// sees them, to show they did not change.
func rowsFingerprint(t *testing.T, admin *pgx.Conn, table, pred string) string {
	t.Helper()
	var fp string
	err := admin.QueryRow(t.Context(), fmt.Sprintf(
		`select count(*) || ':' || coalesce(md5(string_agg(r::text, ',' order by r::text)), '') from %s r where %s`, table, pred)).Scan(&fp)
	if err != nil {
		t.Fatal(err)
	}
	return fp
}

// TestCatalogue checks the isolation model in the system catalogues, where
// a later migration that forgets it would show.
func TestCatalogue(t *testing.T) {
	t.Parallel()
	admin := connect(t, newDatabase(t, true).ownerDSN)
	ctx := t.Context()

	rows, err := admin.Query(ctx, `select c.relname, c.relrowsecurity, c.relforcerowsecurity, pg_get_userbyid(c.relowner),
			(select count(*) from pg_policies p where p.schemaname = 'public' and p.tablename = c.relname)
		from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind in ('r', 'p') order by 1`)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	for rows.Next() {
		var name, tableOwner string
		var rls, force bool
		var policies int
		if err := rows.Scan(&name, &rls, &force, &tableOwner, &policies); err != nil {
			t.Fatal(err)
		}
		names = append(names, name)
		if !rls || !force {
			t.Errorf("table %s: row level security enabled %v, forced %v; want both", name, rls, force)
		}
		if policies < 1 {
			t.Errorf("table %s has no policy", name)
		}
		if slices.Contains([]string{appLogin, "polydev_app", "polydev_auth"}, tableOwner) {
			t.Errorf("table %s is owned by %s", name, tableOwner)
		}
	}
	if err := rows.Err(); err != nil {
		t.Fatal(err)
	}
	var want []string
	for _, tb := range appTables {
		want = append(want, tb.name)
	}
	slices.Sort(want)
	if !slices.Equal(names, want) {
		t.Errorf("tables in public: %v; want %v", names, want)
	}

	checks := []struct {
		what, sql string
		want      int
	}{
		{"views in public (they would run as their owner)",
			`select count(*) from pg_class where relnamespace = 'public'::regnamespace and relkind in ('v', 'm')`, 0},
		{"superuser or BYPASSRLS among the store's roles",
			`select count(*) from pg_roles where rolname in ('app', 'polydev_app', 'polydev_auth') and (rolsuper or rolbypassrls)`, 0},
		{"store's roles", `select count(*) from pg_roles where rolname in ('polydev_app', 'polydev_auth') and not rolcanlogin`, 2},
		{"SECURITY DEFINER functions in public and auth",
			`select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace where n.nspname in ('public', 'auth') and p.prosecdef`, 0},
		// The one SECURITY DEFINER function: free_port, owned by a role
		// that cannot log in, with a pinned search path, callable only by
		// polydev_app.
		{"SECURITY DEFINER functions other than polydev_egress.free_port",
			`select count(*) from pg_proc p join pg_namespace n on n.oid = p.pronamespace
			where p.prosecdef and n.nspname not in ('pg_catalog', 'information_schema')
			and p.oid <> 'polydev_egress.free_port(int, int)'::regprocedure`, 0},
		{"free_port owned by polydev_egress, search path pinned",
			`select count(*) from pg_proc p where p.oid = 'polydev_egress.free_port(int, int)'::regprocedure
			and pg_get_userbyid(p.proowner) = 'polydev_egress' and p.proconfig @> array['search_path=pg_catalog, pg_temp']`, 1},
		{"other roles that may call free_port (PUBLIC would show as the login role)",
			`select count(*) from unnest(array['polydev_auth', 'app']) r
			where has_function_privilege(r, 'polydev_egress.free_port(int, int)', 'execute')`, 0},
		{"polydev_app may call free_port",
			`select count(*) where has_function_privilege('polydev_app', 'polydev_egress.free_port(int, int)', 'execute')`, 1},
		{"polydev_egress can log in, bypass RLS or is superuser",
			`select count(*) from pg_roles where rolname = 'polydev_egress' and (rolcanlogin or rolsuper or rolbypassrls)`, 0},
		{"goose's table in public", `select count(*) from pg_class where relname like 'goose%' and relnamespace = 'public'::regnamespace`, 0},
		{"goose's table in polydev_meta", `select count(*) from pg_class where relname = 'goose_db_version' and relnamespace = 'polydev_meta'::regnamespace`, 1},
		{"TRUNCATE, REFERENCES or TRIGGER held by the store's roles",
			`select count(*) from pg_class c, unnest(array['polydev_app', 'polydev_auth', 'app']) r
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
			and has_table_privilege(r, c.oid, 'truncate, references, trigger')`, 0},
		{"privileges of the login role by itself",
			`select count(*) from pg_class c where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
			and has_any_column_privilege('app', c.oid, 'select, insert, update, references')`, 0},
	}
	for _, c := range checks {
		var got int
		if err := admin.QueryRow(ctx, c.sql).Scan(&got); err != nil {
			t.Fatalf("%s: %v", c.what, err)
		}
		if got != c.want {
			t.Errorf("%s: %d; want %d", c.what, got, c.want)
		}
	}

	// polydev_auth reaches exactly users (select), sessions (select,
	// update of last_seen_at) and audit_log (insert).
	var reach []string
	err = admin.QueryRow(ctx, `select coalesce(array_agg(x order by x), '{}') from (
			select c.relname || ' ' || p || coalesce(' ' || a.attname, '') as x
			from pg_class c cross join unnest(array['select', 'insert', 'update', 'delete']) p
			left join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped and p = 'update'
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
			and case when a.attname is null then has_table_privilege('polydev_auth', c.oid, p)
				else has_column_privilege('polydev_auth', c.oid, a.attnum, p) end
		) reach`).Scan(&reach)
	if err != nil {
		t.Fatal(err)
	}
	wantReach := []string{"audit_log insert", "sessions select", "sessions update last_seen_at", "users select"}
	if !slices.Equal(reach, wantReach) {
		t.Errorf("polydev_auth's privileges: %q; want %q", reach, wantReach)
	}

	// polydev_egress reads two columns, nothing more.
	var egressReach []string
	err = admin.QueryRow(ctx, `select coalesce(array_agg(x order by x), '{}') from (
			select c.relname || ' ' || p || ' ' || a.attname as x
			from pg_class c cross join unnest(array['select', 'insert', 'update', 'references']) p
			join pg_attribute a on a.attrelid = c.oid and a.attnum > 0 and not a.attisdropped
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r'
			and has_column_privilege('polydev_egress', c.oid, a.attnum, p)
			union all
			select c.relname || ' ' || p from pg_class c cross join unnest(array['delete', 'truncate', 'trigger']) p
			where c.relnamespace = 'public'::regnamespace and c.relkind = 'r' and has_table_privilege('polydev_egress', c.oid, p)
		) reach`).Scan(&egressReach)
	if err != nil {
		t.Fatal(err)
	}
	if want := []string{"egress_ports select port", "users select number"}; !slices.Equal(egressReach, want) {
		t.Errorf("polydev_egress's privileges: %q; want %q", egressReach, want)
	}
}

// TestRawIsolation reaches past the store: raw SQL as the application's
// login role, switching roles and setting claims the way the store does,
// against rows for two users in every table.
func TestRawIsolation(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, true)
	admin, app := connect(t, d.ownerDSN), connect(t, d.appDSN)
	a, b := seed(t, admin, 10001), seed(t, admin, 10002)
	if _, err := admin.Exec(t.Context(), "insert into audit_log (event) values ('anonymous')"); err != nil {
		t.Fatal(err)
	}
	before := map[string]string{}
	for _, tb := range appTables {
		before[tb.name] = rowsFingerprint(t, admin, tb.name, b.pred(tb.owned))
	}

	t.Run("LoginRoleAlone", func(t *testing.T) {
		for _, tb := range appTables {
			var n int
			err := app.QueryRow(t.Context(), "select count(*) from "+tb.name).Scan(&n)
			if got := sqlState(err); got != "42501" {
				t.Errorf("select from %s as the login role without SET ROLE: %d rows, %v; want insufficient_privilege", tb.name, n, err)
			}
		}
	})

	t.Run("Counts", func(t *testing.T) {
		for _, c := range []struct {
			role, sub string
			want      int
		}{
			{"polydev_app", a.user, 1},
			{"polydev_app", b.user, 1},
			{"polydev_app", "", 0},               // no claims: auth.uid() is NULL
			{"polydev_app", uuid.NewString(), 0}, // claims of nobody
		} {
			inRole(t, app, c.role, c.sub, func(tx pgx.Tx) {
				for _, tb := range appTables {
					if n, err := countRows(t, tx, tb.name); err != nil || n != c.want {
						t.Errorf("%s with claims %q: %d rows of %s, %v; want %d", c.role, c.sub, n, tb.name, err, c.want)
					}
				}
			})
		}
	})

	t.Run("AuthRole", func(t *testing.T) {
		for _, tb := range appTables {
			inRole(t, app, "polydev_auth", "", func(tx pgx.Tx) {
				n, err := countRows(t, tx, tb.name)
				switch tb.name {
				case "users", "sessions": // every user, every unrevoked session
					if err != nil || n != 2 {
						t.Errorf("polydev_auth: %d rows of %s, %v; want 2", n, tb.name, err)
					}
				default:
					if sqlState(err) != "42501" {
						t.Errorf("polydev_auth: %d rows of %s, %v; want insufficient_privilege", n, tb.name, err)
					}
				}
			})
		}
		inRole(t, app, "polydev_auth", "", func(tx pgx.Tx) {
			_, err := tx.Exec(t.Context(), "insert into audit_log (user_id, event) values ($1, 'forged')", a.user)
			if sqlState(err) != "42501" {
				t.Errorf("polydev_auth inserting an event of a user: %v; want a row-level security violation", err)
			}
		})
		inRole(t, app, "polydev_auth", "", func(tx pgx.Tx) {
			if _, err := tx.Exec(t.Context(), "insert into audit_log (event) values ('login_failure')"); err != nil {
				t.Errorf("polydev_auth inserting an event of no user: %v", err)
			}
		})
	})

	t.Run("WritesToAnotherUsersRows", func(t *testing.T) {
		for _, tb := range appTables {
			pred := b.pred(tb.owned)
			if tb.update != "" {
				inRole(t, app, "polydev_app", a.user, func(tx pgx.Tx) {
					tag, err := tx.Exec(t.Context(), fmt.Sprintf("update %s set %s where %s", tb.name, tb.update, pred))
					if err != nil || tag.RowsAffected() != 0 {
						t.Errorf("A updating B's %s: %d rows, %v; want 0 rows", tb.name, tag.RowsAffected(), err)
					}
				})
			}
			inRole(t, app, "polydev_app", a.user, func(tx pgx.Tx) {
				tag, err := tx.Exec(t.Context(), fmt.Sprintf("delete from %s where %s", tb.name, pred))
				switch {
				case tb.canDelete && (err != nil || tag.RowsAffected() != 0):
					t.Errorf("A deleting B's %s: %d rows, %v; want 0 rows", tb.name, tag.RowsAffected(), err)
				case !tb.canDelete && sqlState(err) != "42501":
					t.Errorf("A deleting from %s: %d rows, %v; want insufficient_privilege", tb.name, tag.RowsAffected(), err)
				}
			})
		}
		// Rows A writes must be A's.
		for _, q := range []string{
			fmt.Sprintf("insert into conversations (id, user_id, provider, wrapped_key) values (gen_random_uuid(), '%s', 'openai', 'k')", b.user),
			fmt.Sprintf("insert into messages (id, conversation_id, role, encrypted_content) values (gen_random_uuid(), '%s', 'user', 'x')", b.conv),
			fmt.Sprintf("update conversations set user_id = '%s' where user_id = '%s'", b.user, a.user),
			fmt.Sprintf("insert into audit_log (user_id, event) values ('%s', 'forged')", b.user),
			fmt.Sprintf("insert into egress_ports (port, user_id) values (10999, '%s')", b.user),
		} {
			inRole(t, app, "polydev_app", a.user, func(tx pgx.Tx) {
				if _, err := tx.Exec(t.Context(), q); sqlState(err) != "42501" {
					t.Errorf("as A: %s: %v; want a row-level security violation", q, err)
				}
			})
		}
		for _, tb := range appTables {
			if got := rowsFingerprint(t, admin, tb.name, b.pred(tb.owned)); got != before[tb.name] {
				t.Errorf("B's rows in %s changed: %s; were %s", tb.name, got, before[tb.name])
			}
		}
	})
}

// TestDeleteUserUnderForcedRLS: erasure, run as polydev_app under forced
// row-level security, must still remove every row the user owns and
// unlink their audit events, since PostgreSQL runs foreign-key actions as
// the tables' owner.
func TestDeleteUserUnderForcedRLS(t *testing.T) {
	t.Parallel()
	d := newDatabase(t, true)
	admin := connect(t, d.ownerDSN)
	db := open(t, d.appDSN)
	a, b := seed(t, admin, 10001), seed(t, admin, 10002)
	if err := db.Record(t.Context(), &store.AuditEvent{UserID: a.user, Event: "marker"}); err != nil {
		t.Fatal(err)
	}
	if err := db.DeleteUser(t.Context(), a.user); err != nil {
		t.Fatalf("DeleteUser: %v", err)
	}
	for _, tb := range appTables {
		if got := rowsFingerprint(t, admin, tb.name, a.pred(tb.owned)); got != "0:" {
			t.Errorf("%s after erasure: %s; want no rows", tb.name, got)
		}
		if got := rowsFingerprint(t, admin, tb.name, b.pred(tb.owned)); !strings.HasPrefix(got, "1:") {
			t.Errorf("the other user's %s after erasure: %s; want 1 row", tb.name, got)
		}
	}
	var kept int
	if err := admin.QueryRow(t.Context(),
		"select count(*) from audit_log where user_id is null and event in ('seed', 'marker')").Scan(&kept); err != nil {
		t.Fatal(err)
	}
	if kept != 2 {
		t.Errorf("unlinked audit events after erasure: %d; want 2 (the seed and the marker)", kept)
	}
}
