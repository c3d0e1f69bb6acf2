package cli

import (
	"context"
	crand "crypto/rand"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"net/http"
	"os"
	"path/filepath"
	goruntime "runtime"
	"runtime/pprof"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"text/tabwriter"
	"time"

	"polydev/internal/client"
	"polydev/internal/controlplane"
	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
	"polydev/internal/provider/registry"
	"polydev/internal/runtime"
	"polydev/web"
)

// runBenchChat is 'polydev bench chat': the chat relay's added time to
// first byte under load.
//
// It starts the whole stack in this process, on loopback: the provider
// emulator with zero latency, the runtime supervisor with its in-process
// executor, and the real control plane over HTTP with SQLite in a
// temporary directory or PostgreSQL. Then, after a setup phase that
// registers, logs in and links a key for every simulated user (Argon2id on
// both sides: slow on purpose, so kept outside the measured windows), it
// measures two things for --duration each, at the same concurrency:
//
//   - baseline: the provider adapter streaming from the emulator directly,
//     from the call to the first text chunk;
//   - relay: each user sending prompts in a loop through the real client
//     library, from the moment the POST leaves to the first decrypted chunk.
//
// The added time to first byte is the relay's percentile minus the
// baseline's.
func runBenchChat(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "bench chat [flags]", `
Measures the chat relay's added time to first byte: N simulated users, each
registered, logged in and with an API key linked (a setup phase, not
measured), send prompts in a loop for --duration through an in-process
control plane, runtime and provider emulator (zero provider latency), all
on loopback. Before that, as many goroutines stream from the emulator
directly through the provider adapter, for the baseline. Reports
p50/p90/p99 of the time to first byte of both and of their difference,
throughput and errors.

Users start at random moments within one answer's length, as independent
users do, and each phase is measured after that warm-up, with all of them
streaming; --burst starts them all at once instead, so that requests
arrive in waves of --concurrency (the worst case for queueing).

Storage is a fresh SQLite database in a temporary directory unless
--database-url names a PostgreSQL database (the app's login role); give
--migrate-database-url (the schema owner) to migrate it first, or run
'polydev migrate' beforehand. Use a throwaway database: the simulated
users and their conversations stay in it. The in-process runtime runs at
most 128 workers at once: beyond that, users may fail with runtime_busy.`)
	concurrency := fs.Int("concurrency", 100, "simulated users streaming at once (one stream each)")
	duration := fs.Duration("duration", 10*time.Second, "how long each measured phase (baseline, relay) runs")
	dbURL := fs.String("database-url", "", "PostgreSQL connection string of the app's login role (default: SQLite in a temporary directory)")
	migrateURL := fs.String("migrate-database-url", "", "PostgreSQL connection string of the schema owner, to migrate --database-url first")
	tokens := fs.Int("tokens", 100, "answer length in tokens")
	tps := fs.Float64("tps", 50, "the emulator's tokens per second after the first, which comes at once (0: as fast as possible, a saturated closed loop)")
	setupParallel := fs.Int("setup-parallel", 2, "users registered at once in the setup phase (each key derivation uses 64 MiB)")
	asJSON := fs.Bool("json", false, "print one JSON object instead of a table")
	burst := fs.Bool("burst", false, "start every user at the same moment (arrivals in waves of --concurrency) instead of spread over one answer's length")
	cpuProfile := fs.String("cpuprofile", "", "write a CPU profile of the measured relay phase to this file (go tool pprof reads it)")
	if err := parse(fs, args); err != nil {
		return err
	}
	switch {
	case *concurrency < 1:
		return errors.New("--concurrency must be at least 1")
	case *duration <= 0:
		return errors.New("--duration must be positive")
	case *tokens < 1:
		return errors.New("--tokens must be at least 1")
	case *tps < 0:
		return errors.New("--tps must not be negative")
	case *setupParallel < 1:
		return errors.New("--setup-parallel must be at least 1")
	case *migrateURL != "" && *dbURL == "":
		return errors.New("--migrate-database-url needs --database-url")
	}
	b := &chatBench{n: *concurrency, d: *duration, tokens: *tokens, tps: *tps, setupParallel: *setupParallel, stderr: e.stderr,
		cpuProfile: *cpuProfile, burst: *burst}
	r, err := b.run(ctx, *dbURL, *migrateURL)
	if err != nil {
		return err
	}
	if *asJSON {
		enc := json.NewEncoder(e.stdout)
		return enc.Encode(r)
	}
	return r.print(e.stdout)
}

