package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/cli"
	"polydev/internal/client"
	"polydev/internal/crypto"
	"polydev/internal/worker"
)

// fakeChat is the chat API of docs/api.md in memory, over real HTTP on
// loopback, with the runtime's part played in the handler: it holds a
// runtime identity and key, opens each grant the client seals and checks
// it field by field, decrypts the prompt with the key the grant carries,
// and answers with a scripted event stream whose chunks it encrypts under
// that key. Requests it does not serve go to fallback (the account fake).
type fakeChat struct {
	*httptest.Server
	t          *testing.T
	credential string

	mu       sync.Mutex
	identity *crypto.IdentityKey
	rtPriv   *crypto.PrivateKey
	keyInfo  api.RuntimeKey
	user     string
	userPub  *crypto.PublicKey
	token    string // "" : any bearer token
	convs    map[string]*fakeConv
	tokens   map[string]string // provider → sealed credential
	posts    int
	grants   []worker.Grant
	prompts  []string
	script   func(s *fakeStream)
	alterKey func(*api.RuntimeKey)
}

type fakeConv struct {
	c    api.Conversation
	msgs []api.Message
}

func newFakeChat(t *testing.T, fallback http.Handler) *fakeChat {
	t.Helper()
	f := &fakeChat{t: t, credential: "sk-test-\"quoted\"\\-" + uuid.NewString(), convs: map[string]*fakeConv{}, tokens: map[string]string{}}
	f.rotateIdentity()
	mux := http.NewServeMux()
	mux.HandleFunc("GET /v1/runtime/key", f.runtimeKey)
	mux.HandleFunc("GET /v1/accounts/{provider}/token", f.auth(f.sealedToken))
	mux.HandleFunc("POST /v1/chat/sessions", f.auth(f.create))
	mux.HandleFunc("GET /v1/chat/sessions", f.auth(f.list))
	mux.HandleFunc("GET /v1/chat/{id}", f.auth(f.detail))
	mux.HandleFunc("DELETE /v1/chat/{id}", f.auth(f.remove))
	mux.HandleFunc("POST /v1/chat/{id}/messages", f.auth(f.send))
	if fallback != nil {
		mux.Handle("/", fallback)
	}
	f.Server = httptest.NewServer(mux)
	t.Cleanup(f.Close)
	return f
}

// rotateIdentity gives the runtime a new identity (and key), as an
// operator's rotation — or an impostor — would.
func (f *fakeChat) rotateIdentity() {
	id, err := crypto.GenerateIdentity()
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	f.identity = id
	f.mu.Unlock()
	f.rotateKey()
}

// rotateKey makes a new runtime key under the same identity.
func (f *fakeChat) rotateKey() {
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		f.t.Fatal(err)
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().UTC().Truncate(time.Second)
	k := api.RuntimeKey{KeyID: "rk_" + uuid.NewString(), PublicKey: priv.Public().String(), CreatedAt: now,
		ExpiresAt: now.Add(time.Hour), Identity: f.identity.Public()}
	k.Signature, err = f.identity.Sign(crypto.KeyStatement{KeyID: k.KeyID, PublicKey: k.PublicKey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt})
	if err != nil {
		f.t.Fatal(err)
	}
	f.rtPriv, f.keyInfo = priv, k
}

// setUser names the account the fake serves and links a credential for
// every provider, sealed to the user's public key.
func (f *fakeChat) setUser(user string, pub *crypto.PublicKey, token string) {
	f.mu.Lock()
	defer f.mu.Unlock()
	f.user, f.userPub, f.token = user, pub, token
	for _, p := range []string{"openai", "anthropic", "google"} {
		sealed, err := crypto.SealTo(pub, crypto.ProviderTokenContext(user, p), []byte(f.credential))
		if err != nil {
			f.t.Fatal(err)
		}
		f.tokens[p] = sealed
	}
}

func (f *fakeChat) set(fn func(*fakeChat)) {
	f.mu.Lock()
	defer f.mu.Unlock()
	fn(f)
}

func (f *fakeChat) auth(h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		f.mu.Lock()
		want := f.token
		f.mu.Unlock()
		tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || tok == "" || want != "" && tok != want {
			writeErr(w, 401, "unauthorized", "no valid session")
			return
		}
		h(w, r)
	}
}

func (f *fakeChat) runtimeKey(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	k := f.keyInfo
	if f.alterKey != nil {
		f.alterKey(&k)
	}
	f.mu.Unlock()
	writeJSON(w, 200, k)
}

func (f *fakeChat) sealedToken(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	p := r.PathValue("provider")
	sealed, ok := f.tokens[p]
	if !ok {
		writeErr(w, 409, "provider_not_linked", "link "+p+" first")
		return
	}
	writeJSON(w, 200, api.ProviderTokenResponse{Provider: p, EncryptedToken: sealed})
}

