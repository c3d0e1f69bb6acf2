package controlplane_test

import (
	"bytes"
	"context"
	"crypto/rand"
	"io"
	"log"
	"log/slog"
	"net/http"
	"net/http/httputil"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/provider/emulator"
	"polydev/internal/store"
	"polydev/internal/store/sqlite"
)

// recorder is the transport of a reverse proxy in front of the server: it
// keeps every response the server sent (status line, headers and body as
// far as it was read), one buffer per response so that concurrent
// responses never interleave and split a marker.
type recorder struct {
	next      http.RoundTripper
	mu        sync.Mutex
	responses []*bytes.Buffer
}

func (r *recorder) RoundTrip(req *http.Request) (*http.Response, error) {
	resp, err := r.next.RoundTrip(req)
	if err != nil {
		return nil, err
	}
	b := &bytes.Buffer{}
	b.WriteString(resp.Status + "\r\n")
	resp.Header.Write(b)
	r.mu.Lock()
	r.responses = append(r.responses, b)
	r.mu.Unlock()
	resp.Body = &teeBody{rc: resp.Body, r: r, b: b}
	return resp, nil
}

// all returns a copy of every response so far.
func (r *recorder) all() [][]byte {
	r.mu.Lock()
	defer r.mu.Unlock()
	out := make([][]byte, len(r.responses))
	for i, b := range r.responses {
		out[i] = bytes.Clone(b.Bytes())
	}
	return out
}

type teeBody struct {
	rc io.ReadCloser
	r  *recorder
	b  *bytes.Buffer
}

func (t *teeBody) Read(p []byte) (int, error) {
	n, err := t.rc.Read(p)
	if n > 0 {
		t.r.mu.Lock()
		t.b.Write(p[:n])
		t.r.mu.Unlock()
	}
	return n, err
}

func (t *teeBody) Close() error { return t.rc.Close() }

// newMarkerEnv is newChatEnv wired as `polydev serve --dev` wires it: the
// emulator, the runtime and the control plane all log into one JSON log
// (at debug level, stricter than the default), and the client talks to
// the server through a recording reverse proxy.
func newMarkerEnv(t *testing.T, st store.Store, keys []string) (*chatEnv, *recorder) {
	t.Helper()
	logbuf := &syncBuffer{}
	lg := slog.New(slog.NewJSONHandler(logbuf, &slog.HandlerOptions{Level: slog.LevelDebug}))
	// The recording proxy in front of the control plane. A client that
	// leaves closes its connection to the proxy, which cancels the proxied
	// request: the server sees the disconnect as it would without it.
	rec := &recorder{next: &http.Transport{}}
	front := func(h http.Handler) http.Handler {
		target, _ := url.Parse("http://" + serveLoopback(t, h))
		rp := httputil.NewSingleHostReverseProxy(target)
		rp.Transport = rec
		rp.FlushInterval = -1
		rp.ErrorLog = log.New(io.Discard, "", 0)
		return rp
	}
	e := newChatEnvWith(t, st, envOptions{keys: keys, log: lg, front: front,
		tweak: func(c *controlplane.Config) { c.Heartbeat = 20 * time.Millisecond }})
	e.logbuf = logbuf
	return e, rec
}

// markerBackend is a store and a way to read everything its database holds.
type markerBackend struct {
	st store.Store
	// dump returns the database as it is at rest: the SQLite file, its
	// WAL and shared-memory files as found (no checkpoint forced), or a
	// pg_dump.
	dump func() map[string][]byte
	// close closes the store (SQLite checkpoints its WAL into the file).
	close func()
}

func markerBackends(t *testing.T, fn func(t *testing.T, b markerBackend)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "polydev.db")
		st, err := sqlite.Open(context.Background(), path, sqlite.WithMigrate())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, markerBackend{st: st, close: func() { st.Close() }, dump: func() map[string][]byte {
			files := map[string][]byte{}
			for _, f := range []string{path, path + "-wal", path + "-shm"} {
				b, err := os.ReadFile(f)
				if err != nil && !os.IsNotExist(err) {
					t.Fatal(err)
				}
				files[filepath.Base(f)] = b
			}
			return files
		}})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, c, owner := postgresStore(t)
		fn(t, markerBackend{st: st, close: func() { st.Close() }, dump: func() map[string][]byte {
			out, err := exec.Command(filepath.Join(c.BinDir(), "pg_dump"), "--inserts", owner).CombinedOutput()
			if err != nil {
				t.Fatalf("pg_dump: %v\n%s", err, out)
			}
			return map[string][]byte{"pg_dump": out}
		}})
	})
}