// benchPrompt is what every simulated user sends; the emulator echoes it
// followed by filler words (emulator.ReplyText).
const benchPrompt = "how fast is the relay"

// chatBench is one run of the benchmark.
type chatBench struct {
	n, setupParallel int
	d                time.Duration
	tokens           int     // answer length
	tps              float64 // the emulator's pace (0: no pause)
	stderr           io.Writer
	cpuProfile       string // where the relay phase's CPU profile goes ("": none)
	burst            bool   // every user starts at once (see loop)

	apiKey   string
	emuURL   string       // the emulator's root
	emuHC    *http.Client // reaches the emulator (the runtime's egress and the baseline)
	apiTrans *http.Transport
	server   string // the control plane's URL
	tmp      string
}

// ChatBenchResult is what 'polydev bench chat --json' prints.
type ChatBenchResult struct {
	Backend     string  `json:"backend"`
	Concurrency int     `json:"concurrency"`
	DurationS   float64 `json:"duration_s"`
	// Tokens and TokensPerS shape every answer (time to first token: 0).
	Tokens     int     `json:"tokens"`
	TokensPerS float64 `json:"tokens_per_s"`
	// TTFBOverheadMS is TTFBMS minus BaselineTTFBMS, percentile by
	// percentile: the time the relay adds.
	TTFBOverheadMS Percentiles `json:"ttfb_overhead_ms"`
	// TTFBMS: from the POST leaving the client to the first decrypted chunk.
	TTFBMS Percentiles `json:"ttfb_ms"`
	// BaselineTTFBMS: the adapter against the emulator directly.
	BaselineTTFBMS      Percentiles `json:"baseline_ttfb_ms"`
	Streams             int         `json:"streams"`
	StreamsPerS         float64     `json:"streams_per_s"`
	BaselineStreams     int         `json:"baseline_streams"`
	BaselineStreamsPerS float64     `json:"baseline_streams_per_s"`
	Errors              int         `json:"errors"`
	BaselineErrors      int         `json:"baseline_errors"`
	FirstError          string      `json:"first_error,omitempty"`
	SetupS              float64     `json:"setup_s"`
	MaxHistory          int         `json:"max_history_messages"`
	GoMaxProcs          int         `json:"gomaxprocs"`
	// LoadAverage1 is the 1-minute load average when the run ended: more
	// than GoMaxProcs means other work shared the cores.
	LoadAverage1 float64 `json:"load_average_1m,omitempty"`
}

// Percentiles of a latency distribution, in milliseconds.
type Percentiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

func (r *ChatBenchResult) print(w io.Writer) error {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	pace := "as fast as possible"
	if r.TokensPerS > 0 {
		pace = fmt.Sprintf("%g tokens/s", r.TokensPerS)
	}
	fmt.Fprintf(tw, "backend %s, %d concurrent users, answers of %d tokens at %s, %s per phase, setup %.1fs, load average %.2f\n\n",
		r.Backend, r.Concurrency, r.Tokens, pace, time.Duration(r.DurationS*float64(time.Second)), r.SetupS, r.LoadAverage1)
	fmt.Fprintln(tw, "time to first byte\tp50\tp90\tp99\tmax\tstreams\tstreams/s\terrors")
	row := func(name string, p Percentiles, streams int, rate float64, errs int) {
		fmt.Fprintf(tw, "%s\t%.2f ms\t%.2f ms\t%.2f ms\t%.2f ms\t%d\t%.1f\t%d\n", name, p.P50, p.P90, p.P99, p.Max,
			streams, rate, errs)
	}
	row("relay (POST → first decrypted chunk)", r.TTFBMS, r.Streams, r.StreamsPerS, r.Errors)
	row("baseline (adapter → emulator)", r.BaselineTTFBMS, r.BaselineStreams, r.BaselineStreamsPerS, r.BaselineErrors)
	fmt.Fprintf(tw, "added by the relay\t%.2f ms\t%.2f ms\t%.2f ms\t\t\t\t\n", r.TTFBOverheadMS.P50, r.TTFBOverheadMS.P90, r.TTFBOverheadMS.P99)
	if err := tw.Flush(); err != nil {
		return err
	}
	if r.FirstError != "" {
		fmt.Fprintf(w, "\nfirst error: %s\n", r.FirstError)
	}
	return nil
}

