package google

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

const key = "AIzaSyUnitTestKey0123456789abcdefXYZ"

func serve(t *testing.T, h http.HandlerFunc) *Provider {
	t.Helper()
	srv := httptest.NewServer(h)
	t.Cleanup(srv.Close)
	return New(provider.Config{BaseURL: srv.URL, HTTPClient: srv.Client()})
}

func run(t *testing.T, p *Provider, req provider.Request) (string, []provider.Chunk, error) {
	t.Helper()
	if req.Model == "" {
		req.Model = "gemini-x"
	}
	if req.Messages == nil {
		req.Messages = []provider.Message{{Role: provider.RoleUser, Content: "hi"}}
	}
	s, err := p.Stream(t.Context(), provider.Credential{APIKey: key}, req)
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

// raw answers with a 200 event stream of exactly body.
func raw(body string) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		io.WriteString(w, body)
	}
}

const (
	hello   = `{"candidates":[{"content":{"parts":[{"text":"hello"}],"role":"model"},"index":0}],"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4},"modelVersion":"gemini-x"}`
	world   = `{"candidates":[{"content":{"parts":[{"text":" world"}],"role":"model"},"finishReason":"STOP","index":0}],"usageMetadata":{"promptTokenCount":4,"candidatesTokenCount":2,"thoughtsTokenCount":5,"totalTokenCount":11},"modelVersion":"gemini-x"}`
	thought = `{"candidates":[{"content":{"parts":[{"text":"thinking...","thought":true}],"role":"model"},"index":0}]}`
)

func TestStreamShapes(t *testing.T) {
	t.Parallel()
	full := provider.Chunk{Usage: &provider.Usage{InputTokens: 4, OutputTokens: 7}, FinishReason: provider.FinishStop}
	cases := []struct {
		name  string
		body  string
		text  string
		final *provider.Chunk
		kind  provider.Kind
	}{
		{"crlf", "data: " + hello + "\r\n\r\ndata: " + world + "\r\n\r\n", "hello world", &full, 0},
		{"lf", "data: " + hello + "\n\ndata: " + world + "\n\n", "hello world", &full, 0},
		{"no blank line at the end", "data: " + hello + "\r\n\r\ndata: " + world, "hello world", &full, 0},
		{"comments and thoughts", ": keep-alive\r\n\r\ndata: " + thought + "\r\n\r\ndata: " + hello + "\r\n\r\ndata: " + world + "\r\n\r\n", "hello world", &full, 0},
		{"data split over lines", "data: {\"candidates\":[{\"content\":{\"parts\":[{\"text\":\"hi\"}]},\r\ndata: \"finishReason\":\"MAX_TOKENS\",\"index\":0}]}\r\n\r\n", "hi",
			&provider.Chunk{FinishReason: provider.FinishLength}, 0},
		{"blocked prompt", `data: {"promptFeedback":{"blockReason":"SAFETY"},"usageMetadata":{"promptTokenCount":4,"totalTokenCount":4}}` + "\r\n\r\n", "",
			&provider.Chunk{Usage: &provider.Usage{InputTokens: 4}, FinishReason: provider.FinishFiltered}, 0},
		{"ends without a finish reason", "data: " + hello + "\r\n\r\n", "hello", nil, provider.KindUpstream},
		{"cut inside an event", "data: " + hello + "\r\n\r\ndata: {\"candidates\":[", "hello", nil, provider.KindUpstream},
		{"error event", "data: " + hello + "\r\n\r\n" + `data: {"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}` + "\r\n\r\n", "hello", nil, provider.KindOverloaded},
		{"error event by status only", `data: {"error":{"message":"quota","status":"RESOURCE_EXHAUSTED"}}` + "\r\n\r\n", "", nil, provider.KindRateLimited},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			text, chunks, err := run(t, serve(t, raw(c.body)), provider.Request{})
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
			if last.Text != "" || last.FinishReason != c.final.FinishReason || (last.Usage == nil) != (c.final.Usage == nil) || (last.Usage != nil && *last.Usage != *c.final.Usage) {
				t.Errorf("final chunk = %+v (usage %+v); want %+v (usage %+v)", last, last.Usage, *c.final, c.final.Usage)
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
	}{
		{"bad key", 400, nil, `{"error":{"code":400,"message":"API key not valid. Please pass a valid API key.","status":"INVALID_ARGUMENT","details":[{"@type":"type.googleapis.com/google.rpc.ErrorInfo","reason":"API_KEY_INVALID","domain":"googleapis.com"}]}}`,
			provider.KindAuth, 0},
		{"bad argument", 400, nil, `{"error":{"code":400,"message":"temperature out of range","status":"INVALID_ARGUMENT"}}`, provider.KindBadRequest, 0},
		{"no key", 403, nil, `{"error":{"code":403,"message":"Method doesn't allow unregistered callers","status":"PERMISSION_DENIED"}}`, provider.KindAuth, 0},
		{"model", 404, nil, `{"error":{"code":404,"message":"models/x is not found","status":"NOT_FOUND"}}`, provider.KindBadRequest, 0},
		{"quota with RetryInfo", 429, nil, `{"error":{"code":429,"message":"You exceeded your current quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.QuotaFailure"},{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}`,
			provider.KindRateLimited, 37 * time.Second},
		{"header beats RetryInfo", 429, map[string]string{"Retry-After": "3"}, `{"error":{"code":429,"status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"37s"}]}}`,
			provider.KindRateLimited, 3 * time.Second},
		{"array body", 429, nil, `[{"error":{"code":429,"message":"quota","status":"RESOURCE_EXHAUSTED","details":[{"@type":"type.googleapis.com/google.rpc.RetryInfo","retryDelay":"1.5s"}]}}]`,
			provider.KindRateLimited, 1500 * time.Millisecond},
		{"internal", 500, nil, `{"error":{"code":500,"message":"An internal error has occurred.","status":"INTERNAL"}}`, provider.KindUpstream, 0},
		{"unavailable", 503, nil, `{"error":{"code":503,"message":"The model is overloaded.","status":"UNAVAILABLE"}}`, provider.KindOverloaded, 0},
		{"html gateway", 502, nil, `<html>502</html>`, provider.KindUpstream, 0},
		{"precondition", 409, nil, `{"error":{"code":409,"message":"conflict","status":"ABORTED"}}`, provider.KindUpstream, 0},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			p := serve(t, func(w http.ResponseWriter, r *http.Request) {
				for k, v := range c.header {
					w.Header().Set(k, v)
				}
				w.Header().Set("Content-Type", "application/json; charset=UTF-8")
				w.WriteHeader(c.status)
				io.WriteString(w, c.body)
			})
			_, _, err := run(t, p, provider.Request{})
			var pe *provider.Error
			if !errors.As(err, &pe) {
				t.Fatalf("error = %v; want *provider.Error", err)
			}
			if pe.Kind != c.kind || pe.Status != c.status || pe.RetryAfter != c.retryAfter || pe.Provider != provider.Google {
				t.Errorf("error = %+v; want kind %s, status %d, retry after %v", pe, c.kind, c.status, c.retryAfter)
			}
			if pe.Message == "" || strings.Contains(err.Error(), key) {
				t.Errorf("error %q: want a message and no key", err.Error())
			}
		})
	}
}

