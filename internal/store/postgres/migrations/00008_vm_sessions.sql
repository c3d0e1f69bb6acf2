-- Login VM sessions: a timestamp for every status, the end of the VM's
-- lifetime, one live session per user and provider, and polydev_vmm, the
-- role through which a host's login-VM manager finds the sessions it runs
-- without anyone signed in (internal/store/vmsessions.go).

-- +goose Up
ALTER TABLE vm_sessions
	ADD COLUMN booting_at timestamptz,
	ADD COLUMN ready_at timestamptz,
	ADD COLUMN authenticating_at timestamptz,
	ADD COLUMN ended_at timestamptz,
	ADD COLUMN expires_at timestamptz;

-- Two concurrent link/start requests cannot both get a VM.
CREATE UNIQUE INDEX vm_sessions_one_live ON vm_sessions (user_id, provider) WHERE status <> 'destroyed';
CREATE INDEX vm_sessions_host_live ON vm_sessions (host_id) WHERE status <> 'destroyed';

-- polydev_vmm: reconcile, at start-up and on a timer, compares what runs on
-- a host with the sessions the store believes are live there. No user is
-- signed in then, so polydev_app (which sees only auth.uid()'s rows) cannot
-- do it. Rather than a SECURITY DEFINER function (which would run as the
-- owner, past every policy) or a wider polydev_auth, the manager gets a
-- role of its own that reaches one thing: the metadata columns of the live
-- sessions of the host named by the transaction's polydev.host_id setting.
-- It cannot write; changes to a session are made as its owner, under
-- polydev_app's policies. Row-level security stays forced.
-- +goose StatementBegin
DO $$
BEGIN
	IF NOT EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'polydev_vmm') THEN
		BEGIN
			CREATE ROLE polydev_vmm NOLOGIN NOSUPERUSER NOBYPASSRLS;
		EXCEPTION WHEN duplicate_object OR unique_violation THEN
			NULL; -- created meanwhile by a migration of another database
		END;
	END IF;
	IF EXISTS (SELECT 1 FROM pg_roles WHERE rolname = 'polydev_vmm' AND (rolsuper OR rolbypassrls)) THEN
		RAISE EXCEPTION 'role polydev_vmm has SUPERUSER or BYPASSRLS: row-level security would not apply to it';
	END IF;
END
$$;
-- +goose StatementEnd

GRANT USAGE ON SCHEMA public TO polydev_vmm;
GRANT SELECT (id, user_id, provider, vm_id, vm_ip, host_id, status, created_at, booting_at, ready_at,
	authenticating_at, ended_at, token_captured_at, destroyed_at, expires_at) ON vm_sessions TO polydev_vmm;
CREATE POLICY vm_sessions_host_live ON vm_sessions FOR SELECT TO polydev_vmm
	USING (status <> 'destroyed' AND host_id <> '' AND host_id = current_setting('polydev.host_id', true));

-- Roll forward only.
