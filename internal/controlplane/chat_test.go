package controlplane_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/egress"
	"polydev/internal/egress/egresstest"
	"polydev/internal/metrics"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
	"polydev/internal/runtime"
	"polydev/internal/store"
	"polydev/internal/worker"
	"polydev/web"
)

// The chat path end to end, over real loopback HTTP: a client's crypto
// (done here by hand with internal/crypto), the control plane on a real
// store, the runtime supervisor with the in-process executor, the real
// provider adapters, and the provider emulator on its own listener.

const testAPIKey = "sk-test-0123456789"

type chatEnv struct {
	t      *testing.T
	base   string
	emu    *emulator.Emulator
	sup    *runtime.Supervisor
	st     store.Store
	logbuf *syncBuffer
	c      *apiClient
	acct   *account
	port   int // the egress port of the last link
}

type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}
func (s *syncBuffer) String() string { s.mu.Lock(); defer s.mu.Unlock(); return s.b.String() }

func newChatEnv(t *testing.T, st store.Store, tweak func(*controlplane.Config)) *chatEnv {
	t.Helper()
	return newChatEnvWith(t, st, envOptions{tweak: tweak})
}

// newChatEnvVia is newChatEnv with provider calls leaving through proxy
// (nil: directly).
func newChatEnvVia(t *testing.T, st store.Store, proxy *egress.Proxy, tweak func(*controlplane.Config)) *chatEnv {
	t.Helper()
	return newChatEnvWith(t, st, envOptions{proxy: proxy, tweak: tweak})
}

// envOptions vary the chat environment.
type envOptions struct {
	proxy    *egress.Proxy                   // provider calls leave through it (nil: directly)
	executor runtime.Executor                // where tasks run (nil: in-process)
	keys     []string                        // the emulator's accepted keys (nil: any)
	log      *slog.Logger                    // one log for control plane, runtime and emulator (nil: a JSON log into logbuf)
	front    func(http.Handler) http.Handler // wraps the control plane's handler (a recording proxy)
	tweak    func(*controlplane.Config)
}

// newChatEnvWith starts the emulator, a runtime supervisor and the control
// plane over st on loopback, and registers and logs in one user.
func newChatEnvWith(t *testing.T, st store.Store, o envOptions) *chatEnv {
	t.Helper()
	logbuf := &syncBuffer{}
	lg := o.log
	if lg == nil {
		lg = slog.New(slog.NewJSONHandler(logbuf, nil))
	}
	emu := emulator.New(emulator.Options{Keys: o.keys, Logger: lg.With("component", "emulator")})
	t.Cleanup(func() { emu.Close() })
	root := "http://" + serveLoopback(t, emu.Handler())

	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ex := o.executor
	if ex == nil {
		clientFor := func(int) *http.Client { return &http.Client{} }
		if o.proxy != nil {
			clientFor = o.proxy.Client
		}
		ex = runtime.NewInProcess(runtime.InProcess{NewProvider: registry.New, ClientFor: clientFor})
	}
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, Logger: lg.With("component", "runtime"),
		BaseURLs: map[string]string{"openai": emulator.BaseURL(root, "openai"), "anthropic": emulator.BaseURL(root, "anthropic"),
			"google": emulator.BaseURL(root, "google")}})
	if err != nil {
		t.Fatal(err)
	}
	cfg := controlplane.Config{Addr: "127.0.0.1:0", Dev: true, ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32), RuntimeKeys: sup, Runtime: sup, Egress: o.proxy}
	if o.tweak != nil {
		o.tweak(&cfg)
	}
	srv, err := controlplane.New(cfg, lg, web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	h := srv.Handler()
	if o.front != nil {
		h = o.front(h)
	}
	e := &chatEnv{t: t, base: "http://" + serveLoopback(t, h), emu: emu, sup: sup, st: st, logbuf: logbuf}
	e.c = &apiClient{t: t, base: e.base}
	e.acct = newAccount(t, uuid.NewString()+"@example.com", "correct horse battery staple")
	if st, out, _ := e.c.call("POST", "/v1/auth/register", e.acct.body); st != 201 {
		t.Fatalf("register: %d %v", st, out)
	}
	st2, out := loginAs(t, e.c, e.acct.email, e.acct.password)
	if st2 != 200 {
		t.Fatalf("login: %d %v", st2, out)
	}
	e.c.token = out["token"].(string)
	return e
}

