package cli

import (
	"context"
	"encoding/json"
	"path/filepath"
	"testing"

	"polydev/internal/sandbox/sandboxtest"
	"polydev/internal/sandbox/testimage"
	"polydev/internal/testenv"
)

func TestBenchVM(t *testing.T) {
	sandboxtest.Require(t)
	agent := filepath.Join(t.TempDir(), "polydev-agent")
	if err := testimage.BuildAgent(context.Background(), testenv.RepoRoot(t), agent); err != nil {
		t.Fatal(err)
	}
	code, out, errOut := run("bench", "vm", "--json", "--n", "2", "--agent", agent,
		"--image-cache", sandboxtest.CacheDir(), "--accel", "tcg")
	if code != 0 {
		t.Fatalf("exit %d: %s", code, errOut)
	}
	var res struct {
		N          int                `json:"n"`
		AllocateMS map[string]float64 `json:"allocate_ms"`
		BootMS     map[string]float64 `json:"boot_to_ready_ms"`
		DestroyMS  map[string]float64 `json:"destroy_ms"`
		Leftovers  *int               `json:"leftovers"`
	}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("output %q: %v", out, err)
	}
	t.Logf("bench vm: %s", out)
	if res.N != 2 || res.Leftovers == nil || *res.Leftovers != 0 {
		t.Errorf("n %d, leftovers %v; want 2 and 0", res.N, res.Leftovers)
	}
	for name, m := range map[string]map[string]float64{"allocate_ms": res.AllocateMS, "boot_to_ready_ms": res.BootMS, "destroy_ms": res.DestroyMS} {
		if m["p50"] <= 0 || m["p99"] < m["p50"] {
			t.Errorf("%s = %v; want 0 < p50 <= p99", name, m)
		}
	}
}
