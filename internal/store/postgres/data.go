package postgres

import (
	"context"
	"errors"
	"fmt"
	"slices"
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
	err := db.oneTrip(ctx, user, func(t *trip) {
		t.Queue(`select user_id, provider, encrypted_refresh_token, scopes, expires_at,
				decodo_port, egress_ip, last_rotated_at, last_used_at, created_at
			from provider_tokens where user_id = $1 order by provider`, user).Query(func(rows pgx.Rows) (err error) {
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
	err := db.oneTrip(ctx, user, func(t *trip) {
		t.row("select "+conversationColumns+" from conversations where id = $1", []any{cid}, func(row pgx.Row) (err error) {
			c, err = scanConversation(row)
			return err
		})
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	return &c, nil
}

// Conversations lists one page of the acting user's conversations, most
// recently updated first (ties: by id, descending), and the cursor of the
// next page. An `as` that is not a UUID has no conversations.
func (db *DB) Conversations(ctx context.Context, as string, page store.Page) ([]store.Conversation, string, error) {
	const op = "conversations"
	limit, err := pageLimit(op, page)
	if err != nil {
		return nil, "", err
	}
	var after cursor
	if page.Cursor != "" {
		if after, err = decodeCursor(op, conversationCursor, page.Cursor); err != nil {
			return nil, "", err
		}
	}
	user, ok := parseID(as)
	if !ok {
		return nil, "", nil
	}
	var list []store.Conversation
	err = db.asUser(ctx, user, func(tx pgx.Tx) error {
		// One more row than asked tells whether there is a next page.
		q, args := "select "+conversationColumns+" from conversations where user_id = $1", []any{user, limit + 1}
		if page.Cursor != "" {
			q += " and (updated_at, id) < ($3, $4)"
			args = append(args, after.at, after.id)
		}
		q += " order by updated_at desc, id desc limit $2"
		rows, err := tx.Query(ctx, q, args...)
		if err != nil {
			return err
		}
		list, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Conversation, error) {
			return scanConversation(row)
		})
		return err
	})
	if err != nil {
		return nil, "", wrap(op, err)
	}
	var next string
	if len(list) > limit {
		list = list[:limit]
		last := list[limit-1]
		next = encodeCursor(conversationCursor, last.UpdatedAt, last.ID)
	}
	return list, next, nil
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

const messageColumns = `id, conversation_id, role, encrypted_content, tokens_used, model, egress_ip, decodo_port,
	duration_ms, status, created_at`

// AddMessages appends ms, in order and all or none, to one of the acting
// user's conversations. The conversation's UpdatedAt is bumped first, to
// now or to the newest message's time, whichever is later: if no row is
// updated, the conversation is missing or someone else's,
// store.ErrNotFound, before the message policy would turn the inserts into
// a privilege error. Every message must name the same conversation and
// carry its own UUID (store.ErrInvalid otherwise, as is an empty batch);
// a zero CreatedAt becomes the transaction's time, an empty Status
// store.MessageComplete. On success the records hold what was stored.
//
// The inserts go in one pgx batch, one round trip, executed in order; the
// identity column seq records that order, which breaks ties of created_at.
func (db *DB) AddMessages(ctx context.Context, as string, ms ...*store.Message) error {
	const op = "add messages"
	user, ok := parseID(as)
	if !ok {
		return wrap(op, store.ErrNotFound)
	}
	cid, err := batchConversation(ms)
	if err != nil {
		return wrap(op, err)
	}
	ids := make([]uuid.UUID, len(ms))
	statuses := make([]string, len(ms))
	var latest *time.Time // the newest explicit CreatedAt
	for i, m := range ms {
		if ids[i], ok = parseID(m.ID); !ok {
			return fmt.Errorf("postgres: %s: message id is not a UUID: %w", op, store.ErrInvalid)
		}
		if statuses[i] = m.Status; statuses[i] == "" {
			statuses[i] = store.MessageComplete
		}
		if !m.CreatedAt.IsZero() && (latest == nil || m.CreatedAt.After(*latest)) {
			latest = &m.CreatedAt
		}
	}
	created := make([]time.Time, len(ms))
	// One round trip: the role switch, the conversation's bump and the
	// inserts, in one implicit transaction. A missing or foreign
	// conversation bumps nothing (ErrNotFound) and its inserts fail the
	// row-level security check, which rolls everything back.
	err = db.oneTrip(ctx, user, func(t *trip) {
		// greatest ignores a NULL $2.
		t.affect("update conversations set updated_at = greatest(updated_at, now(), $2) where id = $1", cid, latest)
		for i, m := range ms {
			t.Queue(`insert into messages (`+messageColumns+`)
				values ($1, $2, $3, $4, $5, $6, $7, $8, $9, $10, coalesce($11, now())) returning created_at`,
				ids[i], cid, m.Role, m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP, m.EgressPort, m.DurationMS,
				statuses[i], nullTime(m.CreatedAt)).QueryRow(func(row pgx.Row) error { return row.Scan(&created[i]) })
		}
	})
	if err != nil {
		return wrap(op, err)
	}
	for i, m := range ms {
		m.ID, m.ConversationID, m.Status, m.CreatedAt = ids[i].String(), cid.String(), statuses[i], created[i].UTC()
	}
	return nil
}

// batchConversation returns the conversation every message of a batch
// names. An empty batch, a nil message or messages of different
// conversations are store.ErrInvalid; a first conversation id that is not
// a UUID names no conversation: store.ErrNotFound.
func batchConversation(ms []*store.Message) (uuid.UUID, error) {
	if len(ms) == 0 {
		return uuid.Nil, fmt.Errorf("no messages: %w", store.ErrInvalid)
	}
	if slices.Contains(ms, nil) {
		return uuid.Nil, fmt.Errorf("nil message: %w", store.ErrInvalid)
	}
	cid, ok := parseID(ms[0].ConversationID)
	if !ok {
		return uuid.Nil, store.ErrNotFound
	}
	for _, m := range ms[1:] {
		if c, ok := parseID(m.ConversationID); !ok || c != cid {
			return uuid.Nil, fmt.Errorf("messages of more than one conversation: %w", store.ErrInvalid)
		}
	}
	return cid, nil
}

// Messages lists one page of the messages of one of the acting user's
// conversations, oldest first (ties: in insertion order), and the cursor
// of the next page. A missing or foreign conversation is
// store.ErrNotFound, not an empty list. The cursor names the last message
// of the previous page; one that names no message of this conversation is
// store.ErrInvalid.
func (db *DB) Messages(ctx context.Context, as, conversationID string, page store.Page) ([]store.Message, string, error) {
	const op = "messages"
	limit, err := pageLimit(op, page)
	if err != nil {
		return nil, "", err
	}
	var after cursor
	if page.Cursor != "" {
		if after, err = decodeCursor(op, messageCursor, page.Cursor); err != nil {
			return nil, "", err
		}
	}
	user, ok1 := parseID(as)
	cid, ok2 := parseID(conversationID)
	if !ok1 || !ok2 {
		return nil, "", wrap(op, store.ErrNotFound)
	}
	var list []store.Message
	collect := func(rows pgx.Rows) (err error) {
		list, err = collectMessages(rows)
		return err
	}
	var visible bool
	if page.Cursor == "" {
		// The first page (and the whole history, for a chat turn) in one
		// round trip: the two statements need nothing from each other.
		err = db.oneTrip(ctx, user, func(t *trip) {
			t.Queue(visibleSQL, cid).QueryRow(func(row pgx.Row) error { return row.Scan(&visible) })
			t.Queue(pageSQL+orderSQL, cid, limit+1).Query(collect)
		})
		if err == nil && !visible {
			err = store.ErrNotFound
		}
	} else {
		err = db.asUser(ctx, user, func(tx pgx.Tx) error {
			if err := tx.QueryRow(ctx, visibleSQL, cid).Scan(&visible); err != nil {
				return err
			}
			if !visible {
				return store.ErrNotFound
			}
			// The position is the cursor message's (created_at, seq); seq
			// stays inside the store.
			var at time.Time
			var seq int64
			err := tx.QueryRow(ctx, "select created_at, seq from messages where id = $1 and conversation_id = $2",
				after.id, cid).Scan(&at, &seq)
			if errors.Is(err, pgx.ErrNoRows) || err == nil && !at.Equal(after.at) {
				return errBadCursor
			}
			if err != nil {
				return err
			}
			rows, err := tx.Query(ctx, pageSQL+" and (created_at, seq) > ($3, $4)"+orderSQL, cid, limit+1, at, seq)
			if err != nil {
				return err
			}
			return collect(rows)
		})
	}
	if err != nil {
		return nil, "", wrap(op, err)
	}
	list, next := cutPage(list, limit)
	return list, next, nil
}

const (
	visibleSQL = "select exists (select 1 from conversations where id = $1)"
	pageSQL    = "select " + messageColumns + " from messages where conversation_id = $1"
	orderSQL   = " order by created_at, seq limit $2"
)

func collectMessages(rows pgx.Rows) ([]store.Message, error) {
	return pgx.CollectRows(rows, func(row pgx.CollectableRow) (store.Message, error) {
		var m store.Message
		err := row.Scan(&m.ID, &m.ConversationID, &m.Role, &m.EncryptedContent, &m.TokensUsed, &m.Model,
			&m.EgressIP, &m.EgressPort, &m.DurationMS, &m.Status, &m.CreatedAt)
		m.CreatedAt = m.CreatedAt.UTC()
		return m, err
	})
}

// cutPage trims a page read with one row more than limit and returns the
// next page's cursor ("" when that row was not there).
func cutPage(list []store.Message, limit int) ([]store.Message, string) {
	if len(list) <= limit {
		return list, ""
	}
	list = list[:limit]
	last := list[limit-1]
	return list, encodeCursor(messageCursor, last.CreatedAt, last.ID)
}

// ChatTurn implements store.Conversations: three statements in one round
// trip, one implicit transaction (read committed: each statement sees what
// was committed when it started).
func (db *DB) ChatTurn(ctx context.Context, as, conversationID string) (*store.ChatTurn, error) {
	const op = "chat turn"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(conversationID)
	if !ok1 || !ok2 {
		return nil, wrap(op, store.ErrNotFound)
	}
	turn := &store.ChatTurn{}
	var tokens []*store.ProviderToken
	err := db.oneTrip(ctx, user, func(t *trip) {
		t.row("select "+conversationColumns+" from conversations where id = $1", []any{cid}, func(row pgx.Row) (err error) {
			turn.Conversation, err = scanConversation(row)
			return err
		})
		t.Queue("select "+tokenColumns+" from provider_tokens where user_id = $1 and provider = (select provider from conversations where id = $2)",
			user, cid).Query(func(rows pgx.Rows) (err error) {
			tokens, err = pgx.CollectRows(rows, func(row pgx.CollectableRow) (*store.ProviderToken, error) { return scanToken(row) })
			return err
		})
		t.Queue(pageSQL+orderSQL, cid, store.MaxPageLimit+1).Query(func(rows pgx.Rows) (err error) {
			turn.Messages, err = collectMessages(rows)
			return err
		})
	})
	if err != nil {
		return nil, wrap(op, err)
	}
	if len(tokens) > 0 {
		turn.Token = tokens[0]
	}
	turn.Messages, turn.Next = cutPage(turn.Messages, store.MaxPageLimit)
	return turn, nil
}

// Pages: the cursor format is store's (page.go); this backend resolves a
// message cursor's id to its seq.

const (
	conversationCursor = store.ConversationCursor
	messageCursor      = store.MessageCursor
)

var errBadCursor = store.ErrBadCursor

type cursor struct {
	at time.Time
	id uuid.UUID
}

func pageLimit(op string, p store.Page) (int, error) {
	n, err := store.PageLimit(p)
	if err != nil {
		return 0, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return n, nil
}

func encodeCursor(kind byte, at time.Time, id string) string { return store.EncodeCursor(kind, at, id) }

func decodeCursor(op string, kind byte, s string) (cursor, error) {
	c, err := store.DecodeCursor(kind, s)
	if err != nil {
		return cursor{}, fmt.Errorf("postgres: %s: %w", op, err)
	}
	return cursor{at: c.At, id: c.ID}, nil
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

// FinishMessage implements store.Conversations. Row-level security limits
// the update to the acting user's conversations; the statement limits it
// to an unfinished assistant message.
func (db *DB) FinishMessage(ctx context.Context, as string, m *store.Message) error {
	const op = "finish message"
	user, ok1 := parseID(as)
	cid, ok2 := parseID(m.ConversationID)
	id, ok3 := parseID(m.ID)
	if !ok1 || !ok2 || !ok3 {
		return wrap(op, store.ErrNotFound)
	}
	status := m.Status
	if status == "" {
		status = store.MessageComplete
	}
	if status != store.MessageComplete && status != store.MessageIncomplete {
		return wrap(op, store.ErrInvalid)
	}
	err := db.oneTrip(ctx, user, func(t *trip) {
		t.affect(`update messages set encrypted_content = $1, tokens_used = $2, model = $3,
				egress_ip = $4, decodo_port = $5, duration_ms = $6, status = $7
			where id = $8 and conversation_id = $9 and role = 'assistant' and status = 'incomplete'`,
			m.EncryptedContent, m.TokensUsed, m.Model, m.EgressIP, m.EgressPort, m.DurationMS, status, id, cid)
	})
	if err != nil {
		return wrap(op, err)
	}
	m.Status = status
	return nil
}
