package egress_test

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"polydev/internal/egress"
	"polydev/internal/egress/egresstest"
)

func newProxy(t *testing.T, cfg egress.Config) *egress.Proxy {
	t.Helper()
	p, err := egress.New(cfg)
	if err != nil {
		t.Fatalf("egress.New: %v", err)
	}
	t.Cleanup(func() { p.Close() })
	return p
}

// echoIP fetches an echo URL with c and returns the address it saw.
func echoIP(t *testing.T, c *http.Client, u string) string {
	t.Helper()
	resp, err := c.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	var v struct{ IP string }
	if resp.StatusCode != 200 || json.NewDecoder(resp.Body).Decode(&v) != nil {
		t.Fatalf("GET %s: status %d", u, resp.StatusCode)
	}
	return v.IP
}

// TestClientLeavesThroughItsPort: plain HTTP (absolute-form) and HTTPS
// (CONNECT) requests for a port go through that port of the proxy, and
// leave from that port's exit IP.
func TestClientLeavesThroughItsPort(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 4)
	p := newProxy(t, up.Config())
	if p.Direct() {
		t.Fatal("a proxy host is configured, yet the proxy says direct")
	}
	for i := range 4 {
		port := up.Base + i
		before := up.Hits(port)
		for _, u := range []string{up.EchoURL, up.EchoTLSURL} {
			if got, want := echoIP(t, p.Client(port), u), up.ExitIP(port); got != want {
				t.Errorf("port %d, %s: the echo saw %s; want the port's exit IP %s", port, u, got, want)
			}
		}
		if got := up.Hits(port) - before; got != 2 {
			t.Errorf("port %d served %d requests; want 2 (one forwarded, one tunnelled)", port, got)
		}
	}
	if up.TotalHits() != 8 {
		t.Errorf("the proxy served %d requests in all; want 8 — no request may take another port", up.TotalHits())
	}
}

// TestWrongCredentials: the proxy's 407 reaches the caller, and no error
// names the proxy host or repeats a credential.
func TestWrongCredentials(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 1)
	cfg := up.Config()
	cfg.Password = egress.NewSecret("not-" + up.Password)
	p := newProxy(t, cfg)
	resp, err := p.Client(up.Base).Get(up.EchoURL)
	if err != nil {
		t.Fatalf("plain HTTP through a refusing proxy: %v", err)
	}
	resp.Body.Close()
	if resp.StatusCode != http.StatusProxyAuthRequired {
		t.Errorf("plain HTTP with a wrong password: %d; want 407", resp.StatusCode)
	}
	_, err = p.Client(up.Base).Get(up.EchoTLSURL)
	if err == nil || !strings.Contains(err.Error(), "Proxy Authentication Required") {
		t.Errorf("HTTPS with a wrong password: %v; want the proxy's refusal", err)
	}
	_, err = p.LookupIP(t.Context(), up.Base)
	if err == nil {
		t.Fatal("LookupIP through a refusing proxy succeeded")
	}
	_, derr := p.DialContext(t.Context(), up.Base, "tcp", echoAddr(up))
	if derr == nil || !strings.Contains(derr.Error(), "407") {
		t.Errorf("DialContext with a wrong password: %v; want the 407", derr)
	}
	if up.Refused(up.Base) < 3 {
		t.Errorf("the proxy refused %d times; want every attempt refused", up.Refused(up.Base))
	}
	// A port nobody listens on: a dial error, without the host.
	_, err = p.LookupIP(t.Context(), up.Base+up.Size)
	for _, e := range []error{err, derr} {
		if e == nil {
			t.Fatal("want an error")
		}
		for _, s := range []string{up.Host, up.Password, "not-" + up.Password, up.Username} {
			if strings.Contains(e.Error(), s) {
				t.Errorf("error %q contains a proxy secret or the host", e)
			}
		}
	}
}

// TestDialContextTunnels: the gateway's raw TCP path (CONNECT) leaves
// through its port too, and the tunnel carries bytes both ways.
func TestDialContextTunnels(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 3)
	p := newProxy(t, up.Config())
	target := echoAddr(up)
	for _, port := range []int{up.Base, up.Base + 2} {
		ctx, cancel := context.WithTimeout(t.Context(), 10*time.Second)
		c, err := p.DialContext(ctx, port, "tcp", target)
		cancel()
		if err != nil {
			t.Fatalf("DialContext(%d): %v", port, err)
		}
		fmt.Fprintf(c, "GET /ip HTTP/1.1\r\nHost: %s\r\nConnection: close\r\n\r\n", target)
		resp, err := http.ReadResponse(bufio.NewReader(c), nil)
		if err != nil {
			t.Fatal(err)
		}
		var v struct{ IP string }
		json.NewDecoder(resp.Body).Decode(&v)
		c.Close()
		if v.IP != up.ExitIP(port) {
			t.Errorf("tunnel through %d: the echo saw %q; want %s", port, v.IP, up.ExitIP(port))
		}
	}
	if _, err := p.DialContext(t.Context(), up.Base, "udp", target); err == nil {
		t.Error("DialContext(udp) succeeded")
	}
	if _, err := p.DialContext(t.Context(), 0, "tcp", target); !errors.Is(err, egress.ErrBadPort) {
		t.Errorf("DialContext(port 0): %v; want ErrBadPort", err)
	}
}

