package sandbox

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"
)

// Manager creates, tracks and destroys login VMs on this host. Its methods
// are safe for concurrent use. The API is described at the end of
// sandbox.go.
type Manager struct {
	cfg Config
	drv Driver
	rec Recorder
	log *slog.Logger
	cg  *cgroups

	slots chan struct{} // one token per live VM (pool included): the cap and its queue
	pool  chan *vm      // ready, never-bound VMs
	kick  chan struct{} // wakes the pool filler

	mu       sync.Mutex
	vms      map[string]*vm // every VM that may own host resources, by VM id
	sessions map[string]*vm // bound VMs by session id
	closed   bool

	stop chan struct{}
	wg   sync.WaitGroup
}

// vm is one VM and its cleanup stack.
type vm struct {
	mach Machine
	cl   Cleanup

	mu        sync.Mutex
	owner     Owner
	status    Status
	bootedAt  time.Time
	readyAt   time.Time
	expiresAt time.Time
	lifetime  *time.Timer

	bootCancel context.CancelFunc // set while boot runs
	bootDone   chan struct{}      // closed when boot returned
	destroying bool

	destroyOnce sync.Once
	destroyed   chan struct{}
	report      Report
}

type nopRecorder struct{}

func (nopRecorder) Status(context.Context, Transition) error { return nil }
func (nopRecorder) Removed(context.Context, Report) error    { return nil }

// NewManager validates cfg, reconciles the state root once (removing what
// an earlier, crashed manager left), and starts the warm pool and the
// maintenance timer. rec may be nil. The Manager must be Closed.
func NewManager(ctx context.Context, cfg Config, d Driver, rec Recorder, log *slog.Logger) (*Manager, error) {
	if err := cfg.setDefaults(); err != nil {
		return nil, err
	}
	if rec == nil {
		rec = nopRecorder{}
	}
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if err := os.MkdirAll(cfg.Root, 0o700); err != nil {
		return nil, fmt.Errorf("sandbox: state root: %w", err)
	}
	m := &Manager{
		cfg:      cfg,
		drv:      d,
		rec:      rec,
		log:      log.With("component", "vm_manager", "driver", d.Name()),
		cg:       newCgroups(cfg.CgroupRoot, cfg.CgroupParent, cfg.Root, cfg.MemoryMiB, cfg.VCPUs),
		slots:    make(chan struct{}, cfg.MaxVMs),
		pool:     make(chan *vm, cfg.MaxVMs),
		kick:     make(chan struct{}, 1),
		vms:      map[string]*vm{},
		sessions: map[string]*vm{},
		stop:     make(chan struct{}),
	}
	if _, err := m.Reconcile(ctx); err != nil {
		return nil, err
	}
	m.wg.Add(2)
	go m.fillPool()
	go m.maintain()
	m.kickPool()
	return m, nil
}

// PoolReady is the number of ready VMs waiting in the warm pool.
func (m *Manager) PoolReady() int { return len(m.pool) }

// Live is the number of VMs holding a slot (booting, pooled, bound or
// being destroyed); at most Config.MaxVMs.
func (m *Manager) Live() int { return len(m.slots) }

// Config returns the effective configuration (defaults applied).
func (m *Manager) Config() Config { return m.cfg }

func newID() string {
	b := make([]byte, idLen/2)
	rand.Read(b)
	return hex.EncodeToString(b)
}

// Allocate implements the API described in sandbox.go.
func (m *Manager) Allocate(ctx context.Context, o Owner) (Info, error) {
	if o.SessionID == "" {
		return Info{}, errors.New("sandbox allocate: empty session id")
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return Info{}, ErrClosed
	}
	if _, dup := m.sessions[o.SessionID]; dup {
		m.mu.Unlock()
		return Info{}, fmt.Errorf("sandbox allocate: session %s already has a vm", o.SessionID)
	}
	m.mu.Unlock()
	defer m.kickPool()
	for {
		// A ready pool VM first; otherwise wait for whichever comes first:
		// a pool VM or a free slot to boot one for this session.
		select {
		case v := <-m.pool:
			if info, ok := m.bind(ctx, v, o); ok {
				return info, nil
			}
			continue
		default:
		}
		select {
		case v := <-m.pool:
			if info, ok := m.bind(ctx, v, o); ok {
				return info, nil
			}
		case m.slots <- struct{}{}:
			return m.bootFor(ctx, o)
		case <-ctx.Done():
			return Info{}, fmt.Errorf("sandbox allocate: queued: %w", ctx.Err())
		case <-m.stop:
			return Info{}, ErrClosed
		}
	}
}

