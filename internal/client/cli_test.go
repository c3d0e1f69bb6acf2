package client_test

// These tests drive `polydev account` end to end — flags, prompts,
// messages, exit codes, the state file — through cli.Run against the fake
// API. They live here, beside the fake. They set environment variables, so
// they do not run in parallel.

import (
	"bytes"
	"context"
	"encoding/json"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/cli"
	"polydev/internal/client"
	"polydev/internal/crypto"
)

const unset = "\x00unset"

// cliEnv is a config dir and a server for one test.
type cliEnv struct {
	t   *testing.T
	dir string
	srv *fakeServer
}

func newCLIEnv(t *testing.T) *cliEnv {
	t.Helper()
	e := &cliEnv{t: t, dir: filepath.Join(t.TempDir(), "config"), srv: newFakeServer(t)}
	t.Setenv("POLYDEV_CONFIG_DIR", e.dir)
	t.Setenv("POLYDEV_SERVER", e.srv.URL)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	t.Setenv("POLYDEV_NEW_PASSWORD", "")
	os.Unsetenv("POLYDEV_NEW_PASSWORD")
	return e
}

type cliStep struct {
	name  string
	env   map[string]string // for this step only; unset removes a variable
	stdin string
	args  []string
	code  int
	out   []string // each must appear in stdout
	err   string   // must appear in stderr
}

func (e *cliEnv) run(steps ...cliStep) {
	e.t.Helper()
	for _, s := range steps {
		restore := map[string]*string{}
		for k, v := range s.env {
			if old, ok := os.LookupEnv(k); ok {
				restore[k] = &old
			} else {
				restore[k] = nil
			}
			if v == unset {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, v)
			}
		}
		var out, errOut bytes.Buffer
		code := cli.Run(context.Background(), s.args, strings.NewReader(s.stdin), &out, &errOut)
		for k, v := range restore {
			if v == nil {
				os.Unsetenv(k)
			} else {
				os.Setenv(k, *v)
			}
		}
		ok := code == s.code && strings.Contains(errOut.String(), s.err)
		for _, o := range s.out {
			ok = ok && strings.Contains(out.String(), o)
		}
		if !ok {
			e.t.Errorf("%s: polydev %s: got code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
				s.name, strings.Join(s.args, " "), code, out.String(), errOut.String(), s.code, s.out, s.err)
		}
	}
}

func (e *cliEnv) session() *client.Session {
	e.t.Helper()
	sess, err := client.NewState(e.dir).Load()
	if err != nil {
		e.t.Fatalf("load the CLI's session: %v", err)
	}
	return sess
}

func args(s string) []string { return strings.Fields(s) }

