package sandbox

import (
	"bufio"
	"bytes"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"sort"
	"strings"
)

// HostSnapshot records what a login-VM manager could leave behind on this
// host, broadly rather than through the manager's own naming rules: every
// process whose argv mentions the state root (or a VM marker outside /tmp,
// where parallel tests keep theirs), every tap-* network link not tagged for
// another root, every file under the state root, every cgroup directory
// whose path mentions "polydev", and every mount under the root. Tests and
// `polydev bench vm` compare snapshots to prove destruction leaves nothing.
type HostSnapshot struct {
	Processes []string
	Links     []string
	Files     []string
	Cgroups   []string
	Mounts    []string
}

// Snapshot takes a HostSnapshot for a state root.
func Snapshot(root, cgroupRoot string) HostSnapshot {
	var s HostSnapshot
	ents, _ := os.ReadDir("/proc")
	for _, e := range ents {
		if e.Name()[0] < '0' || e.Name()[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + e.Name() + "/cmdline")
		if err != nil || len(b) == 0 {
			continue
		}
		cmd := string(bytes.ReplaceAll(bytes.TrimRight(b, "\x00"), []byte{0}, []byte{' '}))
		if strings.Contains(cmd, root+"/") || strings.Contains(cmd, MarkerPrefix) && !strings.Contains(cmd, "/tmp/") {
			s.Processes = append(s.Processes, fmt.Sprintf("%s: %s", e.Name(), cmd))
		}
	}
	links, _ := os.ReadDir("/sys/class/net")
	for _, l := range links {
		if !strings.HasPrefix(l.Name(), "tap-") {
			continue
		}
		// Taps tagged for another state root (another manager, a parallel
		// test) are theirs; untagged ones count.
		b, _ := os.ReadFile(filepath.Join("/sys/class/net", l.Name(), "ifalias"))
		if a := strings.TrimSpace(string(b)); a == "" || a == tapAlias(root) {
			s.Links = append(s.Links, l.Name())
		}
	}
	filepath.WalkDir(root, func(p string, d fs.DirEntry, err error) error {
		if err == nil && p != root {
			s.Files = append(s.Files, p)
		}
		return nil
	})
	hier, _ := os.ReadDir(cgroupRoot)
	for _, h := range hier {
		for _, top := range []string{filepath.Join(cgroupRoot, h.Name())} {
			tops, _ := os.ReadDir(top)
			for _, t := range tops {
				if t.IsDir() && strings.Contains(t.Name(), "polydev") {
					filepath.WalkDir(filepath.Join(top, t.Name()), func(p string, d fs.DirEntry, err error) error {
						if err == nil && d.IsDir() {
							s.Cgroups = append(s.Cgroups, p)
						}
						return nil
					})
				}
			}
		}
		if h.IsDir() && strings.Contains(h.Name(), "polydev") { // cgroup v2
			filepath.WalkDir(filepath.Join(cgroupRoot, h.Name()), func(p string, d fs.DirEntry, err error) error {
				if err == nil && d.IsDir() {
					s.Cgroups = append(s.Cgroups, p)
				}
				return nil
			})
		}
	}
	if f, err := os.Open("/proc/self/mountinfo"); err == nil {
		sc := bufio.NewScanner(f)
		for sc.Scan() {
			fields := strings.Fields(sc.Text())
			if len(fields) > 4 && (strings.HasPrefix(fields[4], root) || strings.Contains(fields[4], "polydev")) {
				s.Mounts = append(s.Mounts, fields[4])
			}
		}
		f.Close()
	}
	// Under any parent ("polydev-vms", or a test's own), only this root's
	// instance dir counts: other instances belong to parallel managers, and
	// a shared parent stays while any manager runs.
	inst := newCgroups(cgroupRoot, "", root, 64, 1).rel
	var cgs []string
	for _, p := range s.Cgroups {
		parts := strings.Split(strings.TrimPrefix(p, cgroupRoot+"/"), "/")
		for i, part := range parts {
			if strings.Contains(part, "polydev") {
				if i+1 < len(parts) && parts[i+1] == inst {
					cgs = append(cgs, p)
				}
				break
			}
		}
	}
	s.Cgroups = cgs
	for _, l := range [][]string{s.Processes, s.Links, s.Files, s.Cgroups, s.Mounts} {
		sort.Strings(l)
	}
	return s
}

// Diff lists what is in after but not in s, one line per item.
func (s HostSnapshot) Diff(after HostSnapshot) []string {
	var out []string
	add := func(kind string, before, now []string) {
		had := map[string]bool{}
		for _, b := range before {
			had[b] = true
		}
		for _, n := range now {
			if !had[n] {
				out = append(out, kind+": "+n)
			}
		}
	}
	add("process", s.Processes, after.Processes)
	add("link", s.Links, after.Links)
	add("file", s.Files, after.Files)
	add("cgroup", s.Cgroups, after.Cgroups)
	add("mount", s.Mounts, after.Mounts)
	return out
}
