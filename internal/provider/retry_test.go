package provider

import (
	"context"
	"errors"
	"io"
	"testing"
	"time"
)

// fake is a provider whose attempts follow a script: each attempt fails
// in Stream (streamErr), fails at the first Next (firstErr), or streams
// chunks then ends with end.
type fake struct {
	attempts []attempt
	calls    int
}

type attempt struct {
	streamErr error
	firstErr  error
	chunks    []Chunk
	end       error // after the chunks; nil means io.EOF
}

func (f *fake) Name() string { return "fake" }

func (f *fake) Stream(ctx context.Context, _ Credential, _ Request) (Stream, error) {
	a := f.attempts[f.calls]
	f.calls++
	if a.streamErr != nil {
		return nil, a.streamErr
	}
	return &fakeStream{a: a}, nil
}

type fakeStream struct {
	a      attempt
	i      int
	closed bool
}

func (s *fakeStream) Next() (Chunk, error) {
	if s.i == 0 && s.a.firstErr != nil {
		return Chunk{}, s.a.firstErr
	}
	if s.i < len(s.a.chunks) {
		s.i++
		return s.a.chunks[s.i-1], nil
	}
	if s.a.end != nil {
		return Chunk{}, s.a.end
	}
	return Chunk{}, io.EOF
}

func (s *fakeStream) Close() error { s.closed = true; return nil }

func pe(kind Kind, retryAfter time.Duration) *Error {
	return &Error{Provider: "fake", Kind: kind, RetryAfter: retryAfter}
}

var quick = RetryPolicy{MaxAttempts: 3, BaseDelay: time.Millisecond, MaxWait: time.Second}

func readAll(t *testing.T, s Stream) (string, error) {
	t.Helper()
	text := ""
	for {
		c, err := s.Next()
		if err != nil {
			return text, err
		}
		text += c.Text
	}
}

func TestWithRetry(t *testing.T) {
	t.Parallel()
	ok := attempt{chunks: []Chunk{{Text: "hel"}, {Text: "lo"}, {FinishReason: FinishStop}}}
	cases := []struct {
		name     string
		policy   RetryPolicy
		attempts []attempt
		calls    int
		text     string
		err      Kind // checked when wantErr
		wantErr  bool
	}{
		{"success", quick, []attempt{ok}, 1, "hello", 0, false},
		{"429 in Stream", quick, []attempt{{streamErr: pe(KindRateLimited, time.Millisecond)}, ok}, 2, "hello", 0, false},
		{"overloaded at first Next", quick, []attempt{{firstErr: pe(KindOverloaded, 0)}, ok}, 2, "hello", 0, false},
		{"upstream twice", quick, []attempt{{streamErr: pe(KindUpstream, 0)}, {firstErr: pe(KindUpstream, 0)}, ok}, 3, "hello", 0, false},
		{"attempts run out", quick, []attempt{{streamErr: pe(KindOverloaded, 0)}, {streamErr: pe(KindOverloaded, 0)}, {streamErr: pe(KindOverloaded, 0)}, ok}, 3, "", KindOverloaded, true},
		{"bad request", quick, []attempt{{streamErr: pe(KindBadRequest, 0)}, ok}, 1, "", KindBadRequest, true},
		{"auth at first Next", quick, []attempt{{firstErr: pe(KindAuth, 0)}, ok}, 1, "", KindAuth, true},
		{"plain error", quick, []attempt{{streamErr: errors.New("not sorted")}, ok}, 1, "", KindUpstream, true},
		{"retry-after above MaxWait", quick, []attempt{{streamErr: pe(KindRateLimited, time.Hour)}, ok}, 1, "", KindRateLimited, true},
		{"zero policy", RetryPolicy{}, []attempt{{streamErr: pe(KindUpstream, 0)}, ok}, 1, "", KindUpstream, true},
		{"empty answer", quick, []attempt{{}}, 1, "", 0, false},
		{"no retry after a chunk", quick, []attempt{{chunks: []Chunk{{Text: "par"}}, end: pe(KindUpstream, 0)}, ok}, 1, "par", KindUpstream, true},
	}
	for _, c := range cases {
		f := &fake{attempts: c.attempts}
		p := WithRetry(f, c.policy)
		var text string
		s, err := p.Stream(t.Context(), Credential{}, Request{})
		if err == nil {
			text, err = readAll(t, s)
			s.Close()
		}
		if f.calls != c.calls {
			t.Errorf("%s: %d attempts; want %d", c.name, f.calls, c.calls)
		}
		if text != c.text {
			t.Errorf("%s: text %q; want %q", c.name, text, c.text)
		}
		switch {
		case c.wantErr && (err == nil || errors.Is(err, io.EOF)):
			t.Errorf("%s: ended with %v; want a %s error", c.name, err, c.err)
		case c.wantErr && KindOf(err) != c.err:
			t.Errorf("%s: error %v of kind %s; want %s", c.name, err, KindOf(err), c.err)
		case !c.wantErr && !errors.Is(err, io.EOF):
			t.Errorf("%s: ended with %v; want io.EOF", c.name, err)
		}
	}
}