func TestCLIAccountLifecycle(t *testing.T) {
	e := newCLIEnv(t)
	email := newEmail()
	e.run(
		cliStep{name: "no email, no terminal", args: args("account register"), code: 1, err: "--email is required"},
		cliStep{name: "short password", args: args("account register --email " + email), env: map[string]string{"POLYDEV_PASSWORD": "short"},
			code: 1, err: "at least 8 characters"},
		cliStep{name: "no password, no terminal", args: args("account register --email " + email), env: map[string]string{"POLYDEV_PASSWORD": unset},
			code: 1, err: "stdin is not a terminal and POLYDEV_PASSWORD is not set"},
		cliStep{name: "register", args: args("account register --email " + strings.ToUpper(email)), code: 0,
			out: []string{"registered " + email + " (user number 1) at " + e.srv.URL + " and logged in"}},
		cliStep{name: "register again", args: args("account register --email " + email), code: 1,
			err: "polydev account: an account with this email address already exists"},
	)
	checkMode(t, e.dir, 0o700)
	checkMode(t, filepath.Join(e.dir, "session.json"), 0o600)
	sess := e.session()
	e.run(
		cliStep{name: "whoami", args: args("account whoami"), code: 0, out: []string{
			"email:       " + email, "user id:     " + sess.UserID, "user number: 1", "server:      " + e.srv.URL}},
		cliStep{name: "whoami, another server", args: args("account whoami --server http://127.0.0.1:9"), code: 1,
			err: "this device's session is at " + e.srv.URL},
		cliStep{name: "wrong password", args: args("account login --email " + email), env: map[string]string{"POLYDEV_PASSWORD": "wrong password"},
			code: 1, err: "polydev account: wrong email or password\n"},
		cliStep{name: "login", args: args("account login --email " + email), code: 0, out: []string{"logged in as " + email}},
		cliStep{name: "passwd, wrong current", args: args("account passwd"),
			env: map[string]string{"POLYDEV_PASSWORD": "wrong password", "POLYDEV_NEW_PASSWORD": "new password 2"}, code: 1, err: "wrong password"},
		cliStep{name: "passwd", args: args("account passwd"), env: map[string]string{"POLYDEV_NEW_PASSWORD": "new password 2"},
			code: 0, out: []string{"password changed"}},
		cliStep{name: "old password", args: args("account login --email " + email), code: 1, err: "wrong email or password"},
		cliStep{name: "new password", args: args("account login --email " + email), env: map[string]string{"POLYDEV_PASSWORD": "new password 2"},
			code: 0, out: []string{"logged in as " + email}},
		cliStep{name: "delete, mismatch", args: args("account delete"), stdin: "someone@example.org\n", code: 1,
			err: "the email address does not match; nothing was deleted"},
		cliStep{name: "delete, no answer", args: args("account delete"), code: 1, err: "deletion needs confirmation"},
		cliStep{name: "delete, wrong password", args: args("account delete"), stdin: email + "\n", code: 1, err: "wrong password"},
		cliStep{name: "delete", args: args("account delete"), stdin: strings.ToUpper(email) + "\n",
			env: map[string]string{"POLYDEV_PASSWORD": "new password 2"}, code: 0, out: []string{"account " + email + " deleted"}},
		cliStep{name: "whoami after delete", args: args("account whoami"), code: 1, err: "not logged in: run polydev account login"},
	)
	if _, err := os.Stat(filepath.Join(e.dir, "session.json")); !os.IsNotExist(err) {
		t.Errorf("session.json after delete: %v; want it removed", err)
	}
}

func TestCLISessionEnds(t *testing.T) {
	e := newCLIEnv(t)
	email := newEmail()
	e.run(cliStep{name: "register", args: args("account register --email " + email), code: 0})
	first := e.session().Token
	e.run(cliStep{name: "login again", args: args("account login --email " + email), code: 0})
	e.srv.set(func(s *fakeServer) {
		if _, ok := s.sessions[first]; ok {
			t.Error("the session replaced by a new login is still valid on the server; want it revoked")
		}
	})
	e.srv.revokeAll()
	e.run(
		cliStep{name: "revoked", args: args("account whoami"), code: 1, err: "your session has expired: run polydev account login"},
		cliStep{name: "passwd on a revoked session asks nothing", args: args("account passwd"), env: map[string]string{"POLYDEV_PASSWORD": unset},
			code: 1, err: "your session has expired: run polydev account login"},
		cliStep{name: "logout of a revoked session", args: args("account logout"), code: 0, out: []string{"logged out " + email}},
		cliStep{name: "logged out", args: args("account whoami"), code: 1, err: "not logged in: run polydev account login"},
		cliStep{name: "logout twice", args: args("account logout"), code: 0, out: []string{"not logged in"}},
		cliStep{name: "login", args: args("account login --email " + email), code: 0},
	)
	// Expired by the clock: refused without asking the server.
	sess := e.session()
	sess.ExpiresAt = time.Now().Add(-time.Minute)
	if err := client.NewState(e.dir).Save(sess); err != nil {
		t.Fatal(err)
	}
	before := e.srv.callCount("GET /v1/auth/me")
	e.run(cliStep{name: "expired", args: args("account whoami"), code: 1, err: "your session has expired: run polydev account login"})
	if n := e.srv.callCount("GET /v1/auth/me"); n != before {
		t.Errorf("an expired session was sent to the server %d times", n-before)
	}
	e.run(cliStep{name: "logout", args: args("account logout"), code: 0})
	if tok := e.session().Token; tok != "" {
		t.Errorf("token after logout: %q; want none", tok)
	}
}

