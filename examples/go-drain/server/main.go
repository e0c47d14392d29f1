// A server that drains on SIGTERM within a budget: the application's half of a
// safe termination. The other half is the preStop sleep safe-termination
// injects: by the time the kubelet sends SIGTERM, the pod has left the Service's
// endpoints and its conntrack entries have had time to expire, so the server can
// stop taking connections at once and finish what it has.
//
//	server -addr 127.0.0.1:8080 -shutdown-budget 20s
//
// HTTP on addr: GET /work?ms=N answers "done" after N ms; GET /healthz is 200
// until SIGTERM, then 503. UDP on the same port answers each datagram with
// "pong <client address>". On SIGTERM: readiness off; listener closed (new
// connections are refused); idle keep-alive connections closed, busy ones closed
// after their answer; in-flight requests finish; exit 0. Past the budget
// (set it a little under terminationGracePeriodSeconds minus the sleep, and
// annotate safe-termination.io/shutdown-budget with it) the remaining
// connections are cut and it exits 1, before the kubelet's SIGKILL would.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"log"
	"net"
	"net/http"
	"os"
	"os/signal"
	"strconv"
	"sync/atomic"
	"syscall"
	"time"
)

func main() {
	addr := flag.String("addr", "127.0.0.1:8080", "TCP (HTTP) and UDP address; port 0 picks one")
	budget := flag.Duration("shutdown-budget", 20*time.Second, "the most time draining may take after SIGTERM")
	flag.Parse()
	log.SetFlags(log.Lmicroseconds)

	// Before anything else: a SIGTERM during start-up must not kill the process mid-way.
	sigterm := make(chan os.Signal, 1)
	signal.Notify(sigterm, syscall.SIGTERM, syscall.SIGINT)

	ln, err := net.Listen("tcp", *addr)
	if err != nil {
		log.Fatal(err)
	}
	udp, err := net.ListenPacket("udp", ln.Addr().String())
	if err != nil {
		log.Fatal(err)
	}

	var ready atomic.Bool
	ready.Store(true)
	var inFlight atomic.Int64
	mux := http.NewServeMux()
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		if !ready.Load() {
			http.Error(w, "draining", http.StatusServiceUnavailable)
			return
		}
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /work", func(w http.ResponseWriter, r *http.Request) {
		inFlight.Add(1)
		defer inFlight.Add(-1)
		ms, _ := strconv.Atoi(r.URL.Query().Get("ms"))
		select {
		case <-time.After(time.Duration(ms) * time.Millisecond):
			fmt.Fprintln(w, "done")
		case <-r.Context().Done(): // the client went away, or the budget ran out
		}
	})
	srv := &http.Server{Handler: mux, ReadHeaderTimeout: 5 * time.Second, IdleTimeout: 60 * time.Second}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()
	go answerUDP(udp)
	fmt.Printf("listening %s\n", ln.Addr()) // the line the tests wait for

	select {
	case <-sigterm:
	case err := <-served:
		log.Fatal(err)
	}
	log.Printf("SIGTERM: draining %d requests, budget %v", inFlight.Load(), *budget)
	ready.Store(false)
	ctx, cancel := context.WithTimeout(context.Background(), *budget)
	defer cancel()
	// Shutdown closes the listener at once and returns when every connection is
	// idle and closed. Serve returns ErrServerClosed immediately: main must wait
	// for Shutdown, not for Serve, or in-flight requests die with the process.
	err = srv.Shutdown(ctx)
	udp.Close()
	if errors.Is(err, context.DeadlineExceeded) {
		log.Printf("shutdown budget %v exceeded: cutting %d requests", *budget, inFlight.Load())
		srv.Close()
		os.Exit(1)
	}
	log.Printf("drained")
}

// answerUDP answers until the socket is closed.
func answerUDP(c net.PacketConn) {
	buf := make([]byte, 1500)
	for {
		_, from, err := c.ReadFrom(buf)
		if err != nil {
			return
		}
		_, _ = c.WriteTo([]byte("pong "+from.String()), from)
	}
}
