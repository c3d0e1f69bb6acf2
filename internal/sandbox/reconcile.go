package sandbox

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"sort"
	"syscall"
	"time"
)

// Reconcile implements the API described in sandbox.go: every VM id that
// appears on the host under this manager's naming — a state dir under the
// root, a VMM process whose argv carries the marker and the root, a tap
// tagged with the root, a cgroup under this root's instance — and that no
// live VM owns is torn down and reported to the Recorder.
func (m *Manager) Reconcile(ctx context.Context) ([]Report, error) {
	found := map[string]*orphan{}
	get := func(id string) *orphan {
		o := found[id]
		if o == nil {
			o = &orphan{id: id}
			found[id] = o
		}
		return o
	}
	ents, err := os.ReadDir(m.cfg.Root)
	if err != nil && !errors.Is(err, os.ErrNotExist) {
		return nil, fmt.Errorf("sandbox reconcile: %w", err)
	}
	for _, e := range ents {
		if e.IsDir() && validID(e.Name()) {
			get(e.Name()).dir = true
		}
	}
	for _, p := range findVMMs(m.cfg.Root) {
		if validID(p.ID) {
			get(p.ID).pids = append(get(p.ID).pids, p.PID)
		}
	}
	for _, id := range listTaps(tapAlias(m.cfg.Root)) {
		if validID(id) {
			get(id).tap = true
		}
	}
	for _, id := range m.cg.list() {
		get(id).cgroup = true
	}
	// Ids of state dirs also name taps that lost their tag to a crash
	// between creating the tap and tagging it.
	for id, o := range found {
		if o.dir && tapExists(tapName(id)) {
			o.tap = true
		}
	}

	// Decide ownership after listing: a VM registers itself before it
	// creates anything, so whatever was listed and is not registered now
	// belongs to no one.
	m.mu.Lock()
	var ids []string
	for id := range found {
		if _, live := m.vms[id]; !live {
			ids = append(ids, id)
		}
	}
	m.mu.Unlock()
	sort.Strings(ids)

	var reports []Report
	for _, id := range ids {
		r := m.reclaim(context.WithoutCancel(ctx), found[id])
		reports = append(reports, r)
		if r.SessionID != "" {
			t := Transition{SessionID: r.SessionID, VMID: id, HostID: m.cfg.HostID, Status: StatusDestroyed, At: r.At}
			if err := m.rec.Status(ctx, t); err != nil {
				m.log.Error("record vm status", "vm_id", id, "err", err)
			}
		}
		if err := m.rec.Removed(ctx, r); err != nil {
			m.log.Error("record vm removal", "vm_id", id, "err", err)
		}
		m.log.Warn("reclaimed leftover vm", "vm_id", id, "session_id", r.SessionID, "removed", r.Removed, "errors", r.Errors)
	}
	return reports, nil
}

type orphan struct {
	id     string
	dir    bool
	pids   []int
	tap    bool
	cgroup bool
}

// reclaim removes one orphan's resources in the order destroy would.
func (m *Manager) reclaim(ctx context.Context, o *orphan) Report {
	start := time.Now()
	ctx, cancel := context.WithTimeout(ctx, m.cfg.DestroyTimeout)
	defer cancel()
	r := Report{VMID: o.id, HostID: m.cfg.HostID, Reason: "reconcile"}
	fail := func(kind string, err error) { r.Errors = append(r.Errors, fmt.Sprintf("%s: %v", kind, err)) }
	dir := filepath.Join(m.cfg.Root, o.id)
	if b, err := os.ReadFile(filepath.Join(dir, "owner.json")); err == nil {
		var ow Owner
		if json.Unmarshal(b, &ow) == nil {
			r.SessionID = ow.SessionID
		}
	}
	if len(o.pids) > 0 {
		for _, pid := range o.pids {
			syscall.Kill(pid, syscall.SIGKILL)
		}
		gone := true
		for _, pid := range o.pids {
			gone = waitPidGone(ctx, pid) && gone
		}
		if gone {
			r.Removed = append(r.Removed, ResourceProcess)
		} else {
			fail(ResourceProcess, errors.New("still running after SIGKILL"))
		}
	}
	if o.dir {
		for _, f := range []struct{ kind, name string }{
			{ResourceSocket, "api.sock"}, {ResourceSocket, "agent.sock"},
			{ResourceOverlay, "overlay.qcow2"}, {ResourceOverlay, "overlay.img"},
			{ResourceConfig, "config.json"},
		} {
			err := os.Remove(filepath.Join(dir, f.name))
			switch {
			case err == nil:
				if len(r.Removed) == 0 || r.Removed[len(r.Removed)-1] != f.kind {
					r.Removed = append(r.Removed, f.kind)
				}
			case !errors.Is(err, os.ErrNotExist):
				fail(f.kind, err)
			}
		}
	}
	if o.tap {
		if ok, err := removeTap(tapName(o.id)); err != nil {
			fail(ResourceTap, err)
		} else if ok {
			r.Removed = append(r.Removed, ResourceTap)
		}
	}
	if o.cgroup {
		if ok, err := m.cg.remove(o.id); err != nil {
			fail(ResourceCgroup, err)
		} else if ok {
			r.Removed = append(r.Removed, ResourceCgroup)
		}
	}
	if o.dir {
		if err := os.RemoveAll(dir); err != nil {
			fail(ResourceStateDir, err)
		} else {
			r.Removed = append(r.Removed, ResourceStateDir)
		}
	}
	r.Took, r.At = time.Since(start), time.Now().UTC()
	return r
}

// waitPidGone waits until pid has exited (or is a zombie awaiting its
// parent, which no longer holds any resource).
func waitPidGone(ctx context.Context, pid int) bool {
	for {
		if !ProcessAlive(pid) {
			return true
		}
		select {
		case <-ctx.Done():
			return false
		case <-time.After(5 * time.Millisecond):
		}
	}
}

// fileBytes is the disk space a file uses (0 if absent).
func fileBytes(path string) int64 {
	var st syscall.Stat_t
	if err := syscall.Stat(path, &st); err != nil {
		return 0
	}
	return st.Blocks * 512
}
