package milter

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net"
	"path/filepath"
	"testing"
	"time"

	gomilter "github.com/d--j/go-milter"
)

// BenchmarkSession runs whole milter sessions, go-milter's client playing
// Postfix (negotiate, connect, HELO, MAIL, RCPT, DATA, two headers, end
// of message, quit), through the guard as Serve runs it and, for
// comparison, straight into go-milter.
//
//	go test ./milter -run X -bench Session -benchmem
func BenchmarkSession(b *testing.B) {
	b.Run("guard", func(b *testing.B) {
		ts := startMilterWith(b, "unix", "", serverSetup{logOut: io.Discard, logLevel: slog.LevelError})
		benchSessions(b, ts)
	})
	b.Run("direct", func(b *testing.B) {
		ts := startMilterWith(b, "unix", "", serverSetup{logOut: io.Discard, logLevel: slog.LevelError})
		// A second listener, served by go-milter without the guard.
		addr := filepath.Join(b.TempDir(), "direct.sock")
		ln, err := net.Listen("unix", addr)
		if err != nil {
			b.Fatal(err)
		}
		direct := New(ts.engine, Options{Logger: slog.New(slog.DiscardHandler)})
		done := make(chan error, 1)
		go func() { done <- direct.srv.Serve(ln) }()
		b.Cleanup(func() {
			ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
			defer cancel()
			direct.Shutdown(ctx)
			if err := <-done; err != nil && !errors.Is(err, ErrServerClosed) {
				b.Errorf("Serve returned %v", err)
			}
		})
		benchSessions(b, &testServer{network: "unix", addr: addr})
	})
}

func benchSessions(b *testing.B, ts *testServer) {
	macros := postfixMacros("192.0.2.1", "mail.good.test")
	b.ReportAllocs()
	for b.Loop() {
		bag := gomilter.NewMacroBag()
		for k, v := range macros {
			bag.Set(k, v)
		}
		c := gomilter.NewClient(ts.network, ts.addr, gomilter.WithActions(gomilter.AllClientSupportedActionMasks))
		s, err := c.Session(bag)
		if err != nil {
			b.Fatal(err)
		}
		m := &mta{t: b, s: s, macros: bag}
		if r := m.connect("192.0.2.1", "mail.good.test") + m.helo("mail.good.test") + m.mail("a@good.test") +
			m.rcpt("b@domino.test") + m.data(); r != "" {
			b.Fatal(r)
		}
		if res, _ := m.message([2]string{"Subject", "hi"}, [2]string{"From", "a@good.test"}); res != "" {
			b.Fatal(res)
		}
		s.Close()
	}
}
