package egress

import (
	"bufio"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"sync"
	"time"

	"polydev/internal/store"
)

// Errors callers branch on.
var (
	// ErrNoIPLookup: no IP lookup URL is configured.
	ErrNoIPLookup = errors.New("no egress IP lookup URL configured")
	// ErrBadPort: the port is not a TCP port.
	ErrBadPort = errors.New("not an egress port")
)

// dialTimeout bounds connecting to the proxy (or, direct, to the
// destination) and the CONNECT handshake when the context has no deadline.
const dialTimeout = 15 * time.Second

// maxIPAnswer caps the IP lookup's answer.
const maxIPAnswer = 4 << 10

// Proxy hands out egress by port. It is safe for concurrent use and must
// be closed (Close drops idle connections).
type Proxy struct {
	cfg    Config
	dialer net.Dialer

	mu         sync.Mutex
	transports map[int]*http.Transport // one per port: a kept-alive connection never changes port
	closed     bool
}

// New validates cfg and returns its Proxy.
func New(cfg Config) (*Proxy, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	return &Proxy{cfg: cfg, dialer: net.Dialer{Timeout: dialTimeout, KeepAlive: 30 * time.Second},
		transports: map[int]*http.Transport{}}, nil
}

// NewDirect is a Proxy for direct egress over the default port range.
func NewDirect() *Proxy {
	p, err := New(Config{BasePort: DefaultBasePort, Size: DefaultSize})
	if err != nil {
		panic(err) // the defaults are valid
	}
	return p
}

// Direct reports whether egress goes straight out.
func (p *Proxy) Direct() bool { return p.cfg.Direct() }

// Ports is the port range allocations draw from.
func (p *Proxy) Ports() store.PortRange { return p.cfg.Ports() }

// DefaultPort is the port rule: user number n's port, BasePort + n − 1.
func (p *Proxy) DefaultPort(userNumber int64) int { return p.cfg.Ports().Default(userNumber) }

// CanLookupIP reports whether an IP lookup URL is configured.
func (p *Proxy) CanLookupIP() bool { return p.cfg.IPLookupURL != "" }

// LogValue describes the egress without host or credentials.
func (p *Proxy) LogValue() slog.Value { return p.cfg.LogValue() }

// Client returns an HTTP client whose every request leaves through port:
// through the proxy at host:port with the configured credentials (CONNECT
// for https, absolute-form for http), or straight out in direct mode. It
// has no overall timeout (answers stream); bound requests with their
// context. Clients of one port share connections. A port outside
// 1..65535 gives a client whose requests fail with ErrBadPort.
func (p *Proxy) Client(port int) *http.Client {
	return &http.Client{Transport: p.transport(port)}
}

// Transport returns the round tripper of Client(port).
func (p *Proxy) Transport(port int) http.RoundTripper { return p.transport(port) }

func (p *Proxy) transport(port int) http.RoundTripper {
	if port < 1 || port > 65535 {
		return failing{fmt.Errorf("egress port %d: %w", port, ErrBadPort)}
	}
	key := port
	if p.Direct() {
		key = 0 // one transport: the port changes nothing
	}
	p.mu.Lock()
	defer p.mu.Unlock()
	if t, ok := p.transports[key]; ok {
		return t
	}
	t := &http.Transport{
		DialContext:       p.scrubbedDial(port),
		TLSClientConfig:   p.cfg.TLS.Clone(),
		ForceAttemptHTTP2: true,
		MaxIdleConns:      64,
		// A port's connections go to a few provider hosts; Go's default of 2
		// idle connections per host would redial under concurrent streams.
		MaxIdleConnsPerHost:   32,
		IdleConnTimeout:       90 * time.Second,
		TLSHandshakeTimeout:   dialTimeout,
		ExpectContinueTimeout: time.Second,
	}
	if !p.Direct() {
		u := p.proxyURL(port)
		t.Proxy = func(*http.Request) (*url.URL, error) { return u, nil }
	}
	if !p.closed {
		p.transports[key] = t
	}
	return t
}

