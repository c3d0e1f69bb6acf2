package controlplane_test

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"sort"
	"strings"
	"sync"
	"testing"

	"github.com/google/uuid"

	"polydev/internal/crypto"
	"polydev/internal/store"
	"polydev/internal/store/postgres"
	"polydev/internal/testenv/pgtest"
)

// backends runs fn once per store backend, each on a fresh database.
func backends(t *testing.T, fn func(t *testing.T, st store.Store)) {
	t.Run("sqlite", func(t *testing.T) {
		t.Parallel()
		fn(t, sqliteStore(t))
	})
	t.Run("postgres", func(t *testing.T) {
		t.Parallel()
		st, _, _ := postgresStore(t)
		fn(t, st)
	})
}

// postgresStore starts a throwaway cluster, migrates a database as its
// owner, and opens the store as an unprivileged NOINHERIT login role, as in
// production. It returns the cluster and the owner's DSN too.
func postgresStore(t testing.TB) (store.Store, *pgtest.Cluster, string) {
	t.Helper()
	c := pgtest.Start(t)
	owner := c.CreateDatabase(t, "polydev")
	if _, _, err := postgres.Migrate(context.Background(), owner, nil); err != nil {
		t.Fatal(err)
	}
	c.Psql(t, "postgres", "CREATE ROLE app LOGIN NOINHERIT; GRANT polydev_app, polydev_auth, polydev_vmm TO app;")
	st, err := postgres.Open(context.Background(), owner+" user=app")
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st, c, owner
}

type apiClient struct {
	t     *testing.T
	base  string
	token string
}

// call sends body (nil: none) and returns the status and decoded response.
func (c *apiClient) call(method, path string, body any) (int, map[string]any, http.Header) {
	c.t.Helper()
	var rd io.Reader
	switch b := body.(type) {
	case nil:
	case []byte:
		rd = bytes.NewReader(b)
	case string:
		rd = strings.NewReader(b)
	default:
		j, _ := json.Marshal(b)
		rd = bytes.NewReader(j)
	}
	req, _ := http.NewRequest(method, c.base+path, rd)
	req.Header.Set("Content-Type", "application/json")
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := http.DefaultClient.Do(req)
	if err != nil {
		c.t.Fatal(err)
	}
	defer resp.Body.Close()
	raw, _ := io.ReadAll(resp.Body)
	var out map[string]any
	if len(raw) > 0 {
		if err := json.Unmarshal(raw, &out); err != nil {
			c.t.Fatalf("%s %s: response is not JSON: %q", method, path, raw)
		}
	}
	return resp.StatusCode, out, resp.Header
}

func errCode(m map[string]any) string {
	e, _ := m["error"].(map[string]any)
	s, _ := e["code"].(string)
	return s
}

// account is what a client derives: everything register needs.
type account struct {
	userID, email, password string
	params                  crypto.KDFParams
	authKey                 string
	accountKey              crypto.Key
	priv                    *crypto.PrivateKey
	body                    map[string]any
}

func newAccount(t testing.TB, email, password string) *account {
	t.Helper()
	a := &account{userID: uuid.NewString(), email: email, password: password, params: crypto.DefaultPBKDF2Params()}
	mk, err := crypto.DeriveMasterKey([]byte(password), a.params)
	if err != nil {
		t.Fatal(err)
	}
	auth, wrap, _ := crypto.DeriveSubkeys(mk)
	a.authKey, _ = auth.Text()
	a.accountKey = crypto.NewKey()
	a.priv, _ = crypto.GenerateKeyPair(crypto.DefaultSuite)
	wak, _ := crypto.WrapKey(wrap, crypto.AccountKeyContext(a.userID), a.accountKey)
	wpk, _ := crypto.WrapPrivateKey(a.accountKey, crypto.PrivateKeyContext(a.userID), a.priv)
	kdf, _ := json.Marshal(a.params)
	a.body = map[string]any{"user_id": a.userID, "email": email, "kdf": json.RawMessage(kdf), "auth_key": a.authKey,
		"wrapped_account_key": wak, "wrapped_private_key": wpk, "public_key": a.priv.Public().String()}
	return a
}

