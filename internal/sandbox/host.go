package sandbox

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// This file holds the host resources the Manager owns: tap devices and
// cgroups. Each create has a remove that tolerates the resource being gone
// (reporting removed=false), so undo steps can be registered before the
// create and run any number of times.

// tapName is the tap device of VM id (at most 15 bytes: IFNAMSIZ-1).
func tapName(id string) string { return "tap-" + id }

// tapAlias tags a tap with the state root that owns it, so Reconcile of one
// manager never touches another's taps.
func tapAlias(root string) string { return "polydev:" + root }

func tapExists(name string) bool {
	_, err := os.Stat(filepath.Join("/sys/class/net", name))
	return err == nil
}

// createTap creates a persistent tap device and tags it with alias.
func createTap(name, alias string) error {
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	if err := unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); err != nil {
		return fmt.Errorf("create tap %s: %w", name, err)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 1); err != nil {
		return fmt.Errorf("create tap %s: persist: %w", name, err)
	}
	if err := os.WriteFile(filepath.Join("/sys/class/net", name, "ifalias"), []byte(alias), 0); err != nil {
		return fmt.Errorf("create tap %s: alias: %w", name, err)
	}
	return nil
}

// removeTap deletes the tap device; removed is false when it did not exist.
func removeTap(name string) (removed bool, err error) {
	if !tapExists(name) {
		return false, nil
	}
	fd, err := unix.Open("/dev/net/tun", unix.O_RDWR|unix.O_CLOEXEC, 0)
	if err != nil {
		return false, fmt.Errorf("remove tap %s: %w", name, err)
	}
	defer unix.Close(fd)
	ifr, err := unix.NewIfreq(name)
	if err != nil {
		return false, fmt.Errorf("remove tap %s: %w", name, err)
	}
	ifr.SetUint16(unix.IFF_TAP | unix.IFF_NO_PI | unix.IFF_VNET_HDR)
	var lastErr error
	for i := 0; i < 100; i++ { // the VMM may still hold it for a moment after exit
		if lastErr = unix.IoctlIfreq(fd, unix.TUNSETIFF, ifr); lastErr == nil {
			break
		}
		if !tapExists(name) {
			return false, nil
		}
		time.Sleep(10 * time.Millisecond)
	}
	if lastErr != nil {
		return false, fmt.Errorf("remove tap %s: attach: %w", name, lastErr)
	}
	if err := unix.IoctlSetInt(fd, unix.TUNSETPERSIST, 0); err != nil {
		return false, fmt.Errorf("remove tap %s: %w", name, err)
	}
	return true, nil // the device goes away when fd closes
}

// listTaps returns the ids of taps tagged with alias.
func listTaps(alias string) []string {
	ents, _ := os.ReadDir("/sys/class/net")
	var ids []string
	for _, e := range ents {
		if !strings.HasPrefix(e.Name(), "tap-") {
			continue
		}
		b, err := os.ReadFile(filepath.Join("/sys/class/net", e.Name(), "ifalias"))
		if err == nil && strings.TrimSpace(string(b)) == alias {
			ids = append(ids, strings.TrimPrefix(e.Name(), "tap-"))
		}
	}
	return ids
}

// cgroups places VMM processes in per-VM cgroups under
// <parent>/<instance>/<id>, where instance is derived from the state root.
// It handles cgroup v2 (unified) and v1 (memory and cpu hierarchies).
type cgroups struct {
	root     string // /sys/fs/cgroup
	rel      string // <parent>/<instance>
	v2       bool
	memBytes int64
	cpuQuota int // microseconds per 100 ms period
}

func newCgroups(cfgRoot, parent, stateRoot string, memMiB, vcpus int) *cgroups {
	sum := sha256.Sum256([]byte(stateRoot))
	_, err := os.Stat(filepath.Join(cfgRoot, "cgroup.controllers"))
	return &cgroups{
		root:     cfgRoot,
		rel:      filepath.Join(parent, hex.EncodeToString(sum[:4])),
		v2:       err == nil,
		memBytes: int64(memMiB) << 20,
		cpuQuota: 100000 * vcpus,
	}
}

// dirs returns the cgroup directories of id ("" for the instance dirs).
func (c *cgroups) dirs(id string) []string {
	if c.v2 {
		return []string{filepath.Join(c.root, c.rel, id)}
	}
	return []string{filepath.Join(c.root, "memory", c.rel, id), filepath.Join(c.root, "cpu", c.rel, id)}
}

