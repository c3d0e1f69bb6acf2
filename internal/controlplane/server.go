// Package controlplane is Polydev's control plane: the HTTP API and the web
// app. It relays and stores ciphertext; it never holds a user's keys.
package controlplane

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"net/http"
	"time"

	"polydev/internal/buildinfo"
	"polydev/internal/crypto"
	"polydev/internal/egress"
	"polydev/internal/runtime"
	"polydev/internal/store"
)

// Config is the control plane's configuration, validated by Validate.
type Config struct {
	// Addr is the listen address, host:port.
	Addr string
	// Dev selects the embedded defaults (local-only, in-process pieces).
	Dev bool
	// ShutdownTimeout bounds the graceful shutdown.
	ShutdownTimeout time.Duration
	// Store keeps accounts and everything users own. Required.
	Store store.Store
	// SessionTTL is how long a login lasts.
	SessionTTL time.Duration
	// SessionCache is how long a session lookup is reused for the same
	// bearer token (0: DefaultSessionCache; negative: every request looks
	// its session up). Revocations made here take effect at once; those
	// made by another instance on the same database within this long.
	SessionCache time.Duration
	// PreloginSecret (≥ 32 bytes, constant across restarts and instances)
	// derives the fake KDF parameters prelogin answers for unknown emails.
	PreloginSecret []byte
	// Now is the clock; nil means time.Now.
	Now func() time.Time

	// RuntimeKeys and Runtime reach the runtime supervisor (in this process
	// or over its socket). Without them chat answers 503.
	RuntimeKeys runtime.Keys
	Runtime     runtime.Runner
	// MaxStreamsPerUser caps a user's concurrent chat streams (0: 4).
	MaxStreamsPerUser int
	// Heartbeat is the interval of SSE keep-alive comments (0: 15 s).
	Heartbeat time.Duration
	// Metrics serves GET /metrics (Prometheus text format); nil: 404.
	// It carries counts and timings only, never user data; operators keep
	// it off the public network (docs/operations.md).
	Metrics http.Handler
	// Egress hands out users' egress ports and looks up their exit IPs;
	// nil means direct egress over the default port range.
	Egress *egress.Proxy
	// LoginVMs allocates login VMs on this host; nil disables the login
	// VM API (503). See loginvm.go.
	LoginVMs LoginVMManager
	// LoginVMHost is the host id LoginVMs records (sandbox.Config.HostID).
	LoginVMHost string
	// LoginVMLifetime is LoginVMs' maximum lifetime (default 10m), for the
	// expiry recorded before a VM is allocated.
	LoginVMLifetime time.Duration
	// LoginVMWait bounds how long link/start waits for a free VM (default
	// 45s); then it answers 503 with Retry-After.
	LoginVMWait time.Duration
	// LoginVMReconcileEvery is how often sessions whose VM is gone are
	// closed (default 1m; negative: only at start).
	LoginVMReconcileEvery time.Duration
}

// Validate checks the configuration once, with clear errors.
func (c Config) Validate() error {
	if _, _, err := net.SplitHostPort(c.Addr); err != nil {
		return fmt.Errorf("listen address %q: %w", c.Addr, err)
	}
	if c.ShutdownTimeout <= 0 {
		return errors.New("shutdown timeout must be positive")
	}
	if c.Store == nil {
		return errors.New("a store is required")
	}
	if c.SessionTTL < time.Minute {
		return errors.New("session lifetime must be at least a minute")
	}
	if len(c.PreloginSecret) < 32 {
		return errors.New("the prelogin secret must be at least 32 bytes")
	}
	if c.LoginVMs != nil && c.LoginVMHost == "" {
		return errors.New("login VMs need the host id their manager records")
	}
	return nil
}

// Server is the control plane. Build it with New; Run serves until the
// context ends.
type Server struct {
	cfg    Config
	log    *slog.Logger
	assets fs.FS
	store  store.Store
	now    func() time.Time
	egress *egress.Proxy

	accountLimit, ipLimit *failureLimiter
	sessions              *sessionCache
	streams               *streamLimiter
	busyConvs             *busySet
	dummyHash, dummySalt  []byte
	dummyAlgo             string

	lv loginVMs
}

// New returns a Server serving the API and the web app from assets.
func New(cfg Config, log *slog.Logger, assets fs.FS) (*Server, error) {
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	s := &Server{cfg: cfg, log: log, assets: assets, store: cfg.Store, now: cfg.Now,
		// 5 free failures per account, then 1 s doubling to 15 min; a
		// client address gets 20.
		accountLimit: newFailureLimiter(5, time.Second, 15*time.Minute),
		ipLimit:      newFailureLimiter(20, time.Second, 15*time.Minute),
	}
	if s.now == nil {
		s.now = time.Now
	}
	if s.egress = cfg.Egress; s.egress == nil {
		s.egress = egress.NewDirect()
	}
	if s.cfg.MaxStreamsPerUser <= 0 {
		s.cfg.MaxStreamsPerUser = 4
	}
	if s.cfg.Heartbeat <= 0 {
		s.cfg.Heartbeat = 15 * time.Second
	}
	s.streams = &streamLimiter{max: s.cfg.MaxStreamsPerUser, active: map[string]int{}}
	s.sessions = &sessionCache{ttl: cmp.Or(s.cfg.SessionCache, DefaultSessionCache)}
	s.busyConvs = &busySet{keys: map[string]bool{}}
	s.dummyHash, s.dummySalt, s.dummyAlgo = crypto.DummyAuthHash()
	return s, nil
}