// serveLoopback serves h on a loopback port until the test ends and
// returns the address.
func serveLoopback(t *testing.T, h http.Handler) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: h}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	return ln.Addr().String()
}

// link seals the API key to the user's own public key and stores it, as
// `polydev link key` does.
func (e *chatEnv) link(provider string) {
	e.t.Helper()
	sealed, err := crypto.SealTo(e.acct.priv.Public(), crypto.ProviderTokenContext(e.acct.userID, provider), []byte(testAPIKey))
	if err != nil {
		e.t.Fatal(err)
	}
	tok := &store.ProviderToken{UserID: e.acct.userID, Provider: provider, EncryptedRefreshToken: sealed}
	if _, err := e.st.LinkProviderToken(context.Background(), e.acct.userID, tok, store.PortRange{Base: 10001, Size: 1000}); err != nil {
		e.t.Fatal(err)
	}
	e.port = tok.EgressPort
}

type conv struct {
	id  string
	key crypto.Key
}

func (e *chatEnv) newConversation(provider string) conv {
	e.t.Helper()
	c := conv{id: uuid.NewString(), key: crypto.NewKey()}
	wrapped, _ := crypto.WrapKey(e.acct.accountKey, crypto.ConversationKeyContext(e.acct.userID, c.id), c.key)
	title, _ := crypto.Seal(c.key, crypto.ConversationTitleContext(e.acct.userID, c.id), []byte("a title"))
	st, out, _ := e.c.call("POST", "/v1/chat/sessions", api.CreateConversationRequest{ConversationID: c.id,
		Provider: provider, WrappedKey: wrapped, EncryptedTitle: title})
	if st != 201 || out["conversation_id"] != c.id {
		e.t.Fatalf("create conversation: %d %v", st, out)
	}
	return c
}

// request builds a send request as a client does: it fetches and checks
// the runtime key, opens its own sealed credential, and seals a grant.
type sendOpts struct {
	model       string
	grantConv   string // "" : the conversation's own id
	keyID       string // "" : the runtime's
	sameRequest string // reuse this request id
}

func (e *chatEnv) request(c conv, provider, prompt string, o sendOpts) api.SendMessageRequest {
	e.t.Helper()
	st, out, _ := e.c.call("GET", "/v1/runtime/key", nil)
	if st != 200 {
		e.t.Fatalf("runtime key: %d %v", st, out)
	}
	var k api.RuntimeKey
	b, _ := json.Marshal(out)
	json.Unmarshal(b, &k)
	if err := crypto.VerifyKeyStatement(k.Identity, crypto.KeyStatement{KeyID: k.KeyID, PublicKey: k.PublicKey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt}, k.Signature); err != nil {
		e.t.Fatalf("runtime key signature: %v", err)
	}
	pub, err := crypto.ParsePublicKey(k.PublicKey)
	if err != nil {
		e.t.Fatal(err)
	}
	st, out, _ = e.c.call("GET", "/v1/accounts/"+provider+"/token", nil)
	if st != 200 {
		e.t.Fatalf("sealed token: %d %v", st, out)
	}
	cred, err := crypto.OpenSealed(e.acct.priv, crypto.ProviderTokenContext(e.acct.userID, provider), out["encrypted_token"].(string))
	if err != nil {
		e.t.Fatalf("open own credential: %v", err)
	}
	req := api.SendMessageRequest{RequestID: uuid.NewString(), PromptMessageID: uuid.NewString(),
		AssistantMessageID: uuid.NewString(), KeyID: k.KeyID, Model: o.model}
	if o.sameRequest != "" {
		req.RequestID = o.sameRequest
	}
	if o.keyID != "" {
		req.KeyID = o.keyID
	}
	req.EncryptedPrompt, _ = crypto.Seal(c.key, crypto.MessageContext(e.acct.userID, req.PromptMessageID), []byte(prompt))
	keyText, _ := c.key.ExportText()
	gconv := c.id
	if o.grantConv != "" {
		gconv = o.grantConv
	}
	g, _ := json.Marshal(worker.Grant{Version: 1, RequestID: req.RequestID, UserID: e.acct.userID, ConversationID: gconv,
		AssistantMessageID: req.AssistantMessageID, PromptMessageID: req.PromptMessageID, Provider: provider, Model: o.model, ConversationKey: keyText,
		Credential: string(cred), ExpiresAt: time.Now().Add(5 * time.Minute)})
	req.Grant, err = crypto.SealTo(pub, crypto.GrantContext(e.acct.userID, req.RequestID), g)
	if err != nil {
		e.t.Fatal(err)
	}
	return req
}

