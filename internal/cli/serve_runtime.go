package cli

import (
	"github.com/prometheus/client_golang/prometheus"

	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"polydev/internal/egress"
	"polydev/internal/metrics"
	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
	"polydev/internal/runtime"
	"polydev/internal/runtime/remote"
)

// runtimeFlags configure the runtime supervisor half of serve.
type runtimeFlags struct {
	role         string
	executor     string
	socket       string
	tokenFile    string
	identityFile string
	providerURLs string
	rotate       time.Duration
	emulator     bool
	runc         runcFlags
	// metrics collects what the runtime measures (the container pool's
	// gauges and counters), served on /metrics.
	metrics *prometheus.Registry
}

func (f *runtimeFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.role, "role", envOr("POLYDEV_ROLE", "all"), "all (one process), control-plane (reach the runtime over --runtime-socket) or runtime (serve the runtime on --runtime-socket) (env POLYDEV_ROLE)")
	fs.StringVar(&f.executor, "runtime", envOr("POLYDEV_RUNTIME", "inprocess"), "where chat workers run: inprocess (development) or runc (containers from a warm pool; root, runc and 'polydev image build runtime') (env POLYDEV_RUNTIME)")
	f.runc.register(fs)
	fs.StringVar(&f.socket, "runtime-socket", envOr("POLYDEV_RUNTIME_SOCKET", ""), "unix socket between the control plane and the runtime roles (env POLYDEV_RUNTIME_SOCKET)")
	fs.StringVar(&f.tokenFile, "runtime-token-file", envOr("POLYDEV_RUNTIME_TOKEN_FILE", ""), "file holding the shared token (≥ 32 characters) that authenticates the runtime socket (env POLYDEV_RUNTIME_TOKEN_FILE)")
	fs.StringVar(&f.identityFile, "runtime-identity-file", envOr("POLYDEV_RUNTIME_IDENTITY_FILE", ""), "the runtime's long-term identity key, created 0600 if missing (env POLYDEV_RUNTIME_IDENTITY_FILE; default DATA/runtime-identity)")
	fs.StringVar(&f.providerURLs, "provider-urls", envOr("POLYDEV_PROVIDER_URLS", ""), "provider API roots, e.g. openai=https://api.openai.com/v1,anthropic=… (env POLYDEV_PROVIDER_URLS; default: the public APIs, or the in-process emulator with --dev)")
	fs.DurationVar(&f.rotate, "runtime-key-rotate", envDuration("POLYDEV_RUNTIME_KEY_ROTATE", 6*time.Hour), "how often the runtime key pair is replaced (env POLYDEV_RUNTIME_KEY_ROTATE)")
	fs.BoolVar(&f.emulator, "emulator", envBool("POLYDEV_EMULATOR"), "serve the providers from an in-process emulator (env POLYDEV_EMULATOR; on with --dev unless --provider-urls is set)")
}

func (f *runtimeFlags) validate() error {
	switch f.role {
	case "all", "control-plane", "runtime":
	default:
		return fmt.Errorf("--role %q: want all, control-plane or runtime", f.role)
	}
	switch f.executor {
	case "inprocess", "runc":
	default:
		return fmt.Errorf("--runtime %q: want inprocess or runc", f.executor)
	}
	if f.role != "all" && (f.socket == "" || f.tokenFile == "") {
		return fmt.Errorf("--role %s needs --runtime-socket and --runtime-token-file", f.role)
	}
	return nil
}

func readToken(path string) (string, error) {
	if fi, err := os.Stat(path); err == nil && fi.Mode().Perm()&0o007 != 0 {
		return "", fmt.Errorf("runtime token %s is readable by every user (mode %v); chmod 640 it", path, fi.Mode().Perm())
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("runtime token: %w", err)
	}
	tok := strings.TrimSpace(string(b))
	if len(tok) < remote.MinTokenLen {
		return "", fmt.Errorf("runtime token %s: %d characters, want at least %d (make one with: head -c 32 /dev/urandom | base64 > %s)", path, len(tok), remote.MinTokenLen, path)
	}
	return tok, nil
}

// providerURLs parses "name=url,…".
func parseProviderURLs(s string) (map[string]string, error) {
	out := map[string]string{}
	for _, item := range strings.Split(s, ",") {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, u, ok := strings.Cut(item, "=")
		if !ok || u == "" {
			return nil, fmt.Errorf("--provider-urls: %q is not name=url", item)
		}
		if _, err := registry.New(name, providerConfig(u)); err != nil {
			return nil, fmt.Errorf("--provider-urls: %w", err)
		}
		// Credentials travel to this URL: only over TLS, except to this
		// machine (a local emulator or a test double).
		pu, err := url.Parse(u)
		if err != nil || (pu.Scheme != "https" && !(pu.Scheme == "http" && isLoopback(pu.Hostname()))) {
			return nil, fmt.Errorf("--provider-urls: %s must be an https URL (plain http only to a loopback address)", u)
		}
		out[name] = u
	}
	return out, nil
}

