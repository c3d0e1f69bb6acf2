package runtime

import (
	"context"
	"net/http"
	"time"

	"polydev/internal/provider"
	"polydev/internal/worker"
)

// InProcess runs tasks in this process: the development default, and the
// reference the container executor is tested against. Plaintext then lives
// in the supervisor's memory for the length of a request.
type InProcess struct {
	// NewProvider builds adapters (registry.New in production).
	NewProvider func(name string, cfg provider.Config) (provider.Provider, error)
	// ClientFor returns the HTTP client that leaves through egress port.
	ClientFor func(port int) *http.Client
	// Limit caps concurrent tasks (0: 128); a task waits at most Wait
	// (0: 2 s) for a slot, then fails with a *BusyError.
	Limit int
	Wait  time.Duration

	slots chan struct{}
}

var _ Executor = (*InProcess)(nil)

// NewInProcess returns a ready InProcess executor.
func NewInProcess(e InProcess) *InProcess {
	if e.Limit <= 0 {
		e.Limit = 128
	}
	if e.Wait <= 0 {
		e.Wait = 2 * time.Second
	}
	e.slots = make(chan struct{}, e.Limit)
	return &e
}

// Execute implements Executor.
func (e *InProcess) Execute(ctx context.Context, task worker.Task, emit func(worker.Event) error) error {
	timer := time.NewTimer(e.Wait)
	defer timer.Stop()
	select {
	case e.slots <- struct{}{}:
	case <-timer.C:
		clear(task.RuntimeKey)
		return &BusyError{RetryAfter: time.Second}
	case <-ctx.Done():
		clear(task.RuntimeKey)
		return ctx.Err()
	}
	defer func() { <-e.slots }()
	return worker.RunWith(ctx, task, worker.Deps{NewProvider: e.NewProvider, Client: e.ClientFor(task.Job.Egress.Port)}, emit)
}
