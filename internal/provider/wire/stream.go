package wire

import (
	"context"
	"errors"
	"io"
	"sync"
	"sync/atomic"

	"polydev/internal/provider"
)

// Pull reads the next chunk from an adapter's upstream stream: a chunk, or
// io.EOF at the end of a complete answer, or an error (any error; Stream
// puts the caller's context error first).
type Pull func() (provider.Chunk, error)

// Stream is the provider.Stream every adapter returns. It owns the
// request's cancel function: Close cancels it, which aborts the upstream
// HTTP request, and then releases the body.
type Stream struct {
	ctx     context.Context // the caller's
	cancel  context.CancelFunc
	pull    Pull
	release func() error

	err       error // sticky; only touched by Next, which is not called concurrently
	closed    atomic.Bool
	closeOnce sync.Once
}

var _ provider.Stream = (*Stream)(nil)

// NewStream wraps an adapter's pull function. ctx is the caller's context,
// cancel cancels the context the upstream request runs under (a child of
// ctx), and release closes the upstream body (it may be nil).
func NewStream(ctx context.Context, cancel context.CancelFunc, pull Pull, release func() error) *Stream {
	return &Stream{ctx: ctx, cancel: cancel, pull: pull, release: release}
}

// Next returns the next chunk, io.EOF after a complete answer, or the
// error that ended the stream: the caller's context error when it was
// cancelled or ran out, provider.ErrStreamClosed after Close, or the
// adapter's error. After an error it keeps returning that error.
func (s *Stream) Next() (provider.Chunk, error) {
	if s.err != nil {
		return provider.Chunk{}, s.err
	}
	if s.closed.Load() {
		s.err = provider.ErrStreamClosed
		return provider.Chunk{}, s.err
	}
	c, err := s.pull()
	if err == nil {
		return c, nil
	}
	switch {
	case s.closed.Load():
		err = provider.ErrStreamClosed
	case s.ctx.Err() != nil && !errors.Is(err, io.EOF):
		// The upstream failure is a consequence of the caller leaving.
		err = s.ctx.Err()
	}
	s.err = err
	s.Close()
	return provider.Chunk{}, err
}

// Close aborts the upstream request if it is still running and releases
// the connection. It is safe to call at any time, from any goroutine, and
// more than once.
func (s *Stream) Close() error {
	s.closeOnce.Do(func() {
		s.closed.Store(true)
		s.cancel()
		if s.release != nil {
			_ = s.release() // a body closed early reports nothing worth acting on
		}
	})
	return nil
}
