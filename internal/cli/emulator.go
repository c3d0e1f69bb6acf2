package cli

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"polydev/internal/provider"
	"polydev/internal/provider/emulator"
)

// emulatorKnobFlags maps knob flags to the knob names of the grammar in
// package emulator.
var emulatorKnobFlags = []struct{ flag, knob, help string }{
	{"ttft", "ttft", "time to first token, e.g. 200ms"},
	{"tps", "tps", "tokens per second after the first (0: as fast as possible)"},
	{"tokens", "tokens", "reply length in tokens (default: the prompt's words + 8)"},
	{"cut-after", "cut_after", "drop the connection after N tokens"},
	{"stall", "stall", "pause this long once, after --stall-after tokens"},
	{"stall-after", "stall_after", "tokens before the stall (default 1)"},
	{"error-after", "error_after", "send the provider's mid-stream error after N tokens"},
	{"fail", "fail", "answer with the provider's error for this HTTP status (429, 500, 503, 529, 401, …)"},
	{"fail-first", "fail_first", "fail only the first N requests, then answer"},
	{"retry-after", "retry_after", "retry-after sent with --fail (default 1s on 429)"},
}

func runEmulator(ctx context.Context, e env, args []string) error {
	fs := newFlagSet(e, "emulator [flags]", `
Serves local, wire-faithful versions of the OpenAI, Anthropic and Google
Gemini chat APIs on one address until interrupted, and prints the base URL
to give each SDK. Answers echo the last user message followed by filler
words; knobs slow, cut, stall or fail them (see docs/emulator.md). Knobs set
here are the server-wide defaults; POST /emulator/knobs, the
X-Polydev-Emulator header and a model-name suffix ("gpt-4o-mini+cut_after=5")
override them. Keys: any non-empty key except one starting with "invalid",
or only those listed in --keys-file.`)
	addr := fs.String("addr", envOr("POLYDEV_EMULATOR_ADDR", "127.0.0.1:8089"), "listen address, host:port (env POLYDEV_EMULATOR_ADDR)")
	keysFile := fs.String("keys-file", os.Getenv("POLYDEV_EMULATOR_KEYS_FILE"), "file of accepted API keys, one per line (env POLYDEV_EMULATOR_KEYS_FILE)")
	knobs := fs.String("knobs", os.Getenv("POLYDEV_EMULATOR_KNOBS"), `knob spec, e.g. "ttft=200ms;tps=50" (env POLYDEV_EMULATOR_KNOBS); the flags below add to it`)
	knobVals := make([]*string, len(emulatorKnobFlags))
	for i, k := range emulatorKnobFlags {
		knobVals[i] = fs.String(k.flag, "", k.help)
	}
	logJSON := fs.Bool("log-json", envBool("POLYDEV_LOG_JSON"), "log JSON lines instead of text (env POLYDEV_LOG_JSON)")
	if err := parse(fs, args); err != nil {
		return err
	}
	spec := []string{}
	if *knobs != "" {
		spec = append(spec, *knobs)
	}
	set := map[string]bool{}
	fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
	for i, k := range emulatorKnobFlags {
		if set[k.flag] {
			spec = append(spec, k.knob+"="+*knobVals[i])
		}
	}
	opts := emulator.Options{Knobs: strings.Join(spec, ";")}
	if err := emulator.ValidateKnobs(opts.Knobs); err != nil {
		return fmt.Errorf("knobs: %w", err)
	}
	if *keysFile != "" {
		keys, err := readKeys(*keysFile)
		if err != nil {
			return err
		}
		opts.Keys = keys
	}
	var h slog.Handler = slog.NewTextHandler(e.stderr, nil)
	if *logJSON {
		h = slog.NewJSONHandler(e.stderr, nil)
	}
	opts.Logger = slog.New(h)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		return fmt.Errorf("listen: %w", err)
	}
	em := emulator.New(opts)
	defer em.Close()
	srv := &http.Server{Handler: em.Handler(), ReadHeaderTimeout: 10 * time.Second}
	root := "http://" + ln.Addr().String()
	fmt.Fprintf(e.stdout, "polydev emulator listening on %s\n", root)
	for _, p := range []string{provider.OpenAI, provider.Anthropic, provider.Google} {
		fmt.Fprintf(e.stdout, "  %-10s %s\n", p, emulator.BaseURL(root, p))
	}
	fmt.Fprintf(e.stdout, "  %-10s %s/emulator/knobs\n", "knobs", root)
	if len(opts.Keys) > 0 {
		fmt.Fprintf(e.stdout, "  accepting the %d keys of %s\n", len(opts.Keys), *keysFile)
	} else {
		fmt.Fprintln(e.stdout, `  accepting any key that does not start with "invalid"`)
	}

	errc := make(chan error, 1)
	go func() { errc <- srv.Serve(ln) }()
	select {
	case err := <-errc:
		return fmt.Errorf("serve: %w", err)
	case <-ctx.Done():
	}
	// Close first: it ends slow and stalled answers, so Shutdown need not
	// wait for them.
	em.Close()
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 5*time.Second)
	defer cancel()
	if err := srv.Shutdown(sctx); err != nil {
		return fmt.Errorf("shutdown: %w", err)
	}
	if err := <-errc; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve: %w", err)
	}
	return nil
}

// readKeys reads one key a line; blank lines and lines starting with '#'
// are skipped.
func readKeys(path string) ([]string, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	defer f.Close()
	var keys []string
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		if line == "" || strings.HasPrefix(line, "#") {
			continue
		}
		keys = append(keys, line)
	}
	if err := sc.Err(); err != nil {
		return nil, fmt.Errorf("keys file: %w", err)
	}
	if len(keys) == 0 {
		return nil, fmt.Errorf("keys file %s holds no key", path)
	}
	return keys, nil
}
