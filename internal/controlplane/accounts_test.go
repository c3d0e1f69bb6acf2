package controlplane_test

import (
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"io"
	"log/slog"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/egress"
	"polydev/internal/egress/egresstest"
	"polydev/internal/store"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

// startEgress runs a real server over st with the given egress (nil:
// direct), logging to logw.
func startEgress(t testing.TB, st store.Store, eg *egress.Proxy, logw io.Writer) string {
	t.Helper()
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second,
		Store: st, SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32), Egress: eg},
		slog.New(slog.NewJSONHandler(logw, nil)), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addrc := make(chan net.Addr, 1)
	errc := make(chan error, 1)
	go func() { errc <- srv.Run(ctx, func(a net.Addr) { addrc <- a }) }()
	t.Cleanup(func() { cancel(); <-errc })
	select {
	case a := <-addrc:
		return "http://" + a.String()
	case err := <-errc:
		t.Fatalf("server did not start: %v", err)
	}
	return ""
}

// linkUser is a user made straight in the store (the auth API has its own
// tests), with a key pair and a session.
type linkUser struct {
	id     string
	number int64
	priv   *crypto.PrivateKey
	c      *apiClient
}

func newLinkUser(t *testing.T, st store.Store, base string) *linkUser {
	t.Helper()
	priv, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	u := &store.User{ID: uuid.NewString(), KDFParams: []byte("{}"), AuthHash: []byte{1}, AuthSalt: []byte{2}, AuthAlgo: "x",
		WrappedAccountKey: "w", WrappedPrivateKey: "p", PublicKey: priv.Public().String()}
	u.Email = "u-" + u.ID[:8] + "@example.org"
	if err := st.CreateUser(context.Background(), u); err != nil {
		t.Fatal(err)
	}
	token := base64.RawURLEncoding.EncodeToString([]byte(uuid.NewString()))
	h := sha256.Sum256([]byte(token))
	if err := st.CreateSession(context.Background(), u.ID, &store.Session{TokenHash: h[:], ExpiresAt: time.Now().Add(time.Hour)}); err != nil {
		t.Fatal(err)
	}
	return &linkUser{id: u.ID, number: u.Number, priv: priv, c: &apiClient{t: t, base: base, token: token}}
}

// seal seals key to the user's own public key, as the client does.
func (u *linkUser) seal(t *testing.T, provider, key string) string {
	t.Helper()
	env, err := crypto.SealTo(u.priv.Public(), crypto.ProviderTokenContext(u.id, provider), []byte(key))
	if err != nil {
		t.Fatal(err)
	}
	return env
}

func (u *linkUser) link(t *testing.T, provider, key string) (int, map[string]any) {
	t.Helper()
	s, out, _ := u.c.call("POST", "/v1/accounts/tokens", map[string]string{"provider": provider, "encrypted_token": u.seal(t, provider, key)})
	return s, out
}

func num(v any) int { f, _ := v.(float64); return int(f) }

// egressBackends runs fn per store backend with a function returning all
// the database holds (the SQLite files, or a pg_dump).
func egressBackends(t *testing.T, fn func(t *testing.T, st store.Store, dump func() []byte)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		path := filepath.Join(t.TempDir(), "polydev.db")
		st, err := sqlite.Open(context.Background(), path, sqlite.WithMigrate())
		if err != nil {
			t.Fatal(err)
		}
		t.Cleanup(func() { st.Close() })
		fn(t, st, func() []byte {
			var all []byte
			for _, f := range []string{path, path + "-wal"} {
				b, _ := os.ReadFile(f)
				all = append(all, b...)
			}
			return all
		})
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, c, owner := postgresStore(t)
		fn(t, st, func() []byte {
			out, err := exec.Command(filepath.Join(c.BinDir(), "pg_dump"), "--data-only", "--inserts", owner).CombinedOutput()
			if err != nil {
				t.Fatalf("pg_dump: %v\n%s", err, out)
			}
			return out
		})
	})
}