type sseEvent struct {
	name string
	data string
}

type streamResult struct {
	status    int
	header    http.Header
	errBody   map[string]any
	events    []sseEvent
	comments  int
	text      string // decrypted chunks in order
	final     bool
	done      *api.StreamDone
	streamErr *api.StreamError
}

// send posts req and reads the whole SSE answer, decrypting each chunk as
// it arrives; stopAfter > 0 closes the connection after that many chunks.
func (e *chatEnv) send(c conv, req api.SendMessageRequest, stopAfter int) streamResult {
	e.t.Helper()
	body, _ := json.Marshal(req)
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	hr, _ := http.NewRequestWithContext(ctx, "POST", e.base+"/v1/chat/"+c.id+"/messages", bytes.NewReader(body))
	hr.Header.Set("Authorization", "Bearer "+e.c.token)
	hr.Header.Set("Content-Type", "application/json")
	resp, err := http.DefaultClient.Do(hr)
	if err != nil {
		e.t.Fatal(err)
	}
	defer resp.Body.Close()
	r := streamResult{status: resp.StatusCode, header: resp.Header}
	if resp.StatusCode != 200 {
		json.NewDecoder(resp.Body).Decode(&r.errBody)
		return r
	}
	if ct := resp.Header.Get("Content-Type"); ct != "text/event-stream" {
		e.t.Fatalf("content type %q", ct)
	}
	sc := bufio.NewScanner(resp.Body)
	var ev sseEvent
	var text strings.Builder
	chunks := 0
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, ":"):
			r.comments++
		case strings.HasPrefix(line, "event: "):
			ev.name = strings.TrimPrefix(line, "event: ")
		case strings.HasPrefix(line, "data: "):
			ev.data = strings.TrimPrefix(line, "data: ")
		case line == "":
			if ev.data == "" {
				continue
			}
			r.events = append(r.events, ev)
			switch ev.name {
			case "":
				var ch api.StreamChunk
				if err := json.Unmarshal([]byte(ev.data), &ch); err != nil {
					e.t.Fatalf("chunk %q: %v", ev.data, err)
				}
				if ch.Seq != uint64(chunks) {
					e.t.Fatalf("chunk seq %d; want %d", ch.Seq, chunks)
				}
				pt, err := crypto.Open(c.key, crypto.ChunkContext(e.acct.userID, req.AssistantMessageID, ch.Seq, ch.Final), ch.EncryptedChunk)
				if err != nil {
					e.t.Fatalf("chunk %d does not open: %v", ch.Seq, err)
				}
				text.Write(pt)
				r.final = r.final || ch.Final
				chunks++
				if stopAfter > 0 && chunks >= stopAfter {
					r.text = text.String()
					return r
				}
			case "done":
				r.done = &api.StreamDone{}
				json.Unmarshal([]byte(ev.data), r.done)
			case "error":
				r.streamErr = &api.StreamError{}
				json.Unmarshal([]byte(ev.data), r.streamErr)
			default:
				e.t.Fatalf("unknown event %q", ev.name)
			}
			ev = sseEvent{}
		}
	}
	r.text = text.String()
	return r
}