// The request as documented: key in a header (never the URL), roles
// user/model, system turns in systemInstruction, generation config.
func TestRequestOnTheWire(t *testing.T) {
	t.Parallel()
	var r0 *http.Request
	var body string
	p := serve(t, func(w http.ResponseWriter, r *http.Request) {
		r0 = r
		b, _ := io.ReadAll(r.Body)
		body = string(b)
		raw("data: "+world+"\r\n\r\n")(w, r)
	})
	temp := 0.5
	_, _, err := run(t, p, provider.Request{
		Model:       "models/gemini-x",
		Temperature: &temp,
		MaxTokens:   64,
		Messages: []provider.Message{
			{Role: provider.RoleSystem, Content: "be brief"},
			{Role: provider.RoleUser, Content: "q1"},
			{Role: provider.RoleAssistant, Content: "a1"},
			{Role: provider.RoleUser, Content: "q2"},
		},
	})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v", err)
	}
	if got, want := r0.URL.Path, "/v1beta/models/gemini-x:streamGenerateContent"; got != want {
		t.Errorf("path = %q; want %q", got, want)
	}
	if q := r0.URL.Query(); q.Get("alt") != "sse" || q.Has("key") {
		t.Errorf("query = %q; want alt=sse and no key", r0.URL.RawQuery)
	}
	if got := r0.Header.Get("X-Goog-Api-Key"); got != key {
		t.Errorf("x-goog-api-key = %q; want the user's key", got)
	}
	want := `{"contents":[{"role":"user","parts":[{"text":"q1"}]},{"role":"model","parts":[{"text":"a1"}]},{"role":"user","parts":[{"text":"q2"}]}],"systemInstruction":{"parts":[{"text":"be brief"}]},"generationConfig":{"temperature":0.5,"maxOutputTokens":64}}`
	if body != want {
		t.Errorf("body = %s\nwant   %s", body, want)
	}
}

func TestBaseURLVersion(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"":                                 "https://generativelanguage.googleapis.com/v1beta",
		"http://127.0.0.1:9/google":        "http://127.0.0.1:9/google/v1beta",
		"http://127.0.0.1:9/google/":       "http://127.0.0.1:9/google/v1beta",
		"http://127.0.0.1:9/google/v1beta": "http://127.0.0.1:9/google/v1beta",
		"http://127.0.0.1:9/google/v1":     "http://127.0.0.1:9/google/v1",
	} {
		if got := New(provider.Config{BaseURL: in}).base; got != want {
			t.Errorf("New(BaseURL %q).base = %q; want %q", in, got, want)
		}
	}
}

func TestFinish(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]string{
		"STOP": provider.FinishStop, "MAX_TOKENS": provider.FinishLength, "SAFETY": provider.FinishFiltered,
		"RECITATION": provider.FinishFiltered, "BLOCKLIST": provider.FinishFiltered, "PROHIBITED_CONTENT": provider.FinishFiltered,
		"SPII": provider.FinishFiltered, "MALFORMED_FUNCTION_CALL": provider.FinishOther, "OTHER": provider.FinishOther,
	} {
		if got := Finish(in); got != want {
			t.Errorf("Finish(%q) = %q; want %q", in, got, want)
		}
	}
}

func TestKindForStatus(t *testing.T) {
	t.Parallel()
	for in, want := range map[string]provider.Kind{
		"UNAUTHENTICATED": provider.KindAuth, "PERMISSION_DENIED": provider.KindAuth, "RESOURCE_EXHAUSTED": provider.KindRateLimited,
		"UNAVAILABLE": provider.KindOverloaded, "INVALID_ARGUMENT": provider.KindBadRequest, "NOT_FOUND": provider.KindBadRequest,
		"FAILED_PRECONDITION": provider.KindBadRequest, "INTERNAL": provider.KindUpstream, "DEADLINE_EXCEEDED": provider.KindUpstream, "": provider.KindUpstream,
	} {
		if got := KindForStatus(in); got != want {
			t.Errorf("KindForStatus(%q) = %s; want %s", in, got, want)
		}
	}
}
