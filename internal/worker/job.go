// Package worker is the program that runs inside a runtime sandbox (a runc
// container, or the supervisor's own process in development): it opens a
// request grant, decrypts the conversation with the key the grant carries,
// calls the provider, and streams the answer back encrypted chunk by chunk.
// It is the only code that sees a chat's plaintext, and it wipes what it
// held when the request ends.
//
// The worker must not import server-side packages (store, controlplane,
// runtime): it gets everything through a Task.
package worker

import (
	"time"

	"polydev/internal/crypto"
)

// Job is one chat turn as the control plane hands it to the runtime. Every
// user value in it is ciphertext the control plane cannot open.
type Job struct {
	RequestID      string `json:"request_id"` // UUID chosen by the client; the grant is bound to it
	UserID         string `json:"user_id"`
	ConversationID string `json:"conversation_id"`
	Provider       string `json:"provider"`
	// Grant is sealed to the runtime key KeyID under
	// crypto.GrantContext(UserID, RequestID); its plaintext is a Grant.
	Grant string `json:"grant"`
	KeyID string `json:"key_id"`
	// History is the conversation so far, oldest first, ending with the
	// new prompt; each EncryptedContent is under crypto.MessageContext.
	History            []Message `json:"history"`
	AssistantMessageID string    `json:"assistant_message_id"` // UUID chosen by the client
	Egress             Egress    `json:"egress"`
}

// Message is one stored, encrypted turn.
type Message struct {
	ID               string `json:"id"`
	Role             string `json:"role"`
	EncryptedContent string `json:"encrypted_content"`
}

// Egress is the user's egress for this provider: the proxy port the runtime
// must use, and the IP last seen through it. The worker does not dial it; the
// runtime supplies an HTTP client bound to it.
type Egress struct {
	Port int    `json:"port"`
	IP   string `json:"ip"`
}

// Grant is the plaintext inside Job.Grant, made on the user's device. Every
// id in it must equal the Job's: a control plane cannot replay a grant for
// another request, conversation or message.
type Grant struct {
	Version            int    `json:"v"` // 1
	RequestID          string `json:"request_id"`
	UserID             string `json:"user_id"`
	ConversationID     string `json:"conversation_id"`
	AssistantMessageID string `json:"assistant_message_id"`
	// PromptMessageID names the prompt the user sent: the last message of
	// the job's history must be this user message, so a control plane
	// cannot answer an older prompt in its place.
	PromptMessageID string    `json:"prompt_message_id"`
	Provider        string    `json:"provider"`
	Model           string    `json:"model"`
	Temperature     *float64  `json:"temperature,omitempty"`
	MaxTokens       int       `json:"max_tokens,omitempty"`
	ConversationKey string    `json:"conversation_key"` // the raw convKey, base64 (docs/crypto.md text form)
	Credential      string    `json:"credential"`       // the provider API key or access token
	ExpiresAt       time.Time `json:"expires_at"`
}

// Event is one thing the worker reports, in order: any number of Chunk
// events, then exactly one Done.
type Event struct {
	Chunk *Chunk  `json:"chunk,omitempty"`
	Done  *Result `json:"done,omitempty"`
}

// Chunk is one piece of the answer, encrypted under
// crypto.ChunkContext(UserID, AssistantMessageID, Seq, Final).
type Chunk struct {
	Seq            uint64 `json:"seq"`
	Final          bool   `json:"final,omitempty"`
	EncryptedChunk string `json:"encrypted_chunk"`
}

// Result ends a job. When the answer broke off (a provider failure
// mid-stream, a cancellation) Incomplete is set and EncryptedContent holds
// the part that arrived, so it can be stored and marked, never lost.
type Result struct {
	MessageID        string `json:"message_id"`
	EncryptedContent string `json:"encrypted_content"` // the whole answer under crypto.MessageContext; "" when nothing arrived
	Model            string `json:"model"`
	InputTokens      int    `json:"input_tokens"`
	OutputTokens     int    `json:"output_tokens"`
	FinishReason     string `json:"finish_reason,omitempty"`
	DurationMS       int64  `json:"duration_ms"`
	EgressPort       int    `json:"egress_port"`
	EgressIP         string `json:"egress_ip,omitempty"`
	Incomplete       bool   `json:"incomplete,omitempty"`
	// Error describes why the job failed or broke off; nil on success.
	Error *Error `json:"error,omitempty"`
}

// Error is a failure as the worker reports it: a kind from a small fixed set
// and a message that carries no plaintext and no credential.
type Error struct {
	Kind         string `json:"kind"` // auth, rate_limited, overloaded, bad_request, upstream, grant, cancelled, internal
	Message      string `json:"message"`
	RetryAfterMS int64  `json:"retry_after_ms,omitempty"`
}

// Task is what a sandbox receives for one job: the job, the runtime private
// key record that opens its grant, and where the provider lives. It travels
// only in memory or over the sandbox's private socket.
type Task struct {
	Job        Job    `json:"job"`
	RuntimeKey []byte `json:"runtime_key"` // the private key record (docs/crypto.md §6) of Job.KeyID
	// Key is the same key, parsed, when the worker runs in the supervisor's
	// process; it then stays the supervisor's (the worker does not wipe
	// it). It never leaves the process.
	Key     *crypto.PrivateKey `json:"-"`
	BaseURL string             `json:"base_url,omitempty"`
}
