// Package emulator is a local, wire-faithful stand-in for the chat endpoints
// of OpenAI, Anthropic and Google Gemini, for development and tests.
//
// One handler serves all three under path prefixes, so one listener does:
//
//	POST /openai/v1/chat/completions                     OpenAI Chat Completions (stream or not)
//	POST /openai/v1/responses                            OpenAI Responses (stream or not)
//	POST /anthropic/v1/messages                          Anthropic Messages (stream or not)
//	POST /google/v1beta/models/{model}:generateContent   Gemini
//	POST /google/v1beta/models/{model}:streamGenerateContent[?alt=sse]
//	GET|POST /emulator/knobs, GET /emulator/stats        the emulator's own controls
//
// Requests, answers, SSE framing and event names, usage blocks, finish
// reasons, error bodies, status codes and headers follow the real APIs, so
// the official SDKs work against it unchanged: point them at BaseURL(root,
// provider).
//
// # Keys
//
// OpenAI wants "Authorization: Bearer KEY", Anthropic "x-api-key: KEY" (or
// "Authorization: Bearer TOKEN") and the "anthropic-version" header, Google
// "x-goog-api-key: KEY" or "?key=KEY". When Options.Keys is empty any
// non-empty key is accepted except one that starts with "invalid" (so tests
// can provoke the provider's bad-key answer without configuration); when it
// is set, only those keys are.
//
// # Answers
//
// An answer is a function of the request: the words of the last user
// message, then filler words; see Reply for the rule, the tokenisation and
// the usage counts.
//
// # Knobs
//
// Knobs shape a request's behaviour. A knob spec is a list of name=value
// items separated by ';' (',' and '+' also separate):
//
//	ttft=DUR         time before the first token (default 0)
//	tps=N            tokens per second after the first (default 0: as fast as possible)
//	tokens=N         reply length in tokens (default: prompt words + 8)
//	cut_after=N      drop the connection after N tokens: no terminator, no final event
//	stall=DUR        pause DUR once, after stall_after tokens
//	stall_after=N    (default 1)
//	error_after=N    after N tokens send the provider's mid-stream error and end the stream
//	fail=STATUS      answer with the provider's error for that status (400, 401, 403,
//	                 404, 429, 500, 503, 529) instead of a reply
//	fail_first=N     fail only the first N requests of this counter, then succeed
//	retry_after=DUR  the retry-after sent with fail (default 1s on 429, else none)
//	id=WORD          names the fail_first counter (counters are per provider and id)
//
// DUR is a Go duration ("50ms", "1.5s") or a number of milliseconds. Specs
// are layered, later ones overriding only the knobs they name: Options.Knobs,
// then the runtime knobs (SetKnobs, or POST /emulator/knobs with a JSON
// object such as {"ttft":"50ms","tps":200}), then the X-Polydev-Emulator
// request header, then a model-name suffix after '+': model
// "gpt-4o-mini+cut_after=5;tps=100" is model "gpt-4o-mini" with two knobs.
// A malformed spec is answered with the provider's 400 error.
package emulator

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"polydev/internal/provider"
)

// Options configure an Emulator.
type Options struct {
	// Keys, when non-empty, are the only API keys accepted.
	Keys []string
	// Knobs is the server-wide default knob spec.
	Knobs string
	// Logger receives one line per request (never keys or message text);
	// nil discards.
	Logger *slog.Logger
	// MaxRecords bounds the request log kept for Records (default 1000).
	MaxRecords int
}

// Outcomes of a request, as reported in Record.Outcome.
const (
	OutcomeComplete = "complete"  // the whole answer was sent
	OutcomeError    = "error"     // an error status was answered
	OutcomeMidError = "mid_error" // the stream ended with the provider's mid-stream error
	OutcomeCut      = "cut"       // the emulator dropped the connection (cut_after)
	OutcomeAborted  = "aborted"   // the client went away before the answer was complete
	OutcomeShutdown = "shutdown"  // the emulator was closed mid-answer
)

// Record is what the emulator saw of one request and how it ended.
type Record struct {
	Provider    string
	Path        string
	Model       string // without the knob suffix
	Stream      bool
	Knobs       string // the header and model-suffix knobs of this request
	System      string // system instructions, joined
	Messages    []provider.Message
	MaxTokens   int
	Temperature *float64
	Status      int
	Outcome     string
	TokensSent  int // content tokens written to the connection
}

