package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"slices"
	"strings"
	"text/tabwriter"
	"time"

	"polydev/internal/client"
)

func linkCommands() []accountCommand {
	return []accountCommand{
		{"key", "link a provider by its API key (read from stdin)", runLinkKey},
		{"revoke", "delete a linked provider credential", runLinkRevoke},
		{"rotate-egress", "move a provider to a fresh egress port (a new exit IP)", runLinkRotate},
	}
}

const linkHelp = `
A provider's API key is sealed on this device to your own public key (your
password unlocks the keys, to be sure it is yours) and only the sealed
envelope goes to the server, which can never open it. The key is read from
stdin — never from the command line, where it would show in the process list
and the shell history — without echo on a terminal:

  polydev link key --provider openai            (asks for it)
  printf %s "$KEY" | polydev link key --provider anthropic

Each linked provider calls out through your own egress port, so the provider
sees a stable IP address of yours; rotate-egress moves it to a fresh one.`

func runLink(ctx context.Context, e env, args []string) error {
	if len(args) == 0 || args[0] == "-h" || args[0] == "--help" || args[0] == "help" {
		w := e.stderr
		if len(args) > 0 {
			w = e.stdout
		}
		fmt.Fprintf(w, "Usage: polydev link <command> [flags]\n%s\n\nCommands:\n", linkHelp)
		for _, c := range linkCommands() {
			fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
		}
		for _, c := range vmLinkCommands() {
			fmt.Fprintf(w, "  %-14s %s\n", c.name, c.summary)
		}
		fmt.Fprintf(w, "\nstart, status and stop sign in to a provider's own CLI (subscriptions) instead:\n%s\n", linkVMHelp)
		fmt.Fprintln(w, "\nSee also: polydev accounts (list what is linked).")
		if len(args) == 0 {
			return errUsage
		}
		return flag.ErrHelp
	}
	for _, c := range vmLinkCommands() {
		if c.name == args[0] {
			return runLinkVM(ctx, e, args)
		}
	}
	for _, c := range linkCommands() {
		if c.name == args[0] {
			a := &accountEnv{env: e, in: bufio.NewReader(e.stdin)}
			return explainLink(c.run(ctx, a, args[1:]))
		}
	}
	fmt.Fprintf(e.stderr, "polydev link: unknown command %q (try 'polydev link -h')\n", args[0])
	return errUsage
}

// providerFlags parses --server and --provider (required, checked).
func (a *accountEnv) providerFlags(name, synopsis string, args []string, extra func(fs *flag.FlagSet)) (*flag.FlagSet, string, string, error) {
	fs := newFlagSet(a.env, name, synopsis)
	server := serverFlag(fs)
	provider := fs.String("provider", "", "openai, anthropic or google (required)")
	if extra != nil {
		extra(fs)
	}
	if err := parse(fs, args); err != nil {
		return nil, "", "", err
	}
	if *provider == "" {
		fmt.Fprintln(fs.Output(), "--provider is required")
		fs.Usage()
		return nil, "", "", errUsage
	}
	if !slices.Contains(client.Providers, *provider) {
		return nil, "", "", fmt.Errorf("unknown provider %q: want openai, anthropic or google", *provider)
	}
	return fs, *server, *provider, nil
}

func runLinkKey(ctx context.Context, a *accountEnv, args []string) error {
	var keyFlag string
	fs, server, provider, err := a.providerFlags("link key --provider P", `
Links a provider by its API key, read from stdin (asked without echo on a
terminal). The key is sealed here to your own public key; your password
(from $POLYDEV_PASSWORD, or asked on the terminal) unlocks your keys first.`, args, func(fs *flag.FlagSet) {
		fs.StringVar(&keyFlag, "key", "", "refused: pass the key on stdin, never on the command line")
	})
	if err != nil {
		return err
	}
	if keyFlag != "" {
		return errors.New("refusing --key: a key on the command line shows in the process list and the shell history " +
			"(consider it exposed and rotate it at the provider); pipe it on stdin instead")
	}
	as, err := a.activeSession(ctx, fs, server)
	if err != nil {
		return err
	}
	pw, err := a.password(ctx, "POLYDEV_PASSWORD", "Password: ")
	if err != nil {
		return err
	}
	keys, err := client.Unlock(as.sess, pw)
	clear(pw)
	if err != nil {
		return err
	}
	defer keys.Wipe()
	key, err := a.secretInput(ctx, fmt.Sprintf("API key for %s: ", provider))
	if err != nil {
		return err
	}
	defer clear(key)
	resp, err := client.LinkKey(ctx, as.client, as.sess, keys, provider, key)
	if err != nil {
		return err
	}
	verb := "linked"
	if resp.Replaced {
		verb = "replaced the key of"
	}
	fmt.Fprintf(a.stdout, "%s %s: egress port %d, egress IP %s\n", verb, provider, resp.EgressPort, ipText(resp.EgressIP))
	if resp.EgressIPError != "" {
		fmt.Fprintf(a.stderr, "note: %s\n", resp.EgressIPError)
	}
	return nil
}