// TestLookupIP: the lookup reports each port's own exit IP, in either
// documented answer format.
func TestLookupIP(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 3)
	for _, format := range []string{"", "?format=text"} {
		cfg := up.Config()
		cfg.IPLookupURL += format
		p := newProxy(t, cfg)
		for i := range up.Size {
			ip, err := p.LookupIP(t.Context(), up.Base+i)
			if err != nil || ip != up.ExitIP(up.Base+i) {
				t.Errorf("LookupIP(%d) %q: %q, %v; want %s", up.Base+i, format, ip, err, up.ExitIP(up.Base+i))
			}
		}
	}
	cfg := up.Config()
	cfg.IPLookupURL = ""
	if _, err := newProxy(t, cfg).LookupIP(t.Context(), up.Base); !errors.Is(err, egress.ErrNoIPLookup) {
		t.Errorf("LookupIP without a URL: %v; want ErrNoIPLookup", err)
	}
}

func TestParseIPAnswer(t *testing.T) {
	t.Parallel()
	for _, c := range []struct {
		in, want string
		ok       bool
	}{
		{"203.0.113.7\n", "203.0.113.7", true},
		{`{"ip":"2001:db8::1","country":"NL"}`, "2001:db8::1", true},
		{"  ::ffff:198.51.100.2  ", "198.51.100.2", true},
		{`{"proxy":{"ip":"203.0.113.7"}}`, "", false},
		{"<html>hello</html>", "", false},
		{"", "", false},
		{`{"ip":"fe80::1%eth0"}`, "", false},
	} {
		got, err := egress.ParseIPAnswer([]byte(c.in))
		if (err == nil) != c.ok || got != c.want {
			t.Errorf("ParseIPAnswer(%q) = %q, %v; want %q, ok %v", c.in, got, err, c.want, c.ok)
		}
	}
}

// TestDirect: without a proxy host, requests, tunnels and lookups go
// straight out.
func TestDirect(t *testing.T) {
	t.Parallel()
	up := egresstest.Start(t, 1) // only for its echo servers
	cfg := egress.Config{BasePort: egress.DefaultBasePort, Size: egress.DefaultSize, IPLookupURL: up.EchoURL, TLS: up.Config().TLS}
	p := newProxy(t, cfg)
	if !p.Direct() {
		t.Fatal("no proxy host, yet not direct")
	}
	for _, u := range []string{up.EchoURL, up.EchoTLSURL} {
		if got := echoIP(t, p.Client(10001), u); got != "127.0.0.1" {
			t.Errorf("direct %s: the echo saw %s; want 127.0.0.1", u, got)
		}
	}
	if ip, err := p.LookupIP(t.Context(), 10001); err != nil || ip != "127.0.0.1" {
		t.Errorf("direct LookupIP: %q, %v", ip, err)
	}
	c, err := p.DialContext(t.Context(), 10001, "tcp", echoAddr(up))
	if err != nil {
		t.Fatalf("direct DialContext: %v", err)
	}
	c.Close()
	if up.TotalHits() != 0 {
		t.Errorf("direct egress used the proxy %d times", up.TotalHits())
	}
	if _, err := p.Client(0).Get(up.EchoURL); !errors.Is(err, egress.ErrBadPort) {
		t.Errorf("Client(0): %v; want ErrBadPort", err)
	}
}

func TestDefaultPort(t *testing.T) {
	t.Parallel()
	p := egress.NewDirect()
	for n, want := range map[int64]int{1: 10001, 2: 10002, 1000: 11000, 1001: 11001} {
		if got := p.DefaultPort(n); got != want {
			t.Errorf("DefaultPort(%d) = %d; want %d", n, got, want)
		}
	}
	if r := p.Ports(); r.Base != 10001 || r.Size != 1000 || r.Contains(11001) || !r.Contains(11000) {
		t.Errorf("Ports() = %+v", r)
	}
}

// TestSecretsNeverPrint: the credentials and the host appear in no fmt
// verb, slog handler or JSON of the configuration or the proxy.
func TestSecretsNeverPrint(t *testing.T) {
	t.Parallel()
	const user, pass, host = "user-Q7xk2", "pw-9f3Jz!Kq", "proxy.example.internal"
	cfg := egress.Config{ProxyHost: host, BasePort: 10001, Size: 10, Username: egress.NewSecret(user), Password: egress.NewSecret(pass)}
	p := newProxy(t, cfg)
	var out bytes.Buffer
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%q", "%x"} {
		fmt.Fprintf(&out, verb+"\n", cfg.Password)
		fmt.Fprintf(&out, verb+"\n", cfg.Username)
		fmt.Fprintf(&out, verb+"\n", cfg)
	}
	j, _ := json.Marshal(cfg)
	out.Write(j)
	for _, h := range []slog.Handler{slog.NewJSONHandler(&out, nil), slog.NewTextHandler(&out, nil)} {
		slog.New(h).Info("egress", "config", cfg, "proxy", p, "password", cfg.Password)
	}
	for _, s := range []string{user, pass, host, fmt.Sprintf("%x", pass), fmt.Sprintf("%x", host)} {
		if strings.Contains(out.String(), s) {
			t.Errorf("output contains the host or a credential %q:\n%s", s, out.String())
		}
	}
	if !strings.Contains(out.String(), `"mode":"proxy"`) || !strings.Contains(out.String(), "[REDACTED]") {
		t.Errorf("output does not describe the configuration:\n%s", out.String())
	}
}