// Stats counts requests by outcome.
type Stats struct {
	Requests  int // chat requests received
	InFlight  int // not yet ended
	Complete  int
	Errors    int // answered with an error status
	MidErrors int // ended by a mid-stream error event
	Cut       int // dropped by cut_after
	Aborted   int // the client disconnected before the end
	Shutdown  int
}

// Emulator serves the providers' chat endpoints. It must be closed: Close
// ends answers in progress (stalls and slow streams included), so a server
// shutdown does not wait for them.
type Emulator struct {
	opts   Options
	log    *slog.Logger
	keys   map[string]bool
	ctx    context.Context
	cancel context.CancelFunc
	mux    *http.ServeMux

	mu       sync.Mutex
	runtime  string         // runtime knob spec
	counters map[string]int // fail_first counters by provider and id
	stats    Stats
	records  []Record
	changed  chan struct{} // closed and replaced on every stats change
}

// New returns an emulator; it must be closed.
func New(opts Options) *Emulator {
	if opts.MaxRecords <= 0 {
		opts.MaxRecords = 1000
	}
	lg := opts.Logger
	if lg == nil {
		lg = slog.New(slog.DiscardHandler)
	}
	e := &Emulator{opts: opts, log: lg, counters: map[string]int{}, changed: make(chan struct{})}
	if len(opts.Keys) > 0 {
		e.keys = map[string]bool{}
		for _, k := range opts.Keys {
			e.keys[k] = true
		}
	}
	e.ctx, e.cancel = context.WithCancel(context.Background())
	m := http.NewServeMux()
	m.HandleFunc("POST /openai/v1/chat/completions", e.openAIChat)
	m.HandleFunc("POST /openai/v1/responses", e.openAIResponses)
	m.HandleFunc("POST /anthropic/v1/messages", e.anthropicMessages)
	m.HandleFunc("POST /google/{version}/models/{call}", e.google)
	m.HandleFunc("GET /emulator/knobs", e.getKnobs)
	m.HandleFunc("POST /emulator/knobs", e.postKnobs)
	m.HandleFunc("GET /emulator/stats", e.getStats)
	e.mux = m
	return e
}

// Handler returns the HTTP handler serving every endpoint.
func (e *Emulator) Handler() http.Handler { return e.mux }

// Close ends every answer in progress. It is safe to call more than once.
func (e *Emulator) Close() error {
	e.cancel()
	return nil
}

// BaseURL returns the base URL an official SDK takes for provider when the
// emulator is served at root (such as "http://127.0.0.1:8089"):
// root+"/openai/v1" (OpenAI SDKs), root+"/anthropic" (Anthropic SDKs) and
// root+"/google" (google.golang.org/genai and @google/genai, which add the
// API version; plain HTTP clients use root+"/google/v1beta"). It returns ""
// for an unknown provider.
func BaseURL(root, providerName string) string {
	root = strings.TrimRight(root, "/")
	switch providerName {
	case provider.OpenAI:
		return root + "/openai/v1"
	case provider.Anthropic:
		return root + "/anthropic"
	case provider.Google:
		return root + "/google"
	}
	return ""
}

// SetKnobs replaces the runtime knobs (between Options.Knobs and the
// per-request ones) and resets every fail_first counter. An empty spec
// clears them.
func (e *Emulator) SetKnobs(spec string) error {
	if err := ValidateKnobs(spec); err != nil {
		return err
	}
	e.mu.Lock()
	defer e.mu.Unlock()
	e.runtime = spec
	e.counters = map[string]int{}
	return nil
}

// Knobs returns the runtime knob spec.
func (e *Emulator) Knobs() string {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.runtime
}

// Stats returns the counts so far.
func (e *Emulator) Stats() Stats {
	e.mu.Lock()
	defer e.mu.Unlock()
	return e.stats
}

// Records returns the most recent requests, oldest first.
func (e *Emulator) Records() []Record {
	e.mu.Lock()
	defer e.mu.Unlock()
	return append([]Record(nil), e.records...)
}

