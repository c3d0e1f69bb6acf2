// Package google is the Google Gemini adapter: generateContent streaming
// (models/{model}:streamGenerateContent?alt=sse) over plain HTTP and
// Server-Sent Events, following the documented REST API.
//
// It does not use google.golang.org/genai: that SDK brings about 200
// non-standard-library packages (gRPC, protobuf, OpenCensus, S2A, Cloud
// auth) for what is one POST and an event stream here; docs/providers.md
// has the figures.
package google

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"time"

	"polydev/internal/provider"
	"polydev/internal/provider/wire"
)

// DefaultBaseURL is the public API root. As with the genai SDKs, the
// adapter adds the API version (APIVersion) unless the base URL already
// ends with one.
const DefaultBaseURL = "https://generativelanguage.googleapis.com"

// APIVersion is the Gemini API version the adapter speaks: v1beta carries
// systemInstruction and every current model.
const APIVersion = "v1beta"

// maxErrorBody bounds how much of an error answer is read.
const maxErrorBody = 64 << 10

// Provider streams generateContent answers from the Gemini API.
type Provider struct {
	base string
	hc   *http.Client
}

var _ provider.Provider = (*Provider)(nil)

// New returns the adapter for cfg. cfg.BaseURL is the API root, e.g.
// "https://generativelanguage.googleapis.com" (the default), to which
// "/v1beta" is added; a base URL that ends in "/v1beta" or "/v1" is used
// as it is.
func New(cfg provider.Config) *Provider {
	base := strings.TrimRight(cfg.BaseURL, "/")
	if base == "" {
		base = DefaultBaseURL
	}
	if !strings.HasSuffix(base, "/v1beta") && !strings.HasSuffix(base, "/v1") {
		base += "/" + APIVersion
	}
	hc := cfg.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	return &Provider{base: base, hc: hc}
}

// Name returns provider.Google.
func (*Provider) Name() string { return provider.Google }

// The request body, as https://ai.google.dev/api/generate-content documents it.
type (
	part struct {
		Text    string `json:"text"`
		Thought bool   `json:"thought,omitempty"`
	}
	content struct {
		Role  string `json:"role,omitempty"`
		Parts []part `json:"parts"`
	}
	generationConfig struct {
		Temperature     *float64 `json:"temperature,omitempty"`
		MaxOutputTokens int      `json:"maxOutputTokens,omitempty"`
	}
	request struct {
		Contents          []content         `json:"contents"`
		SystemInstruction *content          `json:"systemInstruction,omitempty"`
		GenerationConfig  *generationConfig `json:"generationConfig,omitempty"`
	}
)

// Stream starts a streaming generateContent call. System turns are joined
// into systemInstruction; assistant turns are sent with role "model". The
// key travels in the x-goog-api-key header, never in the URL.
func (p *Provider) Stream(ctx context.Context, cred provider.Credential, req provider.Request) (provider.Stream, error) {
	body, err := json.Marshal(build(req))
	if err != nil {
		return nil, fmt.Errorf("google: encode request: %w", err)
	}
	model := strings.TrimPrefix(req.Model, "models/")
	u := p.base + "/models/" + url.PathEscape(model) + ":streamGenerateContent?alt=sse"

	rctx, cancel := context.WithCancel(ctx)
	hreq, err := http.NewRequestWithContext(rctx, http.MethodPost, u, bytes.NewReader(body))
	if err != nil {
		cancel()
		return nil, &provider.Error{Provider: provider.Google, Kind: provider.KindBadRequest, Message: "cannot build the request URL", Err: err}
	}
	hreq.Header.Set("Content-Type", "application/json")
	hreq.Header.Set("Accept", "text/event-stream")
	hreq.Header.Set("X-Goog-Api-Key", cred.APIKey)

	resp, err := p.hc.Do(hreq)
	if err != nil {
		cancel()
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, &provider.Error{Provider: provider.Google, Kind: provider.KindUpstream,
			Message: wire.Message(err.Error(), cred.APIKey), Err: err}
	}
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		defer cancel()
		defer resp.Body.Close()
		b, rerr := io.ReadAll(io.LimitReader(resp.Body, maxErrorBody))
		if rerr != nil && ctx.Err() != nil {
			return nil, ctx.Err()
		}
		return nil, httpError(resp.StatusCode, resp.Header, b, cred.APIKey)
	}
	st := &stream{events: newEventReader(resp.Body), key: cred.APIKey}
	return wire.NewStream(ctx, cancel, st.next, resp.Body.Close), nil
}