func TestWithRetryClosesFailedAttempts(t *testing.T) {
	t.Parallel()
	var streams []*fakeStream
	f := &recording{fake: fake{attempts: []attempt{{firstErr: pe(KindOverloaded, 0)}, {chunks: []Chunk{{Text: "x"}}}}}, made: &streams}
	s, err := WithRetry(f, quick).Stream(t.Context(), Credential{}, Request{})
	if err != nil {
		t.Fatal(err)
	}
	defer s.Close()
	if len(streams) != 2 || !streams[0].closed {
		t.Errorf("the failed attempt's stream was not closed")
	}
}

type recording struct {
	fake
	made *[]*fakeStream
}

func (r *recording) Stream(ctx context.Context, c Credential, q Request) (Stream, error) {
	s, err := r.fake.Stream(ctx, c, q)
	if fs, ok := s.(*fakeStream); ok {
		*r.made = append(*r.made, fs)
	}
	return s, err
}

func TestWithRetryStopsWhenContextEnds(t *testing.T) {
	t.Parallel()
	f := &fake{attempts: []attempt{{streamErr: pe(KindRateLimited, 500*time.Millisecond)}, {}}}
	ctx, cancel := context.WithTimeout(t.Context(), 20*time.Millisecond)
	defer cancel()
	_, err := WithRetry(f, quick).Stream(ctx, Credential{}, Request{})
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v; want the context's deadline error", err)
	}
	if f.calls != 1 {
		t.Errorf("%d attempts; want 1 (the context ended during the wait)", f.calls)
	}
}

func TestRetryWait(t *testing.T) {
	t.Parallel()
	p := RetryPolicy{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond, MaxWait: time.Second}
	for n, want := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 4: 800 * time.Millisecond, 5: time.Second, 9: time.Second} {
		for i := 0; i < 50; i++ {
			d, ok := p.wait(n, pe(KindUpstream, 0))
			if !ok || d < want/2 || d > want {
				t.Fatalf("wait after attempt %d = %v, %v; want between %v and %v", n, d, ok, want/2, want)
			}
		}
	}
	if d, ok := p.wait(1, pe(KindRateLimited, 700*time.Millisecond)); !ok || d != 700*time.Millisecond {
		t.Errorf("wait with RetryAfter 700ms = %v, %v; want exactly 700ms", d, ok)
	}
	if _, ok := p.wait(1, pe(KindRateLimited, 2*time.Second)); ok {
		t.Errorf("a RetryAfter above MaxWait was accepted")
	}
	uncapped := RetryPolicy{MaxAttempts: 5, BaseDelay: 100 * time.Millisecond}
	if d, ok := uncapped.wait(3, pe(KindUpstream, 0)); !ok || d < 200*time.Millisecond || d > 400*time.Millisecond {
		t.Errorf("uncapped wait after attempt 3 = %v, %v; want between 200ms and 400ms", d, ok)
	}
	if d, ok := uncapped.wait(1, pe(KindRateLimited, time.Hour)); !ok || d != time.Hour {
		t.Errorf("uncapped wait with RetryAfter 1h = %v, %v; want 1h", d, ok)
	}
}
