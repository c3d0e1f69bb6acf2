package runc

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"syscall"
	"time"

	gorunc "github.com/containerd/go-runc"

	"polydev/internal/egress/gateway"
	"polydev/internal/runtime"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

// PoolSize sizes one provider's pool.
type PoolSize struct {
	MinIdle  int // fresh containers kept ready; default 2
	MaxTotal int // containers at most, busy, idle and starting; default 128
}

// Config configures a Pool. Zero values take the defaults named.
type Config struct {
	// Root holds everything the pool makes on the host: runc's state
	// (Root/runc) and one directory per container (Root/c/ID). It and its
	// parents must be traversable by other users (the containers' mapped
	// uids). Default /run/polydev-runtime.
	Root string
	// Image is an image directory made by Build (holding rootfs/).
	Image string
	// Runc is the runc binary; default "runc" from PATH.
	Runc string
	// Pools sizes the pools of named providers; others get Default.
	Pools   map[string]PoolSize
	Default PoolSize
	// MaxLifetime and MaxUses end a container's life; defaults 10 min and
	// 100 tasks.
	MaxLifetime time.Duration
	MaxUses     int
	// StickyIdle is how long a container that served a user waits for
	// that same user's next request before it is destroyed; default 60 s.
	// Negative: destroy after every request.
	StickyIdle time.Duration
	// QueueWait is how long a checkout waits for a container when the
	// pool is full; QueueLen how many may wait at once. Then the checkout
	// fails with a *runtime.BusyError carrying RetryAfter. Defaults 2 s,
	// 256, 1 s.
	QueueWait  time.Duration
	QueueLen   int
	RetryAfter time.Duration
	// Limits for each container; defaults 256 MiB, 0.5 CPU, 64 pids.
	Limits Limits
	// UserNS: "auto" (default: use a user namespace if runc and the
	// kernel allow it), "on" or "off" (run the worker as an unprivileged
	// host uid instead).
	UserNS string
	// HostIDBase is the first host uid/gid used for containers; each
	// container gets its own range of 65536 ids (with a user namespace) or
	// its own single id (without). Default 1<<28.
	HostIDBase uint32
	// Egress returns the dialer for an egress proxy port; nil dials
	// directly (development).
	Egress func(port int) gateway.DialFunc
	// StartTimeout bounds a cold start; default 10 s.
	StartTimeout time.Duration
	// HealthEvery, ReconcileEvery: background checks; defaults 15 s, 60 s.
	HealthEvery    time.Duration
	ReconcileEvery time.Duration
	Log            *slog.Logger
}

func (c Config) withDefaults() Config {
	if c.Root == "" {
		c.Root = "/run/polydev-runtime"
	}
	if c.Runc == "" {
		c.Runc = "runc"
	}
	if c.Default.MinIdle == 0 {
		c.Default.MinIdle = 2
	}
	if c.Default.MaxTotal == 0 {
		c.Default.MaxTotal = 128
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = 10 * time.Minute
	}
	if c.MaxUses == 0 {
		c.MaxUses = 100
	}
	if c.StickyIdle == 0 {
		c.StickyIdle = 60 * time.Second
	}
	if c.QueueWait == 0 {
		c.QueueWait = 2 * time.Second
	}
	if c.QueueLen == 0 {
		c.QueueLen = 256
	}
	if c.RetryAfter == 0 {
		c.RetryAfter = time.Second
	}
	if c.UserNS == "" {
		c.UserNS = "auto"
	}
	if c.HostIDBase == 0 {
		c.HostIDBase = 1 << 28
	}
	if c.StartTimeout == 0 {
		c.StartTimeout = 10 * time.Second
	}
	if c.HealthEvery == 0 {
		c.HealthEvery = 15 * time.Second
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = time.Minute
	}
	if c.Log == nil {
		c.Log = slog.New(slog.DiscardHandler)
	}
	return c
}