func build(req provider.Request) request {
	var r request
	var system []string
	for _, m := range req.Messages {
		switch m.Role {
		case provider.RoleSystem:
			system = append(system, m.Content)
		case provider.RoleAssistant:
			r.Contents = append(r.Contents, content{Role: "model", Parts: []part{{Text: m.Content}}})
		default:
			r.Contents = append(r.Contents, content{Role: "user", Parts: []part{{Text: m.Content}}})
		}
	}
	if len(system) > 0 {
		r.SystemInstruction = &content{Parts: []part{{Text: strings.Join(system, "\n\n")}}}
	}
	if req.Temperature != nil || req.MaxTokens > 0 {
		r.GenerationConfig = &generationConfig{Temperature: req.Temperature, MaxOutputTokens: req.MaxTokens}
	}
	return r
}

// response is one GenerateContentResponse, as each event carries it (or an
// error object, when the stream fails after it started).
type response struct {
	Candidates []struct {
		Content      content `json:"content"`
		FinishReason string  `json:"finishReason"`
		Index        int     `json:"index"`
	} `json:"candidates"`
	PromptFeedback *struct {
		BlockReason string `json:"blockReason"`
	} `json:"promptFeedback"`
	UsageMetadata *struct {
		PromptTokenCount     int `json:"promptTokenCount"`
		CandidatesTokenCount int `json:"candidatesTokenCount"`
		ThoughtsTokenCount   int `json:"thoughtsTokenCount"`
	} `json:"usageMetadata"`
	Error *apiError `json:"error"`
}

// stream turns events into provider chunks: one per event with answer
// text, and a final chunk with usage and finish reason when the body ends.
// Gemini has no terminator event: the answer is complete when the body
// ends after a candidate carried a finishReason.
type stream struct {
	events *eventReader
	key    string
	usage  *provider.Usage
	finish string
	ended  bool
}

func (s *stream) next() (provider.Chunk, error) {
	if s.ended {
		return provider.Chunk{}, io.EOF
	}
	for {
		data, err := s.events.next()
		if errors.Is(err, io.EOF) {
			if s.finish == "" {
				return provider.Chunk{}, &provider.Error{Provider: provider.Google, Kind: provider.KindUpstream,
					Message: "stream ended before a finish reason"}
			}
			s.ended = true
			return provider.Chunk{Usage: s.usage, FinishReason: s.finish}, nil
		}
		if err != nil {
			return provider.Chunk{}, &provider.Error{Provider: provider.Google, Kind: provider.KindUpstream,
				Message: wire.Message("reading the stream: "+err.Error(), s.key), Err: err}
		}
		var r response
		if err := json.Unmarshal(data, &r); err != nil {
			return provider.Chunk{}, &provider.Error{Provider: provider.Google, Kind: provider.KindUpstream,
				Message: "malformed event in the stream", Err: err}
		}
		if r.Error != nil {
			return provider.Chunk{}, r.Error.toError(0, nil, s.key)
		}
		if u := r.UsageMetadata; u != nil {
			s.usage = &provider.Usage{InputTokens: u.PromptTokenCount, OutputTokens: u.CandidatesTokenCount + u.ThoughtsTokenCount}
		}
		if r.PromptFeedback != nil && r.PromptFeedback.BlockReason != "" && len(r.Candidates) == 0 {
			s.finish = provider.FinishFiltered
		}
		var text strings.Builder
		for _, c := range r.Candidates {
			if c.Index != 0 {
				continue
			}
			for _, p := range c.Content.Parts {
				if !p.Thought {
					text.WriteString(p.Text)
				}
			}
			if c.FinishReason != "" {
				s.finish = Finish(c.FinishReason)
			}
		}
		if text.Len() > 0 {
			return provider.Chunk{Text: text.String()}, nil
		}
	}
}

// Finish maps a Gemini finishReason to a provider.Finish* value.
func Finish(reason string) string {
	switch reason {
	case "STOP":
		return provider.FinishStop
	case "MAX_TOKENS":
		return provider.FinishLength
	case "SAFETY", "RECITATION", "BLOCKLIST", "PROHIBITED_CONTENT", "SPII", "IMAGE_SAFETY", "LANGUAGE":
		return provider.FinishFiltered
	default: // MALFORMED_FUNCTION_CALL, OTHER, FINISH_REASON_UNSPECIFIED, anything new
		return provider.FinishOther
	}
}

// eventReader reads the data of Server-Sent Events. Gemini ends lines with
// "\r\n"; the reader takes "\n" and "\r\n" alike.
type eventReader struct {
	r *bufio.Reader
}

// maxEvent bounds one event's size, so a broken upstream cannot grow it
// without end.
const maxEvent = 8 << 20

func newEventReader(r io.Reader) *eventReader { return &eventReader{r: bufio.NewReaderSize(r, 32<<10)} }

