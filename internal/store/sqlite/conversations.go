package sqlite

import (
	"context"
	"database/sql"
	"errors"
	"fmt"
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

// Conversations lists one page of the acting user's conversations, most
// recently updated first (ties: by id, descending), and the cursor of the
// next page. An `as` that is not a UUID has no conversations.
func (db *DB) Conversations(ctx context.Context, as string, page store.Page) ([]store.Conversation, string, error) {
	const op = "conversations"
	limit, err := pageLimit(page)
	if err != nil {
		return nil, "", fail(ctx, op, err)
	}
	var after cursor
	if page.Cursor != "" {
		if after, err = decodeCursor(conversationCursor, page.Cursor); err != nil {
			return nil, "", fail(ctx, op, err)
		}
	}
	as, ok := canonicalID(as)
	if !ok {
		return nil, "", nil
	}
	q, args := `SELECT `+conversationColumns+` FROM conversations WHERE user_id = ?`, []any{as}
	if page.Cursor != "" {
		q += ` AND (updated_at, id) < (?, ?)`
		args = append(args, encodeTime(after.at), after.id)
	}
	// One more row than asked tells whether there is a next page.
	q += ` ORDER BY updated_at DESC, id DESC LIMIT ?`
	args = append(args, limit+1)
	rows, err := db.r.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", fail(ctx, op, err)
	}
	defer rows.Close()
	var out []store.Conversation
	for rows.Next() {
		c, err := scanConversation(rows)
		if err != nil {
			return nil, "", fail(ctx, op, err)
		}
		out = append(out, c)
	}
	if err := rows.Err(); err != nil {
		return nil, "", fail(ctx, op, err)
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(conversationCursor, last.UpdatedAt, last.ID)
	}
	return out, next, nil
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
	duration_ms, status, created_at`

// AddMessages appends ms, in order and all or none, to one of the acting
// user's conversations (store.ErrNotFound otherwise), and bumps the
// conversation's updated_at to now or to the newest message's time,
// whichever is later, never backwards. Every message must name the same
// conversation and carry its own UUID (store.ErrInvalid otherwise, as is
// an empty batch); a zero CreatedAt becomes now, an empty Status
// store.MessageComplete. A role or status outside the schema's lists is
// store.ErrInvalid. On success the records hold what was stored.
//
// Messages are ordered by created_at and then by seq, the order of
// insertion, which the table assigns (AUTOINCREMENT, so never reused): a
// batch keeps its order even when its messages share a time.
func (db *DB) AddMessages(ctx context.Context, as string, ms ...*store.Message) error {
	const op = "add messages"
	as, ok := canonicalID(as)
	if !ok {
		return fail(ctx, op, store.ErrNotFound)
	}
	conv, err := batchConversation(ms)
	if err != nil {
		return fail(ctx, op, err)
	}
	now := time.Now()
	latest := now
	type row struct{ id, status, at string }
	stored := make([]row, len(ms))
	for i, m := range ms {
		id := m.ID
		if err := ownID(&id, false); err != nil {
			return fail(ctx, op, err)
		}
		at := m.CreatedAt
		if at.IsZero() {
			at = now
		}
		if err := checkTimes(at); err != nil {
			return fail(ctx, op, err)
		}
		if at.After(latest) {
			latest = at
		}
		status := m.Status
		if status == "" {
			status = store.MessageComplete
		}
		stored[i] = row{id, status, encodeTime(at)}
	}
	err = db.write(ctx, func(tx *sql.Tx) error {
		// The update proves the conversation is the acting user's before
		// anything is inserted.
		err := oneRow(tx.ExecContext(ctx, `UPDATE conversations SET updated_at = max(updated_at, ?)
			WHERE id = ? AND user_id = ?`, encodeTime(latest), conv, as))
		if err != nil {
			return err
		}
		stmt, err := tx.PrepareContext(ctx, `INSERT INTO messages (`+messageColumns+`)
			VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`)
		if err != nil {
			return err
		}
		defer stmt.Close()
		for i, m := range ms {
			r := stored[i]
			if _, err := stmt.ExecContext(ctx, r.id, conv, m.Role, m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP,
				m.EgressPort, m.DurationMS, r.status, r.at); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	for i, m := range ms {
		m.ID, m.ConversationID, m.Status = stored[i].id, conv, stored[i].status
		if m.CreatedAt.IsZero() {
			m.CreatedAt = now
		}
		m.CreatedAt = utcMicro(m.CreatedAt)
	}
	return nil
}

// batchConversation returns the conversation every message of a batch
// names, in canonical form. An empty batch, a nil message or messages of
// different conversations are store.ErrInvalid; a first conversation id
// that is not a UUID names no conversation: store.ErrNotFound.
func batchConversation(ms []*store.Message) (string, error) {
	if len(ms) == 0 {
		return "", fmt.Errorf("no messages: %w", store.ErrInvalid)
	}
	for _, m := range ms {
		if m == nil {
			return "", fmt.Errorf("nil message: %w", store.ErrInvalid)
		}
	}
	conv, ok := canonicalID(ms[0].ConversationID)
	if !ok {
		return "", store.ErrNotFound
	}
	for _, m := range ms[1:] {
		if c, ok := canonicalID(m.ConversationID); !ok || c != conv {
			return "", fmt.Errorf("messages of more than one conversation: %w", store.ErrInvalid)
		}
	}
	return conv, nil
}

// Messages lists one page of the messages of one of the acting user's
// conversations, oldest first (ties: in insertion order), and the cursor
// of the next page. A conversation that is not the acting user's is
// store.ErrNotFound, not an empty list. The cursor names the last message
// of the previous page; one that names no message of this conversation is
// store.ErrInvalid.
func (db *DB) Messages(ctx context.Context, as, conversationID string, page store.Page) ([]store.Message, string, error) {
	const op = "messages"
	limit, err := pageLimit(page)
	if err != nil {
		return nil, "", fail(ctx, op, err)
	}
	var after cursor
	if page.Cursor != "" {
		if after, err = decodeCursor(messageCursor, page.Cursor); err != nil {
			return nil, "", fail(ctx, op, err)
		}
	}
	as, ok1 := canonicalID(as)
	conv, ok2 := canonicalID(conversationID)
	if !ok1 || !ok2 {
		return nil, "", fail(ctx, op, store.ErrNotFound)
	}
	var out []store.Message
	var next string
	err = db.read(ctx, func(tx *sql.Tx) error {
		var one int
		if err := tx.QueryRowContext(ctx, `SELECT 1 FROM conversations WHERE id = ? AND user_id = ?`, conv, as).
			Scan(&one); err != nil {
			return err
		}
		var err error
		out, next, err = messagePage(ctx, tx, as, conv, page.Cursor != "", after, limit)
		return err
	})
	if err != nil {
		return nil, "", fail(ctx, op, err)
	}
	return out, next, nil
}

// messagePage reads one page of a conversation's messages after the
// cursor position (when paged) in tx, and the next page's cursor.
func messagePage(ctx context.Context, tx *sql.Tx, as, conv string, paged bool, after cursor, limit int) ([]store.Message, string, error) {
	q := `SELECT m.id, m.conversation_id, m.role, m.encrypted_content, m.tokens_used, m.model, m.egress_ip,
			m.decodo_port, m.duration_ms, m.status, m.created_at
		FROM messages m JOIN conversations c ON c.id = m.conversation_id
		WHERE m.conversation_id = ? AND c.user_id = ?`
	args := []any{conv, as}
	if paged {
		// The position is the cursor message's (created_at, seq); seq
		// stays inside the store.
		var at time.Time
		var seq int64
		err := tx.QueryRowContext(ctx, `SELECT created_at, seq FROM messages WHERE id = ? AND conversation_id = ?`,
			after.id, conv).Scan(timeDest{&at}, &seq)
		if errors.Is(err, sql.ErrNoRows) || err == nil && !at.Equal(after.at) {
			return nil, "", errBadCursor
		}
		if err != nil {
			return nil, "", err
		}
		q += ` AND (m.created_at, m.seq) > (?, ?)`
		args = append(args, encodeTime(at), seq)
	}
	q += ` ORDER BY m.created_at, m.seq LIMIT ?`
	args = append(args, limit+1)
	rows, err := tx.QueryContext(ctx, q, args...)
	if err != nil {
		return nil, "", err
	}
	defer rows.Close()
	var out []store.Message
	for rows.Next() {
		var m store.Message
		if err := rows.Scan(&m.ID, &m.ConversationID, &m.Role, &m.EncryptedContent, &m.TokensUsed, &m.Model,
			&m.EgressIP, &m.EgressPort, &m.DurationMS, &m.Status, timeDest{&m.CreatedAt}); err != nil {
			return nil, "", err
		}
		out = append(out, m)
	}
	if err := rows.Err(); err != nil {
		return nil, "", err
	}
	var next string
	if len(out) > limit {
		out = out[:limit]
		last := out[limit-1]
		next = encodeCursor(messageCursor, last.CreatedAt, last.ID)
	}
	return out, next, nil
}

// ChatTurn implements store.Conversations: three reads in one read
// transaction (one snapshot).
func (db *DB) ChatTurn(ctx context.Context, as, conversationID string) (*store.ChatTurn, error) {
	const op = "chat turn"
	as, ok1 := canonicalID(as)
	conv, ok2 := canonicalID(conversationID)
	if !ok1 || !ok2 {
		return nil, fail(ctx, op, store.ErrNotFound)
	}
	turn := &store.ChatTurn{}
	err := db.read(ctx, func(tx *sql.Tx) error {
		c, err := scanConversation(tx.QueryRowContext(ctx,
			`SELECT `+conversationColumns+` FROM conversations WHERE id = ? AND user_id = ?`, conv, as))
		if err != nil {
			return err
		}
		turn.Conversation = c
		t, err := scanToken(tx.QueryRowContext(ctx, `SELECT `+tokenColumns+` FROM provider_tokens
			WHERE user_id = ? AND provider = ?`, as, c.Provider))
		switch {
		case errors.Is(err, sql.ErrNoRows):
		case err != nil:
			return err
		default:
			turn.Token = t
		}
		turn.Messages, turn.Next, err = messagePage(ctx, tx, as, conv, false, cursor{}, store.MaxPageLimit)
		return err
	})
	if err != nil {
		return nil, fail(ctx, op, err)
	}
	return turn, nil
}

// Pages. A cursor is the sort key of the last row of the previous page,
// opaque to callers: base64url (no padding) of a kind byte, the row's time
// as big-endian Unix microseconds and its UUID's 16 bytes. It holds nothing
// the caller could not read from that row, and is only ever compared
// against the acting user's own rows, so a cursor made for another user
// reveals nothing of theirs. PostgreSQL's backend uses the same format.

// Pages: the cursor format is store's (page.go); this backend resolves a
// message cursor's id to its insertion order.

type cursor struct {
	at time.Time
	id string
}

func pageLimit(p store.Page) (int, error) { return store.PageLimit(p) }

func encodeCursor(kind byte, at time.Time, id string) string { return store.EncodeCursor(kind, at, id) }

func decodeCursor(kind byte, s string) (cursor, error) {
	c, err := store.DecodeCursor(kind, s)
	if err != nil {
		return cursor{}, err
	}
	return cursor{at: c.At, id: c.ID.String()}, nil
}

const (
	conversationCursor = store.ConversationCursor
	messageCursor      = store.MessageCursor
)

var errBadCursor = store.ErrBadCursor

// FinishMessage implements store.Conversations.
func (db *DB) FinishMessage(ctx context.Context, as string, m *store.Message) error {
	const op = "finish message"
	as, ok1 := canonicalID(as)
	conv, ok2 := canonicalID(m.ConversationID)
	id, ok3 := canonicalID(m.ID)
	if !ok1 || !ok2 || !ok3 {
		return fail(ctx, op, store.ErrNotFound)
	}
	status := m.Status
	if status == "" {
		status = store.MessageComplete
	}
	if status != store.MessageComplete && status != store.MessageIncomplete {
		return fail(ctx, op, store.ErrInvalid)
	}
	err := db.write(ctx, func(tx *sql.Tx) error {
		return oneRow(tx.ExecContext(ctx, `UPDATE messages SET encrypted_content = ?, tokens_used = ?, model = ?,
				egress_ip = ?, decodo_port = ?, duration_ms = ?, status = ?
			WHERE id = ? AND conversation_id = ? AND role = 'assistant' AND status = 'incomplete'
				AND conversation_id IN (SELECT id FROM conversations WHERE user_id = ?)`,
			m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP, m.EgressPort, m.DurationMS, status, id, conv, as))
	})
	if err != nil {
		return fail(ctx, op, err)
	}
	m.Status = status
	return nil
}
