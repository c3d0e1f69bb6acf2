-- +goose Up
-- A streamed answer is stored as an incomplete placeholder when its first
-- chunk arrives and finished when the stream ends (store.FinishMessage), so
-- a server killed mid-stream leaves the prompt and a marked answer. The app
-- role may update only the columns a finished answer fills in; the
-- messages_owner policy (FOR ALL) already limits it to its own rows.
GRANT UPDATE (encrypted_content, tokens_used, model, egress_ip, decodo_port, duration_ms, status) ON messages TO polydev_app;

-- +goose Down
REVOKE UPDATE (encrypted_content, tokens_used, model, egress_ip, decodo_port, duration_ms, status) ON messages FROM polydev_app;