func (b *chatBench) run(ctx context.Context, dbURL, migrateURL string) (*ChatBenchResult, error) {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	// Warnings and errors of the stack (a result not stored, say) go to
	// stderr; the routine info lines would drown the figures.
	log := slog.New(slog.NewTextHandler(b.stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	var err error
	if b.tmp, err = os.MkdirTemp("", "polydev-bench-"); err != nil {
		return nil, err
	}
	defer os.RemoveAll(b.tmp)
	key := make([]byte, 16)
	crand.Read(key)
	b.apiKey = "sk-bench-" + hex.EncodeToString(key)

	// Connections are kept alive on both hops, as many as there are
	// streams, so the figures measure the relay and not TCP handshakes
	// (http.DefaultTransport keeps only 2 idle connections per host).
	b.emuHC = &http.Client{Transport: benchTransport(b.n)}
	defer b.emuHC.CloseIdleConnections()
	b.apiTrans = benchTransport(b.n)
	defer b.apiTrans.CloseIdleConnections()

	emu := emulator.New(emulator.Options{Keys: []string{b.apiKey}, MaxRecords: 1,
		Knobs: fmt.Sprintf("ttft=0s;tps=%g;tokens=%d", b.tps, b.tokens)})
	defer emu.Close()
	eln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		return nil, fmt.Errorf("emulator: %w", err)
	}
	esrv := &http.Server{Handler: emu.Handler(), ReadHeaderTimeout: 10 * time.Second}
	go esrv.Serve(eln)
	defer esrv.Close()
	b.emuURL = "http://" + eln.Addr().String()

	backend := "sqlite"
	if dbURL != "" {
		backend = "postgresql"
	}
	st, err := openStore(ctx, log, filepath.Join(b.tmp, "data"), dbURL, migrateURL, dbURL == "" || migrateURL != "")
	if err != nil {
		return nil, err
	}
	defer st.Close()

	id, err := runtime.LoadIdentity(filepath.Join(b.tmp, "runtime-identity"))
	if err != nil {
		return nil, err
	}
	urls := map[string]string{}
	for _, p := range registry.Names {
		urls[p] = emulator.BaseURL(b.emuURL, p)
	}
	ex := runtime.NewInProcess(runtime.InProcess{NewProvider: registry.New, ClientFor: func(int) *http.Client { return b.emuHC }})
	sup, err := runtime.NewSupervisor(runtime.Config{Identity: id, Executor: ex, BaseURLs: urls, Logger: log})
	if err != nil {
		return nil, err
	}
	secret := make([]byte, 32)
	crand.Read(secret)
	cfg := controlplane.Config{Addr: "127.0.0.1:0", ShutdownTimeout: 5 * time.Second, Store: st, SessionTTL: time.Hour,
		PreloginSecret: secret, RuntimeKeys: sup, Runtime: sup}
	srv, err := controlplane.New(cfg, log, web.Assets)
	if err != nil {
		return nil, err
	}
	addr := make(chan net.Addr, 1)
	done := make(chan error, 1)
	sctx, stopServer := context.WithCancel(ctx)
	go func() { done <- srv.Run(sctx, func(a net.Addr) { addr <- a }) }()
	defer func() { stopServer(); <-done }()
	select {
	case a := <-addr:
		b.server = "http://" + a.String()
	case err := <-done:
		done <- err
		return nil, fmt.Errorf("control plane: %w", err)
	}

	setupStart := time.Now()
	users, err := b.setup(ctx)
	if err != nil {
		return nil, fmt.Errorf("setup: %w", err)
	}
	defer func() {
		for _, u := range users {
			u.keys.Wipe()
		}
	}()
	setup := time.Since(setupStart)

	base := b.baseline(ctx)
	stopProfile, err := startCPUProfile(b.cpuProfile)
	if err != nil {
		return nil, err
	}
	relay := b.relay(ctx, users)
	if err := stopProfile(); err != nil {
		return nil, err
	}
	if err := ctx.Err(); err != nil {
		return nil, err
	}

	r := &ChatBenchResult{
		Backend: backend, Concurrency: b.n, DurationS: b.d.Seconds(), Tokens: b.tokens, TokensPerS: b.tps,
		TTFBMS: percentiles(relay.ttfb), BaselineTTFBMS: percentiles(base.ttfb),
		// Answers started in the window, per second of it.
		Streams: len(relay.ttfb), StreamsPerS: float64(len(relay.ttfb)) / b.d.Seconds(),
		BaselineStreams: len(base.ttfb), BaselineStreamsPerS: float64(len(base.ttfb)) / b.d.Seconds(),
		Errors: relay.errors, BaselineErrors: base.errors, FirstError: relay.firstError,
		SetupS: setup.Seconds(), GoMaxProcs: goruntime.GOMAXPROCS(0), LoadAverage1: loadAverage(),
	}
	if r.FirstError == "" && base.firstError != "" {
		r.FirstError = "baseline: " + base.firstError
	}
	for _, u := range users {
		r.MaxHistory = max(r.MaxHistory, 2*u.sends)
	}
	r.TTFBOverheadMS = Percentiles{P50: round2(r.TTFBMS.P50 - r.BaselineTTFBMS.P50), P90: round2(r.TTFBMS.P90 - r.BaselineTTFBMS.P90),
		P99: round2(r.TTFBMS.P99 - r.BaselineTTFBMS.P99), Max: round2(r.TTFBMS.Max - r.BaselineTTFBMS.Max)}
	r.StreamsPerS, r.BaselineStreamsPerS = round2(r.StreamsPerS), round2(r.BaselineStreamsPerS)
	r.SetupS = round2(r.SetupS)
	return r, nil
}

func benchTransport(n int) *http.Transport {
	t := http.DefaultTransport.(*http.Transport).Clone()
	t.Proxy = nil
	t.MaxIdleConns = 2*n + 16
	t.MaxIdleConnsPerHost = 2*n + 16
	return t
}

// benchUser is one simulated user, ready to chat.
type benchUser struct {
	chat  *client.Chat
	keys  *client.Keys
	conv  string
	sends int
	// posted is when the last POST of a message left (set by stampPost).
	posted atomic.Int64
}

// stampPost notes when a chat message POST leaves, so the time to first
// byte leaves out what Send does before it (fetching the conversation, the
// runtime key and the credential, sealing the grant).
type stampPost struct {
	base http.RoundTripper
	at   *atomic.Int64
}

func (s stampPost) RoundTrip(r *http.Request) (*http.Response, error) {
	if r.Method == http.MethodPost && strings.HasSuffix(r.URL.Path, "/messages") {
		s.at.Store(time.Now().UnixNano())
	}
	return s.base.RoundTrip(r)
}

// setup registers, logs in, links a key, pins the runtime identity and
// creates a conversation for each user, setupParallel at a time.
func (b *chatBench) setup(ctx context.Context) ([]*benchUser, error) {
	users := make([]*benchUser, b.n)
	suffix := make([]byte, 6)
	crand.Read(suffix)
	password := make([]byte, 18)
	crand.Read(password)
	pw := []byte(hex.EncodeToString(password))
	ctx, cancel := context.WithCancelCause(ctx)
	defer cancel(nil)
	next := atomic.Int64{}
	var wg sync.WaitGroup
	for range min(b.setupParallel, b.n) {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for {
				i := int(next.Add(1)) - 1
				if i >= b.n || ctx.Err() != nil {
					return
				}
				u, err := b.newUser(ctx, fmt.Sprintf("bench-%x-%d@example.com", suffix, i), pw, i)
				if err != nil {
					cancel(fmt.Errorf("user %d: %w", i, err))
					return
				}
				users[i] = u
			}
		}()
	}
	wg.Wait()
	if err := context.Cause(ctx); err != nil {
		for _, u := range users {
			if u != nil {
				u.keys.Wipe()
			}
		}
		return nil, err
	}
	return users, nil
}

