package anthropic

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

const key = "sk-ant-api03-unitTestKey0123456789abcdefXYZ"

func serve(t *testing.T, h http.HandlerFunc) *Provider {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(provider.Config{BaseURL: srv.URL, HTTPClient: srv.Client()})
}

func run(t *testing.T, p *Provider, msgs ...provider.Message) (string, []provider.Chunk, error) {
	t.Helper()
	if len(msgs) == 0 {
		msgs = []provider.Message{{Role: provider.RoleUser, Content: "hi"}}
	}
	s, err := p.Stream(t.Context(), provider.Credential{APIKey: key}, provider.Request{Model: "claude-x", Messages: msgs})
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

// events answers with named SSE events, each "name|json".
func events(evs ...string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		for _, e := range evs {
			name, data, _ := strings.Cut(e, "|")
			io.WriteString(w, "event: "+name+"\ndata: "+data+"\n\n")
		}
	}
}

const (
	start      = `message_start|{"type":"message_start","message":{"id":"msg_1","type":"message","role":"assistant","model":"claude-x","content":[],"stop_reason":null,"stop_sequence":null,"usage":{"input_tokens":10,"cache_creation_input_tokens":3,"cache_read_input_tokens":2,"output_tokens":1}}}`
	blockStart = `content_block_start|{"type":"content_block_start","index":0,"content_block":{"type":"text","text":""}}`
	ping       = `ping|{"type": "ping"}`
	hello      = `content_block_delta|{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":"hello"}}`
	world      = `content_block_delta|{"type":"content_block_delta","index":0,"delta":{"type":"text_delta","text":" world"}}`
	blockStop  = `content_block_stop|{"type":"content_block_stop","index":0}`
	delta      = `message_delta|{"type":"message_delta","delta":{"stop_reason":"end_turn","stop_sequence":null},"usage":{"output_tokens":2}}`
	stop       = `message_stop|{"type":"message_stop"}`
)

func errorEvent(typ string) string {
	return `error|{"type":"error","error":{"type":"` + typ + `","message":"went wrong: ` + typ + `"}}`
}

func TestStreamShapes(t *testing.T) {
	t.Parallel()
	full := provider.Chunk{Usage: &provider.Usage{InputTokens: 15, OutputTokens: 2}, FinishReason: provider.FinishStop}
	cases := []struct {
		name   string
		events []string
		text   string
		final  *provider.Chunk
		kind   provider.Kind
	}{
		{"complete", []string{start, blockStart, ping, hello, world, blockStop, delta, stop}, "hello world", &full, 0},
		{"no message_stop", []string{start, blockStart, hello, blockStop, delta}, "hello", nil, provider.KindUpstream},
		{"overloaded mid-stream", []string{start, blockStart, hello, errorEvent("overloaded_error")}, "hello", nil, provider.KindOverloaded},
		{"api error mid-stream", []string{start, blockStart, hello, errorEvent("api_error")}, "hello", nil, provider.KindUpstream},
		{"rate limit mid-stream", []string{start, errorEvent("rate_limit_error")}, "", nil, provider.KindRateLimited},
		{"error before anything", []string{errorEvent("overloaded_error")}, "", nil, provider.KindOverloaded},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text, chunks, err := run(t, serve(t, events(c.events...)))
			if text != c.text {
				t.Errorf("text = %q; want %q", text, c.text)
			}
			if c.final == nil {
				var pe *provider.Error
				if !errors.As(err, &pe) || pe.Kind != c.kind {
					t.Errorf("ended with %v; want a %s error", err, c.kind)
				} else if pe.Status != 0 {
					t.Errorf("a stream error reports status %d; want 0 (the 200 said nothing about it)", pe.Status)
				}
				return
			}
			if !errors.Is(err, io.EOF) {
				t.Fatalf("ended with %v; want io.EOF", err)
			}
			last := chunks[len(chunks)-1]
			if last.FinishReason != c.final.FinishReason || last.Usage == nil || *last.Usage != *c.final.Usage {
				t.Errorf("final chunk = %+v (usage %+v); want %+v (usage %+v)", last, last.Usage, *c.final, c.final.Usage)
			}
		})
	}
}