func (e *chatEnv) messages(c conv) []api.Message {
	e.t.Helper()
	st, out, _ := e.c.call("GET", "/v1/chat/"+c.id, nil)
	if st != 200 {
		e.t.Fatalf("conversation: %d %v", st, out)
	}
	var d api.ConversationDetail
	b, _ := json.Marshal(out)
	json.Unmarshal(b, &d)
	return d.Messages
}

func (e *chatEnv) openMessage(c conv, m api.Message) string {
	e.t.Helper()
	pt, err := crypto.Open(c.key, crypto.MessageContext(e.acct.userID, m.ID), m.EncryptedContent)
	if err != nil {
		e.t.Fatalf("message %s does not open: %v", m.ID, err)
	}
	return string(pt)
}

func TestChatEndToEnd(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		for _, provider := range []string{"openai", "anthropic", "google"} {
			t.Run(provider, func(t *testing.T) {
				e := newChatEnv(t, st, nil)
				e.link(provider)
				c := e.newConversation(provider)

				prompt := "tell me about the secret-marker-" + provider + " please"
				req := e.request(c, provider, prompt, sendOpts{model: "some-model"})
				r := e.send(c, req, 0)
				want := emulator.ReplyText(prompt, -1)
				if r.status != 200 || r.done == nil || r.streamErr != nil {
					t.Fatalf("send: status %d, done %+v, error %+v, body %v", r.status, r.done, r.streamErr, r.errBody)
				}
				if r.text != want || !r.final {
					t.Fatalf("streamed %q (final %v); want %q", r.text, r.final, want)
				}
				if r.done.AssistantMessageID != req.AssistantMessageID || r.done.Usage.OutputTokens != emulator.CountTokens(want) ||
					r.done.Model != "some-model" || r.done.EgressPort != e.port || e.port < 10001 {
					t.Fatalf("done = %+v", r.done)
				}

				// A second turn carries the history.
				req2 := e.request(c, provider, "and again", sendOpts{model: "some-model"})
				if r2 := e.send(c, req2, 0); r2.text != emulator.ReplyText("and again", -1) {
					t.Fatalf("second turn streamed %q", r2.text)
				}
				recs := e.emu.Records()
				last := recs[len(recs)-1]
				if n := len(last.Messages); n != 3 || last.Messages[0].Content != prompt || last.Messages[1].Content != want {
					t.Fatalf("provider saw %d messages %+v; want prompt, answer, new prompt", n, last.Messages)
				}

				ms := e.messages(c)
				if len(ms) != 4 {
					t.Fatalf("stored %d messages; want 4", len(ms))
				}
				if ms[0].Role != "user" || e.openMessage(c, ms[0]) != prompt || ms[1].Role != "assistant" ||
					e.openMessage(c, ms[1]) != want || ms[1].Status != "complete" || ms[1].Model != "some-model" ||
					ms[1].EgressPort != e.port || ms[1].TokensUsed == 0 {
					t.Fatalf("stored messages %+v", ms[:2])
				}
			})
		}
	})
}

