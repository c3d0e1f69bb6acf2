// Command polydev is the single Polydev binary: the control plane, the
// in-sandbox programs and the client. See `polydev help`.
package main

import (
	"context"
	"os"
	"os/signal"
	"syscall"

	"polydev/internal/cli"
)

func main() {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	code := cli.Run(ctx, os.Args[1:], os.Stdin, os.Stdout, os.Stderr)
	stop()
	os.Exit(code)
}
