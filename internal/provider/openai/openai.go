// Package openai is the OpenAI adapter: Chat Completions streaming through
// the official Go SDK (github.com/openai/openai-go/v3), with usage requested
// in the stream (stream_options.include_usage).
//
// The SDK is built without reading the environment (no OPENAI_* variable
// changes where requests go or which organisation they bill), with its own
// retries off — provider.WithRetry is the one retry rule — and with the
// injected base URL and *http.Client, so requests reach the emulator or
// leave through the user's egress proxy.
package openai

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	sdk "github.com/openai/openai-go/v3"
	"github.com/openai/openai-go/v3/option"
	"github.com/openai/openai-go/v3/packages/ssestream"

	"polydev/internal/provider"
	"polydev/internal/provider/wire"
)

// DefaultBaseURL is the public API root.
const DefaultBaseURL = "https://api.openai.com/v1"

// Provider streams chat completions from OpenAI (or anything speaking its
// Chat Completions wire format at the configured base URL).
type Provider struct {
	chat sdk.ChatService
}

var _ provider.Provider = (*Provider)(nil)

// New returns the adapter for cfg. cfg.BaseURL is the API root including
// the version, e.g. "https://api.openai.com/v1" (the default).
func New(cfg provider.Config) *Provider {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	// NewChatService, not NewClient: NewClient folds in OPENAI_* environment
	// variables, and a server must not send a user's request with the
	// operator's organisation or to a base URL from its environment.
	return &Provider{chat: sdk.NewChatService(
		option.WithBaseURL(base),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0),
	)}
}

// Name returns provider.OpenAI.
func (*Provider) Name() string { return provider.OpenAI }

// Stream starts a streaming chat completion. System turns are sent as
// system messages where they stand in the conversation.
func (p *Provider) Stream(ctx context.Context, cred provider.Credential, req provider.Request) (provider.Stream, error) {
	params := sdk.ChatCompletionNewParams{
		Model:         sdk.ChatModel(req.Model),
		Messages:      messages(req.Messages),
		StreamOptions: sdk.ChatCompletionStreamOptionsParam{IncludeUsage: sdk.Bool(true)},
	}
	if req.Temperature != nil {
		params.Temperature = sdk.Float(*req.Temperature)
	}
	if req.MaxTokens > 0 {
		params.MaxCompletionTokens = sdk.Int(int64(req.MaxTokens))
	}

	rctx, cancel := context.WithCancel(ctx)
	s := p.chat.Completions.NewStreaming(rctx, params, option.WithAPIKey(cred.APIKey))
	if err := s.Err(); err != nil {
		// Stream's Err holds the failure of the request itself (a status
		// other than 2xx, or the connection); nothing was read yet.
		s.Close()
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, mapError(err, cred.APIKey)
	}
	st := &stream{sdk: s, key: cred.APIKey}
	return wire.NewStream(ctx, cancel, st.next, s.Close), nil
}

func messages(in []provider.Message) []sdk.ChatCompletionMessageParamUnion {
	out := make([]sdk.ChatCompletionMessageParamUnion, 0, len(in))
	for _, m := range in {
		switch m.Role {
		case provider.RoleSystem:
			out = append(out, sdk.SystemMessage(m.Content))
		case provider.RoleAssistant:
			out = append(out, sdk.AssistantMessage(m.Content))
		default:
			out = append(out, sdk.UserMessage(m.Content))
		}
	}
	return out
}

// stream turns SDK chunks into provider chunks: one chunk per non-empty
// text delta, then one final chunk with the usage and the finish reason.
// OpenAI sends the finish reason first and the usage in a chunk of its own
// after it, so the finish reason is held until the stream ends.
type stream struct {
	sdk    *ssestream.Stream[sdk.ChatCompletionChunk]
	key    string
	finish string
	usage  *provider.Usage
	ended  bool
}

func (s *stream) next() (provider.Chunk, error) {
	if s.ended {
		return provider.Chunk{}, io.EOF
	}
	for s.sdk.Next() {
		c := s.sdk.Current()
		if c.JSON.Usage.Valid() {
			s.usage = &provider.Usage{
				InputTokens:  int(c.Usage.PromptTokens),
				OutputTokens: int(c.Usage.CompletionTokens),
			}
		}
		var text strings.Builder
		for _, ch := range c.Choices {
			if ch.Index != 0 {
				continue // one answer is asked for; ignore any other
			}
			text.WriteString(ch.Delta.Content)
			text.WriteString(ch.Delta.Refusal)
			if ch.FinishReason != "" {
				s.finish = Finish(ch.FinishReason)
			}
		}
		if text.Len() > 0 {
			return provider.Chunk{Text: text.String()}, nil
		}
	}
	if err := s.sdk.Err(); err != nil {
		return provider.Chunk{}, mapError(err, s.key)
	}
	// The SDK ends quietly on "data: [DONE]" and on a body that simply
	// stops; only a finish reason tells a complete answer from a cut one.
	if s.finish == "" {
		return provider.Chunk{}, &provider.Error{
			Provider: provider.OpenAI, Kind: provider.KindUpstream,
			Message: "stream ended before the answer was complete",
		}
	}
	s.ended = true
	return provider.Chunk{Usage: s.usage, FinishReason: s.finish}, nil
}

// Finish maps an OpenAI finish_reason to a provider.Finish* value.
func Finish(reason string) string {
	switch reason {
	case "stop":
		return provider.FinishStop
	case "length":
		return provider.FinishLength
	case "content_filter":
		return provider.FinishFiltered
	case "tool_calls", "function_call":
		return provider.FinishToolCalls
	default:
		return provider.FinishOther
	}
}

// mapError sorts anything the SDK returned into a *provider.Error (context
// errors pass through; the stream shell reports the caller's context error
// first anyway). The SDK's own error values are not kept as the cause:
// they carry the raw response body, which may echo part of the key.
func mapError(err error, key string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var apiErr *sdk.Error
	if errors.As(err, &apiErr) {
		e := &provider.Error{
			Provider: provider.OpenAI,
			Kind:     wire.KindForStatus(apiErr.StatusCode),
			Status:   apiErr.StatusCode,
			Message:  wire.Message(apiErr.Message, key),
		}
		if e.Message == "" {
			e.Message = http.StatusText(apiErr.StatusCode)
		}
		if apiErr.Response != nil {
			e.RetryAfter = wire.RetryAfter(apiErr.Response.Header, time.Now())
		}
		return e
	}
	var streamErr *ssestream.StreamError
	if errors.As(err, &streamErr) {
		return streamError(streamErr.Event.Data, key)
	}
	return &provider.Error{
		Provider: provider.OpenAI,
		Kind:     provider.KindUpstream,
		Message:  wire.Message(err.Error(), key),
		Err:      err,
	}
}
