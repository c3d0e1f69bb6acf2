// Package agent is the program that runs inside a login VM. For now it only
// proves the VM is up: it answers the manager's "ping <nonce>" with "ready
// <nonce>" and powers the VM off when told "poweroff", on whichever channel
// the VMM gives it — the virtio-serial port QEMU opens, or vsock port
// VsockPort, which Firecracker exposes to the host as a Unix socket. The
// login flow (WebRTC, token capture) builds on this channel later.
//
// The agent must not import server-side packages: it is small, static
// (CGO_ENABLED=0) and knows nothing but this protocol.
package agent

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// PortName is the virtio-serial port name the manager gives the channel.
const PortName = "org.polydev.agent"

// VsockPort is the vsock port of the same channel (Firecracker's
// sandbox/firecracker.DefaultAgentPort).
const VsockPort = 1024

// Config configures Run.
type Config struct {
	Port     string // port name; default PortName
	SysClass string // default /sys/class/virtio-ports
	DevDir   string // default /dev
	Disk     string // block device whose golden header is checked; default /dev/vda
	// PowerOff ends the VM; default reboot(2), which QEMU's -no-reboot
	// turns into an exit of the VMM.
	PowerOff func() error
}

// GoldenMagic starts the golden test disk; the agent reports disk=ok when
// it reads it and can write behind it (into the VM's overlay).
const GoldenMagic = "POLYDEV-GOLDEN-1"

// Run serves the channel until ctx ends or the manager says poweroff.
func Run(ctx context.Context, cfg Config, log *slog.Logger) error {
	if cfg.Port == "" {
		cfg.Port = PortName
	}
	if cfg.SysClass == "" {
		cfg.SysClass = "/sys/class/virtio-ports"
	}
	if cfg.DevDir == "" {
		cfg.DevDir = "/dev"
	}
	if cfg.Disk == "" {
		cfg.Disk = "/dev/vda"
	}
	if cfg.PowerOff == nil {
		cfg.PowerOff = func() error {
			unix.Sync()
			return unix.Reboot(unix.LINUX_REBOOT_CMD_RESTART)
		}
	}
	disk := checkDisk(cfg.Disk)
	// vsock where the VM has it (Firecracker); virtio-serial below (QEMU).
	go func() {
		if err := ServeVsock(ctx, VsockPort, disk, cfg.PowerOff); err != nil && ctx.Err() == nil {
			log.Info("agent: no vsock channel", "err", err)
		}
	}()
	dev, err := findPort(ctx, cfg)
	if err != nil {
		return err
	}
	log.Info("agent channel found", "device", dev, "disk", disk)
	// The manager connects and disconnects as it pleases; a disconnect
	// reads as end of file, after which the port is served again. The
	// agent runs as PID 1: returning would panic the guest.
	for {
		f, err := os.OpenFile(dev, os.O_RDWR, 0)
		if err != nil {
			return fmt.Errorf("agent: open %s: %w", dev, err)
		}
		err = serve(ctx, f, disk, cfg.PowerOff)
		f.Close()
		if !errors.Is(err, io.EOF) {
			return err
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// serve answers the manager's lines on rw.
func serve(ctx context.Context, rw io.ReadWriter, disk string, powerOff func() error) error {
	sc := bufio.NewScanner(rw)
	for sc.Scan() {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		cmd, arg, _ := strings.Cut(strings.TrimSpace(sc.Text()), " ")
		switch cmd {
		case "ping":
			if _, err := fmt.Fprintf(rw, "ready %s disk=%s\n", arg, disk); err != nil {
				return fmt.Errorf("agent: write: %w", err)
			}
		case "poweroff":
			fmt.Fprintf(rw, "bye\n")
			return powerOff()
		case "":
		default:
			fmt.Fprintf(rw, "error unknown command\n")
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("agent: read: %w", err)
	}
	return io.EOF
}

// findPort waits for the named virtio-serial port to appear and returns its
// device path.
func findPort(ctx context.Context, cfg Config) (string, error) {
	for {
		ents, _ := os.ReadDir(cfg.SysClass)
		for _, e := range ents {
			b, err := os.ReadFile(filepath.Join(cfg.SysClass, e.Name(), "name"))
			if err == nil && strings.TrimSpace(string(b)) == cfg.Port {
				return filepath.Join(cfg.DevDir, e.Name()), nil
			}
		}
		select {
		case <-ctx.Done():
			return "", fmt.Errorf("agent: port %s not found: %w", cfg.Port, ctx.Err())
		case <-time.After(20 * time.Millisecond):
		}
	}
}

// checkDisk reads the golden header and writes a block behind it, which
// lands in the VM's copy-on-write overlay, never in the golden image.
func checkDisk(path string) string {
	f, err := os.OpenFile(path, os.O_RDWR, 0)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return "none"
		}
		return "error"
	}
	defer f.Close()
	buf := make([]byte, len(GoldenMagic))
	if _, err := io.ReadFull(f, buf); err != nil || string(buf) != GoldenMagic {
		return "foreign"
	}
	if _, err := f.WriteAt([]byte("touched by this vm\n"), 4096); err != nil {
		return "readonly"
	}
	if err := f.Sync(); err != nil {
		return "readonly"
	}
	return "ok"
}

// ServeVsock listens on vsock port and serves each connection in turn with
// the same protocol as the serial port, until ctx ends. It fails at once
// where the kernel has no vsock transport.
func ServeVsock(ctx context.Context, port uint32, disk string, powerOff func() error) error {
	// Non-blocking descriptors, so the os.Files below are served by the
	// runtime's poller and Close interrupts a pending accept or read.
	fd, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM|unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK, 0)
	if err != nil {
		return fmt.Errorf("agent: vsock: %w", err)
	}
	if err := unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port}); err != nil {
		unix.Close(fd)
		return fmt.Errorf("agent: vsock bind %d: %w", port, err)
	}
	if err := unix.Listen(fd, 4); err != nil {
		unix.Close(fd)
		return fmt.Errorf("agent: vsock listen: %w", err)
	}
	ln := os.NewFile(uintptr(fd), "vsock-listener")
	defer ln.Close()
	stop := context.AfterFunc(ctx, func() { ln.Close() })
	defer stop()
	rc, err := ln.SyscallConn()
	if err != nil {
		return fmt.Errorf("agent: vsock: %w", err)
	}
	for {
		var nfd int
		var aerr error
		err := rc.Read(func(lfd uintptr) bool {
			nfd, _, aerr = unix.Accept4(int(lfd), unix.SOCK_CLOEXEC|unix.SOCK_NONBLOCK)
			return !errors.Is(aerr, unix.EAGAIN)
		})
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err == nil {
			err = aerr
		}
		if err != nil {
			if errors.Is(err, unix.EINTR) || errors.Is(err, unix.ECONNABORTED) {
				continue
			}
			return fmt.Errorf("agent: vsock accept: %w", err)
		}
		conn := os.NewFile(uintptr(nfd), "vsock")
		stopConn := context.AfterFunc(ctx, func() { conn.Close() })
		err = serve(ctx, conn, disk, powerOff)
		stopConn()
		conn.Close()
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if err != nil && !errors.Is(err, io.EOF) && !errors.Is(err, os.ErrClosed) {
			return err
		}
	}
}
