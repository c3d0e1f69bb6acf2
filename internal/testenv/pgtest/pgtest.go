// Package pgtest gives a test its own PostgreSQL server, started from the
// installed binaries and thrown away when the test ends.
//
// Start runs initdb into a fresh temporary directory and starts postgres
// listening only on a Unix socket in that directory: there is no TCP port,
// so parallel tests, other test binaries and any server already on the
// machine cannot collide with it. Durability is switched off (fsync,
// full_page_writes, synchronous_commit), which makes the server fast and
// would lose data in a crash; the data is thrown away anyway. Local
// connections are trusted, which is safe because the socket directory has
// mode 0700: only its owner, and root, can reach the socket.
//
// initdb and postgres refuse to run as root. When the tests run as root (in
// a container, say), the server runs as the unprivileged user nobody (or
// else postgres) and the temporary directory is handed to that user; the
// test process, being root, can still reach the socket.
//
// When the test ends, its cleanup stops the server (pg_ctl stop -m
// immediate), makes sure none of its processes survive and removes the
// directory. If the test binary dies without running cleanups (a -timeout
// panic, os.Exit), the kernel tells the server to quit, so a crashed run
// leaves at most a directory behind, not a running server.
//
// Without PostgreSQL binaries, Start skips the test, or fails it under
// CI=true (see testenv.Missing).
package pgtest

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"os"
	"os/exec"
	"os/user"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"

	"polydev/internal/testenv"
)

const (
	// superuser is the bootstrap superuser (initdb -U), so DSNs do not
	// depend on which OS user ran initdb.
	superuser = "postgres"
	// port only names the socket file (.s.PGSQL.5432): every cluster has
	// its own socket directory, so they can all use the same number.
	port = "5432"

	startTimeout = 60 * time.Second // initdb, then again for readiness
	stopTimeout  = 30 * time.Second
	psqlTimeout  = 2 * time.Minute // turns a hung query into a clear failure
)

// Cluster is a running PostgreSQL server owned by one test. Its methods are
// safe for concurrent use (by parallel subtests, say).
type Cluster struct {
	binDir  string
	dir     string // the socket directory; also holds data/ and server.log
	dataDir string
	logFile string
	owner   *account // who runs initdb, pg_ctl and postgres; nil: this process's user
	env     []string

	proc    *os.Process   // the postmaster
	exited  chan struct{} // closed once the postmaster has exited and been reaped
	waitErr error         // how it exited; read only after exited is closed
}

// account is the unprivileged user the server runs as when the tests run as
// root.
type account struct {
	name     string
	uid, gid uint32
}

// Start starts a fresh PostgreSQL cluster for the test (or calls
// testenv.Missing when no PostgreSQL binaries exist) and removes it, and
// everything it wrote, when the test ends. Like t.Fatal, it must be called
// from the goroutine running the test.
func Start(t testing.TB) *Cluster {
	t.Helper()
	if !supported {
		testenv.Missing(t, "pgtest runs PostgreSQL servers on Linux only")
	}
	binDir, err := findBinDir()
	if err != nil {
		testenv.Missing(t, "%v (apt-get install postgresql)", err)
	}
	owner, err := serverAccount()
	if err != nil {
		testenv.Missing(t, "%v", err)
	}
	dir, err := makeDir(owner)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	// Cleanups run last-in first-out: registering each undo step as soon as
	// its resource exists means the server is stopped before its directory
	// goes, whichever step fails.
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Errorf("pgtest: removing the cluster directory: %v", err)
		}
	})
	c := &Cluster{
		binDir:  binDir,
		dir:     dir,
		dataDir: filepath.Join(dir, "data"),
		logFile: filepath.Join(dir, "server.log"),
		owner:   owner,
		env:     cleanEnv(),
		exited:  make(chan struct{}),
	}

	ctx, cancel := context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	if err := c.initdb(ctx); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	if err := c.start(); err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	t.Cleanup(func() { c.stop(t) })

	ctx, cancel = context.WithTimeout(t.Context(), startTimeout)
	defer cancel()
	if err := c.waitReady(ctx); err != nil {
		t.Fatalf("pgtest: %v\nserver log %s, last lines:\n%s", err, c.logFile, tail(c.logFile))
	}
	as := "the current user"
	if owner != nil {
		as = owner.name
	}
	t.Logf("pgtest: PostgreSQL from %s running in %s as %s", binDir, dir, as)
	return c
}

// SuperuserDSN returns a libpq key/value connection string (which pgx also
// accepts) for the bootstrap superuser and the postgres database, over the
// cluster's Unix socket.
func (c *Cluster) SuperuserDSN() string { return c.dsn("postgres") }

