package policy

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

// longReply is a configuration whose refusals carry a long text, so that
// a client that does not read fills its buffers in fewer requests.
const longReply = "[blacklist]\nhosts = [\"192.0.2.66\"]\nmessage = \"" +
	"Refused by policy; this text is long so that unread replies fill the socket buffers in fewer requests, " +
	"and it goes on a little while longer, to well over two hundred bytes for each reply written\"\n"

// stopReading pipelines requests on c without reading a reply until a
// write has been blocked for 200 ms, and reports true: the server then
// has stopped reading, blocked writing a reply that c does not read. It
// reports false if the server closed the connection first.
func stopReading(t *testing.T, c net.Conn) (blocked bool) {
	t.Helper()
	one := []byte(rcpt("192.0.2.66", "", "b@domino.test") + "\n\n")
	deadline := time.Now().Add(20 * time.Second)
	for time.Now().Before(deadline) {
		c.SetWriteDeadline(time.Now().Add(200 * time.Millisecond))
		_, err := c.Write(one)
		switch ne, ok := errors.AsType[net.Error](err); {
		case err == nil:
		case ok && ne.Timeout():
			return true
		case errors.Is(err, syscall.EPIPE), errors.Is(err, syscall.ECONNRESET):
			return false
		default:
			t.Fatalf("write: %v", err)
		}
	}
	t.Fatal("the server kept reading requests whose replies were not read")
	return false
}

// serverClosed reports whether the server closed c: reading what it sent
// ends in an error other than c's own deadline.
func serverClosed(c net.Conn) bool {
	c.SetReadDeadline(time.Now().Add(10 * time.Second))
	buf := make([]byte, 64<<10)
	for {
		if _, err := c.Read(buf); err != nil {
			ne, ok := errors.AsType[net.Error](err)
			return !ok || !ne.Timeout()
		}
	}
}

// A client that sends requests and never reads the replies is closed when
// a reply has waited WriteTimeout: it cannot hold its connection.
func TestWriteTimeout(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			is := is.New(t)
			var logs testutil.SyncBuffer
			ts := startServerWith(t, network, longReply, Options{WriteTimeout: 50 * time.Millisecond,
				Logger: slog.New(slog.NewTextHandler(&logs, nil))})
			good := ts.dial(t)
			stuck := ts.dial(t)
			stopReading(t, stuck.c) // blocked, or already closed
			waitFor(t, "the stuck connection to be closed", func() bool {
				ts.srv.mu.Lock()
				defer ts.srv.mu.Unlock()
				return len(ts.srv.conns) == 1 // the good one is left
			})
			is.True(serverClosed(stuck.c))
			is.True(strings.Contains(logs.String(), `level=WARN msg="policy client does not read its replies; closing connection"`))
			got, err := good.send(rcpt("192.0.2.1", "w.1", "b@domino.test"))
			is.NoErr(err)
			is.Equal(got, "DUNNO") // the others are served on
		})
	}
}

func TestWriteTimeoutDefault(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "")
	is.Equal(ts.srv.writeTimeout, 10*time.Second)
}

// Shutdown does not wait WriteTimeout for a reply its client does not
// read: the connection is closed within shutdownWriteGrace and Shutdown
// returns without needing its context to expire.
func TestShutdownClosesBlockedWrites(t *testing.T) {
	for _, network := range []string{"tcp", "unix"} {
		t.Run(network, func(t *testing.T) {
			is := is.New(t)
			ts := startServerWith(t, network, longReply, Options{WriteTimeout: time.Hour})
			stuck := ts.dial(t)
			is.True(stopReading(t, stuck.c)) // the server is blocked writing
			idle := ts.dial(t)
			got, err := idle.send(rcpt("192.0.2.1", "s.1", "b@domino.test"))
			is.NoErr(err)
			is.Equal(got, "DUNNO")

			shut := make(chan error, 1)
			go func() { shut <- ts.srv.Shutdown(context.Background()) }() // no deadline of its own
			select {
			case err := <-shut:
				is.NoErr(err)
			case <-time.After(20 * time.Second):
				t.Fatal("Shutdown waited on a client that does not read")
			}
			is.True(serverClosed(stuck.c))
			is.True(serverClosed(idle.c))
		})
	}
}
