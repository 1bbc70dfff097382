package main

import (
	"bufio"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"time"

	gomilter "github.com/d--j/go-milter"

	"github.com/smtp-interceptor/smtp-interceptor/internal/listen"
	"github.com/smtp-interceptor/smtp-interceptor/milter"
	"github.com/smtp-interceptor/smtp-interceptor/policy"
)

// runBenchNull serves a do-nothing policy server or milter: the floor any
// server can reach on this machine, for side-by-side measurements.
func runBenchNull(ctx context.Context, kind string, args []string, stdout, stderr io.Writer) int {
	fs := flag.NewFlagSet("bench "+kind, flag.ContinueOnError)
	def := "127.0.0.1:20060"
	if kind == "null-milter" {
		def = "127.0.0.1:20061"
	}
	addr := fs.String("listen", def, "`address` to listen on: host:port or unix:/path")
	if code, done := parseFlags(fs, "smtp-interceptor bench "+kind+" [--listen A]", args, stdout, stderr); done {
		return code
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "bench %s: unexpected argument %q\n", kind, fs.Arg(0))
		return exitUsage
	}
	ln, err := listen.Listen(*addr, 0o660)
	if err != nil {
		fmt.Fprintf(stderr, "bench %s: %v\n", kind, err)
		return exitFail
	}
	fmt.Fprintf(stdout, "%s listening on %s\n", kind, ln.Addr())
	if kind == "null-policy" {
		return serveNullPolicy(ctx, ln)
	}
	return serveNullMilter(ctx, ln, stderr)
}

// serveNullPolicy reads each request with the real parser and answers
// DUNNO, nothing else.
func serveNullPolicy(ctx context.Context, ln net.Listener) int {
	go func() { <-ctx.Done(); ln.Close() }()
	for {
		c, err := ln.Accept()
		if err != nil {
			return exitOK
		}
		go func() {
			defer c.Close()
			r := bufio.NewReaderSize(c, policy.MaxLineBytes)
			w := bufio.NewWriter(c)
			var req policy.Request
			for policy.ReadRequest(r, &req) == nil {
				w.WriteString("action=DUNNO\n\n")
				if w.Flush() != nil {
					return
				}
			}
		}()
	}
}

// serveNullMilter serves go-milter's NoOpMilter with the negotiation the
// real milter uses.
func serveNullMilter(ctx context.Context, ln net.Listener, stderr io.Writer) int {
	srv := gomilter.NewServer(append(milter.NegotiationOptions(time.Minute),
		gomilter.WithMilter(func() gomilter.Milter { return gomilter.NoOpMilter{} }))...)
	go func() {
		<-ctx.Done()
		sctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
		defer cancel()
		srv.Shutdown(sctx)
	}()
	if err := srv.Serve(ln); err != nil && !errors.Is(err, gomilter.ErrServerClosed) {
		fmt.Fprintf(stderr, "bench null-milter: %v\n", err)
		return exitFail
	}
	return exitOK
}
