package cli

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net/http"
	"net/http/httptest"
	"os"
	"path/filepath"
	"sort"
	"sync"
	"time"

	"polydev/internal/runtime/runc"
	"polydev/internal/runtime/runc/wire"
	"polydev/internal/worker"
)

// benchRuncFlags are shared by the runc benchmarks.
type benchRuncFlags struct {
	image, root, binary string
	asJSON              bool
}

func (b *benchRuncFlags) register(fs interface {
	StringVar(*string, string, string, string)
	BoolVar(*bool, string, bool, string)
}) {
	fs.StringVar(&b.image, "image", "", "runtime image directory (default: build one from --binary into a temporary directory)")
	fs.StringVar(&b.binary, "binary", "", "static polydev binary for the image (default: this executable)")
	fs.StringVar(&b.root, "root", "", "pool root directory (default: a temporary directory)")
	fs.BoolVar(&b.asJSON, "json", false, "print one JSON object")
}

// setup returns an image and a fresh root, and a cleanup.
func (b *benchRuncFlags) setup() (image, root string, cleanup func(), err error) {
	tmp, err := os.MkdirTemp("", "polydev-bench-")
	if err != nil {
		return "", "", nil, err
	}
	cleanup = func() { os.RemoveAll(tmp) }
	if err := os.Chmod(tmp, 0o711); err != nil {
		cleanup()
		return "", "", nil, err
	}
	image = b.image
	if image == "" {
		bin := b.binary
		if bin == "" {
			if bin, err = os.Executable(); err != nil {
				cleanup()
				return "", "", nil, err
			}
		}
		m, err := runc.LoadManifest("runtime")
		if err != nil {
			cleanup()
			return "", "", nil, err
		}
		image = filepath.Join(tmp, "image")
		if _, err := runc.Build(m, bin, image); err != nil {
			cleanup()
			return "", "", nil, err
		}
	}
	root = b.root
	if root == "" {
		root = filepath.Join(tmp, "root")
	}
	return image, root, cleanup, nil
}

type quantiles struct {
	P50 float64 `json:"p50"`
	P90 float64 `json:"p90"`
	P99 float64 `json:"p99"`
	Max float64 `json:"max"`
}

// roundUS rounds milliseconds to the microsecond.
func roundUS(ms float64) float64 { return math.Round(ms*1000) / 1000 }

func quantilesOf(ds []time.Duration) quantiles {
	if len(ds) == 0 {
		return quantiles{}
	}
	s := append([]time.Duration(nil), ds...)
	sort.Slice(s, func(i, j int) bool { return s[i] < s[j] })
	at := func(q float64) float64 {
		i := int(q*float64(len(s)-1) + 0.5)
		return float64(s[i].Microseconds()) / 1000
	}
	return quantiles{P50: at(.5), P90: at(.9), P99: at(.99), Max: at(1)}
}

