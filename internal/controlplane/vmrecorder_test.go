package controlplane_test

import (
	"context"
	"errors"
	"log/slog"
	"testing"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/sandbox"
	"polydev/internal/store"
)

// TestVMRecorder covers what the API tests do not reach: transitions of a
// session the store does not know, removals of warm-pool VMs that nobody
// used, and a removal recorded after the session's user was erased.
func TestVMRecorder(t *testing.T) {
	t.Parallel()
	backends(t, func(t *testing.T, st store.Store) {
		ctx := context.Background()
		rec := controlplane.NewVMRecorder(st, slog.New(slog.DiscardHandler))
		err := rec.Status(ctx, sandbox.Transition{SessionID: "6f1c9a2e-8d7b-4c3a-9e5f-1a2b3c4d5e6f", HostID: testHost,
			Status: sandbox.StatusReady, At: time.Now()})
		if !errors.Is(err, store.ErrNotFound) {
			t.Errorf("Status of an unknown session: %v; want ErrNotFound", err)
		}
		if err := rec.Removed(ctx, sandbox.Report{VMID: "0a1b2c3d4e", HostID: testHost, Reason: "close",
			Removed: []string{"process", "state_dir"}}); err != nil {
			t.Errorf("Removed of a warm-pool VM: %v", err)
		}

		u := &store.User{Email: "ada@example.org", KDFParams: []byte(`{}`), AuthHash: []byte{1}, AuthSalt: []byte{2},
			AuthAlgo: "x", WrappedAccountKey: "w", WrappedPrivateKey: "p", PublicKey: "k"}
		if err := st.CreateUser(ctx, u); err != nil {
			t.Fatal(err)
		}
		v := &store.VMSession{Provider: "google", HostID: testHost}
		if err := st.CreateVMSession(ctx, u.ID, v); err != nil {
			t.Fatal(err)
		}
		for _, s := range []sandbox.Status{sandbox.StatusBooting, sandbox.StatusReady, sandbox.StatusDestroyed} {
			if err := rec.Status(ctx, sandbox.Transition{SessionID: v.ID, VMID: "0a1b2c3d4e", HostID: testHost, Status: s, At: time.Now()}); err != nil {
				t.Fatalf("Status(%s): %v", s, err)
			}
		}
		if got, _ := st.VMSession(ctx, u.ID, v.ID); got.Status != store.VMDestroyed || got.VMID != "0a1b2c3d4e" {
			t.Errorf("row after the transitions: %+v", got)
		}
		// The session is no longer live, so only the recorder's memory
		// knows its user; the user is erased before the removal is
		// recorded: the event is kept without them.
		if err := st.DeleteUser(ctx, u.ID); err != nil {
			t.Fatal(err)
		}
		if err := rec.Removed(ctx, sandbox.Report{VMID: "0a1b2c3d4e", SessionID: v.ID, HostID: testHost, Reason: "destroy",
			Removed: []string{"process"}}); err != nil {
			t.Errorf("Removed after the user's erasure: %v", err)
		}
	})
}
