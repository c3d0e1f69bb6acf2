// Package egresstest is a faithful fake of the upstream proxy gateway, for
// tests: a real HTTP forward proxy listening on every port of a small range
// of one loopback address, demanding Basic credentials (407 Proxy
// Authentication Required otherwise), tunnelling CONNECT and forwarding
// absolute-form requests, as the commercial gateways do. Each port leaves
// from a loopback source address of its own, so the IP-echo server that
// comes with it — plain HTTP and HTTPS, answering {"ip": "<caller>"} or,
// with ?format=text, the bare address — sees a distinct, stable exit IP per
// port, which is what a gateway's ports are.
//
// Everything listens and dials on loopback only: a forwarded request to any
// other address is refused with 502.
package egresstest

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"io"
	"math/rand/v2"
	"net"
	"net/http"
	"net/http/httptest"
	"strconv"
	"sync"
	"testing"
	"time"

	"polydev/internal/egress"
)

// Upstream is the fake gateway. Its fields are set by Start.
type Upstream struct {
	// Host is the loopback address the ports listen on (127.a.b.c,
	// unique per Upstream so that a test can search logs for it).
	Host               string
	Base, Size         int
	Username, Password string
	// EchoURL and EchoTLSURL answer the caller's address; EchoTLS is the
	// HTTPS server, whose Client() trusts its certificate.
	EchoURL, EchoTLSURL string
	EchoTLS             *httptest.Server

	exitPrefix [3]byte // exit IP of port Base+i is 127.x.y.(i+1)

	mu       sync.Mutex
	hits     map[int]int // requests and tunnels served, by port
	refused  map[int]int // 407 answers, by port
	servers  []*http.Server
	closing  bool
	tunnels  sync.WaitGroup
	tunnelMu sync.Mutex
	conns    map[net.Conn]bool
}

// Start runs an Upstream with size ports (at most 250) and random
// credentials, stopped when t ends.
func Start(t testing.TB, size int) *Upstream {
	t.Helper()
	if size < 1 || size > 250 {
		t.Fatalf("egresstest: %d ports; want 1..250", size)
	}
	u := &Upstream{Size: size, Username: "user-" + token(8), Password: "pass-" + token(16),
		hits: map[int]int{}, refused: map[int]int{}, conns: map[net.Conn]bool{}}
	echo := http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		host, _, _ := net.SplitHostPort(r.RemoteAddr)
		if r.URL.Query().Get("format") == "text" {
			w.Header().Set("Content-Type", "text/plain")
			fmt.Fprintln(w, host)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(map[string]string{"ip": host, "path": r.URL.Path})
	})
	plain := httptest.NewServer(echo)
	t.Cleanup(plain.Close)
	u.EchoTLS = httptest.NewTLSServer(echo)
	t.Cleanup(u.EchoTLS.Close)
	u.EchoURL, u.EchoTLSURL = plain.URL+"/ip", u.EchoTLS.URL+"/ip"

	var listeners []net.Listener
	for attempt := 0; ; attempt++ {
		u.exitPrefix = [3]byte{byte(1 + rand.IntN(250)), byte(rand.IntN(256)), 0}
		u.Host = fmt.Sprintf("127.%d.%d.%d", 1+rand.IntN(250), rand.IntN(256), 1+rand.IntN(254))
		u.Base = 20000 + rand.IntN(40000-size)
		listeners = listeners[:0]
		ok := true
		for i := range size {
			ln, err := net.Listen("tcp", net.JoinHostPort(u.Host, strconv.Itoa(u.Base+i)))
			if err != nil {
				ok = false
				break
			}
			listeners = append(listeners, ln)
		}
		if ok {
			break
		}
		for _, ln := range listeners {
			ln.Close()
		}
		if attempt == 20 {
			t.Fatalf("egresstest: no %d free consecutive ports on loopback", size)
		}
	}
	for i, ln := range listeners {
		port := u.Base + i
		srv := &http.Server{Handler: u.handler(port), ReadHeaderTimeout: 10 * time.Second}
		u.servers = append(u.servers, srv)
		go srv.Serve(ln)
	}
	t.Cleanup(u.close)
	return u
}

func token(n int) string {
	const letters = "abcdefghijkmnpqrstuvwxyz23456789"
	b := make([]byte, n)
	for i := range b {
		b[i] = letters[rand.IntN(len(letters))]
	}
	return string(b)
}

// Config is an egress configuration for this Upstream: its host, ports,
// credentials and plain-HTTP echo as the IP lookup URL, and TLS that
// trusts EchoTLS.
func (u *Upstream) Config() egress.Config {
	return egress.Config{ProxyHost: u.Host, BasePort: u.Base, Size: u.Size,
		Username: egress.NewSecret(u.Username), Password: egress.NewSecret(u.Password),
		IPLookupURL: u.EchoURL, TLS: u.EchoTLS.Client().Transport.(*http.Transport).TLSClientConfig.Clone()}
}

// ExitIP is the address traffic through port leaves from.
func (u *Upstream) ExitIP(port int) string {
	return fmt.Sprintf("127.%d.%d.%d", u.exitPrefix[0], u.exitPrefix[1], port-u.Base+1)
}

