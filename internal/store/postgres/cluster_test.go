package postgres_test

import (
	"context"
	"fmt"
	"os"
	"runtime"
	"strings"
	"sync"
	"sync/atomic"
	"testing"

	"polydev/internal/store/postgres"
	"polydev/internal/testenv/pgtest"
)

// Starting a PostgreSQL cluster takes seconds, so the tests of this
// package share one, started by the first test that needs it and stopped
// when the binary's tests are done. Each test gets databases of its own:
// migrated ones are cloned from a template migrated once, which takes a
// fraction of a migration's time.

// templateDB is the migrated database that newDatabase clones.
const templateDB = "polydev_template"

// appLogin is the role the store connects as, set up the way the package
// documentation tells operators to: LOGIN, NOINHERIT, a member of both
// roles. Local connections are trusted, so it needs no password.
const appLogin = "app"

var shared struct {
	once  sync.Once
	tb    *mainTB
	c     *pgtest.Cluster
	ready bool
	n     atomic.Int64
}

func TestMain(m *testing.M) {
	code := m.Run()
	if shared.tb != nil && !shared.tb.teardown() {
		code = 1
	}
	os.Exit(code)
}

// cluster returns the shared cluster, starting it on first use. Where
// PostgreSQL is missing it skips the test, or fails it under CI=true, as
// pgtest.Start would.
func cluster(t *testing.T) *pgtest.Cluster {
	t.Helper()
	shared.once.Do(startShared)
	if !shared.ready {
		if shared.tb.Skipped() {
			t.Skipf("shared cluster: %s", shared.tb.output())
		}
		t.Fatalf("shared cluster failed to start:\n%s", shared.tb.output())
	}
	return shared.c
}

func startShared() {
	shared.tb = newMainTB()
	tb := shared.tb
	done := make(chan struct{})
	go func() { // so that tb.FailNow can end it with runtime.Goexit
		defer close(done)
		c := pgtest.Start(tb)
		dsn := c.CreateDatabase(tb, templateDB)
		if _, _, err := postgres.Migrate(tb.Context(), dsn, nil); err != nil {
			tb.Fatalf("migrating the template database: %v", err)
		}
		c.Psql(tb, "postgres", fmt.Sprintf("CREATE ROLE %s LOGIN NOINHERIT; GRANT polydev_app, polydev_auth, polydev_vmm TO %[1]s;", appLogin))
		shared.c, shared.ready = c, true
	}()
	<-done
}

// testDB names one test's database.
type testDB struct {
	name     string
	ownerDSN string // the bootstrap superuser, who owns the schema
	appDSN   string // appLogin
}

// newDatabase creates a database for t on the shared cluster: a clone of
// the migrated template, or an empty one.
func newDatabase(t *testing.T, migrated bool) testDB {
	t.Helper()
	c := cluster(t)
	name := fmt.Sprintf("t%d_%s", shared.n.Add(1), identifier(t.Name()))
	if migrated {
		c.Psql(t, "postgres", fmt.Sprintf(`CREATE DATABASE "%s" TEMPLATE "%s"`, name, templateDB))
	} else {
		c.CreateDatabase(t, name)
	}
	// In a key/value connection string the last setting of a key wins.
	owner := c.SuperuserDSN() + " dbname=" + name
	return testDB{name: name, ownerDSN: owner, appDSN: owner + " user=" + appLogin}
}

// identifier turns a test name into a short, plain database name part.
func identifier(s string) string {
	s = strings.Map(func(r rune) rune {
		if r >= 'a' && r <= 'z' || r >= '0' && r <= '9' {
			return r
		}
		if r >= 'A' && r <= 'Z' {
			return r + 'a' - 'A'
		}
		return '_'
	}, s)
	return s[:min(len(s), 40)]
}

// mainTB is the testing.TB that the shared cluster belongs to: pgtest.Start
// registers the server's teardown with it, and TestMain runs that teardown
// after the last test. It implements the methods pgtest uses; the embedded
// nil TB makes any other call panic loudly rather than misbehave.
type mainTB struct {
	testing.TB
	ctx    context.Context
	cancel context.CancelFunc

	mu       sync.Mutex
	cleanups []func()
	log      strings.Builder
	failed   bool
	skipped  bool
}

func newMainTB() *mainTB {
	ctx, cancel := context.WithCancel(context.Background())
	return &mainTB{ctx: ctx, cancel: cancel}
}

func (m *mainTB) Helper()                  {}
func (m *mainTB) Name() string             { return "TestMain" }
func (m *mainTB) Context() context.Context { return m.ctx }

func (m *mainTB) Cleanup(f func()) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.cleanups = append(m.cleanups, f)
}

func (m *mainTB) Logf(format string, args ...any) {
	m.mu.Lock()
	defer m.mu.Unlock()
	fmt.Fprintf(&m.log, format+"\n", args...)
}

func (m *mainTB) Log(args ...any) { m.Logf("%s", strings.TrimSuffix(fmt.Sprintln(args...), "\n")) }

func (m *mainTB) Fail() {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.failed = true
}

func (m *mainTB) Failed() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.failed
}

func (m *mainTB) Skipped() bool {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.skipped
}

func (m *mainTB) Error(args ...any)                 { m.Log(args...); m.Fail() }
func (m *mainTB) Errorf(format string, args ...any) { m.Logf(format, args...); m.Fail() }
func (m *mainTB) FailNow()                          { m.Fail(); runtime.Goexit() }
func (m *mainTB) Fatal(args ...any)                 { m.Log(args...); m.FailNow() }
func (m *mainTB) Fatalf(format string, args ...any) { m.Logf(format, args...); m.FailNow() }
func (m *mainTB) Skip(args ...any)                  { m.Log(args...); m.SkipNow() }
func (m *mainTB) Skipf(format string, args ...any)  { m.Logf(format, args...); m.SkipNow() }

func (m *mainTB) SkipNow() {
	m.mu.Lock()
	m.skipped = true
	m.mu.Unlock()
	runtime.Goexit()
}

func (m *mainTB) output() string {
	m.mu.Lock()
	defer m.mu.Unlock()
	return m.log.String()
}

// teardown runs the cleanups, last registered first, as testing does, and
// reports whether everything went well.
func (m *mainTB) teardown() bool {
	m.cancel()
	m.mu.Lock()
	cleanups := m.cleanups
	m.cleanups = nil
	m.mu.Unlock()
	for i := len(cleanups) - 1; i >= 0; i-- {
		done := make(chan struct{})
		go func() { // a FailNow in a cleanup ends this goroutine, not TestMain
			defer close(done)
			cleanups[i]()
		}()
		<-done
	}
	if m.Failed() {
		fmt.Fprintf(os.Stderr, "shared PostgreSQL cluster:\n%s", m.output())
		return false
	}
	return true
}
