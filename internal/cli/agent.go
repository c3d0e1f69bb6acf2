package cli

import (
	"context"
	"log/slog"

	"polydev/internal/agent"
)

func runAgent(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "agent [-port NAME]", "Runs inside a login VM: answers the manager on the virtio-serial channel. Not for use on a host.")
	port := fs.String("port", agent.PortName, "virtio-serial port name")
	disk := fs.String("disk", "/dev/vda", "block device holding the golden image")
	if err := parse(fs, args); err != nil {
		return err
	}
	log := slog.New(slog.NewTextHandler(e.stderr, nil))
	return agent.Run(ctx, agent.Config{Port: *port, Disk: *disk}, log)
}
