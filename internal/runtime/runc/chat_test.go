package runc_test

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"net"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/google/uuid"

	"polydev/internal/crypto"
	"polydev/internal/egress/gateway"
	"polydev/internal/provider/emulator"
	"polydev/internal/runtime"
	"polydev/internal/runtime/runc"
	"polydev/internal/worker"
)

// A chat streams end to end through a runc container: the supervisor hands
// the sealed grant and its runtime key to a worker container over its
// socket; the worker opens the grant, calls the provider emulator through
// the egress gateway bound to the user's port, and streams chunks
// encrypted under the conversation key. Afterwards the provider key (a
// marker) is nowhere on the host.
func TestChatThroughContainer(t *testing.T) {
	raw := make([]byte, 12)
	rand.Read(raw)
	apiKey := "sk-marker" + hex.EncodeToString(raw)
	emu := emulator.New(emulator.Options{Keys: []string{apiKey}})
	defer emu.Close()
	srv := httptest.NewServer(emu.Handler())
	defer srv.Close()

	var mu sync.Mutex
	var ports []int
	root := newRoot(t)
	pool := newPool(t, runc.Config{Root: root, Egress: func(port int) gateway.DialFunc {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			ports = append(ports, port)
			mu.Unlock()
			return gateway.Direct()(ctx, network, addr)
		}
	}})
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: pool,
		BaseURLs: map[string]string{"openai": emulator.BaseURL(srv.URL, "openai")}})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	key, err := sup.CurrentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.ParsePublicKey(key.PublicKey)
	if err != nil {
		t.Fatal(err)
	}

	// What a client does: encrypt the prompt, build and seal the grant.
	convKey := crypto.NewKey()
	user, conv, prompt := uuid.NewString(), uuid.NewString(), uuid.NewString()
	job := worker.Job{RequestID: uuid.NewString(), UserID: user, ConversationID: conv, Provider: "openai",
		KeyID: key.ID, AssistantMessageID: uuid.NewString(), Egress: worker.Egress{Port: 10042}}
	enc, err := crypto.Seal(convKey, crypto.MessageContext(user, prompt), []byte("Say hello."))
	if err != nil {
		t.Fatal(err)
	}
	job.History = []worker.Message{{ID: prompt, Role: "user", EncryptedContent: enc}}
	keyText, err := convKey.ExportText()
	if err != nil {
		t.Fatal(err)
	}
	grant, _ := json.Marshal(worker.Grant{Version: 1, RequestID: job.RequestID, UserID: user, ConversationID: conv, PromptMessageID: prompt,
		AssistantMessageID: job.AssistantMessageID, Provider: "openai", Model: "gpt-4o-mini",
		ConversationKey: string(keyText), Credential: apiKey, ExpiresAt: time.Now().Add(5 * time.Minute)})
	if job.Grant, err = crypto.SealTo(pub, crypto.GrantContext(user, job.RequestID), grant); err != nil {
		t.Fatal(err)
	}

	var text strings.Builder
	var done *worker.Result
	err = sup.Run(ctx, job, func(ev worker.Event) error {
		if ev.Chunk != nil {
			pt, err := crypto.Open(convKey, crypto.ChunkContext(user, job.AssistantMessageID, ev.Chunk.Seq, ev.Chunk.Final), ev.Chunk.EncryptedChunk)
			if err != nil {
				t.Errorf("chunk %d does not open: %v", ev.Chunk.Seq, err)
			}
			text.Write(pt)
		}
		if ev.Done != nil {
			done = ev.Done
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if done == nil || done.Error != nil || done.Incomplete {
		t.Fatalf("done: got %+v (error %+v); want a complete answer", done, done.Error)
	}
	if text.Len() == 0 {
		t.Error("the answer is empty")
	}
	t.Logf("answer through the container: %q (%d output tokens)", text.String(), done.OutputTokens)
	mu.Lock()
	if len(ports) == 0 || ports[0] != 10042 {
		t.Errorf("egress ports dialed: got %v; want 10042", ports)
	}
	mu.Unlock()

	// The provider key, sealed in the grant, is nowhere on the host.
	dirs := []string{root, os.TempDir(), "/run", "/dev/shm", "/var/tmp"}
	tmps, _ := filepath.Glob("/proc/[0-9]*/root/tmp")
	hostTmp, _ := os.Stat("/tmp")
	for _, d := range tmps {
		if fi, err := os.Stat(d); err == nil && !os.SameFile(fi, hostTmp) {
			dirs = append(dirs, d)
		}
	}
	if hits := findMarker(t, dirs, [][]byte{[]byte(apiKey)}); len(hits) > 0 {
		t.Errorf("provider key found in %v", hits)
	}
}
