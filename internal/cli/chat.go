package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net/http"
	"strconv"
	"strings"
	"text/tabwriter"
	"time"

	"polydev/internal/client"
)

func chatCommands() []accountCommand {
	return []accountCommand{
		{"new", "start a conversation and print its id", runChatNew},
		{"send", "send a prompt and stream the answer", runChatSend},
		{"ls", "list your conversations", runChatList},
		{"show", "show a conversation, decrypted", runChatShow},
		{"rm", "delete a conversation", runChatRemove},
		{"trust-runtime", "show or deliberately replace the pinned runtime identity", runTrustRuntime},
	}
}

const chatHelp = `
Conversations are encrypted on this device: each has its own key, kept on the
server only wrapped by your account key, and its title, prompts and answers
are ciphertext to the server. A prompt travels with a grant — the
conversation key and your provider credential — sealed to the runtime's
public key, so only the short-lived runtime worker that calls the provider
can open it; the answer streams back encrypted and is decrypted here.

The runtime's key is signed by its long-term identity. The first identity
seen for a server is pinned in runtime-identities.json in $POLYDEV_CONFIG_DIR;
any other is refused until you run 'polydev chat trust-runtime' with the new
identity your operator announced.

Commands that decrypt ask for your password on the terminal, or read
$POLYDEV_PASSWORD. Link a provider first (polydev link key).`

func runChat(ctx context.Context, e env, args []string) error {
	return group{name: "chat", help: chatHelp, commands: chatCommands(), explain: explainChat}.run(ctx, e, args)
}

// chatContext is what a chat command works with. Close wipes the keys.
type chatContext struct {
	state  *client.State
	client *client.Client
	sess   *client.Session
	keys   *client.Keys
	chat   *client.Chat
}

func (c *chatContext) Close() { c.keys.Wipe() }

// openChat loads and checks the session and, when unlock is set, asks for
// the password and unlocks the keys on this device (no server involved).
func (a *accountEnv) openChat(ctx context.Context, fs *flag.FlagSet, server string, unlock bool) (*chatContext, error) {
	st, sess, err := a.loadSession(fs, server)
	if err != nil {
		return nil, err
	}
	if err := sess.Active(time.Now()); err != nil {
		return nil, err
	}
	c, err := a.newClient(sess.Server)
	if err != nil {
		return nil, err
	}
	cc := &chatContext{state: st, client: c, sess: sess}
	if unlock {
		pw, err := a.password(ctx, "POLYDEV_PASSWORD", "Password: ")
		if err != nil {
			return nil, err
		}
		cc.keys, err = client.Unlock(sess, pw)
		clear(pw)
		if err != nil {
			return nil, err
		}
	}
	cc.chat = client.NewChat(c, sess, cc.keys, st)
	return cc, nil
}

// parseArgs parses flags that may come before, between or after the
// positional arguments ("--" ends the flags), and checks their count.
func parseArgs(fs *flag.FlagSet, args []string, min, max int) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		rest := fs.Args()
		if len(rest) == 0 {
			break
		}
		// fs.Parse stops at the first non-flag, or after "--".
		if len(args) > len(rest) && args[len(args)-len(rest)-1] == "--" {
			pos = append(pos, rest...)
			break
		}
		pos = append(pos, rest[0])
		args = rest[1:]
	}
	if len(pos) < min || max >= 0 && len(pos) > max {
		if len(pos) < min {
			fmt.Fprintln(fs.Output(), "missing arguments")
		} else {
			fmt.Fprintf(fs.Output(), "unexpected arguments: %s\n", strings.Join(pos[max:], " "))
		}
		fs.Usage()
		return nil, errUsage
	}
	return pos, nil
}