// proxyURL is http://user:pass@host:port; it is never logged.
func (p *Proxy) proxyURL(port int) *url.URL {
	u := &url.URL{Scheme: "http", Host: net.JoinHostPort(strings.Trim(p.cfg.ProxyHost, "[]"), strconv.Itoa(port))}
	if !p.cfg.Username.IsZero() {
		u.User = url.UserPassword(p.cfg.Username.Reveal(), p.cfg.Password.Reveal())
	}
	return u
}

// scrubbedDial is the transport's dialer: to the proxy port (the transport
// then speaks CONNECT or absolute-form), or direct; its errors name the
// port, never the host.
func (p *Proxy) scrubbedDial(port int) func(ctx context.Context, network, addr string) (net.Conn, error) {
	return func(ctx context.Context, network, addr string) (net.Conn, error) {
		c, err := p.dialer.DialContext(ctx, network, addr)
		if err != nil {
			return nil, p.scrub(port, err)
		}
		return c, nil
	}
}

// DialContext opens a TCP connection to addr (host:port) that leaves
// through port: a CONNECT tunnel through the proxy, authenticated, or a
// direct connection. It is what a gateway that relays a sandbox's traffic
// uses. network must be tcp, tcp4 or tcp6.
func (p *Proxy) DialContext(ctx context.Context, port int, network, addr string) (net.Conn, error) {
	switch network {
	case "tcp", "tcp4", "tcp6":
	default:
		return nil, fmt.Errorf("egress: network %q: only tcp is relayed", network)
	}
	if port < 1 || port > 65535 {
		return nil, fmt.Errorf("egress port %d: %w", port, ErrBadPort)
	}
	if p.Direct() {
		c, err := p.dialer.DialContext(ctx, network, addr)
		return c, p.scrub(port, err)
	}
	u := p.proxyURL(port)
	c, err := p.dialer.DialContext(ctx, "tcp", u.Host)
	if err != nil {
		return nil, p.scrub(port, err)
	}
	conn, err := connect(ctx, c, addr, p.cfg.Username, p.cfg.Password)
	if err != nil {
		c.Close()
		return nil, p.scrub(port, err)
	}
	return conn, nil
}

// connect asks the proxy on c for a tunnel to addr.
func connect(ctx context.Context, c net.Conn, addr string, user, pass Secret) (net.Conn, error) {
	deadline, ok := ctx.Deadline()
	if !ok {
		deadline = time.Now().Add(dialTimeout)
	}
	c.SetDeadline(deadline)
	stop := context.AfterFunc(ctx, func() { c.SetDeadline(time.Unix(1, 0)) })
	defer stop()

	req := &http.Request{Method: http.MethodConnect, URL: &url.URL{Opaque: addr}, Host: addr, Header: http.Header{}}
	if !user.IsZero() {
		cred := base64.StdEncoding.EncodeToString([]byte(user.Reveal() + ":" + pass.Reveal()))
		req.Header.Set("Proxy-Authorization", "Basic "+cred)
	}
	if err := req.Write(c); err != nil {
		return nil, fmt.Errorf("egress tunnel: %w", ctxErr(ctx, err))
	}
	br := bufio.NewReader(c)
	resp, err := http.ReadResponse(br, req)
	if err != nil {
		return nil, fmt.Errorf("egress tunnel: reading the proxy's answer: %w", ctxErr(ctx, err))
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return nil, fmt.Errorf("egress tunnel refused by the proxy: %s", resp.Status)
	}
	if !stop() {
		return nil, ctx.Err()
	}
	c.SetDeadline(time.Time{})
	if br.Buffered() > 0 {
		return &bufferedConn{Conn: c, r: br}, nil
	}
	return c, nil
}

func ctxErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return ctx.Err()
	}
	return err
}

// bufferedConn reads what the proxy sent after its answer first.
type bufferedConn struct {
	net.Conn
	r *bufio.Reader
}

func (b *bufferedConn) Read(p []byte) (int, error) { return b.r.Read(p) }

