package runc_test

import (
	"os"
	"testing"

	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/runctest"
)

func TestMain(m *testing.M) {
	if os.Getenv(helperEnv) != "" {
		os.Exit(helperMain())
	}
	os.Exit(runctest.Main(m))
}

func image(t *testing.T) string { return runctest.Image(t) }

func newRoot(t *testing.T) string { return runctest.Root(t) }

func newPool(t *testing.T, cfg runc.Config) *runc.Pool { return runctest.NewPool(t, cfg) }
