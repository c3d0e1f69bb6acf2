-- Egress ports as docs/egress.md describes them: a port belongs to at most
-- one user at a time (egress_ports, keyed by port), and each linked
-- provider egresses through exactly one port of its user
-- (provider_tokens.decodo_port, which must name a port the user holds).
-- egress_allocations, which tied a port to one (user, provider) and so
-- could not express the user's providers sharing their default port, is
-- replaced; nothing ever wrote it.
--
-- SQLite cannot add a foreign key to an existing table, so provider_tokens
-- is rebuilt with it and its rows copied. Ports already in provider_tokens
-- become the users' holdings; should two users share one (only possible
-- through the raw store before this migration), the migration stops with
-- a uniqueness error rather than pick a winner.

-- +goose Up
DROP TABLE egress_allocations;

CREATE TABLE egress_ports (
    port         INTEGER PRIMARY KEY CHECK (port BETWEEN 1 AND 65535),
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    allocated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    UNIQUE (user_id, port)
) STRICT;

INSERT INTO egress_ports (port, user_id)
    SELECT DISTINCT decodo_port, user_id FROM provider_tokens;

CREATE TABLE provider_tokens_new (
    user_id                 TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider                TEXT    NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    encrypted_refresh_token TEXT    NOT NULL,
    scopes                  TEXT    NOT NULL DEFAULT '[]' CHECK (json_valid(scopes) AND json_type(scopes) = 'array'),
    expires_at              TEXT,
    decodo_port             INTEGER NOT NULL CHECK (decodo_port BETWEEN 1 AND 65535),
    egress_ip               TEXT    NOT NULL DEFAULT '',
    last_rotated_at         TEXT,
    last_used_at            TEXT,
    created_at              TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    PRIMARY KEY (user_id, provider),
    FOREIGN KEY (user_id, decodo_port) REFERENCES egress_ports (user_id, port)
) STRICT;
INSERT INTO provider_tokens_new (user_id, provider, encrypted_refresh_token, scopes, expires_at, decodo_port,
        egress_ip, last_rotated_at, last_used_at, created_at)
    SELECT user_id, provider, encrypted_refresh_token, scopes, expires_at, decodo_port,
        egress_ip, last_rotated_at, last_used_at, created_at FROM provider_tokens;
DROP TABLE provider_tokens;
ALTER TABLE provider_tokens_new RENAME TO provider_tokens;
CREATE INDEX provider_tokens_egress_port ON provider_tokens (user_id, decodo_port);

-- +goose Down
CREATE TABLE provider_tokens_old (
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
INSERT INTO provider_tokens_old SELECT user_id, provider, encrypted_refresh_token, scopes, expires_at, decodo_port,
        egress_ip, last_rotated_at, last_used_at, created_at FROM provider_tokens;
DROP TABLE provider_tokens;
ALTER TABLE provider_tokens_old RENAME TO provider_tokens;
DROP TABLE egress_ports;
CREATE TABLE egress_allocations (
    port         INTEGER PRIMARY KEY CHECK (port >= 1),
    user_id      TEXT    NOT NULL REFERENCES users (id) ON DELETE CASCADE,
    provider     TEXT    NOT NULL CHECK (provider IN ('openai', 'anthropic', 'google')),
    allocated_at TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now')),
    UNIQUE (user_id, provider)
) STRICT;
