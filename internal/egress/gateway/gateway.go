// Package gateway is the host side of a runtime container's only way out: a
// forward HTTP proxy that listens on a unix socket bind-mounted into one
// container and sends everything it is asked to reach through one upstream
// dialer — the egress proxy port of the user the container currently
// serves.
//
// The container has no network interface but loopback, so it cannot choose
// its egress: it can only ask the gateway, and the gateway dials only what
// the supervisor bound it to for the current request. Between requests the
// gateway is unbound and refuses everything; Unbind also cuts any tunnel
// still open.
//
// Both proxy forms are served: CONNECT host:port (what an HTTP client does
// for https URLs) becomes a byte tunnel over an upstream connection, and an
// absolute-form request (http URLs, used with the local emulator) is
// forwarded over the same upstream dialer.
package gateway

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"sync"
	"time"
)

// DialFunc opens a connection to addr ("host:port") on behalf of the
// container, through the user's egress.
type DialFunc func(ctx context.Context, network, addr string) (net.Conn, error)

// Direct dials addr from this host: development and tests, where egress is
// direct.
func Direct() DialFunc {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return d.DialContext
}

// Gateway is one container's egress gateway. Listen makes one; it must be
// closed.
type Gateway struct {
	path string
	ln   net.Listener
	srv  *http.Server
	log  *slog.Logger

	mu      sync.Mutex
	dial    DialFunc
	port    int
	epoch   uint64 // bumped by each Bind/Unbind; tunnels of an old epoch are cut
	tunnels map[net.Conn]uint64
	closed  bool
	tr      *http.Transport
}

// Listen creates the socket at path (owned by uid:gid, mode 0600, so that
// only the container's user can connect) and serves on it until Close.
func Listen(path string, uid, gid int, log *slog.Logger) (*Gateway, error) {
	_ = os.Remove(path)
	ln, err := net.Listen("unix", path)
	if err != nil {
		return nil, fmt.Errorf("gateway: listen: %w", err)
	}
	if err := os.Chmod(path, 0o600); err != nil {
		ln.Close()
		return nil, fmt.Errorf("gateway: chmod socket: %w", err)
	}
	if err := os.Lchown(path, uid, gid); err != nil {
		ln.Close()
		return nil, fmt.Errorf("gateway: chown socket: %w", err)
	}
	g := &Gateway{path: path, ln: ln, log: log, tunnels: map[net.Conn]uint64{}}
	g.srv = &http.Server{Handler: g, ReadHeaderTimeout: 10 * time.Second, ErrorLog: nil}
	go func() { _ = g.srv.Serve(ln) }()
	return g, nil
}

// Bind directs the gateway to dial through dial, the egress of proxy port
// port, until the next Bind or Unbind.
func (g *Gateway) Bind(port int, dial DialFunc) {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cutLocked()
	g.dial, g.port = dial, port
	g.tr = &http.Transport{
		DialContext:           dial,
		ForceAttemptHTTP2:     false,
		MaxIdleConnsPerHost:   4,
		IdleConnTimeout:       30 * time.Second,
		ResponseHeaderTimeout: 5 * time.Minute,
	}
}

// Unbind makes the gateway refuse every request and cuts open tunnels and
// idle upstream connections.
func (g *Gateway) Unbind() {
	g.mu.Lock()
	defer g.mu.Unlock()
	g.cutLocked()
	g.dial, g.port = nil, 0
}

func (g *Gateway) cutLocked() {
	g.epoch++
	for c := range g.tunnels {
		c.Close()
		delete(g.tunnels, c)
	}
	if g.tr != nil {
		g.tr.CloseIdleConnections()
		g.tr = nil
	}
}

// Close stops the gateway, cuts every tunnel and removes the socket. It is
// safe to call more than once.
func (g *Gateway) Close() error {
	g.mu.Lock()
	if g.closed {
		g.mu.Unlock()
		return nil
	}
	g.closed = true
	g.cutLocked()
	g.dial = nil
	g.mu.Unlock()
	ctx, cancel := context.WithTimeout(context.Background(), time.Second)
	defer cancel()
	_ = g.srv.Shutdown(ctx)
	_ = g.srv.Close()
	if err := os.Remove(g.path); err != nil && !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("gateway: remove socket: %w", err)
	}
	return nil
}

// current returns the bound dialer, transport and epoch, or nil.
func (g *Gateway) current() (DialFunc, *http.Transport, uint64, int) {
	g.mu.Lock()
	defer g.mu.Unlock()
	return g.dial, g.tr, g.epoch, g.port
}