// next returns the data of the next event (its data lines joined by "\n"),
// io.EOF at a clean end, or the read error.
func (e *eventReader) next() ([]byte, error) {
	var data []byte
	has := false
	for {
		line, err := e.line()
		if err != nil {
			if errors.Is(err, io.EOF) && has {
				return data, nil // the last event lacked its blank line
			}
			return nil, err
		}
		if len(line) == 0 {
			if has {
				return data, nil
			}
			continue
		}
		name, value, _ := bytes.Cut(line, []byte(":"))
		value = bytes.TrimPrefix(value, []byte(" "))
		if string(name) == "data" {
			if has {
				data = append(data, '\n')
			}
			data = append(data, value...)
			has = true
			if len(data) > maxEvent {
				return nil, fmt.Errorf("event larger than %d bytes", maxEvent)
			}
		}
		// "event", "id", "retry" and comments carry nothing Gemini uses.
	}
}

// line returns the next line without its ending; a last line without one
// is returned as it is.
func (e *eventReader) line() ([]byte, error) {
	var line []byte
	for {
		frag, err := e.r.ReadSlice('\n')
		line = append(line, frag...)
		if len(line) > maxEvent {
			return nil, fmt.Errorf("line longer than %d bytes", maxEvent)
		}
		switch {
		case errors.Is(err, bufio.ErrBufferFull):
			continue
		case errors.Is(err, io.EOF) && len(line) > 0:
			return bytes.TrimRight(line, "\r"), nil
		case err != nil:
			return nil, err
		}
		return bytes.TrimRight(line, "\r\n"), nil
	}
}

// apiError is Gemini's error object (google.rpc.Status in JSON).
type apiError struct {
	Code    int               `json:"code"`
	Message string            `json:"message"`
	Status  string            `json:"status"`
	Details []json.RawMessage `json:"details"`
}

// httpError sorts an error answer: body is {"error": {...}} or, from some
// streaming front ends, a one-element array of it.
func httpError(status int, h http.Header, body []byte, key string) error {
	var one struct {
		Error *apiError `json:"error"`
	}
	trimmed := bytes.TrimSpace(body)
	if len(trimmed) > 0 && trimmed[0] == '[' {
		var many []struct {
			Error *apiError `json:"error"`
		}
		if json.Unmarshal(trimmed, &many) == nil && len(many) > 0 {
			one.Error = many[0].Error
		}
	} else {
		_ = json.Unmarshal(trimmed, &one)
	}
	if one.Error == nil {
		one.Error = &apiError{Message: http.StatusText(status)}
	}
	return one.Error.toError(status, h, key)
}

// toError builds the provider error. status is the HTTP status, or 0 for an
// error event inside a stream (then the error's own code and status decide).
func (a *apiError) toError(status int, h http.Header, key string) *provider.Error {
	e := &provider.Error{Provider: provider.Google, Status: status, Message: wire.Message(a.Message, key)}
	code := status
	if code == 0 {
		code = a.Code
	}
	e.Kind = wire.KindForStatus(code)
	if code == 0 || (e.Kind == provider.KindUpstream && code < 500) {
		e.Kind = KindForStatus(a.Status)
	}
	reason, delay := a.details()
	if reason == "API_KEY_INVALID" || reason == "API_KEY_SERVICE_BLOCKED" {
		// Gemini answers a bad key with 400 INVALID_ARGUMENT; it is still
		// the credential that was refused.
		e.Kind = provider.KindAuth
	}
	e.RetryAfter = wire.RetryAfter(h, time.Now())
	if e.RetryAfter == 0 {
		e.RetryAfter = delay
	}
	if e.Message == "" {
		e.Message = a.Status
	}
	return e
}

// details returns the ErrorInfo reason and the RetryInfo delay, if any.
func (a *apiError) details() (reason string, delay time.Duration) {
	for _, raw := range a.Details {
		var d struct {
			Type       string `json:"@type"`
			Reason     string `json:"reason"`
			RetryDelay string `json:"retryDelay"`
		}
		if json.Unmarshal(raw, &d) != nil {
			continue
		}
		switch {
		case strings.HasSuffix(d.Type, "google.rpc.ErrorInfo"):
			reason = d.Reason
		case strings.HasSuffix(d.Type, "google.rpc.RetryInfo"):
			// A protobuf Duration in JSON: seconds with an "s" suffix.
			if v, err := time.ParseDuration(d.RetryDelay); err == nil && v > 0 {
				delay = v
			}
		}
	}
	return reason, delay
}

// KindForStatus sorts a google.rpc status name, for errors that arrive
// without an HTTP status (an error event mid-stream).
func KindForStatus(status string) provider.Kind {
	switch status {
	case "UNAUTHENTICATED", "PERMISSION_DENIED":
		return provider.KindAuth
	case "RESOURCE_EXHAUSTED":
		return provider.KindRateLimited
	case "UNAVAILABLE":
		return provider.KindOverloaded
	case "INVALID_ARGUMENT", "NOT_FOUND", "FAILED_PRECONDITION", "OUT_OF_RANGE":
		return provider.KindBadRequest
	default: // INTERNAL, DEADLINE_EXCEEDED, UNKNOWN, …
		return provider.KindUpstream
	}
}
