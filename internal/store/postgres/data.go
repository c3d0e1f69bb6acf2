package postgres

import (
	"context"
	"fmt"
	"time"

	"github.com/google/uuid"
	"github.com/jackc/pgx/v5"

	"polydev/internal/store"
)

// This file holds what users keep: provider tokens, conversations and
// messages. Every method runs as polydev_app with the acting user's claims.

// checkOwner accepts a record's owner field when it is empty (the acting
// user is meant) or names the acting user. Writing a row for someone else
// is store.ErrNotFound (store.go: from the acting user's view that user
// does not exist); the policies would refuse it anyway.
func checkOwner(op, owner string, as uuid.UUID) error {
	if owner == "" {
		return nil
	}
	if id, ok := parseID(owner); !ok || id != as {
		return fmt.Errorf("postgres: %s: the record must belong to the acting user: %w", op, store.ErrNotFound)
	}
	return nil
}

// PutProviderToken inserts or replaces the acting user's token for
// t.Provider. A replaced token keeps its CreatedAt. Zero times are stored
// as "none". The port is taken for the user (store.ErrConflict when
// another user holds it) and the one it replaces released if unused
// (egress.go).
func (db *DB) PutProviderToken(ctx context.Context, as string, t *store.ProviderToken) error {
	const op = "put provider token"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	if err := checkOwner(op, t.UserID, user); err != nil {
		return err
	}
	scopes := t.Scopes
	if scopes == nil {
		scopes = []string{}
	}
	var created time.Time
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		if err := lockEgress(ctx, tx); err != nil {
			return err
		}
		old, err := currentPort(ctx, tx, user, t.Provider)
		if err != nil {
			return err
		}
		if err := holdPort(ctx, tx, user, t.EgressPort); err != nil {
			return err
		}
		err = tx.QueryRow(ctx, `insert into provider_tokens (user_id, provider, encrypted_refresh_token, scopes,
				expires_at, decodo_port, egress_ip, last_rotated_at, last_used_at)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9)
			on conflict (user_id, provider) do update set
				encrypted_refresh_token = excluded.encrypted_refresh_token, scopes = excluded.scopes,
				expires_at = excluded.expires_at, decodo_port = excluded.decodo_port, egress_ip = excluded.egress_ip,
				last_rotated_at = excluded.last_rotated_at, last_used_at = excluded.last_used_at
			returning created_at`,
			user, t.Provider, t.EncryptedRefreshToken, scopes, nullTime(t.ExpiresAt), t.EgressPort, t.EgressIP,
			nullTime(t.LastRotatedAt), nullTime(t.LastUsedAt)).Scan(&created)
		if err != nil {
			return err
		}
		if old != 0 && old != t.EgressPort {
			return releasePort(ctx, tx, user, old)
		}
		return nil
	})
	if err != nil {
		return wrap(op, err)
	}
	t.UserID, t.CreatedAt = user.String(), created.UTC()
	t.ExpiresAt, t.LastRotatedAt, t.LastUsedAt = stored(t.ExpiresAt), stored(t.LastRotatedAt), stored(t.LastUsedAt)
	return nil
}

// ProviderTokens lists the acting user's tokens, by provider.
func (db *DB) ProviderTokens(ctx context.Context, as string) ([]store.ProviderToken, error) {
	user, ok := parseID(as)
	if !ok {
		return nil, nil
	}
	var tokens []store.ProviderToken
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, `select user_id, provider, encrypted_refresh_token, scopes, expires_at,
				decodo_port, egress_ip, last_rotated_at, last_used_at, created_at
			from provider_tokens where user_id = $1 order by provider`, user)
		if err != nil {
			return err
		}
		tokens, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.ProviderToken, error) {
			var t store.ProviderToken
			var expires, rotated, used *time.Time
			err := row.Scan(&t.UserID, &t.Provider, &t.EncryptedRefreshToken, &t.Scopes, &expires,
				&t.EgressPort, &t.EgressIP, &rotated, &used, &t.CreatedAt)
			t.ExpiresAt, t.LastRotatedAt, t.LastUsedAt = orZero(expires), orZero(rotated), orZero(used)
			t.CreatedAt = t.CreatedAt.UTC()
			return t, err
		})
		return err
	})
	return tokens, wrap("provider tokens", err)
}

// DeleteProviderToken removes the acting user's token for provider.
func (db *DB) DeleteProviderToken(ctx context.Context, as, provider string) error {
	const op = "delete provider token"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		var port int
		err := tx.QueryRow(ctx, "delete from provider_tokens where user_id = $1 and provider = $2 returning decodo_port",
			user, provider).Scan(&port)
		if err != nil {
			return err // pgx.ErrNoRows: store.ErrNotFound
		}
		return releasePort(ctx, tx, user, port)
	}))
}

const conversationColumns = "id, user_id, provider, wrapped_key, encrypted_title, created_at, updated_at"

func scanConversation(row pgx.Row) (store.Conversation, error) {
	var c store.Conversation
	err := row.Scan(&c.ID, &c.UserID, &c.Provider, &c.WrappedKey, &c.EncryptedTitle, &c.CreatedAt, &c.UpdatedAt)
	c.CreatedAt, c.UpdatedAt = c.CreatedAt.UTC(), c.UpdatedAt.UTC()
	return c, err
}

