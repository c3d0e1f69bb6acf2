package client

import (
	"context"
	"fmt"
	"net/http"
	"net/url"

	"polydev/internal/api"
)

// Login VMs (docs/api.md, "Login VMs"): a throwaway VM in which the user
// signs in to a provider's CLI.

// LoginVMSession is a login VM session as the API describes it.
type LoginVMSession = api.LoginVMSession

// LinkStart asks for a login VM for provider. While the user has a live
// one for that provider, the server returns it instead of a new one.
func (c *Client) LinkStart(ctx context.Context, token, provider string) (LoginVMSession, error) {
	var out LoginVMSession
	if err := c.do(ctx, http.MethodPost, "/v1/accounts/"+url.PathEscape(provider)+"/link/start", token, nil, &out); err != nil {
		return out, fmt.Errorf("link start: %w", err)
	}
	return out, nil
}

// LinkSessions lists the user's live login VM sessions, newest first.
func (c *Client) LinkSessions(ctx context.Context, token string) ([]LoginVMSession, error) {
	var out api.LoginVMSessions
	if err := c.do(ctx, http.MethodGet, "/v1/accounts/link", token, nil, &out); err != nil {
		return nil, fmt.Errorf("link sessions: %w", err)
	}
	return out.Sessions, nil
}

// LinkSession returns one of the user's login VM sessions.
func (c *Client) LinkSession(ctx context.Context, token, id string) (LoginVMSession, error) {
	var out LoginVMSession
	if err := c.do(ctx, http.MethodGet, "/v1/accounts/link/sessions/"+url.PathEscape(id), token, nil, &out); err != nil {
		return out, fmt.Errorf("link session: %w", err)
	}
	return out, nil
}

// LinkDestroy destroys the session's login VM and returns the session,
// with what the destroy removed from the host (empty when it was already
// gone).
func (c *Client) LinkDestroy(ctx context.Context, token, id string) (LoginVMSession, error) {
	var out LoginVMSession
	if err := c.do(ctx, http.MethodDelete, "/v1/accounts/link/sessions/"+url.PathEscape(id), token, nil, &out); err != nil {
		return out, fmt.Errorf("link destroy: %w", err)
	}
	return out, nil
}
