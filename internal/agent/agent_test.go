package agent

import (
	"bufio"
	"context"
	"errors"
	"io"
	"net"
	"os"
	"path/filepath"
	"testing"
	"time"

	"golang.org/x/sys/unix"

	"polydev/internal/testenv"
)

func TestServe(t *testing.T) {
	host, guest := net.Pipe()
	defer host.Close()
	off := make(chan struct{})
	done := make(chan error, 1)
	go func() {
		done <- serve(context.Background(), guest, "ok", func() error { close(off); return nil })
		guest.Close()
	}()
	rd := bufio.NewReader(host)
	for _, c := range []struct{ send, want string }{
		{"ping n1\n", "ready n1 disk=ok\n"},
		{"bogus\n", "error unknown command\n"},
		{"ping n2\n", "ready n2 disk=ok\n"},
		{"poweroff\n", "bye\n"},
	} {
		host.SetDeadline(time.Now().Add(5 * time.Second))
		if _, err := io.WriteString(host, c.send); err != nil {
			t.Fatal(err)
		}
		got, err := rd.ReadString('\n')
		if err != nil || got != c.want {
			t.Errorf("after %q: got %q, %v; want %q", c.send, got, err, c.want)
		}
	}
	if err := <-done; err != nil {
		t.Errorf("serve after poweroff: %v", err)
	}
	select {
	case <-off:
	default:
		t.Error("poweroff did not power off")
	}
}

func TestServeEOF(t *testing.T) {
	host, guest := net.Pipe()
	host.Close()
	if err := serve(context.Background(), guest, "none", nil); !errors.Is(err, io.EOF) {
		t.Errorf("serve on a closed channel: %v; want io.EOF (the caller reopens)", err)
	}
}

func TestFindPortAndDisk(t *testing.T) {
	dir := t.TempDir()
	sys := filepath.Join(dir, "sys")
	for name, port := range map[string]string{"vport0p1": "other", "vport1p1": PortName} {
		os.MkdirAll(filepath.Join(sys, name), 0o755)
		os.WriteFile(filepath.Join(sys, name, "name"), []byte(port+"\n"), 0o644)
	}
	got, err := findPort(context.Background(), Config{Port: PortName, SysClass: sys, DevDir: "/dev"})
	if err != nil || got != "/dev/vport1p1" {
		t.Errorf("findPort = %q, %v; want /dev/vport1p1", got, err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 50*time.Millisecond)
	defer cancel()
	if _, err := findPort(ctx, Config{Port: "absent", SysClass: sys, DevDir: "/dev"}); err == nil {
		t.Error("findPort found a port that does not exist")
	}

	disk := filepath.Join(dir, "disk")
	os.WriteFile(disk, append([]byte(GoldenMagic), make([]byte, 8192)...), 0o644)
	if got := checkDisk(disk); got != "ok" {
		t.Errorf("checkDisk(golden) = %q; want ok", got)
	}
	os.WriteFile(disk, make([]byte, 8192), 0o644)
	if got := checkDisk(disk); got != "foreign" {
		t.Errorf("checkDisk(zeros) = %q; want foreign", got)
	}
	if got := checkDisk(filepath.Join(dir, "missing")); got != "none" {
		t.Errorf("checkDisk(missing) = %q; want none", got)
	}
}

// TestServeVsockListens: the agent holds its vsock port while it serves and
// lets it go when told to stop. (A connection needs a vsock transport
// between a guest and its host, which the QEMU and Firecracker suites
// provide; here the kernel's bind table is the witness.)
func TestServeVsockListens(t *testing.T) {
	probe, err := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	if err != nil {
		testenv.Missing(t, "vsock sockets in this kernel: %v", err)
	}
	unix.Close(probe)
	const port = 40123
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- ServeVsock(ctx, port, "ok", func() error { return nil }) }()
	// Give it time to bind, then try to take the port: a probe running
	// before it would steal the port from it.
	select {
	case err := <-done:
		t.Fatalf("ServeVsock ended early: %v", err)
	case <-time.After(300 * time.Millisecond):
	}
	fd, _ := unix.Socket(unix.AF_VSOCK, unix.SOCK_STREAM, 0)
	err = unix.Bind(fd, &unix.SockaddrVM{CID: unix.VMADDR_CID_ANY, Port: port})
	unix.Close(fd)
	if !errors.Is(err, unix.EADDRINUSE) {
		t.Fatalf("binding the agent's vsock port: %v; want EADDRINUSE (the agent holds it)", err)
	}
	cancel()
	select {
	case err := <-done:
		if !errors.Is(err, context.Canceled) {
			t.Fatalf("ServeVsock ended with %v; want context.Canceled", err)
		}
	case <-time.After(5 * time.Second):
		t.Fatal("ServeVsock did not stop with its context")
	}
}
