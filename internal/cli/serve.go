package cli

import (
	"context"
	"log/slog"
	"time"

	"polydev/internal/controlplane"
	"polydev/web"
)

func runServe(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "serve [flags]", `
Runs the control plane: the web app and the HTTP API, until interrupted.
--dev selects the embedded defaults and listens on loopback only.`)
	cfg := controlplane.Config{}
	fs.BoolVar(&cfg.Dev, "dev", false, "embedded defaults for a single machine")
	fs.StringVar(&cfg.Addr, "addr", "127.0.0.1:8080", "listen address (host:port)")
	fs.DurationVar(&cfg.ShutdownTimeout, "shutdown-timeout", 15*time.Second, "how long a graceful shutdown may take")
	logJSON := fs.Bool("log-json", false, "log as JSON lines instead of text")
	if err := parse(fs, args); err != nil {
		return err
	}
	var h slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(e.stderr, nil)
	}
	srv, err := controlplane.New(cfg, slog.New(h), web.Assets)
	if err != nil {
		return err
	}
	return srv.Run(ctx, nil)
}