// LookupIP asks the IP lookup URL, through port, which address it sees:
// the port's exit IP (in direct mode, the host's). It returns the address
// in canonical form. ErrNoIPLookup when no URL is configured.
func (p *Proxy) LookupIP(ctx context.Context, port int) (string, error) {
	if p.cfg.IPLookupURL == "" {
		return "", ErrNoIPLookup
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, p.cfg.IPLookupURL, nil)
	if err != nil {
		return "", fmt.Errorf("egress ip lookup: %w", err)
	}
	req.Header.Set("Accept", "application/json, text/plain")
	resp, err := p.Client(port).Do(req)
	if err != nil {
		var ue *url.Error
		if errors.As(err, &ue) {
			err = ue.Err // its message repeats the URL
		}
		return "", fmt.Errorf("egress ip lookup through port %d: %w", port, p.scrub(port, err))
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxIPAnswer+1))
	if err != nil {
		return "", fmt.Errorf("egress ip lookup through port %d: %w", port, p.scrub(port, err))
	}
	if resp.StatusCode != http.StatusOK {
		return "", fmt.Errorf("egress ip lookup through port %d: answered %s", port, resp.Status)
	}
	if len(body) > maxIPAnswer {
		return "", fmt.Errorf("egress ip lookup through port %d: answer longer than %d bytes", port, maxIPAnswer)
	}
	ip, err := ParseIPAnswer(body)
	if err != nil {
		return "", fmt.Errorf("egress ip lookup through port %d: %w", port, err)
	}
	return ip, nil
}

// ParseIPAnswer reads an IP lookup's answer: an address as plain text, or
// a JSON object whose "ip" member is one.
func ParseIPAnswer(body []byte) (string, error) {
	s := strings.TrimSpace(string(body))
	if strings.HasPrefix(s, "{") {
		var v struct {
			IP string `json:"ip"`
		}
		if err := json.Unmarshal([]byte(s), &v); err != nil {
			return "", errors.New("the answer is neither an address nor a JSON object with an ip member")
		}
		s = v.IP
	}
	a, err := netip.ParseAddr(s)
	if err != nil || a.Zone() != "" {
		return "", errors.New("the answer holds no IP address")
	}
	return a.Unmap().String(), nil
}

// CloseIdleConnections drops kept-alive connections of every port.
func (p *Proxy) CloseIdleConnections() {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.transports {
		t.CloseIdleConnections()
	}
}

// Close drops idle connections; clients already handed out keep working
// but no longer share them. Safe twice.
func (p *Proxy) Close() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	for _, t := range p.transports {
		t.CloseIdleConnections()
	}
	p.transports = map[int]*http.Transport{}
	p.closed = true
	return nil
}

// scrub removes the proxy host and credentials from an error's message
// (a dial error names the address it dialled). The original stays
// reachable through errors.Is/As for context errors and the like.
func (p *Proxy) scrub(port int, err error) error {
	if err == nil {
		return nil
	}
	msg := err.Error()
	for _, s := range []struct{ secret, with string }{
		{p.cfg.Password.Reveal(), redacted}, {p.cfg.Username.Reveal(), redacted},
		{url.QueryEscape(p.cfg.Password.Reveal()), redacted}, {url.QueryEscape(p.cfg.Username.Reveal()), redacted},
		{strings.Trim(p.cfg.ProxyHost, "[]"), "egress-proxy"},
	} {
		if s.secret != "" {
			msg = strings.ReplaceAll(msg, s.secret, s.with)
		}
	}
	if msg == err.Error() {
		return err
	}
	return &scrubbed{msg: msg, err: err}
}

type scrubbed struct {
	msg string
	err error
}

func (e *scrubbed) Error() string { return e.msg }
func (e *scrubbed) Unwrap() error { return e.err }

// failing is a round tripper that refuses every request.
type failing struct{ err error }

func (f failing) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Body != nil {
		r.Body.Close()
	}
	return nil, f.err
}
