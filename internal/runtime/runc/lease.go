package runc

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"sync"
	"time"

	"polydev/internal/egress/gateway"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

// errUnreachable: the worker's socket did not accept a connection, so the
// task was never sent and another container may run it.
var errUnreachable = errors.New("worker unreachable")

// Lease is a container checked out for one user. Release it.
type Lease struct {
	p       *Pool
	c       *container
	user    string
	healthy bool
	once    sync.Once
	Kind    string // how it was had: "sticky", "warm" or "cold"
}

// Run sends one request over the container's socket and streams its
// events to emit. The lease stays healthy only if the worker answered in
// full and reported that it wiped.
func (l *Lease) Run(ctx context.Context, op string, task worker.Task, emit func(worker.Event) error) error {
	c := l.c
	l.healthy = false
	dial := gateway.Direct()
	if l.p.cfg.Egress != nil {
		dial = l.p.cfg.Egress(task.Job.Egress.Port)
	}
	c.gw.Bind(task.Job.Egress.Port, dial)
	defer c.gw.Unbind()

	d := net.Dialer{Timeout: 2 * time.Second}
	conn, err := d.DialContext(ctx, "unix", c.socket())
	if err != nil {
		l.p.metrics.failures.WithLabelValues(c.provider, "task").Inc()
		return fmt.Errorf("runtime pool: connect to worker: %w: %w", errUnreachable, err)
	}
	defer conn.Close()
	stop := context.AfterFunc(ctx, func() { conn.Close() })
	defer stop()

	buf, err := json.Marshal(wire.Request{Op: op, Task: &task})
	if err != nil {
		return fmt.Errorf("runtime pool: encode task: %w", err)
	}
	buf = append(buf, '\n')
	_, err = conn.Write(buf)
	wire.Zero(buf) // it held the runtime private key
	if err != nil {
		return l.fail(ctx, fmt.Errorf("send task: %w", err))
	}
	c.uses++
	sc := bufio.NewScanner(conn)
	sc.Buffer(make([]byte, 64<<10), wire.MaxRequest)
	done := false
	for sc.Scan() {
		var r wire.Reply
		if err := json.Unmarshal(sc.Bytes(), &r); err != nil {
			return l.fail(ctx, fmt.Errorf("decode reply: %w", err))
		}
		switch {
		case r.Error != "":
			return l.fail(ctx, fmt.Errorf("worker: %s", r.Error))
		case r.Event != nil:
			if done {
				return l.fail(ctx, errors.New("event after done"))
			}
			if r.Event.Done != nil {
				done = true
			}
			if err := emit(*r.Event); err != nil {
				return err
			}
		case r.Wiped:
			if !done {
				return l.fail(ctx, errors.New("worker ended without a done event"))
			}
			l.healthy = true
			return nil
		}
	}
	return l.fail(ctx, fmt.Errorf("worker connection ended early: %v", sc.Err()))
}

func (l *Lease) fail(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	l.p.metrics.failures.WithLabelValues(l.c.provider, "task").Inc()
	return fmt.Errorf("runtime pool: %w", err)
}

// Release returns the container: to the user's sticky set if it is healthy
// and has life left, else it is destroyed. Safe to call twice.
func (l *Lease) Release() {
	l.once.Do(func() {
		p, c := l.p, l.c
		now := time.Now()
		keep := l.healthy && p.cfg.StickyIdle > 0 && c.uses < p.cfg.MaxUses && now.Sub(c.created) < p.cfg.MaxLifetime
		p.mu.Lock()
		pp := p.pool(c.provider)
		if keep && !p.closed {
			c.user, c.lastUsed = l.user, now
			pp.sticky[l.user] = append(pp.sticky[l.user], c)
			p.broadcastLocked()
			p.mu.Unlock()
			return
		}
		pp.total--
		p.broadcastLocked()
		p.kickLocked()
		p.mu.Unlock()
		reason := "retired"
		if !l.healthy {
			reason = "unhealthy"
		}
		p.destroy(c, reason)
	})
}

// Container is the id of the leased container (for probes and tests).
func (l *Lease) Container() string { return l.c.id }