func (f *fakeChat) create(w http.ResponseWriter, r *http.Request) {
	var req api.CreateConversationRequest
	if !decode(w, r, &req) {
		return
	}
	if _, err := uuid.Parse(req.ConversationID); err != nil || req.WrappedKey == "" {
		writeErr(w, 400, "invalid_request", "conversation_id and wrapped_key are required")
		return
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	now := time.Now().UTC()
	f.convs[req.ConversationID] = &fakeConv{c: api.Conversation{ConversationID: req.ConversationID, Provider: req.Provider,
		WrappedKey: req.WrappedKey, EncryptedTitle: req.EncryptedTitle, CreatedAt: now, UpdatedAt: now}}
	writeJSON(w, 201, api.CreateConversationResponse{ConversationID: req.ConversationID})
}

// page serves items [cursor, cursor+limit) of n, limit default 2 so that
// every listing pages.
func page(r *http.Request, n int) (from, to int, next string) {
	limit := 2
	fmt.Sscan(r.URL.Query().Get("limit"), &limit)
	fmt.Sscan(r.URL.Query().Get("cursor"), &from)
	to = min(from+limit, n)
	if to < n {
		next = fmt.Sprint(to)
	}
	return from, to, next
}

func (f *fakeChat) list(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	var all []api.Conversation
	for _, c := range f.convs {
		all = append(all, c.c)
	}
	sort.Slice(all, func(i, j int) bool { return all[i].UpdatedAt.After(all[j].UpdatedAt) })
	from, to, next := page(r, len(all))
	writeJSON(w, 200, api.ConversationList{Sessions: append([]api.Conversation{}, all[from:to]...), NextCursor: next})
}

func (f *fakeChat) detail(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	c, ok := f.convs[r.PathValue("id")]
	if !ok {
		writeErr(w, 404, "not_found", "no such conversation")
		return
	}
	from, to, next := page(r, len(c.msgs))
	writeJSON(w, 200, api.ConversationDetail{Conversation: c.c, Messages: append([]api.Message{}, c.msgs[from:to]...), NextCursor: next})
}

func (f *fakeChat) remove(w http.ResponseWriter, r *http.Request) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if _, ok := f.convs[r.PathValue("id")]; !ok {
		writeErr(w, 404, "not_found", "no such conversation")
		return
	}
	delete(f.convs, r.PathValue("id"))
	w.WriteHeader(204)
}

// fakeStream writes one answer stream.
type fakeStream struct {
	ctx    context.Context // the request's
	w      http.ResponseWriter
	rc     *http.ResponseController
	key    crypto.Key
	user   string
	msgID  string
	prompt string
	answer strings.Builder
	// stored and incomplete say what the fake keeps when the script ends.
	stored, incomplete bool
}

// chunkEvent is the text of a data event for chunk seq, encrypted at the
// place (seq, final) unless at says otherwise.
func (s *fakeStream) chunkEvent(seq uint64, final bool, text string) string {
	enc, err := crypto.Seal(s.key, crypto.ChunkContext(s.user, s.msgID, seq, final), []byte(text))
	if err != nil {
		panic(err)
	}
	b, _ := json.Marshal(api.StreamChunk{EncryptedChunk: enc, Seq: seq, Final: final})
	return "data: " + string(b) + "\n\n"
}

func (s *fakeStream) raw(text string) {
	io.WriteString(s.w, text)
	s.rc.Flush()
}

func (s *fakeStream) chunk(seq uint64, final bool, text string) {
	s.answer.WriteString(text)
	s.raw(s.chunkEvent(seq, final, text))
}

func (s *fakeStream) done() {
	s.stored = true
	b, _ := json.Marshal(api.StreamDone{AssistantMessageID: s.msgID, Model: "fake-model", Usage: api.Usage{InputTokens: 3, OutputTokens: 5},
		FinishReason: "stop", DurationMS: 42, EgressPort: 10001})
	s.raw("event: done\ndata: " + string(b) + "\n\n")
}

func (s *fakeStream) fail(kind string, stored bool) {
	s.stored, s.incomplete = stored, true
	b, _ := json.Marshal(api.StreamError{Error: api.ErrorDetail{Code: kind, Message: "the provider broke off"},
		Stored: stored, Incomplete: true, RetryAfterMS: 2000})
	s.raw("event: error\ndata: " + string(b) + "\n\n")
}

// echo answers "echo: <prompt>" in three chunks with keep-alives between.
func echo(s *fakeStream) {
	s.chunk(0, false, "echo: ")
	s.raw(": keep-alive\n\n")
	s.chunk(1, false, s.prompt)
	s.raw(": keep-alive\n\n")
	s.chunk(2, false, " ✓")
	s.chunk(3, true, "")
	s.done()
}