func TestChatFailuresAreNeverLost(t *testing.T) {
	backends(t, func(t *testing.T, st store.Store) {
		e := newChatEnv(t, st, func(c *controlplane.Config) { c.Heartbeat = 20 * time.Millisecond })
		e.link("openai")
		c := e.newConversation("openai")

		// A stream cut after 3 tokens: an error event, the 3 tokens stored
		// as an incomplete answer.
		prompt := "one two three four five six"
		r := e.send(c, e.request(c, "openai", prompt, sendOpts{model: "m+cut_after=3"}), 0)
		if r.streamErr == nil || r.done != nil || r.final {
			t.Fatalf("cut stream: done %+v error %+v final %v; want an error event and no final chunk", r.done, r.streamErr, r.final)
		}
		if !r.streamErr.Stored || !r.streamErr.Incomplete || r.streamErr.Error.Code != "upstream" {
			t.Fatalf("error event %+v", r.streamErr)
		}
		if r.text != "one two three" {
			t.Fatalf("cut stream delivered %q", r.text)
		}
		ms := e.messages(c)
		if len(ms) != 2 || ms[1].Status != "incomplete" || e.openMessage(c, ms[1]) != "one two three" {
			t.Fatalf("stored %+v", ms)
		}

		// A slow start gets keep-alive comments before the first chunk.
		r = e.send(c, e.request(c, "openai", "slow", sendOpts{model: "m+ttft=150ms"}), 0)
		if r.done == nil || r.comments == 0 {
			t.Fatalf("slow start: done %+v, %d keep-alives; want some", r.done, r.comments)
		}

		// A 429 that does not clear: retried while the stream is already
		// open (keep-alives), then an error event; nothing stored, so the
		// client can send the prompt again.
		before := len(e.messages(c))
		r = e.send(c, e.request(c, "openai", "limited", sendOpts{model: "m+fail=429;retry_after=300ms"}), 0)
		if r.streamErr == nil || r.streamErr.Error.Code != "rate_limited" || r.streamErr.Stored || r.streamErr.RetryAfterMS != 300 {
			t.Fatalf("429 after the stream opened: status %d, error %+v, body %v", r.status, r.streamErr, r.errBody)
		}
		if n := len(e.messages(c)); n != before {
			t.Fatalf("a failure before any text stored %d messages", n-before)
		}

		// A 429 that clears is retried before the first byte: the user sees
		// only the answer.
		r = e.send(c, e.request(c, "openai", "retried", sendOpts{model: "m+fail=429;fail_first=1;retry_after=100ms;id=once"}), 0)
		if r.done == nil || r.text != emulator.ReplyText("retried", -1) {
			t.Fatalf("retried 429: done %+v, error %+v, text %q", r.done, r.streamErr, r.text)
		}

		// Two sends to one conversation at once would interleave their
		// turns: the second is refused while the first answers.
		slow := e.request(c, "openai", "first", sendOpts{model: "m+ttft=400ms"})
		firstDone := make(chan streamResult)
		go func() { firstDone <- e.send(c, slow, 0) }()
		wctx, wcancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer wcancel()
		if err := e.emu.Wait(wctx, func(s emulator.Stats) bool { return s.InFlight > 0 }); err != nil {
			t.Fatal(err)
		}
		if r := e.send(c, e.request(c, "openai", "second", sendOpts{model: "m"}), 0); r.status != http.StatusConflict || errCode(r.errBody) != "conversation_busy" {
			t.Fatalf("overlapping send: %d %v; want 409 conversation_busy", r.status, r.errBody)
		}
		if r := <-firstDone; r.done == nil {
			t.Fatalf("first send: %+v", r)
		}

		// The client goes away mid-answer: the provider call is cancelled
		// and what arrived is stored, marked incomplete.
		aborted := e.emu.Stats().Aborted
		req := e.request(c, "openai", "a b c d e f g h", sendOpts{model: "m+tps=20;tokens=200"})
		r = e.send(c, req, 2)
		ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if err := e.emu.Wait(ctx, func(s emulator.Stats) bool { return s.Aborted > aborted }); err != nil {
			t.Fatalf("the provider call was not cancelled after the client left: %v", err)
		}
		var found bool
		for deadline := time.Now().Add(5 * time.Second); time.Now().Before(deadline) && !found; time.Sleep(20 * time.Millisecond) {
			for _, m := range e.messages(c) {
				if m.ID == req.AssistantMessageID && m.EncryptedContent != "" { // the placeholder is filled in when the job ends
					found = true
					if m.Status != "incomplete" || !strings.HasPrefix(e.openMessage(c, m), "a b") {
						t.Fatalf("abandoned answer stored as %+v", m)
					}
				}
			}
		}
		if !found {
			t.Fatal("the answer of a client that left was lost")
		}
	})
}

