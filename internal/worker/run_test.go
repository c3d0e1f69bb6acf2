package worker_test

import (
	"context"
	"encoding/json"
	"errors"
	"io"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/crypto"
	"polydev/internal/provider"
	"polydev/internal/worker"
)

// scripted is a provider that answers with fixed pieces and then err (nil:
// a complete answer). The adapters themselves are tested against the
// emulator in provider/providertest; here only the worker's own rules are
// under test: grants, encryption, the final chunk, partial answers.
type scripted struct {
	pieces []string
	err    error
	got    *provider.Request
}

func (s *scripted) Name() string { return "openai" }
func (s *scripted) Stream(_ context.Context, cred provider.Credential, req provider.Request) (provider.Stream, error) {
	if cred.APIKey != "sk-test-key" {
		return nil, &provider.Error{Provider: "openai", Kind: provider.KindAuth, Status: 401}
	}
	msgs := append([]provider.Message(nil), req.Messages...)
	req.Messages = msgs
	s.got = &req
	return &scriptedStream{s: s}, nil
}

type scriptedStream struct {
	s *scripted
	i int
}

func (st *scriptedStream) Next() (provider.Chunk, error) {
	if st.i < len(st.s.pieces) {
		st.i++
		return provider.Chunk{Text: st.s.pieces[st.i-1]}, nil
	}
	if st.s.err != nil {
		return provider.Chunk{}, st.s.err
	}
	if st.i == len(st.s.pieces) {
		st.i++
		return provider.Chunk{FinishReason: provider.FinishStop, Usage: &provider.Usage{InputTokens: 3, OutputTokens: len(st.s.pieces)}}, nil
	}
	return provider.Chunk{}, io.EOF
}
func (st *scriptedStream) Close() error { return nil }

type fixture struct {
	t       *testing.T
	now     time.Time
	runtime *crypto.PrivateKey
	convKey crypto.Key
	grant   worker.Grant
	job     worker.Job
	// sealRequest, when set, is the request id of the grant's context.
	sealRequest string
}

func newFixture(t *testing.T) *fixture {
	t.Helper()
	rk, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	f := &fixture{t: t, now: time.Unix(1_800_000_000, 0).UTC(), runtime: rk, convKey: crypto.NewKey()}
	user, conv, prompt := uuid.NewString(), uuid.NewString(), uuid.NewString()
	f.job = worker.Job{RequestID: uuid.NewString(), UserID: user, ConversationID: conv, Provider: "openai",
		KeyID: "rk_1", AssistantMessageID: uuid.NewString(), Egress: worker.Egress{Port: 10001, IP: "192.0.2.1"}}
	enc, _ := crypto.Seal(f.convKey, crypto.MessageContext(user, prompt), []byte("hello there"))
	f.job.History = []worker.Message{{ID: prompt, Role: "user", EncryptedContent: enc}}
	f.grant = worker.Grant{Version: 1, RequestID: f.job.RequestID, UserID: user, ConversationID: conv,
		AssistantMessageID: f.job.AssistantMessageID, PromptMessageID: prompt, Provider: "openai", Model: "gpt-test",
		ConversationKey: mustText(f.convKey), Credential: "sk-test-key", ExpiresAt: f.now.Add(5 * time.Minute)}
	return f
}

func (f *fixture) run(p *scripted) ([]worker.Event, error) {
	f.t.Helper()
	plain, _ := json.Marshal(f.grant)
	rid := f.job.RequestID
	if f.sealRequest != "" {
		rid = f.sealRequest
	}
	sealed, err := crypto.SealTo(f.runtime.Public(), crypto.GrantContext(f.job.UserID, rid), plain)
	if err != nil {
		f.t.Fatal(err)
	}
	job := f.job
	job.Grant = sealed
	rec, _ := f.runtime.ExportRecord()
	var evs []worker.Event
	err = worker.RunWith(context.Background(), worker.Task{Job: job, RuntimeKey: rec},
		worker.Deps{NewProvider: func(string, provider.Config) (provider.Provider, error) { return p, nil }, Now: func() time.Time { return f.now }},
		func(ev worker.Event) error { evs = append(evs, ev); return nil })
	return evs, err
}

func (f *fixture) open(ctx crypto.Context, env string) string {
	f.t.Helper()
	pt, err := crypto.Open(f.convKey, ctx, env)
	if err != nil {
		f.t.Fatalf("open %v: %v", ctx, err)
	}
	return string(pt)
}