func (f *fakeChat) send(w http.ResponseWriter, r *http.Request) {
	t := f.t
	var req api.SendMessageRequest
	if !decode(w, r, &req) {
		return
	}
	f.mu.Lock()
	f.posts++
	c, ok := f.convs[r.PathValue("id")]
	user, priv, keyID, script := f.user, f.rtPriv, f.keyInfo.KeyID, f.script
	f.mu.Unlock()
	if !ok {
		writeErr(w, 404, "not_found", "no such conversation")
		return
	}
	if req.KeyID != keyID {
		writeErr(w, 409, "runtime_key_expired", "unknown key")
		return
	}
	// The runtime's checks: the grant opens at its place and names this
	// request, and nothing in it is out of place.
	plain, err := crypto.OpenSealed(priv, crypto.GrantContext(user, req.RequestID), req.Grant)
	if err != nil {
		t.Errorf("the grant does not open: %v", err)
		writeErr(w, 400, "grant", "grant does not open")
		return
	}
	dec := json.NewDecoder(bytes.NewReader(plain))
	dec.DisallowUnknownFields()
	var g worker.Grant
	if err := dec.Decode(&g); err != nil {
		t.Errorf("the grant %s is not a worker.Grant: %v", plain, err)
	}
	now := time.Now()
	if g.Version != 1 || g.RequestID != req.RequestID || g.UserID != user || g.ConversationID != c.c.ConversationID ||
		g.AssistantMessageID != req.AssistantMessageID || g.Provider != c.c.Provider || g.Model != req.Model || g.Model == "" ||
		g.Credential != f.credential || !g.ExpiresAt.After(now) || g.ExpiresAt.Sub(now) > worker.MaxGrantLifetime ||
		!equalTemp(g.Temperature, req.Temperature) {
		t.Errorf("grant %+v does not match request %+v (credential ok: %v)", g, req, g.Credential == f.credential)
	}
	raw, err := crypto.DecodeText(g.ConversationKey)
	if err != nil {
		t.Fatalf("grant conversation key: %v", err)
	}
	key, err := crypto.KeyFromBytes(raw)
	if err != nil {
		t.Fatalf("grant conversation key: %v", err)
	}
	if _, err := crypto.Open(key, crypto.ConversationKeyContext(user, c.c.ConversationID), c.c.WrappedKey); err == nil {
		t.Error("the conversation key opens its own wrapping; want the account key to wrap it")
	}
	prompt, err := crypto.Open(key, crypto.MessageContext(user, req.PromptMessageID), req.EncryptedPrompt)
	if err != nil {
		t.Errorf("the prompt does not open with the grant's key: %v", err)
	}
	f.mu.Lock()
	f.grants = append(f.grants, g)
	f.prompts = append(f.prompts, string(prompt))
	f.mu.Unlock()

	w.Header().Set("Content-Type", "text/event-stream")
	w.WriteHeader(200)
	// The headers go out with the first write, as the real server's do.
	s := &fakeStream{ctx: r.Context(), w: w, rc: http.NewResponseController(w), key: key, user: user, msgID: req.AssistantMessageID, prompt: string(prompt)}
	if script == nil {
		script = echo
	}
	script(s)
	if !s.stored {
		return
	}
	answer, _ := crypto.Seal(key, crypto.MessageContext(user, req.AssistantMessageID), []byte(s.answer.String()))
	status := "complete"
	if s.incomplete {
		status = "incomplete"
	}
	f.mu.Lock()
	now = time.Now().UTC()
	c.msgs = append(c.msgs,
		api.Message{ID: req.PromptMessageID, Role: "user", EncryptedContent: req.EncryptedPrompt, Status: "complete", CreatedAt: now},
		api.Message{ID: req.AssistantMessageID, Role: "assistant", EncryptedContent: answer, Status: status, Model: g.Model,
			TokensUsed: 8, DurationMS: 42, CreatedAt: now})
	c.c.UpdatedAt = now
	f.mu.Unlock()
}

func equalTemp(a, b *float64) bool { return a == nil && b == nil || a != nil && b != nil && *a == *b }

// chatFixture is a user, their keys and a Chat against a fakeChat.
type chatFixture struct {
	srv   *fakeChat
	chat  *client.Chat
	sess  *client.Session
	keys  *client.Keys
	state *client.State
}

func newChatFixture(t *testing.T) *chatFixture {
	t.Helper()
	srv := newFakeChat(t, nil)
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	keys := &client.Keys{Account: crypto.NewKey(), Private: priv, Public: priv.Public()}
	t.Cleanup(keys.Wipe)
	sess := &client.Session{Version: 1, Server: srv.URL, UserID: uuid.NewString(), Token: "token-" + uuid.NewString(),
		ExpiresAt: time.Now().Add(time.Hour)}
	srv.setUser(sess.UserID, priv.Public(), sess.Token)
	st := client.NewState(filepath.Join(t.TempDir(), "config"))
	ch := client.NewChat(client.New(srv.URL, nil), sess, keys, st)
	return &chatFixture{srv: srv, chat: ch, sess: sess, keys: keys, state: st}
}

// send sends prompt and returns what onDelta received.
func (fx *chatFixture) send(t *testing.T, id, prompt, model string) (string, *client.SendResult, error) {
	t.Helper()
	var got strings.Builder
	res, err := fx.chat.Send(context.Background(), id, []byte(prompt), model, nil, func(s string) { got.WriteString(s) })
	return got.String(), res, err
}