func TestChatRefusals(t *testing.T) {
	e := newChatEnv(t, sqliteStore(t), func(c *controlplane.Config) { c.MaxStreamsPerUser = 1 })
	c := e.newConversation("openai")

	// Not linked.
	st, out, _ := e.c.call("GET", "/v1/accounts/openai/token", nil)
	if st != http.StatusConflict || errCode(out) != "provider_not_linked" {
		t.Fatalf("unlinked token: %d %v", st, out)
	}
	e.link("openai")

	cases := []struct {
		name   string
		req    func() api.SendMessageRequest
		status int
		code   string
	}{
		{"unknown runtime key", func() api.SendMessageRequest {
			return e.request(c, "openai", "x", sendOpts{model: "m", keyID: "rk_unknown"})
		}, http.StatusConflict, "runtime_key_expired"},
		{"grant for another conversation", func() api.SendMessageRequest {
			return e.request(c, "openai", "x", sendOpts{model: "m", grantConv: uuid.NewString()})
		}, http.StatusBadRequest, "grant"},
		{"prompt not an envelope", func() api.SendMessageRequest {
			r := e.request(c, "openai", "x", sendOpts{model: "m"})
			r.EncryptedPrompt = "plain text"
			return r
		}, http.StatusBadRequest, "invalid_request"},
		{"grant not sealed", func() api.SendMessageRequest {
			r := e.request(c, "openai", "x", sendOpts{model: "m"})
			r.Grant = r.EncryptedPrompt
			return r
		}, http.StatusBadRequest, "invalid_request"},
	}
	for _, tc := range cases {
		r := e.send(c, tc.req(), 0)
		if r.status != tc.status || errCode(r.errBody) != tc.code {
			t.Errorf("%s: %d %v; want %d %s", tc.name, r.status, r.errBody, tc.status, tc.code)
		}
	}
	// A 429 whose Retry-After is beyond the retry cap comes back at once
	// as a plain error with Retry-After, and nothing is stored.
	r := e.send(c, e.request(c, "openai", "limited", sendOpts{model: "m+fail=429;retry_after=30s"}), 0)
	if r.status != http.StatusTooManyRequests || r.header.Get("Retry-After") != "30" || errCode(r.errBody) != "rate_limited" {
		t.Fatalf("429: status %d, retry-after %q, body %v", r.status, r.header.Get("Retry-After"), r.errBody)
	}
	if ms := e.messages(c); len(ms) != 0 {
		t.Fatalf("a refused prompt was stored: %+v", ms)
	}
	// A replayed request id is refused.
	req := e.request(c, "openai", "once", sendOpts{model: "m"})
	if r := e.send(c, req, 0); r.done == nil {
		t.Fatalf("first send: %+v", r)
	}
	again := e.request(c, "openai", "once", sendOpts{model: "m", sameRequest: req.RequestID})
	if r := e.send(c, again, 0); r.status != http.StatusConflict || errCode(r.errBody) != "request_replayed" {
		t.Fatalf("replay: %d %v", r.status, r.errBody)
	}

	// One stream at a time for this user.
	slow := e.request(c, "openai", "slow", sendOpts{model: "m+ttft=1s"})
	done := make(chan streamResult)
	go func() { done <- e.send(c, slow, 0) }()
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	if err := e.emu.Wait(ctx, func(s emulator.Stats) bool { return s.InFlight > 0 }); err != nil {
		t.Fatal(err)
	}
	if r := e.send(c, e.request(c, "openai", "second", sendOpts{model: "m"}), 0); r.status != http.StatusTooManyRequests || errCode(r.errBody) != "too_many_streams" {
		t.Fatalf("second concurrent stream: %d %v", r.status, r.errBody)
	}
	if r := <-done; r.done == nil {
		t.Fatalf("slow stream: %+v", r)
	}

	// Another user cannot read, post to or delete the conversation.
	other := newChatEnv(t, e.st, nil)
	for _, m := range []string{"GET", "DELETE"} {
		if st, out, _ := other.c.call(m, "/v1/chat/"+c.id, nil); st != http.StatusNotFound {
			t.Errorf("%s by another user: %d %v", m, st, out)
		}
	}
	// Deleting removes it.
	if st, _, _ := e.c.call("DELETE", "/v1/chat/"+c.id, nil); st != http.StatusNoContent {
		t.Fatalf("delete: %d", st)
	}
	if st, _, _ := e.c.call("GET", "/v1/chat/"+c.id, nil); st != http.StatusNotFound {
		t.Fatalf("deleted conversation: %d", st)
	}
}

