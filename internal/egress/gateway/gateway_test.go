package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"polydev/internal/egress/gateway"
)

type recorder struct {
	mu    sync.Mutex
	addrs []string
}

func (r *recorder) dial(port int) gateway.DialFunc {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		r.mu.Lock()
		r.addrs = append(r.addrs, fmt.Sprintf("%d>%s", port, addr))
		r.mu.Unlock()
		return gateway.Direct()(ctx, network, addr)
	}
}

func listen(t *testing.T) (*gateway.Gateway, string) {
	t.Helper()
	path := filepath.Join(t.TempDir(), "egress.sock")
	g, err := gateway.Listen(path, os.Getuid(), os.Getgid(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { g.Close() })
	return g, path
}

// Plain http (absolute-form) and https (CONNECT) requests through the
// gateway leave through the bound dialer; unbound, the gateway refuses.
func TestGatewayRoutesThroughBoundEgress(t *testing.T) {
	t.Parallel()
	plain := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "plain") }))
	defer plain.Close()
	tlsSrv := httptest.NewTLSServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "tls") }))
	defer tlsSrv.Close()
	g, path := listen(t)
	c := gateway.Client(path)
	c.Transport.(*http.Transport).TLSClientConfig = tlsSrv.Client().Transport.(*http.Transport).TLSClientConfig

	if resp, err := c.Get(plain.URL); err == nil {
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("unbound gateway: got %s; want 503", resp.Status)
		}
		resp.Body.Close()
	}
	rec := &recorder{}
	g.Bind(10005, rec.dial(10005))
	for _, tc := range []struct{ url, want string }{{plain.URL, "plain"}, {tlsSrv.URL, "tls"}} {
		resp, err := c.Get(tc.url)
		if err != nil {
			t.Fatalf("GET %s: %v", tc.url, err)
		}
		body, _ := io.ReadAll(resp.Body)
		resp.Body.Close()
		if string(body) != tc.want {
			t.Errorf("GET %s: got %q; want %q", tc.url, body, tc.want)
		}
	}
	rec.mu.Lock()
	got := strings.Join(rec.addrs, " ")
	rec.mu.Unlock()
	want := "10005>" + strings.TrimPrefix(plain.URL, "http://") + " 10005>" + strings.TrimPrefix(tlsSrv.URL, "https://")
	if got != want {
		t.Errorf("dials: got %q; want %q", got, want)
	}
	g.Unbind()
	c.CloseIdleConnections()
	if resp, err := c.Get(plain.URL); err == nil {
		if resp.StatusCode != http.StatusServiceUnavailable {
			t.Errorf("after Unbind: got %s; want 503", resp.Status)
		}
		resp.Body.Close()
	}
}

// Unbind cuts a tunnel that is still open: a connection made for one
// request cannot outlive it.
func TestUnbindCutsTunnels(t *testing.T) {
	t.Parallel()
	echo, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer echo.Close()
	go func() {
		for {
			c, err := echo.Accept()
			if err != nil {
				return
			}
			go io.Copy(c, c)
		}
	}()
	g, path := listen(t)
	g.Bind(1, gateway.Direct())
	conn, err := net.Dial("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	fmt.Fprintf(conn, "CONNECT %s HTTP/1.1\r\nHost: %s\r\n\r\n", echo.Addr(), echo.Addr())
	br := bufio.NewReader(conn)
	line, _ := br.ReadString('\n')
	if !strings.Contains(line, "200") {
		t.Fatalf("CONNECT: got %q", line)
	}
	br.ReadString('\n')
	io.WriteString(conn, "ping\n")
	if got, _ := br.ReadString('\n'); got != "ping\n" {
		t.Fatalf("through the tunnel: got %q", got)
	}
	g.Unbind()
	conn.SetReadDeadline(time.Now().Add(5 * time.Second))
	io.WriteString(conn, "after\n")
	if got, err := br.ReadString('\n'); err == nil {
		t.Errorf("tunnel still open after Unbind: read %q", got)
	}
}

// The socket is only for the container's user.
func TestSocketMode(t *testing.T) {
	t.Parallel()
	_, path := listen(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if fi.Mode().Perm() != 0o600 {
		t.Errorf("socket mode: got %v; want 0600", fi.Mode().Perm())
	}
}