// bind gives a ready pool VM to a session; false if the VM died meanwhile.
func (m *Manager) bind(ctx context.Context, v *vm, o Owner) (Info, bool) {
	select {
	case <-v.mach.Done:
		go m.destroy(v, "vmm_exited")
		return Info{}, false
	case <-v.destroyed:
		return Info{}, false
	default:
	}
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		go m.destroy(v, "close")
		return Info{}, false
	}
	v.mu.Lock()
	v.owner = o
	v.expiresAt = time.Now().Add(m.cfg.MaxLifetime)
	v.mu.Unlock()
	m.sessions[o.SessionID] = v
	m.mu.Unlock()
	m.writeOwner(v)
	m.armLifetime(v)
	m.record(ctx, v, StatusBooting, v.bootedAt)
	m.record(ctx, v, StatusReady, v.readyAt)
	return v.info(m.cfg.HostID), true
}

// bootFor boots a VM bound to o from the start (the pool was empty); the
// caller holds a slot.
func (m *Manager) bootFor(ctx context.Context, o Owner) (Info, error) {
	v := m.newVM()
	v.owner = o
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		<-m.slots
		return Info{}, ErrClosed
	}
	m.vms[v.mach.ID] = v
	m.sessions[o.SessionID] = v
	m.mu.Unlock()
	if err := m.runBoot(ctx, v); err != nil {
		return Info{}, fmt.Errorf("sandbox allocate: %w", err)
	}
	// The lifetime counts from ready, as for a pool VM from allocation:
	// the user gets the whole of it.
	v.mu.Lock()
	v.expiresAt = time.Now().Add(m.cfg.MaxLifetime)
	v.mu.Unlock()
	m.armLifetime(v)
	return v.info(m.cfg.HostID), nil
}

func (m *Manager) newVM() *vm {
	id := newID()
	dir := filepath.Join(m.cfg.Root, id)
	return &vm{
		status:    StatusBooting,
		destroyed: make(chan struct{}),
		bootDone:  make(chan struct{}),
		mach: Machine{
			ID:           id,
			Marker:       MarkerPrefix + id,
			Dir:          dir,
			APISocket:    filepath.Join(dir, "api.sock"),
			AgentSocket:  filepath.Join(dir, "agent.sock"),
			Overlay:      filepath.Join(dir, "overlay.qcow2"),
			Config:       filepath.Join(dir, "config.json"),
			LogFile:      filepath.Join(dir, "vmm.log"),
			Tap:          tapName(id),
			MAC:          "52:54:00:" + id[0:2] + ":" + id[2:4] + ":" + id[4:6],
			Image:        m.cfg.Image,
			MemoryMiB:    m.cfg.MemoryMiB - vmmOverheadMiB,
			VCPUs:        m.cfg.VCPUs,
			OverlayBytes: m.cfg.OverlayBytes,
		},
	}
}

// vmmOverheadMiB of the cgroup's memory limit is left to the VMM process
// itself; the guest gets the rest.
const vmmOverheadMiB = 64

// runBoot boots v, which is registered in m.vms and holds a slot; on
// failure it destroys v. A destroy racing the boot cancels it and waits
// for it to return before running the cleanup stack.
func (m *Manager) runBoot(ctx context.Context, v *vm) error {
	ctx, cancel := context.WithTimeout(ctx, m.cfg.BootTimeout)
	defer cancel()
	v.mu.Lock()
	v.bootCancel = cancel
	v.mu.Unlock()
	err := m.boot(ctx, v)
	v.mu.Lock()
	v.bootCancel = nil
	destroying := v.destroying
	v.mu.Unlock()
	close(v.bootDone)
	if err != nil {
		if !destroying {
			m.setStatus(ctx, v, StatusFailed)
		}
		m.destroy(v, "boot_failed")
	}
	return err
}

