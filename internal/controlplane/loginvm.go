package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"net/http"
	"slices"
	"sync"
	"time"

	"github.com/google/uuid"

	"polydev/internal/api"
	"polydev/internal/sandbox"
	"polydev/internal/store"
)

// The login VM API (docs/api.md, "Login VMs"): a signed-in user asks for a
// throwaway VM in which to sign in to a provider's CLI, follows its state
// and destroys it. The VMs themselves belong to a LoginVMManager on this
// host (internal/sandbox); the sessions live in the store
// (store.VMSessions), whose rows the manager's recorder (VMRecorder)
// keeps up to date.
//
// One live session per user and provider. A second link/start while one is
// live returns that one (200) instead of an error: a retried request, or a
// second tab, gets the VM the user already has rather than a conflict to
// resolve, and the user still never holds two.

// LoginVMManager allocates, finds and destroys login VMs on this host.
// *sandbox.Manager implements it.
type LoginVMManager interface {
	// Allocate gives a ready VM to the session in o; it waits for a free
	// slot while the host is at capacity, until ctx ends.
	Allocate(ctx context.Context, o sandbox.Owner) (sandbox.Info, error)
	// Get describes the live VM of a session, or sandbox.ErrNotFound.
	Get(sessionID string) (sandbox.Info, error)
	// Destroy destroys the session's VM and reports what it removed;
	// sandbox.ErrNotFound when the session has no VM (any more).
	Destroy(ctx context.Context, sessionID string) (sandbox.Report, error)
}

// Defaults for the login VM settings in Config.
const (
	// defaultLoginVMWait stays below the CLI's 60 s request timeout, so
	// that a client hears 503 capacity rather than giving up first.
	defaultLoginVMWait     = 45 * time.Second
	defaultLoginVMLifetime = 10 * time.Minute
	// loginVMRetryAfter is what a client is told to wait when no VM is free.
	loginVMRetryAfter = 30 * time.Second
)

// loginVMs is the API's state beside the store: the sessions whose VM is
// being allocated right now, which the manager does not know yet and which
// reconcile must leave alone.
type loginVMs struct {
	mu      sync.Mutex
	pending map[string]bool
}

func (l *loginVMs) begin(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	if l.pending == nil {
		l.pending = map[string]bool{}
	}
	l.pending[id] = true
}

func (l *loginVMs) end(id string) {
	l.mu.Lock()
	defer l.mu.Unlock()
	delete(l.pending, id)
}

func (l *loginVMs) isPending(id string) bool {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.pending[id]
}

var errNoLoginVMs = errorf(http.StatusServiceUnavailable, "unavailable", "login VMs are not enabled on this server")

func (s *Server) loginVMWait() time.Duration {
	if s.cfg.LoginVMWait > 0 {
		return s.cfg.LoginVMWait
	}
	return defaultLoginVMWait
}

func (s *Server) loginVMLifetime() time.Duration {
	if s.cfg.LoginVMLifetime > 0 {
		return s.cfg.LoginVMLifetime
	}
	return defaultLoginVMLifetime
}

func (s *Server) linkStart(w http.ResponseWriter, r *http.Request) error {
	if s.cfg.LoginVMs == nil {
		return errNoLoginVMs
	}
	provider := r.PathValue("provider")
	if !slices.Contains(store.Providers, provider) {
		return errorf(http.StatusNotFound, "unknown_provider", "unknown provider %q", provider)
	}
	user := session(r).UserID
	ctx := r.Context()
	if cur, err := s.liveLoginVM(ctx, user, provider); err != nil {
		return err
	} else if cur != nil {
		writeJSON(w, http.StatusOK, s.loginVMState(cur, s.loginVMInfo(cur)))
		return nil
	}

	now := s.now()
	row := &store.VMSession{ID: uuid.NewString(), Provider: provider, HostID: s.cfg.LoginVMHost,
		CreatedAt: now, ExpiresAt: now.Add(s.loginVMLifetime())}
	s.lv.begin(row.ID)
	defer s.lv.end(row.ID)
	if err := s.store.CreateVMSession(ctx, user, row); err != nil {
		if errors.Is(err, store.ErrConflict) {
			// Another request of this user won the race: theirs is the one.
			if cur, err := s.liveLoginVM(ctx, user, provider); err == nil && cur != nil {
				writeJSON(w, http.StatusOK, s.loginVMState(cur, s.loginVMInfo(cur)))
				return nil
			}
		}
		return storeError(err)
	}

	actx, cancel := context.WithTimeout(ctx, s.loginVMWait())
	info, err := s.cfg.LoginVMs.Allocate(actx, sandbox.Owner{SessionID: row.ID, UserID: user, Provider: provider})
	cancel()
	if err != nil {
		s.abandonLoginVM(r, user, row.ID)
		switch {
		case errors.Is(err, sandbox.ErrClosed):
			return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the login VM manager is shutting down",
				retryAfter: loginVMRetryAfter, cause: err}
		case ctx.Err() != nil:
			return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the request ended before a login VM was ready", cause: err}
		case errors.Is(err, context.DeadlineExceeded):
			return &apiError{status: http.StatusServiceUnavailable, code: "capacity",
				message: "no login VM was free and ready in time; try again shortly", retryAfter: loginVMRetryAfter, cause: err}
		default:
			return &apiError{status: http.StatusServiceUnavailable, code: "vm_failed", message: "the login VM failed to start; try again",
				retryAfter: time.Second, cause: err}
		}
	}
	s.audit(r, user, "login_vm_start", map[string]string{"login_vm_session_id": row.ID, "provider": provider, "vm_id": info.VMID})
	cur, err := s.store.VMSession(ctx, user, row.ID)
	if err != nil {
		return storeError(err)
	}
	writeJSON(w, http.StatusCreated, s.loginVMState(cur, &info))
	return nil
}

