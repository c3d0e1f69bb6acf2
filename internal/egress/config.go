// Package egress sends a user's provider traffic out through that user's
// own port of an upstream proxy, so that each provider sees a stable,
// per-user IP address.
//
// In plain words: the operator rents a range of ports on a commercial
// proxy gateway, each port a distinct exit IP. User number n egresses
// through port Base + n − 1 (user 1 through 10001 by default); rotating a
// provider moves it to another free port (the store keeps who holds which
// port, see store.Egress). A Proxy turns a port into what the rest of
// Polydev needs: an *http.Client whose every request goes through
// http://user:pass@host:port (CONNECT for https, absolute-form for plain
// http), a DialContext for a gateway that tunnels raw TCP, and LookupIP,
// which asks a "what is my IP" endpoint through the port and so learns the
// exit IP. With no proxy host configured (serve --dev), egress is direct:
// the same API, no proxy.
//
// The proxy host, username and password come from configuration (the
// environment or a secret file), never from the repository. They are never
// logged, never returned by the API and never stored in the database:
// Secret prints as [REDACTED] in fmt, slog and JSON, and errors that pass
// through this package have the host and credentials scrubbed out.
package egress

import (
	"bufio"
	"bytes"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/url"
	"os"
	"strconv"
	"strings"

	"polydev/internal/store"
)

// Defaults of the port rule.
const (
	DefaultBasePort = 10001
	DefaultSize     = 1000
)

// The environment variables FromEnv reads.
const (
	EnvProxy      = "POLYDEV_EGRESS_PROXY"
	EnvBasePort   = "POLYDEV_EGRESS_BASE_PORT"
	EnvPorts      = "POLYDEV_EGRESS_PORTS"
	EnvIPURL      = "POLYDEV_EGRESS_IP_URL"
	EnvUsername   = "POLYDEV_EGRESS_USERNAME"
	EnvPassword   = "POLYDEV_EGRESS_PASSWORD"
	EnvSecretFile = "POLYDEV_EGRESS_SECRET_FILE"
)

const redacted = "[REDACTED]"

// Secret is a credential that never prints: fmt (every verb), slog, JSON
// and text marshalling all show [REDACTED]. Reveal returns the value for
// the one place that must send it.
type Secret struct{ v string }

// NewSecret wraps s.
func NewSecret(s string) Secret { return Secret{v: s} }

// Reveal returns the secret's value. Never log it.
func (s Secret) Reveal() string { return s.v }

// IsZero reports whether the secret is empty.
func (s Secret) IsZero() bool { return s.v == "" }

func (Secret) String() string               { return redacted }
func (Secret) GoString() string             { return redacted }
func (Secret) Format(f fmt.State, _ rune)   { fmt.Fprint(f, redacted) }
func (Secret) LogValue() slog.Value         { return slog.StringValue(redacted) }
func (Secret) MarshalText() ([]byte, error) { return []byte(redacted), nil }
func (Secret) MarshalJSON() ([]byte, error) { return json.Marshal(redacted) }

// Config is the egress configuration, validated by Validate.
type Config struct {
	// ProxyHost is the upstream proxy's host name or IP address, without
	// a port (the port is the user's). Empty means direct egress.
	ProxyHost string
	// BasePort is user 1's port; user n's is BasePort + n − 1.
	BasePort int
	// Size is how many ports the range has: [BasePort, BasePort+Size).
	Size int
	// Username and Password are the proxy's Basic credentials. Both or
	// neither (a gateway that authorizes by source address).
	Username Secret
	Password Secret
	// IPLookupURL is fetched through a port to learn its exit IP; it must
	// answer the caller's address as plain text ("203.0.113.7") or as a
	// JSON object with an "ip" member ({"ip":"203.0.113.7"}). Empty: no
	// lookup, the egress IP stays unknown.
	IPLookupURL string
	// TLS configures TLS to the destinations (nil: the system's roots).
	// Not a command-line setting; tests put their own CA here.
	TLS *tls.Config
}

// Ports is the configured range.
func (c Config) Ports() store.PortRange { return store.PortRange{Base: c.BasePort, Size: c.Size} }

// Direct reports whether egress goes straight out, without a proxy.
func (c Config) Direct() bool { return c.ProxyHost == "" }

// LogValue describes the configuration without the host or credentials.
func (c Config) LogValue() slog.Value {
	mode := "proxy"
	if c.Direct() {
		mode = "direct"
	}
	return slog.GroupValue(slog.String("mode", mode), slog.Int("base_port", c.BasePort), slog.Int("ports", c.Size),
		slog.Bool("ip_lookup", c.IPLookupURL != ""), slog.Bool("authenticated", !c.Username.IsZero()))
}

