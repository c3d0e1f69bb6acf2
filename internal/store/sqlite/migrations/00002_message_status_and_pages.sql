-- Message status and keyset pagination.
--
-- messages gains status (an answer that broke off is stored as far as it
-- arrived, marked 'incomplete') and seq, the order of insertion: messages
-- are listed by (created_at, seq), so those of one batch keep their order
-- even when they share a time. seq is an INTEGER PRIMARY KEY, SQLite's
-- rowid under a name, which VACUUM never renumbers (an implicit rowid it
-- may); AUTOINCREMENT never hands out a number twice. SQLite cannot add
-- such a column in place, so the table is rebuilt; its existing rows get
-- seq in their old listing order (created_at, then rowid). Nothing
-- references messages, so dropping the old table cascades nowhere.
--
-- The indexes match the two listings: a user's conversations by
-- (updated_at, id) descending, a conversation's messages by
-- (created_at, seq).

-- +goose Up
CREATE TABLE messages_new (
    id                TEXT    NOT NULL UNIQUE,
    seq               INTEGER PRIMARY KEY AUTOINCREMENT,
    conversation_id   TEXT    NOT NULL REFERENCES conversations (id) ON DELETE CASCADE,
    role              TEXT    NOT NULL CHECK (role IN ('user', 'assistant', 'system', 'tool')),
    encrypted_content TEXT    NOT NULL,
    tokens_used       INTEGER NOT NULL DEFAULT 0,
    model             TEXT    NOT NULL DEFAULT '',
    egress_ip         TEXT    NOT NULL DEFAULT '',
    decodo_port       INTEGER NOT NULL DEFAULT 0,
    duration_ms       INTEGER NOT NULL DEFAULT 0,
    status            TEXT    NOT NULL DEFAULT 'complete' CHECK (status IN ('complete', 'incomplete')),
    created_at        TEXT    NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%f000Z', 'now'))
) STRICT;
INSERT INTO messages_new (id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port,
                          duration_ms, created_at)
    SELECT id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port, duration_ms,
           created_at
    FROM messages ORDER BY created_at, rowid;
DROP TABLE messages;
ALTER TABLE messages_new RENAME TO messages;
CREATE INDEX messages_conversation_order ON messages (conversation_id, created_at, seq);

DROP INDEX conversations_user_updated;
CREATE INDEX conversations_user_updated_id ON conversations (user_id, updated_at, id);

-- +goose Down
DROP INDEX conversations_user_updated_id;
CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at);

CREATE TABLE messages_old (
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
INSERT INTO messages_old (id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port,
                          duration_ms, created_at)
    SELECT id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port, duration_ms,
           created_at
    FROM messages ORDER BY created_at, seq;
DROP TABLE messages;
ALTER TABLE messages_old RENAME TO messages;
CREATE INDEX messages_conversation_created ON messages (conversation_id, created_at);