// abandonLoginVM makes sure a session whose allocation failed leaves no VM
// and ends destroyed.
func (s *Server) abandonLoginVM(r *http.Request, user, id string) {
	ctx := context.WithoutCancel(r.Context())
	if _, err := s.cfg.LoginVMs.Destroy(ctx, id); err != nil && !errors.Is(err, sandbox.ErrNotFound) {
		s.log.Error("destroying the vm of a failed allocation", "login_vm_session_id", id, "err", err.Error())
	}
	s.closeLoginVMRow(ctx, user, id, true)
}

// closeLoginVMRow marks a session destroyed (failed first, if asked and it
// had not ended).
func (s *Server) closeLoginVMRow(ctx context.Context, user, id string, failed bool) {
	if failed {
		err := s.store.SetVMSessionStatus(ctx, user, id, store.VMStatusChange{Status: store.VMFailed, At: s.now()})
		if err != nil && !errors.Is(err, store.ErrConflict) {
			s.log.Error("marking a login vm session failed", "login_vm_session_id", id, "err", err.Error())
		}
	}
	if err := s.store.SetVMSessionStatus(ctx, user, id, store.VMStatusChange{Status: store.VMDestroyed, At: s.now()}); err != nil {
		s.log.Error("marking a login vm session destroyed", "login_vm_session_id", id, "err", err.Error())
	}
}

// liveLoginVM returns the user's live session for provider, if there is
// one whose VM still exists. A session of this host whose VM is gone (the
// manager restarted, say) is closed on the way.
func (s *Server) liveLoginVM(ctx context.Context, user, provider string) (*store.VMSession, error) {
	live, err := s.store.LiveVMSessions(ctx, user)
	if err != nil {
		return nil, storeError(err)
	}
	for i := range live {
		v := &live[i]
		if v.Provider != provider {
			continue
		}
		if s.loginVMGone(v) {
			s.closeLoginVMRow(ctx, user, v.ID, false)
			continue
		}
		return v, nil
	}
	return nil, nil
}

// loginVMGone reports whether a live session belongs to this host, is not
// being allocated, and has no VM in the manager.
func (s *Server) loginVMGone(v *store.VMSession) bool {
	if !v.Live() || v.HostID != s.cfg.LoginVMHost || s.lv.isPending(v.ID) {
		return false
	}
	_, err := s.cfg.LoginVMs.Get(v.ID)
	return errors.Is(err, sandbox.ErrNotFound)
}

func (s *Server) linkList(w http.ResponseWriter, r *http.Request) error {
	live, err := s.store.LiveVMSessions(r.Context(), session(r).UserID)
	if err != nil {
		return storeError(err)
	}
	out := api.LoginVMSessions{Sessions: []api.LoginVMSession{}}
	for i := range live {
		out.Sessions = append(out.Sessions, s.loginVMState(&live[i], s.loginVMInfo(&live[i])))
	}
	writeJSON(w, http.StatusOK, out)
	return nil
}

func (s *Server) linkGet(w http.ResponseWriter, r *http.Request) error {
	user := session(r).UserID
	v, err := s.store.VMSession(r.Context(), user, r.PathValue("session_id"))
	if err != nil {
		return storeError(err)
	}
	if s.cfg.LoginVMs != nil && s.loginVMGone(v) {
		s.closeLoginVMRow(r.Context(), user, v.ID, false)
		if v, err = s.store.VMSession(r.Context(), user, v.ID); err != nil {
			return storeError(err)
		}
	}
	writeJSON(w, http.StatusOK, s.loginVMState(v, s.loginVMInfo(v)))
	return nil
}

