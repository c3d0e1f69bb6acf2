// Package postgres is the production store.Store: PostgreSQL (or Supabase)
// through a pgx connection pool, with tenant isolation enforced by the
// database itself.
//
// # The isolation model, in plain words
//
// Every table in the public schema has row-level security enabled and
// forced: a query only ever sees, changes or deletes the rows that a policy
// lets through, and a role without a policy on a table sees none of its
// rows. The policies are written against three database roles, neither of
// which owns a table, is a superuser or may bypass row-level security:
//
//   - polydev_app does all the work done on a user's behalf. Its policies
//     let a row through only when it belongs to auth.uid(), the user named
//     by the current transaction's claims (for messages: when their
//     conversation does). With no claims, auth.uid() is NULL and nothing
//     is visible.
//   - polydev_auth does the few lookups made before anyone is
//     authenticated: a user by email, a session by its token hash (and
//     recording its last use), and appending audit events that belong to no
//     account. It can do nothing else.
//   - polydev_vmm is the login-VM manager's reconcile, which runs without
//     a signed-in user: it may read the metadata columns (no WebRTC data)
//     of the live vm_sessions rows of the host named by the transaction's
//     polydev.host_id setting, and nothing else. Changes to a session are
//     made as its owner, under polydev_app's policies.
//
// The application logs in as another role that is merely a member of all three
// and has no privileges of its own. Every transaction this package opens
// starts by switching to one of these roles for that transaction only
// (the equivalent of SET LOCAL ROLE) and, for polydev_app, by setting the
// claims to the acting user's id, the way Supabase's PostgREST does
// (request.jwt.claims = {"sub": id}). The claims come from the `as`
// argument of each store method, never from data in the request. A
// statement run outside such a transaction has no claims and no role, and
// reaches nothing. So a forgotten WHERE clause, or a query written for the
// wrong user, returns no rows or "not found" rather than another user's
// data.
//
// Foreign-key actions (erasure deleting a user's rows, and nulling the
// user id of their audit events) are carried out by PostgreSQL as the
// tables' owner and are not subject to the policies, which is what lets a
// user's DeleteUser remove everything they own.
//
// # Operating it
//
// Migrate, run with a DSN of the schema's owner (never the application's),
// creates the roles where they are missing, the auth schema and auth.uid()
// where they are missing (Supabase already has them), the tables, the
// policies and the grants. Migration history lives in
// polydev_meta.goose_db_version, outside public, so every table in public
// is an application table under the policies. The application's login role
// is then created by the operator:
//
//	CREATE ROLE polydev_login LOGIN NOINHERIT PASSWORD '...';
//	GRANT polydev_app, polydev_auth, polydev_vmm TO polydev_login;
//
// NOINHERIT matters: the login role may switch to these roles but must
// not hold their privileges by itself, or a statement outside a
// transaction of this package would run with polydev_auth's reach. Ping
// refuses to report ready when the login role can reach an application
// table directly (a superuser, the owner, an inheriting member).
//
// # Errors
//
// Methods return errors wrapping store.ErrNotFound, store.ErrConflict or
// store.ErrInvalid, prefixed with the operation. They carry the SQLSTATE
// and constraint name for the logs, never SQL text or parameter values.
// A row of another user is reported exactly like a missing row. A foreign
// key violation is reported as store.ErrNotFound: every foreign key here
// points at the acting user (or their conversation), so it means that
// parent does not exist, as far as the caller can see.
package postgres