// boot acquires the VM's resources, starts it and waits for ready.
func (m *Manager) boot(ctx context.Context, v *vm) (err error) {
	mc := &v.mach
	v.mu.Lock()
	v.bootedAt = time.Now()
	v.mu.Unlock()
	m.record(ctx, v, StatusBooting, v.bootedAt)

	// The state dir comes first and goes last: while any other resource
	// exists, so does the dir that names it.
	// Each step is pushed right after its resource exists (or half-exists:
	// the undo steps tolerate absence), so that a destroy racing this boot
	// undoes anything created after it ran.
	err = os.Mkdir(mc.Dir, 0o700)
	v.cl.Add(ResourceStateDir, func(context.Context) (bool, error) {
		if _, err := os.Stat(mc.Dir); err != nil {
			return false, nil
		}
		return true, os.RemoveAll(mc.Dir)
	})
	if err != nil {
		return fmt.Errorf("boot: state dir: %w", err)
	}
	m.writeOwner(v)
	err = createTap(mc.Tap, tapAlias(m.cfg.Root))
	v.cl.Add(ResourceTap, func(context.Context) (bool, error) { return removeTap(mc.Tap) })
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	err = m.cg.create(mc.ID)
	v.cl.Add(ResourceCgroup, func(context.Context) (bool, error) { return m.cg.remove(mc.ID) })
	if err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	mc.Place = func(pid int) error { return m.cg.place(mc.ID, pid) }
	if err := m.drv.Start(ctx, mc, &v.cl); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	go m.watchExit(v)
	if err := m.drv.WaitReady(ctx, mc); err != nil {
		return fmt.Errorf("boot: %w", err)
	}
	v.mu.Lock()
	v.readyAt = time.Now()
	bound := v.owner.SessionID != ""
	if v.status == StatusBooting {
		v.status = StatusReady
	}
	v.mu.Unlock()
	if bound {
		m.record(ctx, v, StatusReady, v.readyAt)
	}
	m.log.Debug("vm ready", "vm_id", mc.ID, "boot_ms", v.readyAt.Sub(v.bootedAt).Milliseconds())
	return nil
}

// watchExit destroys a VM whose VMM process ended on its own.
func (m *Manager) watchExit(v *vm) {
	select {
	case <-v.mach.Done:
		v.mu.Lock()
		destroying := v.destroying
		v.mu.Unlock()
		if !destroying {
			tail, _ := os.ReadFile(v.mach.LogFile)
			if len(tail) > 2000 {
				tail = tail[len(tail)-2000:]
			}
			m.log.Warn("vmm exited on its own", "vm_id", v.mach.ID, "log_tail", string(tail))
			m.setStatus(context.Background(), v, StatusFailed)
			m.destroy(v, "vmm_exited")
		}
	case <-v.destroyed:
	}
}

func (m *Manager) armLifetime(v *vm) {
	v.mu.Lock()
	defer v.mu.Unlock()
	if v.status == StatusDestroyed {
		return
	}
	v.lifetime = time.AfterFunc(time.Until(v.expiresAt), func() {
		m.setStatus(context.Background(), v, StatusFailed)
		m.destroy(v, "lifetime")
	})
}

// writeOwner stores the owner in the state dir, for Reconcile's report.
func (m *Manager) writeOwner(v *vm) {
	v.mu.Lock()
	o := v.owner
	v.mu.Unlock()
	if o.SessionID == "" {
		return
	}
	b, _ := json.Marshal(o)
	os.WriteFile(filepath.Join(v.mach.Dir, "owner.json"), b, 0o600)
}

func (v *vm) info(host string) Info {
	v.mu.Lock()
	defer v.mu.Unlock()
	return Info{
		SessionID: v.owner.SessionID, VMID: v.mach.ID, HostID: host, Status: v.status,
		Tap: v.mach.Tap, PID: v.mach.PID, BootedAt: v.bootedAt, ReadyAt: v.readyAt, ExpiresAt: v.expiresAt,
	}
}