// TestAccountsAndEgress links providers for three users through a fake
// gateway with four ports, on both backends: each user's first link takes
// their own port base+n−1 and the egress IP recorded is the one the
// gateway reports for that port; rotation moves a provider and re-looks up
// its IP; an exhausted range is a clear 503; revocation is audited. The
// proxy host and credentials, and the API keys, appear in no answer, no
// log line and nowhere in the database.
func TestAccountsAndEgress(t *testing.T) {
	t.Parallel()
	egressBackends(t, func(t *testing.T, st store.Store, dump func() []byte) {
		up := egresstest.Start(t, 4)
		eg, err := egress.New(up.Config())
		if err != nil {
			t.Fatal(err)
		}
		var logs bytes.Buffer
		var mu sync.Mutex
		base := startEgress(t, st, eg, syncWriter{&logs, &mu})
		var answers bytes.Buffer // every response body, for the search at the end
		record := func(s int, out map[string]any) (int, map[string]any) {
			b, _ := json.Marshal(out)
			answers.Write(b)
			return s, out
		}
		u1, u2, u3 := newLinkUser(t, st, base), newLinkUser(t, st, base), newLinkUser(t, st, base)
		if u1.number != 1 || u2.number != 2 || u3.number != 3 {
			t.Fatalf("user numbers %d %d %d; want 1 2 3 in a fresh store", u1.number, u2.number, u3.number)
		}
		keys := map[string]string{"u1/openai": "sk-MARKER-u1-openai-" + uuid.NewString(), "u1/anthropic": "sk-ant-MARKER-u1-" + uuid.NewString(),
			"u2/openai": "sk-MARKER-u2-openai-" + uuid.NewString(), "u3/google": "AIza-MARKER-u3-" + uuid.NewString()}

		// First links: user n on port base+n−1, the exit IP of that port.
		for _, c := range []struct {
			u        *linkUser
			provider string
			port     int
		}{{u1, "openai", up.Base}, {u1, "anthropic", up.Base}, {u2, "openai", up.Base + 1}} {
			name := map[*linkUser]string{u1: "u1", u2: "u2"}[c.u] + "/" + c.provider
			before := up.Hits(c.port)
			s, out := record(c.u.link(t, c.provider, keys[name]))
			if s != 201 || num(out["egress_port"]) != c.port || out["egress_ip"] != up.ExitIP(c.port) || out["linked_at"] == nil {
				t.Errorf("link %s: %d %v; want 201 on port %d with IP %s", name, s, out, c.port, up.ExitIP(c.port))
			}
			if up.Hits(c.port) != before+1 {
				t.Errorf("link %s: the IP lookup did not go through port %d", name, c.port)
			}
		}
		// Linking again replaces the key, keeps the port and IP, looks nothing up.
		hits := up.TotalHits()
		keys["u1/openai"] = "sk-MARKER-u1-openai-new-" + uuid.NewString()
		if s, out := record(u1.link(t, "openai", keys["u1/openai"])); s != 200 || num(out["egress_port"]) != up.Base || out["egress_ip"] != up.ExitIP(up.Base) {
			t.Errorf("link again: %d %v; want 200 on the same port and IP", s, out)
		}
		if up.TotalHits() != hits {
			t.Error("linking again looked the IP up again")
		}
		// The device gets the sealed key back and opens it.
		s, out, _ := u1.c.call("GET", "/v1/accounts/openai/token", nil)
		record(s, out)
		if s != 200 {
			t.Fatalf("GET token: %d %v", s, out)
		}
		pt, err := crypto.OpenSealed(u1.priv, crypto.ProviderTokenContext(u1.id, "openai"), out["encrypted_token"].(string))
		if err != nil || string(pt) != keys["u1/openai"] {
			t.Errorf("the stored token opens to %q, %v; want the new key", pt, err)
		}

		// Rotation: the free port at the top of the range, its own IP.
		s, out, _ = u1.c.call("POST", "/v1/accounts/openai/rotate-egress", nil)
		record(s, out)
		if s != 200 || num(out["new_port"]) != up.Base+3 || num(out["old_port"]) != up.Base || out["egress_ip"] != up.ExitIP(up.Base+3) {
			t.Errorf("rotate u1/openai: %d %v; want %d → %d with IP %s", s, out, up.Base, up.Base+3, up.ExitIP(up.Base+3))
		}
		s, out, hdr := u1.c.call("POST", "/v1/accounts/openai/rotate-egress", nil)
		record(s, out)
		if s != 429 || errCode(out) != "rate_limited" || hdr.Get("Retry-After") == "" {
			t.Errorf("rotate again at once: %d %v; want 429 rate_limited with Retry-After", s, out)
		}
		s, out, _ = u1.c.call("GET", "/v1/accounts", nil)
		record(s, out)
		ps, _ := out["providers"].([]any)
		if s != 200 || len(ps) != 2 {
			t.Fatalf("GET accounts: %d %v", s, out)
		}
		an, op := ps[0].(map[string]any), ps[1].(map[string]any)
		if an["provider"] != "anthropic" || num(an["egress_port"]) != up.Base || an["last_rotated_at"] != nil ||
			op["provider"] != "openai" || num(op["egress_port"]) != up.Base+3 || op["egress_ip"] != up.ExitIP(up.Base+3) ||
			op["last_rotated_at"] == nil || op["last_used"] != nil || op["scopes"] == nil {
			t.Errorf("GET accounts: %v", ps)
		}
		// Every port is now held or reserved (u3 exists, so base+2 is
		// theirs): a clear 503.
		s, out, _ = u2.c.call("POST", "/v1/accounts/openai/rotate-egress", nil)
		record(s, out)
		if s != 503 || errCode(out) != "egress_exhausted" {
			t.Errorf("rotate with the range exhausted: %d %v; want 503 egress_exhausted", s, out)
		}
		if s, out := record(u3.link(t, "google", keys["u3/google"])); s != 201 || num(out["egress_port"]) != up.Base+2 {
			t.Errorf("u3 links on its reserved default: %d %v", s, out)
		}

		// Revocation, audited.
		if s, out, _ := u1.c.call("POST", "/v1/accounts/openai/revoke", nil); s != 204 {
			t.Errorf("revoke: %d %v", s, out)
		}
		if s, out, _ := u1.c.call("POST", "/v1/accounts/openai/revoke", nil); s != 404 || errCode(out) != "not_linked" {
			t.Errorf("revoke again: %d %v; want 404 not_linked", s, out)
		}
		events, err := st.AuditEvents(context.Background(), u1.id, 20)
		if err != nil {
			t.Fatal(err)
		}
		var names []string
		for _, e := range events {
			names = append(names, e.Event)
		}
		if got := strings.Join(names, ","); got != "provider_revoke,egress_rotate,provider_relink,provider_link,provider_link" {
			t.Errorf("u1's audit events, newest first: %s", got)
		}

		// Nothing secret anywhere.
		db := dump()
		if !bytes.Contains(db, []byte("provider_link")) || !bytes.Contains(db, []byte(up.ExitIP(up.Base+1))) {
			t.Fatal("the database dump holds neither the audit events nor the egress IPs: the search would prove nothing")
		}
		if !bytes.Contains(logs.Bytes(), []byte("request failed")) || !bytes.Contains(answers.Bytes(), []byte(up.ExitIP(up.Base))) {
			t.Fatal("the log or the answers hold nothing: the search would prove nothing")
		}
		secrets := map[string]string{"proxy password": up.Password, "proxy username": up.Username, "proxy host": up.Host}
		for k, v := range keys {
			secrets["api key "+k] = v
		}
		for where, data := range map[string][]byte{"database": db, "server log": logs.Bytes(), "API answers": answers.Bytes()} {
			for what, secret := range secrets {
				for enc, form := range map[string]string{"raw": secret, "hex": hex.EncodeToString([]byte(secret)),
					"base64": base64.StdEncoding.EncodeToString([]byte(secret))} {
					if bytes.Contains(data, []byte(form)) {
						t.Errorf("%s contains the %s (%s)", where, what, enc)
					}
				}
			}
		}
	})
}