// CreateConversation inserts c for the acting user. c.ID is the client's
// and must be a UUID; an id already in use, by anyone, is
// store.ErrConflict.
func (db *DB) CreateConversation(ctx context.Context, as string, c *store.Conversation) error {
	const op = "create conversation"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	if err := checkOwner(op, c.UserID, user); err != nil {
		return err
	}
	id, ok := parseID(c.ID)
	if !ok {
		return fmt.Errorf("postgres: %s: conversation id is not a UUID: %w", op, store.ErrInvalid)
	}
	var created, updated time.Time
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		return tx.QueryRow(ctx, `insert into conversations (id, user_id, provider, wrapped_key, encrypted_title)
			values ($1, $2, $3, $4, $5) returning created_at, updated_at`,
			id, user, c.Provider, c.WrappedKey, c.EncryptedTitle).Scan(&created, &updated)
	})
	if err != nil {
		return wrap(op, err)
	}
	c.ID, c.UserID, c.CreatedAt, c.UpdatedAt = id.String(), user.String(), created.UTC(), updated.UTC()
	return nil
}

// Conversation returns one of the acting user's conversations.
func (db *DB) Conversation(ctx context.Context, as, id string) (*store.Conversation, error) {
	const op = "conversation"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return nil, wrap(op, store.ErrNotFound)
	}
	var c store.Conversation
	err := db.asUser(ctx, user, func(tx pgx.Tx) (err error) {
		c, err = scanConversation(tx.QueryRow(ctx, "select "+conversationColumns+" from conversations where id = $1", cid))
		return err
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return &c, nil
}

// Conversations lists the acting user's conversations, most recently
// updated first.
func (db *DB) Conversations(ctx context.Context, as string) ([]store.Conversation, error) {
	user, ok := parseID(as)
	if !ok {
		return nil, nil
	}
	var list []store.Conversation
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		rows, err := tx.Query(ctx, "select "+conversationColumns+` from conversations
			where user_id = $1 order by updated_at desc, created_at desc, id`, user)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Conversation, error) {
			return scanConversation(row)
		})
		return err
	})
	return list, wrap("conversations", err)
}

// SetConversationTitle replaces the title of one of the acting user's
// conversations and bumps its UpdatedAt.
func (db *DB) SetConversationTitle(ctx context.Context, as, id, encryptedTitle string) error {
	const op = "set conversation title"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		return mustAffect(tx.Exec(ctx, "update conversations set encrypted_title = $2, updated_at = now() where id = $1",
			cid, encryptedTitle))
	}))
}

// DeleteConversation deletes one of the acting user's conversations and,
// through the foreign key, its messages.
func (db *DB) DeleteConversation(ctx context.Context, as, id string) error {
	const op = "delete conversation"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(id)
	if !ok1 || !ok2 {
		return wrap(op, store.ErrNotFound)
	}
	return wrap(op, db.asUser(ctx, user, func(tx pgx.Tx) error {
		return mustAffect(tx.Exec(ctx, "delete from conversations where id = $1", cid))
	}))
}

// AddMessage appends m to one of the acting user's conversations. The
// conversation's UpdatedAt is bumped first: if no row is updated, the
// conversation is missing or someone else's, store.ErrNotFound, before the
// message policy would turn the insert into a privilege error. m.ID is
// the client's and must be a UUID.
func (db *DB) AddMessage(ctx context.Context, as string, m *store.Message) error {
	const op = "add message"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(m.ConversationID)
	if !ok1 || !ok2 {
		return wrap(op, store.ErrNotFound)
	}
	id, ok := parseID(m.ID)
	if !ok {
		return fmt.Errorf("postgres: %s: message id is not a UUID: %w", op, store.ErrInvalid)
	}
	var created time.Time
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		if err := mustAffect(tx.Exec(ctx, "update conversations set updated_at = now() where id = $1", cid)); err != nil {
			return err
		}
		return tx.QueryRow(ctx, `insert into messages (id, conversation_id, role, encrypted_content, tokens_used,
				model, egress_ip, decodo_port, duration_ms)
			values ($1, $2, $3, $4, $5, $6, $7, $8, $9) returning created_at`,
			id, cid, m.Role, m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP, m.EgressPort, m.DurationMS,
		).Scan(&created)
	})
	if err != nil {
		return wrap(op, err)
	}
	m.ID, m.ConversationID, m.CreatedAt = id.String(), cid.String(), created.UTC()
	return nil
}

// Messages lists the messages of one of the acting user's conversations,
// oldest first. A missing or foreign conversation is store.ErrNotFound,
// not an empty list.
func (db *DB) Messages(ctx context.Context, as, conversationID string) ([]store.Message, error) {
	const op = "messages"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(conversationID)
	if !ok1 || !ok2 {
		return nil, wrap(op, store.ErrNotFound)
	}
	var list []store.Message
	err := db.asUser(ctx, user, func(tx pgx.Tx) error {
		var visible bool
		if err := tx.QueryRow(ctx, "select exists (select 1 from conversations where id = $1)", cid).Scan(&visible); err != nil {
			return err
		}
		if !visible {
			return store.ErrNotFound
		}
		rows, err := tx.Query(ctx, `select id, conversation_id, role, encrypted_content, tokens_used, model,
				egress_ip, decodo_port, duration_ms, created_at
			from messages where conversation_id = $1 order by created_at, id`, cid)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Message, error) {
			var m store.Message
			err := row.Scan(&m.ID, &m.ConversationID, &m.Role, &m.EncryptedContent, &m.TokensUsed, &m.Model,
				&m.EgressIP, &m.EgressPort, &m.DurationMS, &m.CreatedAt)
			m.CreatedAt = m.CreatedAt.UTC()
			return m, err
		})
		return err
	})
	return list, wrap(op, err)
}

// stored is a time as the database keeps it: UTC, to the microsecond.
func stored(t time.Time) time.Time {
	if t.IsZero() {
		return t
	}
	return micro(t)
}

// orZero is a nullable time read back: the zero time for NULL.
func orZero(t *time.Time) time.Time {
	if t == nil {
		return time.Time{}
	}
	return t.UTC()
}
