// A client that rides out pods coming and going behind a Service: idempotent
// calls retried with backoff on the errors churn causes, a fresh connection after
// a failure, and a short-lived UDP socket per lookup.
//
//	client -url http://svc/work?ms=10 -udp svc:8080 -n 20 -interval 50ms
//
// One JSON line per call on stdout; exit 1 if any call failed for good.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"safe-termination.example/go-drain/retry"
)

type result struct {
	Call     int    `json:"call"`
	Kind     string `json:"kind"`
	OK       bool   `json:"ok"`
	Attempts int    `json:"attempts"`
	Error    string `json:"error,omitempty"`
	// UDP: the local port of the lookup's socket (a new one each time).
	LocalPort int `json:"localPort,omitempty"`
}

func main() {
	url := flag.String("url", "", "an idempotent GET to call (HTTP)")
	udpAddr := flag.String("udp", "", "a UDP address to send lookups to")
	n := flag.Int("n", 10, "calls of each kind")
	interval := flag.Duration("interval", 50*time.Millisecond, "pause between calls")
	timeout := flag.Duration("timeout", 2*time.Second, "per attempt")
	attempts := flag.Int("attempts", retry.Default.Attempts, "tries per call")
	flag.Parse()
	policy := retry.Default
	policy.Attempts = *attempts

	// One pooled client (keep-alive) for the normal case; after a failed attempt
	// its idle connections are dropped so the retry opens a new one: a new source
	// port, so a new conntrack entry and a fresh choice of pod.
	transport := http.DefaultTransport.(*http.Transport).Clone()
	client := &http.Client{Transport: transport, Timeout: *timeout}
	enc := json.NewEncoder(os.Stdout)
	failed := false
	for i := 1; i <= *n; i++ {
		if *url != "" {
			r := result{Call: i, Kind: "http"}
			err := retry.Do(context.Background(), policy, func(ctx context.Context, attempt int) error {
				r.Attempts = attempt
				if attempt > 1 {
					transport.CloseIdleConnections()
				}
				return get(ctx, client, *url)
			})
			r.OK, r.Error = err == nil, errText(err)
			failed = failed || err != nil
			_ = enc.Encode(r)
		}
		if *udpAddr != "" {
			r := result{Call: i, Kind: "udp"}
			err := retry.Do(context.Background(), policy, func(ctx context.Context, attempt int) error {
				r.Attempts = attempt
				port, err := lookup(*udpAddr, *timeout)
				r.LocalPort = port
				return err
			})
			r.OK, r.Error = err == nil, errText(err)
			failed = failed || err != nil
			_ = enc.Encode(r)
		}
		time.Sleep(*interval)
	}
	if failed {
		os.Exit(1)
	}
}

func get(ctx context.Context, c *http.Client, url string) error {
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := c.Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	_, err = io.Copy(io.Discard, resp.Body) // read to the end, or the connection cannot be reused
	if err != nil {
		return err
	}
	if resp.StatusCode == http.StatusServiceUnavailable || resp.StatusCode == http.StatusBadGateway {
		return fmt.Errorf("HTTP %d: %w", resp.StatusCode, io.ErrUnexpectedEOF) // a draining or missing backend: retry
	}
	if resp.StatusCode != http.StatusOK {
		return fmt.Errorf("HTTP %d", resp.StatusCode) // the answer itself: retrying will not change it
	}
	return nil
}

// lookup sends one datagram from a new socket and waits for the answer. The
// socket lives for this lookup only: a long-lived one keeps its conntrack entry
// alive (each packet refreshes it) and with it a pod that may be gone.
func lookup(addr string, timeout time.Duration) (int, error) {
	c, err := net.Dial("udp", addr)
	if err != nil {
		return 0, err
	}
	defer c.Close()
	port := c.LocalAddr().(*net.UDPAddr).Port
	_ = c.SetDeadline(time.Now().Add(timeout))
	if _, err := c.Write([]byte("ping")); err != nil {
		return port, err
	}
	buf := make([]byte, 512)
	n, err := c.Read(buf)
	if err != nil {
		return port, err
	}
	if !strings.HasPrefix(string(buf[:n]), "pong ") {
		return port, errors.New("unexpected answer")
	}
	return port, nil
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return err.Error()
}
