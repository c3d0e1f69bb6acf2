-- Message status and keyset pagination.
--
-- messages gains status (an answer that broke off is stored as far as it
-- arrived, marked 'incomplete') and seq, the order of insertion: messages
-- are listed by (created_at, seq), so those of one batch keep their order
-- even when they share a time (a transaction's now()). seq never leaves
-- the store; page cursors name a message by id. Existing rows get seq in
-- their old listing order (created_at, id). To number them the owner must
-- see them, so forced row-level security is lifted for the length of this
-- transaction and restored before it commits.
--
-- The indexes match the two listings: a user's conversations by
-- (updated_at, id) descending, a conversation's messages by
-- (created_at, seq). polydev_app's table-wide INSERT and SELECT on
-- messages cover the new columns; an identity column needs no grant on its
-- sequence.

-- +goose Up
ALTER TABLE messages ADD COLUMN status text NOT NULL DEFAULT 'complete'
	CHECK (status IN ('complete', 'incomplete'));

ALTER TABLE messages ADD COLUMN seq bigint;
ALTER TABLE messages NO FORCE ROW LEVEL SECURITY;
UPDATE messages m SET seq = o.n
	FROM (SELECT id, row_number() OVER (ORDER BY created_at, id) AS n FROM messages) o
	WHERE o.id = m.id;
ALTER TABLE messages ALTER COLUMN seq SET NOT NULL;
ALTER TABLE messages ALTER COLUMN seq ADD GENERATED ALWAYS AS IDENTITY;
SELECT setval(pg_get_serial_sequence('public.messages', 'seq'), coalesce(max(seq), 0) + 1, false) FROM messages;
ALTER TABLE messages FORCE ROW LEVEL SECURITY;

DROP INDEX messages_conversation_id;
CREATE INDEX messages_conversation_order ON messages (conversation_id, created_at, seq);

DROP INDEX conversations_user_id;
CREATE INDEX conversations_user_updated ON conversations (user_id, updated_at DESC, id DESC);

-- Roll forward only, like the migrations before it.
