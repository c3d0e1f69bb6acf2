package sandbox

import (
	"context"
	"fmt"
	"sync"
	"time"
)

// Cleanup is a stack of undo steps. Each resource pushes its step the
// moment it exists; Run pops them in reverse order. Run executes at most
// once however often it is called, is not cancelled by the caller's context
// (it uses context.WithoutCancel plus its own timeout), and keeps going
// after a failed step so that one stuck resource does not leak the rest.
type Cleanup struct {
	mu    sync.Mutex
	steps []step
	done  bool
	rep   []string
	errs  []string
	took  []string      // per-step durations of the last Run, for the log
	ch    chan struct{} // closed when Run finished
}

type step struct {
	kind string
	undo func(ctx context.Context) (removed bool, err error)
}

// Add pushes an undo step for a resource of the given kind (Resource*).
// undo reports whether it removed something (false when the resource was
// already gone) and any error. Adding after Run has started runs the step
// at once, so a resource acquired concurrently with destruction is not
// leaked.
func (c *Cleanup) Add(kind string, undo func(ctx context.Context) (removed bool, err error)) {
	c.mu.Lock()
	if c.done {
		c.mu.Unlock()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		removed, err := undo(ctx)
		c.mu.Lock()
		c.record(kind, removed, err)
		c.mu.Unlock()
		return
	}
	c.steps = append(c.steps, step{kind: kind, undo: undo})
	c.mu.Unlock()
}

// Timings returns how long each step of Run took, "kind=duration", in
// the order run.
func (c *Cleanup) Timings() []string {
	c.mu.Lock()
	defer c.mu.Unlock()
	return append([]string(nil), c.took...)
}

// Len is the number of steps not yet run.
func (c *Cleanup) Len() int {
	c.mu.Lock()
	defer c.mu.Unlock()
	return len(c.steps)
}

func (c *Cleanup) record(kind string, removed bool, err error) {
	if err != nil {
		c.errs = append(c.errs, fmt.Sprintf("%s: %v", kind, err))
	}
	if removed {
		c.rep = append(c.rep, kind)
	}
}

// Run undoes every step in reverse order and returns the kinds it removed
// and the failures. A second call waits for the first and returns nil
// slices: what was removed is reported once.
func (c *Cleanup) Run(ctx context.Context, timeout time.Duration) (removed, errs []string) {
	c.mu.Lock()
	if c.done {
		ch := c.ch
		c.mu.Unlock()
		if ch != nil {
			<-ch
		}
		return nil, nil
	}
	c.done = true
	c.ch = make(chan struct{})
	steps := c.steps
	c.steps = nil
	c.mu.Unlock()

	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), timeout)
	defer cancel()
	for i := len(steps) - 1; i >= 0; i-- {
		s := steps[i]
		t0 := time.Now()
		ok, err := s.undo(ctx)
		c.mu.Lock()
		c.record(s.kind, ok, err)
		c.took = append(c.took, fmt.Sprintf("%s=%v", s.kind, time.Since(t0).Round(100*time.Microsecond)))
		c.mu.Unlock()
	}
	c.mu.Lock()
	removed, errs = c.rep, c.errs
	c.rep, c.errs = nil, nil
	close(c.ch)
	c.mu.Unlock()
	return removed, errs
}