// Pool is the runc Executor: warm pools of worker containers. New makes
// one; it must be closed.
type Pool struct {
	cfg     Config
	rc      *gorunc.Runc
	prefix  string // every container id, cgroup and directory starts with it
	rootfs  string
	log     *slog.Logger
	metrics *metrics

	mu      sync.Mutex
	userns  bool
	pools   map[string]*providerPool
	all     map[string]*container
	slots   map[int]bool
	changed chan struct{} // closed and replaced whenever a container frees up
	closed  bool

	stop chan struct{}
	kick chan struct{}
	wg   sync.WaitGroup
}

var _ runtime.Executor = (*Pool)(nil)

type providerPool struct {
	name     string
	size     PoolSize
	fresh    []*container            // never used
	sticky   map[string][]*container // idle, used by that user only
	total    int                     // starting + idle + busy
	starting int
	waiters  int
}

type container struct {
	id, provider, dir string
	slot              int
	ids               idMap
	gw                *gateway.Gateway
	created           time.Time
	uses              int
	user              string // the one user it has served, "" while fresh
	lastUsed          time.Time
	stderr            *tailBuffer
}

// New reclaims what an earlier run under cfg.Root left behind, then starts
// the background refill, health checks and reconcile. Close it.
func New(ctx context.Context, cfg Config) (*Pool, error) {
	cfg = cfg.withDefaults()
	root, err := filepath.Abs(cfg.Root)
	if err != nil {
		return nil, fmt.Errorf("runtime pool: root: %w", err)
	}
	cfg.Root = root
	rootfs := RootFS(cfg.Image)
	if _, err := os.Stat(filepath.Join(rootfs, "polydev")); err != nil {
		return nil, fmt.Errorf("runtime pool: image %s has no /polydev (run 'polydev image build runtime'): %w", cfg.Image, err)
	}
	if _, err := os.Stat(cfg.Runc); err != nil {
		if _, lerr := lookPath(cfg.Runc); lerr != nil {
			return nil, fmt.Errorf("runtime pool: runc: %w", lerr)
		}
	}
	for _, d := range []string{cfg.Root, filepath.Join(cfg.Root, "c")} {
		if err := os.MkdirAll(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime pool: %w", err)
		}
		if err := os.Chmod(d, 0o711); err != nil {
			return nil, fmt.Errorf("runtime pool: %w", err)
		}
	}
	if err := os.MkdirAll(filepath.Join(cfg.Root, "runc"), 0o700); err != nil {
		return nil, fmt.Errorf("runtime pool: %w", err)
	}
	sum := sha256.Sum256([]byte(cfg.Root))
	p := &Pool{
		cfg: cfg,
		// runc processes die with the pool's owner, so a killed owner cannot
		// leave a runc run that completes after the next start's reclaim.
		rc: &gorunc.Runc{Command: cfg.Runc, Root: filepath.Join(cfg.Root, "runc"), PdeathSignal: syscall.SIGKILL,
			// and in their own process group, so a signal to the owner's
			// group (a terminal's Ctrl-C, timeout(1)) does not cut a
			// runc delete short during shutdown.
			Setpgid: true},
		prefix:  "polydev-" + hex.EncodeToString(sum[:4]),
		rootfs:  rootfs,
		log:     cfg.Log,
		metrics: newMetrics(),
		userns:  cfg.UserNS != "off",
		pools:   map[string]*providerPool{},
		all:     map[string]*container{},
		slots:   map[int]bool{},
		changed: make(chan struct{}),
		stop:    make(chan struct{}),
		kick:    make(chan struct{}, 1),
	}
	if err := p.Reconcile(ctx); err != nil {
		return nil, err
	}
	if cfg.UserNS == "auto" {
		p.probeUserNS(ctx)
	}
	for name := range cfg.Pools {
		p.pool(name)
	}
	p.wg.Add(1)
	go p.loop()
	return p, nil
}

