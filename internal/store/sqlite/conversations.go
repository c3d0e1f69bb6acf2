package sqlite

import (
	"context"
	"database/sql"
	"time"

	"polydev/internal/store"
)

// Conversations and their messages. Messages carry no user id of their
// own: every statement on them reaches the owner through their
// conversation.

const conversationColumns = `id, user_id, provider, wrapped_key, encrypted_title, created_at, updated_at`

func scanConversation(row interface{ Scan(...any) error }) (store.Conversation, error) {
	var c store.Conversation
	err := row.Scan(&c.ID, &c.UserID, &c.Provider, &c.WrappedKey, &c.EncryptedTitle, timeDest{&c.CreatedAt}, timeDest{&c.UpdatedAt})
	return c, err
}

// CreateConversation inserts c for the acting user. c.ID is required (the
// client chose it and bound it into ciphertexts); one already taken, by
// anyone, is store.ErrConflict. c.UserID must be `as` or empty; another
// user is store.ErrNotFound. Zero CreatedAt becomes now and zero
// UpdatedAt CreatedAt.
func (db *DB) CreateConversation(ctx context.Context, as string, c *store.Conversation) error {
	const op = "create conversation"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := owner(&c.UserID, as); err != nil {
		return fail(ctx, op, err)
	}
	if err := ownID(&c.ID, false); err != nil {
		return fail(ctx, op, err)
	}
	if c.CreatedAt.IsZero() {
		c.CreatedAt = time.Now()
	}
	if c.UpdatedAt.IsZero() {
		c.UpdatedAt = c.CreatedAt
	}
	if err := checkTimes(c.CreatedAt, c.UpdatedAt); err != nil {
		return fail(ctx, op, err)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `INSERT INTO conversations (`+conversationColumns+`)
			SELECT ?, id, ?, ?, ?, ?, ? FROM users WHERE id = ?`,
			c.ID, c.Provider, c.WrappedKey, c.EncryptedTitle, encodeTime(c.CreatedAt), encodeTime(c.UpdatedAt), as))
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	c.CreatedAt, c.UpdatedAt = utcMicro(c.CreatedAt), utcMicro(c.UpdatedAt)
	return nil
}

// Conversation returns one of the acting user's conversations.
func (db *DB) Conversation(ctx context.Context, as, id string) (*store.Conversation, error) {
	const op = "conversation"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	c, err := scanConversation(db.r.QueryRowContext(ctx,
		`SELECT `+conversationColumns+` FROM conversations WHERE id = ? AND user_id = ?`, id, as))
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return &c, nil
}

// Conversations lists the acting user's conversations, most recently
// updated first (ties: most recently created first).
func (db *DB) Conversations(ctx context.Context, as string) ([]store.Conversation, error) {
	const op = "conversations"
	as, ok := canonicalID(as)
	if !ok {
		return nil, nil
	}
	rows, err := db.r.QueryContext(ctx, `SELECT `+conversationColumns+` FROM conversations
		WHERE user_id = ? ORDER BY updated_at DESC, rowid DESC`, as)
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.Conversation
	for rows.Next() {
		c, err := scanConversation(rows)
		if err != nil {
			return nil, fail(ctx, op, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}

// SetConversationTitle replaces the encrypted title of one of the acting
// user's conversations and bumps its updated_at to now.
func (db *DB) SetConversationTitle(ctx context.Context, as, id, encryptedTitle string) error {
	const op = "set conversation title"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return fail(ctx, op, store.ErrNotFound)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE conversations SET encrypted_title = ?, updated_at = max(updated_at, ?)
			WHERE id = ? AND user_id = ?`, encryptedTitle, encodeTime(time.Now()), id, as))
	})
	return fail(ctx, op, err)
}

// DeleteConversation deletes one of the acting user's conversations; its
// messages cascade.
func (db *DB) DeleteConversation(ctx context.Context, as, id string) error {
	const op = "delete conversation"
	as, ok1 := canonicalID(as)
	id, ok2 := canonicalID(id)
	if !ok1 || !ok2 {
		return fail(ctx, op, store.ErrNotFound)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `DELETE FROM conversations WHERE id = ? AND user_id = ?`, id, as))
	})
	return fail(ctx, op, err)
}

const messageColumns = `id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port,
	duration_ms, created_at`

// AddMessage appends m to one of the acting user's conversations
// (store.ErrNotFound otherwise) and bumps the conversation's updated_at to
// the message's time, never backwards. m.ID is required; a zero CreatedAt
// becomes now. A role outside user/assistant/system/tool is
// store.ErrInvalid.
func (db *DB) AddMessage(ctx context.Context, as string, m *store.Message) error {
	const op = "add message"
	as, ok1 := canonicalID(as)
	conv, ok2 := canonicalID(m.ConversationID)
	if !ok1 || !ok2 {
		return fail(ctx, op, store.ErrNotFound)
	}
	if err := ownID(&m.ID, false); err != nil {
		return fail(ctx, op, err)
	}
	if m.CreatedAt.IsZero() {
		m.CreatedAt = time.Now()
	}
	if err := checkTimes(m.CreatedAt); err != nil {
		return fail(ctx, op, err)
	}
	at := encodeTime(m.CreatedAt)
	err := db.write(ctx, func(tx *sql.Tx) error {
		// The update proves the conversation is the acting user's before
		// anything is inserted.
		err := oneRow(tx.ExecContext(ctx, `UPDATE conversations SET updated_at = max(updated_at, ?)
			WHERE id = ? AND user_id = ?`, at, conv, as))
		if err != nil {
			return err
		}
		_, err = tx.ExecContext(ctx, `INSERT INTO messages (`+messageColumns+`)
			SELECT ?, id, ?, ?, ?, ?, ?, ?, ?, ? FROM conversations WHERE id = ? AND user_id = ?`,
			m.ID, m.Role, m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP, m.EgressPort, m.DurationMS, at, conv, as)
		return err
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	m.ConversationID, m.CreatedAt = conv, utcMicro(m.CreatedAt)
	return nil
}

// Messages lists the messages of one of the acting user's conversations,
// oldest first (ties: in insertion order). A conversation that is not the
// acting user's is store.ErrNotFound, not an empty list.
func (db *DB) Messages(ctx context.Context, as, conversationID string) ([]store.Message, error) {
	const op = "messages"
	as, ok1 := canonicalID(as)
	conv, ok2 := canonicalID(conversationID)
	if !ok1 || !ok2 {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	var out []store.Message
	err := db.read(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM conversations WHERE id = ? AND user_id = ?`, conv, as).
			Scan(&one); err != nil {
			return err
		}
		rows, err := tx.QueryContext(ctx, `SELECT m.id, m.conversation_id, m.role, m.encrypted_content, m.tokens_used,
				m.model, m.egress_ip, m.decodo_port, m.duration_ms, m.created_at
			FROM messages m JOIN conversations c ON c.id = m.conversation_id
			WHERE m.conversation_id = ? AND c.user_id = ?
			ORDER BY m.created_at, m.rowid`, conv, as)
		if err != nil {
			return err
		}
		defer rows.Close()
		for rows.Next() {
			var m store.Message
			if err := rows.Scan(&m.ID, &m.ConversationID, &m.Role, &m.EncryptedContent, &m.TokensUsed, &m.Model,
				&m.EgressIP, &m.EgressPort, &m.DurationMS, timeDest{&m.CreatedAt}); err != nil {
				return err
			}
			out = append(out, m)
		}
		return rows.Err()
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return out, nil
}
