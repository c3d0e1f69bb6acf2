package openai

import (
	"errors"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"polydev/internal/provider"
)

const key = "sk-proj-unitTestKey0123456789abcdefXYZ"

// serve answers every request with h and returns an adapter pointed at it.
func serve(t *testing.T, h http.HandlerFunc) *Provider {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(provider.Config{BaseURL: srv.URL + "/v1", HTTPClient: srv.Client()})
}

func run(t *testing.T, p *Provider) (string, []provider.Chunk, error) {
	t.Helper()
	s, err := p.Stream(t.Context(), provider.Credential{APIKey: key}, provider.Request{Model: "m", Messages: []provider.Message{{Role: provider.RoleUser, Content: "hi"}}})
	if err != nil {
		return "", nil, err
	}
	defer s.Close()
	var text strings.Builder
	var chunks []provider.Chunk
	for {
		c, err := s.Next()
		if err != nil {
			return text.String(), chunks, err
		}
		chunks = append(chunks, c)
		text.WriteString(c.Text)
	}
}

func sse(events ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range events {
			io.WriteString(w, "data: "+e+"\n\n")
		}
	}
}

const (
	role   = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"role":"assistant","content":""},"finish_reason":null}]}`
	hello  = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{"content":"hello"},"finish_reason":null}]}`
	stop   = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"stop"}]}`
	usage  = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[],"usage":{"prompt_tokens":5,"completion_tokens":1,"total_tokens":6}}`
	filter = `{"id":"c","object":"chat.completion.chunk","created":1,"model":"m","choices":[{"index":0,"delta":{},"finish_reason":"content_filter"}]}`
)

func TestStreamShapes(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		events []string
		text   string
		final  *provider.Chunk // nil: the stream must fail
		kind   provider.Kind
	}{
		{"complete", []string{role, hello, stop, usage, "[DONE]"}, "hello",
			&provider.Chunk{Usage: &provider.Usage{InputTokens: 5, OutputTokens: 1}, FinishReason: provider.FinishStop}, 0},
		{"no usage chunk", []string{role, hello, stop, "[DONE]"}, "hello", &provider.Chunk{FinishReason: provider.FinishStop}, 0},
		{"filtered", []string{role, filter, usage, "[DONE]"}, "",
			&provider.Chunk{Usage: &provider.Usage{InputTokens: 5, OutputTokens: 1}, FinishReason: provider.FinishFiltered}, 0},
		{"body ends without a finish reason", []string{role, hello}, "hello", nil, provider.KindUpstream},
		{"error event", []string{role, hello, `{"error":{"message":"The server had an error","type":"server_error","param":null,"code":null}}`}, "hello", nil, provider.KindUpstream},
		{"rate limit event", []string{role, `{"error":{"message":"slow down","type":"requests","code":"rate_limit_exceeded"}}`}, "", nil, provider.KindRateLimited},
		{"malformed event", []string{role, `{"choices":[`}, "", nil, provider.KindUpstream},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text, chunks, err := run(t, serve(t, sse(c.events...)))
			if text != c.text {
				t.Errorf("text = %q; want %q", text, c.text)
			}
			if c.final == nil {
				if provider.KindOf(err) != c.kind || errors.Is(err, io.EOF) {
					t.Errorf("ended with %v; want a %s error", err, c.kind)
				}
				return
			}
			if !errors.Is(err, io.EOF) {
				t.Fatalf("ended with %v; want io.EOF", err)
			}
			last := chunks[len(chunks)-1]
			if last.FinishReason != c.final.FinishReason || (last.Usage == nil) != (c.final.Usage == nil) || (last.Usage != nil && *last.Usage != *c.final.Usage) {
				t.Errorf("final chunk = %+v (usage %+v); want %+v (usage %+v)", last, last.Usage, *c.final, c.final.Usage)
			}
			for _, ch := range chunks[:len(chunks)-1] {
				if ch.Text == "" {
					t.Errorf("empty chunk before the final one: %+v", ch)
				}
			}
		})
	}
}

