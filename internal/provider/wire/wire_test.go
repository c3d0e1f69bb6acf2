package wire

import (
	"context"
	"errors"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"

	"polydev/internal/provider"
)

func TestKindForStatus(t *testing.T) {
	t.Parallel()
	cases := []struct {
		status int
		want   provider.Kind
	}{
		{400, provider.KindBadRequest},
		{401, provider.KindAuth},
		{403, provider.KindAuth},
		{404, provider.KindBadRequest},
		{408, provider.KindUpstream},
		{409, provider.KindUpstream},
		{413, provider.KindBadRequest},
		{422, provider.KindBadRequest},
		{429, provider.KindRateLimited},
		{500, provider.KindUpstream},
		{502, provider.KindUpstream},
		{503, provider.KindOverloaded},
		{504, provider.KindUpstream},
		{529, provider.KindOverloaded},
		{0, provider.KindUpstream},
	}
	for _, c := range cases {
		if got := KindForStatus(c.status); got != c.want {
			t.Errorf("KindForStatus(%d) = %s; want %s", c.status, got, c.want)
		}
	}
}

func TestRetryAfter(t *testing.T) {
	t.Parallel()
	now := time.Date(2026, 1, 2, 3, 4, 5, 0, time.UTC)
	cases := []struct {
		name string
		h    map[string]string
		want time.Duration
	}{
		{"none", nil, 0},
		{"seconds", map[string]string{"Retry-After": "7"}, 7 * time.Second},
		{"fractional seconds", map[string]string{"Retry-After": "1.5"}, 1500 * time.Millisecond},
		{"milliseconds win", map[string]string{"Retry-After": "7", "Retry-After-Ms": "250"}, 250 * time.Millisecond},
		{"fractional milliseconds", map[string]string{"Retry-After-Ms": "0.5"}, 500 * time.Microsecond},
		{"bad milliseconds fall back", map[string]string{"Retry-After": "3", "Retry-After-Ms": "soon"}, 3 * time.Second},
		{"http date", map[string]string{"Retry-After": now.Add(90 * time.Second).Format(http.TimeFormat)}, 90 * time.Second},
		{"date in the past", map[string]string{"Retry-After": now.Add(-time.Minute).Format(http.TimeFormat)}, 0},
		{"zero", map[string]string{"Retry-After": "0"}, 0},
		{"negative", map[string]string{"Retry-After": "-5"}, 0},
		{"garbage", map[string]string{"Retry-After": "tomorrow"}, 0},
		{"infinite", map[string]string{"Retry-After": "Inf"}, 0},
		{"huge is clamped", map[string]string{"Retry-After": "1e30"}, 24 * time.Hour},
	}
	for _, c := range cases {
		h := http.Header{}
		for k, v := range c.h {
			h.Set(k, v)
		}
		if got := RetryAfter(h, now); got != c.want {
			t.Errorf("%s: RetryAfter(%v) = %v; want %v", c.name, c.h, got, c.want)
		}
	}
	if got := RetryAfter(nil, now); got != 0 {
		t.Errorf("RetryAfter(nil) = %v; want 0", got)
	}
}

func TestRedact(t *testing.T) {
	t.Parallel()
	const key = "sk-proj-AbCdEfGhIjKlMnOpQrStUvWxYz0123456789"
	cases := []struct {
		text string
		want string
	}{
		{"no secret here", "no secret here"},
		{"key " + key + " refused", "key [REDACTED] refused"},
		{"Incorrect API key provided: sk-proj-********************6789.", "Incorrect API key provided: [REDACTED]********************6789."},
		{"fragment MnOpQrStUv of it", "fragment [REDACTED] of it"},
		{"short run AbCdEfG stays", "short run AbCdEfG stays"}, // 7 characters identify nothing
		{"", ""},
	}
	for _, c := range cases {
		if got := Redact(c.text, key); got != c.want {
			t.Errorf("Redact(%q) = %q; want %q", c.text, got, c.want)
		}
	}
	if got := Redact("text", ""); got != "text" {
		t.Errorf("Redact with no secret = %q; want the text unchanged", got)
	}
}

