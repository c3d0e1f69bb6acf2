package client_test

import (
	"context"
	"errors"
	"io"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"testing"
	"time"

	"polydev/internal/client"
)

func TestAPIErrors(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		name       string
		status     int
		retryAfter string
		body       string
		want       client.APIError
	}{
		{"invalid credentials", 401, "", `{"error":{"code":"invalid_credentials","message":"wrong email or auth key"}}`,
			client.APIError{Status: 401, Code: "invalid_credentials", Message: "wrong email or auth key"}},
		{"rate limited, seconds", 429, "17", `{"error":{"code":"rate_limited","message":"slow down"}}`,
			client.APIError{Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 17 * time.Second}},
		{"rate limited, date", 429, "in 90 s", `{"error":{"code":"rate_limited","message":"slow down"}}`,
			client.APIError{Status: 429, Code: "rate_limited", Message: "slow down", RetryAfter: 90 * time.Second}},
		{"rate limited, garbage", 429, "soon", `{"error":{"code":"rate_limited","message":""}}`,
			client.APIError{Status: 429, Code: "rate_limited"}},
		{"proxy error page", 502, "", `<html>bad gateway</html>`,
			client.APIError{Status: 502, Message: "Bad Gateway"}},
		{"redirect not followed", 308, "", ``,
			client.APIError{Status: 308, Message: "Permanent Redirect"}},
		{"huge error body", 500, "", `{"error":{"code":"internal","message":"` + strings.Repeat("x", 1<<20) + `"}}`,
			client.APIError{Status: 500, Message: "Internal Server Error"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				switch tc.retryAfter {
				case "":
				case "in 90 s": // an HTTP date, made when answering
					w.Header().Set("Retry-After", time.Now().Add(90*time.Second).UTC().Format(http.TimeFormat))
				default:
					w.Header().Set("Retry-After", tc.retryAfter)
				}
				if tc.status == 308 {
					w.Header().Set("Location", "http://127.0.0.1:1/elsewhere")
				}
				w.WriteHeader(tc.status)
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := client.New(srv.URL, nil).Login(context.Background(), "ada@example.org", "a2V5")
			var got *client.APIError
			if !errors.As(err, &got) {
				t.Fatalf("got %v; want an *APIError", err)
			}
			if d := got.RetryAfter - tc.want.RetryAfter; d < -2*time.Second || d > 2*time.Second {
				t.Errorf("RetryAfter: got %v; want %v", got.RetryAfter, tc.want.RetryAfter)
			}
			got.RetryAfter = tc.want.RetryAfter
			if *got != tc.want {
				t.Errorf("got %+v; want %+v", *got, tc.want)
			}
			if !strings.HasPrefix(err.Error(), "login: server answered ") {
				t.Errorf("message %q; want it to name the operation and the answer", err)
			}
		})
	}
}

func TestRequests(t *testing.T) {
	t.Parallel()
	type seen struct{ method, path, auth, ctype, body string }
	got := make(chan seen, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		b, _ := io.ReadAll(r.Body)
		got <- seen{r.Method, r.URL.Path, r.Header.Get("Authorization"), r.Header.Get("Content-Type"), string(b)}
		w.WriteHeader(204)
	}))
	defer srv.Close()
	c := client.New(srv.URL+"/", nil)
	ctx := context.Background()
	for _, tc := range []struct {
		call func() error
		want seen
	}{
		{func() error { return c.Logout(ctx, "t1") }, seen{"POST", "/v1/auth/logout", "Bearer t1", "", ""}},
		{func() error { return c.DeleteAccount(ctx, "t2", "QUs=") }, seen{"DELETE", "/v1/auth/me", "Bearer t2", "application/json", `{"auth_key":"QUs="}`}},
		{func() error {
			return c.ChangePassword(ctx, "t3", client.ChangePasswordRequest{CurrentAuthKey: "a", KDF: []byte(`{}`), AuthKey: "b", WrappedAccountKey: "c"})
		}, seen{"POST", "/v1/auth/password", "Bearer t3", "application/json", `{"current_auth_key":"a","kdf":{},"auth_key":"b","wrapped_account_key":"c"}`}},
	} {
		if err := tc.call(); err != nil {
			t.Errorf("%s %s: %v", tc.want.method, tc.want.path, err)
			continue
		}
		if s := <-got; s != tc.want {
			t.Errorf("request: got %+v; want %+v", s, tc.want)
		}
	}
}

func TestUnreachable(t *testing.T) {
	t.Parallel()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	url := "http://" + l.Addr().String()
	l.Close() // nothing listens there now
	_, err = client.New(url, nil).Prelogin(context.Background(), "ada@example.org")
	var ue *client.UnreachableError
	if !errors.Is(err, client.ErrUnreachable) || !errors.As(err, &ue) {
		t.Fatalf("got %v; want ErrUnreachable", err)
	}
	if want := "cannot reach the server at " + url + ": "; !strings.HasPrefix(ue.Error(), want) || !strings.Contains(ue.Error(), "refused") {
		t.Errorf("message %q; want %q and the cause", ue.Error(), want)
	}

	// A cancelled call is the caller's doing, not an unreachable server.
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	_, err = client.New(url, nil).Prelogin(ctx, "ada@example.org")
	if !errors.Is(err, context.Canceled) || errors.Is(err, client.ErrUnreachable) {
		t.Errorf("cancelled: got %v; want context.Canceled", err)
	}
}

func TestAnswerChecks(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ name, body, want string }{
		{"too large", `{"kdf":"` + strings.Repeat("x", 1<<20) + `"}`, "larger than"},
		{"not JSON", `<html>`, "not the expected JSON"},
		{"no kdf", `{}`, "no kdf record"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
				w.Write([]byte(tc.body))
			}))
			defer srv.Close()
			_, err := client.New(srv.URL, nil).Prelogin(context.Background(), "ada@example.org")
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want %q", err, tc.want)
			}
		})
	}
}

func TestParseServerURL(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"http://127.0.0.1:8080", "http://127.0.0.1:8080"},
		{"https://polydev.example.org/", "https://polydev.example.org"},
		{" http://[::1]:8080 ", "http://[::1]:8080"},
		{"127.0.0.1:8080", ""},
		{"ftp://example.org", ""},
		{"https://", ""},
		{"https://user:pw@example.org", ""},
		{"https://example.org/api", ""},
		{"https://example.org?x=1", ""},
	} {
		got, err := client.ParseServerURL(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("ParseServerURL(%q): got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}