// loginAs runs prelogin → derive → login as a client would, and unwraps the
// keys it gets back.
func loginAs(t *testing.T, c *apiClient, email, password string) (int, map[string]any) {
	t.Helper()
	st, pre, _ := c.call("POST", "/v1/auth/prelogin", map[string]string{"email": email})
	if st != 200 {
		t.Fatalf("prelogin: %d %v", st, pre)
	}
	rec, _ := json.Marshal(pre["kdf"])
	p, err := crypto.ParseKDFParams(rec)
	if err != nil {
		t.Fatalf("prelogin returned a record the client refuses: %v", err)
	}
	mk, err := crypto.DeriveMasterKey([]byte(password), p)
	if err != nil {
		t.Fatal(err)
	}
	auth, _, _ := crypto.DeriveSubkeys(mk)
	text, _ := auth.Text()
	st, out, _ := c.call("POST", "/v1/auth/login", map[string]string{"email": email, "auth_key": text})
	return st, out
}

func TestAuthAPI(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		var logs bytes.Buffer
		var mu sync.Mutex
		base, stop := startWith(t, st, syncWriter{&logs, &mu})
		c := &apiClient{t: t, base: base}
		ada := newAccount(t, "ada@example.org", "correct horse battery staple")

		if s, out, _ := c.call("POST", "/v1/auth/register", ada.body); s != 201 || out["user_number"] != 1.0 {
			t.Fatalf("register: %d %v", s, out)
		}
		if s, out, _ := c.call("POST", "/v1/auth/register", ada.body); s != 409 || errCode(out) != "conflict" {
			t.Errorf("register again: %d %v; want 409 conflict", s, out)
		}
		// Prelogin: the real record for ada; for an unknown email a fake
		// one shaped like the default record, the same every time.
		_, pa, _ := c.call("POST", "/v1/auth/prelogin", map[string]string{"email": "ada@example.org"})
		if pa["kdf"].(map[string]any)["iterations"] != float64(ada.params.Iterations) {
			t.Errorf("prelogin for ada: %v; want her record", pa)
		}
		_, pu1, _ := c.call("POST", "/v1/auth/prelogin", map[string]string{"email": "nobody@example.org"})
		_, pu2, _ := c.call("POST", "/v1/auth/prelogin", map[string]string{"email": "nobody@example.org"})
		def, _ := json.Marshal(crypto.DefaultKDFParams())
		var defMap map[string]any
		json.Unmarshal(def, &defMap)
		if fmt.Sprint(pu1) != fmt.Sprint(pu2) || keys(defMap) != keys(pu1["kdf"]) {
			t.Errorf("prelogin for an unknown email: %v then %v; want the same answer, shaped like %s", pu1, pu2, def)
		}

		s, out := loginAs(t, c, "ada@example.org", "correct horse battery staple")
		if s != 200 || out["token"] == "" || out["wrapped_account_key"] != ada.body["wrapped_account_key"] {
			t.Fatalf("login: %d %v", s, out)
		}
		// A second device unlocks the same account key from what login
		// returned.
		_, wrap := derive(t, ada.password, ada.params)
		ak, err := crypto.UnwrapKey(wrap, crypto.AccountKeyContext(ada.userID), out["wrapped_account_key"].(string))
		if err != nil || !ak.Equal(ada.accountKey) {
			t.Fatalf("unwrapping the account key from login: %v", err)
		}
		c.token = out["token"].(string)
		if s, me, _ := c.call("GET", "/v1/auth/me", nil); s != 200 || me["user"].(map[string]any)["email"] != "ada@example.org" {
			t.Errorf("me: %d %v", s, me)
		}

		// Wrong password and unknown account: the same answer.
		anon := &apiClient{t: t, base: base}
		s1, o1 := loginAs(t, anon, "ada@example.org", "wrong password")
		s2, o2 := loginAs(t, anon, "nobody@example.org", "wrong password")
		if s1 != 401 || s2 != 401 || errCode(o1) != "invalid_credentials" || fmt.Sprint(o1) != fmt.Sprint(o2) {
			t.Errorf("failed logins: %d %v / %d %v; want identical 401 invalid_credentials", s1, o1, s2, o2)
		}

		// Password change keeps this session, revokes the others, and
		// re-wraps only the account key.
		other := &apiClient{t: t, base: base}
		_, o := loginAs(t, other, "ada@example.org", "correct horse battery staple")
		other.token = o["token"].(string)
		if s, _, _ := other.call("GET", "/v1/auth/me", nil); s != 200 { // now in the session cache
			t.Fatalf("another session: %d", s)
		}
		newParams := crypto.DefaultPBKDF2Params()
		newAuth, newWrap := derive(t, "a new passphrase", newParams)
		rewrapped, _ := crypto.WrapKey(newWrap, crypto.AccountKeyContext(ada.userID), ada.accountKey)
		kdf, _ := json.Marshal(newParams)
		if s, o, _ := c.call("POST", "/v1/auth/password", map[string]any{"current_auth_key": ada.authKey, "kdf": json.RawMessage(kdf),
			"auth_key": newAuth, "wrapped_account_key": rewrapped}); s != 204 {
			t.Fatalf("password change: %d %v", s, o)
		}
		if s, _, _ := other.call("GET", "/v1/auth/me", nil); s != 401 {
			t.Errorf("another session after a password change: %d; want 401", s)
		}
		if s, _, _ := c.call("GET", "/v1/auth/me", nil); s != 200 {
			t.Errorf("the changing session after a password change: %d; want 200", s)
		}
		if s, _ := loginAs(t, anon, "ada@example.org", "correct horse battery staple"); s != 401 {
			t.Errorf("old password after the change: %d; want 401", s)
		}
		s, out = loginAs(t, anon, "ada@example.org", "a new passphrase")
		if s != 200 || out["wrapped_private_key"] != ada.body["wrapped_private_key"] {
			t.Fatalf("new password: %d %v", s, out)
		}

		// Logout revokes.
		if s, _, _ := c.call("POST", "/v1/auth/logout", nil); s != 204 {
			t.Errorf("logout: %d", s)
		}
		if s, o, _ := c.call("GET", "/v1/auth/me", nil); s != 401 || errCode(o) != "unauthorized" {
			t.Errorf("me after logout: %d %v", s, o)
		}

		// Erasure needs the password again, then removes everything.
		c.token = out["token"].(string)
		if s, o, _ := c.call("DELETE", "/v1/auth/me", map[string]string{"auth_key": ada.authKey}); s != 401 {
			t.Errorf("erasure with the old auth key: %d %v; want 401", s, o)
		}
		if s, o, _ := c.call("DELETE", "/v1/auth/me", map[string]string{"auth_key": newAuth}); s != 204 {
			t.Fatalf("erasure: %d %v", s, o)
		}
		if s, _ := loginAs(t, anon, "ada@example.org", "a new passphrase"); s != 401 {
			t.Errorf("login after erasure: %d; want 401", s)
		}
		if err := stop(); err != nil {
			t.Fatal(err)
		}
		// The logs never carry the password or a key.
		mu.Lock()
		defer mu.Unlock()
		for _, secret := range []string{ada.password, "a new passphrase", ada.authKey, newAuth, c.token} {
			if strings.Contains(logs.String(), secret) {
				t.Errorf("the server log contains a secret (%.6s…)", secret)
			}
		}
	})
}

