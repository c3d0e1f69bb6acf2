// Package remote carries the runtime's two interfaces, Keys and Runner,
// between processes: `serve --role runtime` serves them on a unix socket
// and `serve --role control-plane` reaches them through Client. The runtime
// private keys then never enter the control plane's process.
//
// The socket is authenticated twice: its file mode (0660: the runtime's
// user and group, of which the control plane's user is a member) and a
// bearer token both processes read from a file. The wire is HTTP/1.1:
// GET /v1/key returns the KeyInfo, POST /v1/run takes a worker.Job and
// streams worker.Events as newline-delimited JSON, and POST
// /v1/cancel/{request_id} cancels a running job. A caller whose own request
// is cancelled (its user went away) asks for the cancel and keeps reading,
// so the job's last event — the partial answer — still arrives.
package remote

import (
	"bufio"
	"bytes"
	"context"
	"crypto/subtle"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"net/url"
	"strconv"
	"sync"
	"time"

	"polydev/internal/runtime"
	"polydev/internal/worker"
)

// Runtime is what the server side exposes.
type Runtime interface {
	runtime.Keys
	runtime.Runner
}

// MinTokenLen is the shortest accepted shared token.
const MinTokenLen = 32

// CancelGrace is how long a cancelled caller keeps reading for the job's
// last event.
const CancelGrace = 30 * time.Second

// Handler serves rt to callers that present token.
func Handler(rt Runtime, token string, log *slog.Logger) http.Handler {
	mux := http.NewServeMux()
	var mu sync.Mutex
	running := map[string]context.CancelFunc{}
	mux.HandleFunc("POST /v1/cancel/{id}", func(w http.ResponseWriter, r *http.Request) {
		mu.Lock()
		cancel := running[r.PathValue("id")]
		mu.Unlock()
		if cancel == nil {
			http.Error(w, "no such job", http.StatusNotFound)
			return
		}
		cancel()
		w.WriteHeader(http.StatusNoContent)
	})
	mux.HandleFunc("GET /v1/key", func(w http.ResponseWriter, r *http.Request) {
		k, err := rt.CurrentKey(r.Context())
		if err != nil {
			log.Error("runtime key", "err", err)
			http.Error(w, "runtime key unavailable", http.StatusInternalServerError)
			return
		}
		w.Header().Set("Content-Type", "application/json")
		json.NewEncoder(w).Encode(k)
	})
	mux.HandleFunc("POST /v1/run", func(w http.ResponseWriter, r *http.Request) {
		var job worker.Job
		dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, 32<<20))
		dec.DisallowUnknownFields()
		if err := dec.Decode(&job); err != nil {
			http.Error(w, "bad job", http.StatusBadRequest)
			return
		}
		rc := http.NewResponseController(w)
		started := false
		// The job ends when the caller asks (cancel) or its connection
		// goes away.
		ctx, cancel := context.WithCancel(r.Context())
		defer cancel()
		mu.Lock()
		if running[job.RequestID] != nil {
			mu.Unlock()
			http.Error(w, "replay", http.StatusGone)
			return
		}
		running[job.RequestID] = cancel
		mu.Unlock()
		defer func() { mu.Lock(); delete(running, job.RequestID); mu.Unlock() }()
		err := rt.Run(ctx, job, func(ev worker.Event) error {
			if !started {
				w.Header().Set("Content-Type", "application/x-ndjson")
				w.WriteHeader(http.StatusOK)
				started = true
			}
			b, err := json.Marshal(ev)
			if err != nil {
				return err
			}
			if _, err := w.Write(append(b, '\n')); err != nil {
				return err
			}
			return rc.Flush()
		})
		if err == nil || started {
			if err != nil {
				log.Warn("runtime job ended with an error after streaming", "err", err)
			}
			return
		}
		var busy *runtime.BusyError
		switch {
		case errors.As(err, &busy):
			w.Header().Set("Retry-After", strconv.Itoa(max(1, int(busy.RetryAfter.Seconds()))))
			http.Error(w, "busy", http.StatusServiceUnavailable)
		case errors.Is(err, runtime.ErrUnknownKey):
			http.Error(w, "unknown key", http.StatusConflict)
		case errors.Is(err, runtime.ErrReplay):
			http.Error(w, "replay", http.StatusGone)
		case ctx.Err() != nil:
		default:
			log.Error("runtime job", "err", err)
			http.Error(w, "runtime failure", http.StatusInternalServerError)
		}
	})
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		got := r.Header.Get("Authorization")
		if subtle.ConstantTimeCompare([]byte(got), []byte("Bearer "+token)) != 1 {
			http.Error(w, "unauthorized", http.StatusUnauthorized)
			return
		}
		mux.ServeHTTP(w, r)
	})
}