// record sends a transition for a bound VM.
func (m *Manager) record(ctx context.Context, v *vm, s Status, at time.Time) {
	v.mu.Lock()
	sid := v.owner.SessionID
	v.mu.Unlock()
	if sid == "" {
		return
	}
	t := Transition{SessionID: sid, VMID: v.mach.ID, HostID: m.cfg.HostID, Status: s, At: at.UTC()}
	if err := m.rec.Status(context.WithoutCancel(ctx), t); err != nil {
		m.log.Error("record vm status", "vm_id", v.mach.ID, "session_id", sid, "status", string(s), "err", err)
	}
}

// Get implements the API described in sandbox.go.
func (m *Manager) Get(sessionID string) (Info, error) {
	m.mu.Lock()
	v, ok := m.sessions[sessionID]
	m.mu.Unlock()
	if !ok {
		return Info{}, ErrNotFound
	}
	return v.info(m.cfg.HostID), nil
}

var allowed = map[Status][]Status{
	StatusBooting:        {StatusFailed},
	StatusReady:          {StatusAuthenticating, StatusCompleted, StatusFailed},
	StatusAuthenticating: {StatusCompleted, StatusFailed},
}

// SetStatus implements the API described in sandbox.go.
func (m *Manager) SetStatus(ctx context.Context, sessionID string, s Status) error {
	m.mu.Lock()
	v, ok := m.sessions[sessionID]
	m.mu.Unlock()
	if !ok {
		return ErrNotFound
	}
	if !m.setStatus(ctx, v, s) {
		return fmt.Errorf("%w: to %s", ErrBadTransition, s)
	}
	return nil
}

// setStatus moves v to s if allowed and records it; false if not allowed.
func (m *Manager) setStatus(ctx context.Context, v *vm, s Status) bool {
	v.mu.Lock()
	ok := false
	for _, n := range allowed[v.status] {
		ok = ok || n == s
	}
	if ok {
		v.status = s
	}
	v.mu.Unlock()
	if ok {
		m.record(ctx, v, s, time.Now())
	}
	return ok
}

// Destroy implements the API described in sandbox.go.
func (m *Manager) Destroy(ctx context.Context, sessionID string) (Report, error) {
	m.mu.Lock()
	v, ok := m.sessions[sessionID]
	delete(m.sessions, sessionID)
	m.mu.Unlock()
	if !ok {
		return Report{}, ErrNotFound
	}
	return m.destroy(v, "destroy"), nil
}

// destroy runs v's cleanup stack once; later calls wait for the first and
// return its report. It is not cancellable: it runs on its own deadline.
func (m *Manager) destroy(v *vm, reason string) Report {
	v.destroyOnce.Do(func() {
		start := time.Now()
		v.mu.Lock()
		if v.lifetime != nil {
			v.lifetime.Stop()
		}
		sid := v.owner.SessionID
		v.destroying = true
		cancelBoot := v.bootCancel
		v.mu.Unlock()
		if cancelBoot != nil {
			// Stop the boot first so it does not race the stack; its late
			// resources would be undone anyway (Cleanup.Add after Run).
			cancelBoot()
			select {
			case <-v.bootDone:
			case <-time.After(m.cfg.DestroyTimeout / 2):
			}
		}
		removed, errs := v.cl.Run(context.Background(), m.cfg.DestroyTimeout)
		v.report = Report{
			VMID: v.mach.ID, SessionID: sid, HostID: m.cfg.HostID, Reason: reason,
			Removed: removed, Errors: errs, Took: time.Since(start), At: time.Now().UTC(),
		}
		m.mu.Lock()
		// Even after a failed step the VM is forgotten: Reconcile then
		// sees what is left as unowned and retries removing it.
		delete(m.vms, v.mach.ID)
		if cur, ok := m.sessions[sid]; ok && cur == v {
			delete(m.sessions, sid)
		}
		m.mu.Unlock()
		v.mu.Lock()
		v.status = StatusDestroyed
		v.mu.Unlock()
		close(v.destroyed)
		<-m.slots
		m.kickPool()
		ctx := context.Background()
		m.record(ctx, v, StatusDestroyed, v.report.At)
		if err := m.rec.Removed(ctx, v.report); err != nil {
			m.log.Error("record vm removal", "vm_id", v.mach.ID, "err", err)
		}
		lvl := slog.LevelInfo
		if len(errs) > 0 {
			lvl = slog.LevelError
		}
		m.log.Log(ctx, lvl, "vm destroyed", "vm_id", v.mach.ID, "session_id", sid, "reason", reason,
			"removed", removed, "errors", errs, "took_ms", v.report.Took.Milliseconds(), "steps", v.cl.Timings())
	})
	<-v.destroyed
	return v.report
}