func runBenchPool(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "bench pool [flags]", `
Measures the runc pool on this host: checkout latency from a warm pool
(a fresh container, and a sticky one for the same user), a cold container
start (runc run until the worker answers), and how fast the background
refill adds containers. Needs root and runc.`)
	var b benchRuncFlags
	b.register(fs)
	n := fs.Int("n", 50, "samples per measurement")
	warm := fs.Int("warm", 8, "fresh containers kept ready in the warm pool")
	if err := parse(fs, args); err != nil {
		return err
	}
	image, root, cleanup, err := b.setup()
	if err != nil {
		return err
	}
	defer cleanup()
	log := slog.New(slog.DiscardHandler)

	// Cold starts: no warm pool; each checkout starts a container.
	cold, err := runc.New(ctx, runc.Config{Root: root, Image: image, Log: log, Default: runc.PoolSize{MinIdle: -1}})
	if err != nil {
		return err
	}
	userns := cold.UserNS()
	var colds []time.Duration
	for i := 0; i < *n; i++ {
		t0 := time.Now()
		l, err := cold.Checkout(ctx, "bench", fmt.Sprintf("cold-%d", i))
		if err != nil {
			cold.Close()
			return err
		}
		colds = append(colds, time.Since(t0))
		l.Release() // never ran: destroyed
	}
	cold.Close()

	// Warm checkouts.
	p, err := runc.New(ctx, runc.Config{Root: root, Image: image, Log: log, Pools: map[string]runc.PoolSize{"bench": {MinIdle: *warm, MaxTotal: 128}}})
	if err != nil {
		return err
	}
	defer p.Close()
	waitIdle := func(want int) (time.Duration, error) {
		t0 := time.Now()
		for {
			for _, s := range p.Stats() {
				if s.Provider == "bench" && s.Idle >= want {
					return time.Since(t0), nil
				}
			}
			if time.Since(t0) > 5*time.Minute {
				return 0, errors.New("the pool did not refill in 5 minutes")
			}
			time.Sleep(2 * time.Millisecond)
		}
	}
	if _, err := waitIdle(*warm); err != nil {
		return err
	}
	var warms, stickies []time.Duration
	for i := 0; i < *n; i++ {
		if _, err := waitIdle(1); err != nil {
			return err
		}
		user := fmt.Sprintf("warm-%d", i)
		t0 := time.Now()
		l, err := p.Checkout(ctx, "bench", user)
		if err != nil {
			return err
		}
		warms = append(warms, time.Since(t0))
		if err := l.Run(ctx, wire.OpEcho, worker.Task{Job: worker.Job{UserID: user, Provider: "bench"}}, func(worker.Event) error { return nil }); err != nil {
			return err
		}
		l.Release()
		t0 = time.Now()
		l, err = p.Checkout(ctx, "bench", user)
		if err != nil {
			return err
		}
		stickies = append(stickies, time.Since(t0))
		if l.Kind != "sticky" {
			return fmt.Errorf("second checkout for %s was %s, not sticky", user, l.Kind)
		}
		l.Release()
	}
	// Refill: take every fresh container, then time the pool refilling.
	if _, err := waitIdle(*warm); err != nil {
		return err
	}
	var held []*runc.Lease
	for i := 0; i < *warm; i++ {
		l, err := p.Checkout(ctx, "bench", fmt.Sprintf("drain-%d", i))
		if err != nil {
			return err
		}
		held = append(held, l)
	}
	refillTime, err := waitIdle(*warm)
	if err != nil {
		return err
	}
	for _, l := range held {
		l.Release()
	}
	res := map[string]any{
		"checkout_ms":        quantilesOf(warms),
		"sticky_checkout_ms": quantilesOf(stickies),
		"cold_start_ms":      quantilesOf(colds),
		"refill_per_s":       float64(*warm) / refillTime.Seconds(),
		"samples":            *n,
		"user_namespace":     userns,
	}
	if b.asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	q := func(x quantiles) string { return fmt.Sprintf("p50 %.2f ms, p99 %.2f ms", x.P50, x.P99) }
	fmt.Fprintf(e.stdout, "warm checkout:   %s\nsticky checkout: %s\ncold start:      %s\nrefill:          %.1f containers/s\n(%d samples, user namespace: %v)\n",
		q(quantilesOf(warms)), q(quantilesOf(stickies)), q(quantilesOf(colds)), res["refill_per_s"], *n, userns)
	return nil
}