func (b *chatBench) newUser(ctx context.Context, email string, password []byte, i int) (*benchUser, error) {
	u := &benchUser{}
	hc := &http.Client{
		Timeout:       time.Minute,
		Transport:     stampPost{base: b.apiTrans, at: &u.posted},
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
	c := client.New(b.server, hc)
	if _, err := client.Register(ctx, c, email, password); err != nil {
		return nil, err
	}
	sess, keys, err := client.Login(ctx, c, email, password)
	if err != nil {
		return nil, err
	}
	u.keys = keys
	if _, err := client.LinkKey(ctx, c, sess, keys, provider.OpenAI, []byte(b.apiKey)); err != nil {
		keys.Wipe()
		return nil, err
	}
	st := client.NewState(filepath.Join(b.tmp, "users", fmt.Sprint(i)))
	u.chat = client.NewChat(c, sess, keys, st)
	if _, err := u.chat.RuntimeKey(ctx); err != nil { // pins the identity
		keys.Wipe()
		return nil, err
	}
	if u.conv, err = u.chat.CreateConversation(ctx, provider.OpenAI, "bench"); err != nil {
		keys.Wipe()
		return nil, err
	}
	return u, nil
}

// loop runs b.n users through spreadLoop; the warm-up is one answer's
// length (none with --burst, or when answers come as fast as possible).
func (b *chatBench) loop(ctx context.Context, p *phase, once func(i int) (time.Duration, error)) {
	var warmup time.Duration
	if !b.burst && b.tps > 0 {
		warmup = time.Duration(float64(b.tokens-1) / b.tps * float64(time.Second))
	}
	spreadLoop(ctx, b.n, warmup, b.d, p, once)
}

// baseline streams from the emulator through the adapter directly.
func (b *chatBench) baseline(ctx context.Context) *phase {
	p := &phase{}
	want := emulator.ReplyText(benchPrompt, b.tokens)
	adapters := make([]provider.Provider, b.n)
	for i := range adapters {
		a, err := registry.New(provider.OpenAI, provider.Config{BaseURL: emulator.BaseURL(b.emuURL, provider.OpenAI), HTTPClient: b.emuHC})
		if err != nil {
			p.fail(err)
			return p
		}
		adapters[i] = provider.WithRetry(a, provider.DefaultRetryPolicy)
	}
	cred := provider.Credential{APIKey: b.apiKey}
	req := provider.Request{Model: client.DefaultModel(provider.OpenAI), Messages: []provider.Message{{Role: provider.RoleUser, Content: benchPrompt}}}
	b.loop(ctx, p, func(i int) (time.Duration, error) {
		start := time.Now()
		var first time.Duration
		var text strings.Builder
		err := func() error {
			s, err := adapters[i].Stream(ctx, cred, req)
			if err != nil {
				return err
			}
			defer s.Close()
			for {
				c, err := s.Next()
				if errors.Is(err, io.EOF) {
					return nil
				}
				if err != nil {
					return err
				}
				if c.Text != "" && first == 0 {
					first = time.Since(start)
				}
				text.WriteString(c.Text)
			}
		}()
		switch {
		case err != nil:
			return 0, err
		case text.String() != want:
			return 0, fmt.Errorf("the answer was %q, want %q", text.String(), want)
		}
		return first, nil
	})
	return p
}

// relay has every user send prompts through the whole stack.
func (b *chatBench) relay(ctx context.Context, users []*benchUser) *phase {
	p := &phase{}
	want := emulator.ReplyText(benchPrompt, b.tokens)
	prompt := []byte(benchPrompt)
	b.loop(ctx, p, func(i int) (time.Duration, error) {
		u := users[i]
		var first time.Duration
		var text strings.Builder
		u.posted.Store(0)
		_, err := u.chat.Send(ctx, u.conv, prompt, "", nil, func(s string) {
			if first == 0 {
				first = time.Duration(time.Now().UnixNano() - u.posted.Load())
			}
			text.WriteString(s)
		})
		switch {
		case err != nil:
			return 0, err
		case text.String() != want:
			return 0, fmt.Errorf("the answer was %q, want %q", text.String(), want)
		case u.posted.Load() == 0:
			return 0, errors.New("no message POST was seen")
		}
		u.sends++
		return first, nil
	})
	return p
}

// startCPUProfile profiles the process into path until the returned
// function is called; an empty path profiles nothing.
func startCPUProfile(path string) (stop func() error, err error) {
	if path == "" {
		return func() error { return nil }, nil
	}
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() error {
		pprof.StopCPUProfile()
		return f.Close()
	}, nil
}

// percentiles by the nearest-rank method, in milliseconds.
func percentiles(ds []time.Duration) Percentiles {
	if len(ds) == 0 {
		return Percentiles{}
	}
	s := slices.Clone(ds)
	slices.Sort(s)
	at := func(q float64) float64 {
		i := int(q*float64(len(s))+0.999999) - 1
		i = min(max(i, 0), len(s)-1)
		return round2(float64(s[i]) / float64(time.Millisecond))
	}
	return Percentiles{P50: at(0.50), P90: at(0.90), P99: at(0.99), Max: at(1)}
}

func round2(f float64) float64 { return math.Round(f*100) / 100 }

// loadAverage is the 1-minute load average (0 where /proc/loadavg is
// missing).
func loadAverage() float64 {
	b, err := os.ReadFile("/proc/loadavg")
	if err != nil {
		return 0
	}
	f, _, _ := strings.Cut(string(b), " ")
	v, _ := strconv.ParseFloat(f, 64)
	return v
}
