package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"math"
	"net"
	"net/url"
	"os"
	"strings"
	"time"
	"unicode/utf8"

	"golang.org/x/term"

	"polydev/internal/client"
)

const (
	defaultServer     = "http://127.0.0.1:8080"
	minPasswordLength = 8 // characters; the KDF does the rest
)

func accountCommands() []accountCommand {
	return []accountCommand{
		{"register", "create an account and log in", runRegister},
		{"login", "log in and unlock your keys", runLogin},
		{"logout", "end this device's session", runLogout},
		{"whoami", "show the account of this device's session", runWhoami},
		{"passwd", "change your password", runPasswd},
		{"delete", "delete your account and everything it owns", runDeleteAccount},
	}
}

const accountHelp = `
The password never leaves this device: it is stretched into keys here, the
server receives only a derived authentication key, and your account key and
private key travel and rest wrapped. The session is kept in session.json in
$POLYDEV_CONFIG_DIR (default: the polydev folder in your configuration
directory); it holds a session token and ciphertext, never the password.

The password is asked on the terminal without echo, or read from
$POLYDEV_PASSWORD (and the new one at passwd from $POLYDEV_NEW_PASSWORD).`

func runAccount(ctx context.Context, e env, args []string) error {
	return group{name: "account", help: accountHelp, commands: accountCommands(), explain: explain}.run(ctx, e, args)
}

// accountEnv is env plus a line reader over stdin shared by every prompt.
type accountEnv struct {
	env
	in *bufio.Reader
}

// serverAndEmail parses the flags of the commands that name an account —
// --server and --email — and returns a client for the server and the email
// (asked on a terminal when the flag is absent).
func (a *accountEnv) serverAndEmail(name, synopsis string, args []string) (*client.Client, string, error) {
	fs := newFlagSet(a.env, name, synopsis)
	server, email := serverFlag(fs), fs.String("email", "", "email address (asked on a terminal if absent)")
	if err := parse(fs, args); err != nil {
		return nil, "", err
	}
	c, err := a.newClient(*server)
	if err != nil {
		return nil, "", err
	}
	e, err := a.email(*email)
	return c, e, err
}

func runRegister(ctx context.Context, a *accountEnv, args []string) error {
	c, email, err := a.serverAndEmail("account register [flags]", "Creates an account on the server and logs in.", args)
	if err != nil {
		return err
	}
	pw, err := a.newPassword(ctx, "POLYDEV_PASSWORD", "Password: ", "Repeat the password: ")
	if err != nil {
		return err
	}
	defer clear(pw)
	reg, err := client.Register(ctx, c, email, pw)
	if err != nil {
		return err
	}
	sess, keys, err := client.Login(ctx, c, email, pw)
	if err != nil {
		return fmt.Errorf("account created (user number %d), but logging in failed: %v; run polydev account login", reg.UserNumber, explain(err))
	}
	keys.Wipe()
	if err := a.saveSession(ctx, sess); err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "registered %s (user number %d) at %s and logged in\n", sess.Email, sess.UserNumber, sess.Server)
	return err
}

func runLogin(ctx context.Context, a *accountEnv, args []string) error {
	c, email, err := a.serverAndEmail("account login [flags]", "Logs in, unlocks your keys to check them, and keeps the session on this device.", args)
	if err != nil {
		return err
	}
	pw, err := a.password(ctx, "POLYDEV_PASSWORD", "Password: ")
	if err != nil {
		return err
	}
	defer clear(pw)
	sess, keys, err := client.Login(ctx, c, email, pw)
	if err != nil {
		return err
	}
	keys.Wipe()
	if err := a.saveSession(ctx, sess); err != nil {
		return err
	}
	_, err = fmt.Fprintf(a.stdout, "logged in as %s (user number %d) at %s; the session expires %s\n",
		sess.Email, sess.UserNumber, sess.Server, sess.ExpiresAt.Local().Format(time.DateTime))
	return err
}

