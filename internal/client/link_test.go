package client_test

import (
	"bytes"
	"context"
	"io"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"polydev/internal/client"
	"polydev/internal/controlplane"
	"polydev/internal/egress"
	"polydev/internal/egress/egresstest"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

// egressServer starts the real control plane over a fresh SQLite store,
// egressing through a fake gateway, and returns its URL and the gateway.
func egressServer(t *testing.T) (string, *egresstest.Upstream) {
	t.Helper()
	up := egresstest.Start(t, 4)
	eg, err := egress.New(up.Config())
	if err != nil {
		t.Fatal(err)
	}
	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "polydev.db"), sqlite.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{9}, 32), Egress: eg}, slog.New(slog.NewTextHandler(io.Discard, nil)), web.Assets)
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
		return "http://" + a.String(), up
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	}
	return "", nil
}

// TestLinkFlows: a key sealed on the device comes back sealed and opens
// only there; the egress port follows the user number and rotation.
func TestLinkFlows(t *testing.T) {
	t.Parallel()
	url, up := egressServer(t)
	ctx := context.Background()
	c := client.New(url, nil)
	email := newEmail()
	reg := mustRegister(t, c, email, testPassword)
	sess, keys := mustLogin(t, c, email, testPassword)
	const key = "sk-proj-link-flow-secret"
	resp, err := client.LinkKey(ctx, c, sess, keys, "openai", []byte(key))
	if err != nil {
		t.Fatalf("LinkKey: %v", err)
	}
	port := up.Base + int(reg.UserNumber) - 1
	if resp.EgressPort != port || resp.EgressIP != up.ExitIP(port) || resp.Replaced {
		t.Errorf("LinkKey: %+v; want port %d, IP %s, a first link", resp, port, up.ExitIP(port))
	}
	got, err := client.OpenCredential(ctx, c, sess, keys, "openai")
	if err != nil || string(got) != key {
		t.Errorf("OpenCredential: %q, %v; want the key", got, err)
	}
	sealed, _ := c.SealedToken(ctx, sess.Token, "openai")
	if strings.Contains(sealed, key) {
		t.Fatal("the server holds the key in the clear")
	}
	rot, err := c.RotateEgress(ctx, sess.Token, "openai")
	if err != nil || rot.OldPort != port || rot.NewPort != up.Base+up.Size-1 || rot.EgressIP != up.ExitIP(rot.NewPort) {
		t.Errorf("RotateEgress: %+v, %v", rot, err)
	}
	list, err := c.Accounts(ctx, sess.Token)
	if err != nil || len(list) != 1 || list[0].EgressPort != rot.NewPort || list[0].LastRotatedAt == nil {
		t.Errorf("Accounts: %+v, %v", list, err)
	}
	if _, err := client.LinkKey(ctx, c, sess, keys, "acme", []byte(key)); err == nil {
		t.Error("LinkKey for an unknown provider succeeded")
	}
	if err := c.RevokeProvider(ctx, sess.Token, "openai"); err != nil {
		t.Fatal(err)
	}
	if err := c.RevokeProvider(ctx, sess.Token, "openai"); !client.HasCode(err, client.CodeNotLinked) {
		t.Errorf("revoke twice: %v; want not_linked", err)
	}
}

// TestCLILink drives polydev link and polydev accounts end to end.
func TestCLILink(t *testing.T) {
	url, up := egressServer(t)
	dir := filepath.Join(t.TempDir(), "config")
	t.Setenv("POLYDEV_CONFIG_DIR", dir)
	t.Setenv("POLYDEV_SERVER", url)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	e := &cliEnv{t: t, dir: dir}
	email := newEmail()
	const key = "sk-ant-cli-link-secret-0123456789"
	e.run(
		cliStep{name: "link before login", args: args("link key --provider openai"), stdin: key, code: 1, err: "not logged in"},
		cliStep{name: "register", args: args("account register --email " + email), code: 0},
		cliStep{name: "no provider", args: args("link key"), stdin: key, code: 2, err: "--provider is required"},
		cliStep{name: "unknown provider", args: args("link key --provider acme"), stdin: key, code: 1, err: `unknown provider "acme"`},
		cliStep{name: "key on the command line", args: args("link key --provider openai --key " + key), code: 1, err: "refusing --key"},
		cliStep{name: "no key", args: args("link key --provider openai"), stdin: "\n", code: 1, err: "no key given"},
		cliStep{name: "no password", args: args("link key --provider openai"), stdin: key, env: map[string]string{"POLYDEV_PASSWORD": unset},
			code: 1, err: "POLYDEV_PASSWORD is not set"},
		cliStep{name: "wrong password", args: args("link key --provider openai"), stdin: key, env: map[string]string{"POLYDEV_PASSWORD": "wrong password"},
			code: 1, err: "wrong password"},
		cliStep{name: "nothing linked", args: args("accounts"), code: 0, out: []string{"no linked providers"}},
		cliStep{name: "link", args: args("link key --provider anthropic"), stdin: key + "\n", code: 0,
			out: []string{"linked anthropic: egress port " + itoa(up.Base), "egress IP " + up.ExitIP(up.Base)}},
		cliStep{name: "link again", args: args("link key --provider anthropic"), stdin: key + "-v2", code: 0, out: []string{"replaced the key of anthropic"}},
		cliStep{name: "accounts", args: args("accounts"), code: 0, out: []string{"PROVIDER", "anthropic", itoa(up.Base), up.ExitIP(up.Base)}},
		cliStep{name: "rotate", args: args("link rotate-egress --provider anthropic"), code: 0,
			out: []string{"anthropic now egresses through port " + itoa(up.Base+3) + " (was " + itoa(up.Base) + "), egress IP " + up.ExitIP(up.Base+3)}},
		cliStep{name: "rotate unlinked", args: args("link rotate-egress --provider google"), code: 1, err: "that provider is not linked"},
		cliStep{name: "revoke", args: args("link revoke --provider anthropic"), code: 0, out: []string{"revoked anthropic"}},
		cliStep{name: "revoke again", args: args("link revoke --provider anthropic"), code: 1, err: "that provider is not linked"},
		cliStep{name: "help", args: args("link -h"), code: 0, out: []string{"rotate-egress"}},
	)
	// The key is in no file of the client's state.
	filepath.Walk(dir, func(path string, info os.FileInfo, err error) error {
		if err == nil && !info.IsDir() {
			if b, _ := os.ReadFile(path); bytes.Contains(b, []byte(key)) {
				t.Errorf("%s holds the API key", path)
			}
		}
		return nil
	})
}

func itoa(n int) string { return strconv.Itoa(n) }