func derive(t *testing.T, password string, p crypto.KDFParams) (authText string, wrap crypto.Key) {
	t.Helper()
	mk, err := crypto.DeriveMasterKey([]byte(password), p)
	if err != nil {
		t.Fatal(err)
	}
	auth, wrap, _ := crypto.DeriveSubkeys(mk)
	authText, _ = auth.Text()
	return authText, wrap
}

// keys lists a JSON object's member names and value types, to compare
// shapes.
func keys(v any) string {
	m, _ := v.(map[string]any)
	var ks []string
	for k, v := range m {
		ks = append(ks, fmt.Sprintf("%s:%T", k, v))
	}
	sort.Strings(ks)
	return strings.Join(ks, ",")
}

type syncWriter struct {
	w  io.Writer
	mu *sync.Mutex
}

func (s syncWriter) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.w.Write(p)
}

// TestHostileInput: malformed, oversized and hostile requests get the
// documented 4xx and change nothing.
func TestHostileInput(t *testing.T) {
	t.Parallel()
	st := sqliteStore(t)
	base, _ := startWith(t, st, nil)
	c := &apiClient{t: t, base: base}
	good := newAccount(t, "grace@example.org", "a long enough passphrase")
	with := func(k string, v any) map[string]any {
		m := map[string]any{}
		for kk, vv := range good.body {
			m[kk] = vv
		}
		m[k] = v
		return m
	}
	weak := crypto.DefaultPBKDF2Params()
	weak.Iterations = 1000
	weakJSON := fmt.Sprintf(`{"version":1,"algorithm":"pbkdf2-sha256","salt":"%s","iterations":1000}`, crypto.EncodeText(weak.Salt))
	for _, tc := range []struct {
		name   string
		body   any
		status int
		code   string
	}{
		{"not JSON", "{not json", 400, "invalid_json"},
		{"empty body", "", 400, "invalid_json"},
		{"array", "[]", 400, "invalid_json"},
		{"trailing data", `{"email":"a@b.c"} {}`, 400, "invalid_json"},
		{"unknown field", with("is_admin", true), 400, "invalid_json"},
		{"wrong type", with("email", 42), 400, "invalid_json"},
		{"huge body", `{"email":"` + strings.Repeat("a", 2<<20) + `"}`, 413, "too_large"},
		{"SQL in the email", with("email", "x'; drop table users; --@example.org"), 400, "invalid_request"},
		{"email with a display name", with("email", "Grace <grace@example.org>"), 400, "invalid_request"},
		{"overlong email", with("email", strings.Repeat("a", 250)+"@example.org"), 400, "invalid_request"},
		{"user id not a uuid", with("user_id", "1 or 1=1"), 400, "invalid_request"},
		{"auth key not base64", with("auth_key", "@@@@"), 400, "invalid_request"},
		{"auth key too short", with("auth_key", crypto.EncodeText(make([]byte, 16))), 400, "invalid_request"},
		{"wrapped key not base64", with("wrapped_account_key", "not base64!"), 400, "invalid_request"},
		{"wrapped key of the wrong kind", with("wrapped_account_key", good.body["public_key"]), 400, "invalid_request"},
		{"wrapped key too large", with("wrapped_account_key", crypto.EncodeText(append([]byte{1}, make([]byte, 8192)...))), 400, "invalid_request"},
		{"public key garbage", with("public_key", "AwAgAAAA"), 400, "invalid_request"},
		{"weak kdf (downgrade)", with("kdf", json.RawMessage(weakJSON)), 400, "weak_kdf_params"},
		{"absurd kdf", with("kdf", json.RawMessage(`{"version":1,"algorithm":"argon2id","salt":"AAAAAAAAAAAAAAAAAAAAAA==","memory_kib":1e12,"iterations":3,"parallelism":4}`)), 400, "invalid_kdf_params"},
		{"kdf of the wrong type", with("kdf", "argon2id"), 400, "invalid_kdf_params"},
	} {
		s, out, _ := c.call("POST", "/v1/auth/register", tc.body)
		if s != tc.status || errCode(out) != tc.code {
			t.Errorf("%s: got %d %v; want %d %s", tc.name, s, out, tc.status, tc.code)
		}
		if msg, _ := out["error"].(map[string]any)["message"].(string); strings.Contains(strings.ToLower(msg), "sql") || strings.Contains(msg, "goroutine") {
			t.Errorf("%s: the message leaks internals: %q", tc.name, msg)
		}
	}
	if _, err := st.UserByEmail(context.Background(), "grace@example.org"); err == nil {
		t.Fatal("a refused registration left a user behind")
	}
	if s, out, _ := c.call("POST", "/v1/auth/register", good.body); s != 201 {
		t.Fatalf("the good registration after the hostile ones: %d %v", s, out)
	}
	for _, tc := range []struct {
		method, path, contentType string
		status                    int
		code                      string
	}{
		{"GET", "/v1/auth/login", "application/json", 405, "method_not_allowed"},
		{"GET", "/v1/nope", "application/json", 404, "not_found"},
		{"POST", "/v1/auth/login", "text/plain", 415, "unsupported_media_type"},
		{"GET", "/v1/auth/me", "application/json", 401, "unauthorized"},
	} {
		req, _ := http.NewRequest(tc.method, base+tc.path, strings.NewReader("{}"))
		req.Header.Set("Content-Type", tc.contentType)
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		var out map[string]any
		json.NewDecoder(resp.Body).Decode(&out)
		resp.Body.Close()
		if resp.StatusCode != tc.status || errCode(out) != tc.code {
			t.Errorf("%s %s (%s): %d %v; want %d %s", tc.method, tc.path, tc.contentType, resp.StatusCode, out, tc.status, tc.code)
		}
	}
}

// TestLoginRateLimit: after the free failures an account must wait, with
// Retry-After, even with the right password.
func TestLoginRateLimit(t *testing.T) {
	t.Parallel()
	base, _ := startWith(t, sqliteStore(t), nil)
	c := &apiClient{t: t, base: base}
	a := newAccount(t, "limit@example.org", "the right passphrase")
	if s, _, _ := c.call("POST", "/v1/auth/register", a.body); s != 201 {
		t.Fatal("register failed")
	}
	wrong, _ := derive(t, "wrong", a.params)
	var last int
	var hdr http.Header
	for range 6 {
		last, _, hdr = c.call("POST", "/v1/auth/login", map[string]string{"email": a.email, "auth_key": wrong})
	}
	s, out, h := c.call("POST", "/v1/auth/login", map[string]string{"email": a.email, "auth_key": a.authKey})
	if s != 429 || errCode(out) != "rate_limited" || h.Get("Retry-After") == "" {
		t.Fatalf("login after 6 failures: %d %v Retry-After=%q (6th failure: %d %v); want 429 with Retry-After", s, out, h.Get("Retry-After"), last, hdr)
	}
}