func runLogout(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "account logout", "Revokes this device's session on the server and forgets its token.")
	server := serverFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	st, sess, err := a.loadSession(fs, *server)
	if errors.Is(err, client.ErrNotLoggedIn) || err == nil && sess.Token == "" {
		_, err = fmt.Fprintln(a.stdout, "not logged in")
		return err
	}
	if err != nil {
		return err
	}
	c, err := a.newClient(sess.Server)
	if err != nil {
		return err
	}
	revokeErr := c.Logout(ctx, sess.Token)
	if err := st.Logout(); err != nil {
		return err
	}
	// A session the server no longer knows is as good as revoked.
	if revokeErr != nil && !client.HasCode(revokeErr, client.CodeUnauthorized) {
		return fmt.Errorf("logged out on this device, but the server did not revoke the session: %v", explain(revokeErr))
	}
	_, err = fmt.Fprintf(a.stdout, "logged out %s\n", sess.Email)
	return err
}

func runWhoami(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "account whoami", "Shows the account of this device's session, as the server sees it.")
	server := serverFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, *server)
	if err != nil {
		return err
	}
	u := as.me.User
	_, err = fmt.Fprintf(a.stdout, "email:       %s\nuser id:     %s\nuser number: %d\nserver:      %s\nexpires:     %s\n",
		u.Email, u.ID, u.Number, as.sess.Server, as.sess.ExpiresAt.Local().Format(time.DateTime))
	return err
}

func runPasswd(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "account passwd", `
Changes your password: your account key is re-wrapped under a key from the
new password (no data is re-encrypted) and every other session is signed out.`)
	server := serverFlag(fs)
	if err := parse(fs, args); err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, *server)
	if err != nil {
		return err
	}
	old, err := a.password(ctx, "POLYDEV_PASSWORD", "Current password: ")
	if err != nil {
		return err
	}
	defer clear(old)
	pw, err := a.newPassword(ctx, "POLYDEV_NEW_PASSWORD", "New password: ", "Repeat the new password: ")
	if err != nil {
		return err
	}
	defer clear(pw)
	if err := client.ChangePassword(ctx, as.client, as.sess, old, pw); err != nil {
		return err
	}
	if err := as.state.Save(as.sess); err != nil {
		return fmt.Errorf("password changed, but %w; run polydev account login", err)
	}
	_, err = fmt.Fprintln(a.stdout, "password changed; every other session was signed out")
	return err
}

func runDeleteAccount(ctx context.Context, a *accountEnv, args []string) error {
	fs := newFlagSet(a.env, "account delete [--yes]", `
Deletes your account and everything it owns on the server, for good. You are
asked to type your email address to confirm (--yes skips that, for scripts)
and your password again.`)
	server := serverFlag(fs)
	yes := fs.Bool("yes", false, "do not ask for confirmation")
	if err := parse(fs, args); err != nil {
		return err
	}
	as, err := a.activeSession(ctx, fs, *server)
	if err != nil {
		return err
	}
	sess := as.sess
	if !*yes {
		fmt.Fprintf(a.stderr, "This permanently deletes the account %s at %s and everything it owns.\nType the email address to confirm: ", sess.Email, sess.Server)
		line, err := a.line()
		if err != nil {
			return errors.New("deletion needs confirmation: type the email address at the prompt, or pass --yes")
		}
		if got, _ := client.NormalizeEmail(line); got != sess.Email {
			return errors.New("the email address does not match; nothing was deleted")
		}
	}
	pw, err := a.password(ctx, "POLYDEV_PASSWORD", "Password: ")
	if err != nil {
		return err
	}
	defer clear(pw)
	if err := client.DeleteAccount(ctx, as.client, sess, pw); err != nil {
		return err
	}
	if err := as.state.Remove(); err != nil {
		return fmt.Errorf("account deleted, but %w", err)
	}
	_, err = fmt.Fprintf(a.stdout, "account %s deleted\n", sess.Email)
	return err
}

