package runc

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	gorunc "github.com/containerd/go-runc"

	"polydev/internal/egress/gateway"
	"polydev/internal/runtime/runc/wire"
)

// socket is the worker's socket on the host.
func (c *container) socket() string { return filepath.Join(c.dir, "worker.sock") }

// listenFile creates a listening unix socket at path (mode 0600) and
// returns it as a file to hand to the container; the socket stays on disk
// when the file is closed.
func listenFile(path string) (*os.File, error) {
	ln, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	ln.SetUnlinkOnClose(false)
	defer ln.Close()
	if err := os.Chmod(path, 0o600); err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	f, err := ln.File()
	if err != nil {
		return nil, fmt.Errorf("worker socket: %w", err)
	}
	return f, nil
}

// start makes, starts and health-checks one container.
func (p *Pool) start(ctx context.Context, provider string) (c *container, err error) {
	t0 := time.Now()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), p.cfg.StartTimeout)
	defer cancel()
	p.mu.Lock()
	slot := 0
	for p.slots[slot] {
		slot++
	}
	p.slots[slot] = true
	userns := p.userns
	p.mu.Unlock()

	id := p.prefix + "-" + randomHex(6)
	c = &container{id: id, provider: provider, dir: filepath.Join(p.cfg.Root, "c", id), slot: slot, created: time.Now(), stderr: &tailBuffer{}}
	if userns {
		c.ids = idMap{enabled: true, hostID: p.cfg.HostIDBase + uint32(slot)*idRange}
	} else {
		c.ids = idMap{hostID: p.cfg.HostIDBase + uint32(slot)}
	}
	p.mu.Lock()
	p.all[id] = c
	p.mu.Unlock()
	defer func() {
		if err != nil {
			p.destroy(c, "start failed")
		}
	}()
	uid := c.ids.hostWorkerID()
	for _, d := range []struct {
		path string
		mode os.FileMode
		own  bool
	}{{c.dir, 0o711, false}, {filepath.Join(c.dir, "egress"), 0o700, true}} {
		if err := os.Mkdir(d.path, d.mode); err != nil {
			return nil, err
		}
		if err := os.Chmod(d.path, d.mode); err != nil {
			return nil, err
		}
		if d.own {
			if err := os.Chown(d.path, uid, uid); err != nil {
				return nil, err
			}
		}
	}
	c.gw, err = gateway.Listen(filepath.Join(c.dir, "egress", "egress.sock"), uid, uid, p.log.With("container", id))
	if err != nil {
		return nil, err
	}
	spec := containerSpec(id, p.rootfs, c.dir, "/"+id, p.cfg.Limits, c.ids)
	sb, err := json.Marshal(spec)
	if err != nil {
		return nil, err
	}
	if err := os.WriteFile(filepath.Join(c.dir, "config.json"), sb, 0o600); err != nil {
		return nil, err
	}
	// The worker's socket is made here and handed in as fd 3: the worker
	// gets no writable host directory, and only root can connect (0600).
	lnFile, err := listenFile(c.socket())
	if err != nil {
		return nil, err
	}
	stdio, err := newStdio(c.stderr)
	if err != nil {
		lnFile.Close()
		return nil, err
	}
	_, err = p.rc.Run(ctx, id, c.dir, &gorunc.CreateOpts{Detach: true, IO: stdio, ExtraFiles: []*os.File{lnFile}})
	stdio.closeChildEnds()
	lnFile.Close()
	if err != nil {
		return nil, fmt.Errorf("runc run: %w: %s", err, c.stderr.String())
	}
	if err := p.waitReady(ctx, c); err != nil {
		return nil, fmt.Errorf("worker not ready: %w: %s", err, c.stderr.String())
	}
	p.metrics.startSeconds.WithLabelValues(provider).Observe(time.Since(t0).Seconds())
	return c, nil
}

func (p *Pool) waitReady(ctx context.Context, c *container) error {
	sock := c.socket()
	delay := time.Millisecond
	for {
		if _, err := os.Stat(sock); err == nil {
			if err := ping(ctx, sock); err == nil {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(delay):
		}
		if delay < 20*time.Millisecond {
			delay *= 2
		}
	}
}

// ping asks the worker at sock whether it is alive.
func ping(ctx context.Context, sock string) error {
	d := net.Dialer{Timeout: time.Second}
	conn, err := d.DialContext(ctx, "unix", sock)
	if err != nil {
		return err
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(2 * time.Second))
	if _, err := conn.Write([]byte(`{"op":"ping"}` + "\n")); err != nil {
		return err
	}
	var r wire.Reply
	if err := json.NewDecoder(conn).Decode(&r); err != nil {
		return err
	}
	if !r.OK {
		return fmt.Errorf("ping: %s", r.Error)
	}
	return nil
}

// destroy removes a container and everything it had on the host. Safe for
// a container that is half made.
func (p *Pool) destroy(c *container, reason string) {
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	if err := p.rc.Delete(ctx, c.id, &gorunc.DeleteOpts{Force: true}); err != nil && !strings.Contains(err.Error(), "does not exist") {
		p.log.Warn("runtime pool: runc delete failed", "container", c.id, "err", err)
	}
	if c.gw != nil {
		_ = c.gw.Close()
	}
	removeCgroups(c.id, p.log)
	if err := os.RemoveAll(c.dir); err != nil {
		p.log.Warn("runtime pool: remove container dir failed", "container", c.id, "err", err)
	}
	p.mu.Lock()
	delete(p.all, c.id)
	delete(p.slots, c.slot)
	p.mu.Unlock()
	p.metrics.destroyed.WithLabelValues(c.provider, reason).Inc()
	p.log.Debug("runtime pool: container destroyed", "container", c.id, "provider", c.provider, "reason", reason, "uses", c.uses)
}

func randomHex(n int) string {
	b := make([]byte, n)
	_, _ = rand.Read(b)
	return hex.EncodeToString(b)
}