// Format prints the configuration as LogValue describes it, without the
// host or credentials, whatever the verb.
func (c Config) Format(f fmt.State, _ rune) {
	fmt.Fprintf(f, "egress{%s}", c.LogValue().String())
}

// MarshalJSON writes the same description as LogValue: no host, no
// credentials.
func (c Config) MarshalJSON() ([]byte, error) {
	return json.Marshal(map[string]any{"mode": map[bool]string{true: "direct", false: "proxy"}[c.Direct()],
		"base_port": c.BasePort, "ports": c.Size, "ip_lookup": c.IPLookupURL != "", "authenticated": !c.Username.IsZero()})
}

// FromEnv returns the configuration of the POLYDEV_EGRESS_* variables
// (credentials included), with the defaults for what is unset. lookup is
// os.LookupEnv in production. It does not read the secret file: see
// LoadSecretFile.
func FromEnv(lookup func(string) (string, bool)) (Config, error) {
	c := Config{BasePort: DefaultBasePort, Size: DefaultSize}
	get := func(name string) string { v, _ := lookup(name); return strings.TrimSpace(v) }
	c.ProxyHost = get(EnvProxy)
	c.IPLookupURL = get(EnvIPURL)
	for _, f := range []struct {
		name string
		dst  *int
	}{{EnvBasePort, &c.BasePort}, {EnvPorts, &c.Size}} {
		if v := get(f.name); v != "" {
			n, err := strconv.Atoi(v)
			if err != nil {
				return Config{}, fmt.Errorf("%s=%q: not a number", f.name, v)
			}
			*f.dst = n
		}
	}
	if v, ok := lookup(EnvUsername); ok {
		c.Username = NewSecret(v)
	}
	if v, ok := lookup(EnvPassword); ok {
		c.Password = NewSecret(v)
	}
	return c, nil
}

// LoadSecretFile reads the proxy credentials from a file of lines
// "username=…" and "password=…" (blank lines and lines starting with # are
// ignored; the value is everything after the first '=', spaces included,
// up to the line end). Credentials must come from one place: the file, or
// the environment, not both.
func (c *Config) LoadSecretFile(path string) error {
	if !c.Username.IsZero() || !c.Password.IsZero() {
		return fmt.Errorf("egress credentials are set both in the environment (%s, %s) and in the secret file %s: use one", EnvUsername, EnvPassword, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return fmt.Errorf("egress secret file: %w", err)
	}
	defer clear(b)
	sc := bufio.NewScanner(bytes.NewReader(b))
	line := 0
	for sc.Scan() {
		line++
		text := strings.TrimRight(sc.Text(), "\r")
		if strings.TrimSpace(text) == "" || strings.HasPrefix(strings.TrimSpace(text), "#") {
			continue
		}
		key, value, ok := strings.Cut(text, "=")
		switch strings.TrimSpace(key) {
		case "username":
			c.Username = NewSecret(value)
		case "password":
			c.Password = NewSecret(value)
		default:
			ok = false
		}
		if !ok {
			// The line is not quoted: it may hold a secret.
			return fmt.Errorf("egress secret file %s, line %d: want username=… or password=…", path, line)
		}
	}
	if err := sc.Err(); err != nil {
		return fmt.Errorf("egress secret file %s: %w", path, err)
	}
	if c.Username.IsZero() || c.Password.IsZero() {
		return fmt.Errorf("egress secret file %s: needs both username= and password=", path)
	}
	return nil
}

// Validate checks the configuration once, with clear errors that never
// quote a credential.
func (c Config) Validate() error {
	if err := c.Ports().Validate(); err != nil {
		return fmt.Errorf("egress ports: base %d, %d ports: must lie within 1..65535", c.BasePort, c.Size)
	}
	if c.Username.IsZero() != c.Password.IsZero() {
		return errors.New("egress proxy credentials: give both the username and the password, or neither")
	}
	if c.Direct() {
		if !c.Username.IsZero() {
			return errors.New("egress proxy credentials are set but no proxy host: set --egress-proxy or remove them")
		}
	} else if err := checkHost(c.ProxyHost); err != nil {
		return err
	}
	if c.IPLookupURL != "" {
		u, err := url.Parse(c.IPLookupURL)
		if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil {
			return errors.New("egress IP lookup URL: want http:// or https:// with a host and no credentials")
		}
	}
	return nil
}

// checkHost accepts a bare host name or IP address; the messages do not
// repeat the value, which is itself kept out of logs.
func checkHost(h string) error {
	if strings.Contains(h, "://") || strings.ContainsAny(h, "@/?# ") {
		return errors.New("egress proxy: give the host name or IP address only, without scheme, credentials or path")
	}
	if ip := net.ParseIP(strings.Trim(h, "[]")); ip != nil {
		return nil
	}
	if strings.Contains(h, ":") {
		return errors.New("egress proxy: give the host without a port; each user's port comes from the port range")
	}
	return nil
}
