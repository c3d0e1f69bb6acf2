-- Row-level security, enabled and forced on every table, so that not even
-- the tables' owner reads across tenants by accident. Policies name the
-- role they are for; a role with no policy on a table sees none of its rows.
--
-- polydev_app sees the rows of the user named by the transaction's claims,
-- auth.uid(), and nothing when there are no claims. polydev_auth, used
-- before anyone is authenticated, may look users up, find and touch
-- unrevoked sessions, and append audit events that belong to no user.
--
-- auth.uid() is written as (SELECT auth.uid()) so that PostgreSQL computes
-- it once per statement rather than once per row.

-- +goose Up
ALTER TABLE users ENABLE ROW LEVEL SECURITY;
ALTER TABLE users FORCE ROW LEVEL SECURITY;
-- WITH CHECK makes registration set the new id as the claims first.
CREATE POLICY users_self ON users FOR ALL TO polydev_app
	USING (id = (SELECT auth.uid()))
	WITH CHECK (id = (SELECT auth.uid()));
-- Prelogin and login find a user by email before there are claims.
CREATE POLICY users_lookup ON users FOR SELECT TO polydev_auth
	USING (true);

ALTER TABLE sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY sessions_owner ON sessions FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));
-- A bearer token is resolved to its session, and its last use recorded,
-- before the user is known. Revoked sessions stay out of reach.
CREATE POLICY sessions_lookup ON sessions FOR SELECT TO polydev_auth
	USING (revoked_at IS NULL);
CREATE POLICY sessions_touch ON sessions FOR UPDATE TO polydev_auth
	USING (revoked_at IS NULL)
	WITH CHECK (revoked_at IS NULL);

-- The audit log is append-only for everyone: no policy allows UPDATE or
-- DELETE, and no role is granted them. Erasure nulls user_id through the
-- foreign key, which PostgreSQL runs as the table's owner.
ALTER TABLE audit_log ENABLE ROW LEVEL SECURITY;
ALTER TABLE audit_log FORCE ROW LEVEL SECURITY;
CREATE POLICY audit_log_owner_read ON audit_log FOR SELECT TO polydev_app
	USING (user_id = (SELECT auth.uid()));
CREATE POLICY audit_log_owner_append ON audit_log FOR INSERT TO polydev_app
	WITH CHECK (user_id = (SELECT auth.uid()));
-- Events of no account: an unknown email's failed login, an erasure.
CREATE POLICY audit_log_anonymous_append ON audit_log FOR INSERT TO polydev_auth
	WITH CHECK (user_id IS NULL);

ALTER TABLE provider_tokens ENABLE ROW LEVEL SECURITY;
ALTER TABLE provider_tokens FORCE ROW LEVEL SECURITY;
CREATE POLICY provider_tokens_owner ON provider_tokens FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));

ALTER TABLE egress_allocations ENABLE ROW LEVEL SECURITY;
ALTER TABLE egress_allocations FORCE ROW LEVEL SECURITY;
CREATE POLICY egress_allocations_owner ON egress_allocations FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));

ALTER TABLE conversations ENABLE ROW LEVEL SECURITY;
ALTER TABLE conversations FORCE ROW LEVEL SECURITY;
CREATE POLICY conversations_owner ON conversations FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));

-- A message has no user_id of its own: it is the user's when its
-- conversation is (the subquery is itself filtered by conversations_owner).
ALTER TABLE messages ENABLE ROW LEVEL SECURITY;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;
CREATE POLICY messages_owner ON messages FOR ALL TO polydev_app
	USING (EXISTS (SELECT 1 FROM conversations c
		WHERE c.id = messages.conversation_id AND c.user_id = (SELECT auth.uid())))
	WITH CHECK (EXISTS (SELECT 1 FROM conversations c
		WHERE c.id = messages.conversation_id AND c.user_id = (SELECT auth.uid())));

ALTER TABLE vm_sessions ENABLE ROW LEVEL SECURITY;
ALTER TABLE vm_sessions FORCE ROW LEVEL SECURITY;
CREATE POLICY vm_sessions_owner ON vm_sessions FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));

ALTER TABLE job_executions ENABLE ROW LEVEL SECURITY;
ALTER TABLE job_executions FORCE ROW LEVEL SECURITY;
CREATE POLICY job_executions_owner ON job_executions FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));
