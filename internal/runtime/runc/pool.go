package runc

import (
	"bufio"
	"context"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sort"
	"strings"
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
	l, err := p.Checkout(ctx, task.Job.Provider, task.Job.UserID)
	if err != nil {
		return err
	}
	defer l.Release()
	return l.Run(ctx, wire.OpTask, task, emit)
}

// Lease is a container checked out for one user. Release it.
type Lease struct {
	p       *Pool
	c       *container
	user    string
	healthy bool
	once    sync.Once
	Kind    string // how it was had: "sticky", "warm" or "cold"
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
		return fmt.Errorf("runtime pool: connect to worker: %w", err)
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

// socket is the worker's socket on the host.
func (c *container) socket() string { return filepath.Join(c.dir, "worker.sock") }

// listenFile creates a listening unix socket at path (mode 0600) and
// returns it as a file to hand to the container; the socket stays on disk
// when the file is closed.
func listenFile(path string) (*os.File, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	f, err := ln.File()
	if err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	return f, nil
}

// Container is the id of the leased container (for probes and tests).
func (l *Lease) Container() string { return l.c.id }

func (p *Pool) kickLocked() {
	select {
	case p.kick <- struct{}{}:
	default:
	}
}

// start makes, starts and health-checks one container.
func (p *Pool) start(ctx context.Context, provider string) (c *container, err error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.StartTimeout)
	defer cancel()
	p.mu.Lock()
	slot := 0
	for p.slots[slot] {
		slot++
	}
	p.slots[slot] = true
	userns := p.userns
	p.mu.Unlock()

	id := p.prefix + "-" + randomHex(6)
	c = &container{id: id, provider: provider, dir: filepath.Join(p.cfg.Root, "c", id), slot: slot, created: time.Now(), stderr: &tailBuffer{}}
	if userns {
		c.ids = idMap{enabled: true, hostID: p.cfg.HostIDBase + uint32(slot)*idRange}
	} else {
		c.ids = idMap{hostID: p.cfg.HostIDBase + uint32(slot)}
	}
	p.mu.Lock()
	p.all[id] = c
	p.mu.Unlock()
	defer func() {
		if err != nil {
			p.destroy(c, "start failed")
		}
	}()
	uid := c.ids.hostWorkerID()
	for _, d := range []struct {
		path string
		mode os.FileMode
		own  bool
	}{{c.dir, 0o711, false}, {filepath.Join(c.dir, "egress"), 0o700, true}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, err
		}
		if d.own {
			if err := os.Chown(d.path, uid, uid); err != nil {
				return nil, err
			}
		}
	}
	c.gw, err = gateway.Listen(filepath.Join(c.dir, "egress", "egress.sock"), uid, uid, p.log.With("container", id))
	if err != nil {
		return nil, err
	}
	spec := containerSpec(id, p.rootfs, c.dir, "/"+id, p.cfg.Limits, c.ids)
	sb, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "config.json"), sb, 0o600); err != nil {
		return nil, err
	}
	// The worker's socket is made here and handed in as fd 3: the worker
	// gets no writable host directory, and only root can connect (0600).
	lnFile, err := listenFile(c.socket())
	if err != nil {
		return nil, err
	}
	stdio, err := newStdio(c.stderr)
	if err != nil {
		lnFile.Close()
		return nil, err
	}
	_, err = p.rc.Run(ctx, id, c.dir, &gorunc.CreateOpts{Detach: true, IO: stdio, ExtraFiles: []*os.File{lnFile}})
	stdio.closeChildEnds()
	lnFile.Close()
	if err != nil {
		return nil, fmt.Errorf("runc run: %w: %s", err, c.stderr.String())
	}
	if err := p.waitReady(ctx, c); err != nil {
		return nil, fmt.Errorf("worker not ready: %w: %s", err, c.stderr.String())
	}
	p.metrics.startSeconds.WithLabelValues(provider).Observe(time.Since(t0).Seconds())
	return c, nil
}