// track registers a tunnel end under epoch; false if the epoch is over.
func (g *Gateway) track(c net.Conn, epoch uint64) bool {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.closed || g.epoch != epoch {
		return false
	}
	g.tunnels[c] = epoch
	return true
}

func (g *Gateway) untrack(c net.Conn) {
	g.mu.Lock()
	delete(g.tunnels, c)
	g.mu.Unlock()
}

// ServeHTTP implements the proxy.
func (g *Gateway) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	dial, tr, epoch, port := g.current()
	if dial == nil {
		http.Error(w, "egress gateway: not bound to a request", http.StatusServiceUnavailable)
		return
	}
	if r.Method == http.MethodConnect {
		g.tunnel(w, r, dial, epoch, port)
		return
	}
	if r.URL.Scheme != "http" || r.URL.Host == "" {
		http.Error(w, "egress gateway: absolute http URL or CONNECT required", http.StatusBadRequest)
		return
	}
	out := r.Clone(r.Context())
	out.RequestURI = ""
	out.Header.Del("Proxy-Connection")
	out.Header.Del("Proxy-Authorization")
	resp, err := tr.RoundTrip(out)
	if err != nil {
		g.log.Warn("egress gateway: upstream request failed", "egress_port", port, "err", err)
		http.Error(w, "egress gateway: upstream failed", http.StatusBadGateway)
		return
	}
	defer resp.Body.Close()
	for k, vs := range resp.Header {
		for _, v := range vs {
			w.Header().Add(k, v)
		}
	}
	w.WriteHeader(resp.StatusCode)
	fl, _ := w.(http.Flusher)
	buf := make([]byte, 32<<10)
	for {
		n, err := resp.Body.Read(buf)
		if n > 0 {
			if _, werr := w.Write(buf[:n]); werr != nil {
				return
			}
			if fl != nil {
				fl.Flush()
			}
		}
		if err != nil {
			return
		}
	}
}

func (g *Gateway) tunnel(w http.ResponseWriter, r *http.Request, dial DialFunc, epoch uint64, port int) {
	hj, ok := w.(http.Hijacker)
	if !ok {
		http.Error(w, "egress gateway: cannot tunnel", http.StatusInternalServerError)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	up, err := dial(ctx, "tcp", r.Host)
	cancel()
	if err != nil {
		g.log.Warn("egress gateway: upstream dial failed", "egress_port", port, "err", err)
		http.Error(w, "egress gateway: upstream dial failed", http.StatusBadGateway)
		return
	}
	down, rw, err := hj.Hijack()
	if err != nil {
		up.Close()
		return
	}
	if !g.track(up, epoch) || !g.track(down, epoch) {
		up.Close()
		down.Close()
		g.untrack(up)
		g.untrack(down)
		return
	}
	defer func() {
		up.Close()
		down.Close()
		g.untrack(up)
		g.untrack(down)
	}()
	if _, err := io.WriteString(down, "HTTP/1.1 200 Connection Established\r\n\r\n"); err != nil {
		return
	}
	done := make(chan struct{}, 2)
	go func() {
		// Bytes the client sent after the CONNECT line may sit in rw's buffer.
		if n := rw.Reader.Buffered(); n > 0 {
			b, _ := rw.Reader.Peek(n)
			if _, err := up.Write(b); err != nil {
				done <- struct{}{}
				return
			}
		}
		_, _ = io.Copy(up, down)
		if c, ok := up.(interface{ CloseWrite() error }); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	go func() {
		_, _ = io.Copy(down, up)
		if c, ok := down.(interface{ CloseWrite() error }); ok {
			_ = c.CloseWrite()
		}
		done <- struct{}{}
	}()
	<-done
	<-done
}

// Client returns an HTTP client that reaches the network only through the
// gateway socket at path: every connection it makes is to that socket, and
// every request goes as a proxy request (CONNECT for https).
func Client(path string) *http.Client {
	d := &net.Dialer{Timeout: 10 * time.Second}
	return &http.Client{Transport: &http.Transport{
		Proxy: func(*http.Request) (*url.URL, error) { return gatewayURL, nil },
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			return d.DialContext(ctx, "unix", path)
		},
		ForceAttemptHTTP2:   true,
		MaxIdleConnsPerHost: 4,
		IdleConnTimeout:     30 * time.Second,
	}}
}

// gatewayURL names the proxy for net/http; its host is never resolved,
// since Client's dialer always connects to the socket.
var gatewayURL = &url.URL{Scheme: "http", Host: "egress-gateway"}