// TestChatMarkersNowhere is the marker test of the chat path: API keys,
// conversation titles and prompts carrying unique markers — and the
// answers, which echo the prompts — go through the whole chat API on both
// backends: linking, a complete two-turn chat, an answer the provider cuts
// off, one the client abandons mid-stream. Then none of the markers, nor a
// conversation key, may appear raw, in hex (either case) or in standard or
// URL base64 (at each of the three byte alignments) in the database at
// rest (SQLite file, WAL and -shm, before and after the close checkpoint;
// a pg_dump), in the server log (control plane, runtime and emulator, as
// `serve --dev` logs them), or in any response the server sent.
func TestChatMarkersNowhere(t *testing.T) {
	t.Parallel()
	markerBackends(t, func(t *testing.T, b markerBackend) {
		mark := func(what string) string { return what + "-MARKER-" + strings.ReplaceAll(uuid.NewString(), "-", "") }
		providers := []string{"openai", "anthropic", "google"}
		apiKeys := map[string]string{}
		var keyList []string
		for _, p := range providers {
			apiKeys[p] = "sk-" + mark("apikey-"+p)
			keyList = append(keyList, apiKeys[p])
		}
		// The emulator accepts only these keys: a chat that works proves
		// the marked keys really travelled to the provider.
		e, rec := newMarkerEnv(t, b.st, keyList)

		secrets := map[string][]byte{}
		plain := func(what, s string) { secrets[what] = []byte(s) }
		for p, k := range apiKeys {
			plain("api key "+p, k)
		}
		var envelopes []string // ciphertexts that must be at rest and in answers: the search would prove nothing without them
		for _, p := range providers {
			sealed, err := crypto.SealTo(e.acct.priv.Public(), crypto.ProviderTokenContext(e.acct.userID, p), []byte(apiKeys[p]))
			if err != nil {
				t.Fatal(err)
			}
			s, out, _ := e.c.call("POST", "/v1/accounts/tokens", map[string]string{"provider": p, "encrypted_token": sealed})
			if s != 201 {
				t.Fatalf("link %s: %d %v", p, s, out)
			}
			envelopes = append(envelopes, sealed)
		}
		if s, out, _ := e.c.call("GET", "/v1/accounts", nil); s != 200 {
			t.Fatalf("accounts: %d %v", s, out)
		}

		newConv := func(p string) conv {
			raw := make([]byte, 32)
			rand.Read(raw)
			key, err := crypto.KeyFromBytes(raw)
			if err != nil {
				t.Fatal(err)
			}
			c := conv{id: uuid.NewString(), key: key}
			secrets["conversation key "+p] = raw
			title := "notes on " + mark("title-"+p) + " for later"
			plain("title "+p, title)
			wrapped, _ := crypto.WrapKey(e.acct.accountKey, crypto.ConversationKeyContext(e.acct.userID, c.id), c.key)
			sealed, _ := crypto.Seal(c.key, crypto.ConversationTitleContext(e.acct.userID, c.id), []byte(title))
			s, out, _ := e.c.call("POST", "/v1/chat/sessions", api.CreateConversationRequest{ConversationID: c.id,
				Provider: p, WrappedKey: wrapped, EncryptedTitle: sealed})
			if s != 201 {
				t.Fatalf("create conversation: %d %v", s, out)
			}
			envelopes = append(envelopes, sealed)
			return c
		}
		// complete sends prompt and checks the whole answer streamed.
		complete := func(c conv, p, label, prompt string) {
			t.Helper()
			req := e.request(c, p, prompt, sendOpts{model: "model-x"})
			r := e.send(c, req, 0)
			if r.done == nil || r.streamErr != nil || r.text != emulator.ReplyText(prompt, -1) {
				t.Fatalf("%s: status %d, done %+v, error %+v, body %v, text %q", p, r.status, r.done, r.streamErr, r.errBody, r.text)
			}
			envelopes = append(envelopes, req.EncryptedPrompt)
			plain("answer to the "+label, r.text)
		}

		convs := map[string]conv{}
		for _, p := range providers {
			convs[p] = newConv(p)
			prompt := mark("prompt-"+p) + " what does this say"
			plain("prompt "+p, prompt)
			complete(convs[p], p, "prompt "+p, prompt)
		}
		oc := convs["openai"]
		// A second turn: the worker decrypts the history.
		second := "and then " + mark("second-prompt") + " please"
		plain("second prompt", second)
		complete(oc, "openai", "second prompt", second)

		// An answer the provider cuts after two tokens: stored incomplete.
		cut := mark("cut-prompt") + " tail words never answered"
		plain("cut prompt", cut)
		r := e.send(oc, e.request(oc, "openai", cut, sendOpts{model: "model-x+cut_after=2"}), 0)
		if r.streamErr == nil || !r.streamErr.Stored || !r.streamErr.Incomplete || r.text != emulator.ReplyText(cut, 2) {
			t.Fatalf("cut stream: error %+v, done %+v, text %q", r.streamErr, r.done, r.text)
		}
		plain("cut answer", r.text)

		// An answer the client abandons after two chunks: the provider
		// call is cancelled and what arrived is stored incomplete.
		aborted := e.emu.Stats().Aborted
		gone := mark("abandoned-prompt") + " " + strings.Repeat("word ", 5)
		plain("abandoned prompt", gone)
		req := e.request(oc, "openai", gone, sendOpts{model: "model-x+tps=50;tokens=200"})
		r = e.send(oc, req, 2)
		if !strings.Contains(r.text, "abandoned-prompt-MARKER") {
			t.Fatalf("abandoned stream delivered %q before the client left", r.text)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		if err := e.emu.Wait(ctx, func(s emulator.Stats) bool { return s.Aborted > aborted && s.InFlight == 0 }); err != nil {
			t.Fatalf("the provider call was not cancelled after the client left: %v", err)
		}
		var stored *api.Message
		for deadline := time.Now().Add(10 * time.Second); stored == nil && time.Now().Before(deadline); time.Sleep(20 * time.Millisecond) {
			for _, m := range e.messages(oc) {
				// Until the result is stored, the answer is an empty
				// placeholder, already marked incomplete.
				if m.ID == req.AssistantMessageID && m.Status == "incomplete" && m.EncryptedContent != "" {
					stored = &m
				}
			}
		}
		if stored == nil {
			t.Fatal("the abandoned answer was not stored as incomplete")
		}
		partial := e.openMessage(oc, *stored)
		if !strings.HasPrefix(partial, r.text) {
			t.Fatalf("abandoned answer stored as %q; the client saw %q", partial, r.text)
		}
		plain("abandoned answer", partial)

		// Read everything back, as a device does: the list, each
		// conversation, and the stored messages open to what was sent.
		if s, out, _ := e.c.call("GET", "/v1/chat/sessions", nil); s != 200 {
			t.Fatalf("list: %d %v", s, out)
		}
		ms := e.messages(oc)
		if len(ms) != 8 {
			t.Fatalf("the openai conversation holds %d messages; want 8", len(ms))
		}
		for _, m := range ms {
			e.openMessage(oc, m)
			envelopes = append(envelopes, m.EncryptedContent)
		}
		for _, p := range providers[1:] {
			if n := len(e.messages(convs[p])); n != 2 {
				t.Fatalf("the %s conversation holds %d messages; want 2", p, n)
			}
		}

		for what, s := range secrets {
			if len(s) < 24 {
				t.Fatalf("secret %q is too short to search for", what)
			}
		}
		search := func(where string, data []byte) int {
			t.Helper()
			hits := 0
			for what, secret := range secrets {
				for enc, form := range forms(secret) {
					if bytes.Contains(data, []byte(form)) {
						t.Errorf("%s contains the %s (%s)", where, what, enc)
						hits++
					}
				}
			}
			return hits
		}
		// proves fails the test when data lacks every ciphertext: a search
		// of the wrong place would prove nothing.
		proves := func(where string, data []byte) {
			t.Helper()
			var missing []string
			for _, env := range envelopes {
				if !bytes.Contains(data, []byte(env)) {
					missing = append(missing, env[:16]+"…")
				}
			}
			if len(missing) > 0 {
				t.Fatalf("%s lacks %d of the %d ciphertexts sent and stored (%v): the search would prove nothing", where, len(missing), len(envelopes), missing)
			}
		}

		var searched int
		// The database, open, as found (SQLite: before any checkpoint).
		open := b.dump()
		var all []byte
		for f, data := range open {
			search("database (open) "+f, data)
			all = append(all, data...)
			searched += len(data)
		}
		proves("database (open)", all)

		// The server log.
		logs := []byte(e.logbuf.String())
		if !bytes.Contains(logs, []byte(`"msg":"emulator request"`)) || !bytes.Contains(logs, []byte(`"component":"runtime"`)) {
			t.Fatalf("the log holds neither emulator nor runtime lines: the search would prove nothing\n%s", logs)
		}
		search("server log", logs)
		searched += len(logs)

		// Every response the server sent.
		var answers []byte
		resps := rec.all()
		for i, resp := range resps {
			search("response "+strconv.Itoa(i), resp)
			answers = append(answers, resp...)
			answers = append(answers, '\n')
			searched += len(resp)
		}
		if !bytes.Contains(answers, []byte(`"encrypted_chunk"`)) || !bytes.Contains(answers, []byte("event: done")) ||
			!bytes.Contains(answers, []byte("event: error")) {
			t.Fatal("the recorded responses hold no stream: the search would prove nothing")
		}
		proves("API responses", answers)

		// The database once closed (SQLite: checkpointed into the file).
		b.close()
		for f, data := range b.dump() {
			search("database (closed) "+f, data)
			searched += len(data)
		}
		t.Logf("searched %d bytes (database files, log, %d responses) for %d secrets in %d forms each", searched, len(resps), len(secrets), len(forms(nil)))
	})
}
