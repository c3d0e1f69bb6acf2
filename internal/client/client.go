// Package client is the user's side of Polydev's account API: an HTTP
// client for the endpoints of docs/api.md, the account flows that do the key
// handling of docs/crypto.md on the user's device, and the small state file
// that remembers a session between commands.
//
// In plain words: the password never leaves this process. Register and
// Login stretch it into a master key (internal/crypto), send the server only
// the derived authentication key, and keep the wrapping key to themselves.
// The account key and the user's private key travel and rest only wrapped;
// Login unwraps them locally to prove that the password is right and that
// what the server returned is intact. The state file holds the session token
// and ciphertext, never a password or a key.
//
// The flows refuse a server that offers key-derivation parameters below the
// client's minimums before deriving anything (downgrade protection), and a
// server whose answers do not match the keys it claims to hold.
package client

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"polydev/internal/api"
	"polydev/internal/buildinfo"
)

// Size caps for what the client reads from the server: a success body is
// at most the API's own body limit; an error body is small by contract.
const (
	maxResponseSize = 1 << 20
	maxErrorSize    = 64 << 10
)

// defaultTimeout bounds one API call when New builds the HTTP client.
const defaultTimeout = 60 * time.Second

// Error codes of docs/api.md that callers branch on.
const (
	CodeInvalidCredentials = "invalid_credentials"
	CodeUnauthorized       = "unauthorized"
	CodeRateLimited        = "rate_limited"
	CodeConflict           = "conflict"
	CodeWeakKDFParams      = "weak_kdf_params"
	CodeNotFound           = "not_found"
)

// ErrUnreachable is wrapped by every error for a request that never got an
// HTTP answer (refused connection, DNS failure, TLS failure, timeout); the
// error itself is an *UnreachableError.
var ErrUnreachable = errors.New("cannot reach the server")

// UnreachableError says which server could not be reached, and why.
type UnreachableError struct {
	Server string
	Err    error
}

func (e *UnreachableError) Error() string {
	return fmt.Sprintf("cannot reach the server at %s: %v", e.Server, e.Err)
}

// Unwrap makes errors.Is match ErrUnreachable and the cause.
func (e *UnreachableError) Unwrap() []error { return []error{ErrUnreachable, e.Err} }

// APIError is an error answer of the API: its HTTP status and the stable
// code and message of the body {"error":{"code","message"}}. An answer
// that does not have that shape (a proxy's error page) has an empty Code.
type APIError struct {
	Status  int
	Code    string
	Message string
	// RetryAfter is the server's Retry-After for rate_limited and
	// unavailable answers; zero when absent.
	RetryAfter time.Duration
}

func (e *APIError) Error() string {
	code := e.Code
	if code == "" {
		code = "unexpected answer"
	}
	s := fmt.Sprintf("server answered %d %s", e.Status, code)
	if e.Message != "" {
		s += ": " + e.Message
	}
	if e.RetryAfter > 0 {
		s += fmt.Sprintf(" (retry after %s)", e.RetryAfter)
	}
	return s
}

// HasCode reports whether err is, or wraps, an *APIError with code.
func HasCode(err error, code string) bool {
	var ae *APIError
	return errors.As(err, &ae) && ae.Code == code
}

// Client calls the account API of one server. It holds no session: calls
// that need one take the bearer token as an argument.
type Client struct {
	base string
	hc   *http.Client
}

// New returns a client for the server at serverURL (scheme and host, e.g.
// http://127.0.0.1:8080; see ParseServerURL). A nil httpClient means one
// with a timeout that does not follow redirects: a redirected POST would
// carry the auth key to wherever the redirect points.
func New(serverURL string, httpClient *http.Client) *Client {
	if httpClient == nil {
		httpClient = &http.Client{
			Timeout: defaultTimeout,
			CheckRedirect: func(*http.Request, []*http.Request) error {
				return http.ErrUseLastResponse
			},
		}
	}
	return &Client{base: strings.TrimRight(serverURL, "/"), hc: httpClient}
}

// ServerURL returns the server's base URL.
func (c *Client) ServerURL() string { return c.base }

// ParseServerURL checks a server address given by a user and returns its
// canonical form: http or https, a host, no path beyond "/", no user
// information, query or fragment.
func ParseServerURL(s string) (string, error) {
	u, err := url.Parse(strings.TrimSpace(s))
	if err != nil {
		return "", fmt.Errorf("server address %q: %w", s, err)
	}
	switch {
	case u.Scheme != "http" && u.Scheme != "https":
		return "", fmt.Errorf("server address %q: want http:// or https://", s)
	case u.Host == "":
		return "", fmt.Errorf("server address %q: no host", s)
	case u.User != nil || u.RawQuery != "" || u.Fragment != "" || strings.Trim(u.Path, "/") != "":
		return "", fmt.Errorf("server address %q: want only scheme, host and port", s)
	}
	return u.Scheme + "://" + u.Host, nil
}

// The wire types of docs/api.md, shared with the control plane.
type (
	User                  = api.User
	KeyBundle             = api.KeyBundle
	RegisterRequest       = api.RegisterRequest
	RegisterResponse      = api.RegisterResponse
	LoginResponse         = api.LoginResponse
	MeResponse            = api.MeResponse
	ChangePasswordRequest = api.ChangePasswordRequest
)

// Prelogin returns the KDF record the server holds for email (a
// deterministic stand-in for an unknown email). The record is returned
// raw: the caller must check it with crypto.ParseKDFParams before deriving.
func (c *Client) Prelogin(ctx context.Context, email string) (json.RawMessage, error) {
	var out api.PreloginResponse
	if err := c.do(ctx, http.MethodPost, "/v1/auth/prelogin", "", api.EmailRequest{Email: email}, &out); err != nil {
		return nil, fmt.Errorf("prelogin: %w", err)
	}
	if len(out.KDF) == 0 {
		return nil, errors.New("prelogin: the server's answer has no kdf record")
	}
	return out.KDF, nil
}