// Client reaches a runtime over its unix socket. It implements
// runtime.Keys and runtime.Runner.
type Client struct {
	token string
	http  *http.Client
}

var _ Runtime = (*Client)(nil)

// NewClient returns a client for the runtime listening at socketPath.
func NewClient(socketPath, token string) *Client {
	tr := &http.Transport{
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", socketPath)
		},
		MaxIdleConnsPerHost: 64,
		IdleConnTimeout:     time.Minute,
	}
	return &Client{token: token, http: &http.Client{Transport: tr}}
}

func (c *Client) do(ctx context.Context, method, path string, body []byte) (*http.Response, error) {
	req, err := http.NewRequestWithContext(ctx, method, "http://runtime"+path, bytes.NewReader(body))
	if err != nil {
		return nil, err
	}
	req.Header.Set("Authorization", "Bearer "+c.token)
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("runtime: %w", err)
	}
	return resp, nil
}

// CurrentKey implements runtime.Keys.
func (c *Client) CurrentKey(ctx context.Context) (runtime.KeyInfo, error) {
	resp, err := c.do(ctx, http.MethodGet, "/v1/key", nil)
	if err != nil {
		return runtime.KeyInfo{}, err
	}
	defer resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		return runtime.KeyInfo{}, fmt.Errorf("runtime: key: status %d", resp.StatusCode)
	}
	var k runtime.KeyInfo
	if err := json.NewDecoder(resp.Body).Decode(&k); err != nil {
		return runtime.KeyInfo{}, fmt.Errorf("runtime: key: %w", err)
	}
	return k, nil
}

// Run implements runtime.Runner.
func (c *Client) Run(ctx context.Context, job worker.Job, emit func(worker.Event) error) error {
	body, err := json.Marshal(job)
	if err != nil {
		return err
	}
	// The request itself is not tied to ctx: when ctx ends, the runtime is
	// asked to cancel the job and its last event (the partial answer) is
	// still read, for a bounded time.
	resp, err := c.do(context.WithoutCancel(ctx), http.MethodPost, "/v1/run", body)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	var (
		giveUpMu sync.Mutex
		giveUp   *time.Timer
		finished bool
	)
	stop := context.AfterFunc(ctx, func() {
		cctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		if r, err := c.do(cctx, http.MethodPost, "/v1/cancel/"+url.PathEscape(job.RequestID), nil); err == nil {
			r.Body.Close()
		}
		giveUpMu.Lock()
		defer giveUpMu.Unlock()
		if !finished {
			giveUp = time.AfterFunc(CancelGrace, func() { resp.Body.Close() })
		}
	})
	defer func() {
		stop()
		giveUpMu.Lock()
		defer giveUpMu.Unlock()
		finished = true
		if giveUp != nil {
			giveUp.Stop()
		}
	}()
	switch resp.StatusCode {
	case http.StatusOK:
	case http.StatusServiceUnavailable:
		secs, _ := strconv.Atoi(resp.Header.Get("Retry-After"))
		return &runtime.BusyError{RetryAfter: time.Duration(max(secs, 1)) * time.Second}
	case http.StatusConflict:
		return fmt.Errorf("%w: %q", runtime.ErrUnknownKey, job.KeyID)
	case http.StatusGone:
		return runtime.ErrReplay
	default:
		return fmt.Errorf("runtime: run: status %d", resp.StatusCode)
	}
	sc := bufio.NewScanner(resp.Body)
	sc.Buffer(make([]byte, 64<<10), 64<<20)
	done := false
	for sc.Scan() {
		var ev worker.Event
		if err := json.Unmarshal(sc.Bytes(), &ev); err != nil {
			return fmt.Errorf("runtime: bad event: %w", err)
		}
		if err := emit(ev); err != nil {
			return err
		}
		if ev.Done != nil {
			done = true
		}
	}
	if err := sc.Err(); err != nil && !errors.Is(err, io.EOF) {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return fmt.Errorf("runtime: stream: %w", err)
	}
	if !done {
		if ctx.Err() != nil {
			return ctx.Err()
		}
		return errors.New("runtime: stream ended without a result")
	}
	return nil
}
