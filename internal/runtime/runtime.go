// Package runtime is the runtime supervisor: it owns the runtime key pairs
// (rotated on a schedule, each signed by the runtime's long-term identity
// key) and runs chat jobs in sandboxed workers that reach the network only
// through the user's egress.
//
// The control plane sees it through two small interfaces, Keys and Runner,
// implemented in this process (all-in-one and --dev) or reached over an
// authenticated local socket (serve --role runtime). Where a job actually
// runs is an Executor: in-process, or a runc container from a warm pool.
package runtime

import (
	"context"
	"errors"
	"time"

	"polydev/internal/worker"
)

// KeyInfo is a runtime public key as clients see it at GET /v1/runtime/key.
type KeyInfo struct {
	ID        string    `json:"key_id"`
	PublicKey string    `json:"public_key"` // the public key record, text form
	CreatedAt time.Time `json:"created_at"`
	ExpiresAt time.Time `json:"expires_at"`
	// Identity is the runtime's long-term Ed25519 public key, and Signature
	// its signature over the key statement (docs/crypto.md §11); clients pin
	// Identity on first use.
	Identity  string `json:"identity"`
	Signature string `json:"signature"`
}

// Keys hands out the current runtime public key.
type Keys interface {
	// CurrentKey returns the key clients should seal new grants to.
	CurrentKey(ctx context.Context) (KeyInfo, error)
}

// Runner runs chat jobs.
type Runner interface {
	// Run executes job and calls emit for each event, in order, ending with
	// exactly one Done event unless Run returns an error first. It returns
	// ErrBusy when no sandbox could be had in time, an error wrapping
	// ErrUnknownKey when the grant names a key this runtime does not hold,
	// and ctx's error when cancelled. An error from emit aborts the job.
	Run(ctx context.Context, job worker.Job, emit func(worker.Event) error) error
}

// Errors callers branch on.
var (
	// ErrBusy: every sandbox is taken and the wait ran out; retry after the
	// duration a *BusyError carries.
	ErrBusy = errors.New("runtime busy")
	// ErrUnknownKey: the job names a key that expired or never existed.
	ErrUnknownKey = errors.New("unknown runtime key")
)

// BusyError is ErrBusy with a hint for Retry-After.
type BusyError struct{ RetryAfter time.Duration }

func (e *BusyError) Error() string { return ErrBusy.Error() }
func (e *BusyError) Unwrap() error { return ErrBusy }

// Executor runs one task in a sandbox and streams its events. The in-process
// executor calls worker.Run directly; the runc executor sends the task over
// the container's socket.
type Executor interface {
	// Execute runs task for a job whose provider traffic must leave through
	// egress port task.Job.Egress.Port. It has the same event contract as
	// Runner.Run.
	Execute(ctx context.Context, task worker.Task, emit func(worker.Event) error) error
}