func (p *Pool) waitReady(ctx context.Context, c *container) error {
	sock := c.socket()
	delay := time.Millisecond
	for {
		if _, err := os.Stat(sock); err == nil {
			if err := ping(ctx, sock); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

// ping asks the worker at sock whether it is alive.
func ping(ctx context.Context, sock string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(`{"op":"ping"}` + "\n")); err != nil {
		return err
	}
	var r wire.Reply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("ping: %s", r.Error)
	}
	return nil
}

// destroy removes a container and everything it had on the host. Safe for
// a container that is half made.
func (p *Pool) destroy(c *container, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.rc.Delete(ctx, c.id, &gorunc.DeleteOpts{Force: true}); err != nil && !strings.Contains(err.Error(), "does not exist") {
		p.log.Warn("runtime pool: runc delete failed", "container", c.id, "err", err)
	}
	if c.gw != nil {
		_ = c.gw.Close()
	}
	removeCgroups(c.id, p.log)
	if err := os.RemoveAll(c.dir); err != nil {
		p.log.Warn("runtime pool: remove container dir failed", "container", c.id, "err", err)
	}
	p.mu.Lock()
	delete(p.all, c.id)
	delete(p.slots, c.slot)
	p.mu.Unlock()
	p.metrics.destroyed.WithLabelValues(c.provider, reason).Inc()
	p.log.Debug("runtime pool: container destroyed", "container", c.id, "provider", c.provider, "reason", reason, "uses", c.uses)
}

// loop refills pools, expires sticky and old containers, checks health and
// reconciles, until Close.
func (p *Pool) loop() {
	defer p.wg.Done()
	tick := time.NewTicker(250 * time.Millisecond)
	defer tick.Stop()
	lastHealth, lastReconcile := time.Now(), time.Now()
	ctx := context.Background()
	for {
		select {
		case <-p.stop:
			return
		case <-tick.C:
		case <-p.kick:
		}
		p.expire()
		p.refill(ctx)
		if time.Since(lastHealth) >= p.cfg.HealthEvery {
			lastHealth = time.Now()
			p.healthCheck(ctx)
		}
		if time.Since(lastReconcile) >= p.cfg.ReconcileEvery {
			lastReconcile = time.Now()
			if err := p.Reconcile(ctx); err != nil {
				p.log.Warn("runtime pool: reconcile failed", "err", err)
			}
		}
	}
}

// expire destroys sticky containers past the idle window and idle ones past
// their lifetime.
func (p *Pool) expire() {
	now := time.Now()
	var gone []*container
	p.mu.Lock()
	for _, pp := range p.pools {
		for u, cs := range pp.sticky {
			for _, c := range cs {
				if now.Sub(c.lastUsed) > p.cfg.StickyIdle || now.Sub(c.created) > p.cfg.MaxLifetime {
					pp.removeSticky(u, c)
					pp.total--
					gone = append(gone, c)
				}
			}
		}
		keep := pp.fresh[:0]
		for _, c := range pp.fresh {
			if now.Sub(c.created) > p.cfg.MaxLifetime {
				pp.total--
				gone = append(gone, c)
			} else {
				keep = append(keep, c)
			}
		}
		pp.fresh = keep
	}
	if len(gone) > 0 {
		p.broadcastLocked()
	}
	p.mu.Unlock()
	for _, c := range gone {
		p.destroy(c, "expired")
	}
}

// refill starts containers until each pool has MinIdle fresh ones (within
// its maximum), one at a time.
func (p *Pool) refill(ctx context.Context) {
	for {
		p.mu.Lock()
		if p.closed {
			p.mu.Unlock()
			return
		}
		var pp *providerPool
		names := make([]string, 0, len(p.pools))
		for n := range p.pools {
			names = append(names, n)
		}
		sort.Strings(names)
		for _, n := range names {
			x := p.pools[n]
			if len(x.fresh)+x.starting < x.size.MinIdle && x.total < x.size.MaxTotal {
				pp = x
				break
			}
		}
		if pp == nil {
			p.mu.Unlock()
			return
		}
		pp.total++
		pp.starting++
		p.mu.Unlock()
		c, err := p.start(ctx, pp.name)
		p.mu.Lock()
		pp.starting--
		if err != nil || p.closed {
			pp.total--
			p.mu.Unlock()
			if err != nil {
				p.metrics.failures.WithLabelValues(pp.name, "start").Inc()
				p.log.Warn("runtime pool: refill failed", "provider", pp.name, "err", err)
				return
			}
			p.destroy(c, "closed")
			return
		}
		pp.fresh = append(pp.fresh, c)
		p.metrics.refills.WithLabelValues(pp.name).Inc()
		p.broadcastLocked()
		p.mu.Unlock()
	}
}

// healthCheck pings every fresh container, destroying those that fail.
func (p *Pool) healthCheck(ctx context.Context) {
	p.mu.Lock()
	var check []*container
	for _, pp := range p.pools {
		check = append(check, pp.fresh...)
		pp.fresh = nil
	}
	p.mu.Unlock()
	var good, bad []*container
	for _, c := range check {
		if err := ping(ctx, c.socket()); err != nil {
			p.log.Warn("runtime pool: health check failed", "container", c.id, "err", err)
			p.metrics.failures.WithLabelValues(c.provider, "health").Inc()
			bad = append(bad, c)
		} else {
			good = append(good, c)
		}
	}
	p.mu.Lock()
	for _, c := range good {
		pp := p.pool(c.provider)
		pp.fresh = append(pp.fresh, c)
	}
	for _, c := range bad {
		p.pool(c.provider).total--
	}
	p.broadcastLocked()
	p.mu.Unlock()
	for _, c := range bad {
		p.destroy(c, "unhealthy")
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

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