func (c *cgroups) create(id string) error {
	if c.v2 {
		// Enable the controllers down the path, then create the leaf.
		parts := strings.Split(c.rel, "/")
		p := c.root
		for _, part := range parts {
			os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory +cpu"), 0)
			p = filepath.Join(p, part)
			if err := os.Mkdir(p, 0o755); err != nil && !errors.Is(err, os.ErrExist) {
				return fmt.Errorf("cgroup: %w", err)
			}
		}
		os.WriteFile(filepath.Join(p, "cgroup.subtree_control"), []byte("+memory +cpu"), 0)
		leaf := filepath.Join(p, id)
		if err := os.Mkdir(leaf, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
		if err := os.WriteFile(filepath.Join(leaf, "memory.max"), []byte(strconv.FormatInt(c.memBytes, 10)), 0); err != nil {
			return fmt.Errorf("cgroup: memory.max: %w", err)
		}
		if err := os.WriteFile(filepath.Join(leaf, "cpu.max"), []byte(fmt.Sprintf("%d 100000", c.cpuQuota)), 0); err != nil {
			return fmt.Errorf("cgroup: cpu.max: %w", err)
		}
		return nil
	}
	d := c.dirs(id)
	for _, dir := range d {
		if err := os.MkdirAll(dir, 0o755); err != nil {
			return fmt.Errorf("cgroup: %w", err)
		}
	}
	if err := os.WriteFile(filepath.Join(d[0], "memory.limit_in_bytes"), []byte(strconv.FormatInt(c.memBytes, 10)), 0); err != nil {
		return fmt.Errorf("cgroup: memory limit: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d[1], "cpu.cfs_period_us"), []byte("100000"), 0); err != nil {
		return fmt.Errorf("cgroup: cpu period: %w", err)
	}
	if err := os.WriteFile(filepath.Join(d[1], "cpu.cfs_quota_us"), []byte(strconv.Itoa(c.cpuQuota)), 0); err != nil {
		return fmt.Errorf("cgroup: cpu quota: %w", err)
	}
	return nil
}

// place moves pid into id's cgroups.
func (c *cgroups) place(id string, pid int) error {
	for _, dir := range c.dirs(id) {
		if err := os.WriteFile(filepath.Join(dir, "cgroup.procs"), []byte(strconv.Itoa(pid)), 0); err != nil {
			return fmt.Errorf("cgroup: place %d: %w", pid, err)
		}
	}
	return nil
}

// remove deletes id's cgroups, retrying briefly while a dying process
// still counts as a member.
func (c *cgroups) remove(id string) (removed bool, err error) {
	var errs []error
	for _, dir := range c.dirs(id) {
		for i := 0; ; i++ {
			err := unix.Rmdir(dir)
			if err == nil {
				removed = true
				break
			}
			if errors.Is(err, unix.ENOENT) {
				break
			}
			if errors.Is(err, unix.EBUSY) && i < 200 {
				time.Sleep(5 * time.Millisecond)
				continue
			}
			errs = append(errs, fmt.Errorf("cgroup: remove %s: %w", dir, err))
			break
		}
	}
	return removed, errors.Join(errs...)
}

// list returns the ids that have a cgroup under this instance.
func (c *cgroups) list() []string {
	seen := map[string]bool{}
	var ids []string
	for _, dir := range c.dirs("") {
		ents, _ := os.ReadDir(dir)
		for _, e := range ents {
			if e.IsDir() && validID(e.Name()) && !seen[e.Name()] {
				seen[e.Name()] = true
				ids = append(ids, e.Name())
			}
		}
	}
	return ids
}

// removeInstance removes the instance (and, if empty, the parent) dirs.
func (c *cgroups) removeInstance() {
	for _, dir := range c.dirs("") {
		unix.Rmdir(dir)
		unix.Rmdir(filepath.Dir(dir))
	}
}

// validID reports whether s has the shape of a VM id.
func validID(s string) bool {
	if len(s) != idLen {
		return false
	}
	for _, r := range s {
		if !(r >= '0' && r <= '9' || r >= 'a' && r <= 'f') {
			return false
		}
	}
	return true
}

const idLen = 10
