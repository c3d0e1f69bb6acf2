package runtime_test

import (
	"context"
	"errors"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"polydev/internal/crypto"
	"polydev/internal/runtime"
	"polydev/internal/worker"
)

// recordingExecutor stands in for a sandbox: it records the tasks it was
// given and answers with one Done event, so the supervisor's own rules
// (keys, replay, rotation) can be checked apart from any worker.
type recordingExecutor struct {
	mu    sync.Mutex
	tasks []worker.Task
}

func (e *recordingExecutor) Execute(_ context.Context, task worker.Task, emit func(worker.Event) error) error {
	e.mu.Lock()
	task.RuntimeKey = append([]byte(nil), task.RuntimeKey...)
	e.tasks = append(e.tasks, task)
	e.mu.Unlock()
	return emit(worker.Event{Done: &worker.Result{MessageID: task.Job.AssistantMessageID}})
}

type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) add(d time.Duration) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.t = c.t.Add(d)
}

func newSupervisor(t *testing.T, c *clock) (*runtime.Supervisor, *recordingExecutor, *crypto.IdentityKey) {
	t.Helper()
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ex := &recordingExecutor{}
	s, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, Rotate: time.Hour, Grace: 10 * time.Minute,
		Now: c.now, BaseURLs: map[string]string{"openai": "http://127.0.0.1:1/openai/v1"}})
	if err != nil {
		t.Fatal(err)
	}
	return s, ex, id
}

func verify(t *testing.T, k runtime.KeyInfo, identity string) {
	t.Helper()
	if k.Identity != identity {
		t.Fatalf("key carries identity %q; want %q", k.Identity, identity)
	}
	st := crypto.KeyStatement{KeyID: k.ID, PublicKey: k.PublicKey, CreatedAt: k.CreatedAt, ExpiresAt: k.ExpiresAt}
	if err := crypto.VerifyKeyStatement(identity, st, k.Signature); err != nil {
		t.Fatalf("key %s does not verify: %v", k.ID, err)
	}
}

func run(s runtime.Runner, keyID, requestID string) (*worker.Result, error) {
	var res *worker.Result
	err := s.Run(context.Background(), worker.Job{RequestID: requestID, KeyID: keyID, Provider: "openai", AssistantMessageID: "a"},
		func(ev worker.Event) error { res = ev.Done; return nil })
	return res, err
}

func TestSupervisorKeysRotateAndOpen(t *testing.T) {
	t.Parallel()
	c := &clock{t: time.Unix(1_800_000_000, 0)}
	s, ex, id := newSupervisor(t, c)
	k1, err := s.CurrentKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	verify(t, k1, id.Public())
	if got, want := k1.ExpiresAt.Sub(k1.CreatedAt), 70*time.Minute; got != want {
		t.Fatalf("key lives %v; want rotate + grace = %v", got, want)
	}

	// The task carries the private key that opens grants sealed to k1.
	if _, err := run(s, k1.ID, "r1"); err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.ParsePublicKey(k1.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	env, _ := crypto.SealTo(pub, crypto.GrantContext("u", "r1"), []byte("grant"))
	priv, err := crypto.ParsePrivateKeyRecord(ex.tasks[0].RuntimeKey)
	if err != nil {
		t.Fatal(err)
	}
	if pt, err := crypto.OpenSealed(priv, crypto.GrantContext("u", "r1"), env); err != nil || string(pt) != "grant" {
		t.Fatalf("task key opened %q, %v", pt, err)
	}
	if ex.tasks[0].BaseURL != "http://127.0.0.1:1/openai/v1" {
		t.Fatalf("task base URL %q", ex.tasks[0].BaseURL)
	}

	// The same request id twice is a replay.
	if _, err := run(s, k1.ID, "r1"); !errors.Is(err, runtime.ErrReplay) {
		t.Fatalf("replayed request: got %v; want ErrReplay", err)
	}
	if _, err := run(s, "rk_nope", "r2"); !errors.Is(err, runtime.ErrUnknownKey) {
		t.Fatalf("unknown key: got %v; want ErrUnknownKey", err)
	}

	// After the rotation period a new key is handed out; the old one still
	// opens grants during the grace period, and not after.
	c.add(time.Hour)
	k2, _ := s.CurrentKey(context.Background())
	if k2.ID == k1.ID {
		t.Fatal("key not rotated after the rotation period")
	}
	verify(t, k2, id.Public())
	if _, err := run(s, k1.ID, "r3"); err != nil {
		t.Fatalf("previous key within grace: %v", err)
	}
	c.add(10 * time.Minute)
	if _, err := run(s, k1.ID, "r4"); !errors.Is(err, runtime.ErrUnknownKey) {
		t.Fatalf("previous key after grace: got %v; want ErrUnknownKey", err)
	}
	if _, err := run(s, k2.ID, "r5"); err != nil {
		t.Fatalf("current key: %v", err)
	}
}

func TestLoadIdentity(t *testing.T) {
	t.Parallel()
	path := filepath.Join(t.TempDir(), "runtime", "identity")
	a, err := runtime.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	fi, err := os.Stat(path)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("identity file mode %v, %v; want 0600", fi.Mode().Perm(), err)
	}
	b, err := runtime.LoadIdentity(path)
	if err != nil {
		t.Fatal(err)
	}
	if a.Public() != b.Public() {
		t.Fatal("reloading the identity changed it: clients' pins would break on restart")
	}
	os.Chmod(path, 0o644)
	if _, err := runtime.LoadIdentity(path); err == nil {
		t.Fatal("an identity file readable by others was accepted")
	}
}

