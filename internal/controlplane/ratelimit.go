package controlplane

import (
	"sync"
	"time"
)

// failureLimiter slows down guessing: each key (an account, a client
// address) may fail `free` times; after that every further attempt must
// wait a backoff that doubles with each failure, up to max. A success
// clears the key. Entries idle for an hour are forgotten.
//
// It is in memory, per process: behind a load balancer each control plane
// limits on its own, which multiplies the allowance by the number of
// instances but keeps every one of them bounded.
type failureLimiter struct {
	free int
	base time.Duration
	max  time.Duration

	mu      sync.Mutex
	entries map[string]*failures
}

type failures struct {
	count int
	until time.Time // no attempt before this
	last  time.Time
}

func newFailureLimiter(free int, base, max time.Duration) *failureLimiter {
	return &failureLimiter{free: free, base: base, max: max, entries: map[string]*failures{}}
}

// wait returns how long key must still wait before its next attempt (0:
// go ahead).
func (l *failureLimiter) wait(key string, now time.Time) time.Duration {
	l.mu.Lock()
	defer l.mu.Unlock()
	if f := l.entries[key]; f != nil && now.Before(f.until) {
		return f.until.Sub(now)
	}
	return 0
}

// fail records a failed attempt for key.
func (l *failureLimiter) fail(key string, now time.Time) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.prune(now)
	f := l.entries[key]
	if f == nil {
		f = &failures{}
		l.entries[key] = f
	}
	f.count++
	f.last = now
	if over := f.count - l.free; over > 0 {
		d := l.base << min(over-1, 30)
		if d > l.max || d <= 0 {
			d = l.max
		}
		f.until = now.Add(d)
	}
}

// succeed clears key.
func (l *failureLimiter) succeed(key string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.entries, key)
}

// prune forgets idle entries once the table has grown; called with mu held.
func (l *failureLimiter) prune(now time.Time) {
	if len(l.entries) < 10_000 {
		return
	}
	for k, f := range l.entries {
		if now.Sub(f.last) > time.Hour && !now.Before(f.until) {
			delete(l.entries, k)
		}
	}
}
