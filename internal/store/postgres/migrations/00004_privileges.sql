-- Table privileges. Policies decide whose rows a role reaches; privileges
-- decide what it may do to them. Neither role owns anything, so neither can
-- change a policy, disable row-level security or TRUNCATE.

-- +goose Up

-- Nothing for PUBLIC, and nothing for Supabase's API roles, whose default
-- privileges would otherwise give them every new table in public (the
-- policies already shut them out of the rows, but not out of TRUNCATE).
-- +goose StatementBegin
DO $$
DECLARE
	t text;
	r text;
BEGIN
	FOREACH t IN ARRAY ARRAY['users', 'sessions', 'audit_log', 'provider_tokens', 'egress_allocations',
		'conversations', 'messages', 'vm_sessions', 'job_executions'] LOOP
		EXECUTE format('REVOKE ALL ON TABLE public.%I FROM PUBLIC', t);
		FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
			IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
				EXECUTE format('REVOKE ALL ON TABLE public.%I FROM %I', t, r);
			END IF;
		END LOOP;
	END LOOP;
END
$$;
-- +goose StatementEnd

GRANT USAGE ON SCHEMA public TO polydev_app, polydev_auth;

-- polydev_app: the tenant-scoped work of store.Store.
GRANT SELECT, INSERT, DELETE ON users TO polydev_app;
GRANT UPDATE (kdf_params, auth_hash, auth_salt, auth_algo, wrapped_account_key, wrapped_private_key, updated_at)
	ON users TO polydev_app;
GRANT SELECT, INSERT ON sessions TO polydev_app;
GRANT UPDATE (revoked_at) ON sessions TO polydev_app;
GRANT SELECT, INSERT ON audit_log TO polydev_app;
GRANT SELECT, INSERT, UPDATE, DELETE ON provider_tokens TO polydev_app;
GRANT SELECT, INSERT, UPDATE (encrypted_title, updated_at), DELETE ON conversations TO polydev_app;
GRANT SELECT, INSERT ON messages TO polydev_app;
-- Tenant tables that the control plane's coming egress, login-VM and job
-- code writes; their policies already bound them to the user's own rows.
GRANT SELECT, INSERT, UPDATE, DELETE ON egress_allocations, vm_sessions, job_executions TO polydev_app;

-- polydev_auth: the pre-authentication lookups, nothing more.
GRANT SELECT ON users TO polydev_auth;
GRANT SELECT, UPDATE (last_seen_at) ON sessions TO polydev_auth;
GRANT INSERT ON audit_log TO polydev_auth;

-- Record takes audit ids itself (see 00002_tables.sql).
-- +goose StatementBegin
DO $$
BEGIN
	EXECUTE format('GRANT USAGE ON SEQUENCE %s TO polydev_app, polydev_auth',
		pg_get_serial_sequence('public.audit_log', 'id'));
END
$$;
-- +goose StatementEnd

-- Ping checks, as polydev_app, that the schema is up to date.
GRANT USAGE ON SCHEMA polydev_meta TO polydev_app;
GRANT SELECT ON polydev_meta.goose_db_version TO polydev_app;
