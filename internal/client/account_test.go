package client_test

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/client"
	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

const testPassword = "correct horse battery staple ✓"

func newEmail() string { return "user-" + uuid.NewString()[:8] + "@example.org" }

func mustRegister(t *testing.T, c *client.Client, email, password string) client.Registration {
	t.Helper()
	reg, err := client.Register(context.Background(), c, email, []byte(password))
	if err != nil {
		t.Fatalf("register %s: %v", email, err)
	}
	return reg
}

func mustLogin(t *testing.T, c *client.Client, email, password string) (*client.Session, *client.Keys) {
	t.Helper()
	sess, keys, err := client.Login(context.Background(), c, email, []byte(password))
	if err != nil {
		t.Fatalf("login %s: %v", email, err)
	}
	t.Cleanup(keys.Wipe)
	return sess, keys
}

// TestAccountFlows runs the whole account life cycle against the fake API.
func TestAccountFlows(t *testing.T) {
	t.Parallel()
	testAccountFlows(t, newFakeServer(t).URL)
}

// TestAccountFlowsAgainstServer runs the same life cycle against the real
// control plane (over a SQLite store, on loopback).
func TestAccountFlowsAgainstServer(t *testing.T) {
	t.Parallel()
	testAccountFlows(t, realServer(t))
}

// realServer starts the real control plane over a fresh SQLite store and
// returns its base URL.
func realServer(t *testing.T) string {
	t.Helper()
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "polydev.db"), sqlite.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{9}, 32)}, slog.New(slog.NewTextHandler(io.Discard, nil)), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx, func(a net.Addr) { addr <- a }) }()
	t.Cleanup(func() { cancel(); <-done })
	select {
	case a := <-addr:
		return "http://" + a.String()
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	}
	return ""
}

func testAccountFlows(t *testing.T, serverURL string) {
	ctx := context.Background()
	c := client.New(serverURL, nil)
	email := newEmail()
	// Mixed case and spaces: the client normalises the address.
	reg := mustRegister(t, c, "  "+strings.ToUpper(email)+" ", testPassword)
	if _, err := uuid.Parse(reg.UserID); err != nil || reg.UserNumber < 1 {
		t.Fatalf("registration: got %+v; want a uuid and a number ≥ 1", reg)
	}
	if _, err := client.Register(ctx, c, email, []byte("another password")); !client.HasCode(err, client.CodeConflict) {
		t.Fatalf("second register with the same email: got %v; want conflict", err)
	}

	// Login on one device, then on a second config dir: the same keys.
	sessA, keysA := mustLogin(t, c, email, testPassword)
	stA := client.NewState(t.TempDir())
	if err := stA.Save(sessA); err != nil {
		t.Fatal(err)
	}
	sessB, keysB := mustLogin(t, c, email, testPassword)
	stB := client.NewState(t.TempDir())
	if err := stB.Save(sessB); err != nil {
		t.Fatal(err)
	}
	if sessA.UserID != reg.UserID || sessA.Email != email || sessA.UserNumber != reg.UserNumber || sessA.Server != serverURL {
		t.Errorf("session: got %+v; want user %s, email %s, number %d, server %s", sessA.LogValue(), reg.UserID, email, reg.UserNumber, serverURL)
	}
	if sessA.Token == sessB.Token {
		t.Error("two logins got the same session token")
	}
	if !keysA.Account.Equal(keysB.Account) {
		t.Error("the second device unlocked a different account key")
	}
	if keysA.Public.String() != keysB.Public.String() || keysA.Public.String() != sessB.PublicKey {
		t.Error("the second device unlocked a different key pair")
	}
	// The keys work: what is sealed to the public key opens with the
	// private key the other device unwrapped.
	pctx := crypto.ProviderTokenContext(reg.UserID, "openai")
	sealed, err := crypto.SealTo(keysA.Public, pctx, []byte("sk-test"))
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := crypto.OpenSealed(keysB.Private, pctx, sealed); err != nil || string(pt) != "sk-test" {
		t.Errorf("open with the second device's private key: got %q, %v", pt, err)
	}
	// The saved session opens offline with the password, and only with it.
	loaded, err := stB.Load()
	if err != nil {
		t.Fatal(err)
	}
	unlocked, err := client.Unlock(loaded, []byte(testPassword))
	if err != nil {
		t.Fatalf("unlock the saved session: %v", err)
	}
	if !unlocked.Account.Equal(keysA.Account) {
		t.Error("unlocking the saved session gave another account key")
	}
	unlocked.Wipe()
	if _, err := client.Unlock(loaded, []byte("not the password")); !errors.Is(err, client.ErrWrongPassword) {
		t.Errorf("unlock with a wrong password: got %v; want ErrWrongPassword", err)
	}

	// Wrong password, unknown email: the same answer.
	for _, who := range []string{email, newEmail()} {
		_, _, err := client.Login(ctx, c, who, []byte("wrong password!"))
		if !errors.Is(err, client.ErrWrongCredentials) || !client.HasCode(err, client.CodeInvalidCredentials) {
			t.Errorf("login %s with a wrong password: got %v; want ErrWrongCredentials wrapping invalid_credentials", who, err)
		}
	}

	// Change the password on A: the same account key under the new one;
	// B is signed out, A is not.
	const newPassword = "a brand new passphrase"
	if err := client.ChangePassword(ctx, c, sessA, []byte("wrong password!"), []byte(newPassword)); !errors.Is(err, client.ErrWrongPassword) {
		t.Fatalf("change password with a wrong current one: got %v; want ErrWrongPassword", err)
	}
	if err := client.ChangePassword(ctx, c, sessA, []byte(testPassword), []byte(newPassword)); err != nil {
		t.Fatalf("change password: %v", err)
	}
	if _, err := client.Me(ctx, c, sessA); err != nil {
		t.Errorf("the session that changed the password: %v; want it kept", err)
	}
	if _, err := client.Me(ctx, c, sessB); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("the other session after a password change: got %v; want ErrSessionExpired", err)
	}
	if _, _, err := client.Login(ctx, c, email, []byte(testPassword)); !errors.Is(err, client.ErrWrongCredentials) {
		t.Errorf("login with the old password: got %v; want ErrWrongCredentials", err)
	}
	sessC, keysC := mustLogin(t, c, email, newPassword)
	if !keysC.Account.Equal(keysA.Account) || keysC.Public.String() != keysA.Public.String() {
		t.Error("after a password change the keys differ; want the same account key and key pair")
	}
	if string(sessC.KDF) != string(sessA.KDF) {
		t.Errorf("the updated session's kdf record %s differs from the server's %s", sessA.KDF, sessC.KDF)
	}
	if k, err := client.Unlock(sessA, []byte(newPassword)); err != nil {
		t.Errorf("unlock the updated session with the new password: %v", err)
	} else {
		k.Wipe()
	}

	// Logout revokes; delete needs the password.
	if err := c.Logout(ctx, sessC.Token); err != nil {
		t.Fatalf("logout: %v", err)
	}
	if _, err := client.Me(ctx, c, sessC); !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("a logged-out session: got %v; want ErrSessionExpired", err)
	}
	if err := client.DeleteAccount(ctx, c, sessA, []byte(testPassword)); !errors.Is(err, client.ErrWrongPassword) {
		t.Errorf("delete with the old password: got %v; want ErrWrongPassword", err)
	}
	if err := client.DeleteAccount(ctx, c, sessA, []byte(newPassword)); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, _, err := client.Login(ctx, c, email, []byte(newPassword)); !errors.Is(err, client.ErrWrongCredentials) {
		t.Errorf("login to a deleted account: got %v; want ErrWrongCredentials", err)
	}
}

