package client_test

import (
	"bytes"
	"context"
	"net"
	"os/exec"
	"path/filepath"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"polydev/internal/cli"
	"polydev/internal/provider/emulator"
	"polydev/internal/testenv"
)

// lockedBuffer is a bytes.Buffer safe for a writer and a reader.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}
func (l *lockedBuffer) String() string { l.mu.Lock(); defer l.mu.Unlock(); return l.b.String() }

// startServe runs the polydev binary's `serve --dev` on addr and waits
// until it answers.
func startServe(t *testing.T, bin, data, addr string) *exec.Cmd {
	t.Helper()
	cmd := exec.Command(bin, "serve", "--dev", "--data", data, "--addr", addr)
	var log lockedBuffer
	cmd.Stdout, cmd.Stderr = &log, &log
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { cmd.Process.Kill(); cmd.Wait() })
	for deadline := time.Now().Add(60 * time.Second); time.Now().Before(deadline); time.Sleep(50 * time.Millisecond) {
		if c, err := net.Dial("tcp", addr); err == nil {
			c.Close()
			return cmd
		}
	}
	t.Fatalf("serve did not start:\n%s", log.String())
	return nil
}

// TestServerKilledMidStream: `kill -9` of the server while an answer
// streams, then a restart, leaves the prompt and an answer marked
// incomplete — and the conversation goes on.
func TestServerKilledMidStream(t *testing.T) {
	gobin, err := exec.LookPath("go")
	if err != nil {
		testenv.Missing(t, "the go command, to build the polydev binary for a crash test")
	}
	dir := t.TempDir()
	bin := filepath.Join(dir, "polydev")
	build := exec.Command(gobin, "build", "-o", bin, "./cmd/polydev")
	build.Dir = testenv.RepoRoot(t)
	if out, err := build.CombinedOutput(); err != nil {
		t.Fatalf("build: %v\n%s", err, out)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	data := filepath.Join(dir, "data")
	srv := startServe(t, bin, data, addr)

	t.Setenv("POLYDEV_CONFIG_DIR", filepath.Join(dir, "config"))
	t.Setenv("POLYDEV_SERVER", "http://"+addr)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	for _, step := range [][]string{args("account register --email " + newEmail()), args("link key --provider google")} {
		if code, _, errOut := runCLI(step, "sk-crash-test\n"); code != 0 {
			t.Fatalf("%v: %d %s", step, code, errOut)
		}
	}
	code, out, errOut := runCLI(args("chat new --provider google"), "")
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("chat new: %d %q %q", code, out, errOut)
	}

	// A slow answer: 5 tokens a second, 200 of them.
	var sendOut lockedBuffer
	sent := make(chan int, 1)
	go func() {
		sent <- cli.Run(context.Background(), args("chat send --model gemini-x+tps=5;tokens=200 "+id+" the crash prompt"),
			strings.NewReader(""), &sendOut, &bytes.Buffer{})
	}()
	for deadline := time.Now().Add(30 * time.Second); !strings.Contains(sendOut.String(), "crash prompt"); time.Sleep(20 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatalf("no answer streamed: %q", sendOut.String())
		}
	}
	if err := srv.Process.Signal(syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	srv.Wait()
	if code := <-sent; code == 0 {
		t.Fatalf("chat send succeeded although the server died mid-answer: %q", sendOut.String())
	}

	startServe(t, bin, data, addr)
	code, out, errOut = runCLI(args("chat show "+id), "")
	if code != 0 || !strings.Contains(out, "the crash prompt") || !strings.Contains(out, "[incomplete") {
		t.Fatalf("after the restart, chat show: code %d\n%s\n%s\nwant the prompt and an answer marked incomplete", code, out, errOut)
	}
	// The conversation goes on; the empty answer is not sent to the provider.
	code, out, errOut = runCLI(args("chat send "+id+" after the crash"), "")
	if want := emulator.ReplyText("after the crash", -1); code != 0 || strings.TrimSpace(out) != want {
		t.Fatalf("chat send after the restart: code %d, out %q, err %q; want %q", code, out, errOut, want)
	}
}
