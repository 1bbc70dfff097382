package policy

import (
	"bufio"
	"fmt"
	"net"
	"strings"
	"sync/atomic"
	"testing"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// BenchmarkServer measures whole request round trips over loopback TCP,
// the client in the same process, with a 100,000-entry private blacklist
// hit by one client in ten. Compare with BenchmarkNullServer, which reads
// each request with the same parser and answers DUNNO.
func BenchmarkServer(b *testing.B) {
	var hosts strings.Builder
	hosts.WriteString("[private_blacklist]\nenabled = true\naction = \"reject\"\nhosts = [\"203.0.113.0/24\"")
	for i := range 100_000 {
		fmt.Fprintf(&hosts, ", \"10.%d.%d.0/24\"", i>>8&255, i&255)
	}
	hosts.WriteString("]\n[helo]\ndeny = [\"*.dynamic.example\"]\n[mail_from]\ndeny = [\"@spam.example\"]\n[recipients]\ndeny = [\"nobody@domino.test\"]\n")
	cfg, err := rules.Parse("", hosts.String())
	if err != nil {
		b.Fatal(err)
	}
	srv := New(rules.NewEngine(cfg, rules.EngineOptions{}), Options{})
	benchRoundTrips(b, func(ln net.Listener) { srv.Serve(ln) })
}

// BenchmarkNullServer is the floor: parse, answer DUNNO.
func BenchmarkNullServer(b *testing.B) {
	benchRoundTrips(b, func(ln net.Listener) {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer c.Close()
				r := bufio.NewReaderSize(c, MaxLineBytes)
				w := bufio.NewWriter(c)
				var req Request
				for ReadRequest(r, &req) == nil {
					w.WriteString("action=DUNNO\n\n")
					if w.Flush() != nil {
						return
					}
				}
			}()
		}
	})
}

func benchRoundTrips(b *testing.B, serve func(net.Listener)) {
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		b.Fatal(err)
	}
	defer ln.Close()
	go serve(ln)
	var seq atomic.Int64
	b.ReportAllocs()
	b.ResetTimer()
	b.SetParallelism(8) // 16 connections on 2 cores
	b.RunParallel(func(pb *testing.PB) {
		c, err := net.Dial("tcp", ln.Addr().String())
		if err != nil {
			b.Error(err)
			return
		}
		defer c.Close()
		r := bufio.NewReader(c)
		for pb.Next() {
			n := seq.Add(1)
			ip := fmt.Sprintf("198.18.%d.%d", n>>8&255, n&255)
			if n%10 == 0 {
				ip = fmt.Sprintf("203.0.113.%d", n&255)
			}
			fmt.Fprintf(c, "request=smtpd_access_policy\nprotocol_state=RCPT\nprotocol_name=ESMTP\nclient_address=%s\nclient_name=unknown\nhelo_name=mail.example.net\nsender=user%d@example.com\nrecipient=user@domino.test\ninstance=%d\n\n", ip, n%5000, n)
			if _, err := r.ReadString('\n'); err != nil {
				b.Error(err)
				return
			}
			r.ReadString('\n')
		}
	})
}

// BenchmarkReadRequest measures the parser alone on a typical RCPT
// request, repeated as a persistent connection sends it.
func BenchmarkReadRequest(b *testing.B) {
	one := rcpt("192.0.2.1", "bench.1", "b@domino.test") + "\n\n"
	src := strings.NewReader(one)
	r := bufio.NewReaderSize(src, MaxLineBytes)
	var req Request
	b.ReportAllocs()
	b.SetBytes(int64(len(one)))
	for b.Loop() {
		src.Reset(one)
		r.Reset(src)
		if err := ReadRequest(r, &req); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkReadRequestServerBuffer is BenchmarkReadRequest with the
// server's own read buffer (readBufferBytes), on the typical request and
// on one with a recipient longer than the buffer, which ReadRequest
// gathers from several reads.
func BenchmarkReadRequestServerBuffer(b *testing.B) {
	for _, tt := range []struct{ name, recipient string }{
		{"typical", "b@domino.test"},
		{"long-line", strings.Repeat("b", 3000) + "@domino.test"},
	} {
		b.Run(tt.name, func(b *testing.B) {
			one := rcpt("192.0.2.1", "bench.1", tt.recipient) + "\n\n"
			src := strings.NewReader(one)
			r := bufio.NewReaderSize(src, readBufferBytes)
			var req Request
			b.ReportAllocs()
			b.SetBytes(int64(len(one)))
			for b.Loop() {
				src.Reset(one)
				r.Reset(src)
				if err := ReadRequest(r, &req); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
