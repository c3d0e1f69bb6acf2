// Package testenv decides what a test does when a component it needs (a
// binary, a service, network access to the module proxy) is missing: skip
// with a clear message on a developer's machine, fail under CI (CI=true),
// where a silent skip would hide a broken setup.
package testenv

import (
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"testing"
)

// InCI reports whether the tests run under CI (CI=true).
func InCI() bool { return os.Getenv("CI") == "true" }

// Missing skips the test locally, or fails it under CI, saying what is
// missing and how to get it.
func Missing(t testing.TB, format string, args ...any) {
	t.Helper()
	if InCI() {
		t.Fatalf("required under CI: "+format, args...)
	}
	t.Skipf("skipped (set CI=true to make this a failure): "+format, args...)
}

// LookPath returns the path of a required binary, or calls Missing.
func LookPath(t testing.TB, name, hint string) string {
	t.Helper()
	p, err := exec.LookPath(name)
	if err != nil {
		Missing(t, "%s not found in PATH (%s)", name, hint)
	}
	return p
}

// RepoRoot returns the repository root (the directory holding go.mod).
func RepoRoot(t testing.TB) string {
	t.Helper()
	_, file, _, ok := runtime.Caller(0)
	if !ok {
		t.Fatal("cannot locate the repository root")
	}
	return filepath.Join(filepath.Dir(file), "..", "..")
}
