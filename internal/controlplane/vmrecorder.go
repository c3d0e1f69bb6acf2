package controlplane

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"sync"

	"polydev/internal/sandbox"
	"polydev/internal/store"
)

// VMRecorder is the login-VM manager's sandbox.Recorder over the store:
// status changes go to the session's vm_sessions row, removals to the
// audit log.
//
// The manager reports a session by id only, and without a signed-in
// user. The recorder finds the session's owner through the store's host
// view (store.VMHosts: the live sessions of that host; in PostgreSQL the
// polydev_vmm role) and then writes as that user, under the same rules as
// the API. It remembers the owner of a session until the session's removal
// is recorded, because by then the session is no longer live.
type VMRecorder struct {
	st  store.Store
	log *slog.Logger

	mu     sync.Mutex
	owners map[string]string // session id → user id
}

var _ sandbox.Recorder = (*VMRecorder)(nil)

// NewVMRecorder returns a recorder writing to st.
func NewVMRecorder(st store.Store, log *slog.Logger) *VMRecorder {
	return &VMRecorder{st: st, log: log, owners: map[string]string{}}
}

// Status records t on the session's row.
func (r *VMRecorder) Status(ctx context.Context, t sandbox.Transition) error {
	user, err := r.owner(ctx, t.HostID, t.SessionID)
	if err != nil {
		return fmt.Errorf("record vm status %s: %w", t.Status, err)
	}
	err = r.st.SetVMSessionStatus(ctx, user, t.SessionID, store.VMStatusChange{Status: string(t.Status), At: t.At, VMID: t.VMID})
	if err != nil {
		return fmt.Errorf("record vm status %s: %w", t.Status, err)
	}
	return nil
}

// Removed records an audit event listing what destroying a VM removed.
// The event belongs to the session's user when there is one; a warm-pool
// VM nobody used, or a leftover whose session is unknown, is recorded
// without a user.
func (r *VMRecorder) Removed(ctx context.Context, rep sandbox.Report) error {
	user := ""
	if rep.SessionID != "" {
		r.mu.Lock()
		user = r.owners[rep.SessionID]
		delete(r.owners, rep.SessionID)
		r.mu.Unlock()
		if user == "" {
			if u, err := r.lookup(ctx, rep.HostID, rep.SessionID); err == nil {
				user = u
			}
		}
	}
	event := "login_vm_destroyed"
	if rep.Reason == "reconcile" {
		event = "login_vm_reclaimed"
	}
	detail, err := json.Marshal(struct {
		VMID      string   `json:"vm_id"`
		SessionID string   `json:"login_vm_session_id,omitempty"`
		HostID    string   `json:"host_id"`
		Reason    string   `json:"reason"`
		Removed   []string `json:"removed"`
		Errors    []string `json:"errors,omitempty"`
		TookMS    int64    `json:"took_ms"`
	}{rep.VMID, rep.SessionID, rep.HostID, rep.Reason, nonNil(rep.Removed), rep.Errors, rep.Took.Milliseconds()})
	if err != nil {
		return err
	}
	e := &store.AuditEvent{UserID: user, Event: event, Detail: string(detail)}
	if err := r.st.Record(ctx, e); err != nil {
		if user == "" || !errors.Is(err, store.ErrNotFound) {
			return fmt.Errorf("record vm removal: %w", err)
		}
		// The user was erased meanwhile: keep the event without them.
		e.UserID = ""
		return r.st.Record(ctx, e)
	}
	return nil
}

func nonNil(s []string) []string {
	if s == nil {
		return []string{}
	}
	return s
}

// owner returns the session's user, from memory or from the host view.
func (r *VMRecorder) owner(ctx context.Context, host, session string) (string, error) {
	r.mu.Lock()
	user, ok := r.owners[session]
	r.mu.Unlock()
	if ok {
		return user, nil
	}
	user, err := r.lookup(ctx, host, session)
	if err != nil {
		return "", err
	}
	r.mu.Lock()
	r.owners[session] = user
	r.mu.Unlock()
	return user, nil
}

func (r *VMRecorder) lookup(ctx context.Context, host, session string) (string, error) {
	live, err := r.st.HostVMSessions(ctx, host)
	if err != nil {
		return "", err
	}
	for _, s := range live {
		if s.ID == session {
			return s.UserID, nil
		}
	}
	return "", fmt.Errorf("session %s is not live on host %q: %w", session, host, store.ErrNotFound)
}
