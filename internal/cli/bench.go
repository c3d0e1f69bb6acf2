package cli

import (
	"context"
	"fmt"
)

// runBench dispatches 'polydev bench WHAT'.
func runBench(ctx context.Context, e env, args []string) error {
	if len(args) == 0 {
		fmt.Fprintln(e.stderr, "Usage: polydev bench pool|chat [flags]")
		return errUsage
	}
	switch args[0] {
	case "pool":
		return runBenchPool(ctx, e, args[1:])
	case "chat":
		return runBenchChatRunc(ctx, e, args[1:])
	}
	fmt.Fprintf(e.stderr, "polydev bench: unknown benchmark %q\n", args[0])
	return errUsage
}