// probeUserNS starts one container with a user namespace; if runc or the
// kernel refuse, the pool runs workers as unprivileged host uids instead.
func (p *Pool) probeUserNS(ctx context.Context) {
	c, err := p.start(ctx, "probe")
	if err == nil {
		p.destroy(c, "probe")
		p.log.Info("runtime pool: containers use a user namespace")
		return
	}
	p.mu.Lock()
	p.userns = false
	p.mu.Unlock()
	p.log.Warn("runtime pool: no user namespace; workers run as unprivileged host uids", "err", err)
}

// UserNS reports whether containers run in a user namespace.
func (p *Pool) UserNS() bool {
	p.mu.Lock()
	defer p.mu.Unlock()
	return p.userns
}

// Prefix is the name prefix of everything this pool makes on the host.
func (p *Pool) Prefix() string { return p.prefix }

func (p *Pool) pool(provider string) *providerPool {
	pp := p.pools[provider]
	if pp == nil {
		size, ok := p.cfg.Pools[provider]
		if !ok {
			size = p.cfg.Default
		}
		if size.MaxTotal == 0 {
			size.MaxTotal = p.cfg.Default.MaxTotal
		}
		pp = &providerPool{name: provider, size: size, sticky: map[string][]*container{}}
		p.pools[provider] = pp
	}
	return pp
}

// broadcastLocked wakes every waiting checkout.
func (p *Pool) broadcastLocked() {
	close(p.changed)
	p.changed = make(chan struct{})
}

// Execute implements runtime.Executor: it runs task in a container of its
// provider's pool checked out for its user.
func (p *Pool) Execute(ctx context.Context, task worker.Task, emit func(worker.Event) error) error {
	// A container that died while idle is found when its socket refuses
	// the connection; nothing was sent, so the task goes to another one.
	for attempt := 0; ; attempt++ {
		l, err := p.Checkout(ctx, task.Job.Provider, task.Job.UserID)
		if err != nil {
			return err
		}
		err = l.Run(ctx, wire.OpTask, task, emit)
		l.Release()
		if attempt == 0 && errors.Is(err, errUnreachable) {
			p.log.Warn("runtime pool: worker unreachable, retrying in another container", "container", l.c.id)
			continue
		}
		return err
	}
}

// Checkout takes a container for user from provider's pool: one this user
// used within the sticky window, else a fresh one, else a cold start if the
// pool is below its maximum (destroying another user's idle container to
// make room if needed), else it waits in a bounded queue until QueueWait,
// then fails with a *runtime.BusyError.
func (p *Pool) Checkout(ctx context.Context, provider, user string) (*Lease, error) {
	if user == "" {
		return nil, errors.New("runtime pool: checkout needs a user")
	}
	start := time.Now()
	deadline := time.NewTimer(p.cfg.QueueWait)
	defer deadline.Stop()
	waited := false
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return nil, errors.New("runtime pool: closed")
		}
		pp := p.pool(provider)
		kind := ""
		var c *container
		if c = pp.takeSticky(user, time.Now(), p.cfg.StickyIdle); c != nil {
			kind = "sticky"
		} else if len(pp.fresh) > 0 {
			c = pp.fresh[0]
			pp.fresh = pp.fresh[1:]
			kind = "warm"
			p.kickLocked()
		} else if pp.total < pp.size.MaxTotal {
			pp.total++
			pp.starting++
			p.mu.Unlock()
			c, err := p.start(ctx, provider)
			p.mu.Lock()
			pp.starting--
			if err != nil {
				pp.total--
				p.broadcastLocked()
				p.mu.Unlock()
				p.metrics.failures.WithLabelValues(provider, "start").Inc()
				return nil, fmt.Errorf("runtime pool: cold start: %w", err)
			}
			p.mu.Unlock()
			return p.lease(c, user, "cold", start, waited), nil
		} else if old := pp.evictOther(user); old != nil {
			// The pool is full, but an idle container holds another user's
			// past context: destroy it (never reuse it) and start afresh.
			pp.total--
			p.mu.Unlock()
			p.destroy(old, "evicted")
			continue
		}
		if c != nil {
			p.mu.Unlock()
			return p.lease(c, user, kind, start, waited), nil
		}
		if pp.waiters >= p.cfg.QueueLen {
			p.mu.Unlock()
			p.metrics.busy.WithLabelValues(provider).Inc()
			return nil, &runtime.BusyError{RetryAfter: p.cfg.RetryAfter}
		}
		pp.waiters++
		ch := p.changed
		p.mu.Unlock()
		if !waited {
			waited = true
			p.metrics.waits.WithLabelValues(provider).Inc()
		}
		var err error
		select {
		case <-ch:
		case <-deadline.C:
			err = &runtime.BusyError{RetryAfter: p.cfg.RetryAfter}
			p.metrics.busy.WithLabelValues(provider).Inc()
		case <-ctx.Done():
			err = ctx.Err()
		}
		p.mu.Lock()
		pp.waiters--
		p.mu.Unlock()
		if err != nil {
			return nil, err
		}
	}
}

