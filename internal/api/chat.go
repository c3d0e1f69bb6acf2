package api

import (
	"encoding/json"
	"strconv"
	"time"
)

// RuntimeKey is GET /v1/runtime/key: the runtime public key new grants are
// sealed to, signed by the runtime's identity (docs/crypto.md §11). Clients
// pin Identity on first use and refuse a key whose signature does not check
// or whose identity changed.
type RuntimeKey struct {
	KeyID     string    `json:"key_id"`
	PublicKey string    `json:"public_key"`
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	Identity  string    `json:"identity"`
	Signature string    `json:"signature"`
}

// ProviderTokenResponse is GET /v1/accounts/{provider}/token: the caller's
// own sealed credential, which only their device can open.
type ProviderTokenResponse struct {
	Provider       string `json:"provider"`
	EncryptedToken string `json:"encrypted_token"`
}

// CreateConversationRequest is POST /v1/chat/sessions. The client chooses
// the id, because it is bound into every ciphertext of the conversation.
type CreateConversationRequest struct {
	ConversationID string `json:"conversation_id"`
	Provider       string `json:"provider"`
	WrappedKey     string `json:"wrapped_key"`     // convKey wrapped by the account key
	EncryptedTitle string `json:"encrypted_title"` // may be ""
}

// CreateConversationResponse answers it.
type CreateConversationResponse struct {
	ConversationID string `json:"conversation_id"`
}

// Conversation is a chat as listed.
type Conversation struct {
	ConversationID string    `json:"conversation_id"`
	Provider       string    `json:"provider"`
	WrappedKey     string    `json:"wrapped_key"`
	EncryptedTitle string    `json:"encrypted_title"`
	CreatedAt      time.Time `json:"created_at"`
	UpdatedAt      time.Time `json:"updated_at"`
}

// ConversationList is GET /v1/chat/sessions?limit=&cursor=.
type ConversationList struct {
	Sessions   []Conversation `json:"sessions"`
	NextCursor string         `json:"next_cursor,omitempty"`
}

// Message is one stored, encrypted turn.
type Message struct {
	ID               string    `json:"id"`
	Role             string    `json:"role"`
	EncryptedContent string    `json:"encrypted_content"`
	Status           string    `json:"status"` // complete | incomplete
	Model            string    `json:"model,omitempty"`
	TokensUsed       int       `json:"tokens_used,omitempty"`
	DurationMS       int64     `json:"duration_ms,omitempty"`
	EgressPort       int       `json:"egress_port,omitempty"`
	EgressIP         string    `json:"egress_ip,omitempty"`
	CreatedAt        time.Time `json:"created_at"`
}

// ConversationDetail is GET /v1/chat/{id}?limit=&cursor=: the
// conversation and one page of its messages, oldest first.
type ConversationDetail struct {
	Conversation Conversation `json:"conversation"`
	Messages     []Message    `json:"messages"`
	NextCursor   string       `json:"next_cursor,omitempty"`
}

// SendMessageRequest is POST /v1/chat/{id}/messages. The ids are chosen by
// the client: the prompt is encrypted under MessageContext(user,
// PromptMessageID), the answer's chunks will be under
// ChunkContext(user, AssistantMessageID, n, final), and the grant (sealed to
// runtime key KeyID under GrantContext(user, RequestID)) names them all.
// Model and Temperature repeat the grant's for the record; the runtime
// uses the grant's.
type SendMessageRequest struct {
	RequestID          string   `json:"request_id"`
	PromptMessageID    string   `json:"prompt_message_id"`
	EncryptedPrompt    string   `json:"encrypted_prompt"`
	AssistantMessageID string   `json:"assistant_message_id"`
	Grant              string   `json:"grant"`
	KeyID              string   `json:"key_id"`
	Model              string   `json:"model"`
	Temperature        *float64 `json:"temperature,omitempty"`
}

// The response to SendMessageRequest is a text/event-stream:
//
//	data: {"encrypted_chunk":"…","seq":0}          (any number; the last has "final":true)
//	: keep-alive                                   (a comment, every few seconds)
//	event: done
//	data: {…StreamDone…}                           (a complete answer, stored)
//	event: error
//	data: {…StreamError…}                          (a failure; a partial answer is stored, marked incomplete)
//
// Exactly one of done or error ends the stream.