func TestRunStreamsEncryptedChunks(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	p := &scripted{pieces: []string{"hel", "lo ", "back"}}
	evs, err := f.run(p)
	if err != nil {
		t.Fatal(err)
	}
	if len(evs) != 5 {
		t.Fatalf("got %d events; want 3 chunks, the final chunk and done", len(evs))
	}
	var text strings.Builder
	for i, ev := range evs[:4] {
		if ev.Chunk == nil || ev.Chunk.Seq != uint64(i) || ev.Chunk.Final != (i == 3) {
			t.Fatalf("event %d = %+v; want chunk %d (final %v)", i, ev, i, i == 3)
		}
		text.WriteString(f.open(crypto.ChunkContext(f.job.UserID, f.job.AssistantMessageID, uint64(i), i == 3), ev.Chunk.EncryptedChunk))
	}
	if text.String() != "hello back" {
		t.Fatalf("chunks decrypt to %q", text.String())
	}
	done := evs[4].Done
	if done == nil || done.Error != nil || done.Incomplete || done.Model != "gpt-test" || done.OutputTokens != 3 ||
		done.FinishReason != provider.FinishStop || done.EgressPort != 10001 || done.EgressIP != "192.0.2.1" {
		t.Fatalf("done = %+v", done)
	}
	if got := f.open(crypto.MessageContext(f.job.UserID, f.job.AssistantMessageID), done.EncryptedContent); got != "hello back" {
		t.Fatalf("stored answer %q", got)
	}
	if len(p.got.Messages) != 1 || p.got.Messages[0].Content != "hello there" || p.got.Model != "gpt-test" {
		t.Fatalf("provider got %+v", p.got)
	}
}

func TestRunKeepsPartialAnswer(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	cut := &provider.Error{Provider: "openai", Kind: provider.KindUpstream, Message: "stream broke"}
	evs, err := f.run(&scripted{pieces: []string{"half ", "an"}, err: cut})
	if err != nil {
		t.Fatal(err)
	}
	done := evs[len(evs)-1].Done
	for _, ev := range evs[:len(evs)-1] {
		if ev.Chunk == nil || ev.Chunk.Final {
			t.Fatalf("a broken answer sent %+v; want only non-final chunks", ev)
		}
	}
	if done == nil || !done.Incomplete || done.Error == nil || done.Error.Kind != "upstream" {
		t.Fatalf("done = %+v; want incomplete with an upstream error", done)
	}
	if got := f.open(crypto.MessageContext(f.job.UserID, f.job.AssistantMessageID), done.EncryptedContent); got != "half an" {
		t.Fatalf("partial answer %q; want %q", got, "half an")
	}
}

func TestRunRefusesBadGrants(t *testing.T) {
	t.Parallel()
	cases := []struct {
		name   string
		change func(f *fixture)
		want   string
	}{
		{"names another request", func(f *fixture) { f.grant.RequestID = uuid.NewString() }, "does not match"},
		{"sealed for another request", func(f *fixture) { f.sealRequest = uuid.NewString() }, "open grant: open_failed"},
		{"another answer id", func(f *fixture) { f.grant.AssistantMessageID = uuid.NewString() }, "does not match"},
		{"another conversation", func(f *fixture) { f.grant.ConversationID = uuid.NewString() }, "does not match"},
		{"another provider", func(f *fixture) { f.grant.Provider = "google" }, "does not match"},
		{"expired", func(f *fixture) { f.grant.ExpiresAt = f.now.Add(-time.Second) }, "expired"},
		{"too long-lived", func(f *fixture) { f.grant.ExpiresAt = f.now.Add(time.Hour) }, "lifetime"},
		{"version 2", func(f *fixture) { f.grant.Version = 2 }, "version"},
		{"no model", func(f *fixture) { f.grant.Model = "" }, "model"},
		{"bad key", func(f *fixture) { f.grant.ConversationKey = "AAAA" }, "conversation key"},
		{"wrong conversation key", func(f *fixture) { f.grant.ConversationKey = mustText(crypto.NewKey()) }, "open_failed"},
		{"history ends with the answer", func(f *fixture) { f.job.History[0].Role = "assistant" }, "its prompt is not"},
		{"another prompt answered", func(f *fixture) {
			older := f.job.History[0]
			older.ID = uuid.NewString()
			enc, _ := crypto.Seal(f.convKey, crypto.MessageContext(f.job.UserID, older.ID), []byte("an older prompt"))
			older.EncryptedContent = enc
			f.job.History = append(f.job.History, older)
		}, "its prompt is not"},
		{"no credential", func(f *fixture) { f.grant.Credential = "" }, "credential"},
		{"model too long", func(f *fixture) { f.grant.Model = strings.Repeat("m", worker.MaxModelLen+1) }, "model"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			c.change(f)
			p := &scripted{pieces: []string{"x"}}
			evs, err := f.run(p)
			if err != nil {
				t.Fatal(err)
			}
			if len(evs) != 1 || evs[0].Done == nil || evs[0].Done.Error == nil {
				t.Fatalf("got %+v; want a single refusal", evs)
			}
			if e := evs[0].Done.Error; e.Kind != "grant" || !strings.Contains(e.Message, c.want) {
				t.Fatalf("error %+v; want kind grant mentioning %q", e, c.want)
			}
			if p.got != nil {
				t.Fatal("the provider was called for a refused grant")
			}
		})
	}
}

