package client_test

import (
	"bytes"
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/client"
	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
	"polydev/internal/runtime"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

// The chat client against the real control plane (SQLite store, direct
// egress), the real runtime supervisor with its in-process executor, the
// real worker and provider adapters, and the provider emulator on its own
// listener, all on loopback. The emulator accepts only realAPIKey and
// answers with the prompt's words and then filler (emulator.ReplyText);
// knobs in the model name break answers on purpose.

const realAPIKey = "sk-real-server-test"

// realChatServer starts the emulator and the control plane with a runtime,
// and returns the control plane's URL and the runtime.
func realChatServer(t *testing.T) (string, *runtime.Supervisor) {
	t.Helper()
	emu := emulator.New(emulator.Options{Keys: []string{realAPIKey}})
	t.Cleanup(func() { emu.Close() })
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &http.Server{Handler: emu.Handler()}
	go esrv.Serve(eln)
	t.Cleanup(func() { esrv.Close() })
	root := "http://" + eln.Addr().String()

	st, err := sqlite.Open(context.Background(), filepath.Join(t.TempDir(), "polydev.db"), sqlite.WithMigrate())
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ex := runtime.NewInProcess(runtime.InProcess{NewProvider: registry.New, ClientFor: func(int) *http.Client { return &http.Client{} }})
	urls := map[string]string{}
	for _, p := range registry.Names {
		urls[p] = emulator.BaseURL(root, p)
	}
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, BaseURLs: urls})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := controlplane.New(controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{9}, 32), RuntimeKeys: sup, Runtime: sup, Heartbeat: 50 * time.Millisecond},
		slog.New(slog.NewTextHandler(io.Discard, nil)), web.Assets)
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
		return "http://" + a.String(), sup
	case err := <-done:
		t.Fatalf("control plane: %v", err)
	}
	return "", nil
}

func TestChatAgainstRealServer(t *testing.T) {
	url, sup := realChatServer(t)
	ctx := context.Background()
	c := client.New(url, nil)
	email := newEmail()
	mustRegister(t, c, email, testPassword)
	sess, keys := mustLogin(t, c, email, testPassword)
	state := client.NewState(filepath.Join(t.TempDir(), "config"))
	ch := client.NewChat(c, sess, keys, state)

	id, err := ch.CreateConversation(ctx, "openai", "real ✓")
	if err != nil {
		t.Fatalf("create: %v", err)
	}
	var streamed strings.Builder
	onDelta := func(s string) { streamed.WriteString(s) }
	if res, err := ch.Send(ctx, id, []byte("hi"), "", nil, onDelta); !errors.Is(err, client.ErrProviderNotLinked) || res == nil || res.PinnedIdentity == "" {
		t.Fatalf("send before linking: got %+v, %v; want ErrProviderNotLinked after pinning the runtime identity", res, err)
	}
	if _, err := client.LinkKey(ctx, c, sess, keys, "openai", []byte(realAPIKey)); err != nil {
		t.Fatalf("link: %v", err)
	}

	const prompt = "hello from the real client"
	res, err := ch.Send(ctx, id, []byte(prompt), "", nil, onDelta)
	if err != nil {
		t.Fatalf("send: %v", err)
	}
	answer := streamed.String()
	if want := emulator.ReplyText(prompt, -1); answer != want {
		t.Errorf("streamed %q; want %q", answer, want)
	}
	if res.Incomplete || !res.Stored || res.PinnedIdentity != "" || res.Usage.OutputTokens != emulator.CountTokens(answer) ||
		res.Model != "gpt-4o-mini" || res.Chunks < 2 {
		t.Errorf("result: %+v", res)
	}

	// A provider error mid-stream: the part that arrived is shown, stored
	// and marked incomplete.
	streamed.Reset()
	temp := 0.3
	_, err = ch.Send(ctx, id, []byte("please break after two words"), "gpt-4o-mini+error_after=2", &temp, onDelta)
	var ae *client.AnswerError
	if !errors.As(err, &ae) || !ae.Stored || !ae.Incomplete {
		t.Fatalf("a provider error mid-stream: got %v (%+v); want a stored, incomplete AnswerError", err, ae)
	}
	partial := streamed.String()
	if partial == "" || !strings.HasPrefix(emulator.ReplyText("please break after two words", -1), partial) {
		t.Errorf("a broken answer delivered %q; want a prefix of the reply", partial)
	}

	v, err := ch.Conversation(ctx, id)
	if err != nil {
		t.Fatalf("conversation: %v", err)
	}
	want := []struct {
		role, text string
		incomplete bool
	}{{"user", prompt, false}, {"assistant", answer, false}, {"user", "please break after two words", false}, {"assistant", partial, true}}
	if v.Title != "real ✓" || len(v.Messages) != len(want) {
		t.Fatalf("conversation: title %q, %d messages; want %q, %d", v.Title, len(v.Messages), "real ✓", len(want))
	}
	for i, w := range want {
		m := v.Messages[i]
		if m.Role != w.role || m.Text != w.text || m.Incomplete != w.incomplete || m.Err != nil {
			t.Errorf("message %d: got %s %q incomplete=%v err=%v; want %s %q incomplete=%v", i, m.Role, m.Text, m.Incomplete, m.Err, w.role, w.text, w.incomplete)
		}
	}
	list, _, err := ch.ListConversations(ctx, 10, "")
	if err != nil || len(list) != 1 || list[0].ID != id || list[0].Title != "real ✓" {
		t.Errorf("list: got %+v, %v", list, err)
	}

	// The runtime rotates its key: accepted (same identity).
	if err := sup.Rotate(); err != nil {
		t.Fatal(err)
	}
	if _, err := ch.Send(ctx, id, []byte("after rotation"), "", nil, nil); err != nil {
		t.Errorf("send after a key rotation: %v", err)
	}

	// Every provider, through its own adapter.
	for _, p := range []string{"anthropic", "google"} {
		if _, err := client.LinkKey(ctx, c, sess, keys, p, []byte(realAPIKey)); err != nil {
			t.Fatalf("link %s: %v", p, err)
		}
		pid, err := ch.CreateConversation(ctx, p, "")
		if err != nil {
			t.Fatal(err)
		}
		streamed.Reset()
		if res, err := ch.Send(ctx, pid, []byte("which provider"), "", nil, onDelta); err != nil || streamed.String() != emulator.ReplyText("which provider", -1) {
			t.Errorf("%s: got %q, %+v, %v", p, streamed.String(), res, err)
		}
	}

	if err := ch.DeleteConversation(ctx, id); err != nil {
		t.Fatalf("delete: %v", err)
	}
	if _, err := ch.Conversation(ctx, id); !errors.Is(err, client.ErrConversationNotFound) {
		t.Errorf("after delete: got %v; want ErrConversationNotFound", err)
	}
}

