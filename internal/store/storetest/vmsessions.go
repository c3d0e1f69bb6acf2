package storetest

import (
	"slices"
	"sync"
	"testing"
	"time"

	"polydev/internal/store"
)

// The login VM sessions part of the suite (store.VMSessions, store.VMHosts).

func vmSession(u *store.User, provider, host string) *store.VMSession {
	return &store.VMSession{ID: NewID(), UserID: u.ID, Provider: provider, HostID: host, Status: store.VMBooting,
		VMID: "", ExpiresAt: time.Now().Add(10 * time.Minute)}
}

func testVMSessions(t *testing.T, s store.Store) {
	a, b := mustCreateUser(t, s), mustCreateUser(t, s)
	const host = "host-a"
	t0 := time.Now().UTC().Truncate(time.Microsecond)

	sa := vmSession(a, "openai", host)
	sa.CreatedAt = t0
	sa.BootingAt = t0.Add(-time.Second) // a warm-pool VM booted before the session
	noErr(t, "CreateVMSession", s.CreateVMSession(ctx(), a.ID, sa))
	if sa.CreatedAt.IsZero() || sa.Status != store.VMBooting {
		t.Errorf("CreateVMSession did not assign CreatedAt or status: %+v", sa)
	}

	// One live session per user and provider; another provider is fine.
	wantErr(t, "CreateVMSession(second live for openai)", s.CreateVMSession(ctx(), a.ID, vmSession(a, "openai", host)), store.ErrConflict)
	other := vmSession(a, "google", host)
	other.CreatedAt = t0.Add(time.Millisecond)
	noErr(t, "CreateVMSession(google)", s.CreateVMSession(ctx(), a.ID, other))
	dupID := vmSession(a, "anthropic", host)
	dupID.ID = sa.ID
	wantErr(t, "CreateVMSession(taken id)", s.CreateVMSession(ctx(), a.ID, dupID), store.ErrConflict)
	wantErr(t, "CreateVMSession(unknown provider)", s.CreateVMSession(ctx(), a.ID, vmSession(a, "acme", host)), store.ErrInvalid)
	notBooting := vmSession(a, "anthropic", host)
	notBooting.Status = store.VMReady
	wantErr(t, "CreateVMSession(status ready)", s.CreateVMSession(ctx(), a.ID, notBooting), store.ErrInvalid)

	// The lifecycle, each status with its time.
	steps := []struct {
		status string
		at     time.Time
		vmID   string
	}{
		{store.VMBooting, t0.Add(-time.Second), "vm0a1b"},
		{store.VMReady, t0.Add(2 * time.Second), ""},
		{store.VMAuthenticating, t0.Add(3 * time.Second), ""},
		{store.VMCompleted, t0.Add(4 * time.Second), ""},
		{store.VMDestroyed, t0.Add(5 * time.Second), ""},
	}
	for _, st := range steps {
		noErr(t, "SetVMSessionStatus("+st.status+")", s.SetVMSessionStatus(ctx(), a.ID, sa.ID,
			store.VMStatusChange{Status: st.status, At: st.at, VMID: st.vmID}))
	}
	// Recording destroyed again keeps the first time.
	noErr(t, "SetVMSessionStatus(destroyed again)", s.SetVMSessionStatus(ctx(), a.ID, sa.ID,
		store.VMStatusChange{Status: store.VMDestroyed, At: t0.Add(time.Hour)}))
	got, err := s.VMSession(ctx(), a.ID, sa.ID)
	noErr(t, "VMSession", err)
	if got.Status != store.VMDestroyed || got.VMID != "vm0a1b" || got.HostID != host || got.Provider != "openai" || got.UserID != a.ID {
		t.Errorf("VMSession = %+v", got)
	}
	for _, c := range []struct {
		name      string
		got, want time.Time
	}{
		{"BootingAt", got.BootingAt, t0.Add(-time.Second)},
		{"ReadyAt", got.ReadyAt, t0.Add(2 * time.Second)},
		{"AuthenticatingAt", got.AuthenticatingAt, t0.Add(3 * time.Second)},
		{"EndedAt", got.EndedAt, t0.Add(4 * time.Second)},
		{"DestroyedAt", got.DestroyedAt, t0.Add(5 * time.Second)},
		{"ExpiresAt", got.ExpiresAt, sa.ExpiresAt.UTC().Truncate(time.Microsecond)},
	} {
		if !c.got.Equal(c.want) || c.got.Location() != time.UTC {
			t.Errorf("%s = %v; want %v in UTC", c.name, c.got, c.want)
		}
	}
	if !got.TokenCapturedAt.IsZero() {
		t.Errorf("TokenCapturedAt = %v; want zero", got.TokenCapturedAt)
	}

	// Moves the lifecycle does not allow.
	for _, st := range []string{store.VMReady, store.VMAuthenticating, store.VMCompleted, store.VMFailed, store.VMBooting} {
		wantErr(t, "SetVMSessionStatus(destroyed → "+st+")",
			s.SetVMSessionStatus(ctx(), a.ID, sa.ID, store.VMStatusChange{Status: st}), store.ErrConflict)
	}
	wantErr(t, "SetVMSessionStatus(booting → authenticating)",
		s.SetVMSessionStatus(ctx(), a.ID, other.ID, store.VMStatusChange{Status: store.VMAuthenticating}), store.ErrConflict)
	wantErr(t, "SetVMSessionStatus(booting → completed)",
		s.SetVMSessionStatus(ctx(), a.ID, other.ID, store.VMStatusChange{Status: store.VMCompleted}), store.ErrConflict)
	wantErr(t, "SetVMSessionStatus(unknown status)",
		s.SetVMSessionStatus(ctx(), a.ID, other.ID, store.VMStatusChange{Status: "paused"}), store.ErrInvalid)
	wantErr(t, "SetVMSessionStatus(unknown session)",
		s.SetVMSessionStatus(ctx(), a.ID, NewID(), store.VMStatusChange{Status: store.VMFailed}), store.ErrNotFound)
	// booting → failed is allowed, and a zero time means now.
	noErr(t, "SetVMSessionStatus(booting → failed)",
		s.SetVMSessionStatus(ctx(), a.ID, other.ID, store.VMStatusChange{Status: store.VMFailed}))
	if g, err := s.VMSession(ctx(), a.ID, other.ID); err != nil || g.Status != store.VMFailed || g.EndedAt.IsZero() {
		t.Errorf("after booting → failed: %+v, %v", g, err)
	}

	// A destroyed session frees the slot for a new one.
	again := vmSession(a, "openai", host)
	again.CreatedAt = t0.Add(10 * time.Second)
	noErr(t, "CreateVMSession(after destroy)", s.CreateVMSession(ctx(), a.ID, again))
	live, err := s.LiveVMSessions(ctx(), a.ID)
	noErr(t, "LiveVMSessions", err)
	if len(live) != 2 || live[0].ID != again.ID || live[1].ID != other.ID {
		t.Errorf("LiveVMSessions = %v; want the new openai session, then the failed google one", vmIDs(live))
	}

	// Tenant isolation: B sees none of A's sessions and cannot move them.
	_, err = s.VMSession(ctx(), b.ID, again.ID)
	wantErr(t, "B reads A's vm session", err, store.ErrNotFound)
	wantErr(t, "B destroys A's vm session",
		s.SetVMSessionStatus(ctx(), b.ID, again.ID, store.VMStatusChange{Status: store.VMDestroyed}), store.ErrNotFound)
	wantErr(t, "B creates a vm session owned by A", s.CreateVMSession(ctx(), b.ID, vmSession(a, "anthropic", host)), store.ErrNotFound)
	if l, err := s.LiveVMSessions(ctx(), b.ID); err != nil || len(l) != 0 {
		t.Errorf("B lists live vm sessions: %v, %v; want none", vmIDs(l), err)
	}
	if g, err := s.VMSession(ctx(), a.ID, again.ID); err != nil || g.Status != store.VMBooting {
		t.Errorf("A's session after B's attempts: %+v, %v", g, err)
	}

	// The host view: live sessions of that host only, oldest first.
	onB := vmSession(b, "openai", "host-b")
	noErr(t, "CreateVMSession(B on host-b)", s.CreateVMSession(ctx(), b.ID, onB))
	bOnA := vmSession(b, "google", host)
	bOnA.CreatedAt = t0.Add(20 * time.Second)
	noErr(t, "CreateVMSession(B on host-a)", s.CreateVMSession(ctx(), b.ID, bOnA))
	hs, err := s.HostVMSessions(ctx(), host)
	noErr(t, "HostVMSessions", err)
	if want := []string{other.ID, again.ID, bOnA.ID}; !slices.Equal(vmIDs(hs), want) {
		t.Errorf("HostVMSessions(%s) = %v; want %v (live, this host, oldest first)", host, vmIDs(hs), want)
	}
	for _, h := range hs {
		if h.UserID == "" || h.HostID != host || h.Status == store.VMDestroyed {
			t.Errorf("HostVMSessions returned %+v", h)
		}
	}
	if hs, err := s.HostVMSessions(ctx(), "host-c"); err != nil || len(hs) != 0 {
		t.Errorf("HostVMSessions(unknown host) = %v, %v; want none", vmIDs(hs), err)
	}
	_, err = s.HostVMSessions(ctx(), "")
	wantErr(t, "HostVMSessions(no host)", err, store.ErrInvalid)

	// Erasure takes the user's sessions with it.
	noErr(t, "DeleteUser(b)", s.DeleteUser(ctx(), b.ID))
	if hs, err := s.HostVMSessions(ctx(), "host-b"); err != nil || len(hs) != 0 {
		t.Errorf("HostVMSessions after B's erasure = %v, %v; want none", vmIDs(hs), err)
	}
}

// testVMSessionsRace: concurrent creates for one user and provider, as two
// link/start requests at once would make: exactly one wins.
func testVMSessionsRace(t *testing.T, s store.Store) {
	u := mustCreateUser(t, s)
	const n = 8
	errs := make([]error, n)
	var wg sync.WaitGroup
	for i := range n {
		wg.Go(func() { errs[i] = s.CreateVMSession(ctx(), u.ID, vmSession(u, "anthropic", "h")) })
	}
	wg.Wait()
	won := 0
	for _, err := range errs {
		switch {
		case err == nil:
			won++
		default:
			wantErr(t, "concurrent CreateVMSession", err, store.ErrConflict)
		}
	}
	if won != 1 {
		t.Errorf("%d of %d concurrent CreateVMSession calls succeeded; want exactly 1", won, n)
	}
}

func vmIDs(ss []store.VMSession) []string {
	var out []string
	for _, s := range ss {
		out = append(out, s.ID)
	}
	return out
}
