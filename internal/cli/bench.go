package cli

import (
	"context"
	"fmt"
	"math/rand/v2"
	"sort"
	"strings"
	"sync"
	"time"
)

// benchmarks run by `polydev bench <name>`.
func benchmarks() map[string]func(ctx context.Context, e env, args []string) error {
	return map[string]func(ctx context.Context, e env, args []string) error{
		"vm":   runBenchVM,
		"pool": runBenchPool,
		"chat": runBenchChatAny,
	}
}

// runBenchChatAny measures the chat relay in this process (the default),
// or the runc runtime with --runtime runc.
func runBenchChatAny(ctx context.Context, e env, args []string) error {
	for i, a := range args {
		if a == "--runtime=runc" || a == "-runtime=runc" || (a == "--runtime" || a == "-runtime") && i+1 < len(args) && args[i+1] == "runc" {
			return runBenchChatRunc(ctx, e, args)
		}
	}
	return runBenchChat(ctx, e, args)
}

func runBench(ctx context.Context, e env, args []string) error {
	bs := benchmarks()
	var names []string
	for n := range bs {
		names = append(names, n)
	}
	sort.Strings(names)
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" {
		fmt.Fprintf(e.stderr, "Usage: polydev bench <%s> [flags]\n\nMeasures a component on this host; 'polydev bench <name> -h' for its flags.\n", strings.Join(names, "|"))
		if len(args) == 0 {
			return errUsage
		}
		return nil
	}
	b, ok := bs[args[0]]
	if !ok {
		fmt.Fprintf(e.stderr, "polydev bench: unknown benchmark %q (have: %s)\n", args[0], strings.Join(names, ", "))
		return errUsage
	}
	return b(ctx, e, args[1:])
}

// percentile returns the nearest-rank p-th percentile of ds, in
// milliseconds with microsecond resolution.
func percentile(ds []time.Duration, p float64) float64 {
	if len(ds) == 0 {
		return 0
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	rank := int(p/100*float64(len(s)) + 0.999999)
	if rank < 1 {
		rank = 1
	}
	if rank > len(s) {
		rank = len(s)
	}
	return float64(s[rank-1].Microseconds()) / 1000
}

// phase collects one measured window's figures.
type phase struct {
	mu         sync.Mutex
	ttfb       []time.Duration
	errors     int
	firstError string
}

func (p *phase) ok(d time.Duration) {
	p.mu.Lock()
	p.ttfb = append(p.ttfb, d)
	p.mu.Unlock()
}

func (p *phase) fail(err error) {
	p.mu.Lock()
	p.errors++
	if p.firstError == "" {
		p.firstError = err.Error()
	}
	p.mu.Unlock()
}

// spreadLoop runs n users, each calling once in a loop, and records in p
// what the calls that start inside the measured window return.
//
// Independent users do not all press enter in the same millisecond: with a
// warm-up, user i starts at a random moment within it, so arrivals spread
// over time as they do with n streams under way, and the window opens
// after it, when every user has started. With none (--burst), every user
// starts at once and, answers being of one length, keeps the same rhythm:
// arrivals come in waves of n — the worst case for queueing, reported
// separately. The window lasts window; a call under way when it closes
// finishes and counts.
func spreadLoop(ctx context.Context, n int, warmup, window time.Duration, p *phase, once func(i int) (time.Duration, error)) {
	start := time.Now()
	open, end := start.Add(warmup), start.Add(warmup+window)
	var wg sync.WaitGroup
	for i := range n {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if warmup > 0 {
				select {
				case <-time.After(rand.N(warmup)):
				case <-ctx.Done():
					return
				}
			}
			for {
				t := time.Now()
				if !t.Before(end) || ctx.Err() != nil {
					return
				}
				d, err := once(i)
				switch {
				case t.Before(open):
				case err != nil:
					p.fail(err)
				default:
					p.ok(d)
				}
			}
		}()
	}
	wg.Wait()
}