// TestCLIChatAgainstRealServer: the walk a new user takes, through the CLI,
// against the real control plane and runtime.
func TestCLIChatAgainstRealServer(t *testing.T) {
	url, _ := realChatServer(t)
	dir := filepath.Join(t.TempDir(), "config")
	t.Setenv("POLYDEV_CONFIG_DIR", dir)
	t.Setenv("POLYDEV_SERVER", url)
	t.Setenv("POLYDEV_PASSWORD", testPassword)
	if code, _, errOut := runCLI(args("account register --email "+newEmail()), ""); code != 0 {
		t.Fatalf("register: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(args("link key --provider anthropic"), realAPIKey+"\n"); code != 0 {
		t.Fatalf("link key: %d %s", code, errOut)
	}
	if code, _, errOut := runCLI(args("link key --provider google"), "sk-wrong\n"); code != 0 {
		t.Fatalf("link key: %d %s", code, errOut)
	}

	code, out, errOut := runCLI([]string{"chat", "new", "--provider", "anthropic", "--title", "Real CLI"}, "")
	id := strings.TrimSpace(out)
	if code != 0 || id == "" {
		t.Fatalf("chat new: %d %q %q", code, out, errOut)
	}
	_, out, _ = runCLI(args("chat new --provider google"), "")
	gid := strings.TrimSpace(out)
	for _, s := range []struct {
		args    []string
		stdin   string
		code    int
		out     string
		errPart string
	}{
		{args("chat send " + id + " hello"), "", 0, emulator.ReplyText("hello", -1) + "\n", "pinned the runtime identity"},
		{args("chat send " + id), "from stdin\n", 0, emulator.ReplyText("from stdin", -1) + "\n", ""},
		{args("chat send --model claude-sonnet-4-5+error_after=2 " + id + " break it"), "", 1, "break it\n",
			"the answer is incomplete: anthropic: overloaded"},
		{args("chat ls"), "", 0, "Real CLI", ""},
		{args("chat show " + id), "", 0, "── you", ""},
		{args("chat show " + id), "", 0, "break it\n\n── assistant · claude-sonnet-4-5+error_after=2", ""},
		{args("chat show " + id), "", 0, "break it\n[incomplete: the answer broke off here]", ""},
		{args("chat send " + gid + " q"), "", 1, "", "the provider refused the linked credential; link it again"},
		{args("chat trust-runtime"), "", 0, "pinned identity:  ", ""},
		{args("chat rm " + id), "", 0, "deleted conversation " + id, ""},
		{args("chat rm " + gid), "", 0, "deleted conversation " + gid, ""},
		{args("chat ls"), "", 0, "no conversations yet", ""},
	} {
		code, out, errOut := runCLI(s.args, s.stdin)
		if code != s.code || !strings.Contains(out, s.out) || !strings.Contains(errOut, s.errPart) {
			t.Errorf("polydev %q: got code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
				s.args, code, out, errOut, s.code, s.out, s.errPart)
		}
	}
}
