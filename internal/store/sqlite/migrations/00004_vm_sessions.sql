-- Login VM sessions: a timestamp for every status, the end of the VM's
-- lifetime, and the two rules the control plane and the login-VM manager
-- lean on (internal/store/vmsessions.go).

-- +goose Up
ALTER TABLE vm_sessions ADD COLUMN booting_at TEXT;
ALTER TABLE vm_sessions ADD COLUMN ready_at TEXT;
ALTER TABLE vm_sessions ADD COLUMN authenticating_at TEXT;
ALTER TABLE vm_sessions ADD COLUMN ended_at TEXT;
ALTER TABLE vm_sessions ADD COLUMN expires_at TEXT;

-- One live login VM per user and provider, enforced by the database so
-- that two concurrent link/start requests cannot both get one.
CREATE UNIQUE INDEX vm_sessions_one_live ON vm_sessions (user_id, provider) WHERE status <> 'destroyed';

-- Reconcile lists a host's live sessions.
CREATE INDEX vm_sessions_host_live ON vm_sessions (host_id) WHERE status <> 'destroyed';

-- +goose Down
DROP INDEX vm_sessions_host_live;
DROP INDEX vm_sessions_one_live;
ALTER TABLE vm_sessions DROP COLUMN expires_at;
ALTER TABLE vm_sessions DROP COLUMN ended_at;
ALTER TABLE vm_sessions DROP COLUMN authenticating_at;
ALTER TABLE vm_sessions DROP COLUMN ready_at;
ALTER TABLE vm_sessions DROP COLUMN booting_at;
