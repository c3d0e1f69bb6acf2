package cli

import (
	"bufio"
	"context"
	"flag"
	"fmt"
)

// accountCommand is one subcommand of a command group (polydev account,
// chat, link): it runs with the shared stdin reader of accountEnv.
type accountCommand struct {
	name, summary string
	run           func(ctx context.Context, a *accountEnv, args []string) error
}

// group is a command made of subcommands: help, lookup and the mapping of
// errors to what the user should know, written once.
type group struct {
	name, help string
	commands   []accountCommand
	explain    func(error) error
}

func (g group) run(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := e.stderr
		if len(args) > 0 {
			w = e.stdout
		}
		width := 0
		for _, c := range g.commands {
			width = max(width, len(c.name))
		}
		fmt.Fprintf(w, "Usage: polydev %s <command> [flags]\n%s\n\nCommands:\n", g.name, g.help)
		for _, c := range g.commands {
			fmt.Fprintf(w, "  %-*s  %s\n", width, c.name, c.summary)
		}
		fmt.Fprintf(w, "\nRun 'polydev %s <command> -h' for a command's flags.\n", g.name)
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	for _, c := range g.commands {
		if c.name == args[0] {
			a := &accountEnv{env: e, in: bufio.NewReader(e.stdin)}
			return g.explain(c.run(ctx, a, args[1:]))
		}
	}
	fmt.Fprintf(e.stderr, "polydev %s: unknown command %q (try 'polydev %s -h')\n", g.name, args[0], g.name)
	return errUsage
}
