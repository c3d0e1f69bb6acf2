// Package providertest is the conformance suite every provider adapter
// runs: it starts the emulator (provider/emulator) on a loopback listener,
// points the adapter at it, and checks the whole provider.Provider contract
// over real HTTP — the streamed text, usage and finish reason, incremental
// delivery, each failure kind, a stream cut mid-answer, cancellation and
// deadlines reaching the upstream connection, the retry rule of
// provider.WithRetry, and the request parameters on the wire.
//
// An adapter's test is one line:
//
//	func TestConformance(t *testing.T) { providertest.Run(t, provider.OpenAI, func(cfg provider.Config) provider.Provider { return openai.New(cfg) }) }
package providertest

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
)

// Models the suite asks for; the emulator answers any name.
var models = map[string]string{
	provider.OpenAI:    "gpt-4o-mini",
	provider.Anthropic: "claude-sonnet-4-5",
	provider.Google:    "gemini-2.5-flash",
}

// promptly bounds how long the suite waits for something that should
// happen at once (the emulator noticing a disconnect). It is a hang
// guard, not a performance claim.
const promptly = 5 * time.Second

// Run runs the suite against the adapter newProvider builds for the
// provider called name (provider.OpenAI, provider.Anthropic or
// provider.Google).
func Run(t *testing.T, name string, newProvider func(cfg provider.Config) provider.Provider) {
	t.Helper()
	if _, ok := models[name]; !ok {
		t.Fatalf("providertest: unknown provider %q", name)
	}
	s := suite{name: name, newProvider: newProvider}
	// Cleanup runs after the parallel subtests, so it sees their outcome.
	t.Cleanup(func() {
		if !t.Failed() {
			t.Logf("conformance suite passed on %s", name)
		}
	})
	for _, c := range []struct {
		name string
		fn   func(*testing.T)
	}{
		{"Text", s.testText},
		{"LengthAndParameters", s.testLengthAndParameters},
		{"Incremental", s.testIncremental},
		{"Errors", s.testErrors},
		{"BadKey", s.testBadKey},
		{"Cut", s.testCut},
		{"MidStreamError", s.testMidStreamError},
		{"CancelMidStream", s.testCancelMidStream},
		{"CloseMidStream", s.testCloseMidStream},
		{"CloseFromAnotherGoroutine", s.testCloseFromAnotherGoroutine},
		{"StallDeadline", s.testStallDeadline},
		{"DeadlineBeforeFirstToken", s.testDeadlineBeforeFirstToken},
		{"RetryBeforeFirstChunk", s.testRetryBeforeFirstChunk},
		{"NoRetryAfterChunk", s.testNoRetryAfterChunk},
		{"RetryRules", s.testRetryRules},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			c.fn(t)
		})
	}
}

type suite struct {
	name        string
	newProvider func(cfg provider.Config) provider.Provider
}

// env is one emulator on its own loopback listener and an adapter pointed
// at it, so subtests share no counters or records.
type env struct {
	name string
	em   *emulator.Emulator
	p    provider.Provider
	cred provider.Credential
}

func (s suite) env(t *testing.T) *env {
	t.Helper()
	em := emulator.New(emulator.Options{})
	srv := httptest.NewServer(em.Handler())
	hc := &http.Client{Transport: &http.Transport{}}
	t.Cleanup(func() {
		em.Close() // ends stalled answers, so srv.Close does not wait for them
		srv.Close()
		hc.CloseIdleConnections()
	})
	p := s.newProvider(provider.Config{BaseURL: emulator.BaseURL(srv.URL, s.name), HTTPClient: hc})
	if got := p.Name(); got != s.name {
		t.Fatalf("Name() = %q; want %q", got, s.name)
	}
	return &env{name: s.name, em: em, p: p, cred: provider.Credential{APIKey: "sk-test-" + rand.Text()}}
}

// model is the model name with emulator knobs as its suffix.
func (e *env) model(knobs string) string {
	if knobs == "" {
		return models[e.name]
	}
	return models[e.name] + "+" + knobs
}

