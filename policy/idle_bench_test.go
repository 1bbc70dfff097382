package policy

import (
	"bufio"
	"bytes"
	"context"
	"net"
	"runtime"
	"testing"
	"time"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// BenchmarkIdleConnections opens 1,000 policy connections to an
// in-process server and reports what each costs while it waits for a
// request: heap-B/conn (live heap after GC, runtime.MemStats.HeapAlloc)
// and stack-B/conn (goroutine stacks, StackInuse). "fresh" connections
// have sent nothing yet; "after-request" ones were answered once and wait
// for the next request, as Postfix's persistent connections do. The
// client ends live in the same process: their net.Conn values (a few
// hundred bytes) are in heap-B/conn too, their test reader is not.
//
// Issue 11 measured 5,000 idle connections at 329 MiB of heap, 64 KiB of
// read buffer each; the server now reads through readBufferBytes and
// takes its write buffer from a pool only to write a reply.
func BenchmarkIdleConnections(b *testing.B) {
	const conns = 1000
	for _, tt := range []struct {
		name    string
		request bool
	}{
		{"fresh", false},
		{"after-request", true},
	} {
		b.Run(tt.name, func(b *testing.B) {
			for b.Loop() {
				heap, stack := idleCost(b, conns, tt.request)
				b.ReportMetric(heap, "heap-B/conn")
				b.ReportMetric(stack, "stack-B/conn")
			}
		})
	}
}

// idleCost returns the heap and stack bytes per idle connection.
func idleCost(b *testing.B, n int, request bool) (heap, stack float64) {
	b.Helper()
	cfg, err := rules.Parse("", "")
	if err != nil {
		b.Fatal(err)
	}
	srv := New(rules.NewEngine(cfg, rules.EngineOptions{}), Options{})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	go srv.Serve(ln)
	defer shutdownNow(srv)
	dump := make([]byte, 64<<20) // for the goroutine dump, allocated before the baseline
	before := memAfterGC()
	clients := make([]*client, 0, n)
	defer func() {
		for _, c := range clients {
			c.c.Close()
		}
	}()
	for i := range n {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Fatal(err)
		}
		cl := &client{c: c}
		clients = append(clients, cl)
		if request {
			cl.r = newClientReader(c)
			if got, err := cl.send(rcpt("192.0.2.1", "", "b@domino.test")); err != nil || got != "DUNNO" {
				b.Fatalf("conn %d: %q, %v", i, got, err)
			}
		}
	}
	waitIdleReaders(b, dump, n)
	after := memAfterGC()
	clientBytes := 0.0
	if request {
		clientBytes = 4096 // the test client's own bufio.Reader, on the same heap
	}
	heap = float64(after.HeapAlloc-before.HeapAlloc)/float64(n) - clientBytes
	stack = float64(after.StackInuse-before.StackInuse) / float64(n)
	runtime.KeepAlive(dump)
	return heap, stack
}

func memAfterGC() runtime.MemStats {
	runtime.GC()
	runtime.GC()
	var m runtime.MemStats
	runtime.ReadMemStats(&m)
	return m
}

// waitIdleReaders waits until n connection goroutines are blocked reading
// from the network.
func waitIdleReaders(b *testing.B, dump []byte, n int) {
	b.Helper()
	deadline := time.Now().Add(20 * time.Second)
	for {
		all := dump[:runtime.Stack(dump, true)]
		blocked := 0
		for g := range bytes.SplitSeq(all, []byte("\n\n")) {
			if bytes.Contains(g, []byte("[IO wait")) && bytes.Contains(g, []byte("policy.(*conn).serve")) {
				blocked++
			}
		}
		if blocked >= n {
			return
		}
		if time.Now().After(deadline) {
			b.Fatalf("only %d of %d connections reached their read", blocked, n)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func newClientReader(c net.Conn) *bufio.Reader { return bufio.NewReaderSize(c, 4096) }

// shutdownNow stops srv, closing what is left at once.
func shutdownNow(srv *Server) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	srv.Shutdown(ctx)
}