func TestRunReportsProviderAuth(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	f.grant.Credential = "sk-other"
	evs, err := f.run(&scripted{})
	if err != nil {
		t.Fatal(err)
	}
	if e := evs[len(evs)-1].Done.Error; e == nil || e.Kind != "auth" || strings.Contains(e.Message, "sk-other") {
		t.Fatalf("error %+v; want kind auth without the credential", e)
	}
}

func TestEmitFailureStops(t *testing.T) {
	t.Parallel()
	f := newFixture(t)
	plain, _ := json.Marshal(f.grant)
	f.job.Grant, _ = crypto.SealTo(f.runtime.Public(), crypto.GrantContext(f.job.UserID, f.job.RequestID), plain)
	rec, _ := f.runtime.ExportRecord()
	boom := errors.New("client gone")
	err := worker.RunWith(context.Background(), worker.Task{Job: f.job, RuntimeKey: rec},
		worker.Deps{NewProvider: func(string, provider.Config) (provider.Provider, error) {
			return &scripted{pieces: []string{"a", "b"}}, nil
		}, Now: func() time.Time { return f.now }},
		func(worker.Event) error { return boom })
	if !errors.Is(err, boom) {
		t.Fatalf("got %v; want the emit error", err)
	}
}

func mustText(k crypto.Key) string {
	s, err := k.ExportText()
	if err != nil {
		panic(err)
	}
	return s
}

// stalling answers one piece and then waits until its context ends.
type stalling struct{ ctx context.Context }

func (s *stalling) Name() string { return "openai" }
func (s *stalling) Stream(ctx context.Context, _ provider.Credential, _ provider.Request) (provider.Stream, error) {
	return &stallStream{ctx: ctx}, nil
}

type stallStream struct {
	ctx  context.Context
	sent bool
}

func (st *stallStream) Next() (provider.Chunk, error) {
	if !st.sent {
		st.sent = true
		return provider.Chunk{Text: "begun "}, nil
	}
	<-st.ctx.Done()
	return provider.Chunk{}, st.ctx.Err()
}
func (st *stallStream) Close() error { return nil }

func TestRunTimesOutAStalledProvider(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		name       string
		idle, max  time.Duration
		wantPhrase string
	}{
		{"idle", 50 * time.Millisecond, time.Minute, "nothing for too long"},
		{"overall", time.Minute, 80 * time.Millisecond, "took too long"},
	} {
		t.Run(c.name, func(t *testing.T) {
			t.Parallel()
			f := newFixture(t)
			plain, _ := json.Marshal(f.grant)
			f.job.Grant, _ = crypto.SealTo(f.runtime.Public(), crypto.GrantContext(f.job.UserID, f.job.RequestID), plain)
			rec, _ := f.runtime.ExportRecord()
			var done *worker.Result
			err := worker.RunWith(context.Background(), worker.Task{Job: f.job, RuntimeKey: rec},
				worker.Deps{NewProvider: func(string, provider.Config) (provider.Provider, error) { return &stalling{}, nil },
					Now: func() time.Time { return f.now }, IdleTimeout: c.idle, MaxDuration: c.max},
				func(ev worker.Event) error {
					if ev.Done != nil {
						done = ev.Done
					}
					return nil
				})
			if err != nil {
				t.Fatal(err)
			}
			if done == nil || !done.Incomplete || done.Error == nil || done.Error.Kind != "timeout" || !strings.Contains(done.Error.Message, c.wantPhrase) {
				t.Fatalf("done = %+v (error %+v); want an incomplete answer with a timeout", done, done.Error)
			}
			if got := f.open(crypto.MessageContext(f.job.UserID, f.job.AssistantMessageID), done.EncryptedContent); got != "begun " {
				t.Fatalf("partial answer %q", got)
			}
		})
	}
}
