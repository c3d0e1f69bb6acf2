package controlplane

import (
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net"
	"net/http"
	"net/mail"
	"strings"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/crypto"
	"polydev/internal/store"
)

// The auth API (docs/api.md). The server holds the auth key only long
// enough to hash or verify it; everything else it receives is ciphertext
// or public.

// maxWrappedKey bounds a wrapped key or private key record envelope.
const maxWrappedKey = 4096

func account(u *store.User) api.MeResponse {
	return api.MeResponse{User: api.User{ID: u.ID, Email: u.Email, Number: u.Number}, KeyBundle: api.KeyBundle{KDF: u.KDFParams,
		WrappedAccountKey: u.WrappedAccountKey, WrappedPrivateKey: u.WrappedPrivateKey, PublicKey: u.PublicKey}}
}

// normalizeEmail checks an address (a bare addr-spec of at most 254 bytes)
// and returns it lowercased.
func normalizeEmail(s string) (string, error) {
	if len(s) < 3 || len(s) > 254 {
		return "", badRequest("email: must be 3-254 characters")
	}
	a, err := mail.ParseAddress(s)
	if err != nil || a.Address != s || a.Name != "" || !strings.Contains(s[strings.LastIndexByte(s, '@')+1:], ".") {
		return "", badRequest("email: not a valid address")
	}
	return strings.ToLower(s), nil
}

// kdfRecord parses a client's KDF record, mapping the crypto errors to API
// errors, and returns its canonical form.
func kdfRecord(raw json.RawMessage) ([]byte, error) {
	if len(raw) == 0 {
		return nil, badRequest("kdf: required")
	}
	p, err := crypto.ParseKDFParams(raw)
	if err != nil {
		if errors.Is(err, crypto.ErrWeakKDFParams) {
			return nil, errorf(http.StatusBadRequest, "weak_kdf_params", "kdf: %v", err)
		}
		return nil, errorf(http.StatusBadRequest, "invalid_kdf_params", "kdf: %v", err)
	}
	return json.Marshal(p)
}

func checkWrapped(field, text string) error {
	if text == "" {
		return badRequest("%s: required", field)
	}
	if err := crypto.CheckEnvelopeText(text, maxWrappedKey); err != nil {
		return badRequest("%s: not a symmetric envelope: %v", field, err)
	}
	return nil
}

