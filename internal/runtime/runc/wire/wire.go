// Package wire is the protocol between the runtime supervisor and a worker
// container, spoken over the container's private unix socket.
//
// One connection carries one request: the supervisor writes a Request as a
// single JSON line; the worker answers with Reply lines (newline-delimited
// JSON) and closes. For a task the replies are the worker's events in order,
// ending with the Done event, then one line with Wiped set once the worker
// has zeroed the request's key material and emptied its tmpfs. Only then may
// the container serve another request.
//
// The sealed grant and the runtime private key travel only here — never in
// the container's environment, argv or filesystem.
package wire

import (
	"bufio"
	"encoding/json"
	"errors"
	"fmt"
	"io"

	"polydev/internal/worker"
)

// Paths inside a worker container.
const (
	// WorkerFD is the listening socket the supervisor hands the worker
	// (runc --preserve-fds): the worker has no writable host directory.
	WorkerFD = 3
	// GatewaySocket is the host-side egress gateway: the worker's only way
	// out.
	GatewaySocket = "/run/egress/egress.sock"
)

// Ops a Request can carry.
const (
	OpTask = "task" // run Task, stream its events
	OpPing = "ping" // health check: reply {"ok":true}
	// OpEcho is a diagnostic that exercises the path without a provider: it
	// returns each history message's ciphertext as a chunk, and when
	// Task.BaseURL is set, the body fetched from it through the gateway.
	OpEcho = "echo"
)

// MaxRequest bounds a request line (a task with a long history).
const MaxRequest = 32 << 20

// Request is the one line the supervisor sends.
type Request struct {
	Op   string       `json:"op"`
	Task *worker.Task `json:"task,omitempty"`
}

// Reply is one line the worker sends back.
type Reply struct {
	Event *worker.Event `json:"event,omitempty"`
	OK    bool          `json:"ok,omitempty"`    // answer to a ping
	Wiped bool          `json:"wiped,omitempty"` // the last line of a task
	Error string        `json:"error,omitempty"` // the request could not be served at all
	// Uses is how many tasks this worker has served, on a ping.
	Uses int `json:"uses,omitempty"`
}

// ErrTooLarge is returned for a request line over MaxRequest.
var ErrTooLarge = errors.New("wire: request too large")

// ReadRequest reads the single request line of a connection.
func ReadRequest(r io.Reader) (*Request, []byte, error) {
	br := bufio.NewReaderSize(r, 64<<10)
	var line []byte
	for {
		chunk, err := br.ReadSlice('\n')
		line = append(line, chunk...)
		if len(line) > MaxRequest {
			return nil, line, ErrTooLarge
		}
		if err == nil {
			break
		}
		if errors.Is(err, bufio.ErrBufferFull) {
			continue
		}
		return nil, line, fmt.Errorf("wire: read request: %w", err)
	}
	var req Request
	if err := json.Unmarshal(line, &req); err != nil {
		return nil, line, fmt.Errorf("wire: decode request: %w", err)
	}
	return &req, line, nil
}

// Zero overwrites b; callers use it on buffers that held a request.
func Zero(b []byte) {
	for i := range b {
		b[i] = 0
	}
}