// StreamChunk is one data event.
type StreamChunk struct {
	EncryptedChunk string `json:"encrypted_chunk"`
	Seq            uint64 `json:"seq"`
	Final          bool   `json:"final,omitempty"`
}

// AppendJSON appends what json.Marshal(c) returns, without reflection: a
// server writes one of these per token of every answer. A chunk that is
// not plain base64 text (which needs no escaping) goes through
// encoding/json.
func (c StreamChunk) AppendJSON(dst []byte) []byte {
	for i := 0; i < len(c.EncryptedChunk); i++ {
		if !isBase64Char(c.EncryptedChunk[i]) {
			j, _ := json.Marshal(c) // strings, numbers and bools always encode
			return append(dst, j...)
		}
	}
	dst = append(dst, `{"encrypted_chunk":"`...)
	dst = append(dst, c.EncryptedChunk...)
	dst = append(dst, `","seq":`...)
	dst = strconv.AppendUint(dst, c.Seq, 10)
	if c.Final {
		dst = append(dst, `,"final":true`...)
	}
	return append(dst, '}')
}

// ParseStreamChunk decodes a data event as json.Unmarshal does. The form
// AppendJSON writes is read without reflection — a client decodes one per
// token — and anything else goes through encoding/json.
func ParseStreamChunk(data []byte) (StreamChunk, error) {
	if c, ok := parseCanonicalChunk(data); ok {
		return c, nil
	}
	var c StreamChunk
	err := json.Unmarshal(data, &c)
	return c, err
}

// parseCanonicalChunk reads exactly {"encrypted_chunk":"<base64>","seq":<n>}
// with an optional ,"final":true before the brace.
func parseCanonicalChunk(b []byte) (StreamChunk, bool) {
	const head, mid, fin = `{"encrypted_chunk":"`, `","seq":`, `,"final":true}`
	if len(b) < len(head) || string(b[:len(head)]) != head {
		return StreamChunk{}, false
	}
	b = b[len(head):]
	i := 0
	for i < len(b) && isBase64Char(b[i]) {
		i++
	}
	text := b[:i]
	b = b[i:]
	if len(b) < len(mid) || string(b[:len(mid)]) != mid {
		return StreamChunk{}, false
	}
	b = b[len(mid):]
	i = 0
	for i < len(b) && b[i] >= '0' && b[i] <= '9' {
		i++
	}
	if i == 0 || i > 1 && b[0] == '0' { // JSON numbers have no leading zeros
		return StreamChunk{}, false
	}
	seq, err := strconv.ParseUint(string(b[:i]), 10, 64)
	if err != nil {
		return StreamChunk{}, false
	}
	c := StreamChunk{EncryptedChunk: string(text), Seq: seq}
	switch rest := string(b[i:]); rest {
	case "}":
	case fin:
		c.Final = true
	default:
		return StreamChunk{}, false
	}
	return c, true
}

func isBase64Char(b byte) bool {
	return b >= 'A' && b <= 'Z' || b >= 'a' && b <= 'z' || b >= '0' && b <= '9' || b == '+' || b == '/' || b == '-' || b == '_' || b == '='
}

// Usage counts tokens.
type Usage struct {
	InputTokens  int `json:"input_tokens"`
	OutputTokens int `json:"output_tokens"`
}

// StreamDone is the done event.
type StreamDone struct {
	PromptMessageID    string `json:"prompt_message_id"`
	AssistantMessageID string `json:"assistant_message_id"`
	Model              string `json:"model"`
	Usage              Usage  `json:"usage"`
	FinishReason       string `json:"finish_reason,omitempty"`
	DurationMS         int64  `json:"duration_ms"`
	EgressPort         int    `json:"egress_port,omitempty"`
}

// StreamError is the error event. Stored tells whether the prompt and the
// partial answer (Incomplete) were kept; when nothing was stored the client
// may send the same prompt again with a new request id.
type StreamError struct {
	Error              ErrorDetail `json:"error"`
	RetryAfterMS       int64       `json:"retry_after_ms,omitempty"`
	Stored             bool        `json:"stored"`
	Incomplete         bool        `json:"incomplete,omitempty"`
	PromptMessageID    string      `json:"prompt_message_id,omitempty"`
	AssistantMessageID string      `json:"assistant_message_id,omitempty"`
	Usage              Usage       `json:"usage"`
	DurationMS         int64       `json:"duration_ms"`
}