func (s *Server) linkDelete(w http.ResponseWriter, r *http.Request) error {
	user := session(r).UserID
	ctx := r.Context()
	v, err := s.store.VMSession(ctx, user, r.PathValue("session_id"))
	if err != nil {
		return storeError(err)
	}
	var removed []string
	if v.Live() && s.cfg.LoginVMs != nil && v.HostID == s.cfg.LoginVMHost {
		// Destroying cannot be cancelled half-way: the manager runs it on
		// its own deadline whatever happens to this request.
		rep, err := s.cfg.LoginVMs.Destroy(context.WithoutCancel(ctx), v.ID)
		switch {
		case err == nil:
			removed = nonNil(rep.Removed)
		case !errors.Is(err, sandbox.ErrNotFound):
			return internalError(err)
		}
		// The recorder has normally done this already; if it failed, or
		// there was no VM, the row still has to say destroyed.
		s.closeLoginVMRow(context.WithoutCancel(ctx), user, v.ID, false)
		if v, err = s.store.VMSession(ctx, user, v.ID); err != nil {
			return storeError(err)
		}
	}
	out := s.loginVMState(v, nil)
	out.Removed = removed
	writeJSON(w, http.StatusOK, out)
	return nil
}

// loginVMInfo is the manager's view of a live session of this host, or nil.
func (s *Server) loginVMInfo(v *store.VMSession) *sandbox.Info {
	if s.cfg.LoginVMs == nil || !v.Live() || v.HostID != s.cfg.LoginVMHost {
		return nil
	}
	info, err := s.cfg.LoginVMs.Get(v.ID)
	if err != nil {
		return nil
	}
	return &info
}

// loginVMState is the API's view of a session: the row, with the status
// and expiry of the manager where it knows the VM (it is ahead of the row
// by at most one recorder write).
func (s *Server) loginVMState(v *store.VMSession, info *sandbox.Info) api.LoginVMSession {
	out := api.LoginVMSession{LoginVMSessionID: v.ID, Provider: v.Provider, Status: v.Status, CreatedAt: v.CreatedAt,
		ReadyAt: timePtr(v.ReadyAt), AuthenticatingAt: timePtr(v.AuthenticatingAt), EndedAt: timePtr(v.EndedAt),
		DestroyedAt: timePtr(v.DestroyedAt), ExpiresAt: timePtr(v.ExpiresAt)}
	if info != nil && v.Live() {
		out.Status = string(info.Status)
		if out.ReadyAt == nil {
			out.ReadyAt = timePtr(info.ReadyAt)
		}
		out.ExpiresAt = timePtr(info.ExpiresAt)
	}
	return out
}

func timePtr(t time.Time) *time.Time {
	if t.IsZero() {
		return nil
	}
	t = t.UTC().Truncate(time.Microsecond)
	return &t
}

// reconcileLoginVMs closes the live sessions of this host whose VM the
// manager does not have: their VM was lost in a crash of the manager, or
// destroyed while its status could not be recorded. Sessions being
// allocated are left alone, and so are sessions younger than the
// allocation wait (another control plane on this host may be allocating
// them).
func (s *Server) reconcileLoginVMs(ctx context.Context) {
	live, err := s.store.HostVMSessions(ctx, s.cfg.LoginVMHost)
	if err != nil {
		s.log.Error("login vm reconcile: listing the host's live sessions", "err", err.Error())
		return
	}
	cutoff := s.now().Add(-s.loginVMWait())
	for i := range live {
		v := &live[i]
		if v.CreatedAt.After(cutoff) || !s.loginVMGone(v) {
			continue
		}
		s.closeLoginVMRow(ctx, v.UserID, v.ID, v.Status != store.VMCompleted && v.Status != store.VMFailed)
		s.log.Info("login vm reconcile: closed a session without a vm", "login_vm_session_id", v.ID, "status", v.Status)
		s.auditAs(ctx, v.UserID, "login_vm_lost", map[string]string{"login_vm_session_id": v.ID, "status": v.Status, "host_id": v.HostID})
	}
}

// startLoginVMReconcile runs reconcileLoginVMs now and then every
// LoginVMReconcileEvery until ctx ends; the returned function waits for
// the loop to end.
func (s *Server) startLoginVMReconcile(ctx context.Context) (wait func()) {
	if s.cfg.LoginVMs == nil || s.cfg.LoginVMReconcileEvery < 0 {
		return func() {}
	}
	every := s.cfg.LoginVMReconcileEvery
	if every == 0 {
		every = time.Minute
	}
	done := make(chan struct{})
	go func() {
		defer close(done)
		t := time.NewTicker(every)
		defer t.Stop()
		for {
			s.reconcileLoginVMs(ctx)
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
		}
	}()
	return func() { <-done }
}

// auditAs records an event outside a request.
func (s *Server) auditAs(ctx context.Context, userID, event string, detail map[string]string) {
	d := "{}"
	if detail != nil {
		if b, err := json.Marshal(detail); err == nil {
			d = string(b)
		}
	}
	if err := s.store.Record(context.WithoutCancel(ctx), &store.AuditEvent{UserID: userID, Event: event, Detail: d}); err != nil {
		s.log.Error("audit event not recorded", "event", event, "err", err.Error())
	}
}
