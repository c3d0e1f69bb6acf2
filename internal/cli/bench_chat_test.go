package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestBenchChat runs the benchmark briefly against the whole stack and
// checks what it reports: the JSON shape, streams that went through, no
// errors. It asserts nothing about speed.
func TestBenchChat(t *testing.T) {
	if testing.Short() {
		t.Skip("registers users with the full key derivation")
	}
	var out, errOut bytes.Buffer
	e := env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}
	profile := filepath.Join(t.TempDir(), "relay.pprof")
	err := runBenchChat(context.Background(), e, []string{"--concurrency", "4", "--duration", "1s", "--tokens", "20", "--tps", "100", "--json",
		"--cpuprofile", profile})
	if err != nil {
		t.Fatalf("bench chat: %v (stderr %q)", err, errOut.String())
	}
	if fi, err := os.Stat(profile); err != nil || fi.Size() == 0 {
		t.Errorf("--cpuprofile wrote no profile: %v", err)
	}
	// Every documented key is present, with the type documented.
	var raw map[string]any
	if err := json.Unmarshal(out.Bytes(), &raw); err != nil {
		t.Fatalf("output is not one JSON object: %v\n%s", err, out.String())
	}
	for _, k := range []string{"ttfb_overhead_ms", "ttfb_ms", "baseline_ttfb_ms"} {
		p, ok := raw[k].(map[string]any)
		if !ok {
			t.Fatalf("%s: got %v; want an object", k, raw[k])
		}
		for _, q := range []string{"p50", "p90", "p99"} {
			if _, ok := p[q].(float64); !ok {
				t.Errorf("%s.%s: got %v; want a number", k, q, p[q])
			}
		}
	}
	for _, k := range []string{"streams", "streams_per_s", "errors", "concurrency"} {
		if _, ok := raw[k].(float64); !ok {
			t.Errorf("%s: got %v; want a number", k, raw[k])
		}
	}
	var r ChatBenchResult
	if err := json.Unmarshal(out.Bytes(), &r); err != nil {
		t.Fatal(err)
	}
	if r.Backend != "sqlite" || r.Concurrency != 4 {
		t.Errorf("backend %q, concurrency %d; want sqlite, 4", r.Backend, r.Concurrency)
	}
	if r.Errors != 0 || r.BaselineErrors != 0 || r.FirstError != "" {
		t.Errorf("errors %d, baseline errors %d (first: %s); want none", r.Errors, r.BaselineErrors, r.FirstError)
	}
	// Every user streamed at least once in each phase.
	if r.Streams < r.Concurrency || r.BaselineStreams < r.Concurrency || r.StreamsPerS <= 0 {
		t.Errorf("streams %d (%.1f/s), baseline %d; want at least %d each", r.Streams, r.StreamsPerS, r.BaselineStreams, r.Concurrency)
	}
	// Latencies are real measurements: positive and ordered.
	for name, p := range map[string]Percentiles{"ttfb_ms": r.TTFBMS, "baseline_ttfb_ms": r.BaselineTTFBMS} {
		if p.P50 <= 0 || p.P50 > p.P90 || p.P90 > p.P99 || p.P99 > p.Max {
			t.Errorf("%s: %+v; want 0 < p50 ≤ p90 ≤ p99 ≤ max", name, p)
		}
	}
	if want := r.TTFBMS.P50 - r.BaselineTTFBMS.P50; r.TTFBOverheadMS.P50 < want-0.011 || r.TTFBOverheadMS.P50 > want+0.011 {
		t.Errorf("ttfb_overhead_ms.p50 = %v; want ttfb p50 − baseline p50 = %v", r.TTFBOverheadMS.P50, want)
	}
}

func TestBenchChatFlags(t *testing.T) {
	t.Parallel()
	for _, tc := range []struct {
		args []string
		want string
	}{
		{[]string{"--concurrency", "0"}, "--concurrency"},
		{[]string{"--duration", "0s"}, "--duration"},
		{[]string{"--migrate-database-url", "host=/nowhere"}, "--database-url"},
	} {
		var out, errOut bytes.Buffer
		err := runBenchChat(context.Background(), env{stdin: strings.NewReader(""), stdout: &out, stderr: &errOut}, tc.args)
		if err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("bench chat %v: got %v; want an error naming %s", tc.args, err, tc.want)
		}
	}
}

func TestPercentiles(t *testing.T) {
	t.Parallel()
	var ds []time.Duration
	for i := 100; i >= 1; i-- {
		ds = append(ds, time.Duration(i)*time.Millisecond)
	}
	got := percentiles(ds)
	if want := (Percentiles{P50: 50, P90: 90, P99: 99, Max: 100}); got != want {
		t.Errorf("percentiles(1..100 ms) = %+v; want %+v", got, want)
	}
	if got := percentiles(nil); got != (Percentiles{}) {
		t.Errorf("percentiles(nil) = %+v; want zeros", got)
	}
}
