package sandbox

import (
	"context"
	"errors"
	"reflect"
	"sync"
	"testing"
	"time"
)

func TestCleanup(t *testing.T) {
	var mu sync.Mutex
	var order []string
	step := func(name string, removed bool, err error) func(context.Context) (bool, error) {
		return func(ctx context.Context) (bool, error) {
			if ctx.Err() != nil {
				t.Errorf("step %s ran with a cancelled context", name)
			}
			mu.Lock()
			order = append(order, name)
			mu.Unlock()
			return removed, err
		}
	}
	var c Cleanup
	c.Add(ResourceStateDir, step("dir", true, nil))
	c.Add(ResourceTap, step("tap", false, nil)) // already gone: not reported
	c.Add(ResourceCgroup, step("cgroup", false, errors.New("busy")))
	c.Add(ResourceProcess, step("process", true, nil))
	if c.Len() != 4 {
		t.Fatalf("Len = %d; want 4", c.Len())
	}
	ctx, cancel := context.WithCancel(context.Background())
	cancel() // the caller's cancellation must not stop the teardown
	removed, errs := c.Run(ctx, time.Second)
	if want := []string{"process", "cgroup", "tap", "dir"}; !reflect.DeepEqual(order, want) {
		t.Errorf("ran %v; want reverse order %v", order, want)
	}
	if want := []string{ResourceProcess, ResourceStateDir}; !reflect.DeepEqual(removed, want) {
		t.Errorf("removed %v; want %v", removed, want)
	}
	if len(errs) != 1 || errs[0] != "cgroup: busy" {
		t.Errorf("errors %v; want [cgroup: busy]", errs)
	}
	// Idempotent: a second run does nothing and reports nothing.
	order = nil
	if r, e := c.Run(context.Background(), time.Second); r != nil || e != nil || order != nil {
		t.Errorf("second Run: removed %v, errors %v, ran %v; want nothing", r, e, order)
	}
	// A resource acquired after the run is undone at once.
	c.Add(ResourceOverlay, step("late", true, nil))
	if !reflect.DeepEqual(order, []string{"late"}) {
		t.Errorf("late Add ran %v; want [late] at once", order)
	}
}

func TestCleanupConcurrentRun(t *testing.T) {
	var c Cleanup
	release := make(chan struct{})
	c.Add(ResourceProcess, func(context.Context) (bool, error) { <-release; return true, nil })
	first := make(chan []string)
	go func() { r, _ := c.Run(context.Background(), time.Second); first <- r }()
	time.Sleep(10 * time.Millisecond)
	second := make(chan struct{})
	go func() { c.Run(context.Background(), time.Second); close(second) }()
	select {
	case <-second:
		t.Fatal("second Run returned before the first finished")
	case <-time.After(20 * time.Millisecond):
	}
	close(release)
	if r := <-first; len(r) != 1 {
		t.Errorf("first Run removed %v; want [process]", r)
	}
	<-second
}
