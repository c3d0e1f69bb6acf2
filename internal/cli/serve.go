package cli

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"time"

	"polydev/internal/controlplane"
	"polydev/internal/egress"
	"polydev/internal/metrics"
	"polydev/internal/store"
	"polydev/internal/store/postgres"
	"polydev/internal/store/sqlite"
	"polydev/web"
)

func runServe(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "serve [flags]", `
Runs the control plane — the HTTP API and the web app — until interrupted
(SIGINT/SIGTERM finish in-flight requests first).

Storage is the SQLite file in --data unless --database-url names a
PostgreSQL database (connect as the unprivileged login role; migrate first
with 'polydev migrate' as the schema owner). --dev: SQLite, migrations
applied at start, loopback only, providers answered by an in-process
emulator, direct egress.

Roles: by default one process is everything. --role runtime runs only the
runtime supervisor (runtime keys, chat workers) on --runtime-socket;
--role control-plane runs the API and reaches that socket, so the runtime
private keys never enter the control plane's process. Every flag can also
come from the environment variable named in its help.`)
	cfg := controlplane.Config{}
	fs.BoolVar(&cfg.Dev, "dev", envBool("POLYDEV_DEV"), "embedded defaults for a single machine (env POLYDEV_DEV)")
	fs.StringVar(&cfg.Addr, "addr", envOr("POLYDEV_ADDR", "127.0.0.1:8080"), "listen address, host:port (env POLYDEV_ADDR)")
	data := fs.String("data", envOr("POLYDEV_DATA", "./polydev-data"), "data directory: SQLite database, prelogin secret (env POLYDEV_DATA)")
	dbURL := fs.String("database-url", os.Getenv("POLYDEV_DATABASE_URL"), "PostgreSQL connection string of the app's login role (env POLYDEV_DATABASE_URL)")
	migrate := fs.Bool("migrate", envBool("POLYDEV_MIGRATE"), "apply migrations at start (env POLYDEV_MIGRATE; always on with --dev); PostgreSQL also needs --migrate-database-url")
	migrateURL := fs.String("migrate-database-url", os.Getenv("POLYDEV_MIGRATE_DATABASE_URL"), "PostgreSQL connection string of the schema owner, for --migrate (env POLYDEV_MIGRATE_DATABASE_URL)")
	secretFile := fs.String("secret-file", os.Getenv("POLYDEV_SECRET_FILE"), "file with ≥ 32 random bytes for prelogin answers (env POLYDEV_SECRET_FILE; default DATA/prelogin.secret, created if missing with SQLite)")
	fs.DurationVar(&cfg.SessionTTL, "session-ttl", envDuration("POLYDEV_SESSION_TTL", 24*time.Hour), "session lifetime (env POLYDEV_SESSION_TTL)")
	fs.DurationVar(&cfg.SessionCache, "session-cache", envDuration("POLYDEV_SESSION_CACHE", controlplane.DefaultSessionCache),
		"reuse a session lookup this long; a revocation made by another instance takes effect here after it (negative: look every request up; env POLYDEV_SESSION_CACHE)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
	logJSON := fs.Bool("log-json", envBool("POLYDEV_LOG_JSON"), "log JSON lines instead of text (env POLYDEV_LOG_JSON)")
	eg, err := egress.FromEnv(os.LookupEnv)
	if err != nil {
		return err
	}
	fs.StringVar(&eg.ProxyHost, "egress-proxy", eg.ProxyHost, "upstream proxy host (no port) for per-user egress; empty: direct egress (env "+egress.EnvProxy+")")
	fs.IntVar(&eg.BasePort, "egress-base-port", eg.BasePort, "user 1's egress port; user n's is base+n-1 (env "+egress.EnvBasePort+")")
	fs.IntVar(&eg.Size, "egress-ports", eg.Size, "how many ports the egress range has (env "+egress.EnvPorts+")")
	fs.StringVar(&eg.IPLookupURL, "egress-ip-url", eg.IPLookupURL, "URL fetched through a port to learn its exit IP, answering plain text or {\"ip\":…} (env "+egress.EnvIPURL+")")
	egSecret := fs.String("egress-secret-file", os.Getenv(egress.EnvSecretFile), "file with the proxy's username=… and password=… lines (env "+egress.EnvSecretFile+
		"; or set "+egress.EnvUsername+" and "+egress.EnvPassword+"; never a flag)")
	var rt runtimeFlags
	rt.register(fs)
	vms := addVMFlags(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	if err := rt.validate(); err != nil {
		return err
	}
	if v := os.Getenv("POLYDEV_SESSION_TTL"); v != "" {
		if _, err := time.ParseDuration(v); err != nil {
			return fmt.Errorf("POLYDEV_SESSION_TTL=%q: %w", v, err)
		}
	}
	if _, _, err := net.SplitHostPort(cfg.Addr); err != nil {
		return fmt.Errorf("listen address %q: %w", cfg.Addr, err)
	}
	var h slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(e.stderr, nil)
	}
	log := slog.New(h)
	if *egSecret != "" {
		if fi, err := os.Stat(*egSecret); err == nil && fi.Mode().Perm()&0o077 != 0 {
			log.Warn("egress secret file is readable by other users: chmod 600 it", "path", *egSecret)
		}
		if err := eg.LoadSecretFile(*egSecret); err != nil {
			return err
		}
	}
	proxy, err := egress.New(eg)
	if err != nil {
		return err
	}
	defer proxy.Close()
	cfg.Egress = proxy
	switch {
	case proxy.Direct():
		log.Info("egress: direct, no proxy configured; providers see this host's address", "egress", proxy)
	case !proxy.CanLookupIP():
		log.Warn("egress: through the upstream proxy, one port per user; no --egress-ip-url, so egress IPs stay unknown", "egress", proxy)
	default:
		log.Info("egress: through the upstream proxy, one port per user", "egress", proxy)
	}

	if rt.role == "runtime" {
		if err := os.MkdirAll(*data, 0o700); err != nil {
			return fmt.Errorf("data directory: %w", err)
		}
		return rt.serveRuntimeRole(ctx, log, cfg.Dev, *data, proxy)
	}

	st, err := openStore(ctx, log, *data, *dbURL, *migrateURL, *migrate || cfg.Dev)
	if err != nil {
		return err
	}
	defer st.Close()
	cfg.Store = st
	if *secretFile == "" {
		*secretFile = filepath.Join(*data, "prelogin.secret")
	}
	cfg.PreloginSecret, err = loadSecret(*secretFile, *dbURL == "")
	if err != nil {
		return err
	}
	keys, runner, stopRuntime, err := rt.runtimeFor(ctx, log, cfg.Dev, *data, proxy)
	defer stopRuntime()
	if err != nil {
		return err
	}
	cfg.RuntimeKeys, cfg.Runtime = keys, runner
	cfg.Metrics = metrics.Handler(rt.metricsRegistry())
	closeVMs, err := vms.startLoginVMs(ctx, log, st, *data, &cfg)
	if err != nil {
		return err
	}
	defer closeVMs()
	srv, err := controlplane.New(cfg, log, web.Assets)
	if err != nil {
		return err
	}
	return srv.Run(ctx, nil)
}

