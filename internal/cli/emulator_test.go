package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"io"
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestEmulatorCommand runs `polydev emulator` on a loopback port, talks to
// it over HTTP and stops it by cancelling its context, as a signal would.
func TestEmulatorCommand(t *testing.T) {
	t.Parallel()
	keys := filepath.Join(t.TempDir(), "keys")
	if err := os.WriteFile(keys, []byte("# accepted keys\nkey-one\n\nkey-two\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	pr, pw := io.Pipe()
	var stderr strings.Builder
	done := make(chan int, 1)
	go func() {
		done <- Run(ctx, []string{"emulator", "-addr", "127.0.0.1:0", "-keys-file", keys, "-tokens", "3", "-knobs", "ttft=0"}, strings.NewReader(""), pw, &stderr)
		pw.Close()
	}()
	sc := bufio.NewScanner(pr)
	var lines []string
	for len(lines) < 6 && sc.Scan() {
		lines = append(lines, sc.Text())
	}
	go io.Copy(io.Discard, pr)
	if len(lines) < 6 {
		t.Fatalf("output %q; stderr %s", lines, stderr.String())
	}
	root, ok := strings.CutPrefix(lines[0], "polydev emulator listening on ")
	if !ok {
		t.Fatalf("first line %q", lines[0])
	}
	wantLines := []string{"openai     " + root + "/openai/v1", "anthropic  " + root + "/anthropic", "google     " + root + "/google"}
	for i, w := range wantLines {
		if strings.TrimSpace(lines[i+1]) != w {
			t.Errorf("line %d %q; want %q", i+1, lines[i+1], w)
		}
	}
	if strings.Contains(strings.Join(lines, "\n"), "key-one") {
		t.Error("the output shows a key")
	}

	chat := func(key string) (int, string) {
		req, _ := http.NewRequest("POST", root+"/anthropic/v1/messages", strings.NewReader(`{"model":"claude","max_tokens":50,"messages":[{"role":"user","content":"ping pong"}]}`))
		req.Header.Set("x-api-key", key)
		req.Header.Set("anthropic-version", "2023-06-01")
		resp, err := http.DefaultClient.Do(req)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var body struct {
			Content []struct{ Text string }
		}
		json.NewDecoder(resp.Body).Decode(&body)
		if len(body.Content) == 0 {
			return resp.StatusCode, ""
		}
		return resp.StatusCode, body.Content[0].Text
	}
	if status, text := chat("key-two"); status != 200 || text != "ping pong lorem" {
		t.Errorf("listed key: %d %q; want 200 %q (tokens=3 from the flag)", status, text, "ping pong lorem")
	}
	if status, _ := chat("key-three"); status != 401 {
		t.Errorf("unlisted key: status %d; want 401", status)
	}
	resp, err := http.Post(root+"/emulator/knobs", "application/json", strings.NewReader(`{"fail":529}`))
	if err != nil {
		t.Fatal(err)
	}
	resp.Body.Close()
	if status, _ := chat("key-one"); status != 529 {
		t.Errorf("after POST /emulator/knobs fail=529: status %d; want 529", status)
	}

	cancel()
	select {
	case code := <-done:
		if code != 0 {
			t.Errorf("exit code %d; stderr %s", code, stderr.String())
		}
	case <-time.After(20 * time.Second):
		t.Fatal("the emulator did not stop after its context ended")
	}
}

func TestEmulatorCommandBadFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args   []string
		code   int
		errOut string
	}{
		{[]string{"emulator", "-tps", "fast"}, 1, "knob tps"},
		{[]string{"emulator", "-knobs", "warp=9"}, 1, "unknown knob"},
		{[]string{"emulator", "-keys-file", "/nonexistent/keys"}, 1, "keys file"},
		{[]string{"emulator", "-addr", "127.0.0.1:99999"}, 1, "listen"},
		{[]string{"help", "emulator"}, 0, "-cut-after"},
	} {
		code, _, errOut := run(tc.args...)
		if code != tc.code || !strings.Contains(errOut, tc.errOut) {
			t.Errorf("polydev %v: code %d stderr %q; want %d ∋ %q", tc.args, code, errOut, tc.code, tc.errOut)
		}
	}
}