func (s *Server) register(w http.ResponseWriter, r *http.Request) error {
	var req api.RegisterRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	id, err := uuid.Parse(req.UserID)
	if err != nil || id.String() != req.UserID || id.Version() != 4 {
		return badRequest("user_id: must be a lowercase UUID version 4")
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	kdf, err := kdfRecord(req.KDF)
	if err != nil {
		return err
	}
	if err := checkWrapped("wrapped_account_key", req.WrappedAccountKey); err != nil {
		return err
	}
	if err := checkWrapped("wrapped_private_key", req.WrappedPrivateKey); err != nil {
		return err
	}
	if _, err := crypto.ParsePublicKey(req.PublicKey); err != nil {
		return badRequest("public_key: %v", err)
	}
	hash, salt, algo, err := crypto.HashAuthKey(req.AuthKey)
	if err != nil {
		return badRequest("auth_key: must be base64 of 32 bytes")
	}
	u := &store.User{ID: req.UserID, Email: email, KDFParams: kdf, AuthHash: hash, AuthSalt: salt, AuthAlgo: algo,
		WrappedAccountKey: req.WrappedAccountKey, WrappedPrivateKey: req.WrappedPrivateKey, PublicKey: req.PublicKey}
	if err := s.store.CreateUser(r.Context(), u); err != nil {
		return storeError(err)
	}
	s.audit(r, u.ID, "register", nil)
	writeJSON(w, http.StatusCreated, api.RegisterResponse{UserID: u.ID, UserNumber: u.Number})
	return nil
}

func (s *Server) prelogin(w http.ResponseWriter, r *http.Request) error {
	var req api.EmailRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	var kdf []byte
	u, err := s.store.UserByEmail(r.Context(), email)
	switch {
	case err == nil:
		kdf = u.KDFParams
	case errors.Is(err, store.ErrNotFound):
		kdf, err = json.Marshal(crypto.FakeKDFParams(s.cfg.PreloginSecret, email))
		if err != nil {
			return internalError(err)
		}
	default:
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, api.PreloginResponse{KDF: kdf})
	return nil
}

// clientIP is the peer address. Proxy headers are not trusted: behind a
// reverse proxy, configure it to connect from a distinct address per client
// or rate limits apply to the proxy as a whole.
func clientIP(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// checkRate refuses an attempt whose account or address must still wait.
func (s *Server) checkRate(email, ip string, now time.Time) error {
	d := max(s.accountLimit.wait(email, now), s.ipLimit.wait(ip, now))
	if d > 0 {
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited", message: "too many failed attempts; try again later", retryAfter: d}
	}
	return nil
}

func (s *Server) login(w http.ResponseWriter, r *http.Request) error {
	var req api.LoginRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	email, err := normalizeEmail(req.Email)
	if err != nil {
		return err
	}
	now := s.now()
	ip := clientIP(r)
	if err := s.checkRate(email, ip, now); err != nil {
		return err
	}
	u, err := s.store.UserByEmail(r.Context(), email)
	hash, salt, algo := s.dummyHash, s.dummySalt, s.dummyAlgo
	switch {
	case err == nil:
		hash, salt, algo = u.AuthHash, u.AuthSalt, u.AuthAlgo
	case !errors.Is(err, store.ErrNotFound):
		return storeError(err)
	}
	// Unknown accounts are verified against a dummy hash: the same work,
	// the same answer.
	ok, verr := crypto.VerifyAuthKey(req.AuthKey, hash, salt, algo)
	if verr != nil {
		return internalError(verr)
	}
	if !ok || u == nil {
		s.accountLimit.fail(email, now)
		s.ipLimit.fail(ip, now)
		uid := ""
		if u != nil {
			uid = u.ID
		}
		s.audit(r, uid, "login_failure", nil)
		return errInvalidCredentials
	}
	s.accountLimit.succeed(email)
	token, sess, err := s.newSession(r, u.ID, now)
	if err != nil {
		return err
	}
	s.audit(r, u.ID, "login_success", nil)
	a := account(u)
	writeJSON(w, http.StatusOK, api.LoginResponse{Token: token, ExpiresAt: sess.ExpiresAt, User: a.User, KeyBundle: a.KeyBundle})
	return nil
}

// newSession makes a bearer token of 256 random bits and stores only its
// SHA-256.
func (s *Server) newSession(r *http.Request, userID string, now time.Time) (string, *store.Session, error) {
	raw := make([]byte, 32)
	rand.Read(raw)
	token := base64.RawURLEncoding.EncodeToString(raw)
	h := sha256.Sum256([]byte(token))
	sess := &store.Session{ID: uuid.NewString(), UserID: userID, TokenHash: h[:], CreatedAt: now, LastSeenAt: now,
		ExpiresAt: now.Add(s.cfg.SessionTTL), ClientIP: clientIP(r), UserAgent: truncate(r.UserAgent(), 256)}
	if err := s.store.CreateSession(r.Context(), userID, sess); err != nil {
		return "", nil, storeError(err)
	}
	return token, sess, nil
}

func truncate(s string, n int) string {
	if len(s) > n {
		return s[:n]
	}
	return s
}

type sessionKey struct{}

// authenticated wraps a handler that needs a session: it resolves the
// bearer token and puts the session in the request's context.
func (s *Server) authenticated(h handlerFunc) handlerFunc {
	return func(w http.ResponseWriter, r *http.Request) error {
		token, ok := strings.CutPrefix(r.Header.Get("Authorization"), "Bearer ")
		if !ok || len(token) < 16 || len(token) > 128 {
			return errUnauthorized
		}
		h256 := sha256.Sum256([]byte(token))
		now := s.now()
		sess, gen, ok := s.sessions.get(h256, now)
		if !ok {
			var err error
			sess, err = s.store.ActiveSession(r.Context(), h256[:], now)
			if errors.Is(err, store.ErrNotFound) {
				return errUnauthorized
			}
			if err != nil {
				return storeError(err)
			}
			s.sessions.put(h256, sess, now, gen)
		}
		return h(w, r.WithContext(context.WithValue(r.Context(), sessionKey{}, sess)))
	}
}

func session(r *http.Request) *store.Session { return r.Context().Value(sessionKey{}).(*store.Session) }

func (s *Server) me(w http.ResponseWriter, r *http.Request) error {
	u, err := s.store.User(r.Context(), session(r).UserID)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusOK, account(u))
	return nil
}

func (s *Server) logout(w http.ResponseWriter, r *http.Request) error {
	sess := session(r)
	if err := s.store.RevokeSession(r.Context(), sess.UserID, sess.ID, s.now()); err != nil {
		return storeError(err)
	}
	s.sessions.dropUser(sess.UserID) // the others are looked up again: still valid
	s.audit(r, sess.UserID, "logout", nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// reauthenticate checks the user's current auth key for a sensitive change,
// under the same rate limits as login.
func (s *Server) reauthenticate(r *http.Request, u *store.User, authKey string) error {
	now := s.now()
	ip := clientIP(r)
	if err := s.checkRate(u.Email, ip, now); err != nil {
		return err
	}
	ok, err := crypto.VerifyAuthKey(authKey, u.AuthHash, u.AuthSalt, u.AuthAlgo)
	if err != nil {
		return internalError(err)
	}
	if !ok {
		s.accountLimit.fail(u.Email, now)
		s.ipLimit.fail(ip, now)
		s.audit(r, u.ID, "reauth_failure", nil)
		return errInvalidCredentials
	}
	return nil
}

func (s *Server) changePassword(w http.ResponseWriter, r *http.Request) error {
	var req api.ChangePasswordRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	sess := session(r)
	u, err := s.store.User(r.Context(), sess.UserID)
	if err != nil {
		return storeError(err)
	}
	kdf, err := kdfRecord(req.KDF)
	if err != nil {
		return err
	}
	if err := checkWrapped("wrapped_account_key", req.WrappedAccountKey); err != nil {
		return err
	}
	wrappedPrivate := u.WrappedPrivateKey
	if req.WrappedPrivateKey != "" {
		if err := checkWrapped("wrapped_private_key", req.WrappedPrivateKey); err != nil {
			return err
		}
		wrappedPrivate = req.WrappedPrivateKey
	}
	hash, salt, algo, err := crypto.HashAuthKey(req.AuthKey)
	if err != nil {
		return badRequest("auth_key: must be base64 of 32 bytes")
	}
	if err := s.reauthenticate(r, u, req.CurrentAuthKey); err != nil {
		return err
	}
	c := store.Credentials{KDFParams: kdf, AuthHash: hash, AuthSalt: salt, AuthAlgo: algo,
		WrappedAccountKey: req.WrappedAccountKey, WrappedPrivateKey: wrappedPrivate}
	err = s.store.SetCredentials(r.Context(), u.ID, c, sess.ID)
	// The other sessions were revoked (or may have been, on an error).
	s.sessions.dropUser(u.ID)
	if err != nil {
		return storeError(err)
	}
	s.audit(r, u.ID, "password_change", nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) deleteAccount(w http.ResponseWriter, r *http.Request) error {
	var req api.DeleteRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	u, err := s.store.User(r.Context(), session(r).UserID)
	if err != nil {
		return storeError(err)
	}
	if err := s.reauthenticate(r, u, req.AuthKey); err != nil {
		return err
	}
	err = s.store.DeleteUser(r.Context(), u.ID)
	s.sessions.dropUser(u.ID)
	if err != nil {
		return storeError(err)
	}
	// The erasure is audited without any personal data, not even the id.
	s.audit(r, "", "erasure", nil)
	w.WriteHeader(http.StatusNoContent)
	return nil
}

// audit records a security event; a failure to record is logged loudly but
// does not fail the request it describes.
func (s *Server) audit(r *http.Request, userID, event string, detail map[string]string) {
	d := "{}"
	if detail != nil {
		b, _ := json.Marshal(detail)
		d = string(b)
	}
	e := &store.AuditEvent{UserID: userID, Event: event, ClientIP: clientIP(r), Detail: d}
	if err := s.store.Record(context.WithoutCancel(r.Context()), e); err != nil {
		s.log.Error("audit event not recorded", "event", event, "err", err.Error())
	}
}

// storeError maps store errors to API errors.
func storeError(err error) error {
	switch {
	case errors.Is(err, store.ErrPortsExhausted):
		return &apiError{status: errEgressExhausted.status, code: errEgressExhausted.code, message: errEgressExhausted.message, cause: err}
	case errors.Is(err, store.ErrConflict):
		return errConflict
	case errors.Is(err, store.ErrNotFound):
		return errorf(http.StatusNotFound, "not_found", "not found")
	case errors.Is(err, store.ErrInvalid):
		return &apiError{status: http.StatusBadRequest, code: "invalid_request", message: "the record was refused", cause: err}
	default:
		return internalError(err)
	}
}