// secretInput reads a secret: without echo from a terminal, else all of
// stdin (up to a limit), without surrounding whitespace. The caller wipes
// it.
func (a *accountEnv) secretInput(ctx context.Context, prompt string) ([]byte, error) {
	if fd, ok := terminal(a.stdin); ok {
		fmt.Fprint(a.stderr, prompt)
		b, err := readPassword(ctx, fd)
		fmt.Fprintln(a.stderr)
		if err != nil {
			return nil, fmt.Errorf("read the key: %w", err)
		}
		return trimSecret(b)
	}
	const limit = 16 << 10
	b, err := io.ReadAll(io.LimitReader(a.in, limit+1))
	if err != nil {
		return nil, fmt.Errorf("read the key from stdin: %w", err)
	}
	if len(b) > limit {
		clear(b)
		return nil, fmt.Errorf("stdin holds more than %d bytes: not an API key", limit)
	}
	return trimSecret(b)
}

func trimSecret(b []byte) ([]byte, error) {
	start, end := 0, len(b)
	for start < end && strings.ContainsRune(" \t\r\n", rune(b[start])) {
		start++
	}
	for end > start && strings.ContainsRune(" \t\r\n", rune(b[end-1])) {
		end--
	}
	if start == end {
		clear(b)
		return nil, errors.New("no key given: pipe it on stdin, or type it at the prompt")
	}
	out := append([]byte(nil), b[start:end]...)
	clear(b)
	return out, nil
}

func ipText(ip string) string {
	if ip == "" {
		return "not known yet"
	}
	return ip
}

func runLinkRevoke(ctx context.Context, a *accountEnv, args []string) error {
	fs, server, provider, err := a.providerFlags("link revoke --provider P", "Deletes the linked credential of a provider from the server.", args, nil)
	if err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, server)
	if err != nil {
		return err
	}
	if err := as.client.RevokeProvider(ctx, as.sess.Token, provider); err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "revoked %s: its credential is deleted from the server\n", provider)
	return err
}

func runLinkRotate(ctx context.Context, a *accountEnv, args []string) error {
	fs, server, provider, err := a.providerFlags("link rotate-egress --provider P", `
Moves a provider to a fresh egress port, so that it sees you from a new IP
address. Your other providers keep theirs.`, args, nil)
	if err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, server)
	if err != nil {
		return err
	}
	resp, err := as.client.RotateEgress(ctx, as.sess.Token, provider)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "%s now egresses through port %d (was %d), egress IP %s\n", provider, resp.NewPort, resp.OldPort, ipText(resp.EgressIP))
	if resp.EgressIPError != "" {
		fmt.Fprintf(a.stderr, "note: %s\n", resp.EgressIPError)
	}
	return nil
}

func runAccounts(ctx context.Context, e env, args []string) error {
	a := &accountEnv{env: e, in: bufio.NewReader(e.stdin)}
	fs := newFlagSet(e, "accounts", "Lists your linked provider accounts and their egress.")
	server := serverFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, *server)
	if err != nil {
		return explainLink(err)
	}
	list, err := as.client.Accounts(ctx, as.sess.Token)
	if err != nil {
		return explainLink(err)
	}
	if len(list) == 0 {
		_, err = fmt.Fprintln(e.stdout, "no linked providers (link one with: polydev link key --provider openai)")
		return err
	}
	tw := tabwriter.NewWriter(e.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "PROVIDER\tEGRESS PORT\tEGRESS IP\tLINKED\tLAST USED\tLAST ROTATED")
	for _, p := range list {
		fmt.Fprintf(tw, "%s\t%d\t%s\t%s\t%s\t%s\n", p.Provider, p.EgressPort, orDash(p.EgressIP),
			p.LinkedAt.Local().Format(time.DateTime), timeOrDash(p.LastUsed), timeOrDash(p.LastRotatedAt))
	}
	return tw.Flush()
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

func timeOrDash(t *time.Time) string {
	if t == nil {
		return "-"
	}
	return t.Local().Format(time.DateTime)
}

// explainLink adds the accounts API's refusals to explain.
func explainLink(err error) error {
	switch {
	case client.HasCode(err, client.CodeNotLinked):
		return errors.New("that provider is not linked (see polydev accounts)")
	case client.HasCode(err, client.CodeEgressExhausted):
		return errors.New("the server has no free egress port left; ask its operator to widen the egress port range")
	}
	return explain(err)
}
