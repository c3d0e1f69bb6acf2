-- Egress ports as docs/egress.md describes them: a port belongs to at most
-- one user at a time (egress_ports, keyed by port), and each linked
-- provider egresses through exactly one port of its user
-- (provider_tokens.decodo_port, which must name a port the user holds).
-- egress_allocations, which tied a port to one (user, provider) and so
-- could not express the user's providers sharing their default port, is
-- replaced; nothing ever wrote it.
--
-- Choosing a free port means looking across users: which ports anyone
-- holds, and which user numbers exist (their default ports are reserved).
-- polydev_app sees only the acting user's rows, and must keep it that way.
-- So one SECURITY DEFINER function, polydev_egress.free_port, answers that
-- single question with a single port number. It runs as its owner, a new
-- NOLOGIN role polydev_egress that can do nothing else: its policies and
-- column grants let it read egress_ports.port and users.number of every
-- row, and no other column or table. Row-level security stays forced on
-- every table; polydev_app gains EXECUTE on that one function.

-- +goose Up

-- The role, created where missing and refused if it could bypass the
-- policies, as 00001 does for the others.
-- +goose StatementBegin
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'polydev_egress') THEN
		BEGIN
			CREATE ROLE polydev_egress NOLOGIN NOSUPERUSER NOBYPASSRLS;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN
			NULL; -- created meanwhile by a migration of another database
		END;
	END IF;
	IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'polydev_egress' AND (rolsuper OR rolbypassrls OR rolcanlogin)) THEN
		RAISE EXCEPTION 'role polydev_egress has SUPERUSER, BYPASSRLS or LOGIN: it must be able to do nothing but own free_port';
	END IF;
	-- Handing the function to polydev_egress below needs membership (a
	-- superuser has it implicitly; a CREATEROLE owner grants it itself).
	IF NOT pg_has_role(current_user, 'polydev_egress', 'MEMBER') THEN
		EXECUTE format('GRANT polydev_egress TO %I', current_user);
	END IF;
END
$$;
-- +goose StatementEnd

DROP TABLE egress_allocations;

CREATE TABLE egress_ports (
	port int PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
	user_id uuid NOT NULL REFERENCES users ON DELETE CASCADE,
	allocated_at timestamptz NOT NULL DEFAULT now(),
	UNIQUE (user_id, port)
);

-- Ports already in provider_tokens become their users' holdings; should
-- two users share one, the primary key stops the migration rather than
-- pick a winner.
INSERT INTO egress_ports (port, user_id) SELECT DISTINCT decodo_port, user_id FROM provider_tokens;
ALTER TABLE provider_tokens ADD CONSTRAINT provider_tokens_egress_port_fkey
	FOREIGN KEY (user_id, decodo_port) REFERENCES egress_ports (user_id, port);
CREATE INDEX provider_tokens_egress_port ON provider_tokens (user_id, decodo_port);

ALTER TABLE egress_ports ENABLE ROW LEVEL SECURITY;
ALTER TABLE egress_ports FORCE ROW LEVEL SECURITY;
CREATE POLICY egress_ports_owner ON egress_ports FOR ALL TO polydev_app
	USING (user_id = (SELECT auth.uid()))
	WITH CHECK (user_id = (SELECT auth.uid()));
-- free_port's owner reads which ports are held and which user numbers
-- exist; its column grants below keep it to those two columns.
CREATE POLICY egress_ports_taken ON egress_ports FOR SELECT TO polydev_egress
	USING (true);
CREATE POLICY users_numbers ON users FOR SELECT TO polydev_egress
	USING (true);

-- +goose StatementBegin
DO $$
DECLARE
	r text;
BEGIN
	REVOKE ALL ON TABLE public.egress_ports FROM PUBLIC;
	FOREACH r IN ARRAY ARRAY['anon', 'authenticated', 'service_role'] LOOP
		IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = r) THEN
			EXECUTE format('REVOKE ALL ON TABLE public.egress_ports FROM %I', r);
		END IF;
	END LOOP;
END
$$;
-- +goose StatementEnd
GRANT SELECT, INSERT, DELETE ON egress_ports TO polydev_app;
GRANT USAGE ON SCHEMA public TO polydev_egress;
GRANT SELECT (port) ON egress_ports TO polydev_egress;
GRANT SELECT (number) ON users TO polydev_egress;

-- The function lives in a schema of its own, outside public (which
-- Supabase exposes through its API) and outside auth.
CREATE SCHEMA polydev_egress;
REVOKE ALL ON SCHEMA polydev_egress FROM PUBLIC;

-- free_port returns the highest port of [base, base + size) that nobody
-- holds and that is not the default port (base + number - 1) of an
-- existing user, or NULL when there is none. It reads nothing else and
-- returns nothing else. The search path is pinned so that no object
-- planted elsewhere can stand in for the tables.
-- +goose StatementBegin
CREATE FUNCTION polydev_egress.free_port(base int, size int) RETURNS int
LANGUAGE plpgsql STABLE SECURITY DEFINER
SET search_path = pg_catalog, pg_temp
AS $f$
BEGIN
	IF base IS NULL OR size IS NULL OR base < 1 OR size < 1 OR base::bigint + size - 1 > 65535 THEN
		RAISE EXCEPTION 'egress port range out of bounds' USING ERRCODE = '22023';
	END IF;
	RETURN (
		SELECT p FROM generate_series(base + size - 1, base, -1) AS p
		WHERE NOT EXISTS (SELECT 1 FROM public.egress_ports e WHERE e.port = p)
		AND NOT EXISTS (SELECT 1 FROM public.users u WHERE u.number = p - base + 1)
		ORDER BY p DESC
		LIMIT 1
	);
END
$f$;
-- +goose StatementEnd

-- Ownership moves to polydev_egress, which needs CREATE on the schema for
-- that moment only.
GRANT CREATE ON SCHEMA polydev_egress TO polydev_egress;
ALTER FUNCTION polydev_egress.free_port(int, int) OWNER TO polydev_egress;
REVOKE CREATE ON SCHEMA polydev_egress FROM polydev_egress;
REVOKE ALL ON FUNCTION polydev_egress.free_port(int, int) FROM PUBLIC;
GRANT USAGE ON SCHEMA polydev_egress TO polydev_app;
GRANT EXECUTE ON FUNCTION polydev_egress.free_port(int, int) TO polydev_app;

-- Roll forward only, like the migrations before it.
