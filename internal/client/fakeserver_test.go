package client_test

import (
	"crypto/rand"
	"encoding/base64"
	"encoding/json"
	"errors"
	"io"
	"mime"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/client"
	"polydev/internal/crypto"
)

// fakeServer is the account API of docs/api.md, in memory, over real HTTP
// on loopback: strict about what clients send (unknown fields, content
// type, body size, the KDF minimums, envelopes and public keys that must
// parse), with hooks to misbehave the way a hostile or broken server would.
type fakeServer struct {
	*httptest.Server
	secret []byte

	mu       sync.Mutex
	users    map[string]*fakeUser // by email
	sessions map[string]fakeSession
	calls    map[string]int // "POST /v1/auth/login" → count
	number   int64

	// Hooks, set before use (under mu).
	preloginKDF    json.RawMessage             // answer every prelogin with this record
	alterLogin     func(*client.LoginResponse) // change a login answer before it is sent
	rateLimitLogin time.Duration               // answer login 429 with this Retry-After
	sessionTTL     time.Duration
}

type fakeUser struct {
	id, email string
	number    int64
	hash      []byte
	salt      []byte
	algo      string
	bundle    client.KeyBundle
}

type fakeSession struct {
	email   string
	expires time.Time
}

func newFakeServer(t *testing.T) *fakeServer {
	t.Helper()
	s := &fakeServer{
		secret: make([]byte, 32), users: map[string]*fakeUser{}, sessions: map[string]fakeSession{},
		calls: map[string]int{}, sessionTTL: time.Hour,
	}
	rand.Read(s.secret)
	mux := http.NewServeMux()
	mux.HandleFunc("POST /v1/auth/prelogin", s.prelogin)
	mux.HandleFunc("POST /v1/auth/register", s.register)
	mux.HandleFunc("POST /v1/auth/login", s.login)
	mux.HandleFunc("GET /v1/auth/me", s.me)
	mux.HandleFunc("POST /v1/auth/logout", s.logout)
	mux.HandleFunc("POST /v1/auth/password", s.password)
	mux.HandleFunc("DELETE /v1/auth/me", s.deleteMe)
	s.Server = httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		s.mu.Lock()
		s.calls[r.Method+" "+r.URL.Path]++
		s.mu.Unlock()
		mux.ServeHTTP(w, r)
	}))
	t.Cleanup(s.Close)
	return s
}

func (s *fakeServer) callCount(route string) int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.calls[route]
}

func (s *fakeServer) set(f func(*fakeServer)) {
	s.mu.Lock()
	defer s.mu.Unlock()
	f(s)
}

// revokeAll ends every session, as an administrator or an expiry would.
func (s *fakeServer) revokeAll() {
	s.set(func(s *fakeServer) { clear(s.sessions) })
}

func writeErr(w http.ResponseWriter, status int, code, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(map[string]any{"error": map[string]string{"code": code, "message": msg}})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(v)
}

// decode reads a request body as the real API must: JSON only, at most
// 1 MiB, no unknown fields.
func decode(w http.ResponseWriter, r *http.Request, v any) bool {
	if mt, _, _ := mime.ParseMediaType(r.Header.Get("Content-Type")); mt != "application/json" {
		writeErr(w, 415, "unsupported_media_type", "want application/json")
		return false
	}
	b, err := io.ReadAll(io.LimitReader(r.Body, 1<<20+1))
	if err != nil || len(b) > 1<<20 {
		writeErr(w, 413, "too_large", "body above 1 MiB")
		return false
	}
	dec := json.NewDecoder(strings.NewReader(string(b)))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		writeErr(w, 400, "invalid_json", err.Error())
		return false
	}
	return true
}