// supervisor builds the runtime supervisor: its identity, its executor,
// where providers live. cleanup stops what it started.
func (f *runtimeFlags) supervisor(ctx context.Context, log *slog.Logger, dev bool, data string, proxy *egress.Proxy) (*runtime.Supervisor, func(), error) {
	var cleanups []func()
	cleanup := func() {
		for i := len(cleanups) - 1; i >= 0; i-- {
			cleanups[i]()
		}
	}
	urls, err := parseProviderURLs(f.providerURLs)
	if err != nil {
		return nil, cleanup, err
	}
	if f.emulator || (dev && len(urls) == 0) {
		emu := emulator.New(emulator.Options{Logger: log.With("component", "emulator")})
		ln, err := net.Listen("tcp", "127.0.0.1:0")
		if err != nil {
			return nil, cleanup, fmt.Errorf("emulator: %w", err)
		}
		hs := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
		go hs.Serve(ln)
		cleanups = append(cleanups, func() { emu.Close(); hs.Close() })
		root := "http://" + ln.Addr().String()
		for _, p := range []string{"openai", "anthropic", "google"} {
			urls[p] = emulator.BaseURL(root, p)
		}
		log.Info("providers: in-process emulator (no real provider is called)", "addr", ln.Addr().String())
	}
	idPath := f.identityFile
	if idPath == "" {
		idPath = filepath.Join(data, "runtime-identity")
	}
	id, err := runtime.LoadIdentity(idPath)
	if err != nil {
		return nil, cleanup, err
	}
	// Every provider call leaves through the user's own egress port (or
	// directly, when no proxy is configured).
	var ex runtime.Executor = runtime.NewInProcess(runtime.InProcess{NewProvider: registry.New, ClientFor: proxy.Client})
	if f.executor == "runc" {
		pool, err := f.runc.pool(ctx, log, proxy)
		if err != nil {
			return nil, cleanup, err
		}
		cleanups = append(cleanups, func() { pool.Close() })
		ex = pool
		f.metricsRegistry().MustRegister(pool.Collector())
	}
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, Rotate: f.rotate, BaseURLs: urls,
		Logger: log.With("component", "runtime")})
	if err != nil {
		return nil, cleanup, err
	}
	lctx, stop := context.WithCancel(ctx)
	go sup.Loop(lctx)
	cleanups = append(cleanups, stop)
	log.Info("runtime ready", "executor", f.executor, "identity", id.Public())
	return sup, cleanup, nil
}

// serveRuntimeRole runs only the runtime: the supervisor behind its socket.
func (f *runtimeFlags) serveRuntimeRole(ctx context.Context, log *slog.Logger, dev bool, data string, proxy *egress.Proxy) error {
	tok, err := readToken(f.tokenFile)
	if err != nil {
		return err
	}
	sup, cleanup, err := f.supervisor(ctx, log, dev, data, proxy)
	defer cleanup()
	if err != nil {
		return err
	}
	// A socket left by an earlier run is replaced; anything else at the
	// path is an operator's mistake and is left alone.
	if fi, err := os.Lstat(f.socket); err == nil {
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("runtime socket %s: the path exists and is not a socket", f.socket)
		}
		if err := os.Remove(f.socket); err != nil {
			return fmt.Errorf("runtime socket: %w", err)
		}
	} else if !errors.Is(err, os.ErrNotExist) {
		return fmt.Errorf("runtime socket: %w", err)
	}
	// Owner and group only: the control plane runs as a member of the
	// runtime's group, nobody else may connect. The umask makes the socket
	// so from its first moment; the chmod states it.
	old := syscall.Umask(0o117)
	ln, err := net.Listen("unix", f.socket)
	syscall.Umask(old)
	if err != nil {
		return fmt.Errorf("runtime socket: %w", err)
	}
	if err := os.Chmod(f.socket, 0o660); err != nil {
		ln.Close()
		return fmt.Errorf("runtime socket: %w", err)
	}
	hs := &http.Server{Handler: remote.Handler(sup, tok, log), ReadHeaderTimeout: 10 * time.Second}
	log.Info("runtime listening", "socket", f.socket)
	errc := make(chan error, 1)
	go func() { errc <- hs.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("runtime: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 15*time.Second)
	defer cancel()
	hs.Shutdown(sctx)
	os.Remove(f.socket)
	return nil
}

// runtimeFor returns what the control plane uses: the supervisor in this
// process, or a client of the runtime role's socket.
func (f *runtimeFlags) runtimeFor(ctx context.Context, log *slog.Logger, dev bool, data string, proxy *egress.Proxy) (runtime.Keys, runtime.Runner, func(), error) {
	if f.role == "control-plane" {
		tok, err := readToken(f.tokenFile)
		if err != nil {
			return nil, nil, func() {}, err
		}
		c := remote.NewClient(f.socket, tok)
		log.Info("runtime: remote", "socket", f.socket)
		return c, c, func() {}, nil
	}
	sup, cleanup, err := f.supervisor(ctx, log, dev, data, proxy)
	if err != nil {
		return nil, nil, cleanup, err
	}
	return sup, sup, cleanup, nil
}

func providerConfig(baseURL string) provider.Config { return provider.Config{BaseURL: baseURL} }

func (f *runtimeFlags) metricsRegistry() *prometheus.Registry {
	if f.metrics == nil {
		f.metrics = metrics.NewRegistry()
	}
	return f.metrics
}