func (e *env) request(prompt, knobs string) provider.Request {
	return provider.Request{Model: e.model(knobs), Messages: []provider.Message{{Role: provider.RoleUser, Content: prompt}}}
}

// collect starts a stream and reads it to its end or first error. err is
// io.EOF for a complete answer.
func collect(ctx context.Context, p provider.Provider, cred provider.Credential, req provider.Request) (text string, chunks []provider.Chunk, err error) {
	s, err := p.Stream(ctx, cred, req)
	if err != nil {
		return "", nil, err
	}
	defer s.Close()
	return drain(s)
}

func drain(s provider.Stream) (text string, chunks []provider.Chunk, err error) {
	var b strings.Builder
	for {
		c, err := s.Next()
		if err != nil {
			return b.String(), chunks, err
		}
		chunks = append(chunks, c)
		b.WriteString(c.Text)
	}
}

// checkError requires err to be a *provider.Error of this provider and
// kind that does not reveal the credential, and returns it.
func (e *env) checkError(t *testing.T, err error, kind provider.Kind) *provider.Error {
	t.Helper()
	var pe *provider.Error
	if !errors.As(err, &pe) {
		t.Fatalf("error = %v (%T); want a *provider.Error of kind %s", err, err, kind)
	}
	if pe.Provider != e.name {
		t.Errorf("error provider = %q; want %q", pe.Provider, e.name)
	}
	if pe.Kind != kind {
		t.Errorf("error kind = %s (%v); want %s", pe.Kind, err, kind)
	}
	e.checkNoKey(t, err)
	return pe
}

// checkNoKey requires that no rendering of err carries the key or a long
// part of it.
func (e *env) checkNoKey(t *testing.T, err error) {
	t.Helper()
	key := e.cred.APIKey
	for _, s := range []string{err.Error(), fmt.Sprintf("%+v", err), fmt.Sprintf("%#v", err)} {
		if strings.Contains(s, key) || strings.Contains(s, key[len(key)-12:]) {
			t.Errorf("error text carries the credential: %q", s)
		}
	}
}

// testText: the streamed text is the emulator's deterministic reply, in
// non-empty chunks, ending with one chunk that carries the usage and
// "stop"; system turns reach the provider's system field, the other turns
// keep their roles and order.
func (s suite) testText(t *testing.T) {
	e := s.env(t)
	prompt := "conformance suite says hello to " + e.name
	msgs := []provider.Message{
		{Role: provider.RoleSystem, Content: "answer briefly"},
		{Role: provider.RoleUser, Content: "an earlier question"},
		{Role: provider.RoleAssistant, Content: "an earlier answer"},
		{Role: provider.RoleUser, Content: prompt},
	}
	text, chunks, err := collect(t.Context(), e.p, e.cred, provider.Request{Model: e.model(""), Messages: msgs})
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v; want io.EOF", err)
	}
	want := emulator.ReplyText(prompt, -1)
	if text != want {
		t.Errorf("text = %q; want %q", text, want)
	}
	if len(chunks) < 2 {
		t.Fatalf("got %d chunks; want the text chunks and a final one", len(chunks))
	}
	for i, c := range chunks[:len(chunks)-1] {
		if c.Text == "" {
			t.Errorf("chunk %d is empty: %+v", i, c)
		}
		if c.FinishReason != "" {
			t.Errorf("chunk %d of %d carries finish reason %q; only the last may", i, len(chunks), c.FinishReason)
		}
	}
	last := chunks[len(chunks)-1]
	if last.FinishReason != provider.FinishStop {
		t.Errorf("finish reason = %q; want %q", last.FinishReason, provider.FinishStop)
	}
	input := 0
	for _, m := range msgs {
		input += emulator.CountTokens(m.Content)
	}
	wantUsage := provider.Usage{InputTokens: input, OutputTokens: emulator.CountTokens(want)}
	if last.Usage == nil || *last.Usage != wantUsage {
		t.Errorf("usage = %+v; want %+v", last.Usage, wantUsage)
	}

	e.settled(t)
	recs := e.em.Records()
	if len(recs) != 1 {
		t.Fatalf("emulator saw %d requests; want 1", len(recs))
	}
	r := recs[0]
	if !r.Stream {
		t.Errorf("the request was not a streaming one")
	}
	if r.Model != models[e.name] {
		t.Errorf("model on the wire = %q; want %q", r.Model, models[e.name])
	}
	if r.System != "answer briefly" {
		t.Errorf("system on the wire = %q; want %q", r.System, "answer briefly")
	}
	var got []provider.Message
	for _, m := range r.Messages {
		if m.Role != provider.RoleSystem {
			got = append(got, m)
		}
	}
	if fmt.Sprint(got) != fmt.Sprint(msgs[1:]) {
		t.Errorf("turns on the wire = %v; want %v", got, msgs[1:])
	}
}

