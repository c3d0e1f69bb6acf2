package controlplane

import (
	"context"
	"errors"
	"net/http"
	"slices"
	"strconv"
	"time"

	"polydev/internal/api"
	"polydev/internal/crypto"
	"polydev/internal/store"
)

// The accounts API (docs/api.md, "Accounts"): linking a provider by a
// credential the client sealed to the user's own public key, listing,
// revoking, and the user's egress port. The server stores the sealed
// credential as it came and never sees it open; the proxy host and its
// credentials stay inside the egress package and are never part of an
// answer, a log line or a stored row.

// maxSealedToken bounds a sealed provider credential (an API key, or a
// provider CLI's credential file of a few KiB).
const maxSealedToken = 32 << 10

// rotateInterval is how often one provider of a user may rotate: each
// rotation burns a port's address and costs a lookup through the gateway.
const rotateInterval = time.Minute

// ipLookupTimeout bounds the egress IP lookup a link or rotation makes.
const ipLookupTimeout = 10 * time.Second

var errEgressExhausted = errorf(http.StatusServiceUnavailable, "egress_exhausted",
	"no free egress port: every port of the operator's range is in use; the operator must widen the range")

// linkedAccount describes a stored token for the API.
func linkedAccount(t *store.ProviderToken) api.LinkedAccount {
	a := api.LinkedAccount{Provider: t.Provider, Scopes: t.Scopes, EgressPort: t.EgressPort, EgressIP: t.EgressIP, LinkedAt: t.CreatedAt}
	if a.Scopes == nil {
		a.Scopes = []string{}
	}
	if !t.LastUsedAt.IsZero() {
		a.LastUsed = &t.LastUsedAt
	}
	if !t.LastRotatedAt.IsZero() {
		a.LastRotatedAt = &t.LastRotatedAt
	}
	return a
}

// providerParam reads and checks {provider}.
func providerParam(r *http.Request) (string, error) {
	p := r.PathValue("provider")
	if !slices.Contains(store.Providers, p) {
		return "", errorf(http.StatusNotFound, "unknown_provider", "unknown provider: want one of openai, anthropic, google")
	}
	return p, nil
}

func (s *Server) linkToken(w http.ResponseWriter, r *http.Request) error {
	var req api.LinkTokenRequest
	if err := decode(w, r, &req); err != nil {
		return err
	}
	if !slices.Contains(store.Providers, req.Provider) {
		return badRequest("provider: want one of openai, anthropic, google")
	}
	if req.EncryptedToken == "" {
		return badRequest("encrypted_token: required")
	}
	suite, err := crypto.SealedTextSuite(req.EncryptedToken, maxSealedToken)
	if err != nil {
		return badRequest("encrypted_token: not a sealed envelope: %v", err)
	}
	uid := session(r).UserID
	u, err := s.store.User(r.Context(), uid)
	if err != nil {
		return storeError(err)
	}
	// Sealed to anything but the user's own key, nobody could use it.
	if pub, err := crypto.ParsePublicKey(u.PublicKey); err != nil || pub.Suite() != suite {
		return badRequest("encrypted_token: not sealed to your public key's suite")
	}
	t := &store.ProviderToken{Provider: req.Provider, EncryptedRefreshToken: req.EncryptedToken}
	first, err := s.store.LinkProviderToken(r.Context(), uid, t, s.egress.Ports())
	if err != nil {
		return storeError(err)
	}
	event := "provider_relink"
	if first {
		event = "provider_link"
	}
	s.audit(r, uid, event, map[string]string{"provider": t.Provider, "egress_port": strconv.Itoa(t.EgressPort)})
	resp := api.LinkTokenResponse{Replaced: !first}
	if t.EgressIP == "" {
		t.EgressIP, resp.EgressIPError = s.recordEgressIP(r.Context(), uid, t.Provider, t.EgressPort)
	}
	resp.LinkedAccount = linkedAccount(t)
	status := http.StatusOK
	if first {
		status = http.StatusCreated
	}
	writeJSON(w, status, resp)
	return nil
}

