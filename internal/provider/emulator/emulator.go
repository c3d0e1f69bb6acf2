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
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"

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
	Provider string
	Path     string
	Model    string // without the knob suffix
	Stream   bool
	Knobs    string // the header and model-suffix knobs of this request
	System   string // system instructions, joined
	// Messages are the turns as the request carried them: OpenAI system and
	// developer messages stay in place (role "system"); Anthropic's system
	// field and Gemini's systemInstruction appear only in System.
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
	opts      Options
	log       *slog.Logger
	keys      map[string]bool
	done      chan struct{} // closed by Close
	closeOnce sync.Once
	mux       *http.ServeMux

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
	e.done = make(chan struct{})
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
	e.closeOnce.Do(func() { close(e.done) })
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

// notifyLocked wakes every Wait; e.mu is held.
func (e *Emulator) notifyLocked() {
	close(e.changed)
	e.changed = make(chan struct{})
}
