package emulator_test

import (
	"bufio"
	"bytes"
	"context"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"polydev/internal/provider/emulator"
	"polydev/internal/testenv"
)

// tapLine is a top-level result line of node --test's TAP reporter.
var tapLine = regexp.MustCompile(`^(not )?ok \d+ - (.*?)(?: # (SKIP|TODO)\b.*)?$`)

// TestNodeSDKs runs the official OpenAI and Anthropic Node packages
// (test/sdk-node, pinned in its package-lock.json) against the emulator on
// loopback. Each Node test becomes a subtest here, so its result shows in
// the Go test output and is counted with the Go tests.
func TestNodeSDKs(t *testing.T) {
	node := testenv.LookPath(t, "node", "install Node.js 20+")
	dir := filepath.Join(testenv.RepoRoot(t), "test", "sdk-node")
	if _, err := os.Stat(filepath.Join(dir, "node_modules", "openai")); err != nil {
		testenv.Missing(t, "test/sdk-node/node_modules is missing (run: cd test/sdk-node && npm ci)")
	}
	em, root := serve(t, emulator.Options{})

	ctx, cancel := context.WithTimeout(context.Background(), 3*time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, node, "--test", "--test-reporter=tap")
	cmd.Dir = dir
	cmd.Env = append(os.Environ(), "POLYDEV_EMULATOR_URL="+root, "NO_COLOR=1")
	var out bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &out
	runErr := cmd.Run()

	// Each result line is followed by its YAML block (indented) with the
	// failure, if any; keep it for the subtest's message.
	type result struct {
		name, directive string
		ok              bool
		detail          []string
	}
	var results []*result
	sc := bufio.NewScanner(bytes.NewReader(out.Bytes()))
	for sc.Scan() {
		line := sc.Text()
		if m := tapLine.FindStringSubmatch(line); m != nil {
			results = append(results, &result{name: m[2], ok: m[1] == "", directive: m[3]})
			continue
		}
		if len(results) > 0 && strings.HasPrefix(line, "  ") && !strings.HasPrefix(strings.TrimSpace(line), "duration_ms") {
			r := results[len(results)-1]
			r.detail = append(r.detail, line)
		}
	}
	if len(results) == 0 {
		t.Fatalf("node --test reported no results (%v):\n%s", runErr, out.String())
	}
	for _, r := range results {
		t.Run(r.name, func(t *testing.T) {
			switch {
			case r.directive == "SKIP":
				t.Skip("skipped by node --test")
			case !r.ok:
				t.Errorf("node test failed:\n%s", strings.Join(r.detail, "\n"))
			}
		})
	}
	if runErr != nil && !t.Failed() {
		t.Errorf("node --test: %v\n%s", runErr, out.String())
	}
	if s := em.Stats(); s.InFlight != 0 {
		t.Errorf("%d requests still in flight after the Node tests", s.InFlight)
	}
	t.Logf("node sdk tests: %d run against the emulator", len(results))
}
