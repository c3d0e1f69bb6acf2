-- Roles and auth.uid(): what the row-level security policies are written
-- against. Everything here is created only where it is missing, so the
-- migration runs unchanged on a plain PostgreSQL and on Supabase, which
-- already has the auth schema and its own auth.uid().

-- +goose Up

-- polydev_app does all tenant-scoped work; polydev_auth does only the
-- lookups made before anyone is authenticated. Roles belong to the whole
-- cluster, so several databases (or two migrations at once) may race to
-- create them: the loser's error is expected and ignored. A role that
-- already exists with SUPERUSER or BYPASSRLS would silently defeat every
-- policy, so the migration refuses to go on.
-- +goose StatementBegin
DO $$
DECLARE
	r text;
BEGIN
	FOREACH r IN ARRAY ARRAY['polydev_app', 'polydev_auth'] LOOP
		IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			BEGIN
				EXECUTE format('CREATE ROLE %I NOLOGIN NOSUPERUSER NOBYPASSRLS', r);
			EXCEPTION WHEN duplicate_object OR unique_violation THEN
				NULL; -- created meanwhile by a migration of another database
			END;
		END IF;
		IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r AND (rolsuper OR rolbypassrls)) THEN
			RAISE EXCEPTION 'role % has SUPERUSER or BYPASSRLS: row-level security would not apply to it', r;
		END IF;
	END LOOP;
END
$$;
-- +goose StatementEnd

-- auth.uid() as Supabase defines it: the "sub" claim of the current
-- transaction's request.jwt.claims (or the older request.jwt.claim.sub),
-- NULL when there is none. An existing function is left alone.
-- +goose StatementBegin
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_namespace WHERE nspname = 'auth') THEN
		CREATE SCHEMA auth;
	END IF;
	IF NOT EXISTS (
		SELECT 1 FROM pg_proc p JOIN pg_namespace n ON n.oid = p.pronamespace
		WHERE n.nspname = 'auth' AND p.proname = 'uid' AND p.pronargs = 0
	) THEN
		CREATE FUNCTION auth.uid() RETURNS uuid
		LANGUAGE sql STABLE
		AS $f$
			SELECT coalesce(
				nullif(current_setting('request.jwt.claim.sub', true), ''),
				(nullif(current_setting('request.jwt.claims', true), '')::jsonb ->> 'sub')
			)::uuid
		$f$;
	END IF;
	-- Policy expressions run with the privileges of the querying role.
	-- Grant only what is missing: on Supabase the auth schema belongs to
	-- another role and may already be usable.
	IF NOT has_schema_privilege('polydev_app', 'auth', 'USAGE') THEN
		GRANT USAGE ON SCHEMA auth TO polydev_app;
	END IF;
	IF NOT has_function_privilege('polydev_app', 'auth.uid()', 'EXECUTE') THEN
		GRANT EXECUTE ON FUNCTION auth.uid() TO polydev_app;
	END IF;
END
$$;
-- +goose StatementEnd

-- Roles and auth.uid() may be shared with other databases and with
-- Supabase itself: this migration is never undone.