// Hits reports how many requests and tunnels port has served.
func (u *Upstream) Hits(port int) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.hits[port]
}

// Refused reports how many 407 answers port has given.
func (u *Upstream) Refused(port int) int {
	u.mu.Lock()
	defer u.mu.Unlock()
	return u.refused[port]
}

// TotalHits is Hits summed over every port.
func (u *Upstream) TotalHits() int {
	u.mu.Lock()
	defer u.mu.Unlock()
	n := 0
	for _, h := range u.hits {
		n += h
	}
	return n
}

func (u *Upstream) close() {
	u.mu.Lock()
	u.closing = true
	u.mu.Unlock()
	for _, s := range u.servers {
		s.Close()
	}
	u.tunnelMu.Lock()
	for c := range u.conns {
		c.Close()
	}
	u.tunnelMu.Unlock()
	u.tunnels.Wait()
}

func (u *Upstream) authorized(r *http.Request) bool {
	want := "Basic " + base64.StdEncoding.EncodeToString([]byte(u.Username+":"+u.Password))
	return subtle.ConstantTimeCompare([]byte(r.Header.Get("Proxy-Authorization")), []byte(want)) == 1
}

// dialer leaves from port's exit IP, to loopback only.
func (u *Upstream) dialer(port int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	d := &net.Dialer{Timeout: 5 * time.Second, LocalAddr: &net.TCPAddr{IP: net.ParseIP(u.ExitIP(port))}}
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, err
		}
		if ip := net.ParseIP(host); host != "localhost" && (ip == nil || !ip.IsLoopback()) {
			return nil, fmt.Errorf("egresstest: %s is not loopback", addr)
		}
		return d.DialContext(ctx, "tcp4", addr)
	}
}

func (u *Upstream) handler(port int) http.Handler {
	fwd := &http.Transport{DialContext: u.dialer(port), DisableKeepAlives: true}
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if !u.authorized(r) {
			u.mu.Lock()
			u.refused[port]++
			u.mu.Unlock()
			w.Header().Set("Proxy-Authenticate", `Basic realm="egress"`)
			http.Error(w, "proxy authentication required", http.StatusProxyAuthRequired)
			return
		}
		u.mu.Lock()
		u.hits[port]++
		u.mu.Unlock()
		if r.Method == http.MethodConnect {
			u.tunnel(w, r, port)
			return
		}
		if !r.URL.IsAbs() {
			http.Error(w, "a proxy request needs an absolute URL", http.StatusBadRequest)
			return
		}
		out := r.Clone(r.Context())
		out.RequestURI = ""
		for _, h := range []string{"Proxy-Authorization", "Proxy-Connection", "Connection", "Keep-Alive", "Te", "Trailer", "Upgrade"} {
			out.Header.Del(h)
		}
		resp, err := fwd.RoundTrip(out)
		if err != nil {
			http.Error(w, "bad gateway", http.StatusBadGateway)
			return
		}
		defer resp.Body.Close()
		for k, vs := range resp.Header {
			for _, v := range vs {
				w.Header().Add(k, v)
			}
		}
		w.WriteHeader(resp.StatusCode)
		rc := http.NewResponseController(w)
		buf := make([]byte, 32<<10)
		for {
			n, err := resp.Body.Read(buf)
			if n > 0 {
				w.Write(buf[:n])
				rc.Flush() // streams (SSE) pass through as they come
			}
			if err != nil {
				return
			}
		}
	})
}

func (u *Upstream) tunnel(w http.ResponseWriter, r *http.Request, port int) {
	dst, err := u.dialer(port)(r.Context(), "tcp", r.Host)
	if err != nil {
		http.Error(w, "bad gateway", http.StatusBadGateway)
		return
	}
	c, rw, err := http.NewResponseController(w).Hijack()
	if err != nil {
		dst.Close()
		return
	}
	u.mu.Lock()
	closing := u.closing
	u.mu.Unlock()
	if closing {
		c.Close()
		dst.Close()
		return
	}
	u.tunnelMu.Lock()
	u.conns[c], u.conns[dst] = true, true
	u.tunnels.Add(2)
	u.tunnelMu.Unlock()
	io.WriteString(c, "HTTP/1.1 200 Connection established\r\n\r\n")
	done := func(a, b net.Conn) {
		a.Close()
		b.Close()
		u.tunnelMu.Lock()
		delete(u.conns, a)
		delete(u.conns, b)
		u.tunnelMu.Unlock()
		u.tunnels.Done()
	}
	go func() {
		// Bytes the client sent after its CONNECT, already buffered.
		if n := rw.Reader.Buffered(); n > 0 {
			b, _ := rw.Reader.Peek(n)
			dst.Write(b)
		}
		io.Copy(dst, c)
		done(c, dst)
	}()
	go func() {
		io.Copy(c, dst)
		done(dst, c)
	}()
}

// String names the Upstream without its credentials.
func (u *Upstream) String() string {
	return "egresstest upstream " + u.Host + " ports " + strconv.Itoa(u.Base) + "-" + strconv.Itoa(u.Base+u.Size-1)
}