type busyExecutor struct{}

func (busyExecutor) Execute(context.Context, worker.Task, func(worker.Event) error) error {
	return &runtime.BusyError{RetryAfter: time.Second}
}

func TestBusyDoesNotUseUpTheRequest(t *testing.T) {
	t.Parallel()
	id, _ := crypto.GenerateIdentity()
	s, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: busyExecutor{}})
	if err != nil {
		t.Fatal(err)
	}
	k, _ := s.CurrentKey(context.Background())
	for i := range 2 {
		if _, err := run(s, k.ID, "same"); !errors.Is(err, runtime.ErrBusy) {
			t.Fatalf("attempt %d: got %v; want ErrBusy (not a replay)", i+1, err)
		}
	}
	if _, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: busyExecutor{}, Rotate: time.Minute, Grace: time.Hour}); err == nil {
		t.Fatal("a rotation period shorter than the grace period was accepted")
	}
}

// blockingExecutor hands each task to the test and ends it when told.
type blockingExecutor struct {
	tasks   chan worker.Task
	release chan struct{}
}

func (e *blockingExecutor) Execute(_ context.Context, task worker.Task, emit func(worker.Event) error) error {
	e.tasks <- task
	<-e.release
	return emit(worker.Event{Done: &worker.Result{MessageID: task.Job.AssistantMessageID}})
}

// TestRetiredKeyOutlivesItsTasks: a task run in this process holds the
// parsed runtime key itself; rotating it out of use does not wipe it under
// the task, and it is wiped once the task ends.
func TestRetiredKeyOutlivesItsTasks(t *testing.T) {
	id, err := crypto.GenerateIdentity()
	if err != nil {
		t.Fatal(err)
	}
	ex := &blockingExecutor{tasks: make(chan worker.Task), release: make(chan struct{})}
	s, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, BaseURLs: map[string]string{"openai": "http://127.0.0.1:1"}})
	if err != nil {
		t.Fatal(err)
	}
	k, err := s.CurrentKey(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	pub, err := crypto.ParsePublicKey(k.PublicKey)
	if err != nil {
		t.Fatal(err)
	}
	gctx := crypto.GrantContext("u", "r")
	sealed, err := crypto.SealTo(pub, gctx, []byte("grant"))
	if err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() {
		done <- s.Run(context.Background(), worker.Job{RequestID: "r", KeyID: k.ID, Provider: "openai"}, func(worker.Event) error { return nil })
	}()
	task := <-ex.tasks
	if task.Key == nil {
		t.Fatal("an in-process task got no parsed key")
	}
	// Two rotations: the task's key is first previous, then retired.
	for range 2 {
		if err := s.Rotate(); err != nil {
			t.Fatal(err)
		}
	}
	if pt, err := crypto.OpenSealed(task.Key, gctx, sealed); err != nil || string(pt) != "grant" {
		t.Fatalf("the task's key after it was retired: %q, %v; want it usable until the task ends", pt, err)
	}
	close(ex.release)
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	if _, err := crypto.OpenSealed(task.Key, gctx, sealed); err == nil {
		t.Fatal("the retired key still opens grants after its last task ended; want it wiped")
	}
}
