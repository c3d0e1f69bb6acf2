// Package cli is the polydev command line: one file per subcommand, each
// parsing its flags and handing the work to the package that owns it.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"sort"
	"strings"
)

// env is what a subcommand may touch of the outside world.
type env struct {
	stdin          io.Reader
	stdout, stderr io.Writer
}

type command struct {
	name    string
	summary string
	run     func(ctx context.Context, e env, args []string) error
}

func commands() []command {
	return []command{
		{"account", "register, log in, change password, delete an account", runAccount},
		{"bench", "measure the runtime pool and chat streaming through it", runBench},
		{"image", "build a runtime container image (OCI rootfs)", runImage},
		{"accounts", "list your linked provider accounts and their egress", runAccounts},
		{"link", "link a provider by API key, revoke it, rotate its egress", runLink},
		{"emulator", "serve local, wire-faithful OpenAI, Anthropic and Gemini APIs for development and tests", runEmulator},
		{"chat", "encrypted conversations: new, send, ls, show, rm", runChat},
		{"agent", "run inside a login VM (answers the VM manager)", runAgent},
		{"bench", "measure a component on this host (bench vm: login VMs)", runBench},
		{"migrate", "bring the database schema to this build's version", runMigrate},
		{"serve", "run the control plane (HTTP API and web app)", runServe},
		{"version", "print the build's version", runVersion},
		{"worker", "the program inside a runtime container (not for direct use)", runWorker},
	}
}

// errUsage marks an error already explained by the flag package's usage
// output; Run exits with status 2 for it.
var errUsage = errors.New("usage")

// Run executes the subcommand named by args[0] and returns the process exit
// status: 0 on success, 1 on failure, 2 on a usage error.
func Run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	e := env{stdin: stdin, stdout: stdout, stderr: stderr}
	if len(args) == 0 || args[0] == "help" || args[0] == "-h" || args[0] == "--help" {
		if len(args) > 1 {
			return Run(ctx, []string{args[1], "-h"}, stdin, stdout, stderr)
		}
		usage(stdout)
		if len(args) == 0 {
			return 2
		}
		return 0
	}
	for _, c := range commands() {
		if c.name != args[0] {
			continue
		}
		err := c.run(ctx, e, args[1:])
		switch {
		case err == nil || errors.Is(err, flag.ErrHelp):
			return 0
		case errors.Is(err, errUsage):
			return 2
		default:
			fmt.Fprintf(stderr, "polydev %s: %v\n", c.name, err)
			return 1
		}
	}
	fmt.Fprintf(stderr, "polydev: unknown command %q\n\n", args[0])
	usage(stderr)
	return 2
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "Polydev: your own AI provider accounts, one chat API, CLI and web app; the server holds only ciphertext.")
	fmt.Fprintln(w, "\nUsage: polydev <command> [flags]\n\nCommands:")
	cs := commands()
	sort.Slice(cs, func(i, j int) bool { return cs[i].name < cs[j].name })
	for _, c := range cs {
		fmt.Fprintf(w, "  %-10s %s\n", c.name, c.summary)
	}
	fmt.Fprintln(w, "\nRun 'polydev help <command>' for a command's flags.")
}

// newFlagSet returns a flag set that reports errors instead of exiting.
func newFlagSet(e env, name, synopsis string) *flag.FlagSet {
	fs := flag.NewFlagSet("polydev "+name, flag.ContinueOnError)
	fs.SetOutput(e.stderr)
	fs.Usage = func() {
		fmt.Fprintf(fs.Output(), "Usage: polydev %s\n\n%s\n\nFlags:\n", name, strings.TrimSpace(synopsis))
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, mapping a parse failure to errUsage.
func parse(fs *flag.FlagSet, args []string) error {
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			return err
		}
		return errUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(fs.Args(), " "))
		fs.Usage()
		return errUsage
	}
	return nil
}
