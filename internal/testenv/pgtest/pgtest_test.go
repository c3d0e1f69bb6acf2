package pgtest

import (
	"bufio"
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestCluster(t *testing.T) {
	t.Parallel()
	c := Start(t)

	t.Run("Psql", func(t *testing.T) {
		t.Parallel()
		tests := []struct {
			name    string
			sql     string
			want    string
			wantErr string // in the error; "" for success
		}{
			{name: "select", sql: "select 1", want: "1\n"},
			{name: "superuser", sql: "select current_user, rolsuper from pg_roles where rolname = current_user", want: "postgres|t\n"},
			{
				name: "throwaway settings",
				sql: "select name || '=' || setting from pg_settings " +
					"where name in ('fsync', 'full_page_writes', 'synchronous_commit', 'listen_addresses') order by name",
				want: "fsync=off\nfull_page_writes=off\nlisten_addresses=\nsynchronous_commit=off\n",
			},
			{name: "utf8", sql: "select 'naïve ☃'", want: "naïve ☃\n"},
			// A script, not one query string: CREATE DATABASE refuses to
			// run in the implicit transaction of a multi-statement query.
			{name: "script", sql: "create database psql_script_a; create database psql_script_b; select 2", want: "2\n"},
			{name: "stops at the first error", sql: "select 1; select no_such_column; select 3", want: "1\n", wantErr: "no_such_column"},
		}
		for _, tt := range tests {
			t.Run(tt.name, func(t *testing.T) {
				got, err := c.psql(t.Context(), "postgres", tt.sql)
				switch {
				case tt.wantErr == "" && err != nil:
					t.Fatalf("psql(%q): %v", tt.sql, err)
				case tt.wantErr != "" && (err == nil || !strings.Contains(err.Error(), tt.wantErr)):
					t.Fatalf("psql(%q) error = %v; want one mentioning %q", tt.sql, err, tt.wantErr)
				}
				if got != tt.want {
					t.Errorf("psql(%q) = %q; want %q", tt.sql, got, tt.want)
				}
			})
		}
	})

	t.Run("CreateDatabase", func(t *testing.T) {
		t.Parallel()
		// The returned DSN is handed to psql as given, as libpq (and pgx)
		// would parse it; names that need quoting check the quoting.
		for _, name := range []string{"app", "Mixed Case", `it's "odd"\`, "key=value"} {
			t.Run(name, func(t *testing.T) {
				dsn := c.CreateDatabase(t, name)
				if !strings.Contains(dsn, "host="+c.dir+" ") || !strings.Contains(dsn, "sslmode=disable") {
					t.Errorf("DSN %q; want the socket directory %s as host and sslmode=disable", dsn, c.dir)
				}
				got := psqlDSN(t, c, dsn, "select current_database() || '|' || current_user")
				if want := name + "|postgres\n"; got != want {
					t.Errorf("connected with %q: got %q; want %q", dsn, got, want)
				}
			})
		}
	})

	t.Run("SuperuserDSN", func(t *testing.T) {
		t.Parallel()
		if got, want := psqlDSN(t, c, c.SuperuserDSN(), "select current_database()"), "postgres\n"; got != want {
			t.Errorf("got %q; want %q", got, want)
		}
	})

	t.Run("BinDir", func(t *testing.T) {
		t.Parallel()
		out, err := exec.Command(filepath.Join(c.BinDir(), "pg_dump"), "--schema-only", "-d", c.SuperuserDSN()).CombinedOutput()
		if err != nil {
			t.Fatalf("pg_dump from BinDir: %v\n%s", err, out)
		}
		if !bytes.Contains(out, []byte("PostgreSQL database dump")) {
			t.Errorf("pg_dump printed %q; want a dump", out)
		}
	})
}

// psqlDSN runs psql on a connection string exactly as given.
func psqlDSN(t *testing.T, c *Cluster, dsn, sql string) string {
	t.Helper()
	cmd := exec.CommandContext(t.Context(), filepath.Join(c.BinDir(), "psql"), "-X", "-At", "-v", "ON_ERROR_STOP=1", "-d", dsn, "-c", sql)
	cmd.Env = append(cleanEnv(), "PGCONNECT_TIMEOUT=10")
	out, err := cmd.Output()
	if err != nil {
		t.Fatalf("psql -d %q: %v", dsn, err)
	}
	return string(out)
}

func TestCleanupRemovesEverything(t *testing.T) {
	t.Parallel()
	var dir, dataDir string
	var pid int
	// A subtest of its own, so that its cleanup has run when t.Run returns.
	ok := t.Run("cluster", func(t *testing.T) {
		c := Start(t)
		dir, dataDir, pid = c.dir, c.dataDir, c.proc.Pid
		// While the server runs, the checks below must see it: otherwise
		// they would pass whatever cleanup did.
		if _, err := os.Stat(filepath.Join(dir, ".s.PGSQL."+port)); err != nil {
			t.Errorf("socket: %v", err)
		}
		if got := postmasterPID(t, dataDir); got != pid {
			t.Errorf("postmaster.pid names %d; want the started process %d", got, pid)
		}
		if procs := clusterProcesses(dataDir); !slices.Contains(procs, pid) || len(procs) < 2 {
			t.Errorf("server processes %v; want the postmaster %d and its children", procs, pid)
		}
		c.Psql(t, "postgres", "create table t as select generate_series(1, 1000) as n")
	})
	if !ok || dir == "" {
		return
	}
	if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("after cleanup, stat %s: %v; want it removed", dir, err)
	}
	if alive(pid) {
		t.Errorf("after cleanup, the postmaster (pid %d) is alive", pid)
	}
	if procs := clusterProcesses(dataDir); len(procs) > 0 {
		t.Errorf("after cleanup, server processes %v survive", procs)
	}
}

func TestParallelClustersAreIsolated(t *testing.T) {
	t.Parallel()
	for i := range 2 {
		t.Run(strconv.Itoa(i), func(t *testing.T) {
			t.Parallel()
			c := Start(t)
			name := fmt.Sprintf("only_in_cluster_%d", i)
			c.CreateDatabase(t, name)
			got := c.Psql(t, "postgres", "select string_agg(datname, ',') from pg_database where datname like 'only_in_cluster_%'")
			if want := name + "\n"; got != want {
				t.Errorf("databases seen by cluster %d: %q; want only its own, %q", i, got, want)
			}
		})
	}
}

// TestCleanupWhenTestEndsBadly runs itself again in a child test binary
// (PGTEST_HELPER set), which starts a cluster and then fails, or exits
// without running its cleanups, and checks what the cluster left behind.
func TestCleanupWhenTestEndsBadly(t *testing.T) {
	if mode := os.Getenv("PGTEST_HELPER"); mode != "" {
		endBadly(t, mode)
		return
	}
	t.Parallel()
	if _, err := findBinDir(); err != nil || !supported {
		Start(t) // skips, or fails under CI, saying why
	}
	if _, err := serverAccount(); err != nil {
		Start(t)
	}
	tests := []struct {
		mode       string
		cleanupRan bool // if not, only the server is expected to go
	}{
		{mode: "fatal", cleanupRan: true},
		{mode: "exit", cleanupRan: false},
	}
	for _, tt := range tests {
		t.Run(tt.mode, func(t *testing.T) {
			t.Parallel()
			cmd := exec.CommandContext(t.Context(), os.Args[0], "-test.run=^TestCleanupWhenTestEndsBadly$", "-test.count=1", "-test.v")
			cmd.Env = append(os.Environ(), "PGTEST_HELPER="+tt.mode)
			out, err := cmd.CombinedOutput()
			if err == nil {
				t.Fatalf("the helper test passed; want it to end badly:\n%s", out)
			}
			dir, pid := helperCluster(t, out)
			dataDir := filepath.Join(dir, "data")
			if !tt.cleanupRan {
				t.Cleanup(func() { os.RemoveAll(dir) }) // left behind by design
			} else if _, err := os.Stat(dir); !errors.Is(err, fs.ErrNotExist) {
				t.Errorf("stat %s: %v; want it removed\nhelper output:\n%s", dir, err, out)
			}
			if tt.mode == "fatal" && !bytes.Contains(out, []byte("server log")) {
				t.Errorf("a failed test's output lacks the server log:\n%s", out)
			}
			// Without cleanups the server is stopped by its parent-death
			// signal, asynchronously: give it a moment.
			deadline := time.Now().Add(15 * time.Second)
			for (alive(pid) || len(clusterProcesses(dataDir)) > 0) && time.Now().Before(deadline) {
				time.Sleep(50 * time.Millisecond)
			}
			if alive(pid) {
				t.Errorf("the postmaster (pid %d) survived the helper", pid)
			}
			if procs := clusterProcesses(dataDir); len(procs) > 0 {
				t.Errorf("server processes %v survived the helper", procs)
			}
		})
	}
}

// endBadly is the child's side of TestCleanupWhenTestEndsBadly: start a
// cluster, report it, and end the test as mode says.
func endBadly(t *testing.T, mode string) {
	c := Start(t)
	fmt.Printf("pgtest-helper dir=%s pid=%d\n", c.dir, c.proc.Pid)
	switch mode {
	case "fatal":
		t.Fatal("failing on purpose")
	case "exit":
		os.Exit(3) // no cleanups run
	}
}

// helperCluster reads the cluster directory and postmaster PID that the
// child printed.
func helperCluster(t *testing.T, out []byte) (dir string, pid int) {
	t.Helper()
	sc := bufio.NewScanner(bytes.NewReader(out))
	for sc.Scan() {
		if _, err := fmt.Sscanf(sc.Text(), "pgtest-helper dir=%s pid=%d", &dir, &pid); err == nil {
			return dir, pid
		}
	}
	t.Fatalf("the helper did not report its cluster:\n%s", out)
	return "", 0
}

// postmasterPID reads the PID on the first line of postmaster.pid.
func postmasterPID(t *testing.T, dataDir string) int {
	t.Helper()
	data, err := os.ReadFile(filepath.Join(dataDir, "postmaster.pid"))
	if err != nil {
		t.Fatal(err)
	}
	first, _, _ := strings.Cut(string(data), "\n")
	pid, err := strconv.Atoi(first)
	if err != nil {
		t.Fatalf("postmaster.pid: %v", err)
	}
	return pid
}

// alive reports whether a process exists and is not a zombie: a server
// orphaned by a dead test binary may wait for a reaper that never comes.
func alive(pid int) bool {
	stat, err := os.ReadFile(fmt.Sprintf("/proc/%d/stat", pid))
	if err != nil {
		return false
	}
	_, rest, ok := bytes.Cut(stat, []byte(") ")) // the name, in parentheses, may hold spaces
	return ok && !bytes.HasPrefix(rest, []byte("Z"))
}

func TestNewestFirst(t *testing.T) {
	got := newestFirst([]string{
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/devel/bin",
		"/usr/lib/postgresql/10/bin",
	})
	want := []string{
		"/usr/lib/postgresql/15/bin",
		"/usr/lib/postgresql/10/bin",
		"/usr/lib/postgresql/9.6/bin",
		"/usr/lib/postgresql/devel/bin",
	}
	if !slices.Equal(got, want) {
		t.Errorf("newestFirst = %q; want %q", got, want)
	}
}

func TestConnValue(t *testing.T) {
	tests := []struct{ in, want string }{
		{"postgres", "postgres"},
		{"/tmp/pgtest123", "/tmp/pgtest123"},
		{"", "''"},
		{"Mixed Case", "'Mixed Case'"},
		{`it's\`, `'it\'s\\'`},
		{"a=b", "'a=b'"},
	}
	for _, tt := range tests {
		if got := connValue(tt.in); got != tt.want {
			t.Errorf("connValue(%q) = %s; want %s", tt.in, got, tt.want)
		}
	}
}
