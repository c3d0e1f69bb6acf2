package cli

import (
	"context"
	"net/http"

	"polydev/internal/provider/registry"
	"polydev/internal/worker"
)

// runTask runs one chat task inside the container: the worker opens the
// grant, calls the provider through client (the egress gateway) and emits
// encrypted chunks.
func runTask(ctx context.Context, task worker.Task, client *http.Client, emit func(worker.Event) error) error {
	return worker.RunWith(ctx, task, worker.Deps{NewProvider: registry.New, Client: client}, emit)
}
