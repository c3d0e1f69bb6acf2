package client_test

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"testing"
	"time"

	"polydev/internal/cli"
	"polydev/internal/provider/emulator"
	"polydev/internal/runtime"
)

// logWatch collects a serve command's log and reports the first match of
// a pattern.
type logWatch struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (w *logWatch) Write(p []byte) (int, error) {
	w.mu.Lock()
	defer w.mu.Unlock()
	return w.buf.Write(p)
}

func (w *logWatch) wait(t *testing.T, re *regexp.Regexp, exited <-chan int) string {
	t.Helper()
	deadline := time.Now().Add(60 * time.Second)
	for time.Now().Before(deadline) {
		w.mu.Lock()
		m := re.FindStringSubmatch(w.buf.String())
		w.mu.Unlock()
		if m != nil {
			return m[len(m)-1]
		}
		select {
		case code := <-exited:
			t.Fatalf("serve exited with %d before %q:\n%s", code, re, w.buf.String())
		case <-time.After(20 * time.Millisecond):
		}
	}
	t.Fatalf("no %q in the log:\n%s", re, w.buf.String())
	return ""
}

// TestChatAcrossRoles runs the production split: `serve --role runtime`
// holding the runtime identity and keys behind a unix socket, and `serve
// --role control-plane` reaching it there. A chat made with the CLI streams
// through both; the control plane never loads the runtime identity, and
// the identity the client pins is the runtime's own.
func TestChatAcrossRoles(t *testing.T) {
	dir := t.TempDir()
	sock := filepath.Join(dir, "runtime.sock")
	token := filepath.Join(dir, "runtime.token")
	if err := os.WriteFile(token, []byte(strings.Repeat("k", 44)+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	rtData, cpData := filepath.Join(dir, "runtime"), filepath.Join(dir, "control-plane")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	serve := func(w *logWatch, args ...string) <-chan int {
		exited := make(chan int, 1)
		go func() {
			exited <- cli.Run(ctx, append([]string{"serve"}, args...), strings.NewReader(""), &bytes.Buffer{}, w)
		}()
		return exited
	}

	var rtLog, cpLog logWatch
	rtExit := serve(&rtLog, "--role", "runtime", "--emulator", "--runtime-socket", sock, "--runtime-token-file", token, "--data", rtData)
	rtLog.wait(t, regexp.MustCompile(`runtime listening`), rtExit)
	cpExit := serve(&cpLog, "--role", "control-plane", "--dev", "--addr", "127.0.0.1:0", "--runtime-socket", sock,
		"--runtime-token-file", token, "--data", cpData)
	addr := cpLog.wait(t, regexp.MustCompile(`control plane listening" addr=(\S+)`), cpExit)

	t.Setenv("POLYDEV_CONFIG_DIR", filepath.Join(dir, "config"))
	t.Setenv("POLYDEV_SERVER", "http://"+addr)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	for _, step := range [][]string{args("account register --email " + newEmail()), args("link key --provider openai")} {
		if code, _, errOut := runCLI(step, "sk-roles-test\n"); code != 0 {
			t.Fatalf("%v: %d %s", step, code, errOut)
		}
	}
	code, out, errOut := runCLI(args("chat new --provider openai"), "")
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("chat new: %d %q %q", code, out, errOut)
	}
	code, out, errOut = runCLI(args("chat send "+id+" across the roles"), "")
	if want := emulator.ReplyText("across the roles", -1) + "\n"; code != 0 || out != want {
		t.Fatalf("chat send: code %d, out %q, err %q; want %q", code, out, errOut, want)
	}

	// The runtime's identity lives only in the runtime's data directory,
	// and it is what the client pinned.
	if _, err := os.Stat(filepath.Join(cpData, "runtime-identity")); !os.IsNotExist(err) {
		t.Fatalf("the control plane's data directory holds a runtime identity (%v)", err)
	}
	id2, err := runtime.LoadIdentity(filepath.Join(rtData, "runtime-identity"))
	if err != nil {
		t.Fatal(err)
	}
	if code, out, _ := runCLI(args("chat trust-runtime"), ""); code != 0 || !strings.Contains(out, id2.Public()) {
		t.Fatalf("trust-runtime: code %d, out %q; want the runtime's identity %s", code, out, id2.Public())
	}
	if strings.Contains(cpLog.buf.String(), "runtime ready") {
		t.Fatal("the control plane started a runtime of its own")
	}

	cancel()
	for _, ch := range []<-chan int{cpExit, rtExit} {
		if code := <-ch; code != 0 {
			t.Errorf("serve exited with %d after the interrupt", code)
		}
	}
	if _, err := os.Stat(sock); !os.IsNotExist(err) {
		t.Errorf("the runtime socket was left behind (%v)", err)
	}
}