// TestEgressIPLookupFailure: a lookup that fails (here: the gateway
// refuses the credentials) keeps the token, reports the failure, and
// leaks neither host nor credentials into the answer or the log.
func TestEgressIPLookupFailure(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 2)
	cfg := up.Config()
	cfg.Password = egress.NewSecret("wrong-" + up.Password)
	eg, err := egress.New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	var logs bytes.Buffer
	var mu sync.Mutex
	st := sqliteStore(t)
	base := startEgress(t, st, eg, syncWriter{&logs, &mu})
	u := newLinkUser(t, st, base)
	s, out := u.link(t, "openai", "sk-lookup-fails")
	if s != 201 || out["egress_ip"] != "" || out["egress_ip_error"] == nil || num(out["egress_port"]) != up.Base {
		t.Fatalf("link with a failing lookup: %d %v; want 201, no IP, an egress_ip_error", s, out)
	}
	if ts, _ := st.ProviderTokens(context.Background(), u.id); len(ts) != 1 {
		t.Fatalf("the token was not kept: %d tokens", len(ts))
	}
	if up.Refused(up.Base) == 0 {
		t.Fatal("the lookup never reached the gateway")
	}
	if !strings.Contains(logs.String(), "egress ip lookup failed") {
		t.Errorf("the failure is not logged:\n%s", logs.String())
	}
	for _, secret := range []string{up.Host, up.Password, up.Username, "wrong-" + up.Password} {
		if strings.Contains(logs.String(), secret) || strings.Contains(fmt.Sprint(out), secret) {
			t.Errorf("a proxy secret or the host leaked into the log or the answer:\n%s\n%v", logs.String(), out)
		}
	}
}

