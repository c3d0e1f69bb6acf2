package cli

import (
	"context"
	"net/http"

	"polydev/internal/worker"
)

// runTask runs one chat task inside the container.
// TODO(merge): return worker.Run(ctx, task, client, emit) once it is on main.
func runTask(ctx context.Context, task worker.Task, client *http.Client, emit func(worker.Event) error) error {
	return emit(worker.Event{Done: &worker.Result{
		MessageID: task.Job.AssistantMessageID,
		Error:     &worker.Error{Kind: "internal", Message: "this build has no chat worker"},
	}})
}