func (p *Pool) lease(c *container, user, kind string, start time.Time, waited bool) *Lease {
	p.metrics.checkouts.WithLabelValues(c.provider, kind).Inc()
	p.metrics.waitSeconds.WithLabelValues(c.provider).Observe(time.Since(start).Seconds())
	return &Lease{p: p, c: c, user: user, Kind: kind}
}

func (pp *providerPool) takeSticky(user string, now time.Time, idle time.Duration) *container {
	cs := pp.sticky[user]
	for len(cs) > 0 {
		c := cs[len(cs)-1]
		cs = cs[:len(cs)-1]
		if now.Sub(c.lastUsed) <= idle {
			if len(cs) == 0 {
				delete(pp.sticky, user)
			} else {
				pp.sticky[user] = cs
			}
			return c
		}
		// Expired ones are left for the loop to destroy.
		cs = append([]*container{c}, cs...)
		break
	}
	return nil
}

// evictOther removes the longest-idle container of another user.
func (pp *providerPool) evictOther(user string) *container {
	var best *container
	var bestUser string
	for u, cs := range pp.sticky {
		if u == user {
			continue
		}
		for _, c := range cs {
			if best == nil || c.lastUsed.Before(best.lastUsed) {
				best, bestUser = c, u
			}
		}
	}
	if best != nil {
		pp.removeSticky(bestUser, best)
	}
	return best
}

func (pp *providerPool) removeSticky(user string, c *container) {
	cs := pp.sticky[user]
	for i, x := range cs {
		if x == c {
			cs = append(cs[:i], cs[i+1:]...)
			break
		}
	}
	if len(cs) == 0 {
		delete(pp.sticky, user)
	} else {
		pp.sticky[user] = cs
	}
}

func (p *Pool) kickLocked() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// Close destroys every container and stops the background work. Requests
// in flight fail. Safe to call twice.
func (p *Pool) Close() error {
	p.mu.Lock()
	if p.closed {
		p.mu.Unlock()
		return nil
	}
	p.closed = true
	close(p.stop)
	p.broadcastLocked()
	p.mu.Unlock()
	p.wg.Wait()
	p.mu.Lock()
	var all []*container
	for _, c := range p.all {
		all = append(all, c)
	}
	p.mu.Unlock()
	for _, c := range all {
		p.destroy(c, "closed")
	}
	return nil
}

// Stats is a snapshot of one provider's pool.
type Stats struct {
	Provider                      string
	Total, Idle, Sticky, Starting int
	Waiters                       int
}

// Stats returns a snapshot of every pool.
func (p *Pool) Stats() []Stats {
	p.mu.Lock()
	defer p.mu.Unlock()
	var out []Stats
	for _, pp := range p.pools {
		s := Stats{Provider: pp.name, Total: pp.total, Idle: len(pp.fresh), Starting: pp.starting, Waiters: pp.waiters}
		for _, cs := range pp.sticky {
			s.Sticky += len(cs)
		}
		out = append(out, s)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Provider < out[j].Provider })
	return out
}