func openStore(ctx context.Context, log *slog.Logger, data, dbURL, migrateURL string, migrate bool) (store.Store, error) {
	if dbURL != "" {
		if migrate {
			// The server's own role may not change the schema: migrations
			// run as the owner, on a connection of their own.
			if migrateURL == "" {
				return nil, errors.New("--migrate with PostgreSQL needs --migrate-database-url (the schema owner), or run 'polydev migrate' first")
			}
			from, to, err := postgres.Migrate(ctx, migrateURL, log)
			if err != nil {
				return nil, err
			}
			log.Info("schema migrated", "from", from, "to", to)
		}
		st, err := postgres.Open(ctx, dbURL)
		if err != nil {
			return nil, err
		}
		log.Info("store: postgresql")
		return st, nil
	}
	if err := os.MkdirAll(data, 0o700); err != nil {
		return nil, fmt.Errorf("data directory: %w", err)
	}
	path := filepath.Join(data, sqliteFile)
	opts := []sqlite.Option{sqlite.WithLogger(log)}
	if migrate {
		opts = append(opts, sqlite.WithMigrate())
	}
	st, err := sqlite.Open(ctx, path, opts...)
	if err != nil {
		return nil, err
	}
	log.Info("store: sqlite", "path", path)
	return st, nil
}

// loadSecret reads the prelogin secret, creating it (0600) when missing and
// create is allowed.
func loadSecret(path string, create bool) ([]byte, error) {
	b, err := os.ReadFile(path)
	if errors.Is(err, fs.ErrNotExist) && create {
		b = make([]byte, 32)
		rand.Read(b)
		if err := os.WriteFile(path, b, 0o600); err != nil {
			return nil, fmt.Errorf("prelogin secret: %w", err)
		}
		return b, nil
	}
	if err != nil {
		return nil, fmt.Errorf("prelogin secret: %w (create it with: head -c 32 /dev/urandom > %s)", err, path)
	}
	if len(b) < 32 {
		return nil, fmt.Errorf("prelogin secret %s: %d bytes, want at least 32", path, len(b))
	}
	return b, nil
}

func envBool(name string) bool {
	switch os.Getenv(name) {
	case "1", "true", "yes", "on":
		return true
	}
	return false
}

func envDuration(name string, def time.Duration) time.Duration {
	if d, err := time.ParseDuration(os.Getenv(name)); err == nil {
		return d
	}
	return def
}