// Register creates an account.
func (c *Client) Register(ctx context.Context, req RegisterRequest) (RegisterResponse, error) {
	var out RegisterResponse
	if err := c.do(ctx, http.MethodPost, "/v1/auth/register", "", req, &out); err != nil {
		return RegisterResponse{}, fmt.Errorf("register: %w", err)
	}
	return out, nil
}

// Login exchanges an email and auth key (base64) for a session.
func (c *Client) Login(ctx context.Context, email, authKey string) (*LoginResponse, error) {
	var out LoginResponse
	in := api.LoginRequest{Email: email, AuthKey: authKey}
	if err := c.do(ctx, http.MethodPost, "/v1/auth/login", "", in, &out); err != nil {
		return nil, fmt.Errorf("login: %w", err)
	}
	if out.Token == "" {
		return nil, errors.New("login: the server's answer has no session token")
	}
	return &out, nil
}

// Me returns the account of the session token.
func (c *Client) Me(ctx context.Context, token string) (*MeResponse, error) {
	var out MeResponse
	if err := c.do(ctx, http.MethodGet, "/v1/auth/me", token, nil, &out); err != nil {
		return nil, fmt.Errorf("account: %w", err)
	}
	return &out, nil
}

// Logout revokes the session token on the server.
func (c *Client) Logout(ctx context.Context, token string) error {
	if err := c.do(ctx, http.MethodPost, "/v1/auth/logout", token, nil, nil); err != nil {
		return fmt.Errorf("logout: %w", err)
	}
	return nil
}

// ChangePassword replaces the auth key, KDF record and wrapped keys; the
// server revokes every other session of the user.
func (c *Client) ChangePassword(ctx context.Context, token string, req ChangePasswordRequest) error {
	if err := c.do(ctx, http.MethodPost, "/v1/auth/password", token, req, nil); err != nil {
		return fmt.Errorf("change password: %w", err)
	}
	return nil
}

// DeleteAccount deletes the account of the session, proven again by its
// auth key (base64).
func (c *Client) DeleteAccount(ctx context.Context, token, authKey string) error {
	if err := c.do(ctx, http.MethodDelete, "/v1/auth/me", token, api.DeleteRequest{AuthKey: authKey}, nil); err != nil {
		return fmt.Errorf("delete account: %w", err)
	}
	return nil
}

// do sends one JSON request and decodes a 2xx answer into out (nil: the
// body is ignored), or returns an *APIError for any other status.
func (c *Client) do(ctx context.Context, method, path, token string, in, out any) error {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return fmt.Errorf("encode request: %w", err)
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return &UnreachableError{Server: c.base, Err: err}
	}
	req.Header.Set("Accept", "application/json")
	req.Header.Set("User-Agent", "polydev-cli/"+buildinfo.Read().Version)
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if token != "" {
		req.Header.Set("Authorization", "Bearer "+token)
	}
	resp, err := c.hc.Do(req)
	if err != nil {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return &UnreachableError{Server: c.base, Err: unwrapURLError(err)}
	}
	defer func() {
		// Drain a little so the connection can be reused, never a lot.
		io.Copy(io.Discard, io.LimitReader(resp.Body, maxErrorSize))
		resp.Body.Close()
	}()
	if resp.StatusCode < 200 || resp.StatusCode > 299 {
		return decodeError(resp)
	}
	if out == nil {
		return nil
	}
	b, err := io.ReadAll(io.LimitReader(resp.Body, maxResponseSize+1))
	if err != nil {
		return fmt.Errorf("read answer from %s: %w", c.base, err)
	}
	if len(b) > maxResponseSize {
		return fmt.Errorf("the server's answer is larger than %d bytes", maxResponseSize)
	}
	// Lenient on unknown members: a newer server may say more.
	if err := json.Unmarshal(b, out); err != nil {
		return fmt.Errorf("the server's answer (HTTP %d) is not the expected JSON: %w", resp.StatusCode, err)
	}
	return nil
}

// unwrapURLError drops net/http's *url.Error wrapper, whose message repeats
// the method and full URL.
func unwrapURLError(err error) error {
	var ue *url.Error
	if errors.As(err, &ue) {
		return ue.Err
	}
	return err
}

// decodeError turns a non-2xx answer into an *APIError.
func decodeError(resp *http.Response) error {
	e := &APIError{Status: resp.StatusCode, RetryAfter: parseRetryAfter(resp.Header.Get("Retry-After"), time.Now())}
	b, _ := io.ReadAll(io.LimitReader(resp.Body, maxErrorSize))
	var body api.ErrorBody
	if json.Unmarshal(b, &body) == nil && body.Error.Code != "" {
		e.Code, e.Message = body.Error.Code, body.Error.Message
	} else {
		e.Message = http.StatusText(resp.StatusCode)
	}
	return e
}

// maxRetryAfter (seconds) keeps an absurd Retry-After from overflowing.
const maxRetryAfter = 7 * 24 * 3600

// parseRetryAfter reads Retry-After as delay-seconds or an HTTP date
// (RFC 9110 §10.2.3); anything else is zero.
func parseRetryAfter(v string, now time.Time) time.Duration {
	v = strings.TrimSpace(v)
	if v == "" {
		return 0
	}
	if n, err := strconv.ParseInt(v, 10, 64); err == nil {
		if n < 0 {
			return 0
		}
		return time.Duration(min(n, maxRetryAfter)) * time.Second
	}
	if t, err := http.ParseTime(v); err == nil && t.After(now) {
		return t.Sub(now).Round(time.Second)
	}
	return 0
}
