package remote_test

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"net/http"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/crypto"
	"polydev/internal/runtime"
	"polydev/internal/runtime/remote"
	"polydev/internal/worker"
)

// chunkExecutor streams n chunks then a Done, or fails with err.
type chunkExecutor struct {
	n   int
	err error
}

func (e chunkExecutor) Execute(ctx context.Context, task worker.Task, emit func(worker.Event) error) error {
	if e.err != nil {
		return e.err
	}
	for i := range e.n {
		if err := emit(worker.Event{Chunk: &worker.Chunk{Seq: uint64(i), EncryptedChunk: "c"}}); err != nil {
			return err
		}
	}
	return emit(worker.Event{Done: &worker.Result{MessageID: task.Job.AssistantMessageID, OutputTokens: e.n}})
}

func serve(t *testing.T, ex runtime.Executor, token string) (*runtime.Supervisor, string) {
	t.Helper()
	id, _ := crypto.GenerateIdentity()
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(t.TempDir(), "runtime.sock")
	ln, err := net.Listen("unix", sock)
	if err != nil {
		t.Fatal(err)
	}
	srv := &http.Server{Handler: remote.Handler(sup, token, slog.New(slog.DiscardHandler))}
	go srv.Serve(ln)
	t.Cleanup(func() { srv.Close() })
	return sup, sock
}

func TestRemoteRoundTrip(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("t", remote.MinTokenLen)
	sup, sock := serve(t, chunkExecutor{n: 3}, token)
	c := remote.NewClient(sock, token)
	ctx := context.Background()
	k, err := c.CurrentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	want, _ := sup.CurrentKey(ctx)
	if k != want {
		t.Fatalf("key over the socket %+v; want %+v", k, want)
	}
	var chunks int
	var done *worker.Result
	err = c.Run(ctx, worker.Job{RequestID: "r1", KeyID: k.ID, AssistantMessageID: "m"}, func(ev worker.Event) error {
		if ev.Chunk != nil {
			chunks++
		}
		if ev.Done != nil {
			done = ev.Done
		}
		return nil
	})
	if err != nil || chunks != 3 || done == nil || done.OutputTokens != 3 || done.MessageID != "m" {
		t.Fatalf("run: %d chunks, done %+v, err %v; want 3 chunks and a result", chunks, done, err)
	}
	// Errors keep their meaning across the socket.
	if err := c.Run(ctx, worker.Job{RequestID: "r1", KeyID: k.ID}, func(worker.Event) error { return nil }); !errors.Is(err, runtime.ErrReplay) {
		t.Fatalf("replay over the socket: %v", err)
	}
	if err := c.Run(ctx, worker.Job{RequestID: "r2", KeyID: "rk_x"}, func(worker.Event) error { return nil }); !errors.Is(err, runtime.ErrUnknownKey) {
		t.Fatalf("unknown key over the socket: %v", err)
	}
}

func TestRemoteBusyAndAuth(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("s", remote.MinTokenLen)
	_, sock := serve(t, chunkExecutor{err: &runtime.BusyError{RetryAfter: 3 * time.Second}}, token)
	ctx := context.Background()
	k, err := remote.NewClient(sock, token).CurrentKey(ctx)
	if err != nil {
		t.Fatal(err)
	}
	var busy *runtime.BusyError
	err = remote.NewClient(sock, token).Run(ctx, worker.Job{RequestID: "r", KeyID: k.ID}, func(worker.Event) error { return nil })
	if !errors.As(err, &busy) || busy.RetryAfter != 3*time.Second {
		t.Fatalf("busy over the socket: %v; want BusyError with 3s", err)
	}
	if _, err := remote.NewClient(sock, token+"x").CurrentKey(ctx); err == nil {
		t.Fatal("a wrong token was accepted")
	}
}

// untilCancelled streams chunks until its context ends, then reports the
// partial answer, as a worker does.
type untilCancelled struct{}

func (untilCancelled) Execute(ctx context.Context, task worker.Task, emit func(worker.Event) error) error {
	for i := 0; ; i++ {
		select {
		case <-ctx.Done():
			return emit(worker.Event{Done: &worker.Result{MessageID: task.Job.AssistantMessageID, Incomplete: true,
				Error: &worker.Error{Kind: "cancelled"}, OutputTokens: i}})
		case <-time.After(10 * time.Millisecond):
			if err := emit(worker.Event{Chunk: &worker.Chunk{Seq: uint64(i), EncryptedChunk: "c"}}); err != nil {
				return err
			}
		}
	}
}

// TestRemoteCancelKeepsThePartialAnswer: a caller that gives up mid-stream
// still receives the job's last event, so the partial answer is stored.
func TestRemoteCancelKeepsThePartialAnswer(t *testing.T) {
	t.Parallel()
	token := strings.Repeat("c", remote.MinTokenLen)
	_, sock := serve(t, untilCancelled{}, token)
	c := remote.NewClient(sock, token)
	k, err := c.CurrentKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	var chunks int
	var done *worker.Result
	err = c.Run(ctx, worker.Job{RequestID: "r-cancel", KeyID: k.ID, AssistantMessageID: "m"}, func(ev worker.Event) error {
		if ev.Chunk != nil {
			if chunks++; chunks == 3 {
				cancel()
			}
		}
		if ev.Done != nil {
			done = ev.Done
		}
		return nil
	})
	if err != nil || done == nil || !done.Incomplete || done.Error == nil || done.Error.Kind != "cancelled" {
		t.Fatalf("after cancelling: err %v, done %+v; want the partial answer's result", err, done)
	}
}
