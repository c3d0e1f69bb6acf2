package crypto_test

import (
	"encoding/json"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"

	"polydev/internal/testenv"
)

func nodeInterop(t *testing.T, args ...string) string {
	t.Helper()
	node := testenv.LookPath(t, "node", "install Node.js 20 or later")
	script := filepath.Join(testenv.RepoRoot(t), "web", "test", "interop.mjs")
	out, err := exec.Command(node, append([]string{script}, args...)...).CombinedOutput()
	if err != nil {
		t.Fatalf("node interop.mjs %s: %v\n%s", strings.Join(args, " "), err, out)
	}
	return strings.TrimSpace(string(out))
}

// TestGoToJavaScript makes a fresh set of cases of every kind and suite
// with this implementation — new keys, new nonces, the must-fail cases too —
// and has the browser module check every one.
func TestGoToJavaScript(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "go-made.json")
	var data []byte
	t.Run("generate", func(t *testing.T) { data = encodeVectors(t, generateVectors(t, false)) })
	if err := os.WriteFile(file, data, 0o600); err != nil {
		t.Fatal(err)
	}
	out := nodeInterop(t, "check", file)
	t.Log(out)
	if !strings.Contains(out, " 0 failed") {
		t.Fatalf("javascript did not pass every Go-made case:\n%s", out)
	}
}

// TestJavaScriptToGo has the browser module make fresh cases of every kind
// and suite and checks every one with this implementation.
func TestJavaScriptToGo(t *testing.T) {
	t.Parallel()
	file := filepath.Join(t.TempDir(), "js-made.json")
	t.Log(nodeInterop(t, "make", file))
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	var f vectorFile
	if err := json.Unmarshal(data, &f); err != nil {
		t.Fatal(err)
	}
	groups := map[string]int{}
	results := checkAll(&f)
	for _, r := range results {
		groups[r.Group]++
		if r.Err != nil {
			t.Errorf("%s / %s: %v", r.Group, r.Name, r.Err)
		}
	}
	for _, g := range []string{"kdf", "symmetric", "sealed", "wrap", "public_keys"} {
		if groups[g] == 0 {
			t.Errorf("javascript made no %s cases", g)
		}
	}
	suites := map[string]bool{}
	for _, c := range f.Sealed {
		suites[c.Suite] = true
	}
	if !suites["xwing"] || !suites["x25519"] {
		t.Errorf("javascript sealed with suites %v; want both xwing and x25519", suites)
	}
	t.Logf("go checked %d javascript-made cases", len(results))
}
