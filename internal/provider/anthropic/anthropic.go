// Package anthropic is the Anthropic adapter: Messages streaming through
// the official Go SDK (github.com/anthropics/anthropic-sdk-go).
//
// The SDK is built without its environment defaults (no ANTHROPIC_*
// variable, profile file or workload-identity federation on the server's
// disk takes part), with its own retries off — provider.WithRetry is the one
// retry rule — and with the injected base URL and *http.Client.
package anthropic

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"net/http"
	"strings"
	"time"

	sdk "github.com/anthropics/anthropic-sdk-go"
	"github.com/anthropics/anthropic-sdk-go/option"
	"github.com/anthropics/anthropic-sdk-go/packages/ssestream"

	"polydev/internal/provider"
	"polydev/internal/provider/wire"
)

// DefaultBaseURL is the public API root; the SDK adds "/v1/messages".
const DefaultBaseURL = "https://api.anthropic.com"

// DefaultMaxTokens is sent when the request leaves MaxTokens at 0: the
// Messages API requires a cap, and every current model accepts this one.
const DefaultMaxTokens = 4096

// Provider streams messages from Anthropic.
type Provider struct {
	messages sdk.MessageService
}

var _ provider.Provider = (*Provider)(nil)

// New returns the adapter for cfg. cfg.BaseURL is the API root without the
// version, e.g. "https://api.anthropic.com" (the default).
func New(cfg provider.Config) *Provider {
	base := cfg.BaseURL
	if base == "" {
		base = DefaultBaseURL
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	c := sdk.NewClient(
		option.WithoutEnvironmentDefaults(),
		option.WithBaseURL(base),
		option.WithHTTPClient(hc),
		option.WithMaxRetries(0),
	)
	return &Provider{messages: c.Messages}
}

// Name returns provider.Anthropic.
func (*Provider) Name() string { return provider.Anthropic }

// Stream starts a streaming message. System turns, wherever they stand in
// the conversation, are joined (blank line between) into the request's
// system field, as the Messages API has no system role.
func (p *Provider) Stream(ctx context.Context, cred provider.Credential, req provider.Request) (provider.Stream, error) {
	system, msgs := split(req.Messages)
	params := sdk.MessageNewParams{
		Model:     sdk.Model(req.Model),
		MaxTokens: DefaultMaxTokens,
		Messages:  msgs,
	}
	if system != "" {
		params.System = []sdk.TextBlockParam{{Text: system}}
	}
	if req.MaxTokens > 0 {
		params.MaxTokens = int64(req.MaxTokens)
	}
	if req.Temperature != nil {
		params.Temperature = sdk.Float(*req.Temperature)
	}

	rctx, cancel := context.WithCancel(ctx)
	s := p.messages.NewStreaming(rctx, params, option.WithAPIKey(cred.APIKey))
	if err := s.Err(); err != nil {
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

func split(in []provider.Message) (string, []sdk.MessageParam) {
	var system []string
	out := make([]sdk.MessageParam, 0, len(in))
	for _, m := range in {
		switch m.Role {
		case provider.RoleSystem:
			system = append(system, m.Content)
		case provider.RoleAssistant:
			out = append(out, sdk.NewAssistantMessage(sdk.NewTextBlock(m.Content)))
		default:
			out = append(out, sdk.NewUserMessage(sdk.NewTextBlock(m.Content)))
		}
	}
	return strings.Join(system, "\n\n"), out
}

// stream turns Messages events into provider chunks: one per non-empty
// text_delta, and a final chunk with usage and finish reason at
// message_stop. Input tokens come from message_start (and from
// message_delta when it carries them), output tokens from message_delta.
type stream struct {
	sdk    *ssestream.Stream[sdk.MessageStreamEventUnion]
	key    string
	usage  provider.Usage
	finish string
	ended  bool
}

func (s *stream) next() (provider.Chunk, error) {
	if s.ended {
		return provider.Chunk{}, io.EOF
	}
	for s.sdk.Next() {
		ev := s.sdk.Current()
		switch ev.Type {
		case "message_start":
			u := ev.Message.Usage
			s.usage.InputTokens = int(u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens)
			s.usage.OutputTokens = int(u.OutputTokens)
		case "content_block_delta":
			if ev.Delta.Type == "text_delta" && ev.Delta.Text != "" {
				return provider.Chunk{Text: ev.Delta.Text}, nil
			}
		case "message_delta":
			u := ev.Usage
			if in := u.InputTokens + u.CacheCreationInputTokens + u.CacheReadInputTokens; in > 0 {
				s.usage.InputTokens = int(in)
			}
			s.usage.OutputTokens = int(u.OutputTokens) // cumulative
			if ev.Delta.StopReason != "" {
				s.finish = Finish(string(ev.Delta.StopReason))
			}
		case "message_stop":
			s.ended = true
			finish := s.finish
			if finish == "" {
				finish = provider.FinishOther
			}
			usage := s.usage
			return provider.Chunk{Usage: &usage, FinishReason: finish}, nil
		}
	}
	if err := s.sdk.Err(); err != nil {
		return provider.Chunk{}, mapError(err, s.key)
	}
	return provider.Chunk{}, &provider.Error{
		Provider: provider.Anthropic, Kind: provider.KindUpstream,
		Message: "stream ended before message_stop",
	}
}

// Finish maps an Anthropic stop_reason to a provider.Finish* value.
func Finish(reason string) string {
	switch reason {
	case "end_turn", "stop_sequence":
		return provider.FinishStop
	case "max_tokens", "model_context_window_exceeded":
		return provider.FinishLength
	case "refusal":
		return provider.FinishFiltered
	case "tool_use":
		return provider.FinishToolCalls
	default:
		return provider.FinishOther
	}
}

// mapError sorts anything the SDK returned into a *provider.Error. The
// SDK's error is not kept as the cause: its text carries the raw response
// body. An error event inside a 200 stream is sorted by its error type.
func mapError(err error, key string) error {
	if errors.Is(err, context.Canceled) || errors.Is(err, context.DeadlineExceeded) {
		return err
	}
	var apiErr *sdk.Error
	if errors.As(err, &apiErr) {
		typ, msg := errorBody(apiErr.RawJSON())
		status := apiErr.StatusCode
		e := &provider.Error{Provider: provider.Anthropic, Message: wire.Message(msg, key)}
		if status >= 200 && status < 300 {
			// An "event: error" in a stream that had started fine.
			e.Kind = KindForType(typ)
		} else {
			e.Status = status
			e.Kind = wire.KindForStatus(status)
			if apiErr.Response != nil {
				e.RetryAfter = wire.RetryAfter(apiErr.Response.Header, time.Now())
			}
		}
		if e.Message == "" {
			e.Message = typ
		}
		if e.Message == "" {
			e.Message = http.StatusText(status)
		}
		return e
	}
	return &provider.Error{
		Provider: provider.Anthropic,
		Kind:     provider.KindUpstream,
		Message:  wire.Message(err.Error(), key),
		Err:      err,
	}
}

// errorBody reads {"type":"error","error":{"type":…,"message":…}}.
func errorBody(raw string) (typ, msg string) {
	var b struct {
		Error struct {
			Type    string `json:"type"`
			Message string `json:"message"`
		} `json:"error"`
	}
	if json.Unmarshal([]byte(raw), &b) != nil {
		return "", ""
	}
	return b.Error.Type, b.Error.Message
}

// KindForType sorts an Anthropic error type, for errors that arrive without
// a meaningful status (an error event mid-stream).
func KindForType(typ string) provider.Kind {
	switch typ {
	case "authentication_error", "permission_error":
		return provider.KindAuth
	case "rate_limit_error":
		return provider.KindRateLimited
	case "overloaded_error":
		return provider.KindOverloaded
	case "invalid_request_error", "not_found_error", "request_too_large":
		return provider.KindBadRequest
	default: // api_error and anything new
		return provider.KindUpstream
	}
}
