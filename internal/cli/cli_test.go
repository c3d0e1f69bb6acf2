package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"strings"
	"testing"
)

func run(args ...string) (code int, stdout, stderr string) {
	var o, e bytes.Buffer
	code = Run(context.Background(), args, strings.NewReader(""), &o, &e)
	return code, o.String(), e.String()
}

func TestRun(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args        []string
		code        int
		out, errOut string
	}{
		{nil, 2, "Usage: polydev <command>", ""},
		{[]string{"help"}, 0, "Commands:", ""},
		{[]string{"version"}, 0, "polydev ", ""},
		{[]string{"nope"}, 2, "", `unknown command "nope"`},
		{[]string{"version", "extra"}, 2, "", "unexpected arguments: extra"},
		{[]string{"version", "-bogus"}, 2, "", "flag provided but not defined"},
		{[]string{"help", "serve"}, 0, "", "-addr"},
		{[]string{"serve", "-addr", "no-port"}, 1, "", "listen address"},
	} {
		code, out, errOut := run(tc.args...)
		if code != tc.code || !strings.Contains(out, tc.out) || !strings.Contains(errOut, tc.errOut) {
			t.Errorf("polydev %v: got code %d, stdout %q, stderr %q; want code %d, stdout ∋ %q, stderr ∋ %q",
				tc.args, code, out, errOut, tc.code, tc.out, tc.errOut)
		}
	}
}

func TestVersionJSON(t *testing.T) {
	t.Parallel()
	code, out, _ := run("version", "-json")
	var v struct {
		Version   string `json:"version"`
		GoVersion string `json:"go_version"`
		Platform  string `json:"platform"`
	}
	if code != 0 || json.Unmarshal([]byte(out), &v) != nil || v.Version == "" || !strings.HasPrefix(v.GoVersion, "go") {
		t.Fatalf("version -json: code %d, output %q", code, out)
	}
}

func TestMigrateSQLite(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	code, out, errOut := run("migrate", "-data", dir)
	if code != 0 || !strings.Contains(out, "schema migrated from version 0 to ") {
		t.Fatalf("first migrate: code %d, stdout %q, stderr %q", code, out, errOut)
	}
	code, out, _ = run("migrate", "-data", dir)
	if code != 0 || !strings.Contains(out, "schema is up to date") {
		t.Fatalf("second migrate: code %d, stdout %q", code, out)
	}
}

func TestServeMigrateNeedsOwnerForPostgres(t *testing.T) {
	t.Parallel()
	code, _, errOut := run("serve", "-database-url", "host=/nonexistent user=app", "-migrate", "-data", t.TempDir())
	if code != 1 || !strings.Contains(errOut, "--migrate-database-url") {
		t.Fatalf("serve --migrate on PostgreSQL without the owner: code %d, stderr %q", code, errOut)
	}
}