// A server (or anyone on the path) that answers prelogin with parameters
// below the minimums is refused before anything is derived or sent.
func TestLoginRefusesServerKDF(t *testing.T) {
	t.Parallel()
	salt := `"` + crypto.EncodeText(make([]byte, 32)) + `"`
	for _, tc := range []struct {
		name, kdf string
		want      error
		msg       string
	}{
		{"pbkdf2 1000 iterations", `{"version":1,"algorithm":"pbkdf2-sha256","salt":` + salt + `,"iterations":1000}`, crypto.ErrWeakKDFParams, "weaker key-derivation parameters than this client accepts; refusing to log in"},
		{"argon2id 1 MiB", `{"version":1,"algorithm":"argon2id","salt":` + salt + `,"memory_kib":1024,"iterations":3,"parallelism":4}`, crypto.ErrWeakKDFParams, "refusing to log in"},
		{"argon2id 1 pass", `{"version":1,"algorithm":"argon2id","salt":` + salt + `,"memory_kib":65536,"iterations":1,"parallelism":4}`, crypto.ErrWeakKDFParams, "refusing to log in"},
		{"argon2id 64 GiB", `{"version":1,"algorithm":"argon2id","salt":` + salt + `,"memory_kib":67108864,"iterations":3,"parallelism":4}`, crypto.ErrInvalidKDFParams, "not acceptable"},
		{"unknown algorithm", `{"version":1,"algorithm":"md5","salt":` + salt + `}`, crypto.ErrUnsupportedKDF, "not acceptable"},
		{"not a record", `"hello"`, crypto.ErrInvalidKDFParams, "not acceptable"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t)
			c := client.New(srv.URL, nil)
			email := newEmail()
			mustRegister(t, c, email, testPassword)
			srv.set(func(s *fakeServer) { s.preloginKDF = json.RawMessage(tc.kdf) })
			_, _, err := client.Login(context.Background(), c, email, []byte(testPassword))
			if !errors.Is(err, tc.want) || err == nil || !strings.Contains(err.Error(), tc.msg) {
				t.Errorf("got %v; want %v with %q", err, tc.want, tc.msg)
			}
			if n := srv.callCount("POST /v1/auth/login"); n != 0 {
				t.Errorf("/login called %d times; want 0 (refuse before sending an auth key)", n)
			}
		})
	}
}

