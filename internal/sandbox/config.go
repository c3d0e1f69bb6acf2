package sandbox

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"
)

// Config configures a Manager. Zero fields take the defaults below.
type Config struct {
	Root           string        // state root; default /var/lib/polydev/vms
	HostID         string        // this host's id, recorded with every VM
	Image          Image         // golden image (required)
	MemoryMiB      int           // guest memory and cgroup memory limit; default 512
	VCPUs          int           // guest vCPUs and cgroup CPU quota; default 1
	OverlayBytes   int64         // overlay budget; default 200 MiB
	MaxLifetime    time.Duration // a bound VM is destroyed this long after allocation; default 10m
	MaxVMs         int           // cap on live VMs (pool included); default 8
	PoolSize       int           // warm VMs kept ready; default 2; negative for none
	BootTimeout    time.Duration // boot-to-ready limit; default 60s
	DestroyTimeout time.Duration // destroy's own deadline; default 10s
	ReconcileEvery time.Duration // reconcile timer; default 1m; negative for none
	CgroupRoot     string        // cgroup filesystem; default /sys/fs/cgroup
	CgroupParent   string        // parent cgroup name; default "polydev-vms"
}

// DefaultRoot is the default state root.
const DefaultRoot = "/var/lib/polydev/vms"

func (c *Config) setDefaults() error {
	if c.Root == "" {
		c.Root = DefaultRoot
	}
	abs, err := filepath.Abs(c.Root)
	if err != nil {
		return fmt.Errorf("sandbox config: root: %w", err)
	}
	c.Root = filepath.Clean(abs)
	if c.Image.Kernel == "" {
		return errors.New("sandbox config: image kernel is required")
	}
	if c.MemoryMiB == 0 {
		c.MemoryMiB = 512
	}
	if c.VCPUs == 0 {
		c.VCPUs = 1
	}
	if c.OverlayBytes == 0 {
		c.OverlayBytes = 200 << 20
	}
	if c.MaxLifetime == 0 {
		c.MaxLifetime = 10 * time.Minute
	}
	if c.MaxVMs == 0 {
		c.MaxVMs = 8
	}
	if c.PoolSize == 0 {
		c.PoolSize = 2
	}
	if c.PoolSize < 0 {
		c.PoolSize = 0
	}
	if c.PoolSize > c.MaxVMs {
		return fmt.Errorf("sandbox config: pool size %d exceeds max vms %d", c.PoolSize, c.MaxVMs)
	}
	if c.BootTimeout == 0 {
		c.BootTimeout = 60 * time.Second
	}
	if c.DestroyTimeout == 0 {
		c.DestroyTimeout = 10 * time.Second
	}
	if c.ReconcileEvery == 0 {
		c.ReconcileEvery = time.Minute
	}
	if c.CgroupRoot == "" {
		c.CgroupRoot = "/sys/fs/cgroup"
	}
	if c.CgroupParent == "" {
		c.CgroupParent = "polydev-vms"
	}
	if c.MemoryMiB < 64 || c.VCPUs < 1 || c.MaxVMs < 1 {
		return fmt.Errorf("sandbox config: memory %d MiB, vcpus %d, max vms %d out of range", c.MemoryMiB, c.VCPUs, c.MaxVMs)
	}
	return nil
}