func TestMessage(t *testing.T) {
	t.Parallel()
	if got, want := Message("  bad\n\tkey  sk-secret-value-123  ", "sk-secret-value-123"), "bad key [REDACTED]"; got != want {
		t.Errorf("Message = %q; want %q", got, want)
	}
	long := strings.Repeat("é", 400) // 800 bytes
	got := Message(long, "")
	if len(got) > 500+len("…") || !strings.HasSuffix(got, "…") {
		t.Errorf("Message of 800 bytes = %d bytes; want at most 500 and an ellipsis", len(got))
	}
	if !strings.HasPrefix(long, strings.TrimSuffix(got, "…")) {
		t.Errorf("Message cut a character in half: %q", got[len(got)-8:])
	}
}

// script is a pull function that plays a list of results and records
// whether the upstream was released.
type script struct {
	steps    []step
	released bool
}

type step struct {
	chunk provider.Chunk
	err   error
}

func (s *script) pull() (provider.Chunk, error) {
	if len(s.steps) == 0 {
		return provider.Chunk{}, io.EOF
	}
	st := s.steps[0]
	s.steps = s.steps[1:]
	return st.chunk, st.err
}

func (s *script) release() error { s.released = true; return nil }

func TestStreamErrorsStick(t *testing.T) {
	t.Parallel()
	boom := errors.New("boom")
	sc := &script{steps: []step{{chunk: provider.Chunk{Text: "a"}}, {err: boom}, {chunk: provider.Chunk{Text: "never"}}}}
	ctx, cancel := context.WithCancel(t.Context())
	s := NewStream(t.Context(), cancel, sc.pull, sc.release)
	if c, err := s.Next(); err != nil || c.Text != "a" {
		t.Fatalf("Next = %+v, %v; want a", c, err)
	}
	for i := 0; i < 2; i++ {
		if _, err := s.Next(); err != boom {
			t.Fatalf("Next #%d = %v; want boom", i, err)
		}
	}
	if ctx.Err() == nil || !sc.released {
		t.Errorf("after an error the request was not aborted and released (ctx %v, released %v)", ctx.Err(), sc.released)
	}
}

func TestStreamEOFSticksAfterClose(t *testing.T) {
	t.Parallel()
	sc := &script{}
	_, cancel := context.WithCancel(t.Context())
	s := NewStream(t.Context(), cancel, sc.pull, sc.release)
	if _, err := s.Next(); err != io.EOF {
		t.Fatalf("Next = %v; want io.EOF", err)
	}
	s.Close()
	if _, err := s.Next(); err != io.EOF {
		t.Errorf("Next after EOF and Close = %v; want io.EOF still", err)
	}
}

func TestStreamClose(t *testing.T) {
	t.Parallel()
	sc := &script{steps: []step{{chunk: provider.Chunk{Text: "a"}}}}
	ctx, cancel := context.WithCancel(t.Context())
	s := NewStream(t.Context(), cancel, sc.pull, sc.release)
	if err := s.Close(); err != nil {
		t.Errorf("Close = %v", err)
	}
	if err := s.Close(); err != nil {
		t.Errorf("second Close = %v", err)
	}
	if ctx.Err() == nil || !sc.released {
		t.Errorf("Close did not abort and release the request")
	}
	if _, err := s.Next(); !errors.Is(err, provider.ErrStreamClosed) {
		t.Errorf("Next after Close = %v; want ErrStreamClosed", err)
	}
}

func TestStreamCallerContextFirst(t *testing.T) {
	t.Parallel()
	parent, cancelParent := context.WithCancel(t.Context())
	_, cancel := context.WithCancel(parent)
	upstream := &provider.Error{Provider: "x", Kind: provider.KindUpstream, Message: "connection reset"}
	sc := &script{steps: []step{{err: upstream}}}
	s := NewStream(parent, cancel, sc.pull, sc.release)
	cancelParent()
	if _, err := s.Next(); !errors.Is(err, context.Canceled) {
		t.Errorf("Next after the caller cancelled = %v; want context.Canceled, not the upstream error it caused", err)
	}
}
