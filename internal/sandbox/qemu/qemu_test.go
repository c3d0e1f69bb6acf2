package qemu_test

import (
	"context"
	"testing"

	"polydev/internal/sandbox/qemu"
	"polydev/internal/sandbox/sandboxtest"
)

func TestConformance(t *testing.T) {
	img := sandboxtest.Image(t)
	d, err := qemu.New(context.Background(), qemu.Options{ProbeKernel: img.Kernel})
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accelerator: %s", d.Accel())
	sandboxtest.Run(t, sandboxtest.Env{Driver: d, Image: img})
}
