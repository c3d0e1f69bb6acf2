// Package wire is what the provider adapters share on the HTTP side: one
// table from status code to failure kind, the Retry-After headers, redaction
// of the credential from anything a provider says back, and the shell of a
// stream (a sticky error, the caller's context error first, Close that aborts
// the upstream request).
//
// Each adapter still reads its own provider's wire format; only the rules
// that must be identical across providers live here, so they are written
// and tested once.
package wire

import (
	"math"
	"net/http"
	"strconv"
	"strings"
	"time"

	"polydev/internal/provider"
)

// KindForStatus sorts an HTTP status into a failure kind:
// 401/403 auth, 429 rate limited, 503/529 overloaded, 400/404/413/422 bad
// request, anything else upstream.
func KindForStatus(status int) provider.Kind {
	switch status {
	case http.StatusUnauthorized, http.StatusForbidden:
		return provider.KindAuth
	case http.StatusTooManyRequests:
		return provider.KindRateLimited
	case http.StatusServiceUnavailable, 529:
		return provider.KindOverloaded
	case http.StatusBadRequest, http.StatusNotFound, http.StatusRequestEntityTooLarge, http.StatusUnprocessableEntity:
		return provider.KindBadRequest
	default:
		return provider.KindUpstream
	}
}

// maxRetryAfter bounds what a server can ask for; anything longer is read
// as this long (the retry policy then decides not to wait at all).
const maxRetryAfter = 24 * time.Hour

// RetryAfter reads how long the server asks the client to wait:
// retry-after-ms (milliseconds, fractions allowed; OpenAI and Anthropic send
// it) first, then Retry-After in seconds or as an HTTP date. It returns 0
// when neither is present or parsable.
func RetryAfter(h http.Header, now time.Time) time.Duration {
	if h == nil {
		return 0
	}
	if v := strings.TrimSpace(h.Get("Retry-After-Ms")); v != "" {
		if ms, err := strconv.ParseFloat(v, 64); err == nil && ms > 0 && !math.IsInf(ms, 0) && !math.IsNaN(ms) {
			return clamp(time.Duration(ms * float64(time.Millisecond)))
		}
	}
	v := strings.TrimSpace(h.Get("Retry-After"))
	if v == "" {
		return 0
	}
	if s, err := strconv.ParseFloat(v, 64); err == nil {
		if s <= 0 || math.IsInf(s, 0) || math.IsNaN(s) {
			return 0
		}
		return clamp(time.Duration(s * float64(time.Second)))
	}
	if t, err := http.ParseTime(v); err == nil {
		if d := t.Sub(now); d > 0 {
			return clamp(d)
		}
	}
	return 0
}

func clamp(d time.Duration) time.Duration {
	if d > maxRetryAfter || d < 0 {
		return maxRetryAfter
	}
	return d
}

// Redact removes the credential from text a provider sent back (some echo a
// key, or part of it, in an authentication error). Beyond the whole secret
// it also removes any run of 8 or more of its characters, which catches the
// masked forms providers print ("sk-proj-****abcd" keeps the prefix and the
// last characters); the shorter fragments left cannot identify a key.
func Redact(text, secret string) string {
	if secret == "" || text == "" {
		return text
	}
	text = strings.ReplaceAll(text, secret, "[REDACTED]")
	const minRun = 8
	if len(secret) < minRun {
		return text
	}
	// Replace every substring of text of length >= minRun that is also a
	// substring of secret. Secrets are short (under a few hundred bytes) and
	// messages are short, so the quadratic scan is cheap.
	var b strings.Builder
	for i := 0; i < len(text); {
		n := longestRunIn(text[i:], secret)
		if n >= minRun {
			b.WriteString("[REDACTED]")
			i += n
			continue
		}
		b.WriteByte(text[i])
		i++
	}
	return b.String()
}

// longestRunIn is the length of the longest prefix of s found in secret.
func longestRunIn(s, secret string) int {
	lo, hi := 0, len(s)
	if hi > len(secret) {
		hi = len(secret)
	}
	// Prefixes found in secret are downward closed, so binary search works.
	for lo < hi {
		mid := (lo + hi + 1) / 2
		if strings.Contains(secret, s[:mid]) {
			lo = mid
		} else {
			hi = mid - 1
		}
	}
	return lo
}

// Message cleans a provider's error text for provider.Error.Message: the
// credential redacted, whitespace collapsed, and the length bounded so a
// hostile or broken upstream cannot flood logs.
func Message(text, secret string) string {
	text = Redact(text, secret)
	text = strings.Join(strings.Fields(text), " ")
	const max = 500
	if len(text) > max {
		cut := max
		for cut > 0 && !utf8Start(text[cut]) {
			cut--
		}
		text = text[:cut] + "…"
	}
	return text
}

func utf8Start(b byte) bool { return b&0xC0 != 0x80 }
