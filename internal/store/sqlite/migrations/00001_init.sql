-- The schema of internal/store/SCHEMA.md for SQLite.
--
-- Tables are STRICT, so a value of the wrong type is refused instead of
-- being stored under SQLite's type affinity. Ids are canonical lowercase
-- UUID text. Timestamps are TEXT, UTC, fixed width with microseconds
-- ('2006-01-02T15:04:05.000000Z'), so text order is time order; the Go
-- code always supplies them, and the defaults below produce the same
-- shape. Indexes cover every foreign key, so cascades do not scan.

-- +goose Up
CREATE TABLE users (
    id                        TEXT    PRIMARY KEY,
    number                    INTEGER NOT NULL UNIQUE CHECK (number >= 1),
    email                     TEXT    NOT NULL UNIQUE
                                      CHECK (length(email) BETWEEN 3 AND 254 AND email = lower(email)),
    encrypted_master_key_hint TEXT,
    kdf_params                TEXT    NOT NULL,
    auth_hash                 BLOB    NOT NULL,
    auth_salt                 BLOB    NOT NULL,
    auth_algo                 TEXT    NOT NULL,
    wrapped_account_key       TEXT    NOT NULL,
    wrapped_private_key       TEXT    NOT NULL,
    public_key                TEXT    NOT NULL,
    created_at                TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at                TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;

-- The counter behind users.number, SQLite's counterpart of PostgreSQL's
-- identity sequence: one row, bumped in the registering transaction, so
-- numbers are 1, 2, 3… with no gaps from concurrency or failed inserts
-- (those roll back with it), and an erased user's number is never reused.
CREATE TABLE users_number_seq (
    id   INTEGER PRIMARY KEY CHECK (id = 1),
    last INTEGER NOT NULL CHECK (last >= 0)
) STRICT;
INSERT INTO users_number_seq (id, last) VALUES (1, 0);

CREATE TABLE sessions (
    id           TEXT PRIMARY KEY,
    user_id      TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    token_hash   BLOB NOT NULL UNIQUE,
    created_at   TEXT NOT NULL,
    expires_at   TEXT NOT NULL,
    last_seen_at TEXT NOT NULL,
    revoked_at   TEXT,
    client_ip    TEXT NOT NULL DEFAULT '',
    user_agent   TEXT NOT NULL DEFAULT ''
) STRICT;
CREATE INDEX sessions_user_id ON sessions (user_id);

CREATE TABLE audit_log (
    id         INTEGER PRIMARY KEY AUTOINCREMENT,
    user_id    TEXT REFERENCES users (id) ON DELETE SET NULL,
    event      TEXT NOT NULL,
    client_ip  TEXT NOT NULL DEFAULT '',
    detail     TEXT NOT NULL DEFAULT '{}',
    created_at TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
CREATE INDEX audit_log_user_created ON audit_log (user_id, created_at);

CREATE TABLE provider_tokens (
    user_id                 TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider                TEXT    NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    encrypted_refresh_token TEXT    NOT NULL,
    scopes                  TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    expires_at              TEXT,
    decodo_port             INTEGER NOT NULL CHECK (decodo_port >= 1),
    egress_ip               TEXT    NOT NULL DEFAULT '',
    last_rotated_at         TEXT,
    last_used_at            TEXT,
    created_at              TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (user_id, provider)
) STRICT;

CREATE TABLE egress_allocations (
    port         INTEGER PRIMARY KEY CHECK (port >= 1),
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider     TEXT    NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    allocated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    UNIQUE (user_id, provider)
) STRICT;

CREATE TABLE conversations (
    id              TEXT PRIMARY KEY,
    user_id         TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider        TEXT NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    wrapped_key     TEXT NOT NULL,
    encrypted_title TEXT NOT NULL DEFAULT '',
    created_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    updated_at      TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at);

CREATE TABLE messages (
    id                TEXT    PRIMARY KEY,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    encrypted_content TEXT    NOT NULL,
    tokens_used       INTEGER NOT NULL DEFAULT 0,
    model             TEXT    NOT NULL DEFAULT '',
    egress_ip         TEXT    NOT NULL DEFAULT '',
    decodo_port       INTEGER NOT NULL DEFAULT 0,
    duration_ms       INTEGER NOT NULL DEFAULT 0,
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at);

CREATE TABLE vm_sessions (
    id                TEXT PRIMARY KEY,
    user_id           TEXT NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider          TEXT NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    vm_id             TEXT NOT NULL DEFAULT '',
    vm_ip             TEXT NOT NULL DEFAULT '',
    host_id           TEXT NOT NULL DEFAULT '',
    webrtc_offer      TEXT NOT NULL DEFAULT '',
    webrtc_answer     TEXT NOT NULL DEFAULT '',
    status            TEXT NOT NULL
                           CHECK (status IN ('booting', 'ready', 'authenticating', 'completed', 'failed', 'destroyed')),
    token_captured_at TEXT,
    destroyed_at      TEXT,
    created_at        TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
CREATE INDEX vm_sessions_user_id ON vm_sessions (user_id);

CREATE TABLE job_executions (
    id                TEXT    PRIMARY KEY,
    user_id           TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider          TEXT    NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    container_id      TEXT    NOT NULL DEFAULT '',
    host_id           TEXT    NOT NULL DEFAULT '',
    wrapped_key       TEXT    NOT NULL,
    encrypted_command TEXT    NOT NULL,
    exit_code         INTEGER,
    encrypted_stdout  TEXT    NOT NULL DEFAULT '',
    encrypted_stderr  TEXT    NOT NULL DEFAULT '',
    duration_ms       INTEGER NOT NULL DEFAULT 0,
    decodo_port       INTEGER NOT NULL DEFAULT 0,
    egress_ip         TEXT    NOT NULL DEFAULT '',
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
CREATE INDEX job_executions_user_id ON job_executions (user_id);

-- +goose Down
DROP TABLE job_executions;
DROP TABLE vm_sessions;
DROP TABLE messages;
DROP TABLE conversations;
DROP TABLE egress_allocations;
DROP TABLE provider_tokens;
DROP TABLE audit_log;
DROP TABLE sessions;
DROP TABLE users_number_seq;
DROP TABLE users;
