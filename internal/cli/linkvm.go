package cli

import (
	"bufio"
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"math"
	"strings"
	"time"

	"polydev/internal/client"
)

// polydev link: login VMs, in which you sign in to a provider's own CLI
// (docs/api.md, "Login VMs").

const linkVMHelp = `
A login VM is a throwaway microVM on the server in which you sign in to a
provider's own CLI (codex, claude, gemini). You have at most one per
provider; it is destroyed when you stop it, or at the end of its lifetime
(10 minutes by default), and leaves nothing behind on the server.
Uses the session of 'polydev account login'.`

type vmLinkCommand struct {
	name, synopsis, summary string
	run                     func(ctx context.Context, a *accountEnv, c *client.Client, token string, args []string, out func(client.LoginVMSession) error) error
}

func vmLinkCommands() []vmLinkCommand {
	return []vmLinkCommand{
		{"start", "link start [flags] openai|anthropic|google", "get a login VM for a provider (your live one, if any)", runLinkStart},
		{"status", "link status [flags] [session-id]", "show one login VM session, or your live ones", runLinkStatus},
		{"stop", "link stop [flags] session-id", "destroy a login VM", runLinkStop},
	}
}

// runLinkVM runs the login VM commands of 'polydev link'.
func runLinkVM(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := e.stderr
		if len(args) > 0 {
			w = e.stdout
		}
		fmt.Fprintf(w, "Usage: polydev link <command> [flags]\n%s\n\nCommands:\n", linkVMHelp)
		for _, c := range vmLinkCommands() {
			fmt.Fprintf(w, "  %-7s %s\n", c.name, c.summary)
		}
		fmt.Fprintln(w, "\nRun 'polydev link <command> -h' for a command's flags.")
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	for _, c := range vmLinkCommands() {
		if c.name != args[0] {
			continue
		}
		a := &accountEnv{env: e, in: bufio.NewReader(e.stdin)}
		fs := newFlagSet(e, c.synopsis, strings.ToUpper(c.summary[:1])+c.summary[1:]+".")
		server := serverFlag(fs)
		asJSON := fs.Bool("json", false, "print the session(s) as JSON")
		pos, err := parseInterleaved(fs, args[1:])
		if err != nil {
			return err
		}
		_, sess, err := a.loadSession(fs, *server)
		if err == nil {
			err = sess.Active(time.Now())
		}
		if err != nil {
			return explainLinkVM(err)
		}
		cl, err := a.newClient(sess.Server)
		if err != nil {
			return err
		}
		out := func(s client.LoginVMSession) error {
			if *asJSON {
				enc := json.NewEncoder(a.stdout)
				enc.SetIndent("", "  ")
				return enc.Encode(s)
			}
			_, err := fmt.Fprintln(a.stdout, describeLoginVM(s))
			return err
		}
		err = c.run(ctx, a, cl, sess.Token, pos, out)
		if errors.Is(err, errUsageMsg) {
			fmt.Fprintln(e.stderr, err)
			fs.Usage()
			return errUsage
		}
		return explainLinkVM(err)
	}
	fmt.Fprintf(e.stderr, "polydev link: unknown command %q (try 'polydev link -h')\n", args[0])
	return errUsage
}

func runLinkStart(ctx context.Context, a *accountEnv, c *client.Client, token string, args []string, out func(client.LoginVMSession) error) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: name one provider: openai, anthropic or google", errUsageMsg)
	}
	s, err := c.LinkStart(ctx, token, args[0])
	if err != nil {
		return err
	}
	return out(s)
}

func runLinkStatus(ctx context.Context, a *accountEnv, c *client.Client, token string, args []string, out func(client.LoginVMSession) error) error {
	switch len(args) {
	case 0:
		ss, err := c.LinkSessions(ctx, token)
		if err != nil {
			return err
		}
		if len(ss) == 0 {
			_, err := fmt.Fprintln(a.stdout, "no live login VM")
			return err
		}
		for _, s := range ss {
			if err := out(s); err != nil {
				return err
			}
		}
		return nil
	case 1:
		s, err := c.LinkSession(ctx, token, args[0])
		if err != nil {
			return err
		}
		return out(s)
	}
	return fmt.Errorf("%w: at most one session id", errUsageMsg)
}

func runLinkStop(ctx context.Context, a *accountEnv, c *client.Client, token string, args []string, out func(client.LoginVMSession) error) error {
	if len(args) != 1 {
		return fmt.Errorf("%w: name the session id (polydev link status lists them)", errUsageMsg)
	}
	s, err := c.LinkDestroy(ctx, token, args[0])
	if err != nil {
		return err
	}
	return out(s)
}

// parseInterleaved parses flags that may come before, between or after
// the positional arguments, and returns those.
func parseInterleaved(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		if fs.NArg() == 0 {
			return pos, nil
		}
		pos = append(pos, fs.Arg(0))
		args = fs.Args()[1:]
	}
}

// errUsageMsg marks a usage error explained by its own message.
var errUsageMsg = errors.New("usage")

// describeLoginVM is one line for people.
func describeLoginVM(s client.LoginVMSession) string {
	var b strings.Builder
	fmt.Fprintf(&b, "%s  %-9s  %s", s.LoginVMSessionID, s.Provider, s.Status)
	switch {
	case s.DestroyedAt != nil:
		fmt.Fprintf(&b, " at %s", s.DestroyedAt.Local().Format(time.TimeOnly))
	case s.ExpiresAt != nil:
		fmt.Fprintf(&b, ", destroyed at %s at the latest", s.ExpiresAt.Local().Format(time.TimeOnly))
	}
	if len(s.Removed) > 0 {
		fmt.Fprintf(&b, "; removed %s", strings.Join(s.Removed, ", "))
	}
	return b.String()
}

// explainLink turns the login VM API's errors into what the user should
// know and do.
func explainLinkVM(err error) error {
	var api *client.APIError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &api) && api.Code == "capacity":
		wait := "shortly"
		if api.RetryAfter > 0 {
			wait = fmt.Sprintf("in %d s", int(math.Ceil(api.RetryAfter.Seconds())))
		}
		return fmt.Errorf("no login VM is free on the server right now; try again %s", wait)
	case errors.As(err, &api) && api.Code == "unknown_provider":
		return errors.New("unknown provider: use openai, anthropic or google")
	case errors.As(err, &api) && api.Code == "unavailable":
		return fmt.Errorf("the server offers no login VMs right now: %s", api.Message)
	case client.HasCode(err, client.CodeNotFound):
		return errors.New("no such login VM session")
	}
	return explainLink(err)
}
