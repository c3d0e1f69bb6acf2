// Package provider is the one shape every AI provider takes inside Polydev:
// a chat request in, a stream of normalised chunks out, and failures sorted
// into a handful of kinds the rest of the system can act on.
//
// Adapters live in provider/openai, provider/anthropic and provider/google;
// each is built on the provider's official SDK (or its documented HTTP API)
// and takes an injected base URL and *http.Client, so the same code talks to
// the real service, to the emulator in provider/emulator, and through a
// user's egress proxy. provider/providertest is the conformance suite every
// adapter runs against the emulator.
//
// Plaintext passes through this package: it is only ever used inside a
// runtime worker (see docs/architecture.md), never by the control plane.
package provider

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"time"
)

// Names of the providers, as stored in provider_tokens and conversations.
const (
	OpenAI    = "openai"
	Anthropic = "anthropic"
	Google    = "google"
)

// Roles of a chat message.
const (
	RoleSystem    = "system"
	RoleUser      = "user"
	RoleAssistant = "assistant"
)

// Message is one turn of the conversation sent to the provider.
type Message struct {
	Role    string // RoleSystem, RoleUser or RoleAssistant
	Content string
}

// Request is one chat completion.
type Request struct {
	Model    string
	Messages []Message // oldest first; system turns may appear anywhere, adapters fold them as the API needs
	// Temperature is nil for the provider's default.
	Temperature *float64
	// MaxTokens caps the answer; 0 means the adapter's default.
	MaxTokens int
}

// Usage counts tokens as the provider reports them.
type Usage struct {
	InputTokens  int
	OutputTokens int
}

// Finish reasons, normalised.
const (
	FinishStop      = "stop"       // the model ended its answer
	FinishLength    = "length"     // MaxTokens or the model's limit was reached
	FinishFiltered  = "filtered"   // content policy
	FinishToolCalls = "tool_calls" // the model asked for a tool
	FinishOther     = "other"
)

// Chunk is one piece of a streamed answer. A chunk carries any of a text
// delta, the usage and the finish reason; the last chunk of a complete
// stream carries the finish reason.
type Chunk struct {
	Text         string
	Usage        *Usage
	FinishReason string
}

// Stream yields an answer's chunks.
type Stream interface {
	// Next returns the next chunk. At the end of a complete answer it returns
	// io.EOF. A stream that breaks off returns an *Error (or the context's
	// error when ctx was cancelled); after any error Next keeps returning it.
	Next() (Chunk, error)
	// Close releases the connection; safe at any time and more than once.
	Close() error
}

// Credential is what a provider accepts: an API key or an OAuth access token.
type Credential struct {
	APIKey string
}

// String never prints the key.
func (Credential) String() string { return "[REDACTED]" }

// Provider starts chat streams.
type Provider interface {
	// Name is one of OpenAI, Anthropic, Google.
	Name() string
	// Stream starts a streaming completion. Errors before the first chunk
	// are returned here or by the first Next, as an *Error or ctx's error.
	// Cancelling ctx aborts the upstream request.
	Stream(ctx context.Context, cred Credential, req Request) (Stream, error)
}

// Config is what every adapter is built from.
type Config struct {
	// BaseURL is the API root, e.g. "https://api.openai.com/v1"; empty means
	// the provider's public endpoint.
	BaseURL string
	// HTTPClient carries every request (nil: a default client). The egress
	// package supplies one that leaves through the user's proxy port.
	HTTPClient *http.Client
}

// Kind sorts failures by what the caller should do about them.
type Kind int

const (
	KindUpstream    Kind = iota // the provider failed (5xx, a broken stream, bad JSON): maybe retry later
	KindAuth                    // the credential was refused (401/403): relink
	KindRateLimited             // 429: wait RetryAfter
	KindOverloaded              // the provider is overloaded (529, 503): retry later
	KindBadRequest              // the request is wrong (400, 404, 413, 422): do not retry
)

func (k Kind) String() string {
	switch k {
	case KindAuth:
		return "auth"
	case KindRateLimited:
		return "rate_limited"
	case KindOverloaded:
		return "overloaded"
	case KindBadRequest:
		return "bad_request"
	default:
		return "upstream"
	}
}

// Error is a provider failure, sorted.
type Error struct {
	Provider   string
	Kind       Kind
	Status     int           // HTTP status, 0 when the failure was not an HTTP answer
	RetryAfter time.Duration // from Retry-After (or the provider's equivalent), 0 when absent
	Message    string        // the provider's message; never contains the credential
	Err        error         // the underlying error, if any
}

func (e *Error) Error() string {
	s := fmt.Sprintf("%s: %s", e.Provider, e.Kind)
	if e.Status != 0 {
		s += fmt.Sprintf(" (status %d)", e.Status)
	}
	if e.Message != "" {
		s += ": " + e.Message
	}
	return s
}

func (e *Error) Unwrap() error { return e.Err }

// KindOf reports the kind of err, KindUpstream for errors that are not an
// *Error.
func KindOf(err error) Kind {
	var pe *Error
	if errors.As(err, &pe) {
		return pe.Kind
	}
	return KindUpstream
}

// Retryable reports whether a failure before the first chunk may be retried.
func Retryable(err error) bool {
	var pe *Error
	if !errors.As(err, &pe) {
		return false
	}
	switch pe.Kind {
	case KindRateLimited, KindOverloaded, KindUpstream:
		return true
	}
	return false
}

// ErrStreamClosed is what Next returns after the caller closed the stream
// before it ended.
var ErrStreamClosed = errors.New("provider: stream closed")