// kickPool wakes the pool filler.
func (m *Manager) kickPool() {
	select {
	case m.kick <- struct{}{}:
	default:
	}
}

// fillPool keeps PoolSize ready VMs. It boots one at a time so that pool
// refills never crowd out users' cold boots for CPU.
func (m *Manager) fillPool() {
	defer m.wg.Done()
	for {
		select {
		case <-m.stop:
			return
		case <-m.kick:
		}
		for len(m.pool) < m.cfg.PoolSize {
			select {
			case m.slots <- struct{}{}:
			case <-m.stop:
				return
			}
			v := m.newVM()
			m.mu.Lock()
			if m.closed {
				m.mu.Unlock()
				<-m.slots
				return
			}
			m.vms[v.mach.ID] = v
			m.mu.Unlock()
			ctx, cancel := context.WithCancel(context.Background())
			go func() {
				select {
				case <-m.stop:
					cancel()
				case <-ctx.Done():
				}
			}()
			err := m.runBoot(ctx, v)
			cancel()
			if err != nil {
				m.log.Error("warm pool boot", "vm_id", v.mach.ID, "err", err)
				select { // do not spin on a broken image
				case <-m.stop:
					return
				case <-time.After(time.Second):
				}
				continue
			}
			m.pool <- v
		}
	}
}

// maintain runs Reconcile on its timer and enforces the overlay budget.
func (m *Manager) maintain() {
	defer m.wg.Done()
	budget := time.NewTicker(2 * time.Second)
	defer budget.Stop()
	var rec <-chan time.Time
	if m.cfg.ReconcileEvery > 0 {
		t := time.NewTicker(m.cfg.ReconcileEvery)
		defer t.Stop()
		rec = t.C
	}
	for {
		select {
		case <-m.stop:
			return
		case <-rec:
			if _, err := m.Reconcile(context.Background()); err != nil {
				m.log.Error("reconcile", "err", err)
			}
		case <-budget.C:
			m.mu.Lock()
			var over []*vm
			for _, v := range m.vms {
				if fileBytes(v.mach.Overlay) > m.cfg.OverlayBytes {
					over = append(over, v)
				}
			}
			m.mu.Unlock()
			for _, v := range over {
				m.log.Warn("vm overlay over budget", "vm_id", v.mach.ID, "budget_bytes", m.cfg.OverlayBytes)
				m.setStatus(context.Background(), v, StatusFailed)
				go m.destroy(v, "overlay_budget")
			}
		}
	}
}

// Close implements the API described in sandbox.go.
func (m *Manager) Close(ctx context.Context) error {
	m.mu.Lock()
	if m.closed {
		m.mu.Unlock()
		return nil
	}
	m.closed = true
	close(m.stop)
	m.mu.Unlock()
	m.wg.Wait()
	m.mu.Lock()
	all := make([]*vm, 0, len(m.vms))
	for _, v := range m.vms {
		all = append(all, v)
	}
	m.mu.Unlock()
	var wg sync.WaitGroup
	var errs []error
	var emu sync.Mutex
	for _, v := range all {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if r := m.destroy(v, "close"); !r.Clean() {
				emu.Lock()
				errs = append(errs, fmt.Errorf("vm %s: %v", r.VMID, r.Errors))
				emu.Unlock()
			}
		}()
	}
	wg.Wait()
	m.cg.removeInstance()
	if len(errs) > 0 {
		return fmt.Errorf("sandbox close: %w", errors.Join(errs...))
	}
	return nil
}