func serverFlag(fs *flag.FlagSet) *string {
	return fs.String("server", envOr("POLYDEV_SERVER", defaultServer), "server address (env POLYDEV_SERVER)")
}

// newClient checks the server address and warns when it is plain HTTP to
// another machine: the auth key and the session token would travel in the
// clear (the password and keys never do).
func (a *accountEnv) newClient(server string) (*client.Client, error) {
	s, err := client.ParseServerURL(server)
	if err != nil {
		return nil, err
	}
	if u, _ := url.Parse(s); u.Scheme == "http" && !isLoopback(u.Hostname()) {
		fmt.Fprintf(a.stderr, "warning: %s is plain HTTP: the session token travels unencrypted; use https\n", s)
	}
	return client.New(s, nil), nil
}

func isLoopback(host string) bool {
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(host)
	return ip != nil && ip.IsLoopback()
}

func (a *accountEnv) state() (*client.State, error) {
	d, err := client.DefaultStateDir()
	if err != nil {
		return nil, err
	}
	return client.NewState(d), nil
}

// loadSession reads the saved session. An explicit --server must be the
// session's: a token is only good at the server that issued it.
func (a *accountEnv) loadSession(fs *flag.FlagSet, server string) (*client.State, *client.Session, error) {
	st, err := a.state()
	if err != nil {
		return nil, nil, err
	}
	sess, err := st.Load()
	if err != nil {
		return nil, nil, err
	}
	explicit := false
	fs.Visit(func(f *flag.Flag) { explicit = explicit || f.Name == "server" })
	if explicit {
		if s, err := client.ParseServerURL(server); err != nil || s != sess.Server {
			return nil, nil, fmt.Errorf("this device's session is at %s, not %s", sess.Server, server)
		}
	}
	return st, sess, nil
}

// activeSession loads the session and checks it with the server before any
// password is asked.
type activeSession struct {
	state  *client.State
	client *client.Client
	sess   *client.Session
	me     *client.MeResponse
}

func (a *accountEnv) activeSession(ctx context.Context, fs *flag.FlagSet, server string) (*activeSession, error) {
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
	me, err := client.Me(ctx, c, sess)
	if err != nil {
		return nil, err
	}
	return &activeSession{state: st, client: c, sess: sess, me: me}, nil
}

// saveSession keeps a new session, revoking the one it replaces (best
// effort: a token no longer on disk is of no use to anyone but a thief).
func (a *accountEnv) saveSession(ctx context.Context, sess *client.Session) error {
	st, err := a.state()
	if err != nil {
		return err
	}
	if old, err := st.Load(); err == nil && old.Token != "" && old.Token != sess.Token {
		if s, err := client.ParseServerURL(old.Server); err == nil {
			ctx, cancel := context.WithTimeout(ctx, 5*time.Second)
			_ = client.New(s, nil).Logout(ctx, old.Token)
			cancel()
		}
	}
	if err := st.Save(sess); err != nil {
		return fmt.Errorf("logged in, but the session could not be kept: %w", err)
	}
	return nil
}

// email returns the flag's address, or asks for one on a terminal.
func (a *accountEnv) email(flagValue string) (string, error) {
	if flagValue == "" {
		if _, ok := terminal(a.stdin); !ok {
			return "", errors.New("--email is required")
		}
		fmt.Fprint(a.stderr, "Email: ")
		line, err := a.line()
		if err != nil {
			return "", errors.New("--email is required")
		}
		flagValue = line
	}
	return client.NormalizeEmail(flagValue)
}

// line reads one line from stdin, without its line ending.
func (a *accountEnv) line() (string, error) {
	s, err := a.in.ReadString('\n')
	if err != nil && (s == "" || !errors.Is(err, io.EOF)) {
		return "", err
	}
	return strings.TrimRight(s, "\r\n"), nil
}

