// Package retry retries idempotent calls with capped exponential backoff and
// jitter, within an overall deadline: what a client of a Service needs while
// pods come and go (a stale conntrack entry, a pod that just left, a rolling
// restart). Standard library only.
package retry

import (
	"context"
	"errors"
	"io"
	"math/rand/v2"
	"net"
	"os"
	"syscall"
	"time"
)

// Policy bounds the retries: Attempts tries in all, waits from Base doubling up
// to Max (each a random value between half and all of it: jitter keeps many
// clients from retrying in step).
type Policy struct {
	Attempts int
	Base     time.Duration
	Max      time.Duration
}

// Default: 5 tries, 50ms, 100ms, 200ms, 400ms apart at most.
var Default = Policy{Attempts: 5, Base: 50 * time.Millisecond, Max: time.Second}

// Backoff is the wait before try n+1 (n ≥ 1).
func (p Policy) Backoff(n int) time.Duration {
	d := p.Base << (n - 1)
	if d > p.Max || d <= 0 {
		d = p.Max
	}
	return d/2 + rand.N(d/2+1)
}

// Retryable reports whether an error is one a Service's churn causes and a new
// connection can cure: refused (the pod's port is closed), reset (it went away
// mid-connection), host/network unreachable (its IP is gone), a timeout (packets
// blackholed by a stale entry to a deleted pod), or a connection closed before
// the answer. The write-up retried "connection refused" only: stale entries
// mostly show as timeouts and resets.
func Retryable(err error) bool {
	if err == nil {
		return false
	}
	for _, errno := range []syscall.Errno{syscall.ECONNREFUSED, syscall.ECONNRESET, syscall.EHOSTUNREACH, syscall.ENETUNREACH, syscall.EPIPE} {
		if errors.Is(err, errno) {
			return true
		}
	}
	if errors.Is(err, io.EOF) || errors.Is(err, io.ErrUnexpectedEOF) || errors.Is(err, os.ErrDeadlineExceeded) || errors.Is(err, context.DeadlineExceeded) {
		return true
	}
	var ne net.Error
	return errors.As(err, &ne) && ne.Timeout()
}

// Do calls try until it succeeds, returns an error Retryable refuses, the
// attempts run out or ctx ends. Only for idempotent calls: a retried POST may
// run twice. try gets the attempt number (1, 2, …), e.g. to open a new
// connection after a failure rather than reuse a pooled one.
func Do(ctx context.Context, p Policy, try func(ctx context.Context, attempt int) error) error {
	var err error
	for attempt := 1; attempt <= p.Attempts; attempt++ {
		if err = try(ctx, attempt); err == nil || !Retryable(err) {
			return err
		}
		if attempt == p.Attempts {
			break
		}
		select {
		case <-ctx.Done():
			return errors.Join(err, ctx.Err())
		case <-time.After(p.Backoff(attempt)):
		}
	}
	return err
}