// TestDirectEgress: with no proxy configured, linking works, the port rule
// holds, and no IP is looked up unless a URL is configured.
func TestDirectEgress(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	base := startEgress(t, st, nil, io.Discard)
	u := newLinkUser(t, st, base)
	if s, out := u.link(t, "anthropic", "sk-ant-direct"); s != 201 || num(out["egress_port"]) != 10001 || out["egress_ip"] != "" {
		t.Errorf("direct link: %d %v; want port 10001, no IP", s, out)
	}

	up := egresstest.Start(t, 1) // its echo only
	eg, err := egress.New(egress.Config{BasePort: 10001, Size: 1000, IPLookupURL: up.EchoURL})
	if err != nil {
		t.Fatal(err)
	}
	st2 := sqliteStore(t)
	base2 := startEgress(t, st2, eg, io.Discard)
	u2 := newLinkUser(t, st2, base2)
	if s, out := u2.link(t, "google", "AIza-direct"); s != 201 || out["egress_ip"] != "127.0.0.1" {
		t.Errorf("direct link with an IP URL: %d %v; want the host's own address", s, out)
	}
	if up.TotalHits() != 0 {
		t.Error("direct egress went through the proxy")
	}
}

// TestAccountsRefusals: what the accounts API refuses, and how.
func TestAccountsRefusals(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	base := startEgress(t, st, nil, io.Discard)
	u := newLinkUser(t, st, base)
	other, _ := crypto.GenerateKeyPair(crypto.Suites[len(crypto.Suites)-1])
	if other.Suite() == u.priv.Suite() {
		other, _ = crypto.GenerateKeyPair(crypto.Suites[0])
	}
	otherSuite, _ := crypto.SealTo(other.Public(), crypto.ProviderTokenContext(u.id, "openai"), []byte("sk"))
	symmetric, _ := crypto.WrapKey(crypto.NewKey(), crypto.AccountKeyContext(u.id), crypto.NewKey())
	anon := &apiClient{t: t, base: base}
	for _, c := range []struct {
		what         string
		c            *apiClient
		method, path string
		body         any
		status       int
		code         string
	}{
		{"no session", anon, "POST", "/v1/accounts/tokens", map[string]string{"provider": "openai", "encrypted_token": u.seal(t, "openai", "k")}, 401, "unauthorized"},
		{"no session, list", anon, "GET", "/v1/accounts", nil, 401, "unauthorized"},
		{"unknown provider", u.c, "POST", "/v1/accounts/tokens", map[string]string{"provider": "acme", "encrypted_token": u.seal(t, "openai", "k")}, 400, "invalid_request"},
		{"no token", u.c, "POST", "/v1/accounts/tokens", map[string]string{"provider": "openai"}, 400, "invalid_request"},
		{"plaintext key", u.c, "POST", "/v1/accounts/tokens", map[string]string{"provider": "openai", "encrypted_token": "sk-plaintext"}, 400, "invalid_request"},
		{"symmetric envelope", u.c, "POST", "/v1/accounts/tokens", map[string]string{"provider": "openai", "encrypted_token": symmetric}, 400, "invalid_request"},
		{"another suite", u.c, "POST", "/v1/accounts/tokens", map[string]string{"provider": "openai", "encrypted_token": otherSuite}, 400, "invalid_request"},
		{"unknown field", u.c, "POST", "/v1/accounts/tokens", map[string]any{"provider": "openai", "encrypted_token": u.seal(t, "openai", "k"), "key": "sk"}, 400, "invalid_json"},
		{"revoke unknown provider", u.c, "POST", "/v1/accounts/acme/revoke", nil, 404, "unknown_provider"},
		{"rotate unlinked", u.c, "POST", "/v1/accounts/google/rotate-egress", nil, 404, "not_linked"},
		{"token unlinked", u.c, "GET", "/v1/accounts/google/token", nil, 409, "provider_not_linked"},
		{"wrong method", u.c, "DELETE", "/v1/accounts", nil, 405, "method_not_allowed"},
		{"wrong method, rotate", u.c, "GET", "/v1/accounts/openai/rotate-egress", nil, 405, "method_not_allowed"},
	} {
		s, out, _ := c.c.call(c.method, c.path, c.body)
		if s != c.status || errCode(out) != c.code {
			t.Errorf("%s: %d %v; want %d %s", c.what, s, out, c.status, c.code)
		}
	}
	if s, out, _ := u.c.call("GET", "/v1/accounts", nil); s != 200 || len(out["providers"].([]any)) != 0 {
		t.Errorf("nothing linked: %d %v; want an empty list", s, out)
	}
}
