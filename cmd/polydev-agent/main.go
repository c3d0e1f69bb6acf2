// Command polydev-agent is the in-VM agent alone (the same code as
// `polydev agent`), small enough for the test image's initramfs: build it
// with CGO_ENABLED=0 so it runs without a libc.
package main

import (
	"context"
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"syscall"

	"polydev/internal/agent"
)

func main() {
	// The test image's /init runs "<agent> agent", which suits both this
	// binary and a static polydev.
	if len(os.Args) > 1 && os.Args[1] == "agent" {
		os.Args = append(os.Args[:1], os.Args[2:]...)
	}
	port := flag.String("port", agent.PortName, "virtio-serial port name")
	disk := flag.String("disk", "/dev/vda", "block device holding the golden image")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	log := slog.New(slog.NewTextHandler(os.Stderr, nil))
	if err := agent.Run(ctx, agent.Config{Port: *port, Disk: *disk}, log); err != nil {
		fmt.Fprintln(os.Stderr, "polydev-agent:", err)
		os.Exit(1)
	}
}
