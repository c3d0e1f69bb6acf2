package emulator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net/http"
	"strings"
	"time"
)

// One chat request's life: begin counts it and layers its knobs, the
// provider handler parses and answers it, run paces a streamed answer token
// by token (ttft, tps, stall, cut_after, error_after), and end records how
// it ended. A cut unwinds the handler with http.ErrAbortHandler, which makes
// net/http drop the connection without finishing the response.

// call is one chat request in progress.
type call struct {
	e     *Emulator
	w     http.ResponseWriter
	r     *http.Request
	k     knobs
	rec   Record
	start time.Time
	ended bool
	// injected is set when the fail knob chose this request to fail.
	injected bool
	// googleArray is set for Gemini's JSON-array stream form, whose error
	// bodies are arrays.
	googleArray bool
}

// begin opens a call: it counts the request and returns the context that
// ends when the client goes away (the emulator's closing is watched apart,
// by wait). The knobs are layered later, once the model name is known.
func (e *Emulator) begin(w http.ResponseWriter, r *http.Request, prov string) (context.Context, *call) {
	c := &call{e: e, w: w, r: r, k: defaultKnobs(), start: time.Now()}
	c.rec = Record{Provider: prov, Path: r.URL.Path}
	e.mu.Lock()
	e.stats.Requests++
	e.stats.InFlight++
	e.notifyLocked()
	e.mu.Unlock()
	return r.Context(), c
}

// knobs layers the emulator-wide specs, the header and the model suffix.
// The error names the failing layer.
func (c *call) knobs(modelSuffix string) error {
	c.e.mu.Lock()
	runtime := c.e.runtime
	c.e.mu.Unlock()
	if err := c.k.apply(c.e.opts.Knobs); err != nil {
		return fmt.Errorf("emulator default knobs: %w", err)
	}
	if err := c.k.apply(runtime); err != nil {
		return fmt.Errorf("emulator runtime knobs: %w", err)
	}
	h := strings.Join(c.r.Header.Values("X-Polydev-Emulator"), ";")
	if err := c.k.apply(h); err != nil {
		return fmt.Errorf("X-Polydev-Emulator header: %w", err)
	}
	if err := c.k.apply(modelSuffix); err != nil {
		return fmt.Errorf("model name suffix: %w", err)
	}
	c.rec.Knobs = strings.Trim(h+";"+modelSuffix, ";")
	return nil
}

// shouldFail applies the fail and fail_first knobs, counting this request.
func (c *call) shouldFail() bool {
	if c.k.fail == 0 {
		return false
	}
	if c.k.failFirst == 0 {
		c.injected = true
		return true
	}
	key := c.rec.Provider + "\x00" + c.k.id
	c.e.mu.Lock()
	defer c.e.mu.Unlock()
	c.e.counters[key]++
	c.injected = c.e.counters[key] <= c.k.failFirst
	return c.injected
}

// end records how the call ended; only the first call counts.
func (c *call) end(status int, outcome string) {
	if c.ended {
		return
	}
	c.ended = true
	c.rec.Status, c.rec.Outcome = status, outcome
	e := c.e
	e.mu.Lock()
	e.stats.InFlight--
	switch outcome {
	case OutcomeComplete:
		e.stats.Complete++
	case OutcomeError:
		e.stats.Errors++
	case OutcomeMidError:
		e.stats.MidErrors++
	case OutcomeCut:
		e.stats.Cut++
	case OutcomeAborted:
		e.stats.Aborted++
	case OutcomeShutdown:
		e.stats.Shutdown++
	}
	if len(e.records) >= e.opts.MaxRecords {
		e.records = append(e.records[:0], e.records[1:]...)
	}
	e.records = append(e.records, c.rec)
	e.notifyLocked()
	e.mu.Unlock()
	e.log.Info("emulator request", "provider", c.rec.Provider, "model", c.rec.Model, "stream", c.rec.Stream,
		"status", status, "outcome", outcome, "tokens_sent", c.rec.TokensSent, "duration_ms", time.Since(c.start).Milliseconds())
}

// wait sleeps d unless the client leaves or the emulator closes first.
func (c *call) wait(ctx context.Context, d time.Duration) bool {
	select {
	case <-ctx.Done():
		return false
	case <-c.e.done:
		return false
	default:
	}
	if d <= 0 {
		return true
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-ctx.Done():
		return false
	case <-c.e.done:
		return false
	}
}

// interrupted records why the answer stopped early.
func (c *call) interrupted() {
	select {
	case <-c.e.done:
		c.end(http.StatusOK, OutcomeShutdown)
	default:
		c.end(http.StatusOK, OutcomeAborted)
	}
}

// cut drops the connection without finishing the response.
func (c *call) cut() {
	c.end(http.StatusOK, OutcomeCut)
	panic(http.ErrAbortHandler)
}

// step is what the token loop asks a provider writer to do.
type step struct {
	token  func(i int) error // write token i
	midErr func() error      // write the mid-stream error
}

