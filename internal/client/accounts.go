package client

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/url"
	"slices"
	"time"

	"polydev/internal/api"
	"polydev/internal/crypto"
)

// Linked provider accounts. A provider credential is sealed on this device
// to the user's own public key — the one whose private key Unlock has just
// opened, so a server that swapped in a key of its own cannot receive it —
// and only the sealed envelope is uploaded.

// Providers a credential can be linked for.
var Providers = []string{"openai", "anthropic", "google"}

// Error codes of the accounts API that callers branch on.
const (
	CodeNotLinked       = "not_linked"
	CodeEgressExhausted = "egress_exhausted"
)

// maxCredential bounds a credential read from the user.
const maxCredential = 16 << 10

// The accounts wire types of docs/api.md.
type (
	LinkedAccount        = api.LinkedAccount
	LinkTokenResponse    = api.LinkTokenResponse
	RotateEgressResponse = api.RotateEgressResponse
)

// checkProvider refuses a provider name the server would not know.
func checkProvider(p string) error {
	if !slices.Contains(Providers, p) {
		return fmt.Errorf("unknown provider %q: want openai, anthropic or google", p)
	}
	return nil
}

// LinkToken uploads a sealed credential.
func (c *Client) LinkToken(ctx context.Context, token string, req api.LinkTokenRequest) (*LinkTokenResponse, error) {
	var out LinkTokenResponse
	if err := c.do(ctx, http.MethodPost, "/v1/accounts/tokens", token, req, &out); err != nil {
		return nil, fmt.Errorf("link %s: %w", req.Provider, err)
	}
	return &out, nil
}

// Accounts lists the linked providers.
func (c *Client) Accounts(ctx context.Context, token string) ([]LinkedAccount, error) {
	var out api.AccountsResponse
	if err := c.do(ctx, http.MethodGet, "/v1/accounts", token, nil, &out); err != nil {
		return nil, fmt.Errorf("accounts: %w", err)
	}
	return out.Providers, nil
}

// SealedToken returns the sealed credential of provider.
func (c *Client) SealedToken(ctx context.Context, token, provider string) (string, error) {
	var out api.ProviderTokenResponse
	if err := c.do(ctx, http.MethodGet, "/v1/accounts/"+url.PathEscape(provider)+"/token", token, nil, &out); err != nil {
		return "", fmt.Errorf("%s token: %w", provider, err)
	}
	return out.EncryptedToken, nil
}

// RevokeProvider deletes the linked credential of provider.
func (c *Client) RevokeProvider(ctx context.Context, token, provider string) error {
	if err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(provider)+"/revoke", token, nil, nil); err != nil {
		return fmt.Errorf("revoke %s: %w", provider, err)
	}
	return nil
}

// RotateEgress moves provider to a fresh egress port.
func (c *Client) RotateEgress(ctx context.Context, token, provider string) (*RotateEgressResponse, error) {
	var out RotateEgressResponse
	if err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(provider)+"/rotate-egress", token, nil, &out); err != nil {
		return nil, fmt.Errorf("rotate egress of %s: %w", provider, err)
	}
	return &out, nil
}

// LinkKey seals credential to the user's own public key (keys.Public, from
// Unlock) in the context crypto.ProviderTokenContext(user, provider),
// checks the envelope opens again with the private key, and uploads it.
// The caller wipes credential and keys.
func LinkKey(ctx context.Context, c *Client, sess *Session, keys *Keys, provider string, credential []byte) (*LinkTokenResponse, error) {
	if err := checkProvider(provider); err != nil {
		return nil, err
	}
	if len(credential) == 0 || len(credential) > maxCredential {
		return nil, fmt.Errorf("the credential must be 1 to %d bytes", maxCredential)
	}
	if err := sess.Active(time.Now()); err != nil {
		return nil, err
	}
	if keys == nil || keys.Public == nil || keys.Private == nil {
		return nil, errors.New("link: the account's keys are not unlocked")
	}
	place := crypto.ProviderTokenContext(sess.UserID, provider)
	sealed, err := crypto.SealTo(keys.Public, place, credential)
	if err != nil {
		return nil, fmt.Errorf("seal the credential: %w", err)
	}
	back, err := crypto.OpenSealed(keys.Private, place, sealed)
	if err != nil || string(back) != string(credential) {
		return nil, fmt.Errorf("%w: the sealed credential does not open with the private key", ErrKeysDamaged)
	}
	clear(back)
	resp, err := c.LinkToken(ctx, sess.Token, api.LinkTokenRequest{Provider: provider, EncryptedToken: sealed})
	return resp, sessionError(err)
}

// OpenCredential fetches provider's sealed credential and opens it with
// the private key. The caller wipes the result.
func OpenCredential(ctx context.Context, c *Client, sess *Session, keys *Keys, provider string) ([]byte, error) {
	if err := checkProvider(provider); err != nil {
		return nil, err
	}
	sealed, err := c.SealedToken(ctx, sess.Token, provider)
	if err != nil {
		return nil, sessionError(err)
	}
	pt, err := crypto.OpenSealed(keys.Private, crypto.ProviderTokenContext(sess.UserID, provider), sealed)
	if err != nil {
		return nil, fmt.Errorf("the %s credential the server returned does not open: %w", provider, err)
	}
	return pt, nil
}