// BinDir returns the directory of the PostgreSQL binaries the cluster runs
// on, for tests that need pg_dump, pg_restore and the like from the same
// version.
func (c *Cluster) BinDir() string { return c.binDir }

// CreateDatabase creates a database owned by the superuser and returns a
// connection string for it, like SuperuserDSN. The name is quoted, so any
// name PostgreSQL accepts works as given, case included.
func (c *Cluster) CreateDatabase(t testing.TB, name string) string {
	t.Helper()
	c.Psql(t, "postgres", "CREATE DATABASE "+quoteIdent(name))
	return c.dsn(name)
}

// Psql runs sql through the psql binary as the superuser, connected to
// database db, and returns what psql printed: unaligned and without headers
// (psql -At), so "select 1" gives "1\n". The SQL runs as a script, statement
// by statement (so CREATE DATABASE works beside other statements), and stops
// at the first error, which fails the test.
func (c *Cluster) Psql(t testing.TB, db, sql string) string {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), psqlTimeout)
	defer cancel()
	out, err := c.psql(ctx, db, sql)
	if err != nil {
		t.Fatalf("pgtest: %v", err)
	}
	return out
}

func (c *Cluster) psql(ctx context.Context, db, sql string) (string, error) {
	cmd := c.clientCommand(ctx, "psql", "-X", "-q", "-A", "-t", "-v", "ON_ERROR_STOP=1", "-d", c.dsn(db), "-f", "-")
	cmd.Stdin = strings.NewReader(sql)
	var stdout, stderr bytes.Buffer
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		return stdout.String(), fmt.Errorf("psql on database %q: %w\n%s", db, err, stderr.Bytes())
	}
	return stdout.String(), nil
}

func (c *Cluster) dsn(db string) string {
	return fmt.Sprintf("host=%s port=%s user=%s dbname=%s sslmode=disable",
		connValue(c.dir), port, superuser, connValue(db))
}

// connValue quotes a value for a key/value connection string where libpq
// (and pgx, which follows it) would otherwise misread it.
func connValue(s string) string {
	if s != "" && !strings.ContainsAny(s, " \t\n\r\v\f'\\=") {
		return s
	}
	return "'" + strings.NewReplacer(`\`, `\\`, `'`, `\'`).Replace(s) + "'"
}

func quoteIdent(s string) string { return `"` + strings.ReplaceAll(s, `"`, `""`) + `"` }

func (c *Cluster) initdb(ctx context.Context) error {
	// The C locale and UTF8 make sorting and messages the same on every
	// machine; --no-sync because the cluster will not outlive the test.
	cmd := c.serverCommand(ctx, "initdb", "-D", c.dataDir, "-U", superuser, "--auth=trust",
		"--encoding=UTF8", "--locale=C", "--no-sync")
	if out, err := cmd.CombinedOutput(); err != nil {
		return fmt.Errorf("initdb: %w\n%s", err, out)
	}
	return nil
}

// start runs postgres itself rather than through pg_ctl start, so that the
// server stays a child of the test process: the test reaps it, knows for
// certain when it has gone, and the kernel stops it if the test binary dies
// (see serverProcAttr).
func (c *Cluster) start() error {
	logf, err := os.OpenFile(c.logFile, os.O_CREATE|os.O_WRONLY|os.O_APPEND, 0o644)
	if err != nil {
		return fmt.Errorf("creating the server log: %w", err)
	}
	defer logf.Close() // the server has its own copy of the descriptor
	cmd := exec.Command(filepath.Join(c.binDir, "postgres"), "-D", c.dataDir,
		"-c", "listen_addresses=",
		"-c", "unix_socket_directories="+quoteIdent(c.dir), // a list; double quotes keep odd paths whole
		"-c", "port="+port,
		"-c", "fsync=off",
		"-c", "full_page_writes=off",
		"-c", "synchronous_commit=off")
	cmd.Dir = c.dir
	cmd.Env = c.env
	cmd.Stdout, cmd.Stderr = logf, logf
	cmd.SysProcAttr = serverProcAttr(c.owner)

	started := make(chan error, 1)
	go func() {
		// The parent-death signal fires when the thread that started the
		// server ends, not the process. Locking this goroutine to its
		// thread and never unlocking keeps that thread alive exactly as
		// long as the server: Go retires it only when this goroutine
		// returns, after Wait.
		runtime.LockOSThread()
		if err := cmd.Start(); err != nil {
			started <- err
			return
		}
		started <- nil
		c.waitErr = cmd.Wait()
		close(c.exited)
	}()
	if err := <-started; err != nil {
		return fmt.Errorf("starting postgres: %w", err)
	}
	c.proc = cmd.Process
	return nil
}

// waitReady polls pg_isready, as the test process's own user, until the
// server accepts connections, it exits, or ctx ends.
func (c *Cluster) waitReady(ctx context.Context) error {
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		err := c.clientCommand(ctx, "pg_isready", "-q", "-t", "5", "-d", c.dsn("postgres")).Run()
		if err == nil {
			return nil
		}
		// Exit status 1 (rejecting: still starting up) and 2 (no answer:
		// no socket yet) are worth waiting out; anything else is not.
		var exit *exec.ExitError
		if ctx.Err() == nil && (!errors.As(err, &exit) || exit.ExitCode() > 2) {
			return fmt.Errorf("pg_isready: %w", err)
		}
		select {
		case <-c.exited:
			return fmt.Errorf("postgres exited during start-up: %v", c.waitErr)
		case <-ctx.Done():
			return fmt.Errorf("postgres not accepting connections after %v: %w", startTimeout, ctx.Err())
		case <-tick.C:
		}
	}
}

