package policy

import (
	"bufio"
	"context"
	"errors"
	"fmt"
	"net"
	"net/netip"
	"os"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/matryer/is"
	"github.com/smtp-interceptor/smtp-interceptor/rules"

	"github.com/smtp-interceptor/smtp-interceptor/internal/testutil"
)

var waitFor = testutil.WaitFor

func TestBadInput(t *testing.T) {
	long := "request=smtpd_access_policy\nx=" + strings.Repeat("a", MaxLineBytes) + "\n\n"
	var big strings.Builder
	big.WriteString("request=smtpd_access_policy\n")
	for big.Len() <= MaxRequestBytes {
		big.WriteString("filler=" + strings.Repeat("b", 60_000) + "\n") // few attributes, long lines
	}
	big.WriteString("\n")
	var many strings.Builder
	many.WriteString("request=smtpd_access_policy\n")
	for i := 0; i < MaxAttributes+1; i++ {
		fmt.Fprintf(&many, "a%d=1\n", i)
	}
	many.WriteString("\n")
	tests := []struct {
		name   string
		data   string
		half   bool   // close the write side after sending
		reason string // given to OnBadRequest
	}{
		{"line over 64 KiB", long, false, ReasonLineTooLong},
		{"request over 1 MiB", big.String(), false, ReasonRequestTooLong},
		{"more than 1000 attributes", many.String(), false, ReasonTooManyAttributes},
		{"no request attribute", "protocol_state=RCPT\nclient_address=192.0.2.1\n\n", false, ReasonNoRequest},
		{"wrong request", "request=junk\n\n", false, ReasonWrongRequest},
		{"binary junk", "\x00\x01\x02\xff\xfe\n\n", false, ReasonNUL},
		{"NUL in a value", "request=smtpd_access_policy\nsender=a\x00b\n\n", false, ReasonNUL},
		{"not name=value", "request=smtpd_access_policy\nsender\n\n", false, ReasonNotNameValue},
		{"no name", "request=smtpd_access_policy\n=a@example.com\n\n", false, ReasonNotNameValue},
		{"client stops half-way", "request=smtpd_access_policy\nprotocol_state=RCPT\n", true, ReasonTruncated},
	}
	var mu sync.Mutex
	var reasons []string
	ts := startServerWith(t, "tcp", "", Options{OnBadRequest: func(reason string) {
		mu.Lock()
		reasons = append(reasons, reason)
		mu.Unlock()
	}})
	other := ts.dial(t) // a well-behaved client that must keep being served
	for i, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			is := is.New(t)
			c := ts.dial(t)
			c.c.SetDeadline(time.Now().Add(10 * time.Second))
			go func() {
				c.c.Write([]byte(tt.data))
				if tt.half {
					c.c.(*net.TCPConn).CloseWrite()
				}
			}()
			_, err := c.readReply()
			is.True(err != nil) // no reply: the connection is closed
			waitFor(t, "the bad request hook", func() bool { mu.Lock(); defer mu.Unlock(); return len(reasons) == i+1 })
			mu.Lock()
			reason := reasons[i]
			mu.Unlock()
			is.Equal(reason, tt.reason) // counted once, for its reason, without client data
			got, err := other.send(rcpt("192.0.2.1", "other-"+tt.name, "b@domino.test"))
			is.NoErr(err)
			is.Equal(got, "DUNNO") // everyone else is still served
		})
	}
}

func TestManyRequestsOnOneConnection(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "[blacklist]\nhosts = [\"192.0.2.66\"]")
	c := ts.dial(t)
	for i := range 500 {
		ip, want := "192.0.2.1", "DUNNO"
		if i%5 == 0 {
			ip, want = "192.0.2.66", "550 5.7.1 Connection denied based on policy reason"
		}
		got, err := c.send(rcpt(ip, fmt.Sprintf("m.%d", i), "b@domino.test"))
		is.NoErr(err)
		is.Equal(got, want)
	}
}

func TestPipelinedRequests(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "")
	c := ts.dial(t)
	c.c.SetDeadline(time.Now().Add(10 * time.Second))
	var all strings.Builder
	for i := range 20 {
		all.WriteString(rcpt("192.0.2.1", fmt.Sprintf("p.%d", i), "b@domino.test") + "\n\n")
	}
	_, err := c.c.Write([]byte(all.String()))
	is.NoErr(err)
	for range 20 {
		got, err := c.readReply()
		is.NoErr(err)
		is.Equal(got, "DUNNO")
	}
}

func TestConcurrentConnectionsAndNoLeaks(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "[private_blacklist]\nenabled = true\nhosts = [\"203.0.113.0/24\"]\naction = \"tag\"")
	base := runtime.NumGoroutine()
	const conns = 1000
	var wg sync.WaitGroup
	errs := make(chan error, conns)
	clients := make([]*client, conns)
	for i := range clients {
		clients[i] = ts.dial(t)
	}
	for i, c := range clients {
		wg.Go(func() {
			for j := range 3 {
				want := "DUNNO"
				ip := "192.0.2.1"
				if i%2 == 0 {
					ip = "203.0.113.7"
					if j == 0 {
						want = "PREPEND X-DNSBL-Site: PrivateBlacklist"
					}
				}
				got, err := c.send(rcpt(ip, fmt.Sprintf("c%d", i), fmt.Sprintf("%d@domino.test", j)))
				if err != nil || got != want {
					errs <- fmt.Errorf("conn %d request %d: got %q, %v; want %q", i, j, got, err, want)
					return
				}
			}
		})
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Error(err)
	}
	for _, c := range clients {
		c.c.Close()
	}
	// Every connection goroutine ends once its client leaves.
	waitFor(t, "connection goroutines to end", func() bool { return runtime.NumGoroutine() <= base })
	ts.srv.mu.Lock()
	is.Equal(len(ts.srv.conns), 0)
	ts.srv.mu.Unlock()
}