// password returns the password from the environment variable envName,
// else asks for it on the terminal without echo. The caller wipes it. (The
// environment's own copy is a string and cannot be wiped.)
func (a *accountEnv) password(ctx context.Context, envName, prompt string) ([]byte, error) {
	if v, ok := os.LookupEnv(envName); ok {
		if v == "" {
			return nil, fmt.Errorf("%s is set but empty", envName)
		}
		return []byte(v), nil
	}
	fd, ok := terminal(a.stdin)
	if !ok {
		return nil, fmt.Errorf("no password: stdin is not a terminal and %s is not set", envName)
	}
	fmt.Fprint(a.stderr, prompt)
	pw, err := readPassword(ctx, fd)
	fmt.Fprintln(a.stderr)
	if err != nil {
		return nil, fmt.Errorf("read password: %w", err)
	}
	if len(pw) == 0 {
		return nil, errors.New("no password given")
	}
	return pw, nil
}

// newPassword is password for a password being chosen: asked twice on a
// terminal, and at least minPasswordLength characters.
func (a *accountEnv) newPassword(ctx context.Context, envName, prompt, again string) ([]byte, error) {
	pw, err := a.password(ctx, envName, prompt)
	if err != nil {
		return nil, err
	}
	if n := utf8.RuneCount(pw); n < minPasswordLength {
		clear(pw)
		return nil, fmt.Errorf("choose a password of at least %d characters", minPasswordLength)
	}
	if _, fromEnv := os.LookupEnv(envName); fromEnv {
		return pw, nil
	}
	pw2, err := a.password(ctx, envName, again)
	if err != nil {
		clear(pw)
		return nil, err
	}
	defer clear(pw2)
	if string(pw) != string(pw2) {
		clear(pw)
		return nil, errors.New("the passwords do not match")
	}
	return pw, nil
}

// terminal returns stdin's descriptor if it is a terminal.
func terminal(r io.Reader) (int, bool) {
	f, ok := r.(*os.File)
	if !ok {
		return 0, false
	}
	fd := int(f.Fd())
	return fd, term.IsTerminal(fd)
}

// readPassword reads a line without echo. An interrupt (ctx done) restores
// the terminal and returns at once; the read left blocked ends with the
// process, which is exiting.
func readPassword(ctx context.Context, fd int) ([]byte, error) {
	saved, err := term.GetState(fd)
	if err != nil {
		return nil, err
	}
	type result struct {
		pw  []byte
		err error
	}
	done := make(chan result, 1)
	go func() {
		pw, err := term.ReadPassword(fd)
		done <- result{pw, err}
	}()
	select {
	case r := <-done:
		return r.pw, r.err
	case <-ctx.Done():
		term.Restore(fd, saved)
		return nil, ctx.Err()
	}
}

// explain turns the client's errors into what the user should know and do.
func explain(err error) error {
	var api *client.APIError
	var unreachable *client.UnreachableError
	switch {
	case err == nil, errors.Is(err, errUsage), errors.Is(err, flag.ErrHelp):
		return err
	case errors.As(err, &unreachable):
		return unreachable
	case errors.Is(err, client.ErrWrongCredentials):
		return errors.New("wrong email or password")
	case errors.Is(err, client.ErrWrongPassword):
		return errors.New("wrong password")
	case errors.Is(err, client.ErrSessionExpired):
		return errors.New("your session has expired: run polydev account login")
	case errors.Is(err, client.ErrNotLoggedIn):
		return errors.New("not logged in: run polydev account login")
	case errors.As(err, &api) && api.Code == client.CodeRateLimited:
		if api.RetryAfter > 0 {
			return fmt.Errorf("too many attempts; try again in %d s", int(math.Ceil(api.RetryAfter.Seconds())))
		}
		return errors.New("too many attempts; try again later")
	case client.HasCode(err, client.CodeConflict):
		return errors.New("an account with this email address already exists")
	case client.HasCode(err, client.CodeWeakKDFParams):
		return errors.New("the server requires stronger key-derivation parameters than this client offers; update polydev")
	}
	return err
}
