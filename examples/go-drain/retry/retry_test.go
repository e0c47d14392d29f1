package retry

import (
	"context"
	"errors"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"sync/atomic"
	"syscall"
	"testing"
	"time"
)

func TestRetryableErrors(t *testing.T) {
	for _, err := range []error{
		syscall.ECONNREFUSED,
		fmt.Errorf("dial: %w", syscall.ECONNRESET),
		&net.OpError{Op: "read", Err: syscall.EHOSTUNREACH},
		context.DeadlineExceeded,
	} {
		if !Retryable(err) {
			t.Errorf("%v: want retryable", err)
		}
	}
	for _, err := range []error{nil, errors.New("HTTP 400"), syscall.EACCES} {
		if Retryable(err) {
			t.Errorf("%v: want not retryable", err)
		}
	}
}

func TestBackoffGrowsWithJitterUpToMax(t *testing.T) {
	p := Policy{Attempts: 10, Base: 100 * time.Millisecond, Max: 400 * time.Millisecond}
	for n, max := range map[int]time.Duration{1: 100 * time.Millisecond, 2: 200 * time.Millisecond, 3: 400 * time.Millisecond, 8: 400 * time.Millisecond} {
		for i := 0; i < 50; i++ {
			if d := p.Backoff(n); d < max/2 || d > max {
				t.Fatalf("Backoff(%d) = %v, want in [%v, %v]", n, d, max/2, max)
			}
		}
	}
}

func TestDoRetriesRefusedUntilTheServerIsBack(t *testing.T) {
	// A port nobody listens on yet: connection refused, then a server on it.
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	addr := ln.Addr().String()
	ln.Close()
	var tries atomic.Int32
	go func() {
		time.Sleep(150 * time.Millisecond)
		ln2, err := net.Listen("tcp", addr)
		if err != nil {
			return
		}
		srv := httptest.NewUnstartedServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { fmt.Fprint(w, "ok") }))
		srv.Listener = ln2
		srv.Start()
		t.Cleanup(srv.Close)
	}()
	client := &http.Client{Timeout: time.Second}
	err = Do(context.Background(), Policy{Attempts: 8, Base: 50 * time.Millisecond, Max: 200 * time.Millisecond}, func(ctx context.Context, attempt int) error {
		tries.Add(1)
		resp, err := client.Get("http://" + addr + "/")
		if err != nil {
			return err
		}
		resp.Body.Close()
		return nil
	})
	if err != nil {
		t.Fatalf("Do: %v after %d tries", err, tries.Load())
	}
	if tries.Load() < 2 {
		t.Fatalf("tries = %d, want a refused one first", tries.Load())
	}
}

func TestDoStopsOnAnErrorRetryingCannotCure(t *testing.T) {
	n := 0
	err := Do(context.Background(), Default, func(context.Context, int) error { n++; return errors.New("HTTP 404") })
	if err == nil || n != 1 {
		t.Fatalf("err %v after %d tries, want one try", err, n)
	}
	n = 0
	err = Do(context.Background(), Policy{Attempts: 3, Base: time.Millisecond, Max: time.Millisecond}, func(context.Context, int) error { n++; return syscall.ECONNREFUSED })
	if !errors.Is(err, syscall.ECONNREFUSED) || n != 3 {
		t.Fatalf("err %v after %d tries, want 3 refused", err, n)
	}
}
