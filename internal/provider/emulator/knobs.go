package emulator

import (
	"fmt"
	"math"
	"sort"
	"strconv"
	"strings"
	"time"
)

// knobs is the behaviour of one request, built by layering knob specs:
// Options.Knobs, then the runtime knobs (SetKnobs or POST /emulator/knobs),
// then the X-Polydev-Emulator header, then the model-name suffix. A later
// layer overrides only the knobs it names.
type knobs struct {
	ttft       time.Duration // delay before the first token
	tps        float64       // tokens per second; 0 sends them as fast as possible
	tokens     int           // reply length in tokens; -1: the default rule (prompt words + 8)
	cutAfter   int           // drop the connection after this many tokens; -1: never
	stall      time.Duration // pause once, after stallAfter tokens
	stallAfter int
	errorAfter int // send the provider's mid-stream error after this many tokens; -1: never
	fail       int // answer with this HTTP status instead; 0: do not fail
	failFirst  int // fail only the first failFirst requests of this counter; 0: all of them
	retryAfter time.Duration
	hasRetry   bool // retry_after was given
	id         string
}

func defaultKnobs() knobs {
	return knobs{tokens: -1, cutAfter: -1, stallAfter: 1, errorAfter: -1}
}

// knobNames lists the knobs in documentation order.
var knobNames = []string{"ttft", "tps", "tokens", "cut_after", "stall", "stall_after", "error_after", "fail", "fail_first", "retry_after", "id"}

// splitKnobs splits a spec on its separators: ';', ',' and '+'.
func splitKnobs(spec string) []string {
	return strings.FieldsFunc(spec, func(r rune) bool { return r == ';' || r == ',' || r == '+' })
}

// apply layers spec over k. An empty spec changes nothing.
func (k *knobs) apply(spec string) error {
	for _, item := range splitKnobs(spec) {
		item = strings.TrimSpace(item)
		if item == "" {
			continue
		}
		name, value, ok := strings.Cut(item, "=")
		name, value = strings.TrimSpace(strings.ToLower(name)), strings.TrimSpace(value)
		if !ok || value == "" {
			return fmt.Errorf("knob %q: want name=value", item)
		}
		if err := k.set(name, value); err != nil {
			return fmt.Errorf("knob %s: %w", name, err)
		}
	}
	return nil
}

func (k *knobs) set(name, value string) error {
	var err error
	switch name {
	case "ttft":
		k.ttft, err = parseDuration(value)
	case "tps":
		k.tps, err = strconv.ParseFloat(value, 64)
		if err == nil && (k.tps < 0 || math.IsNaN(k.tps) || math.IsInf(k.tps, 0)) {
			err = fmt.Errorf("want a number ≥ 0, got %q", value)
		}
	case "tokens":
		k.tokens, err = parseCount(value)
	case "cut_after":
		k.cutAfter, err = parseCount(value)
	case "stall":
		k.stall, err = parseDuration(value)
	case "stall_after":
		k.stallAfter, err = parseCount(value)
	case "error_after":
		k.errorAfter, err = parseCount(value)
	case "fail":
		k.fail, err = strconv.Atoi(value)
		if err == nil && k.fail != 0 && (k.fail < 400 || k.fail > 599) {
			err = fmt.Errorf("want 0 or an HTTP status 400–599, got %q", value)
		}
	case "fail_first":
		k.failFirst, err = parseCount(value)
	case "retry_after":
		k.retryAfter, err = parseDuration(value)
		k.hasRetry = err == nil
	case "id":
		k.id = value
	default:
		return fmt.Errorf("unknown knob (known: %s)", strings.Join(knobNames, ", "))
	}
	return err
}

// parseDuration accepts a Go duration ("50ms", "1.5s") or a bare number of
// milliseconds ("50").
func parseDuration(s string) (time.Duration, error) {
	if n, err := strconv.ParseFloat(s, 64); err == nil {
		if n < 0 || n > float64(time.Hour/time.Millisecond) {
			return 0, fmt.Errorf("want a duration between 0 and 1h, got %q", s)
		}
		return time.Duration(n * float64(time.Millisecond)), nil
	}
	d, err := time.ParseDuration(s)
	if err != nil || d < 0 || d > time.Hour {
		return 0, fmt.Errorf("want a duration between 0 and 1h such as 50ms or 2s, got %q", s)
	}
	return d, nil
}

func parseCount(s string) (int, error) {
	n, err := strconv.Atoi(s)
	if err != nil || n < 0 || n > 1_000_000 {
		return 0, fmt.Errorf("want a whole number 0–1000000, got %q", s)
	}
	return n, nil
}

// ValidateKnobs reports whether spec follows the knob grammar (see the
// package documentation).
func ValidateKnobs(spec string) error {
	k := defaultKnobs()
	return k.apply(spec)
}

// knobsFromJSON turns the body of POST /emulator/knobs, a JSON object of
// knob names to strings or numbers, into a spec.
func knobsFromJSON(m map[string]any) (string, error) {
	names := make([]string, 0, len(m))
	for name := range m {
		names = append(names, name)
	}
	sort.Strings(names)
	var parts []string
	for _, name := range names {
		var v string
		switch x := m[name].(type) {
		case string:
			v = x
		case float64:
			v = strconv.FormatFloat(x, 'f', -1, 64)
		case bool, nil:
			return "", fmt.Errorf("knob %s: want a string or a number", name)
		default:
			return "", fmt.Errorf("knob %s: want a string or a number", name)
		}
		if strings.ContainsAny(v, ";,+") {
			return "", fmt.Errorf("knob %s: value %q holds a separator", name, v)
		}
		parts = append(parts, name+"="+v)
	}
	spec := strings.Join(parts, ";")
	return spec, ValidateKnobs(spec)
}

// splitModel separates a model name from a knob suffix: "gpt-4o-mini+cut_after=5"
// is model "gpt-4o-mini" with knobs "cut_after=5".
func splitModel(model string) (name, spec string) {
	name, spec, _ = strings.Cut(model, "+")
	return name, spec
}