func TestChatConversations(t *testing.T) {
	t.Parallel()
	fx := newChatFixture(t)
	ctx := context.Background()
	titles := []string{"first ✓", "", "third", "fourth"}
	ids := make([]string, len(titles))
	for i, title := range titles {
		id, err := fx.chat.CreateConversation(ctx, []string{"openai", "anthropic", "google", "openai"}[i], title)
		if err != nil {
			t.Fatalf("create: %v", err)
		}
		ids[i] = id
		time.Sleep(2 * time.Millisecond) // distinct UpdatedAt, for the order
	}
	if _, err := fx.chat.CreateConversation(ctx, "acme", "x"); err == nil || !strings.Contains(err.Error(), "unknown provider") {
		t.Errorf("create with an unknown provider: got %v; want refused", err)
	}
	// The server holds ciphertext only.
	fx.srv.set(func(f *fakeChat) {
		for _, c := range f.convs {
			for _, title := range titles {
				if title != "" && strings.Contains(c.c.EncryptedTitle+c.c.WrappedKey, title) {
					t.Errorf("title %q in the clear on the server", title)
				}
			}
		}
	})

	// Paged listing (the fake pages by 2), newest first, titles decrypted.
	var all []client.ConversationInfo
	cursor := ""
	for range 5 {
		page, next, err := fx.chat.ListConversations(ctx, 0, cursor)
		if err != nil {
			t.Fatalf("list: %v", err)
		}
		all = append(all, page...)
		if cursor = next; cursor == "" {
			break
		}
	}
	if len(all) != 4 {
		t.Fatalf("listed %d conversations; want 4", len(all))
	}
	for i, c := range all {
		want := len(titles) - 1 - i
		if c.ID != ids[want] || c.Title != titles[want] || c.Err != nil {
			t.Errorf("listing[%d]: got %s %q %v; want %s %q", i, c.ID, c.Title, c.Err, ids[want], titles[want])
		}
	}

	// A title moved to another conversation does not open there.
	fx.srv.set(func(f *fakeChat) { f.convs[ids[2]].c.EncryptedTitle = f.convs[ids[0]].c.EncryptedTitle })
	page, _, err := fx.chat.ListConversations(ctx, 4, "")
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range page {
		if c.ID == ids[2] && (c.Err == nil || !errors.Is(c.Err, client.ErrConversationDamaged) || c.Title != "") {
			t.Errorf("a swapped title: got %q, %v; want ErrConversationDamaged", c.Title, c.Err)
		}
	}

	if err := fx.chat.DeleteConversation(ctx, ids[1]); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if err := fx.chat.DeleteConversation(ctx, ids[1]); !errors.Is(err, client.ErrConversationNotFound) {
		t.Errorf("delete twice: got %v; want ErrConversationNotFound", err)
	}
	if _, err := fx.chat.Conversation(ctx, ids[1]); !errors.Is(err, client.ErrConversationNotFound) {
		t.Errorf("show a deleted conversation: got %v; want ErrConversationNotFound", err)
	}
}

func TestChatSendAndShow(t *testing.T) {
	t.Parallel()
	fx := newChatFixture(t)
	ctx := context.Background()
	id, err := fx.chat.CreateConversation(ctx, "anthropic", "t")
	if err != nil {
		t.Fatal(err)
	}
	prompts := []string{"hello there", "second ✓ \"quoted\""}
	for i, p := range prompts {
		model := ""
		if i == 1 {
			model = "claude-custom"
		}
		got, res, err := fx.send(t, id, p, model)
		if err != nil {
			t.Fatalf("send %d: %v", i, err)
		}
		if want := "echo: " + p + " ✓"; got != want {
			t.Errorf("send %d streamed %q; want %q", i, got, want)
		}
		if res.Incomplete || !res.Stored || res.Chunks != 4 || res.Usage.OutputTokens != 5 || res.Duration != 42*time.Millisecond ||
			res.ErrorKind != "" || res.EgressPort != 10001 || res.FinishReason != "stop" {
			t.Errorf("send %d result: %+v", i, res)
		}
		if (i == 0) != (res.PinnedIdentity != "") {
			t.Errorf("send %d: pinned %q; want a pin on the first send only", i, res.PinnedIdentity)
		}
	}
	fx.srv.set(func(f *fakeChat) {
		if len(f.grants) != 2 || f.grants[0].Model != "claude-sonnet-4-5" || f.grants[1].Model != "claude-custom" {
			t.Errorf("grant models: %+v; want the provider default, then the one given", f.grants)
		}
		if f.grants[0].RequestID == f.grants[1].RequestID || f.grants[0].AssistantMessageID == f.grants[1].AssistantMessageID {
			t.Error("two sends share ids")
		}
	})

	// Mark the last answer incomplete, as after a provider failure.
	fx.srv.set(func(f *fakeChat) { f.convs[id].msgs[3].Status = "incomplete" })
	v, err := fx.chat.Conversation(ctx, id)
	if err != nil {
		t.Fatalf("conversation: %v", err)
	}
	if v.Title != "t" || v.Provider != "anthropic" || len(v.Messages) != 4 {
		t.Fatalf("conversation: %+v", v)
	}
	for i, m := range v.Messages {
		want, role := prompts[i/2], "user"
		if i%2 == 1 {
			want, role = "echo: "+prompts[i/2]+" ✓", "assistant"
		}
		if m.Text != want || m.Role != role || m.Err != nil || m.Incomplete != (i == 3) {
			t.Errorf("message %d: got %q %s incomplete=%v err=%v; want %q %s", i, m.Text, m.Role, m.Incomplete, m.Err, want, role)
		}
	}

	// A message moved from another place does not open: shown as damaged.
	fx.srv.set(func(f *fakeChat) { f.convs[id].msgs[0].EncryptedContent = f.convs[id].msgs[2].EncryptedContent })
	v, err = fx.chat.Conversation(ctx, id)
	if err != nil {
		t.Fatal(err)
	}
	if m := v.Messages[0]; !errors.Is(m.Err, client.ErrConversationDamaged) || m.Text != "" {
		t.Errorf("a swapped message: got %q, %v; want ErrConversationDamaged", m.Text, m.Err)
	}
	// A conversation key from another conversation: refused.
	other, _ := fx.chat.CreateConversation(ctx, "anthropic", "")
	fx.srv.set(func(f *fakeChat) { f.convs[id].c.WrappedKey = f.convs[other].c.WrappedKey })
	if _, err := fx.chat.Conversation(ctx, id); !errors.Is(err, client.ErrConversationDamaged) {
		t.Errorf("a swapped conversation key: got %v; want ErrConversationDamaged", err)
	}
	if _, _, err := fx.send(t, id, "x", ""); !errors.Is(err, client.ErrConversationDamaged) {
		t.Errorf("send with a swapped conversation key: got %v; want ErrConversationDamaged", err)
	}
}