// run paces the tokens of a streamed answer, applying ttft, tps, stall,
// cut_after and error_after. It reports whether the answer went out whole;
// on false the call has been ended (and, for a cut, the handler unwound).
func (c *call) run(ctx context.Context, n int, s step) bool {
	for i := 0; i < n; i++ {
		if !c.pause(ctx, i) {
			c.interrupted()
			return false
		}
		if c.k.cutAfter == i {
			c.cut()
		}
		if c.k.errorAfter == i {
			if err := s.midErr(); err != nil {
				c.interrupted()
				return false
			}
			c.end(http.StatusOK, OutcomeMidError)
			return false
		}
		if err := s.token(i); err != nil {
			c.interrupted()
			return false
		}
		c.rec.TokensSent++
	}
	if c.k.cutAfter >= n {
		c.cut()
	}
	if c.k.errorAfter >= n {
		if err := s.midErr(); err != nil {
			c.interrupted()
			return false
		}
		c.end(http.StatusOK, OutcomeMidError)
		return false
	}
	return true
}

// pause waits before token i.
func (c *call) pause(ctx context.Context, i int) bool {
	d := time.Duration(0)
	if i == 0 {
		d = c.k.ttft
	} else if c.k.tps > 0 {
		d = time.Duration(float64(time.Second) / c.k.tps)
	}
	if c.k.stall > 0 && c.k.stallAfter == i && i > 0 {
		d += c.k.stall
	}
	if c.k.stall > 0 && c.k.stallAfter == 0 && i == 0 {
		d += c.k.stall
	}
	return c.wait(ctx, d)
}

// runWhole is run for a non-streamed answer: it waits as long as the stream
// would have taken, then reports whether to answer. cut_after drops the
// connection without an answer; error_after is answered by the caller with
// the provider's overloaded error.
func (c *call) runWhole(ctx context.Context, n int) (midErr bool, ok bool) {
	for i := 0; i < n; i++ {
		if !c.pause(ctx, i) {
			c.interrupted()
			return false, false
		}
		if c.k.cutAfter == i {
			c.cut()
		}
		if c.k.errorAfter == i {
			return true, true
		}
	}
	if c.k.cutAfter >= n {
		c.cut()
	}
	return c.k.errorAfter >= n, true
}

// sse writes Server-Sent Events and flushes each one.
type sse struct {
	w   http.ResponseWriter
	rc  *http.ResponseController
	eol string // "\n", or "\r\n" as Google ends its lines
}

func newSSE(w http.ResponseWriter, eol string) *sse {
	return &sse{w: w, rc: http.NewResponseController(w), eol: eol}
}

// event writes one event; name may be empty. data is JSON-encoded unless it
// is already a string.
func (s *sse) event(name string, data any) error {
	var b []byte
	if d, ok := data.(string); ok {
		b = []byte(d)
	} else {
		var err error
		if b, err = json.Marshal(data); err != nil {
			return err
		}
	}
	var sb strings.Builder
	if name != "" {
		sb.WriteString("event: " + name + s.eol)
	}
	sb.WriteString("data: ")
	sb.Write(b)
	sb.WriteString(s.eol + s.eol)
	if _, err := s.w.Write([]byte(sb.String())); err != nil {
		return err
	}
	return s.rc.Flush()
}

// start sends the status line and headers at once, as the providers do
// before the first token.
func (s *sse) start(status int) error {
	s.w.WriteHeader(status)
	return s.rc.Flush()
}

// writeJSON answers with a JSON body.
func writeJSON(w http.ResponseWriter, status int, v any) {
	b, err := json.Marshal(v)
	if err != nil {
		http.Error(w, err.Error(), http.StatusInternalServerError)
		return
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(status)
	_, _ = w.Write(b)
}

// newID returns prefix followed by n random base-16 characters.
func newID(prefix string, n int) string {
	b := make([]byte, (n+1)/2)
	_, _ = rand.Read(b)
	return prefix + hex.EncodeToString(b)[:n]
}

// retryAfterSeconds is the Retry-After header value for d, rounded up.
func retryAfterSeconds(d time.Duration) string {
	s := int((d + time.Second - 1) / time.Second)
	return fmt.Sprint(s)
}

// retryAfter returns the delay to advertise for an injected failure, and
// whether to advertise one: always on 429 (1s unless retry_after is given),
// otherwise only when retry_after is given.
func (c *call) retryAfter(status int) (time.Duration, bool) {
	if c.k.hasRetry {
		return c.k.retryAfter, true
	}
	if status == http.StatusTooManyRequests {
		return time.Second, true
	}
	return 0, false
}

// decode reads a JSON request body into v.
func decode(r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(nil, r.Body, 32<<20))
	return dec.Decode(v)
}

// finally, deferred by every handler, records a call that ended without
// saying how (a bug, or a panic other than a cut).
func (c *call) finally() {
	if !c.ended {
		c.end(http.StatusInternalServerError, OutcomeError)
	}
}