// Wait blocks until cond holds for the stats (checked at once and on every
// change) or ctx ends; tests use it to see, for instance, that a cancelled
// client's stream was noticed: Wait(ctx, func(s Stats) bool { return s.Aborted > 0 }).
func (e *Emulator) Wait(ctx context.Context, cond func(Stats) bool) error {
	for {
		e.mu.Lock()
		ok, ch := cond(e.stats), e.changed
		e.mu.Unlock()
		if ok {
			return nil
		}
		select {
		case <-ch:
		case <-ctx.Done():
			return fmt.Errorf("wait for emulator stats: %w", ctx.Err())
		}
	}
}

// call is one chat request in progress.
type call struct {
	e     *Emulator
	w     http.ResponseWriter
	r     *http.Request
	ctx   context.Context // ends when the client goes away or the emulator closes
	k     knobs
	rec   Record
	start time.Time
	ended bool
	// injected is set when the fail knob chose this request to fail.
	injected bool
	stopFn   func() bool
}

// begin opens a call: it counts the request and merges the knob layers that
// do not depend on the body (the model suffix is added by setModel).
func (e *Emulator) begin(w http.ResponseWriter, r *http.Request, prov string) *call {
	ctx, cancel := context.WithCancel(r.Context())
	stop := context.AfterFunc(e.ctx, cancel)
	c := &call{e: e, w: w, r: r, ctx: ctx, k: defaultKnobs(), start: time.Now(), stopFn: stop}
	c.rec = Record{Provider: prov, Path: r.URL.Path}
	e.mu.Lock()
	e.stats.Requests++
	e.stats.InFlight++
	e.notifyLocked()
	e.mu.Unlock()
	return c
}

func (e *Emulator) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
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
	h := c.r.Header.Get("X-Polydev-Emulator")
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
	c.stopFn()
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
func (c *call) wait(d time.Duration) bool {
	if d <= 0 {
		return c.ctx.Err() == nil
	}
	t := time.NewTimer(d)
	defer t.Stop()
	select {
	case <-t.C:
		return true
	case <-c.ctx.Done():
		return false
	}
}

// interrupted records why the context ended.
func (c *call) interrupted() {
	if c.e.ctx.Err() != nil {
		c.end(http.StatusOK, OutcomeShutdown)
	} else {
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
func (c *call) run(n int, s step) bool {
	for i := 0; i < n; i++ {
		if !c.pause(i) {
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
func (c *call) pause(i int) bool {
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
	return c.wait(d)
}

// runWhole is run for a non-streamed answer: it waits as long as the stream
// would have taken, then reports whether to answer. cut_after drops the
// connection without an answer; error_after is answered by the caller with
// the provider's overloaded error.
func (c *call) runWhole(n int) (midErr bool, ok bool) {
	for i := 0; i < n; i++ {
		if !c.pause(i) {
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

// knob handlers

func (e *Emulator) getKnobs(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, map[string]string{"knobs": e.Knobs(), "defaults": e.opts.Knobs})
}

// postKnobs replaces the runtime knobs with a JSON object of knob names to
// values ({} clears them), or with {"knobs": "spec"}.
func (e *Emulator) postKnobs(w http.ResponseWriter, r *http.Request) {
	var m map[string]any
	if err := decode(r, &m); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": "want a JSON object: " + err.Error()})
		return
	}
	var spec string
	if s, ok := m["knobs"].(string); ok && len(m) == 1 {
		spec = s
	} else {
		var err error
		if spec, err = knobsFromJSON(m); err != nil {
			writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
			return
		}
	}
	if err := e.SetKnobs(spec); err != nil {
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
		return
	}
	writeJSON(w, http.StatusOK, map[string]string{"knobs": spec, "defaults": e.opts.Knobs})
}

func (e *Emulator) getStats(w http.ResponseWriter, r *http.Request) {
	s := e.Stats()
	writeJSON(w, http.StatusOK, map[string]int{
		"requests": s.Requests, "in_flight": s.InFlight, "complete": s.Complete, "errors": s.Errors,
		"mid_errors": s.MidErrors, "cut": s.Cut, "aborted": s.Aborted, "shutdown": s.Shutdown,
	})
}

// keyOK applies the key rule.
func (e *Emulator) keyOK(key string) bool {
	if key == "" {
		return false
	}
	if e.keys != nil {
		return e.keys[key]
	}
	return !strings.HasPrefix(key, "invalid")
}

// finally records a call that ended without saying how (a bug, or a panic
// other than a cut).
func (c *call) finally() {
	if !c.ended {
		c.end(http.StatusInternalServerError, OutcomeError)
	}
}