// Handler is the HTTP handler of the whole control plane.
func (s *Server) Handler() http.Handler {
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", s.healthz)
	mux.Handle("GET /readyz", s.handle(s.readyz))
	mux.Handle("POST /v1/auth/register", s.handle(s.register))
	mux.Handle("POST /v1/auth/prelogin", s.handle(s.prelogin))
	mux.Handle("POST /v1/auth/login", s.handle(s.login))
	mux.Handle("GET /v1/auth/me", s.handle(s.authenticated(s.me)))
	mux.Handle("DELETE /v1/auth/me", s.handle(s.authenticated(s.deleteAccount)))
	mux.Handle("POST /v1/auth/logout", s.handle(s.authenticated(s.logout)))
	mux.Handle("POST /v1/auth/password", s.handle(s.authenticated(s.changePassword)))
	if s.cfg.Metrics != nil {
		mux.Handle("GET /metrics", s.cfg.Metrics)
	}
	mux.Handle("GET /v1/runtime/key", s.handle(s.runtimeKey))
	mux.Handle("GET /v1/accounts/{provider}/token", s.handle(s.authenticated(s.sealedToken)))
	mux.Handle("POST /v1/chat/sessions", s.handle(s.authenticated(s.createConversation)))
	mux.Handle("GET /v1/chat/sessions", s.handle(s.authenticated(s.listConversations)))
	mux.Handle("GET /v1/chat/{id}", s.handle(s.authenticated(s.conversation)))
	mux.Handle("DELETE /v1/chat/{id}", s.handle(s.authenticated(s.deleteConversation)))
	mux.Handle("POST /v1/chat/{id}/messages", s.handle(s.authenticated(s.sendMessage)))
	mux.Handle("POST /v1/accounts/tokens", s.handle(s.authenticated(s.linkToken)))
	mux.Handle("GET /v1/accounts", s.handle(s.authenticated(s.listAccounts)))
	mux.Handle("POST /v1/accounts/{provider}/revoke", s.handle(s.authenticated(s.revokeProvider)))
	mux.Handle("POST /v1/accounts/{provider}/rotate-egress", s.handle(s.authenticated(s.rotateEgress)))
	mux.Handle("POST /v1/accounts/{provider}/link/start", s.handle(s.authenticated(s.linkStart)))
	mux.Handle("GET /v1/accounts/link", s.handle(s.authenticated(s.linkList)))
	mux.Handle("GET /v1/accounts/link/sessions/{session_id}", s.handle(s.authenticated(s.linkGet)))
	mux.Handle("DELETE /v1/accounts/link/sessions/{session_id}", s.handle(s.authenticated(s.linkDelete)))
	notAllowed := s.handle(func(http.ResponseWriter, *http.Request) error {
		return errorf(http.StatusMethodNotAllowed, "method_not_allowed", "method not allowed")
	})
	for _, p := range []string{"/v1/auth/register", "/v1/auth/prelogin", "/v1/auth/login", "/v1/auth/me", "/v1/auth/logout", "/v1/auth/password",
		"/v1/accounts/tokens", "/v1/accounts", "/v1/accounts/{provider}/token", "/v1/accounts/{provider}/revoke", "/v1/accounts/{provider}/rotate-egress", "/v1/accounts/{provider}/link/start", "/v1/accounts/link", "/v1/accounts/link/sessions/{session_id}"} {
		mux.Handle(p, notAllowed)
	}
	mux.Handle("/v1/", s.handle(func(http.ResponseWriter, *http.Request) error {
		return errorf(http.StatusNotFound, "not_found", "no such endpoint")
	}))
	files := securityHeaders(http.FileServerFS(s.assets))
	mux.Handle("/", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
			return
		}
		files.ServeHTTP(w, r)
	}))
	return mux
}

func (s *Server) readyz(w http.ResponseWriter, r *http.Request) error {
	ctx, cancel := context.WithTimeout(r.Context(), 5*time.Second)
	defer cancel()
	if err := s.store.Ping(ctx); err != nil {
		return &apiError{status: http.StatusServiceUnavailable, code: "unavailable", message: "the store is not ready", cause: err}
	}
	writeJSON(w, http.StatusOK, map[string]string{"status": "ready"})
	return nil
}

func (s *Server) healthz(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	fmt.Fprintf(w, `{"status":"ok","version":%q}`+"\n", buildinfo.Read().Version)
}

// securityHeaders sets the headers every page needs: the web app runs only
// its own code (the crypto module must not share the page with anything
// else), may compile the Argon2id WebAssembly, and is never framed.
func securityHeaders(h http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		hd := w.Header()
		hd.Set("Content-Security-Policy", "default-src 'self'; script-src 'self' 'wasm-unsafe-eval'; style-src 'self' 'unsafe-inline'; object-src 'none'; base-uri 'none'; frame-ancestors 'none'")
		hd.Set("X-Content-Type-Options", "nosniff")
		hd.Set("Referrer-Policy", "no-referrer")
		hd.Set("Cross-Origin-Opener-Policy", "same-origin")
		h.ServeHTTP(w, r)
	})
}

// Run listens on the configured address and serves until ctx ends, then
// shuts down gracefully. ready, if not nil, receives the bound address.
func (s *Server) Run(ctx context.Context, ready func(addr net.Addr)) error {
	ln, err := net.Listen("tcp", s.cfg.Addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	srv := &http.Server{
		Handler:           s.Handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	s.log.Info("control plane listening", "addr", ln.Addr().String(), "dev", s.cfg.Dev)
	if ready != nil {
		ready(ln.Addr())
	}
	rctx, stopReconcile := context.WithCancel(ctx)
	waitReconcile := s.startLoginVMReconcile(rctx)
	defer func() { stopReconcile(); waitReconcile() }()
	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), s.cfg.ShutdownTimeout)
	defer cancel()
	s.log.Info("control plane shutting down")
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}