// Keys the server returns that do not open, or do not belong together, are
// refused locally, and the session the server opened is revoked again.
func TestLoginRefusesTamperedKeys(t *testing.T) {
	t.Parallel()
	other, err := crypto.GenerateKeyPair(crypto.DefaultSuite)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name  string
		alter func(r *client.LoginResponse, victim client.KeyBundle)
		want  string
	}{
		{"account key bit flipped", func(r *client.LoginResponse, _ client.KeyBundle) {
			r.WrappedAccountKey = flipBit(t, r.WrappedAccountKey, 20)
		}, "account key: open failed"},
		{"account key truncated", func(r *client.LoginResponse, _ client.KeyBundle) {
			r.WrappedAccountKey = r.WrappedAccountKey[:16]
		}, "account key: malformed"},
		{"private key bit flipped", func(r *client.LoginResponse, _ client.KeyBundle) {
			r.WrappedPrivateKey = flipBit(t, r.WrappedPrivateKey, 40)
		}, "private key: open failed"},
		{"another user's wrapped keys", func(r *client.LoginResponse, victim client.KeyBundle) {
			r.WrappedAccountKey, r.WrappedPrivateKey = victim.WrappedAccountKey, victim.WrappedPrivateKey
		}, "account key: open failed"},
		{"public key swapped", func(r *client.LoginResponse, _ client.KeyBundle) {
			r.PublicKey = other.Public().String()
		}, "the public key is not the private key's"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Parallel()
			srv := newFakeServer(t)
			c := client.New(srv.URL, nil)
			victim, email := newEmail(), newEmail()
			mustRegister(t, c, victim, testPassword)
			mustRegister(t, c, email, testPassword)
			var victimBundle client.KeyBundle
			srv.set(func(s *fakeServer) {
				victimBundle = s.users[victim].bundle
				s.alterLogin = func(r *client.LoginResponse) { tc.alter(r, victimBundle) }
			})
			sess, keys, err := client.Login(context.Background(), c, email, []byte(testPassword))
			if !errors.Is(err, client.ErrKeysDamaged) || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("got %v; want ErrKeysDamaged with %q", err, tc.want)
			}
			if sess != nil || keys != nil {
				t.Error("a refused login returned a session or keys")
			}
			if n := srv.callCount("POST /v1/auth/logout"); n != 1 {
				t.Errorf("logout called %d times; want 1 (revoke the session the client refuses)", n)
			}
			srv.mu.Lock()
			n := len(srv.sessions)
			srv.mu.Unlock()
			if n != 0 {
				t.Errorf("%d sessions left on the server; want 0", n)
			}
		})
	}
}

// A password that does not match the account is refused by the server for
// deletion, and locally (before anything is sent) for a password change.
func TestWrongPasswordSendsNothing(t *testing.T) {
	t.Parallel()
	srv := newFakeServer(t)
	c := client.New(srv.URL, nil)
	email := newEmail()
	mustRegister(t, c, email, testPassword)
	sess, _ := mustLogin(t, c, email, testPassword)
	err := client.ChangePassword(context.Background(), c, sess, []byte("not it at all"), []byte("new password here"))
	if !errors.Is(err, client.ErrWrongPassword) {
		t.Fatalf("got %v; want ErrWrongPassword", err)
	}
	if n := srv.callCount("POST /v1/auth/password"); n != 0 {
		t.Errorf("/password called %d times; want 0", n)
	}
	srv.revokeAll()
	err = client.ChangePassword(context.Background(), c, sess, []byte(testPassword), []byte("new password here"))
	if !errors.Is(err, client.ErrSessionExpired) {
		t.Errorf("change password on a revoked session: got %v; want ErrSessionExpired", err)
	}
}

func TestNormalizeEmail(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct{ in, want string }{
		{"ada@example.org", "ada@example.org"},
		{"  Ada@Example.ORG\n", "ada@example.org"},
		{"ada", ""},
		{"Ada <ada@example.org>", ""},
		{"a@b.io", "a@b.io"},
		{"a@localhost", ""},
		{"@", ""},
		{strings.Repeat("a", 250) + "@b.org", ""},
	} {
		got, err := client.NormalizeEmail(tc.in)
		if got != tc.want || (err == nil) != (tc.want != "") {
			t.Errorf("NormalizeEmail(%q): got %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

// flipBit flips one bit of the decoded envelope and encodes it again.
func flipBit(t *testing.T, text string, at int) string {
	t.Helper()
	b, err := crypto.DecodeText(text)
	if err != nil || at >= len(b) {
		t.Fatalf("flipBit: %v (length %d, at %d)", err, len(b), at)
	}
	b[at] ^= 0x10
	return crypto.EncodeText(b)
}
