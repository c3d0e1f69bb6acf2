package controlplane_test

import (
	"bytes"
	"log/slog"
	"net"
	"net/http"
	"os"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/controlplane"
	"polydev/internal/crypto"
	"polydev/internal/provider/emulator"
	"polydev/internal/runtime"
	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/runctest"
	"polydev/internal/store"
	"polydev/web"
)

// TestMain removes the runtime image the runc tests build.
func TestMain(m *testing.M) { os.Exit(runctest.Main(m)) }

// newRuncChatEnv is newChatEnv with the runtime's tasks running in runc
// containers (serve --runtime runc) instead of in-process.
func newRuncChatEnv(t *testing.T, st store.Store) *chatEnv {
	t.Helper()
	pool := runctest.NewPool(t, runc.Config{})
	emu := emulator.New(emulator.Options{})
	t.Cleanup(func() { emu.Close() })
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	esrv := &http.Server{Handler: emu.Handler()}
	go esrv.Serve(eln)
	t.Cleanup(func() { esrv.Close() })
	root := "http://" + eln.Addr().String()
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: pool, BaseURLs: map[string]string{
		"openai": emulator.BaseURL(root, "openai"), "anthropic": emulator.BaseURL(root, "anthropic"), "google": emulator.BaseURL(root, "google")}})
	if err != nil {
		t.Fatal(err)
	}
	logbuf := &syncBuffer{}
	cfg := controlplane.Config{Addr: "127.0.0.1:0", Dev: true, ShutdownTimeout: 5 * time.Second, Store: st,
		SessionTTL: time.Hour, PreloginSecret: bytes.Repeat([]byte{0x5a}, 32), RuntimeKeys: sup, Runtime: sup}
	srv, err := controlplane.New(cfg, slog.New(slog.NewJSONHandler(logbuf, nil)), web.Assets)
	if err != nil {
		t.Fatal(err)
	}
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	hs := &http.Server{Handler: srv.Handler()}
	go hs.Serve(ln)
	t.Cleanup(func() { hs.Close() })
	e := &chatEnv{t: t, base: "http://" + ln.Addr().String(), emu: emu, sup: sup, st: st, logbuf: logbuf}
	e.c = &apiClient{t: t, base: e.base}
	e.acct = newAccount(t, uuid.NewString()+"@example.com", "correct horse battery staple")
	if st, out, _ := e.c.call("POST", "/v1/auth/register", e.acct.body); st != 201 {
		t.Fatalf("register: %d %v", st, out)
	}
	st2, out := loginAs(t, e.c, e.acct.email, e.acct.password)
	if st2 != 200 {
		t.Fatalf("login: %d %v", st2, out)
	}
	e.c.token = out["token"].(string)
	return e
}

// The chat path end to end with every answer produced inside a runc
// container: the same client, control plane, store and emulator as
// TestChatEndToEnd, two turns per provider, on both stores.
func TestChatEndToEndInRuncContainers(t *testing.T) {
	runctest.Image(t) // build once, before the parallel subtests
	backends(t, func(t *testing.T, st store.Store) {
		e := newRuncChatEnv(t, st)
		for _, provider := range []string{"openai", "anthropic", "google"} {
			e.link(provider)
			c := e.newConversation(provider)
			prompt := "tell me about the secret-marker-" + provider + " please"
			req := e.request(c, provider, prompt, sendOpts{model: "some-model"})
			r := e.send(c, req, 0)
			want := emulator.ReplyText(prompt, -1)
			if r.status != 200 || r.done == nil || r.streamErr != nil {
				t.Fatalf("%s: send: status %d, done %+v, error %+v, body %v", provider, r.status, r.done, r.streamErr, r.errBody)
			}
			if r.text != want || !r.final || r.done.EgressPort != e.port {
				t.Fatalf("%s: streamed %q (final %v, done %+v); want %q", provider, r.text, r.final, r.done, want)
			}
			req2 := e.request(c, provider, "and again", sendOpts{model: "some-model"})
			if r2 := e.send(c, req2, 0); r2.text != emulator.ReplyText("and again", -1) {
				t.Fatalf("%s: second turn streamed %q", provider, r2.text)
			}
			ms := e.messages(c)
			if len(ms) != 4 || e.openMessage(c, ms[1]) != want || ms[1].Status != "complete" {
				t.Fatalf("%s: stored %d messages %+v", provider, len(ms), ms)
			}
		}
	})
}
