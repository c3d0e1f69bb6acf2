package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"strings"
	"testing"

	"polydev/internal/runtime/runc/runctest"
)

func TestMain(m *testing.M) { os.Exit(runctest.Main(m)) }

// runBenchJSON runs a benchmark command and decodes its one JSON object.
func runBenchJSON(t *testing.T, run func(context.Context, env, []string) error, args ...string) map[string]any {
	t.Helper()
	var out, errOut bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	if err := run(context.Background(), e, args); err != nil {
		t.Fatalf("%v: %v (stderr %q)", args, err, errOut.String())
	}
	var res map[string]any
	if err := json.Unmarshal(out.Bytes(), &res); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	return res
}

// wantQuantiles checks that res[key] holds positive, ordered p50 ≤ p99.
func wantQuantiles(t *testing.T, res map[string]any, key string) {
	t.Helper()
	q, ok := res[key].(map[string]any)
	if !ok {
		t.Fatalf("%s: got %v; want an object", key, res[key])
	}
	p50, ok1 := q["p50"].(float64)
	p99, ok2 := q["p99"].(float64)
	if !ok1 || !ok2 || p50 <= 0 || p99 < p50 {
		t.Errorf("%s: p50 %v, p99 %v; want positive numbers with p50 ≤ p99", key, q["p50"], q["p99"])
	}
}

// TestBenchPool runs 'bench pool' briefly on real runc containers and
// checks what it reports. It asserts nothing about speed.
func TestBenchPool(t *testing.T) {
	image := runctest.Image(t)
	res := runBenchJSON(t, runBenchPool, "--image", image, "--n", "3", "--warm", "2", "--json")
	for _, k := range []string{"checkout_ms", "sticky_checkout_ms", "cold_start_ms"} {
		wantQuantiles(t, res, k)
	}
	if r, _ := res["refill_per_s"].(float64); r <= 0 {
		t.Errorf("refill_per_s %v; want a positive rate", res["refill_per_s"])
	}
}

// TestBenchChatRunc runs 'bench chat --runtime runc' briefly, in both
// arrival modes, and checks that every request streamed through a
// container without error.
func TestBenchChatRunc(t *testing.T) {
	image := runctest.Image(t)
	for _, mode := range [][]string{nil, {"--burst"}} {
		args := append([]string{"--runtime", "runc", "--image", image, "--concurrency", "3", "--duration", "1s",
			"--stream-time", "200ms", "--json"}, mode...)
		res := runBenchJSON(t, runBenchChatAny, args...)
		if res["errors"] != float64(0) {
			t.Errorf("%v: errors %v; want 0", mode, res["errors"])
		}
		if n, _ := res["streams"].(float64); n < 3 {
			t.Errorf("%v: %v streams; want at least one per user", mode, res["streams"])
		}
		for _, k := range []string{"ttfb_ms", "baseline_ttfb_ms"} {
			wantQuantiles(t, res, k)
		}
	}
}