// TestChatStreamFaults: every way an answer stream can go wrong is
// reported, and nothing after a fault reaches the caller.
func TestChatStreamFaults(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name   string
		script func(s *fakeStream)
		want   string // streamed to the caller
		err    error  // errors.Is; nil: success
		kind   string
		stored bool
	}{
		{"one byte at a time, CRLF, comments, unknown events, split data", func(s *fakeStream) {
			var b strings.Builder
			b.WriteString(": hello\r\n\r\nretry: 10\r\nid: 1\r\n")
			ev := s.chunkEvent(0, false, "a")
			b.WriteString(strings.ReplaceAll(ev, "\n", "\r\n"))
			ev = strings.TrimSuffix(s.chunkEvent(1, false, "b"), "\n\n")
			i := strings.Index(ev, `"seq"`)
			b.WriteString(ev[:i] + "\ndata:" + ev[i:] + "\n\n") // two data lines, the second without a space
			b.WriteString("event: progress\ndata: {}\n\n")      // an event this client does not know
			b.WriteString("event: done\n\n")                    // an event without data is not dispatched
			b.WriteString(s.chunkEvent(2, true, "c"))
			for i := 0; i < b.Len(); i++ {
				s.raw(b.String()[i : i+1])
			}
			s.answer.WriteString("abc")
			s.done()
		}, "abc", nil, "", true},
		{"error event after two chunks", func(s *fakeStream) {
			s.chunk(0, false, "par")
			s.chunk(1, false, "tial")
			s.fail("upstream", true)
		}, "partial", &client.AnswerError{}, "upstream", true},
		{"error event before any chunk", func(s *fakeStream) { s.fail("rate_limited", false) }, "", &client.AnswerError{}, "rate_limited", false},
		{"done without the final chunk", func(s *fakeStream) {
			s.chunk(0, false, "a")
			s.done()
		}, "a", client.ErrStreamBroken, "stream", true},
		{"out of order", func(s *fakeStream) {
			s.chunk(0, false, "a")
			s.chunk(2, false, "c")
			s.chunk(1, false, "b")
			s.chunk(3, true, "")
			s.done()
		}, "a", client.ErrStreamBroken, "stream", false},
		{"repeated chunk", func(s *fakeStream) {
			s.chunk(0, false, "a")
			s.chunk(0, false, "a")
		}, "a", client.ErrStreamBroken, "stream", false},
		{"chunk after the final one", func(s *fakeStream) {
			s.chunk(0, true, "a")
			s.chunk(1, false, "b")
		}, "a", client.ErrStreamBroken, "stream", false},
		{"chunk from another place", func(s *fakeStream) {
			s.chunk(0, false, "a")
			ev := s.chunkEvent(2, false, "evil") // encrypted for seq 2, sent as 1
			s.raw(strings.Replace(ev, `"seq":2`, `"seq":1`, 1))
		}, "a", client.ErrChunkTampered, "tampered", false},
		{"a chunk that claims to be final", func(s *fakeStream) {
			s.chunk(0, false, "a")
			ev := s.chunkEvent(1, false, "b")
			s.raw(strings.Replace(ev, `"seq":1`, `"seq":1,"final":true`, 1))
			s.done()
		}, "a", client.ErrChunkTampered, "tampered", false},
		{"cut mid-stream", func(s *fakeStream) {
			s.chunk(0, false, "a")
			s.raw(`data: {"encrypted_chunk":"AQ`) // and the connection ends
		}, "a", client.ErrStreamBroken, "stream", false},
		{"whole answer but no done", func(s *fakeStream) {
			s.chunk(0, false, "a")
			s.chunk(1, true, "")
		}, "a", client.ErrStreamBroken, "stream", false},
		{"malformed chunk", func(s *fakeStream) { s.raw("data: not json\n\n") }, "", client.ErrStreamBroken, "stream", false},
		{"stall", func(s *fakeStream) {
			s.chunk(0, false, "a")
			<-s.ctx.Done() // until the client gives up
		}, "a", client.ErrStreamIdle, "stream", false},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			fx := newChatFixture(t)
			if tc.err == client.ErrStreamIdle {
				fx.chat.StreamIdle = 300 * time.Millisecond
			}
			fx.srv.set(func(f *fakeChat) { f.script = tc.script })
			id, err := fx.chat.CreateConversation(context.Background(), "openai", "")
			if err != nil {
				t.Fatal(err)
			}
			got, res, err := fx.send(t, id, "q", "")
			if got != tc.want {
				t.Errorf("streamed %q; want %q", got, tc.want)
			}
			var ae *client.AnswerError
			switch want := tc.err.(type) {
			case nil:
				if err != nil || res.Incomplete || !res.Stored {
					t.Fatalf("got %v, %+v; want a complete, stored answer", err, res)
				}
				return
			case *client.AnswerError:
				if !errors.As(err, &ae) || ae.Kind != tc.kind || ae.Stored != tc.stored || !ae.Incomplete || ae.RetryAfter != 2*time.Second {
					t.Fatalf("got %v (%+v); want an AnswerError of kind %s, stored %v", err, ae, tc.kind, tc.stored)
				}
			default:
				if !errors.Is(err, want) {
					t.Fatalf("got %v; want %v", err, want)
				}
			}
			if res == nil || !res.Incomplete || res.ErrorKind != tc.kind || res.Stored != tc.stored {
				t.Errorf("result %+v; want incomplete, kind %s, stored %v", res, tc.kind, tc.stored)
			}
		})
	}
}