// recordEgressIP looks up the exit IP of port and stores it. A failure is
// logged and reported to the client, never fatal: the token is kept. The
// lookup's errors have the proxy host and credentials scrubbed out.
func (s *Server) recordEgressIP(ctx context.Context, uid, provider string, port int) (ip, failure string) {
	if !s.egress.CanLookupIP() {
		return "", ""
	}
	lctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), ipLookupTimeout)
	defer cancel()
	ip, err := s.egress.LookupIP(lctx, port)
	if err != nil {
		s.log.Warn("egress ip lookup failed", "provider", provider, "egress_port", port, "err", err.Error())
		return "", "the egress IP could not be looked up; it stays unknown until the next rotation or link"
	}
	err = s.store.SetEgressIP(context.WithoutCancel(ctx), uid, provider, port, ip)
	switch {
	case errors.Is(err, store.ErrConflict), errors.Is(err, store.ErrNotFound):
		return "", "" // rotated or revoked meanwhile: that request records its own
	case err != nil:
		s.log.Error("egress ip not recorded", "provider", provider, "egress_port", port, "err", err.Error())
		return "", "the egress IP could not be recorded"
	}
	return ip, ""
}

func (s *Server) listAccounts(w http.ResponseWriter, r *http.Request) error {
	ts, err := s.store.ProviderTokens(r.Context(), session(r).UserID)
	if err != nil {
		return storeError(err)
	}
	resp := api.AccountsResponse{Providers: []api.LinkedAccount{}}
	for i := range ts {
		resp.Providers = append(resp.Providers, linkedAccount(&ts[i]))
	}
	writeJSON(w, http.StatusOK, resp)
	return nil
}

var errNotLinked = errorf(http.StatusNotFound, "not_linked", "this provider is not linked")

func (s *Server) revokeProvider(w http.ResponseWriter, r *http.Request) error {
	provider, err := providerParam(r)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	err = s.store.DeleteProviderToken(r.Context(), uid, provider)
	if errors.Is(err, store.ErrNotFound) {
		return errNotLinked
	}
	if err != nil {
		return storeError(err)
	}
	s.audit(r, uid, "provider_revoke", map[string]string{"provider": provider})
	w.WriteHeader(http.StatusNoContent)
	return nil
}

func (s *Server) rotateEgress(w http.ResponseWriter, r *http.Request) error {
	provider, err := providerParam(r)
	if err != nil {
		return err
	}
	uid := session(r).UserID
	now := s.now()
	cur, err := s.store.ProviderToken(r.Context(), uid, provider)
	if errors.Is(err, store.ErrNotFound) {
		return errNotLinked
	}
	if err != nil {
		return storeError(err)
	}
	if wait := cur.LastRotatedAt.Add(rotateInterval).Sub(now); !cur.LastRotatedAt.IsZero() && wait > 0 {
		return &apiError{status: http.StatusTooManyRequests, code: "rate_limited",
			message: "this provider's egress was rotated less than a minute ago; try again later", retryAfter: wait}
	}
	old, t, err := s.store.RotateEgress(r.Context(), uid, provider, s.egress.Ports(), now)
	if errors.Is(err, store.ErrNotFound) {
		return errNotLinked
	}
	if err != nil {
		return storeError(err)
	}
	s.audit(r, uid, "egress_rotate", map[string]string{"provider": provider,
		"old_port": strconv.Itoa(old), "new_port": strconv.Itoa(t.EgressPort)})
	resp := api.RotateEgressResponse{NewPort: t.EgressPort, OldPort: old, RotatedAt: t.LastRotatedAt}
	resp.EgressIP, resp.EgressIPError = s.recordEgressIP(r.Context(), uid, provider, t.EgressPort)
	writeJSON(w, http.StatusOK, resp)
	return nil
}