func runChatNew(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat new [flags]", `
Starts a conversation and prints its id. --model is remembered on this device
for the conversation's later sends; without it each send uses the provider's
default (openai gpt-4o-mini, anthropic claude-sonnet-4-5, google
gemini-2.5-flash).`)
	server := serverFlag(fs)
	provider := fs.String("provider", "openai", "openai, anthropic or google")
	model := fs.String("model", "", "model for this conversation's sends (default: the provider's)")
	title := fs.String("title", "", "title, encrypted on this device")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	if err := client.CheckProvider(*provider); err != nil {
		return err
	}
	cc, err := a.openChat(ctx, fs, *server, true)
	if err != nil {
		return err
	}
	defer cc.Close()
	id, err := cc.chat.CreateConversation(ctx, *provider, *title)
	if err != nil {
		return err
	}
	if *model != "" {
		if err := cc.state.SetConversationModel(id, *model); err != nil {
			fmt.Fprintf(a.stderr, "warning: %v\n", err)
		}
	}
	_, err = fmt.Fprintln(a.stdout, id)
	return err
}

// maxPrompt bounds a prompt read from stdin; the API's body limit is 1 MiB
// and the prompt travels base64-encoded.
const maxPrompt = 512 << 10

func runChatSend(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat send [flags] ID [PROMPT]", `
Sends PROMPT (read from stdin when absent) to conversation ID and prints the
answer as it streams in. An answer that breaks off is kept on the server,
marked incomplete; the command then says so on stderr and exits with status 1.`)
	server := serverFlag(fs)
	model := fs.String("model", "", "model (default: the one remembered for the conversation, else the provider's)")
	temp := fs.String("temperature", "", "sampling temperature, e.g. 0.7 (default: the provider's)")
	verbose := fs.Bool("v", false, "print the model, token counts and duration to stderr")
	pos, err := parseArgs(fs, args, 1, -1)
	if err != nil {
		return err
	}
	id := pos[0]
	var temperature *float64
	if *temp != "" {
		t, err := strconv.ParseFloat(*temp, 64)
		if err != nil || t < 0 || t > 2 || math.IsNaN(t) {
			return fmt.Errorf("--temperature %q: want a number from 0 to 2", *temp)
		}
		temperature = &t
	}
	cc, err := a.openChat(ctx, fs, *server, true)
	if err != nil {
		return err
	}
	defer cc.Close()

	var prompt []byte
	if len(pos) > 1 {
		prompt = []byte(strings.Join(pos[1:], " "))
	} else {
		if _, ok := terminal(a.stdin); ok {
			fmt.Fprintln(a.stderr, "Type the prompt; end it with Ctrl-D on a line of its own.")
		}
		prompt, err = io.ReadAll(io.LimitReader(a.in, maxPrompt+1))
		if err != nil {
			return fmt.Errorf("read the prompt: %w", err)
		}
		if len(prompt) > maxPrompt {
			clear(prompt)
			return fmt.Errorf("the prompt is longer than %d KiB", maxPrompt>>10)
		}
	}
	defer clear(prompt)
	// Slices of prompt, not copies: clearing prompt clears them.
	trimmed := bytes.TrimRight(prompt, "\r\n")
	if len(bytes.TrimSpace(trimmed)) == 0 {
		return errors.New("empty prompt: give it as an argument or on stdin")
	}

	m := *model
	if m == "" {
		if m, err = cc.state.ConversationModel(id); err != nil {
			fmt.Fprintf(a.stderr, "warning: %v\n", err)
		}
	}
	w := &answerWriter{w: a.stdout}
	res, err := cc.chat.Send(ctx, id, trimmed, m, temperature, w.write)
	w.end()
	if res != nil && res.PinnedIdentity != "" {
		fmt.Fprintf(a.stderr, "pinned the runtime identity of %s on first use: %s\n", cc.sess.Server, res.PinnedIdentity)
	}
	if err != nil {
		return sendError(id, res, err)
	}
	if *model != "" {
		if err := cc.state.SetConversationModel(id, *model); err != nil {
			fmt.Fprintf(a.stderr, "warning: %v\n", err)
		}
	}
	if *verbose {
		fmt.Fprintf(a.stderr, "model %s · %d input + %d output tokens · %s · egress port %d\n", res.Model,
			res.Usage.InputTokens, res.Usage.OutputTokens, res.Duration.Round(time.Millisecond), res.EgressPort)
	}
	return w.err
}

// answerWriter prints the answer as it arrives and ends it with a newline.
type answerWriter struct {
	w    io.Writer
	last byte
	n    int
	err  error
}

func (aw *answerWriter) write(s string) {
	if aw.err != nil || s == "" {
		return
	}
	_, aw.err = io.WriteString(aw.w, s)
	aw.n += len(s)
	aw.last = s[len(s)-1]
}

func (aw *answerWriter) end() {
	if aw.n > 0 && aw.last != '\n' && aw.err == nil {
		_, aw.err = io.WriteString(aw.w, "\n")
	}
}

// sendError says what became of an answer that did not arrive whole.
func sendError(id string, res *client.SendResult, err error) error {
	var ae *client.AnswerError
	var api *client.APIError
	retry := ""
	if errors.As(err, &api) && api.RetryAfter > 0 {
		retry = fmt.Sprintf("; try again in %d s", int(math.Ceil(api.RetryAfter.Seconds())))
	}
	switch {
	// Refusals before the answer began: nothing was stored.
	case api != nil && api.Code == "rate_limited":
		return fmt.Errorf("the provider is rate-limiting this account (%s); nothing was stored%s", api.Message, retry)
	case api != nil && api.Code == "provider_auth":
		return errors.New("the provider refused the linked credential; link it again with polydev link key")
	case api != nil && api.Code == "too_many_streams":
		return fmt.Errorf("too many answers are streaming for this account at once; wait for one to end%s", retry)
	case api != nil && (api.Code == "runtime_busy" || api.Code == "overloaded"):
		return fmt.Errorf("%s; nothing was stored%s", api.Message, retry)
	case api != nil && api.Status != http.StatusUnauthorized && api.Status != http.StatusNotFound && !errors.Is(err, client.ErrProviderNotLinked):
		msg := api.Message
		if msg == "" {
			msg = api.Code
		}
		return fmt.Errorf("the answer failed before it began: %s; nothing was stored, so you can send the prompt again%s", msg, retry)
	case errors.As(err, &ae):
		var s strings.Builder
		fmt.Fprintf(&s, "the answer is incomplete: %s", explainAnswer(ae))
		switch {
		case ae.Stored && ae.Incomplete:
			s.WriteString("; the part that arrived is stored, marked incomplete (polydev chat show " + id + ")")
		case ae.Stored:
			s.WriteString("; your prompt is stored")
		default:
			s.WriteString("; nothing was stored, so you can send the prompt again")
		}
		return errors.New(s.String())
	case errors.Is(err, context.Canceled):
		return errors.New("interrupted: the answer is incomplete; the server keeps the part it received, marked incomplete")
	case res != nil && res.Incomplete:
		return fmt.Errorf("the answer is incomplete: %w", err)
	}
	return err
}

func explainAnswer(e *client.AnswerError) string {
	msg := e.Message
	switch e.Kind {
	case "auth":
		msg = "the provider refused the linked credential (" + e.Message + "); link it again with polydev link key"
	case "rate_limited":
		msg = "the provider is rate-limiting this account"
		if e.RetryAfter > 0 {
			msg += fmt.Sprintf("; try again in %d s", int(math.Ceil(e.RetryAfter.Seconds())))
		}
	case "grant":
		msg = "the runtime could not use the request (" + e.Message + "); check this device's clock and try again"
	}
	switch {
	case msg == "":
		return e.Kind
	case strings.Contains(msg, e.Kind):
		return msg
	}
	return e.Kind + ": " + msg
}

func runChatList(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat ls [flags]", "Lists your conversations, most recently updated first, with their titles decrypted.")
	server := serverFlag(fs)
	limit := fs.Int("limit", 0, "list at most this many (0: all)")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	cc, err := a.openChat(ctx, fs, *server, true)
	if err != nil {
		return err
	}
	defer cc.Close()
	var all []client.ConversationInfo
	cursor := ""
	for {
		page := 0
		if *limit > 0 {
			page = min(*limit-len(all), 100)
		}
		infos, next, err := cc.chat.ListConversations(ctx, page, cursor)
		if err != nil {
			return err
		}
		all = append(all, infos...)
		if next == "" || next == cursor || *limit > 0 && len(all) >= *limit || len(infos) == 0 {
			break
		}
		cursor = next
	}
	if *limit > 0 && len(all) > *limit {
		all = all[:*limit]
	}
	if len(all) == 0 {
		_, err := fmt.Fprintln(a.stdout, "no conversations yet; start one with polydev chat new")
		return err
	}
	tw := tabwriter.NewWriter(a.stdout, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "ID\tPROVIDER\tUPDATED\tTITLE")
	damaged := 0
	for _, c := range all {
		title := c.Title
		if c.Err != nil {
			title, damaged = "[title does not decrypt: damaged or tampered with]", damaged+1
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\n", c.ID, c.Provider, c.UpdatedAt.Local().Format(time.DateTime), oneLine(title))
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if damaged > 0 {
		return fmt.Errorf("%d of your conversations do not decrypt with your keys: their ciphertext was damaged or tampered with", damaged)
	}
	return nil
}

func runChatShow(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat show [flags] ID", "Shows a conversation and all its messages, decrypted on this device.")
	server := serverFlag(fs)
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	id := pos[0]
	cc, err := a.openChat(ctx, fs, *server, true)
	if err != nil {
		return err
	}
	defer cc.Close()
	v, err := cc.chat.Conversation(ctx, id)
	if err != nil {
		return conversationNotFound(id, err)
	}
	w := a.stdout
	title := v.Title
	switch {
	case v.Err != nil:
		title = "[title does not decrypt: damaged or tampered with]"
	case title == "":
		title = "(untitled)"
	}
	fmt.Fprintf(w, "%s\n%s · %s · created %s\n", oneLine(title), v.ID, v.Provider, v.CreatedAt.Local().Format(time.DateTime))
	damaged := 0
	for _, m := range v.Messages {
		who := m.Role
		if who == "user" {
			who = "you"
		}
		head := []string{who}
		if m.Role == "assistant" {
			if m.Model != "" {
				head = append(head, m.Model)
			}
			if m.TokensUsed > 0 {
				head = append(head, fmt.Sprintf("%d tokens", m.TokensUsed))
			}
			if m.Duration > 0 {
				head = append(head, m.Duration.Round(time.Millisecond).String())
			}
		}
		head = append(head, m.CreatedAt.Local().Format(time.DateTime))
		fmt.Fprintf(w, "\n── %s\n", strings.Join(head, " · "))
		switch {
		case m.Err != nil:
			damaged++
			fmt.Fprintln(w, "[this message does not decrypt: damaged or tampered with]")
			continue
		case m.Text != "":
			fmt.Fprint(w, m.Text)
			if !strings.HasSuffix(m.Text, "\n") {
				fmt.Fprintln(w)
			}
		}
		if m.Incomplete {
			fmt.Fprintln(w, "[incomplete: the answer broke off here]")
		}
	}
	if damaged > 0 {
		return fmt.Errorf("%d message(s) of conversation %s do not decrypt with your keys: their ciphertext was damaged or tampered with", damaged, id)
	}
	return nil
}

func runChatRemove(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat rm [flags] ID", "Deletes a conversation and all its messages from the server.")
	server := serverFlag(fs)
	pos, err := parseArgs(fs, args, 1, 1)
	if err != nil {
		return err
	}
	cc, err := a.openChat(ctx, fs, *server, false)
	if err != nil {
		return err
	}
	if err := cc.chat.DeleteConversation(ctx, pos[0]); err != nil {
		return conversationNotFound(pos[0], err)
	}
	_, err = fmt.Fprintf(a.stdout, "deleted conversation %s\n", pos[0])
	return err
}

func runTrustRuntime(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "chat trust-runtime [--identity IDENTITY]", `
Without --identity, shows the runtime identity the server presents and the one
pinned on this device. With --identity, pins the server's identity in place of
the old one — only if it is exactly IDENTITY, which you must get from the
operator by another channel than this server (a changed identity is what a
compromised server substituting its own runtime key would look like).`)
	server := serverFlag(fs)
	identity := fs.String("identity", "", "the new runtime identity, as announced by the operator")
	if _, err := parseArgs(fs, args, 0, 0); err != nil {
		return err
	}
	cc, err := a.openChat(ctx, fs, *server, false)
	if err != nil {
		return err
	}
	srv := cc.client.ServerURL()
	if *identity != "" {
		rk, before, err := client.TrustRuntime(ctx, cc.client, cc.state, cc.sess.Token, strings.TrimSpace(*identity), time.Now())
		if err != nil {
			return err
		}
		switch {
		case before == "":
			_, err = fmt.Fprintf(a.stdout, "pinned the runtime identity of %s: %s\n", srv, rk.Identity)
		case before == rk.Identity:
			_, err = fmt.Fprintf(a.stdout, "the runtime identity of %s was already pinned: %s\n", srv, rk.Identity)
		default:
			_, err = fmt.Fprintf(a.stdout, "replaced the pinned runtime identity of %s\n  was: %s\n  now: %s\n", srv, before, rk.Identity)
		}
		return err
	}
	info, err := cc.client.RuntimeKeyInfo(ctx, cc.sess.Token)
	if err != nil {
		return err
	}
	rk, verr := client.VerifyRuntimeKey(info, time.Now())
	pin, pinned, err := cc.state.RuntimePin(srv)
	if err != nil {
		return err
	}
	fmt.Fprintf(a.stdout, "server:           %s\n", srv)
	if verr != nil {
		fmt.Fprintf(a.stdout, "served identity:  %s (its key does not verify)\n", info.Identity)
	} else {
		fmt.Fprintf(a.stdout, "served identity:  %s (key %s, expires %s)\n", rk.Identity, rk.ID, rk.ExpiresAt.Local().Format(time.DateTime))
	}
	if pinned {
		fmt.Fprintf(a.stdout, "pinned identity:  %s (since %s)\n", pin.Identity, pin.PinnedAt.Local().Format(time.DateTime))
	} else {
		fmt.Fprintln(a.stdout, "pinned identity:  none (the next send pins the served one)")
	}
	switch {
	case verr != nil:
		return fmt.Errorf("%w; nothing will be sent to this runtime", verr)
	case pinned && pin.Identity != rk.Identity:
		return fmt.Errorf("the served identity differs from the pinned one: sends are refused. If your operator announced exactly the served identity, run: polydev chat trust-runtime --identity %s", rk.Identity)
	}
	return nil
}

func conversationNotFound(id string, err error) error {
	if errors.Is(err, client.ErrConversationNotFound) {
		return fmt.Errorf("no conversation %s in your account (polydev chat ls lists them)", id)
	}
	return err
}

// oneLine keeps a title on one line of a listing.
func oneLine(s string) string {
	return strings.Join(strings.Fields(s), " ")
}

// explainChat adds the chat errors' advice to explain's.
func explainChat(err error) error {
	var nl *client.NotLinkedError
	var changed *client.IdentityChangedError
	switch {
	case errors.As(err, &changed):
		return changed
	case errors.As(err, &nl):
		return fmt.Errorf("no %s account is linked: run polydev link key --provider %s", nl.Provider, nl.Provider)
	case errors.Is(err, client.ErrRuntimeKeyInvalid):
		return fmt.Errorf("%w; nothing was sent. The server relayed a runtime key its runtime did not sign: tell the operator", err)
	case errors.Is(err, client.ErrConversationNotFound):
		return errors.New("no such conversation in your account (polydev chat ls lists them)")
	}
	return explain(err)
}
