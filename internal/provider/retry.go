package provider

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"time"
)

// RetryPolicy says how WithRetry retries. The zero value retries nothing.
type RetryPolicy struct {
	// MaxAttempts counts every attempt, the first included; 0 or 1 means
	// no retry.
	MaxAttempts int
	// BaseDelay is the backoff before the second attempt when the provider
	// named no delay; it doubles for each later attempt, with jitter.
	BaseDelay time.Duration
	// MaxWait caps any single wait. A provider that asks for longer
	// (Retry-After above MaxWait) is not retried: its error, with its
	// RetryAfter, goes to the caller at once. 0 means no cap.
	MaxWait time.Duration
}

// DefaultRetryPolicy is the runtime's rule: three attempts, 250 ms base
// backoff, never a wait above 10 s.
var DefaultRetryPolicy = RetryPolicy{MaxAttempts: 3, BaseDelay: 250 * time.Millisecond, MaxWait: 10 * time.Second}

// WithRetry returns p with failures retried, only while no chunk has
// reached the caller: an error from Stream, or from the first Next before
// any chunk, of a retryable kind (Retryable: rate limited, overloaded,
// upstream) is retried after the provider's RetryAfter or a jittered
// exponential backoff. Once a chunk was delivered nothing is retried: the
// caller has shown the user part of an answer, and a second answer would
// not continue it.
//
// The returned provider's Stream waits for the first chunk (or the end of
// an empty answer) before it returns, so every failure that can be retried
// happens inside it. Cancelling ctx stops the waits and the attempts; the
// context's error is returned.
func WithRetry(p Provider, policy RetryPolicy) Provider {
	return &retrying{p: p, policy: policy}
}

type retrying struct {
	p      Provider
	policy RetryPolicy
}

func (r *retrying) Name() string { return r.p.Name() }

func (r *retrying) Stream(ctx context.Context, cred Credential, req Request) (Stream, error) {
	for attempt := 1; ; attempt++ {
		s, first, err := r.attempt(ctx, cred, req)
		if err == nil {
			return &peeked{Stream: s, first: first}, nil
		}
		if ctx.Err() != nil {
			return nil, ctx.Err()
		}
		if attempt >= r.policy.MaxAttempts || !Retryable(err) {
			return nil, err
		}
		wait, ok := r.policy.wait(attempt, err)
		if !ok {
			return nil, err
		}
		t := time.NewTimer(wait)
		select {
		case <-t.C:
		case <-ctx.Done():
			t.Stop()
			return nil, ctx.Err()
		}
	}
}

// attempt starts a stream and reads its first chunk (or io.EOF).
func (r *retrying) attempt(ctx context.Context, cred Credential, req Request) (Stream, result, error) {
	s, err := r.p.Stream(ctx, cred, req)
	if err != nil {
		return nil, result{}, err
	}
	c, err := s.Next()
	if err != nil && !errors.Is(err, io.EOF) {
		s.Close()
		return nil, result{}, err
	}
	return s, result{chunk: c, err: err}, nil
}

// wait is how long to wait before attempt n+1, and whether to retry at all.
func (p RetryPolicy) wait(n int, err error) (time.Duration, bool) {
	var pe *Error
	if errors.As(err, &pe) && pe.RetryAfter > 0 {
		if p.MaxWait > 0 && pe.RetryAfter > p.MaxWait {
			return 0, false
		}
		return pe.RetryAfter, true
	}
	d := p.BaseDelay
	for i := 1; i < n && d < time.Hour; i++ {
		d *= 2
	}
	if p.MaxWait > 0 && d > p.MaxWait {
		d = p.MaxWait
	}
	if d <= 0 {
		return 0, true
	}
	// "Equal jitter": at least half the backoff, so retries do not bunch
	// up at zero, and up to all of it, so callers that failed together do
	// not retry together.
	return d/2 + rand.N(d/2+1), true
}

type result struct {
	chunk Chunk
	err   error // nil or io.EOF
}

// peeked replays the first chunk read while deciding whether to retry.
type peeked struct {
	Stream
	first    result
	replayed bool
}

func (s *peeked) Next() (Chunk, error) {
	if !s.replayed {
		s.replayed = true
		return s.first.chunk, s.first.err
	}
	return s.Stream.Next()
}