// blockingDNS holds every query until released.
type blockingDNS struct {
	started chan struct{}
	release chan struct{}
}

func (b *blockingDNS) Query(ctx context.Context, zone string, ip netip.Addr) (rules.DNSAnswer, error) {
	b.started <- struct{}{}
	<-b.release
	return rules.DNSAnswer{Addrs: []netip.Addr{netip.MustParseAddr("127.0.0.2")}}, nil
}

func TestShutdownDrainsInFlightRequests(t *testing.T) {
	is := is.New(t)
	cfg, err := rules.Parse("", "[dns_blacklist]\nenabled = true\nsites = [\"bl.test\"]\naction = \"reject\"")
	is.NoErr(err)
	dns := &blockingDNS{started: make(chan struct{}, 1), release: make(chan struct{})}
	srv := New(rules.NewEngine(cfg, rules.EngineOptions{DNS: dns}), Options{Logger: testLogger(t)})
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	is.NoErr(err)
	served := make(chan error, 1)
	go func() { served <- srv.Serve(ln) }()

	busy, err := net.Dial("tcp", ln.Addr().String())
	is.NoErr(err)
	defer busy.Close()
	idle, err := net.Dial("tcp", ln.Addr().String())
	is.NoErr(err)
	defer idle.Close()
	bc := &client{c: busy, r: bufio.NewReader(busy)}
	reply := make(chan string, 1)
	go func() {
		got, err := bc.send(rcpt("192.0.2.9", "drain.1", "b@domino.test"))
		if err != nil {
			got = "error: " + err.Error()
		}
		reply <- got
	}()
	receive(t, dns.started) // the request is in flight

	shut := make(chan error, 1)
	go func() {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		shut <- srv.Shutdown(ctx)
	}()
	is.Equal(receive(t, served), ErrServerClosed) // no more accepting
	// The idle connection is closed at once.
	idle.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = idle.Read(make([]byte, 1))
	is.True(err != nil && !os.IsTimeout(err)) // closed by the server
	close(dns.release)
	is.Equal(receive(t, reply), "550 5.7.1 Your host 192.0.2.9 was found in a DNS blacklist.") // the in-flight request got its answer
	is.NoErr(receive(t, shut))
	_, err = net.DialTimeout("tcp", ln.Addr().String(), time.Second)
	is.True(err != nil) // the listener is gone
}

func TestIdleTimeout(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "[server]\nidle_timeout = \"50ms\"")
	c := ts.dial(t)
	got, err := c.send(rcpt("192.0.2.1", "i.1", "b@domino.test"))
	is.NoErr(err)
	is.Equal(got, "DUNNO")
	c.c.SetReadDeadline(time.Now().Add(10 * time.Second))
	_, err = c.r.ReadByte()
	is.True(err != nil) // the server closed the idle connection
	var ne net.Error
	is.True(!errors.As(err, &ne) || !ne.Timeout()) // closed by the server, not our own deadline
}

func TestAllowList(t *testing.T) {
	is := is.New(t)
	ts := startServer(t, "tcp", "[server]\nallow = [\"192.0.2.1\"]")
	c := ts.dial(t)
	_, err := c.send(rcpt("192.0.2.1", "a.1", "b@domino.test"))
	is.True(err != nil) // 127.0.0.1 is not allowed: closed without a reply

	// A reload that allows loopback applies to new connections.
	cfg, err2 := rules.Parse("", "")
	is.NoErr(err2)
	ts.engine.SetConfig(cfg)
	c = ts.dial(t)
	got, err := c.send(rcpt("192.0.2.1", "a.2", "b@domino.test"))
	is.NoErr(err)
	is.Equal(got, "DUNNO")
}

func TestInstanceTableIsBounded(t *testing.T) {
	is := is.New(t)
	now := time.Unix(1000, 0)
	tab := newInstanceTable(64, time.Minute, func() time.Time { return now })
	for i := range 10_000 {
		tab.get(fmt.Sprintf("inst-%d", i))
	}
	is.True(tab.len() <= 64) // a flood of instances does not grow memory
	first, _ := tab.get("keep")
	first.heloDone = true
	again, _ := tab.get("keep")
	is.True(again.heloDone) // still there while in use

	now = now.Add(2 * time.Minute)
	fresh, evicted := tab.get("keep")
	is.True(!fresh.heloDone)    // expired: a fresh instance
	is.Equal(evicted[0], first) // handed back, to record its message
	for i := range 64 {
		tab.get(fmt.Sprintf("late-%d", i)) // expired instances are dropped as new ones come
	}
	is.True(tab.len() <= 64)
}
