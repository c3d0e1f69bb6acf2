package runc_test

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"polydev/internal/egress/gateway"
	"polydev/internal/runtime"
	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

func echoTask(user, baseURL string, port int, history ...string) worker.Task {
	t := worker.Task{Job: worker.Job{UserID: user, Provider: "openai", AssistantMessageID: "m1", Egress: worker.Egress{Port: port}}, BaseURL: baseURL}
	for i, h := range history {
		t.Job.History = append(t.Job.History, worker.Message{ID: fmt.Sprint(i), Role: "user", EncryptedContent: h})
	}
	return t
}

func collect(ctx context.Context, l *runc.Lease, task worker.Task) ([]worker.Event, error) {
	var evs []worker.Event
	err := l.Run(ctx, wire.OpEcho, task, func(e worker.Event) error { evs = append(evs, e); return nil })
	return evs, err
}

// A request goes in over the socket, its events come back in order, and the
// container reaches the network only through the gateway bound to the
// request's egress port.
func TestEchoThroughGateway(t *testing.T) {
	var mu sync.Mutex
	var dialedPorts []int
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprint(w, "hello from upstream")
	}))
	defer upstream.Close()
	p := newPool(t, runc.Config{Egress: func(port int) gateway.DialFunc {
		return func(ctx context.Context, network, addr string) (net.Conn, error) {
			mu.Lock()
			dialedPorts = append(dialedPorts, port)
			mu.Unlock()
			return gateway.Direct()(ctx, network, addr)
		}
	}})
	ctx := context.Background()
	l, err := p.Checkout(ctx, "openai", "user-a")
	if err != nil {
		t.Fatal(err)
	}
	evs, err := collect(ctx, l, echoTask("user-a", upstream.URL, 10007, "c1", "c2"))
	l.Release()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, e := range evs {
		if e.Chunk != nil {
			got = append(got, e.Chunk.EncryptedChunk)
		}
	}
	if want := "c1|c2|hello from upstream"; strings.Join(got, "|") != want {
		t.Errorf("chunks: got %q; want %q", strings.Join(got, "|"), want)
	}
	if last := evs[len(evs)-1]; last.Done == nil || last.Done.Error != nil {
		t.Errorf("last event: got %+v; want a successful done", last)
	}
	mu.Lock()
	defer mu.Unlock()
	if len(dialedPorts) != 1 || dialedPorts[0] != 10007 {
		t.Errorf("gateway dialed through ports %v; want [10007]", dialedPorts)
	}
}

// The reuse rule: the same user gets their container back within the
// sticky window; another user never does.
func TestReuseRule(t *testing.T) {
	p := newPool(t, runc.Config{StickyIdle: time.Minute})
	ctx := context.Background()
	run := func(user string) (id, kind string) {
		t.Helper()
		l, err := p.Checkout(ctx, "openai", user)
		if err != nil {
			t.Fatal(err)
		}
		defer l.Release()
		if _, err := collect(ctx, l, echoTask(user, "", 0, "x")); err != nil {
			t.Fatal(err)
		}
		return l.Container(), l.Kind
	}
	a1, _ := run("a")
	a2, kind := run("a")
	if a1 != a2 || kind != "sticky" {
		t.Errorf("same user again: got container %s (%s); want %s (sticky)", a2, kind, a1)
	}
	b1, _ := run("b")
	if b1 == a1 {
		t.Errorf("user b got user a's container %s", a1)
	}
}

// A full pool queues checkouts and then refuses them with a BusyError.
func TestBusy(t *testing.T) {
	p := newPool(t, runc.Config{Default: runc.PoolSize{MinIdle: -1, MaxTotal: 1}, QueueWait: 300 * time.Millisecond, RetryAfter: 3 * time.Second})
	ctx := context.Background()
	l, err := p.Checkout(ctx, "openai", "a")
	if err != nil {
		t.Fatal(err)
	}
	_, err = p.Checkout(ctx, "openai", "a")
	var be *runtime.BusyError
	if !errors.As(err, &be) || !errors.Is(err, runtime.ErrBusy) || be.RetryAfter != 3*time.Second {
		t.Fatalf("checkout from a full pool: got %v; want a BusyError with RetryAfter 3s", err)
	}
	// A waiter gets the container once it is released.
	go func() { time.Sleep(100 * time.Millisecond); l.Release() }()
	l2, err := p.Checkout(ctx, "openai", "a")
	if err != nil {
		t.Fatalf("checkout after release: %v", err)
	}
	l2.Release()
}

// A sticky container whose worker died while idle is replaced: the task
// runs in another container instead of failing.
func TestDeadIdleWorkerIsReplaced(t *testing.T) {
	p := newPool(t, runc.Config{})
	ctx := context.Background()
	l, err := p.Checkout(ctx, "openai", "u")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := collect(ctx, l, echoTask("u", "", 0, "x")); err != nil {
		t.Fatal(err)
	}
	dead := l.Container()
	pid, err := l.InitPID(ctx)
	if err != nil {
		t.Fatal(err)
	}
	l.Release()
	if err := syscall.Kill(pid, syscall.SIGKILL); err != nil {
		t.Fatal(err)
	}
	time.Sleep(200 * time.Millisecond)
	var done *worker.Result
	err = p.Execute(ctx, echoTask("u", "", 0), func(e worker.Event) error {
		if e.Done != nil {
			done = e.Done
		}
		return nil
	})
	if err != nil || done == nil {
		t.Fatalf("execute after the sticky worker died: %v (done %+v); want it run elsewhere", err, done)
	}
	l2, err := p.Checkout(ctx, "openai", "u")
	if err != nil {
		t.Fatal(err)
	}
	defer l2.Release()
	if l2.Container() == dead {
		t.Errorf("the dead container %s was handed out again", dead)
	}
}