// runBenchChatRunc measures the time to first byte that running a request
// in a container adds: N concurrent users each stream requests whose
// upstream answers at once, through the pool (socket in, gateway out,
// events back) and, as the baseline, straight from this process.
func runBenchChatRunc(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "bench chat --runtime runc [flags]", `
Measures the time to first byte that the runc runtime adds to a streamed
request: N concurrent users each send requests whose upstream (a local
server) answers at once; each request goes over the container's socket, out
through its egress gateway, and back as events. The baseline is the same
upstream fetched directly from this process. Needs root and runc.`)
	var b benchRuncFlags
	b.register(fs)
	rt := fs.String("runtime", "runc", "runtime to measure (runc)")
	conc := fs.Int("concurrency", 100, "concurrent streams (users)")
	dur := fs.Duration("duration", 10*time.Second, "how long to measure after warm-up")
	streamFor := fs.Duration("stream-time", time.Second, "how long each upstream answer streams after its first byte")
	burst := fs.Bool("burst", false, "start every user at the same moment (arrivals in waves of --concurrency) instead of spread over one answer's length")
	if err := parse(fs, args); err != nil {
		return err
	}
	if *rt != "runc" {
		return fmt.Errorf("bench chat: --runtime %s: only runc is measured here", *rt)
	}
	image, root, cleanup, err := b.setup()
	if err != nil {
		return err
	}
	defer cleanup()
	upstream := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/event-stream")
		fl := w.(http.Flusher)
		io.WriteString(w, "data: {\"delta\":\"hello\"}\n\n")
		fl.Flush()
		// The rest of the answer streams for a while, so that the
		// streams overlap as real ones do.
		for i := 0; i < 20 && *streamFor > 0; i++ {
			time.Sleep(*streamFor / 20)
			io.WriteString(w, "data: {\"delta\":\" more\"}\n\n")
			fl.Flush()
		}
	}))
	directClient := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: *conc}}
	defer upstream.Close()
	p, err := runc.New(ctx, runc.Config{Root: root, Image: image, Log: slog.New(slog.DiscardHandler),
		// MaxTotal = MinIdle: once every user holds its container, the
		// refill has nothing to start while the streams are measured.
		Pools: map[string]runc.PoolSize{"bench": {MinIdle: *conc, MaxTotal: *conc}}})
	if err != nil {
		return err
	}
	defer p.Close()
	for {
		s := p.Stats()
		if len(s) > 0 && s[0].Idle >= *conc {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	measure := func(user string, direct bool) (time.Duration, error) {
		t0 := time.Now()
		if direct {
			resp, err := directClient.Get(upstream.URL)
			if err != nil {
				return 0, err
			}
			defer resp.Body.Close()
			var one [1]byte
			if _, err := resp.Body.Read(one[:]); err != nil && err != io.EOF {
				return 0, err
			}
			d := time.Since(t0)
			_, err = io.Copy(io.Discard, resp.Body)
			return d, err
		}
		var first time.Duration
		task := worker.Task{Job: worker.Job{UserID: user, Provider: "bench", Egress: worker.Egress{Port: 1}}, BaseURL: upstream.URL}
		l, err := p.Checkout(ctx, "bench", user)
		if err != nil {
			return 0, err
		}
		defer l.Release()
		err = l.Run(ctx, wire.OpEcho, task, func(ev worker.Event) error {
			if first == 0 && ev.Chunk != nil {
				first = time.Since(t0)
			}
			return nil
		})
		return first, err
	}
	// Every user first makes one untimed request (it binds a container to
	// the user); once all have, each waits a random part of one answer's
	// length, unless --burst, so that arrivals spread as independent users'
	// do, and the window opens when every user has started. With --burst
	// every user starts at once and, answers being of one length, they stay
	// in step: waves of --concurrency simultaneous requests.
	run := func(direct bool) ([]time.Duration, int, error) {
		users := make([]string, *conc)
		var bind sync.WaitGroup
		for i := range users {
			users[i] = fmt.Sprintf("user-%d", i)
			bind.Add(1)
			go func() { defer bind.Done(); _, _ = measure(users[i], direct) }()
		}
		bind.Wait()
		warmup := *streamFor
		if *burst {
			warmup = 0
		}
		p := &phase{}
		spreadLoop(ctx, *conc, warmup, *dur, p, func(i int) (time.Duration, error) { return measure(users[i], direct) })
		return p.ttfb, p.errors, nil
	}
	base, baseErrs, _ := run(true)
	through, errs, _ := run(false)
	bq, tq := quantilesOf(base), quantilesOf(through)
	res := map[string]any{
		"runtime":          "runc",
		"concurrency":      *conc,
		"streams":          len(through),
		"errors":           errs + baseErrs,
		"ttfb_ms":          tq,
		"baseline_ttfb_ms": bq,
		"ttfb_overhead_ms": quantiles{P50: roundUS(tq.P50 - bq.P50), P90: roundUS(tq.P90 - bq.P90), P99: roundUS(tq.P99 - bq.P99), Max: roundUS(tq.Max - bq.Max)},
	}
	if b.asJSON {
		return json.NewEncoder(e.stdout).Encode(res)
	}
	fmt.Fprintf(e.stdout, "runc, %d concurrent streams, %d requests, %d errors\nTTFB through containers: p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\nTTFB direct (baseline):  p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\nadded:                   p50 %.2f ms, p90 %.2f ms, p99 %.2f ms\n",
		*conc, len(through), errs+baseErrs, tq.P50, tq.P90, tq.P99, bq.P50, bq.P90, bq.P99, tq.P50-bq.P50, tq.P90-bq.P90, tq.P99-bq.P99)
	return nil
}