// stop is the cluster's cleanup: stop the server, wait until it and every
// process it started have gone, and report anything left behind.
func (c *Cluster) stop(t testing.TB) {
	if t.Failed() {
		t.Logf("pgtest: server log %s, last lines:\n%s", c.logFile, tail(c.logFile))
	}
	ctx, cancel := context.WithTimeout(context.WithoutCancel(t.Context()), stopTimeout)
	defer cancel()
	select {
	case <-c.exited:
		t.Logf("pgtest: postgres had already exited: %v", c.waitErr)
	default:
		// Immediate mode: no checkpoint, nothing to keep.
		out, err := c.serverCommand(ctx, "pg_ctl", "stop", "-D", c.dataDir, "-m", "immediate", "-W").CombinedOutput()
		if err != nil {
			t.Errorf("pgtest: pg_ctl stop: %v\n%s", err, out)
			c.proc.Kill()
		}
	}
	select {
	case <-c.exited:
	case <-ctx.Done():
		t.Errorf("pgtest: postgres (pid %d) still running %v after pg_ctl stop; killing it", c.proc.Pid, stopTimeout)
		c.proc.Kill()
		<-c.exited
	}
	// An immediate shutdown waits for the server's children, so none
	// should be left; look anyway, since a survivor would keep running
	// after the test, with its files deleted.
	for {
		left := clusterProcesses(c.dataDir)
		if len(left) == 0 {
			return
		}
		if ctx.Err() != nil {
			t.Errorf("pgtest: server processes %v outlived the postmaster; killing them", left)
			for _, pid := range left {
				if p, err := os.FindProcess(pid); err == nil {
					p.Kill()
				}
			}
			return
		}
		time.Sleep(20 * time.Millisecond)
	}
}

// serverCommand prepares initdb or pg_ctl to run as the server's user, in
// the cluster directory.
func (c *Cluster) serverCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := c.clientCommand(ctx, name, args...)
	cmd.Dir = c.dir
	cmd.SysProcAttr = toolProcAttr(c.owner)
	return cmd
}

// clientCommand prepares a client binary (psql, pg_isready) to run as the
// test process's own user, as the code under test will connect.
func (c *Cluster) clientCommand(ctx context.Context, name string, args ...string) *exec.Cmd {
	cmd := exec.CommandContext(ctx, filepath.Join(c.binDir, name), args...)
	cmd.Env = c.env
	cmd.WaitDelay = 5 * time.Second // should a stray child hold the output pipe open
	return cmd
}

// cleanEnv drops the PG* variables (PGHOST, PGDATA, PGPORT...) that would
// point the tools at some other server, and fixes the locale and client
// encoding so that messages and output do not depend on the machine.
func cleanEnv() []string {
	var env []string
	for _, kv := range os.Environ() {
		if strings.HasPrefix(kv, "PG") || strings.HasPrefix(kv, "LC_") || strings.HasPrefix(kv, "LANG") {
			continue
		}
		env = append(env, kv)
	}
	return append(env, "LC_ALL=C", "PGCLIENTENCODING=UTF8")
}