func TestChatSendRefusals(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newChatFixture(t)
	id, _ := fx.chat.CreateConversation(ctx, "google", "")

	fx.srv.set(func(f *fakeChat) { delete(f.tokens, "google") })
	_, _, err := fx.send(t, id, "q", "")
	var nl *client.NotLinkedError
	if !errors.As(err, &nl) || nl.Provider != "google" || !errors.Is(err, client.ErrProviderNotLinked) {
		t.Errorf("send without a linked credential: got %v; want NotLinkedError for google", err)
	}
	// A credential sealed for another provider does not open as this one's.
	fx.srv.set(func(f *fakeChat) {
		sealed, _ := crypto.SealTo(fx.keys.Public, crypto.ProviderTokenContext(fx.sess.UserID, "openai"), []byte("sk"))
		f.tokens["google"] = sealed
	})
	if _, _, err := fx.send(t, id, "q", ""); err == nil || !strings.Contains(err.Error(), "does not open with your key") {
		t.Errorf("send with a misplaced credential: got %v; want refused", err)
	}
	if _, _, err := fx.send(t, uuid.NewString(), "q", ""); !errors.Is(err, client.ErrConversationNotFound) {
		t.Errorf("send to an unknown conversation: got %v; want ErrConversationNotFound", err)
	}
	if _, _, err := fx.send(t, id, "", ""); err == nil {
		t.Error("an empty prompt was sent")
	}
	fx.sess.ExpiresAt = time.Now().Add(-time.Second)
	if _, _, err := fx.send(t, id, "q", ""); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("send on an expired session: got %v; want ErrSessionExpired", err)
	}
	fx.srv.set(func(f *fakeChat) {
		if f.posts != 0 {
			t.Errorf("%d refused sends reached the messages endpoint", f.posts)
		}
	})
}

