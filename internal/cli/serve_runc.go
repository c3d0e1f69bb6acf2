package cli

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"net"

	"polydev/internal/egress"
	"polydev/internal/egress/gateway"
	"polydev/internal/runtime/runc"
)

// runcFlags configure serve --runtime runc.
type runcFlags struct {
	image, root string
	minIdle     int
	maxTotal    int
}

func (f *runcFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.image, "runtime-image", envOr("POLYDEV_RUNTIME_IMAGE", "/var/lib/polydev/images/runtime"), "runtime container image directory, from 'polydev image build runtime' (env POLYDEV_RUNTIME_IMAGE)")
	fs.StringVar(&f.root, "runtime-root", envOr("POLYDEV_RUNTIME_ROOT", "/run/polydev-runtime"), "where runtime containers' state, sockets and directories live; reclaimed at start (env POLYDEV_RUNTIME_ROOT)")
	fs.IntVar(&f.minIdle, "runtime-min-idle", 2, "fresh containers kept ready per provider")
	fs.IntVar(&f.maxTotal, "runtime-max", 128, "containers at most per provider")
}

// pool starts the container pool whose gateways dial through proxy: each
// request's traffic leaves through its user's egress port.
func (f *runcFlags) pool(ctx context.Context, log *slog.Logger, proxy *egress.Proxy) (*runc.Pool, error) {
	size := runc.PoolSize{MinIdle: f.minIdle, MaxTotal: f.maxTotal}
	if f.minIdle == 0 {
		size.MinIdle = -1
	}
	p, err := runc.New(ctx, runc.Config{
		Root:    f.root,
		Image:   f.image,
		Pools:   map[string]runc.PoolSize{"openai": size, "anthropic": size, "google": size},
		Default: size,
		Egress: func(port int) gateway.DialFunc {
			return func(ctx context.Context, network, addr string) (net.Conn, error) {
				return proxy.DialContext(ctx, port, network, addr)
			}
		},
		Log: log.With("component", "runtime_pool"),
	})
	if err != nil {
		return nil, fmt.Errorf("--runtime runc: %w", err)
	}
	log.Info("runtime: runc containers", "image", f.image, "root", f.root, "user_namespace", p.UserNS())
	return p, nil
}