func TestConfig(t *testing.T) {
	t.Parallel()
	env := func(m map[string]string) func(string) (string, bool) {
		return func(k string) (string, bool) { v, ok := m[k]; return v, ok }
	}
	cfg, err := egress.FromEnv(env(map[string]string{}))
	if err != nil || cfg.BasePort != 10001 || cfg.Size != 1000 || !cfg.Direct() || cfg.Validate() != nil {
		t.Errorf("FromEnv(empty) = %+v, %v; want the direct defaults", cfg, err)
	}
	cfg, err = egress.FromEnv(env(map[string]string{egress.EnvProxy: "gate.example.net", egress.EnvBasePort: "20001",
		egress.EnvPorts: "50", egress.EnvUsername: "u", egress.EnvPassword: "p", egress.EnvIPURL: "https://ip.example.net/json"}))
	if err != nil || cfg.ProxyHost != "gate.example.net" || cfg.BasePort != 20001 || cfg.Size != 50 ||
		cfg.Username.Reveal() != "u" || cfg.Password.Reveal() != "p" || cfg.Validate() != nil {
		t.Errorf("FromEnv = %+v, %v", cfg, err)
	}
	if _, err := egress.FromEnv(env(map[string]string{egress.EnvPorts: "many"})); err == nil {
		t.Error("FromEnv with a non-numeric port count succeeded")
	}

	dir := t.TempDir()
	file := filepath.Join(dir, "egress.secret")
	os.WriteFile(file, []byte("# proxy account\nusername=alice\npassword= s3cret with = and spaces\n"), 0o600)
	c := egress.Config{ProxyHost: "gate.example.net", BasePort: 10001, Size: 10}
	if err := c.LoadSecretFile(file); err != nil || c.Username.Reveal() != "alice" || c.Password.Reveal() != " s3cret with = and spaces" {
		t.Errorf("LoadSecretFile: %v (%q)", err, c.Username.Reveal())
	}
	if err := c.LoadSecretFile(file); err == nil {
		t.Error("LoadSecretFile over credentials already set succeeded")
	}
	os.WriteFile(file, []byte("user=alice\npassword=hunter2-secret\n"), 0o600)
	c = egress.Config{}
	if err := c.LoadSecretFile(file); err == nil || strings.Contains(err.Error(), "alice") || strings.Contains(err.Error(), "hunter2") {
		t.Errorf("LoadSecretFile of a bad line: %v; want an error quoting nothing", err)
	}

	for _, bad := range []egress.Config{
		{ProxyHost: "gate.example.net:10001", BasePort: 10001, Size: 10},
		{ProxyHost: "http://gate.example.net", BasePort: 10001, Size: 10},
		{ProxyHost: "u:p@gate.example.net", BasePort: 10001, Size: 10},
		{ProxyHost: "gate.example.net", BasePort: 65000, Size: 1000},
		{ProxyHost: "gate.example.net", BasePort: 10001, Size: 0},
		{ProxyHost: "gate.example.net", BasePort: 10001, Size: 10, Username: egress.NewSecret("only-user")},
		{BasePort: 10001, Size: 10, Username: egress.NewSecret("u"), Password: egress.NewSecret("p")},
		{BasePort: 10001, Size: 10, IPLookupURL: "ftp://ip.example.net"},
		{BasePort: 10001, Size: 10, IPLookupURL: "https://u:p@ip.example.net"},
	} {
		if err := bad.Validate(); err == nil {
			t.Errorf("Validate(%+v) = nil; want an error", bad)
		} else if strings.Contains(err.Error(), "gate.example.net") || strings.Contains(err.Error(), "only-user") {
			t.Errorf("Validate error quotes the host or a credential: %v", err)
		}
	}
	for _, good := range []string{"gate.example.net", "192.0.2.10", "2001:db8::10", "[2001:db8::10]"} {
		if err := (egress.Config{ProxyHost: good, BasePort: 10001, Size: 10}).Validate(); err != nil {
			t.Errorf("Validate(host %q): %v", good, err)
		}
	}
}

// echoAddr is the plain echo server's host:port.
func echoAddr(up *egresstest.Upstream) string {
	u, _ := url.Parse(up.EchoURL)
	return u.Host
}