func TestErrorAnswers(t *testing.T) {
	t.Parallel()
	body := func(typ, msg string) string {
		return `{"type":"error","error":{"type":"` + typ + `","message":"` + msg + `"},"request_id":"req_1"}`
	}
	cases := []struct {
		status     int
		header     map[string]string
		body       string
		kind       provider.Kind
		retryAfter time.Duration
	}{
		{400, nil, body("invalid_request_error", "messages: field required"), provider.KindBadRequest, 0},
		{401, nil, body("authentication_error", "invalid x-api-key"), provider.KindAuth, 0},
		{403, nil, body("permission_error", "no access"), provider.KindAuth, 0},
		{404, nil, body("not_found_error", "model: claude-x"), provider.KindBadRequest, 0},
		{413, nil, body("request_too_large", "too large"), provider.KindBadRequest, 0},
		{429, map[string]string{"Retry-After": "12"}, body("rate_limit_error", "rate limited"), provider.KindRateLimited, 12 * time.Second},
		{500, nil, body("api_error", "Internal server error"), provider.KindUpstream, 0},
		{529, nil, body("overloaded_error", "Overloaded"), provider.KindOverloaded, 0},
		{502, nil, "<html>bad gateway</html>", provider.KindUpstream, 0},
	}
	for _, c := range cases {
		t.Run(http.StatusText(c.status), func(t *testing.T) {
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
			if pe.Kind != c.kind || pe.Status != c.status || pe.RetryAfter != c.retryAfter || pe.Provider != provider.Anthropic {
				t.Errorf("error = %+v; want kind %s, status %d, retry after %v", pe, c.kind, c.status, c.retryAfter)
			}
			if pe.Message == "" || strings.Contains(err.Error(), key) || pe.Err != nil {
				t.Errorf("error %q (cause %v): want a message, no key, no SDK error kept", err.Error(), pe.Err)
			}
		})
	}
}

// System turns go to the system field; the server's environment does not
// steer a user's request; the key travels in x-api-key.
func TestRequestOnTheWire(t *testing.T) {
	t.Setenv("ANTHROPIC_BASE_URL", "http://127.0.0.1:1")
	t.Setenv("ANTHROPIC_API_KEY", "sk-ant-operator")
	t.Setenv("ANTHROPIC_AUTH_TOKEN", "operator-token")
	var hdr http.Header
	var path, reqBody string
	p := serve(t, func(w http.ResponseWriter, r *http.Request) {
		hdr, path = r.Header.Clone(), r.URL.Path
		b, _ := io.ReadAll(r.Body)
		reqBody = string(b)
		events(start, hello, delta, stop)(w, r)
	})
	_, _, err := run(t, p,
		provider.Message{Role: provider.RoleSystem, Content: "be brief"},
		provider.Message{Role: provider.RoleUser, Content: "hi"},
		provider.Message{Role: provider.RoleSystem, Content: "and kind"},
	)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v", err)
	}
	if path != "/v1/messages" {
		t.Errorf("path = %q; want /v1/messages", path)
	}
	if got := hdr.Get("X-Api-Key"); got != key {
		t.Errorf("x-api-key = %q; want the user's key", got)
	}
	if got := hdr.Get("Authorization"); got != "" {
		t.Errorf("Authorization = %q; want none", got)
	}
	if hdr.Get("Anthropic-Version") == "" {
		t.Errorf("no anthropic-version header")
	}
	for _, want := range []string{`"system":[{"text":"be brief\n\nand kind","type":"text"}]`, `"max_tokens":4096`, `"stream":true`} {
		if !strings.Contains(reqBody, want) {
			t.Errorf("request body %s lacks %s", reqBody, want)
		}
	}
	if strings.Contains(reqBody, `"role":"system"`) {
		t.Errorf("request body %s sends a system role", reqBody)
	}
}

func TestFinish(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"end_turn": provider.FinishStop, "stop_sequence": provider.FinishStop, "max_tokens": provider.FinishLength,
		"model_context_window_exceeded": provider.FinishLength, "refusal": provider.FinishFiltered,
		"tool_use": provider.FinishToolCalls, "pause_turn": provider.FinishOther, "": provider.FinishOther,
	} {
		if got := Finish(in); got != want {
			t.Errorf("Finish(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestKindForType(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]provider.Kind{
		"authentication_error": provider.KindAuth, "permission_error": provider.KindAuth,
		"rate_limit_error": provider.KindRateLimited, "overloaded_error": provider.KindOverloaded,
		"invalid_request_error": provider.KindBadRequest, "not_found_error": provider.KindBadRequest,
		"request_too_large": provider.KindBadRequest, "api_error": provider.KindUpstream, "new_error": provider.KindUpstream,
	} {
		if got := KindForType(in); got != want {
			t.Errorf("KindForType(%q) = %s; want %s", in, got, want)
		}
	}
}