// testLengthAndParameters: temperature and max tokens reach the wire, and
// an answer cut by max tokens ends with "length" and counts what was sent.
func (s suite) testLengthAndParameters(t *testing.T) {
	e := s.env(t)
	prompt := "one two three four five six"
	temp := 0.25
	req := e.request(prompt, "")
	req.Temperature, req.MaxTokens = &temp, 3
	text, chunks, err := collect(t.Context(), e.p, e.cred, req)
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v; want io.EOF", err)
	}
	if want := "one two three"; text != want {
		t.Errorf("text = %q; want %q", text, want)
	}
	last := chunks[len(chunks)-1]
	if last.FinishReason != provider.FinishLength {
		t.Errorf("finish reason = %q; want %q", last.FinishReason, provider.FinishLength)
	}
	if last.Usage == nil || last.Usage.OutputTokens != 3 || last.Usage.InputTokens != 6 {
		t.Errorf("usage = %+v; want 6 in, 3 out", last.Usage)
	}
	e.settled(t)
	recs := e.em.Records()
	if len(recs) != 1 {
		t.Fatalf("emulator saw %d requests; want 1", len(recs))
	}
	if r := recs[0]; r.MaxTokens != 3 || r.Temperature == nil || *r.Temperature != temp {
		t.Errorf("on the wire: max tokens %d, temperature %v; want 3, %v", r.MaxTokens, ptr(r.Temperature), temp)
	}

	// Without them, the adapter leaves temperature to the provider.
	if _, _, err := collect(t.Context(), e.p, e.cred, e.request("defaults please", "")); !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v; want io.EOF", err)
	}
	e.settled(t)
	if r := e.em.Records()[1]; r.Temperature != nil {
		t.Errorf("temperature on the wire = %v; want none", *r.Temperature)
	}
}

func ptr(f *float64) any {
	if f == nil {
		return nil
	}
	return *f
}

