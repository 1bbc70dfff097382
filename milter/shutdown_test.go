package milter

import (
	"context"
	"net"
	"net/netip"
	"strings"
	"testing"
	"time"

	"github.com/matryer/is"

	"github.com/smtp-interceptor/smtp-interceptor/rules"
)

// blockingDNS is a DNS list server whose query for one client waits
// until released: it keeps a milter callback busy.
type blockingDNS struct {
	ip      netip.Addr
	entered chan struct{}
	release chan struct{}
}

func (d *blockingDNS) Query(ctx context.Context, zone string, ip netip.Addr) (rules.DNSAnswer, error) {
	if ip == d.ip {
		close(d.entered)
		<-d.release
	}
	return rules.DNSAnswer{}, nil
}

// shutdownAsync calls Shutdown with a long deadline and returns its
// result channel.
func shutdownAsync(ts *testServer) chan error {
	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		defer cancel()
		shut <- ts.srv.Shutdown(ctx)
	}()
	return shut
}

// waitListenerClosed waits until the server accepts no more connections.
func waitListenerClosed(t *testing.T, ts *testServer) {
	waitFor(t, "the listener to close", func() bool {
		c, err := net.DialTimeout(ts.network, ts.addr, time.Second)
		if err == nil {
			c.Close()
		}
		return err != nil
	})
}

// Connections waiting for the MTA's next packet are closed at once, so
// Shutdown returns without waiting for their SMTP sessions to end (it
// used to wait out the whole drain timeout).
func TestShutdownClosesIdleConnections(t *testing.T) {
	is := is.New(t)
	ts := startMilter(t, "tcp", "")
	// An MTA between two SMTP commands (Postfix waiting for the client's
	// next command), through go-milter's client.
	m := ts.session(t, postfixMacros("192.0.2.1", "unknown"))
	is.Equal(m.connect("192.0.2.1", "unknown"), "")
	is.Equal(m.helo("x.example"), "")
	// The same at the byte level, and an MTA that has not negotiated yet.
	negotiated := ts.dialRaw(t)
	negotiated.negotiate()
	fresh := ts.dialRaw(t)
	waitFor(t, "three connections", func() bool { return ts.srv.guard.active() == 3 })

	shut := shutdownAsync(ts)
	is.True(negotiated.closedByServer())
	is.True(fresh.closedByServer())
	is.NoErr(<-shut) // all ended, long before the deadline
	is.True(strings.HasPrefix(m.mail("a@example.com"), "error: "))
	is.Equal(ts.srv.guard.active(), 0)
}

// A connection busy with a packet gets its reply, then ends; Shutdown
// waits for it.
func TestShutdownEndsBusyConnectionAfterReply(t *testing.T) {
	is := is.New(t)
	dns := &blockingDNS{ip: netip.MustParseAddr("192.0.2.99"), entered: make(chan struct{}), release: make(chan struct{})}
	ts := startMilterWith(t, "tcp", "[dns_blacklist]\nenabled = true\nsites = [\"bl.test\"]", serverSetup{dns: dns})
	m := ts.session(t, postfixMacros("192.0.2.99", "unknown"))
	connected := make(chan string, 1)
	go func() { connected <- m.connect("192.0.2.99", "unknown") }()
	<-dns.entered // the connect callback is busy in its DNS lookup

	shut := shutdownAsync(ts)
	waitListenerClosed(t, ts)
	select {
	case err := <-shut:
		t.Fatalf("Shutdown returned %v while a callback was busy", err)
	default:
	}
	close(dns.release)
	is.Equal(<-connected, "") // the current reply is given...
	is.NoErr(<-shut)          // ...then the connection ends
	is.True(strings.HasPrefix(m.helo("x.example"), "error: "))
}

// When ctx ends first, Shutdown closes what is left and says so.
func TestShutdownDeadline(t *testing.T) {
	is := is.New(t)
	dns := &blockingDNS{ip: netip.MustParseAddr("192.0.2.99"), entered: make(chan struct{}), release: make(chan struct{})}
	ts := startMilterWith(t, "tcp", "[dns_blacklist]\nenabled = true\nsites = [\"bl.test\"]", serverSetup{dns: dns})
	m := ts.session(t, postfixMacros("192.0.2.99", "unknown"))
	connected := make(chan string, 1)
	go func() { connected <- m.connect("192.0.2.99", "unknown") }()
	<-dns.entered
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	is.Equal(ts.srv.Shutdown(ctx), context.Canceled)
	is.True(strings.HasPrefix(<-connected, "error: ")) // closed under the busy callback
	close(dns.release)
}