// TestChatThroughEgress: linking gives the user an egress port and looks up
// its exit IP through the upstream proxy; every provider call of the chat
// then leaves through that port, and the stored answer records port and IP.
func TestChatThroughEgress(t *testing.T) {
	up := egresstest.Start(t, 4)
	proxy, err := egress.New(up.Config())
	if err != nil {
		t.Fatal(err)
	}
	defer proxy.Close()
	st := sqliteStore(t)
	for i := range 2 { // two users: two ports
		e := newChatEnvVia(t, st, proxy, nil)
		sealed, _ := crypto.SealTo(e.acct.priv.Public(), crypto.ProviderTokenContext(e.acct.userID, "anthropic"), []byte(testAPIKey))
		code, out, _ := e.c.call("POST", "/v1/accounts/tokens", map[string]string{"provider": "anthropic", "encrypted_token": sealed})
		if code != 201 {
			t.Fatalf("link: %d %v", code, out)
		}
		port := int(out["egress_port"].(float64))
		if want := up.Base + i; port != want || out["egress_ip"] != up.ExitIP(port) {
			t.Fatalf("user %d linked on port %d, IP %v; want port %d, IP %s", i+1, port, out["egress_ip"], want, up.ExitIP(want))
		}
		hits := up.Hits(port)
		c := e.newConversation("anthropic")
		r := e.send(c, e.request(c, "anthropic", "via my own port", sendOpts{model: "claude-x"}), 0)
		if r.done == nil || r.text != emulator.ReplyText("via my own port", -1) || r.done.EgressPort != port {
			t.Fatalf("send: done %+v, error %+v, text %q", r.done, r.streamErr, r.text)
		}
		if got := up.Hits(port); got <= hits {
			t.Fatalf("the provider call did not go through port %d (hits %d → %d)", port, hits, got)
		}
		ms := e.messages(c)
		if len(ms) != 2 || ms[1].EgressPort != port || ms[1].EgressIP != up.ExitIP(port) {
			t.Fatalf("stored answer %+v; want port %d and IP %s", ms[len(ms)-1], port, up.ExitIP(port))
		}
	}
}

func TestMetricsEndpoint(t *testing.T) {
	reg := metrics.NewRegistry()
	e := newChatEnv(t, sqliteStore(t), func(c *controlplane.Config) { c.Metrics = metrics.Handler(reg) })
	resp, err := http.Get(e.base + "/metrics")
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var b bytes.Buffer
	b.ReadFrom(resp.Body)
	if resp.StatusCode != 200 || !strings.Contains(b.String(), "go_goroutines") {
		t.Fatalf("GET /metrics: %d %.200q", resp.StatusCode, b.String())
	}
}

// doneHook is a ResponseWriter that calls hook once, just before the
// "done" event of a chat stream is written.
type doneHook struct {
	http.ResponseWriter
	hook func()
}

func (d *doneHook) Write(b []byte) (int, error) {
	if d.hook != nil && bytes.Contains(b, []byte("event: done")) {
		h := d.hook
		d.hook = nil
		h()
	}
	return d.ResponseWriter.Write(b)
}

func (d *doneHook) Unwrap() http.ResponseWriter { return d.ResponseWriter }