func TestCLIServerTrouble(t *testing.T) {
	e := newCLIEnv(t)
	email := newEmail()
	e.run(cliStep{name: "register", args: args("account register --email " + email), code: 0})

	e.srv.set(func(s *fakeServer) { s.rateLimitLogin = 7 * time.Second })
	e.run(cliStep{name: "rate limited", args: args("account login --email " + email), code: 1, err: "too many attempts; try again in 7 s"})
	e.srv.set(func(s *fakeServer) { s.rateLimitLogin = 0 })

	salt := crypto.EncodeText(make([]byte, 32))
	e.srv.set(func(s *fakeServer) {
		s.preloginKDF = json.RawMessage(`{"version":1,"algorithm":"pbkdf2-sha256","salt":"` + salt + `","iterations":1000}`)
	})
	e.run(cliStep{name: "weak kdf", args: args("account login --email " + email), code: 1,
		err: "the server offered weaker key-derivation parameters than this client accepts; refusing to log in"})
	e.srv.set(func(s *fakeServer) { s.preloginKDF = nil })

	e.srv.set(func(s *fakeServer) {
		s.alterLogin = func(r *client.LoginResponse) { r.WrappedAccountKey = flipBit(t, r.WrappedAccountKey, 30) }
	})
	e.run(cliStep{name: "tampered keys", args: args("account login --email " + email), code: 1,
		err: "the keys the server returned are damaged or were tampered with"})
	e.srv.set(func(s *fakeServer) { s.alterLogin = nil })

	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	down := "http://" + l.Addr().String()
	l.Close()
	e.run(
		cliStep{name: "unreachable", args: args("account login --server " + down + " --email " + email), code: 1,
			err: "polydev account: cannot reach the server at " + down + ": "},
		cliStep{name: "bad address", args: args("account login --server example.org --email " + email), code: 1, err: "want http:// or https://"},
		cliStep{name: "plain http elsewhere warns", args: args("account login --server http://192.0.2.1:1 --email nobody"), code: 1,
			err: "plain HTTP"},
	)
}

func TestCLIAccountHelp(t *testing.T) {
	newCLIEnv(t)
	e := &cliEnv{t: t}
	e.run(
		cliStep{name: "help", args: args("help account"), code: 0, out: []string{"register", "passwd", "delete", "POLYDEV_PASSWORD"}},
		cliStep{name: "listed", args: args("help"), code: 0, out: []string{"account"}},
		cliStep{name: "no subcommand", args: args("account"), code: 2, err: "Usage: polydev account"},
		cliStep{name: "unknown", args: args("account nope"), code: 2, err: `unknown command "nope"`},
		cliStep{name: "flags", args: args("account delete -h"), code: 0, err: "-yes"},
		cliStep{name: "stray argument", args: args("account whoami extra"), code: 2, err: "unexpected arguments: extra"},
	)
}

// TestCLIAgainstRealServer: the acceptance walk through with the real
// control plane — register, whoami, logout, then login from a second config
// dir (a second device) unlocks the same keys.
func TestCLIAgainstRealServer(t *testing.T) {
	url := realServer(t)
	email := newEmail()
	devA, devB := filepath.Join(t.TempDir(), "a"), filepath.Join(t.TempDir(), "b")
	t.Setenv("POLYDEV_SERVER", url)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	e := &cliEnv{t: t}
	t.Setenv("POLYDEV_CONFIG_DIR", devA)
	e.run(
		cliStep{name: "register", args: args("account register --email " + email), code: 0, out: []string{"registered " + email}},
		cliStep{name: "whoami", args: args("account whoami"), code: 0, out: []string{"email:       " + email, "server:      " + url}},
		cliStep{name: "logout", args: args("account logout"), code: 0},
		cliStep{name: "whoami after logout", args: args("account whoami"), code: 1, err: "account login"},
		cliStep{name: "login again", args: args("account login --email " + email), code: 0, out: []string{"logged in as " + email}},
	)
	t.Setenv("POLYDEV_CONFIG_DIR", devB)
	e.run(cliStep{name: "login on a second device", args: args("account login --email " + email), code: 0, out: []string{"logged in as " + email}})

	var keys [2]*client.Keys
	for i, dir := range []string{devA, devB} {
		sess, err := client.NewState(dir).Load()
		if err != nil {
			t.Fatal(err)
		}
		keys[i], err = client.Unlock(sess, []byte(testPassword))
		if err != nil {
			t.Fatalf("unlock on device %d: %v", i, err)
		}
	}
	if !keys[0].Account.Equal(keys[1].Account) || keys[0].Public.String() != keys[1].Public.String() {
		t.Fatal("the second device unlocked different keys")
	}
}