// findBinDir finds a directory holding the server binaries: the one
// pg_config names, else the newest /usr/lib/postgresql/*/bin (Debian and
// Ubuntu keep the server binaries off PATH), else initdb's directory on
// PATH.
func findBinDir() (string, error) {
	var dirs []string
	// pg_config may come from libpq-dev alone and name /usr/bin, which
	// has no server; hasServerBinaries sorts that out.
	if out, err := exec.Command("pg_config", "--bindir").Output(); err == nil {
		dirs = append(dirs, strings.TrimSpace(string(out)))
	}
	installed, _ := filepath.Glob("/usr/lib/postgresql/*/bin")
	dirs = append(dirs, newestFirst(installed)...)
	if p, err := exec.LookPath("initdb"); err == nil {
		dirs = append(dirs, filepath.Dir(p))
	}
	for _, dir := range dirs {
		if hasServerBinaries(dir) {
			return dir, nil
		}
	}
	return "", errors.New("no PostgreSQL server binaries (initdb, postgres, pg_ctl, psql, pg_isready) found through pg_config --bindir, in /usr/lib/postgresql/*/bin or on PATH")
}

// newestFirst orders /usr/lib/postgresql/<version>/bin directories by
// version, newest first: 10 is newer than 9.6, though it sorts before it
// as text.
func newestFirst(dirs []string) []string {
	version := func(dir string) []int {
		var v []int
		for _, part := range strings.Split(filepath.Base(filepath.Dir(dir)), ".") {
			n, err := strconv.Atoi(part)
			if err != nil {
				return nil // not a version: last
			}
			v = append(v, n)
		}
		return v
	}
	sorted := slices.Clone(dirs)
	slices.SortStableFunc(sorted, func(a, b string) int { return slices.Compare(version(b), version(a)) })
	return sorted
}

func hasServerBinaries(dir string) bool {
	for _, name := range []string{"initdb", "postgres", "pg_ctl", "psql", "pg_isready"} {
		info, err := os.Stat(filepath.Join(dir, name))
		if err != nil || !info.Mode().IsRegular() || info.Mode().Perm()&0o111 == 0 {
			return false
		}
	}
	return true
}

// serverAccount returns the user to run the server as: nil (the current
// user) unless this process is root, which initdb and postgres refuse.
// nobody comes first because it owns nothing else on the machine; postgres,
// which owns any system cluster, is the fallback.
func serverAccount() (*account, error) {
	if os.Geteuid() != 0 {
		return nil, nil
	}
	for _, name := range []string{"nobody", "postgres"} {
		u, err := user.Lookup(name)
		if err != nil {
			continue
		}
		uid, err1 := strconv.ParseUint(u.Uid, 10, 32)
		gid, err2 := strconv.ParseUint(u.Gid, 10, 32)
		if err1 != nil || err2 != nil || uid == 0 {
			continue
		}
		return &account{name: name, uid: uint32(uid), gid: uint32(gid)}, nil
	}
	return nil, errors.New("the tests run as root, which initdb refuses, and there is no nobody or postgres user to run PostgreSQL as (useradd --system postgres, or run the tests as another user)")
}

// makeDir creates the cluster directory, mode 0700, owned by the server's
// user. Its path is resolved through symlinks so that it matches what
// /proc reports as the server's working directory.
func makeDir(owner *account) (string, error) {
	dir, err := os.MkdirTemp(baseDir(owner != nil), "pgtest")
	if err != nil {
		return "", fmt.Errorf("creating the cluster directory: %w", err)
	}
	resolved, err := filepath.EvalSymlinks(dir)
	if err == nil && owner != nil {
		err = os.Chown(resolved, int(owner.uid), int(owner.gid))
	}
	if err != nil {
		os.RemoveAll(dir)
		return "", fmt.Errorf("preparing the cluster directory: %w", err)
	}
	return resolved, nil
}

// baseDir picks where cluster directories go: the usual temporary
// directory, unless a socket path in it would be too long for a Unix socket
// (108 bytes, of which the cluster directory and socket name take about 32),
// or, when the server runs as another user, that user could not reach it
// (TMPDIR under /root, say).
func baseDir(otherUser bool) string {
	dir, err := filepath.EvalSymlinks(os.TempDir())
	if err != nil || len(dir) > 70 || otherUser && !searchableByAll(dir) {
		return "/tmp"
	}
	return dir
}

func searchableByAll(dir string) bool {
	for {
		info, err := os.Stat(dir)
		if err != nil || info.Mode().Perm()&0o001 == 0 {
			return false
		}
		parent := filepath.Dir(dir)
		if parent == dir {
			return true
		}
		dir = parent
	}
}

// tail returns the last lines of the server log, for error messages.
func tail(path string) string {
	data, err := os.ReadFile(path)
	if err != nil {
		return fmt.Sprintf("(cannot read it: %v)", err)
	}
	lines := strings.Split(strings.TrimRight(string(data), "\n"), "\n")
	return strings.Join(lines[max(0, len(lines)-30):], "\n")
}
