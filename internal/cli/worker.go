package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"runtime/debug"
	"sync"
	"time"

	"golang.org/x/sys/unix"

	"polydev/internal/egress/gateway"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

func runWorker(ctx context.Context, e env, args []string) error {
	if len(args) > 0 && args[0] == "probe" {
		return runProbe(ctx, e, args[1:])
	}
	fs := newFlagSet(e, "worker [flags]", `
The program inside a runtime container (not for direct use). It listens on a
unix socket, reads one request per connection, runs it, streams the events
back as JSON lines, and wipes what the request held. Its only way to the
network is the egress gateway socket.`)
	fd := fs.Int("listen-fd", wire.WorkerFD, "listening unix socket handed in by the supervisor")
	sock := fs.String("socket", "", "listen on this unix socket path instead of --listen-fd")
	gw := fs.String("gateway", wire.GatewaySocket, "egress gateway socket")
	tmp := fs.String("tmp", "/tmp", "the tmpfs emptied after every request")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	if err := hardenProcess(); err != nil {
		return err
	}
	var ln net.Listener
	var err error
	if *sock != "" {
		_ = os.Remove(*sock)
		if ln, err = net.Listen("unix", *sock); err != nil {
			return fmt.Errorf("listen: %w", err)
		}
		if err := os.Chmod(*sock, 0o600); err != nil {
			return err
		}
	} else {
		f := os.NewFile(uintptr(*fd), "worker.sock")
		if ln, err = net.FileListener(f); err != nil {
			return fmt.Errorf("listen fd %d: %w", *fd, err)
		}
		f.Close()
	}
	defer ln.Close()
	go func() { <-ctx.Done(); ln.Close() }()
	w := &workerServer{client: gateway.Client(*gw), tmp: *tmp, log: log}
	for {
		conn, err := ln.Accept()
		if err != nil {
			if ctx.Err() != nil {
				return nil
			}
			return fmt.Errorf("accept: %w", err)
		}
		// One request at a time: a container serves one request.
		w.serve(ctx, conn)
	}
}

// hardenProcess makes the worker undumpable (no ptrace by its own uid, no
// /proc/self/mem or environ for others, no core) and disables core files.
func hardenProcess() error {
	if err := unix.Prctl(unix.PR_SET_DUMPABLE, 0, 0, 0, 0); err != nil {
		return fmt.Errorf("prctl dumpable: %w", err)
	}
	if err := unix.Setrlimit(unix.RLIMIT_CORE, &unix.Rlimit{}); err != nil {
		return fmt.Errorf("rlimit core: %w", err)
	}
	return nil
}

type workerServer struct {
	client *http.Client
	tmp    string
	log    *slog.Logger
	mu     sync.Mutex
	uses   int
}

func (w *workerServer) serve(ctx context.Context, conn net.Conn) {
	defer conn.Close()
	req, line, err := wire.ReadRequest(conn)
	defer wire.Zero(line)
	enc := json.NewEncoder(conn)
	if err != nil {
		_ = enc.Encode(wire.Reply{Error: err.Error()})
		return
	}
	switch req.Op {
	case wire.OpPing:
		_ = enc.Encode(wire.Reply{OK: true, Uses: w.uses})
		return
	case wire.OpTask, wire.OpEcho:
	default:
		_ = enc.Encode(wire.Reply{Error: fmt.Sprintf("unknown op %q", req.Op)})
		return
	}
	if req.Task == nil {
		_ = enc.Encode(wire.Reply{Error: "no task"})
		return
	}
	w.uses++
	task := *req.Task
	// The supervisor closing the connection cancels the request.
	rctx, cancel := context.WithCancel(ctx)
	go func() {
		var b [1]byte
		_, _ = conn.Read(b[:])
		cancel()
	}()
	emit := func(ev worker.Event) error { return enc.Encode(wire.Reply{Event: &ev}) }
	if req.Op == wire.OpEcho {
		err = echoTask(rctx, task, w.client, emit)
	} else {
		err = runTask(rctx, task, w.client, emit)
	}
	cancel()
	if err != nil {
		w.log.Warn("worker: task ended with an error", "err", err)
	}
	wipeTask(&task, req)
	w.client.CloseIdleConnections()
	w.emptyTmp()
	// One collection, then the freed heap goes back to the kernel
	// (madvdontneed: it reads as zeros when touched again). FreeOSMemory
	// runs the collection itself.
	debug.FreeOSMemory()
	_ = enc.Encode(wire.Reply{Wiped: true})
}

// wipeTask zeroes the key material of a task; strings (the sealed grant,
// ciphertexts) cannot be zeroed in Go and hold no plaintext.
func wipeTask(t *worker.Task, req *wire.Request) {
	wire.Zero(t.RuntimeKey)
	t.RuntimeKey = nil
	if req.Task != nil {
		wire.Zero(req.Task.RuntimeKey)
		req.Task = nil
	}
}

// emptyTmp removes everything under the tmpfs.
func (w *workerServer) emptyTmp() {
	ents, err := os.ReadDir(w.tmp)
	if err != nil {
		return
	}
	for _, e := range ents {
		_ = os.RemoveAll(filepath.Join(w.tmp, e.Name()))
	}
}

// echoTask answers without a provider: each history ciphertext comes back
// as a chunk, then the body at BaseURL fetched through the gateway.
func echoTask(ctx context.Context, task worker.Task, client *http.Client, emit func(worker.Event) error) error {
	start := time.Now()
	var seq uint64
	for _, m := range task.Job.History {
		if err := emit(worker.Event{Chunk: &worker.Chunk{Seq: seq, EncryptedChunk: m.EncryptedContent}}); err != nil {
			return err
		}
		seq++
	}
	res := &worker.Result{MessageID: task.Job.AssistantMessageID, EgressPort: task.Job.Egress.Port, Model: "echo"}
	if task.BaseURL != "" {
		if err := streamURL(ctx, client, task.BaseURL, func(b []byte) error {
			err := emit(worker.Event{Chunk: &worker.Chunk{Seq: seq, EncryptedChunk: string(b)}})
			seq++
			return err
		}); err != nil {
			res.Error = &worker.Error{Kind: "upstream", Message: err.Error()}
			res.Incomplete = true
		}
	}
	res.DurationMS = time.Since(start).Milliseconds()
	return emit(worker.Event{Done: res})
}

// streamURL GETs url through client and hands each piece of the body to
// fn as it arrives.
func streamURL(ctx context.Context, client *http.Client, url string, fn func([]byte) error) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := client.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return errors.New(resp.Status)
	}
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if err := fn(buf[:n]); err != nil {
				return err
			}
		}
		if err == io.EOF {
			return nil
		}
		if err != nil {
			return err
		}
	}
}