// bearer returns the session's user, or answers 401 unauthorized.
func (s *fakeServer) bearer(w http.ResponseWriter, r *http.Request) (*fakeUser, string, bool) {
	tok, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
	s.mu.Lock()
	defer s.mu.Unlock()
	sess, found := s.sessions[tok]
	if !ok || !found || time.Now().After(sess.expires) || s.users[sess.email] == nil {
		writeErr(w, 401, "unauthorized", "no valid session")
		return nil, "", false
	}
	return s.users[sess.email], tok, true
}

// verify checks an auth key against the user's hash (or a dummy hash for
// no user), at the same cost either way.
func verify(u *fakeUser, authKey string) bool {
	hash, salt, algo := crypto.DummyAuthHash()
	if u != nil {
		hash, salt, algo = u.hash, u.salt, u.algo
	}
	ok, err := crypto.VerifyAuthKey(authKey, hash, salt, algo)
	return ok && err == nil && u != nil
}

func (s *fakeServer) prelogin(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email string `json:"email"`
	}
	if !decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.preloginKDF != nil {
		writeJSON(w, 200, map[string]any{"kdf": s.preloginKDF})
		return
	}
	if u := s.users[in.Email]; u != nil {
		writeJSON(w, 200, map[string]any{"kdf": u.bundle.KDF})
		return
	}
	fake, _ := crypto.FakeKDFParams(s.secret, in.Email).MarshalJSON()
	writeJSON(w, 200, map[string]any{"kdf": json.RawMessage(fake)})
}

// checkBundle applies the register/password checks to what the server
// stores: the KDF minimums, envelopes that decode as symmetric envelopes.
func checkBundle(w http.ResponseWriter, b client.KeyBundle, needPrivate bool) bool {
	if _, err := crypto.ParseKDFParams(b.KDF); err != nil {
		code := "invalid_kdf_params"
		if errors.Is(err, crypto.ErrWeakKDFParams) {
			code = "weak_kdf_params"
		}
		writeErr(w, 400, code, err.Error())
		return false
	}
	for _, env := range []string{b.WrappedAccountKey, b.WrappedPrivateKey} {
		if env == "" && !needPrivate {
			continue
		}
		raw, err := crypto.DecodeText(env)
		if err != nil || len(raw) < 29 || raw[0] != 0x01 {
			writeErr(w, 400, "invalid_request", "wrapped key: not a symmetric envelope")
			return false
		}
	}
	return true
}