// testIncremental: chunks reach the caller while the provider is still
// answering — the first after the time to first token, the next ones
// while the emulator holds the rest of the answer back.
func (s suite) testIncremental(t *testing.T) {
	e := s.env(t)
	const ttft = 150 * time.Millisecond
	prompt := "alpha beta gamma delta epsilon"
	start := time.Now()
	st, err := e.p.Stream(t.Context(), e.cred, e.request(prompt, "ttft=150ms;stall=10m;stall_after=2"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer st.Close()
	var text strings.Builder
	for text.String() != "alpha beta" {
		c, err := st.Next()
		if err != nil {
			t.Fatalf("Next after %q: %v", text.String(), err)
		}
		if text.Len() == 0 {
			if waited := time.Since(start); waited < ttft {
				t.Errorf("first chunk after %v; the emulator holds it for %v", waited, ttft)
			}
		}
		if c.Text == "" {
			t.Fatalf("empty chunk %+v before the end", c)
		}
		text.WriteString(c.Text)
		if !strings.HasPrefix("alpha beta", text.String()) {
			t.Fatalf("text so far = %q; want a prefix of %q", text.String(), "alpha beta")
		}
	}
	if st := e.em.Stats(); st.InFlight != 1 || st.Complete != 0 {
		t.Errorf("emulator stats %+v; want the answer still in flight while its first tokens were read", st)
	}
}

// testErrors: every error status the providers send maps to its kind,
// with the status and, for 429, the delay the provider asked for.
func (s suite) testErrors(t *testing.T) {
	e := s.env(t)
	cases := []struct {
		knobs      string
		kind       provider.Kind
		status     []int // accepted statuses (a provider may answer 529 with 503)
		retryAfter time.Duration
	}{
		{"fail=400", provider.KindBadRequest, []int{400}, 0},
		{"fail=401", provider.KindAuth, []int{401}, 0},
		{"fail=403", provider.KindAuth, []int{403}, 0},
		{"fail=404", provider.KindBadRequest, []int{404}, 0},
		{"fail=429", provider.KindRateLimited, []int{429}, time.Second},
		{"fail=429;retry_after=2500ms", provider.KindRateLimited, []int{429}, 2500 * time.Millisecond},
		{"fail=500", provider.KindUpstream, []int{500}, 0},
		{"fail=503", provider.KindOverloaded, []int{503}, 0},
		{"fail=529", provider.KindOverloaded, []int{529, 503}, 0},
	}
	for _, c := range cases {
		_, chunks, err := collect(t.Context(), e.p, e.cred, e.request("no answer expected", c.knobs))
		if len(chunks) != 0 {
			t.Errorf("%s: got chunks %+v before the error", c.knobs, chunks)
		}
		pe := e.checkError(t, err, c.kind)
		if !contains(c.status, pe.Status) {
			t.Errorf("%s: status = %d; want one of %v", c.knobs, pe.Status, c.status)
		}
		if pe.RetryAfter != c.retryAfter {
			t.Errorf("%s: RetryAfter = %v; want %v", c.knobs, pe.RetryAfter, c.retryAfter)
		}
		if pe.Message == "" {
			t.Errorf("%s: the error carries no message", c.knobs)
		}
	}
	if got, want := e.settled(t).Errors, len(cases); got != want {
		t.Errorf("emulator answered %d errors; want %d (an adapter retried on its own?)", got, want)
	}
}

func contains(list []int, v int) bool {
	for _, x := range list {
		if x == v {
			return true
		}
	}
	return false
}

// testBadKey: a key the provider refuses is KindAuth, whatever status the
// provider uses for it, and the key is not in the error.
func (s suite) testBadKey(t *testing.T) {
	e := s.env(t)
	e.cred = provider.Credential{APIKey: "invalid-" + rand.Text()}
	_, _, err := collect(t.Context(), e.p, e.cred, e.request("who am i", ""))
	e.checkError(t, err, provider.KindAuth)
	if _, _, err := collect(t.Context(), e.p, provider.Credential{}, e.request("no key at all", "")); provider.KindOf(err) != provider.KindAuth {
		t.Errorf("empty key: error %v; want kind auth", err)
	}
}

// testCut: a connection dropped mid-answer ends the stream with an
// upstream error (never io.EOF) after the partial text, and the error
// sticks.
func (s suite) testCut(t *testing.T) {
	e := s.env(t)
	st, err := e.p.Stream(t.Context(), e.cred, e.request("one two three four five six", "cut_after=3"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer st.Close()
	text, chunks, err := drain(st)
	if want := "one two three"; text != want {
		t.Errorf("partial text = %q; want %q", text, want)
	}
	for _, c := range chunks {
		if c.FinishReason != "" || c.Usage != nil {
			t.Errorf("a cut stream delivered a final chunk %+v", c)
		}
	}
	e.checkError(t, err, provider.KindUpstream)
	if _, again := st.Next(); again != err {
		t.Errorf("Next after the error = %v; want the same error %v", again, err)
	}
}

// testMidStreamError: the provider's error event after some tokens ends
// the stream with a *provider.Error after the partial text.
func (s suite) testMidStreamError(t *testing.T) {
	e := s.env(t)
	text, _, err := collect(t.Context(), e.p, e.cred, e.request("one two three four", "error_after=2"))
	if want := "one two"; text != want {
		t.Errorf("partial text = %q; want %q", text, want)
	}
	var pe *provider.Error
	if !errors.As(err, &pe) {
		t.Fatalf("stream ended with %v; want a *provider.Error", err)
	}
	e.checkNoKey(t, err)
	if pe.Kind == provider.KindAuth || pe.Kind == provider.KindBadRequest {
		t.Errorf("mid-stream error kind = %s; want a provider-side kind", pe.Kind)
	}
}

// longAnswer is a knob spec for an answer that would take minutes.
const longAnswer = "tokens=100000;tps=50"

// testCancelMidStream: cancelling the context mid-answer ends the stream
// with the context's error and closes the upstream connection.
func (s suite) testCancelMidStream(t *testing.T) {
	e := s.env(t)
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	st, err := e.p.Stream(ctx, e.cred, e.request("a long answer", longAnswer))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer st.Close()
	if _, err := st.Next(); err != nil {
		t.Fatalf("first Next: %v", err)
	}
	cancel()
	_, _, err = drain(st)
	if !errors.Is(err, context.Canceled) {
		t.Errorf("after cancel the stream ended with %v; want context.Canceled", err)
	}
	e.waitAborted(t)
}

// testCloseMidStream: Close mid-answer closes the upstream connection,
// and Next then reports provider.ErrStreamClosed.
func (s suite) testCloseMidStream(t *testing.T) {
	e := s.env(t)
	st, err := e.p.Stream(t.Context(), e.cred, e.request("a long answer", longAnswer))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if _, err := st.Next(); err != nil {
		t.Fatalf("first Next: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("Close: %v", err)
	}
	if err := st.Close(); err != nil {
		t.Errorf("second Close: %v", err)
	}
	if _, err := st.Next(); !errors.Is(err, provider.ErrStreamClosed) {
		t.Errorf("Next after Close = %v; want provider.ErrStreamClosed", err)
	}
	e.waitAborted(t)
}

// testCloseFromAnotherGoroutine: Close unblocks a Next that waits on a
// stalled provider — the way a server ends a stream whose client left.
func (s suite) testCloseFromAnotherGoroutine(t *testing.T) {
	e := s.env(t)
	st, err := e.p.Stream(t.Context(), e.cred, e.request("stall after this", "stall=10m;stall_after=1"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	if _, err := st.Next(); err != nil {
		t.Fatalf("first Next: %v", err)
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		// Wait until the stream's reader is blocked in the stall, then close.
		time.Sleep(50 * time.Millisecond)
		st.Close()
	}()
	_, _, err = drain(st)
	<-done
	if !errors.Is(err, provider.ErrStreamClosed) {
		t.Errorf("Next blocked in a stall, then closed = %v; want provider.ErrStreamClosed", err)
	}
	e.waitAborted(t)
}

// testStallDeadline: a provider that stops sending mid-answer is left when
// the context's deadline passes, with the deadline's error.
func (s suite) testStallDeadline(t *testing.T) {
	e := s.env(t)
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Second) // long enough for the first token on a loaded machine
	defer cancel()
	st, err := e.p.Stream(ctx, e.cred, e.request("stall after this", "stall=10m;stall_after=1"))
	if err != nil {
		t.Fatalf("Stream: %v", err)
	}
	defer st.Close()
	text, _, err := drain(st)
	if text != "stall" {
		t.Errorf("text before the stall = %q; want %q", text, "stall")
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("stalled stream ended with %v; want context.DeadlineExceeded", err)
	}
	e.waitAborted(t)
}

// testDeadlineBeforeFirstToken: the deadline also ends a request still
// waiting for its first token.
func (s suite) testDeadlineBeforeFirstToken(t *testing.T) {
	e := s.env(t)
	ctx, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	defer cancel()
	_, chunks, err := collect(ctx, e.p, e.cred, e.request("never answered", "ttft=10m"))
	if len(chunks) != 0 {
		t.Errorf("got chunks %+v", chunks)
	}
	if !errors.Is(err, context.DeadlineExceeded) {
		t.Errorf("error = %v; want context.DeadlineExceeded", err)
	}
	e.waitAborted(t)
}

// settled waits until the emulator has finished recording every request
// it received (it counts a request when it arrives, before answering, but
// records it after writing the last byte, so a client can be done first),
// and returns the stats.
func (e *env) settled(t *testing.T) emulator.Stats {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), promptly)
	defer cancel()
	if err := e.em.Wait(ctx, func(s emulator.Stats) bool { return s.InFlight == 0 }); err != nil {
		t.Fatalf("the emulator did not finish its requests within %v (stats %+v): %v", promptly, e.em.Stats(), err)
	}
	return e.em.Stats()
}

// waitAborted waits until the emulator has seen its client leave.
func (e *env) waitAborted(t *testing.T) {
	t.Helper()
	ctx, cancel := context.WithTimeout(t.Context(), promptly)
	defer cancel()
	if err := e.em.Wait(ctx, func(s emulator.Stats) bool { return s.Aborted >= 1 }); err != nil {
		t.Errorf("the emulator did not see the client disconnect within %v (stats %+v): %v", promptly, e.em.Stats(), err)
	}
}

var testPolicy = provider.RetryPolicy{MaxAttempts: 3, BaseDelay: 10 * time.Millisecond, MaxWait: 5 * time.Second}

// testRetryBeforeFirstChunk: WithRetry retries a 429 that came before any
// byte of the answer, after the delay the provider asked for, and the
// caller sees only the complete answer.
func (s suite) testRetryBeforeFirstChunk(t *testing.T) {
	e := s.env(t)
	p := provider.WithRetry(e.p, testPolicy)
	if p.Name() != e.name {
		t.Errorf("WithRetry(p).Name() = %q; want %q", p.Name(), e.name)
	}
	prompt := "retried once then answered"
	start := time.Now()
	text, _, err := collect(t.Context(), p, e.cred, e.request(prompt, "fail=429;fail_first=1;retry_after=200ms"))
	if !errors.Is(err, io.EOF) {
		t.Fatalf("stream ended with %v; want io.EOF after one retry", err)
	}
	if waited := time.Since(start); waited < 200*time.Millisecond {
		t.Errorf("answered after %v; the retry should have waited the 200ms the provider asked for", waited)
	}
	if want := emulator.ReplyText(prompt, -1); text != want {
		t.Errorf("text = %q; want %q", text, want)
	}
	if st := e.settled(t); st.Requests != 2 || st.Errors != 1 || st.Complete != 1 {
		t.Errorf("emulator stats %+v; want 2 requests: one 429, one complete", st)
	}
}

// testNoRetryAfterChunk: once a chunk reached the caller, a failure is
// the caller's, even of a retryable kind.
func (s suite) testNoRetryAfterChunk(t *testing.T) {
	e := s.env(t)
	p := provider.WithRetry(e.p, testPolicy)
	text, _, err := collect(t.Context(), p, e.cred, e.request("one two three four", "cut_after=2"))
	if want := "one two"; text != want {
		t.Errorf("partial text = %q; want %q", text, want)
	}
	e.checkError(t, err, provider.KindUpstream)
	if st := e.settled(t); st.Requests != 1 {
		t.Errorf("emulator saw %d requests; want 1 (no retry after a chunk)", st.Requests)
	}
}

// testRetryRules: no retry for a bad request, none when the provider asks
// for a longer wait than the policy allows, and at most MaxAttempts.
func (s suite) testRetryRules(t *testing.T) {
	cases := []struct {
		knobs    string
		kind     provider.Kind
		requests int
	}{
		{"fail=400", provider.KindBadRequest, 1},
		{"fail=401", provider.KindAuth, 1},
		{"fail=429;retry_after=1m", provider.KindRateLimited, 1},
		{"fail=503", provider.KindOverloaded, 3},
		{"fail=500", provider.KindUpstream, 3},
	}
	for _, c := range cases {
		e := s.env(t)
		p := provider.WithRetry(e.p, testPolicy)
		_, _, err := collect(t.Context(), p, e.cred, e.request("retry rules", c.knobs))
		pe := e.checkError(t, err, c.kind)
		if got := e.settled(t).Requests; got != c.requests {
			t.Errorf("%s: emulator saw %d requests; want %d", c.knobs, got, c.requests)
		}
		if c.knobs == "fail=429;retry_after=1m" && pe.RetryAfter != time.Minute {
			t.Errorf("%s: RetryAfter = %v; want 1m passed on to the caller", c.knobs, pe.RetryAfter)
		}
	}
}
