package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
)

// untilListening is a log writer that cancels the serve command once the
// server is up.
type untilListening struct {
	mu     sync.Mutex
	buf    bytes.Buffer
	cancel context.CancelFunc
}

func (w *untilListening) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	w.buf.Write(p)
	if strings.Contains(w.buf.String(), "control plane listening") {
		w.cancel()
	}
	return len(p), nil
}

func serveLog(t *testing.T, args ...string) (int, string) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	w := &untilListening{cancel: cancel}
	var out bytes.Buffer
	code := Run(ctx, append([]string{"serve", "--dev", "--addr", "127.0.0.1:0", "--data", t.TempDir()}, args...), strings.NewReader(""), &out, w)
	w.mu.Lock()
	defer w.mu.Unlock()
	return code, w.buf.String()
}

// TestServeEgress: serve says at start-up how it egresses, and never with
// the proxy's host or credentials; bad egress settings stop it with a
// clear error.
func TestServeEgress(t *testing.T) {
	const host, user, pass = "127.77.0.9", "egress-user-Zq3", "egress-pass-Kx8!"
	code, log := serveLog(t)
	if code != 0 || !strings.Contains(log, "egress: direct") {
		t.Errorf("serve --dev: code %d, log %q; want the direct egress announced", code, log)
	}

	t.Setenv("POLYDEV_EGRESS_USERNAME", user)
	t.Setenv("POLYDEV_EGRESS_PASSWORD", pass)
	code, log = serveLog(t, "--egress-proxy", host, "--egress-base-port", "20001", "--egress-ports", "50")
	if code != 0 || !strings.Contains(log, "egress: through the upstream proxy") || !strings.Contains(log, "base_port=20001") {
		t.Errorf("serve with a proxy: code %d, log %q", code, log)
	}
	for _, s := range []string{host, user, pass} {
		if strings.Contains(log, s) {
			t.Errorf("the start-up log contains %q:\n%s", s, log)
		}
	}

	secret := filepath.Join(t.TempDir(), "egress.secret")
	os.WriteFile(secret, []byte("username="+user+"\npassword="+pass+"\n"), 0o600)
	for _, c := range []struct {
		args []string
		code int
		err  string
	}{
		{[]string{"--egress-proxy", host + ":10001"}, 1, "without a port"},
		{[]string{"--egress-proxy", host, "--egress-secret-file", secret}, 1, "both in the environment"},
		{[]string{"--egress-base-port", "65000"}, 1, "egress ports"},
		{[]string{"--egress-password", pass}, 2, "flag provided but not defined"},
		{nil, 1, "no proxy host"}, // credentials in the environment, no proxy
	} {
		code, log := serveLog(t, c.args...)
		if code != c.code || !strings.Contains(log, c.err) || strings.Contains(log, pass) && c.code != 2 {
			t.Errorf("serve %v: code %d, stderr %q; want %d and %q", c.args, code, log, c.code, c.err)
		}
	}
	os.Unsetenv("POLYDEV_EGRESS_USERNAME")
	os.Unsetenv("POLYDEV_EGRESS_PASSWORD")
	code, log = serveLog(t, "--egress-proxy", host, "--egress-secret-file", secret)
	if code != 0 || !strings.Contains(log, "authenticated=true") || strings.Contains(log, pass) {
		t.Errorf("serve with the secret file: code %d, log %q", code, log)
	}
}
