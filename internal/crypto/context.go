package crypto

import (
	"encoding/binary"
	"fmt"
)

// Context is the place a ciphertext lives in (docs/crypto.md §4). It is never
// stored with the ciphertext: the reader rebuilds it from where it found the
// ciphertext, and an envelope opened in any other context fails.
type Context struct {
	Table string // e.g. "messages"; 1–64 bytes of [a-z0-9_.-], starting with a letter
	Field string // e.g. "encrypted_content"; same rule as Table
	Row   string // the row's id; 0–255 bytes of printable ASCII
	Owner string // the owning user's id; 0–255 bytes of printable ASCII
}

// Validate checks the rules of docs/crypto.md §4.
func (c Context) Validate() error {
	if err := checkName("table", c.Table); err != nil {
		return err
	}
	if err := checkName("field", c.Field); err != nil {
		return err
	}
	if err := checkID("row", c.Row); err != nil {
		return err
	}
	return checkID("owner", c.Owner)
}

func checkName(what, s string) error {
	if len(s) < 1 || len(s) > 64 || s[0] < 'a' || s[0] > 'z' {
		return fmt.Errorf("%w: context %s must be 1-64 bytes starting with a-z", ErrMalformed, what)
	}
	for i := 0; i < len(s); i++ {
		c := s[i]
		if !(c >= 'a' && c <= 'z' || c >= '0' && c <= '9' || c == '_' || c == '.' || c == '-') {
			return fmt.Errorf("%w: context %s has a byte outside [a-z0-9_.-]", ErrMalformed, what)
		}
	}
	return nil
}

func checkID(what, s string) error {
	if len(s) > 255 {
		return fmt.Errorf("%w: context %s longer than 255 bytes", ErrMalformed, what)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x21 || s[i] > 0x7e {
			return fmt.Errorf("%w: context %s has a byte outside printable ASCII", ErrMalformed, what)
		}
	}
	return nil
}

// bytes returns context_bytes(kind): the associated data for an envelope of
// that kind.
func (c Context) bytes(kind byte) ([]byte, error) {
	if err := c.Validate(); err != nil {
		return nil, err
	}
	b := make([]byte, 0, 9+8+len(c.Table)+len(c.Field)+len(c.Row)+len(c.Owner))
	b = append(b, "polydev\x00"...)
	b = append(b, kind)
	for _, s := range []string{c.Table, c.Field, c.Row, c.Owner} {
		b = binary.BigEndian.AppendUint16(b, uint16(len(s)))
		b = append(b, s...)
	}
	return b, nil
}

// Contexts of the places docs/crypto.md §4 defines so far.

// AccountKeyContext is where a user's wrapped account key lives.
func AccountKeyContext(userID string) Context {
	return Context{Table: "users", Field: "wrapped_account_key", Row: userID, Owner: userID}
}

// PrivateKeyContext is where a user's wrapped private key record lives.
func PrivateKeyContext(userID string) Context {
	return Context{Table: "users", Field: "wrapped_private_key", Row: userID, Owner: userID}
}

// ConversationKeyContext is where a conversation's wrapped key lives.
func ConversationKeyContext(userID, conversationID string) Context {
	return Context{Table: "conversations", Field: "wrapped_key", Row: conversationID, Owner: userID}
}

// ConversationTitleContext is where a conversation's encrypted title lives.
func ConversationTitleContext(userID, conversationID string) Context {
	return Context{Table: "conversations", Field: "encrypted_title", Row: conversationID, Owner: userID}
}

// MessageContext is where a message's encrypted content lives.
func MessageContext(userID, messageID string) Context {
	return Context{Table: "messages", Field: "encrypted_content", Row: messageID, Owner: userID}
}

// ChunkContext is the place of streamed chunk seq of a message; final marks
// the last chunk, so a reader can tell a complete stream from a cut one.
func ChunkContext(userID, messageID string, seq uint64, final bool) Context {
	field := "chunk"
	if final {
		field = "chunk_final"
	}
	return Context{Table: "messages", Field: field, Row: fmt.Sprintf("%s:%d", messageID, seq), Owner: userID}
}

// ProviderTokenContext is where a provider credential sealed to the user lives.
func ProviderTokenContext(userID, provider string) Context {
	return Context{Table: "provider_tokens", Field: "encrypted_refresh_token", Row: provider, Owner: userID}
}

// GrantContext is the place of a request grant sealed to a runtime key.
func GrantContext(userID, requestID string) Context {
	return Context{Table: "grants", Field: "grant", Row: requestID, Owner: userID}
}