func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name       string
		status     int
		header     map[string]string
		body       string
		kind       provider.Kind
		retryAfter time.Duration
		message    string // a part the message must carry
	}{
		{"bad key", 401, nil, `{"error":{"message":"Incorrect API key provided: sk-proj-********************************XYZ. You can find your API key at https://platform.openai.com/account/api-keys.","type":"invalid_request_error","param":null,"code":"invalid_api_key"}}`,
			provider.KindAuth, 0, "Incorrect API key provided"},
		{"key echoed whole", 401, nil, `{"error":{"message":"key ` + key + ` is revoked","type":"invalid_request_error","code":"invalid_api_key"}}`,
			provider.KindAuth, 0, "[REDACTED]"},
		{"region", 403, nil, `{"error":{"message":"Country, region, or territory not supported","type":"request_forbidden","code":"unsupported_country_region_territory"}}`,
			provider.KindAuth, 0, "Country"},
		{"rate limit with ms", 429, map[string]string{"Retry-After": "2", "Retry-After-Ms": "1500"}, `{"error":{"message":"Rate limit reached","type":"requests","code":"rate_limit_exceeded"}}`,
			provider.KindRateLimited, 1500 * time.Millisecond, "Rate limit"},
		{"quota", 429, nil, `{"error":{"message":"You exceeded your current quota","type":"insufficient_quota","code":"insufficient_quota"}}`,
			provider.KindRateLimited, 0, "quota"},
		{"model", 404, nil, `{"error":{"message":"The model does not exist","type":"invalid_request_error","code":"model_not_found"}}`,
			provider.KindBadRequest, 0, "does not exist"},
		{"too large", 413, nil, `{"error":{"message":"Request too large","type":"invalid_request_error"}}`, provider.KindBadRequest, 0, "too large"},
		{"server", 500, nil, `{"error":{"message":"The server had an error","type":"server_error"}}`, provider.KindUpstream, 0, "server had"},
		{"gateway html", 502, nil, `<html>Bad Gateway</html>`, provider.KindUpstream, 0, "Bad Gateway"},
		{"overloaded", 503, map[string]string{"Retry-After": "3"}, `{"error":{"message":"The engine is currently overloaded","type":"server_error"}}`, provider.KindOverloaded, 3 * time.Second, "overloaded"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := serve(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json")
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			})
			_, _, err := run(t, p)
			var pe *provider.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error = %v; want *provider.Error", err)
			}
			if pe.Kind != c.kind || pe.Status != c.status || pe.RetryAfter != c.retryAfter || pe.Provider != provider.OpenAI {
				t.Errorf("error = %+v; want kind %s, status %d, retry after %v", pe, c.kind, c.status, c.retryAfter)
			}
			if !strings.Contains(pe.Message, c.message) {
				t.Errorf("message = %q; want it to carry %q", pe.Message, c.message)
			}
			if strings.Contains(err.Error(), key) || strings.Contains(err.Error(), key[:10]) || pe.Err != nil {
				t.Errorf("error reveals the key or keeps the SDK error: %q (cause %v)", err.Error(), pe.Err)
			}
		})
	}
}

// The server's environment does not steer a user's request.
func TestIgnoresEnvironment(t *testing.T) {
	t.Setenv("OPENAI_BASE_URL", "http://127.0.0.1:1/v1")
	t.Setenv("OPENAI_API_KEY", "sk-operator")
	t.Setenv("OPENAI_ORG_ID", "org-operator")
	t.Setenv("OPENAI_PROJECT_ID", "proj-operator")
	var got http.Header
	var path string
	p := serve(t, func(w http.ResponseWriter, r *http.Request) {
		got, path = r.Header.Clone(), r.URL.Path
		sse(role, hello, stop, usage, "[DONE]")(w, r)
	})
	if _, _, err := run(t, p); !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v", err)
	}
	if path != "/v1/chat/completions" {
		t.Errorf("path = %q; want /v1/chat/completions", path)
	}
	if a := got.Get("Authorization"); a != "Bearer "+key {
		t.Errorf("Authorization = %q; want the user's key", a)
	}
	for _, h := range []string{"OpenAI-Organization", "OpenAI-Project"} {
		if v := got.Get(h); v != "" {
			t.Errorf("%s = %q; want none", h, v)
		}
	}
}

func TestFinish(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"stop": provider.FinishStop, "length": provider.FinishLength, "content_filter": provider.FinishFiltered,
		"tool_calls": provider.FinishToolCalls, "function_call": provider.FinishToolCalls, "something_new": provider.FinishOther,
	} {
		if got := Finish(in); got != want {
			t.Errorf("Finish(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestKindForType(t *testing.T) {
	t.Parallel()
	cases := []struct {
		typ, code string
		want      provider.Kind
	}{
		{"invalid_request_error", "", provider.KindBadRequest},
		{"authentication_error", "", provider.KindAuth},
		{"", "invalid_api_key", provider.KindAuth},
		{"requests", "rate_limit_exceeded", provider.KindRateLimited},
		{"rate_limit_error", "", provider.KindRateLimited},
		{"server_error", "server_is_overloaded", provider.KindOverloaded},
		{"server_error", "", provider.KindUpstream},
		{"", "", provider.KindUpstream},
	}
	for _, c := range cases {
		if got := kindForType(c.typ, c.code); got != c.want {
			t.Errorf("kindForType(%q, %q) = %s; want %s", c.typ, c.code, got, c.want)
		}
	}
}