// TestRuntimePinning: the first identity is pinned; the same identity
// (with a rotated key) is accepted; a changed identity, a bad signature or
// an expired key is refused before anything is sent; re-pinning needs the
// exact new identity.
func TestRuntimePinning(t *testing.T) {
	t.Parallel()
	ctx := context.Background()
	fx := newChatFixture(t)
	id, _ := fx.chat.CreateConversation(ctx, "openai", "")
	pinPath := filepath.Join(fx.state.Dir(), "runtime-identities.json")
	posts := func() (n int) { fx.srv.set(func(f *fakeChat) { n = f.posts }); return }

	// A bad signature on first use: refused, nothing pinned.
	fx.srv.set(func(f *fakeChat) {
		f.alterKey = func(k *api.RuntimeKey) { k.ExpiresAt = k.ExpiresAt.Add(time.Hour) } // signed statement changed
	})
	if _, err := fx.chat.RuntimeKey(ctx); !errors.Is(err, client.ErrRuntimeKeyInvalid) {
		t.Errorf("a key whose statement was altered: got %v; want ErrRuntimeKeyInvalid", err)
	}
	if _, err := os.Stat(pinPath); !os.IsNotExist(err) {
		t.Errorf("a refused key was pinned (%v)", err)
	}

	fx.srv.set(func(f *fakeChat) { f.alterKey = nil })
	rk, err := fx.chat.RuntimeKey(ctx)
	if err != nil || !rk.NewlyPinned {
		t.Fatalf("first use: got %+v, %v; want pinned", rk, err)
	}
	checkMode(t, pinPath, 0o600)
	first := rk.Identity
	if p, ok, err := fx.state.RuntimePin(fx.srv.URL); err != nil || !ok || p.Identity != first {
		t.Errorf("pin: got %+v %v %v; want %s", p, ok, err, first)
	}
	rk, err = fx.chat.RuntimeKey(ctx)
	if err != nil || rk.NewlyPinned || rk.Identity != first {
		t.Errorf("second use: got %+v, %v; want the same identity, not re-pinned", rk, err)
	}
	fx.srv.rotateKey()
	if rk2, err := fx.chat.RuntimeKey(ctx); err != nil || rk2.ID == rk.ID {
		t.Errorf("a rotated key under the pinned identity: got %+v, %v; want accepted", rk2, err)
	}

	// Another identity (signature valid for it): refused, loudly.
	fx.srv.rotateIdentity()
	before := posts()
	_, _, err = fx.send(t, id, "q", "")
	var ice *client.IdentityChangedError
	if !errors.As(err, &ice) || !errors.Is(err, client.ErrRuntimeIdentityChanged) || ice.Pinned != first || ice.Served == first ||
		!strings.Contains(err.Error(), "polydev chat trust-runtime --identity "+ice.Served) {
		t.Fatalf("send with a changed identity: got %v; want IdentityChangedError with advice", err)
	}
	if posts() != before {
		t.Error("a prompt was sent to a runtime whose identity changed")
	}
	// A signature by another identity than the one the key names.
	fx.srv.set(func(f *fakeChat) { f.alterKey = func(k *api.RuntimeKey) { k.Identity = first } })
	if _, err := fx.chat.RuntimeKey(ctx); !errors.Is(err, client.ErrRuntimeKeyInvalid) {
		t.Errorf("the pinned identity with another's signature: got %v; want ErrRuntimeKeyInvalid", err)
	}
	fx.srv.set(func(f *fakeChat) { f.alterKey = nil })

	// Re-pinning needs the exact identity served.
	c := client.New(fx.srv.URL, nil)
	if _, _, err := client.TrustRuntime(ctx, c, fx.state, "", first, time.Now()); err == nil {
		t.Error("trust-runtime with an identity the server does not present succeeded")
	}
	rk, was, err := client.TrustRuntime(ctx, c, fx.state, "", ice.Served, time.Now())
	if err != nil || was != first || rk.Identity != ice.Served {
		t.Fatalf("trust-runtime: got %+v, was %q, %v", rk, was, err)
	}
	if got, _, err := fx.send(t, id, "q", ""); err != nil || got != "echo: q ✓" {
		t.Errorf("send after re-pinning: got %q, %v", got, err)
	}

	// An expired key, validly signed: refused.
	fx.srv.set(func(f *fakeChat) {
		f.alterKey = func(k *api.RuntimeKey) {
			k.CreatedAt, k.ExpiresAt = k.CreatedAt.Add(-3*time.Hour), k.CreatedAt.Add(-time.Hour)
			k.Signature, _ = f.identity.Sign(crypto.KeyStatement{KeyID: k.KeyID, PublicKey: k.PublicKey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt})
		}
	})
	if _, err := fx.chat.RuntimeKey(ctx); !errors.Is(err, client.ErrRuntimeKeyInvalid) || !strings.Contains(err.Error(), "expired") {
		t.Errorf("an expired key: got %v; want ErrRuntimeKeyInvalid (expired)", err)
	}
	fx.srv.set(func(f *fakeChat) { f.alterKey = nil })

	// A damaged pin file is an error, never "nothing pinned".
	if err := os.WriteFile(pinPath, []byte("{not json"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := fx.chat.RuntimeKey(ctx); err == nil || !strings.Contains(err.Error(), "damaged") {
		t.Errorf("a damaged pin file: got %v; want an error", err)
	}
}

// runCLI runs polydev with args and stdin.
func runCLI(args []string, stdin string) (code int, stdout, stderr string) {
	var out, errOut bytes.Buffer
	code = cli.Run(context.Background(), args, strings.NewReader(stdin), &out, &errOut)
	return code, out.String(), errOut.String()
}

// TestCLIChat drives `polydev chat` end to end — flags, prompts, streaming
// output, notices, exit codes, the pin file — through cli.Run against the
// account fake and the chat fake. It sets environment variables, so it
// does not run in parallel.
func TestCLIChat(t *testing.T) {
	acct := newFakeServer(t)
	srv := newFakeChat(t, acct.Config.Handler)
	dir := filepath.Join(t.TempDir(), "config")
	t.Setenv("POLYDEV_CONFIG_DIR", dir)
	t.Setenv("POLYDEV_SERVER", srv.URL)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	email := newEmail()
	if code, _, errOut := runCLI(args("account register --email "+email), ""); code != 0 {
		t.Fatalf("register: %d %s", code, errOut)
	}
	sess, err := client.NewState(dir).Load()
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.ParsePublicKey(sess.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	srv.setUser(sess.UserID, pub, sess.Token)

	type step struct {
		name  string
		args  []string
		stdin string
		code  int
		out   []string // each must appear in stdout
		err   string   // must appear in stderr
	}
	run := func(steps ...step) string {
		t.Helper()
		var last string
		for _, s := range steps {
			code, out, errOut := runCLI(s.args, s.stdin)
			ok := code == s.code && strings.Contains(errOut, s.err)
			for _, o := range s.out {
				ok = ok && strings.Contains(out, o)
			}
			if !ok {
				t.Errorf("%s: polydev %q: got code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
					s.name, s.args, code, out, errOut, s.code, s.out, s.err)
			}
			last = out
		}
		return last
	}
	lastGrant := func() (g worker.Grant) {
		srv.set(func(f *fakeChat) {
			if len(f.grants) > 0 {
				g = f.grants[len(f.grants)-1]
			}
		})
		return g
	}

	run(
		step{name: "usage", args: args("chat"), code: 2, err: "Usage: polydev chat"},
		step{name: "empty list", args: args("chat ls"), code: 0, out: []string{"no conversations yet"}},
		step{name: "unknown provider", args: args("chat new --provider acme"), code: 1, err: "unknown provider \"acme\""},
	)
	id := strings.TrimSpace(run(step{name: "new", args: []string{"chat", "new", "--provider", "anthropic", "--title", "My  first\nchat", "--model", "claude-x"}, code: 0}))
	if _, err := uuid.Parse(id); err != nil {
		t.Fatalf("chat new printed %q; want an id", id)
	}
	run(
		step{name: "ls", args: args("chat ls"), code: 0, out: []string{"ID", id, "anthropic", "My first chat"}},
		step{name: "send", args: args("chat send " + id + " hello world"), code: 0, out: []string{"echo: hello world ✓\n"},
			err: "pinned the runtime identity of " + srv.URL + " on first use"},
	)
	if g := lastGrant(); g.Model != "claude-x" || g.Temperature != nil {
		t.Errorf("the first send's grant: model %q, temperature %v; want the remembered claude-x and none", g.Model, g.Temperature)
	}
	checkMode(t, filepath.Join(dir, "runtime-identities.json"), 0o600)
	checkMode(t, filepath.Join(dir, "chat-models.json"), 0o600)
	run(
		step{name: "send from stdin", args: args("chat send " + id), stdin: "from stdin\n", code: 0, out: []string{"echo: from stdin ✓\n"}},
		step{name: "flags after the id", args: []string{"chat", "send", id, "third one", "--model", "m2", "--temperature", "0.5", "-v"}, code: 0,
			out: []string{"echo: third one ✓"}, err: "model fake-model · 3 input + 5 output tokens"},
		step{name: "bad temperature", args: args("chat send --temperature hot " + id + " x"), code: 1, err: "want a number from 0 to 2"},
		step{name: "no id", args: args("chat send"), code: 2, err: "missing arguments"},
		step{name: "empty prompt", args: args("chat send " + id), stdin: "\n", code: 1, err: "empty prompt"},
	)
	if g := lastGrant(); g.Model != "m2" || g.Temperature == nil || *g.Temperature != 0.5 {
		t.Errorf("the third send's grant: model %q, temperature %v; want m2, 0.5", g.Model, g.Temperature)
	}
	run(step{name: "show", args: args("chat show " + id), code: 0, out: []string{"My first chat", id + " · anthropic",
		"── you", "hello world\n", "── assistant · m2 · 8 tokens · 42ms", "echo: from stdin ✓", "echo: third one ✓"}})

	srv.set(func(f *fakeChat) {
		f.script = func(s *fakeStream) {
			s.chunk(0, false, "par")
			s.chunk(1, false, "tial")
			s.fail("upstream", true)
		}
	})
	run(
		step{name: "broken answer", args: args("chat send " + id + " break"), code: 1, out: []string{"partial\n"},
			err: "the answer is incomplete: upstream: the provider broke off; the part that arrived is stored, marked incomplete"},
		step{name: "show marks it", args: args("chat show " + id), code: 0, out: []string{"partial\n[incomplete: the answer broke off here]"}},
	)
	srv.set(func(f *fakeChat) { f.script = nil })

	srv.rotateIdentity()
	var served string
	srv.set(func(f *fakeChat) { served = f.identity.Public() })
	run(
		step{name: "changed identity", args: args("chat send " + id + " q"), code: 1, err: "the runtime identity of " + srv.URL + " has changed"},
		step{name: "trust-runtime shows", args: args("chat trust-runtime"), code: 1, out: []string{"served identity:  " + served, "pinned identity:  "},
			err: "differs from the pinned one"},
		step{name: "trust-runtime, wrong identity", args: args("chat trust-runtime --identity " + sess.PublicKey), code: 1, err: "nothing was pinned"},
		step{name: "trust-runtime", args: args("chat trust-runtime --identity " + served), code: 0, out: []string{"replaced the pinned runtime identity", "now: " + served}},
		step{name: "send after re-pinning", args: args("chat send " + id + " q"), code: 0, out: []string{"echo: q ✓"}},
	)

	gid := strings.TrimSpace(run(step{name: "new google", args: args("chat new --provider google"), code: 0}))
	srv.set(func(f *fakeChat) { delete(f.tokens, "google") })
	run(
		step{name: "not linked", args: args("chat send " + gid + " q"), code: 1, err: "no google account is linked: run polydev link key --provider google"},
		step{name: "rm", args: args("chat rm " + id), code: 0, out: []string{"deleted conversation " + id}},
		step{name: "show removed", args: args("chat show " + id), code: 1, err: "no conversation " + id + " in your account"},
	)
	t.Setenv("POLYDEV_PASSWORD", "not the password")
	run(step{name: "wrong password", args: args("chat ls"), code: 1, err: "polydev chat: wrong password\n"})
}

// TestChatSendCancelled: a caller that gives up mid-answer gets ctx's
// error and an incomplete result, promptly.
func TestChatSendCancelled(t *testing.T) {
	t.Parallel()
	fx := newChatFixture(t)
	release := make(chan struct{})
	fx.srv.set(func(f *fakeChat) {
		f.script = func(s *fakeStream) {
			s.chunk(0, false, "a")
			<-release
		}
	})
	defer close(release)
	id, _ := fx.chat.CreateConversation(context.Background(), "openai", "")
	ctx, cancel := context.WithCancel(context.Background())
	var got string
	res, err := fx.chat.Send(ctx, id, []byte("q"), "", nil, func(s string) { got += s; cancel() })
	if !errors.Is(err, context.Canceled) || res == nil || !res.Incomplete || res.ErrorKind != "cancelled" || got != "a" {
		t.Errorf("cancelled send: got %q, %+v, %v; want context.Canceled, incomplete", got, res, err)
	}
}