// TestChatNextSendRightAfterDone: a client that sends its next prompt the
// moment it reads "done" finds the conversation and its stream slot free.
// The second send runs, whole, while the first answer's final event is
// being written, before its handler has returned.
func TestChatNextSendRightAfterDone(t *testing.T) {
	var e *chatEnv
	var c conv
	var second *streamResult
	var once sync.Once
	front := func(h http.Handler) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			if r.Method == "POST" && strings.HasSuffix(r.URL.Path, "/messages") {
				first := false
				once.Do(func() { first = true })
				if first {
					w = &doneHook{ResponseWriter: w, hook: func() {
						r := e.send(c, e.request(c, "openai", "next", sendOpts{model: "m"}), 0)
						second = &r
					}}
				}
			}
			h.ServeHTTP(w, r)
		})
	}
	e = newChatEnvWith(t, sqliteStore(t), envOptions{front: front,
		tweak: func(cfg *controlplane.Config) { cfg.MaxStreamsPerUser = 1 }})
	e.link("openai")
	c = e.newConversation("openai")
	if r := e.send(c, e.request(c, "openai", "first", sendOpts{model: "m"}), 0); r.done == nil {
		t.Fatalf("first send: %+v", r)
	}
	if second == nil {
		t.Fatal("the hook did not run: no done event was seen")
	}
	if second.done == nil {
		t.Fatalf("a send right after done: status %d %v; want a stored answer", second.status, second.errBody)
	}
	if ms := e.messages(c); len(ms) != 4 {
		t.Fatalf("%d messages stored; want 4", len(ms))
	}
}

// TestChatLongHistory: a history longer than one store page reaches the
// provider whole and in order.
func TestChatLongHistory(t *testing.T) {
	st := sqliteStore(t)
	e := newChatEnv(t, st, nil)
	e.link("openai")
	c := e.newConversation("openai")
	const n = store.MaxPageLimit + 25
	var ms []*store.Message
	for i := range n {
		m := &store.Message{ID: uuid.NewString(), ConversationID: c.id, Role: []string{"user", "assistant"}[i%2]}
		m.EncryptedContent, _ = crypto.Seal(c.key, crypto.MessageContext(e.acct.userID, m.ID), []byte(fmt.Sprintf("turn %d", i)))
		ms = append(ms, m)
	}
	if err := st.AddMessages(context.Background(), e.acct.userID, ms...); err != nil {
		t.Fatal(err)
	}
	if r := e.send(c, e.request(c, "openai", "and now", sendOpts{model: "m"}), 0); r.done == nil {
		t.Fatalf("send: %+v", r)
	}
	recs := e.emu.Records()
	got := recs[len(recs)-1].Messages
	if len(got) != n+1 {
		t.Fatalf("the provider got %d messages; want %d", len(got), n+1)
	}
	for i, m := range got[:n] {
		if want := fmt.Sprintf("turn %d", i); m.Content != want {
			t.Fatalf("message %d is %q; want %q", i, m.Content, want)
		}
	}
	if got[n].Content != "and now" {
		t.Fatalf("the last message is %q; want the prompt", got[n].Content)
	}
}

// TestChatRecordsLastUse: a chat records its credential's use, at most once
// a minute.
func TestChatRecordsLastUse(t *testing.T) {
	e := newChatEnv(t, sqliteStore(t), nil)
	e.link("openai")
	c := e.newConversation("openai")
	lastUsed := func() any {
		t.Helper()
		st, out, _ := e.c.call("GET", "/v1/accounts", nil)
		if st != 200 {
			t.Fatalf("accounts: %d %v", st, out)
		}
		return out["providers"].([]any)[0].(map[string]any)["last_used"]
	}
	if u := lastUsed(); u != nil {
		t.Fatalf("last_used %v before any chat; want null", u)
	}
	e.send(c, e.request(c, "openai", "one", sendOpts{model: "m"}), 0)
	first := lastUsed()
	if first == nil {
		t.Fatal("last_used still null after a chat")
	}
	e.send(c, e.request(c, "openai", "two", sendOpts{model: "m"}), 0)
	if again := lastUsed(); again != first {
		t.Fatalf("last_used moved from %v to %v within a minute", first, again)
	}
}
