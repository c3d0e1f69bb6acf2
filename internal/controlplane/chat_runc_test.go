package controlplane_test

import (
	"os"
	"testing"

	"polydev/internal/provider/emulator"
	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/runctest"
	"polydev/internal/store"
)

// TestMain removes the runtime image the runc tests build.
func TestMain(m *testing.M) { os.Exit(runctest.Main(m)) }

// newRuncChatEnv is newChatEnv with the runtime's tasks running in runc
// containers (serve --runtime runc) instead of in-process.
func newRuncChatEnv(t *testing.T, st store.Store) *chatEnv {
	t.Helper()
	return newChatEnvWith(t, st, envOptions{executor: runctest.NewPool(t, runc.Config{})})
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