func (s *fakeServer) register(w http.ResponseWriter, r *http.Request) {
	var in client.RegisterRequest
	if !decode(w, r, &in) {
		return
	}
	id, err := uuid.Parse(in.UserID)
	if err != nil || id.Version() != 4 || id.String() != in.UserID {
		writeErr(w, 400, "invalid_request", "user_id: not a canonical uuid v4")
		return
	}
	if in.Email != strings.ToLower(in.Email) || !strings.Contains(in.Email, "@") {
		writeErr(w, 400, "invalid_request", "email: not a valid address")
		return
	}
	bundle := client.KeyBundle{KDF: in.KDF, WrappedAccountKey: in.WrappedAccountKey, WrappedPrivateKey: in.WrappedPrivateKey, PublicKey: in.PublicKey}
	if !checkBundle(w, bundle, true) {
		return
	}
	if _, err := crypto.ParsePublicKey(in.PublicKey); err != nil {
		writeErr(w, 400, "invalid_request", "public_key: "+err.Error())
		return
	}
	hash, salt, algo, err := crypto.HashAuthKey(in.AuthKey)
	if err != nil {
		writeErr(w, 400, "invalid_request", "auth_key: not base64 of 32 bytes")
		return
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, u := range s.users {
		if u.id == in.UserID || u.email == in.Email {
			writeErr(w, 409, "conflict", "email or user id taken")
			return
		}
	}
	s.number++
	s.users[in.Email] = &fakeUser{id: in.UserID, email: in.Email, number: s.number, hash: hash, salt: salt, algo: algo, bundle: bundle}
	writeJSON(w, 201, map[string]any{"user_id": in.UserID, "user_number": s.number})
}

func (s *fakeServer) login(w http.ResponseWriter, r *http.Request) {
	var in struct {
		Email   string `json:"email"`
		AuthKey string `json:"auth_key"`
	}
	if !decode(w, r, &in) {
		return
	}
	s.mu.Lock()
	u, limit := s.users[in.Email], s.rateLimitLogin
	s.mu.Unlock()
	if limit > 0 {
		w.Header().Set("Retry-After", strings.TrimSuffix(limit.String(), "s"))
		writeErr(w, 429, "rate_limited", "too many attempts")
		return
	}
	if !verify(u, in.AuthKey) {
		writeErr(w, 401, "invalid_credentials", "wrong email or auth key")
		return
	}
	tok := make([]byte, 32)
	rand.Read(tok)
	resp := &client.LoginResponse{
		Token: base64.RawURLEncoding.EncodeToString(tok), ExpiresAt: time.Now().Add(s.sessionTTL).UTC().Truncate(time.Second),
		User: client.User{ID: u.id, Email: u.email, Number: u.number}, KeyBundle: u.bundle,
	}
	s.mu.Lock()
	s.sessions[resp.Token] = fakeSession{email: u.email, expires: resp.ExpiresAt}
	alter := s.alterLogin
	s.mu.Unlock()
	if alter != nil {
		alter(resp)
	}
	writeJSON(w, 200, resp)
}

func (s *fakeServer) me(w http.ResponseWriter, r *http.Request) {
	u, _, ok := s.bearer(w, r)
	if !ok {
		return
	}
	writeJSON(w, 200, client.MeResponse{User: client.User{ID: u.id, Email: u.email, Number: u.number}, KeyBundle: u.bundle})
}

func (s *fakeServer) logout(w http.ResponseWriter, r *http.Request) {
	_, tok, ok := s.bearer(w, r)
	if !ok {
		return
	}
	s.set(func(s *fakeServer) { delete(s.sessions, tok) })
	w.WriteHeader(204)
}

func (s *fakeServer) password(w http.ResponseWriter, r *http.Request) {
	u, tok, ok := s.bearer(w, r)
	if !ok {
		return
	}
	var in client.ChangePasswordRequest
	if !decode(w, r, &in) {
		return
	}
	if !verify(u, in.CurrentAuthKey) {
		writeErr(w, 401, "invalid_credentials", "wrong auth key")
		return
	}
	bundle := client.KeyBundle{KDF: in.KDF, WrappedAccountKey: in.WrappedAccountKey, WrappedPrivateKey: in.WrappedPrivateKey, PublicKey: u.bundle.PublicKey}
	if bundle.WrappedPrivateKey == "" {
		bundle.WrappedPrivateKey = u.bundle.WrappedPrivateKey
	}
	if !checkBundle(w, bundle, false) {
		return
	}
	hash, salt, algo, err := crypto.HashAuthKey(in.AuthKey)
	if err != nil {
		writeErr(w, 400, "invalid_request", "auth_key: not base64 of 32 bytes")
		return
	}
	s.set(func(s *fakeServer) {
		u.hash, u.salt, u.algo, u.bundle = hash, salt, algo, bundle
		for t, sess := range s.sessions {
			if sess.email == u.email && t != tok {
				delete(s.sessions, t)
			}
		}
	})
	w.WriteHeader(204)
}

func (s *fakeServer) deleteMe(w http.ResponseWriter, r *http.Request) {
	u, _, ok := s.bearer(w, r)
	if !ok {
		return
	}
	var in struct {
		AuthKey string `json:"auth_key"`
	}
	if !decode(w, r, &in) {
		return
	}
	if !verify(u, in.AuthKey) {
		writeErr(w, 401, "invalid_credentials", "wrong auth key")
		return
	}
	s.set(func(s *fakeServer) {
		delete(s.users, u.email)
		for t, sess := range s.sessions {
			if sess.email == u.email {
				delete(s.sessions, t)
			}
		}
	})
	w.WriteHeader(204)
}
